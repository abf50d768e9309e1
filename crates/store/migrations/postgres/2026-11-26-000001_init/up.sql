-- Organizations, hashed API keys and the usage ledger.
-- Times are Unix microseconds (BIGINT) and money is integer picodollars (BIGINT), identical on
-- PostgreSQL and SQLite so one query works on both.

CREATE TABLE organizations (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL UNIQUE,
    secret_hash   TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT,
    revoked_at    BIGINT
);
CREATE INDEX api_keys_org ON api_keys (org_id);

CREATE TABLE usage_records (
    id                    TEXT PRIMARY KEY,
    request_id            TEXT NOT NULL,
    org_id                TEXT NOT NULL,
    api_key_id            TEXT,
    created_at            BIGINT NOT NULL,
    endpoint              TEXT NOT NULL,
    model_requested       TEXT NOT NULL,
    model_used            TEXT,
    provider              TEXT,
    status                INTEGER NOT NULL,
    error_type            TEXT,
    prompt_tokens         BIGINT NOT NULL,
    cached_prompt_tokens  BIGINT NOT NULL,
    completion_tokens     BIGINT NOT NULL,
    reasoning_tokens      BIGINT NOT NULL,
    tokens_estimated      BOOLEAN NOT NULL,
    cost_pico             BIGINT NOT NULL,
    latency_ms            BIGINT NOT NULL,
    ttft_ms               BIGINT,
    stream                BOOLEAN NOT NULL,
    max_tokens            BIGINT,
    temperature           DOUBLE PRECISION,
    cache_status          TEXT,
    cache_saved_pico      BIGINT NOT NULL,
    routed                BOOLEAN NOT NULL,
    route_score           DOUBLE PRECISION,
    route_tier            TEXT,
    route_mode            TEXT,
    baseline_model        TEXT,
    route_saving_pico     BIGINT,
    request_hash          TEXT NOT NULL,
    system_hash           TEXT,
    system_len            BIGINT NOT NULL,
    prefix_hash           TEXT NOT NULL,
    prompt_chars          BIGINT NOT NULL,
    prompt_tokens_est     BIGINT NOT NULL,
    prompt_text           TEXT,
    completion_text       TEXT
);
CREATE INDEX usage_org_time ON usage_records (org_id, created_at);
CREATE INDEX usage_org_model_time ON usage_records (org_id, model_used, created_at);
CREATE INDEX usage_org_fingerprint ON usage_records (org_id, request_hash);
