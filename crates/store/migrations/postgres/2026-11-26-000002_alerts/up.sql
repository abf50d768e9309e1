-- Alert channels and rules, their firings and delivery attempts, and digest schedules.
-- Times are Unix microseconds (BIGINT), money integer picodollars inside the JSON parameters,
-- ids TEXT, identical on PostgreSQL and SQLite so one query works on both.

CREATE TABLE alert_channels (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,
    name        TEXT NOT NULL,
    -- JSON, secrets included (SMTP passwords, signing keys): never returned by the API.
    config      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX alert_channels_org ON alert_channels (org_id);

CREATE TABLE alert_rules (
    id           TEXT PRIMARY KEY,
    org_id       TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    kind         TEXT NOT NULL,
    params       TEXT NOT NULL,
    -- JSON array of channel ids; empty means every channel of the organization.
    channel_ids  TEXT NOT NULL,
    enabled      BOOLEAN NOT NULL,
    time_zone    TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX alert_rules_org ON alert_rules (org_id);

-- One row per (rule, period) that fired. The unique constraint is the cross-replica lock: the
-- replica whose insert succeeds sends; the others see a conflict and do not. Digests and test
-- messages use the same table with rule ids of their own.
CREATE TABLE alert_firings (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL,
    rule_id     TEXT NOT NULL,
    period_key  TEXT NOT NULL,
    kind        TEXT NOT NULL,
    fired_at    BIGINT NOT NULL,
    payload     TEXT NOT NULL,
    CONSTRAINT alert_firings_once UNIQUE (rule_id, period_key)
);
CREATE INDEX alert_firings_org_time ON alert_firings (org_id, fired_at);

CREATE TABLE alert_deliveries (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL,
    firing_id   TEXT NOT NULL,
    channel_id  TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    status      TEXT NOT NULL,
    error       TEXT,
    at          BIGINT NOT NULL,
    CONSTRAINT alert_deliveries_once UNIQUE (firing_id, channel_id, attempt)
);
CREATE INDEX alert_deliveries_firing ON alert_deliveries (firing_id);

CREATE TABLE digest_schedules (
    org_id          TEXT PRIMARY KEY REFERENCES organizations(id) ON DELETE CASCADE,
    time_zone       TEXT NOT NULL,
    -- Local hour (0-23) at which the digests go out.
    send_hour       INTEGER NOT NULL,
    daily           BOOLEAN NOT NULL,
    -- ISO weekday (1 = Monday … 7 = Sunday) of the weekly digest; NULL turns it off.
    weekly_weekday  INTEGER,
    channel_ids     TEXT NOT NULL,
    last_daily      TEXT,
    last_weekly     TEXT,
    updated_at      BIGINT NOT NULL
);
