-- Who closed a session: `gateway:<gateway key id>` (its gateway, POST /v1/sessions/:id/close with the
-- session's own agent token), `operator:<operator key id>`, or `idle-sweep` (SESSION_IDLE_TIMEOUT_S). The
-- same actor as the session.closed row of the audit trail; NULL for sessions closed before this column.
ALTER TABLE sessions ADD COLUMN closed_by text;
