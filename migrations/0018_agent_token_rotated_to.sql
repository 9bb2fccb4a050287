-- A rotated agent token records its successor. Rotating it again used to issue a second live token, and
-- that one's lifetime was taken from the expiry the first rotation had shortened to the grace period (a
-- token meant to last for ever lasted an hour): a client retrying a rotate whose answer it lost got both.
-- Now a second rotation is refused (409, naming the successor) and GET /v1/keys shows the link.
--
-- Tokens rotated before this migration have no link: the only record of it is the key.rotated audit row,
-- and reading the audit trail here would scan all of it at start. Such a token can still be rotated again
-- while its grace period lasts (docs/operations.md, upgrade notes).
ALTER TABLE agent_tokens
  ADD COLUMN rotated_to uuid REFERENCES agent_tokens (id),
  ADD COLUMN rotated_at timestamptz,
  ADD CONSTRAINT agent_tokens_rotated_both CHECK ((rotated_to IS NULL) = (rotated_at IS NULL));
