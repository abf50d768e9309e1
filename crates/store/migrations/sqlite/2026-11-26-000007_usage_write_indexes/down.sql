CREATE INDEX usage_org_model_time ON usage_records (org_id, model_used, created_at);
CREATE INDEX usage_org_fingerprint ON usage_records (org_id, request_hash);
