-- When a gateway last reported each tool definition. A decision that names no tool_hash is judged by the
-- definition of its tool reported last (src/tools/step.ts): a pending or rejected one denies TOOL_CHANGED.
-- Existing rows count as reported when first seen.

ALTER TABLE tool_definitions ADD COLUMN last_reported_at timestamptz;
UPDATE tool_definitions SET last_reported_at = first_seen_at;
ALTER TABLE tool_definitions ALTER COLUMN last_reported_at SET DEFAULT now();
ALTER TABLE tool_definitions ALTER COLUMN last_reported_at SET NOT NULL;
