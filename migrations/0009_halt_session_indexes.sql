-- Retention of closed sessions (src/retention) keeps every session a halt row names, and Postgres checks
-- both foreign keys to sessions for each session it deletes: without these indexes each check reads the
-- whole halt table. The halt tables are small, so building them is quick. The session's halt history
-- (GET /v1/sessions/:id) reads the second one too.

CREATE INDEX token_halts_session_idx ON token_halts (session_id) WHERE session_id IS NOT NULL;
CREATE INDEX session_halts_session_idx ON session_halts (session_id, halted_at DESC);
