-- Every ledger record updates each index on `usage_records`, and under load those updates are
-- most of the database's work per request. No query filters on `model_used` or
-- `request_hash`: breakdowns read the hourly rollups, and the analyzer scans
-- (org_id, created_at, id). These two indexes cost every insert and served nothing.
DROP INDEX usage_org_model_time;
DROP INDEX usage_org_fingerprint;
