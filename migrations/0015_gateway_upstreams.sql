-- The network identities (hosts and database names, never passwords) of each upstream server as a gateway
-- reports it runs it (POST /v1/gateway/tools), per gateway key and server: the last report wins. The
-- policy-rules step matches them, beside the policy's own identity of the server, against the
-- environment's production patterns (src/policy/check.ts), so a gateway that runs `postgres` against a
-- production database is denied ENVIRONMENT_FORBIDDEN in development whatever the policy file says the
-- server is. The reported identity itself stays stored masked with the tool definitions, for display.
-- Every replica keeps these rows in memory with the tool pins (src/tools/service.ts).

CREATE TABLE gateway_upstreams (
  gateway_id uuid NOT NULL,
  server text NOT NULL,
  network_identities text[] NOT NULL,
  reported_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (gateway_id, server)
);
