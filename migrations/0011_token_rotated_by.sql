-- Who has held an agent token's secret besides its creator: every operator who rotated it or a token it
-- was rotated from received a raw secret of it (POST /v1/keys/:id/rotate answers the new token to the
-- rotator, while created_by stays the original creator). Under `separate_approver` none of them may
-- approve the token's calls (docs/approvals.md).
ALTER TABLE agent_tokens ADD COLUMN rotated_by text[] NOT NULL DEFAULT '{}';

-- Tokens rotated before this column existed: their rotators, from the key.rotated audit rows (the row's
-- target is the old token, details.new_token_id the new one), followed along chains of rotations. Rows
-- already removed by audit retention cannot be recovered.
WITH RECURSIVE edges AS (
  SELECT substring(target FROM 13) AS old_id, details->>'new_token_id' AS new_id, 'operator:' || actor_id AS rotator
  FROM audit_events
  WHERE action = 'key.rotated' AND actor_type = 'operator' AND actor_id IS NOT NULL AND target LIKE 'agent_token:%' AND details ? 'new_token_id'
), holders(token_id, rotator) AS (
  SELECT new_id, rotator FROM edges
  UNION
  SELECT e.new_id, h.rotator FROM edges e JOIN holders h ON h.token_id = e.old_id
)
UPDATE agent_tokens t
SET rotated_by = (SELECT array_agg(DISTINCT h.rotator ORDER BY h.rotator) FROM holders h WHERE h.token_id = t.id::text)
WHERE EXISTS (SELECT 1 FROM holders h WHERE h.token_id = t.id::text);
