-- A grant's environment is the environment it opens: production, for a production grant. A large_results
-- grant lets a result over the threshold through in any environment, but it was stored (and shown by
-- GET /v1/grants) with environment 'production', which reads as production access given to a
-- development token. It is now null for large_results grants. No CHECK ties the two: a replica of the
-- previous version, started on this database, still stores 'production' there (docs/operations.md,
-- upgrades: a migration does not narrow what the previous version writes).
ALTER TABLE grants ALTER COLUMN environment DROP NOT NULL;
UPDATE grants SET environment = NULL WHERE kind = 'large_results';
