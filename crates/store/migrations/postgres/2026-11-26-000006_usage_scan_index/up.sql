-- The analyzer reads an organization's records oldest first, paging by keyset on
-- (created_at, id). With `id` in the index the pages come out of it in order, with no sort of
-- each page's rows; the index still serves every query that used (org_id, created_at).
CREATE INDEX usage_org_time_id ON usage_records (org_id, created_at, id);
DROP INDEX usage_org_time;
