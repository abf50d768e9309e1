CREATE INDEX usage_org_time ON usage_records (org_id, created_at);
DROP INDEX usage_org_time_id;
