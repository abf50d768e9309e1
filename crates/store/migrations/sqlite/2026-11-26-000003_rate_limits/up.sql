-- Rate-limit overrides for one organization or one API key inside it. A NULL column keeps the
-- configured default; 0 lifts that limit. Rows are never deleted by a reset (they are emptied),
-- so replicas polling `updated_at` see every change.
CREATE TABLE rate_limits (
    -- The organization id, or the API key id for a key's own quota.
    subject              TEXT PRIMARY KEY,
    org_id               TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    key_id               TEXT,
    requests_per_minute  BIGINT,
    request_burst        BIGINT,
    tokens_per_minute    BIGINT,
    token_burst          BIGINT,
    max_concurrent       BIGINT,
    updated_at           BIGINT NOT NULL
);
CREATE INDEX rate_limits_updated ON rate_limits (updated_at);
