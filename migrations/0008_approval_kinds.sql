-- The approval queue also holds requests for a production grant (seed 001: production only with a
-- documented, time-bounded human authorization). One pending request per token and session; approving
-- it creates the grant (`grant_id`), and `expires_at` then is the end of the grant.

ALTER TABLE approvals ADD COLUMN kind text NOT NULL DEFAULT 'call' CHECK (kind IN ('call', 'production_grant'));
ALTER TABLE approvals ADD COLUMN grant_id uuid;
