-- Unqualified on purpose: the backend sets search_path to its configured schema.
CREATE TABLE cache_entries (
    key_hash  BYTEA PRIMARY KEY CHECK (octet_length(key_hash) = 32),
    org       TEXT NOT NULL,
    payload   BYTEA NOT NULL,
    created   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires   TIMESTAMPTZ NOT NULL,
    hit_count BIGINT NOT NULL DEFAULT 0,
    last_hit  TIMESTAMPTZ
);

-- Clearing one organization's entries.
CREATE INDEX cache_entries_org ON cache_entries (org);
-- The periodic purge of expired rows.
CREATE INDEX cache_entries_expires ON cache_entries (expires);
