-- Which definition of each tool each gateway (gateway key) reported last. A decision that names no
-- tool_hash is judged by what ITS gateway reported last (src/tools/service.ts, docs/adr/0014), so one
-- gateway's report of a changed definition no longer denies every other gateway's calls. The agent
-- token (and its project) of the report that made this the gateway's definition is kept for operators.
-- Also who reported each definition first, shown by GET /v1/tools.

CREATE TABLE tool_reports (
  gateway_id uuid NOT NULL,
  server text NOT NULL,
  tool text NOT NULL,
  definition_id uuid NOT NULL REFERENCES tool_definitions (id) ON DELETE CASCADE,
  token_id uuid,
  project_id text,
  reported_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (gateway_id, server, tool)
);
CREATE INDEX tool_reports_definition_idx ON tool_reports (definition_id);

ALTER TABLE tool_definitions ADD COLUMN reported_by_token uuid;
ALTER TABLE tool_definitions ADD COLUMN reported_by_project text;

-- Until a gateway reports again, it is judged as every gateway was before: by the definition of the tool
-- reported last by any gateway. Only the gateway that first reported a definition was recorded, so the
-- gateways known to run a tool are those; one that only ever reported definitions others had reported
-- first has no row, and its calls without tool_hash pass while the tool has an approved definition.
INSERT INTO tool_reports (gateway_id, server, tool, definition_id, reported_at)
SELECT g.gateway_id, g.server, g.tool, l.id, l.last_reported_at
  FROM (SELECT DISTINCT reported_by_gateway AS gateway_id, server, tool FROM tool_definitions WHERE reported_by_gateway IS NOT NULL) g
  JOIN LATERAL (
    SELECT t.id, t.last_reported_at FROM tool_definitions t WHERE t.server = g.server AND t.tool = g.tool
     ORDER BY t.last_reported_at DESC, t.id DESC LIMIT 1
  ) l ON true;
