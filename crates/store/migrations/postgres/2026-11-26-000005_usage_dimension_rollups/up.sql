-- The hourly rollups, one row per dimension value instead of per dimension combination: a
-- record adds to exactly five rows of its hour, one per dimension, so a batch upserts one row
-- per distinct (organization, hour, dimension, value) it holds (about twenty in a realistic
-- mix) instead of one per combination (over a hundred), and the table is that much smaller.
--
-- `dimension` is the breakdown's `group_by` name ('model', 'provider', 'key', 'cache_status',
-- 'tier') and `value` the group name the breakdown shows for the record ('none' /
-- 'unclassified' for NULL, exactly as its COALESCE does), so none is NULL and the primary key
-- works on both backends. Within any one dimension every record is counted exactly once, so a
-- breakdown by a dimension reads that dimension's rows and one by day or hour sums the rows of
-- one dimension ('tier') per time group: sums, histograms and maxima are exact. The counters
-- are those of `usage_rollups` (migration 000004): money split into whole microdollars and the
-- picodollars left, summed separately (exact, no overflow); b00..b56 count requests per
-- latency bucket (bounds in `LATENCY_BOUNDS_MS`, crates/store/src/analytics.rs: b00 is
-- latency_ms <= 1, b55 is (500000, 640000], b56 the rest).
--
-- `Store::insert_usage` adds each record here in the same transaction that inserts it, and only
-- when the insert was not skipped as a duplicate, so every record is counted exactly once per
-- dimension. The primary key leads with the dimension after the organization, so a breakdown
-- reads one contiguous range per organization and dimension.
DROP TABLE usage_rollups;

CREATE TABLE usage_dimension_rollups (
    org_id             TEXT NOT NULL,
    dimension          TEXT NOT NULL,
    -- Unix microseconds of the hour's start (floor).
    hour_start         BIGINT NOT NULL,
    value              TEXT NOT NULL,
    requests           BIGINT NOT NULL,
    prompt_tokens      BIGINT NOT NULL,
    completion_tokens  BIGINT NOT NULL,
    cost_micros        BIGINT NOT NULL,
    cost_rest          BIGINT NOT NULL,
    saved_micros       BIGINT NOT NULL,
    saved_rest         BIGINT NOT NULL,
    cache_hits         BIGINT NOT NULL,
    latency_max        BIGINT NOT NULL,
    b00 BIGINT NOT NULL,
    b01 BIGINT NOT NULL,
    b02 BIGINT NOT NULL,
    b03 BIGINT NOT NULL,
    b04 BIGINT NOT NULL,
    b05 BIGINT NOT NULL,
    b06 BIGINT NOT NULL,
    b07 BIGINT NOT NULL,
    b08 BIGINT NOT NULL,
    b09 BIGINT NOT NULL,
    b10 BIGINT NOT NULL,
    b11 BIGINT NOT NULL,
    b12 BIGINT NOT NULL,
    b13 BIGINT NOT NULL,
    b14 BIGINT NOT NULL,
    b15 BIGINT NOT NULL,
    b16 BIGINT NOT NULL,
    b17 BIGINT NOT NULL,
    b18 BIGINT NOT NULL,
    b19 BIGINT NOT NULL,
    b20 BIGINT NOT NULL,
    b21 BIGINT NOT NULL,
    b22 BIGINT NOT NULL,
    b23 BIGINT NOT NULL,
    b24 BIGINT NOT NULL,
    b25 BIGINT NOT NULL,
    b26 BIGINT NOT NULL,
    b27 BIGINT NOT NULL,
    b28 BIGINT NOT NULL,
    b29 BIGINT NOT NULL,
    b30 BIGINT NOT NULL,
    b31 BIGINT NOT NULL,
    b32 BIGINT NOT NULL,
    b33 BIGINT NOT NULL,
    b34 BIGINT NOT NULL,
    b35 BIGINT NOT NULL,
    b36 BIGINT NOT NULL,
    b37 BIGINT NOT NULL,
    b38 BIGINT NOT NULL,
    b39 BIGINT NOT NULL,
    b40 BIGINT NOT NULL,
    b41 BIGINT NOT NULL,
    b42 BIGINT NOT NULL,
    b43 BIGINT NOT NULL,
    b44 BIGINT NOT NULL,
    b45 BIGINT NOT NULL,
    b46 BIGINT NOT NULL,
    b47 BIGINT NOT NULL,
    b48 BIGINT NOT NULL,
    b49 BIGINT NOT NULL,
    b50 BIGINT NOT NULL,
    b51 BIGINT NOT NULL,
    b52 BIGINT NOT NULL,
    b53 BIGINT NOT NULL,
    b54 BIGINT NOT NULL,
    b55 BIGINT NOT NULL,
    b56 BIGINT NOT NULL,
    PRIMARY KEY (org_id, dimension, hour_start, value)
);

-- Backfill from the records already there (an upgraded database): each record once per
-- dimension, with that dimension's group name as the value.
INSERT INTO usage_dimension_rollups (org_id, dimension, hour_start, value, requests,
    prompt_tokens, completion_tokens, cost_micros, cost_rest, saved_micros, saved_rest,
    cache_hits, latency_max,
    b00, b01, b02, b03, b04, b05, b06, b07, b08, b09, b10, b11, b12, b13, b14, b15, b16, b17, b18, b19, b20, b21, b22, b23, b24, b25, b26, b27, b28, b29, b30, b31, b32, b33, b34, b35, b36, b37, b38, b39, b40, b41, b42, b43, b44, b45, b46, b47, b48, b49, b50, b51, b52, b53, b54, b55, b56)
SELECT org_id, dimension, hour_start, value,
    COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0),
    COALESCE(SUM(cost_pico / 1000000), 0), COALESCE(SUM(cost_pico % 1000000), 0),
    COALESCE(SUM(saved / 1000000), 0), COALESCE(SUM(saved % 1000000), 0),
    COALESCE(SUM(hit), 0), MAX(latency_ms),
    SUM(CASE WHEN latency_ms <= 1 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 1 AND latency_ms <= 2 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 2 AND latency_ms <= 3 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 3 AND latency_ms <= 4 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 4 AND latency_ms <= 5 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 5 AND latency_ms <= 6 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 6 AND latency_ms <= 8 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 8 AND latency_ms <= 10 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 10 AND latency_ms <= 12 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 12 AND latency_ms <= 16 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 16 AND latency_ms <= 20 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 20 AND latency_ms <= 25 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 25 AND latency_ms <= 32 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 32 AND latency_ms <= 40 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 40 AND latency_ms <= 50 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 50 AND latency_ms <= 64 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 64 AND latency_ms <= 80 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 80 AND latency_ms <= 100 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 100 AND latency_ms <= 125 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 125 AND latency_ms <= 160 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 160 AND latency_ms <= 200 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 200 AND latency_ms <= 250 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 250 AND latency_ms <= 320 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 320 AND latency_ms <= 400 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 400 AND latency_ms <= 500 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 500 AND latency_ms <= 640 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 640 AND latency_ms <= 800 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 800 AND latency_ms <= 1000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 1000 AND latency_ms <= 1250 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 1250 AND latency_ms <= 1600 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 1600 AND latency_ms <= 2000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 2000 AND latency_ms <= 2500 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 2500 AND latency_ms <= 3200 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 3200 AND latency_ms <= 4000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 4000 AND latency_ms <= 5000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 5000 AND latency_ms <= 6400 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 6400 AND latency_ms <= 8000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 8000 AND latency_ms <= 10000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 10000 AND latency_ms <= 12500 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 12500 AND latency_ms <= 16000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 16000 AND latency_ms <= 20000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 20000 AND latency_ms <= 25000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 25000 AND latency_ms <= 32000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 32000 AND latency_ms <= 40000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 40000 AND latency_ms <= 50000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 50000 AND latency_ms <= 64000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 64000 AND latency_ms <= 80000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 80000 AND latency_ms <= 100000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 100000 AND latency_ms <= 125000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 125000 AND latency_ms <= 160000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 160000 AND latency_ms <= 200000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 200000 AND latency_ms <= 250000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 250000 AND latency_ms <= 320000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 320000 AND latency_ms <= 400000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 400000 AND latency_ms <= 500000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 500000 AND latency_ms <= 640000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms > 640000 THEN 1 ELSE 0 END)
FROM (
    SELECT r.org_id, d.dimension, r.hour_start,
        CASE d.dimension
            WHEN 'model' THEN r.model
            WHEN 'provider' THEN r.provider
            WHEN 'key' THEN r.api_key_id
            WHEN 'cache_status' THEN r.cache_status
            WHEN 'tier' THEN r.route_tier
        END AS value,
        r.prompt_tokens, r.completion_tokens, r.cost_pico, r.latency_ms, r.saved, r.hit
    FROM (
        SELECT org_id,
            created_at - ((created_at % 3600000000) + 3600000000) % 3600000000 AS hour_start,
            COALESCE(model_used, 'none') AS model,
            COALESCE(provider, 'none') AS provider,
            COALESCE(api_key_id, 'none') AS api_key_id,
            COALESCE(cache_status, 'none') AS cache_status,
            COALESCE(route_tier, 'unclassified') AS route_tier,
            prompt_tokens, completion_tokens, cost_pico, latency_ms,
            cache_saved_pico + CASE WHEN route_saving_pico > 0 THEN route_saving_pico ELSE 0 END
                AS saved,
            CASE WHEN cache_status LIKE 'hit%' OR cache_status = 'coalesced' THEN 1 ELSE 0 END
                AS hit
        FROM usage_records
    ) AS r
    CROSS JOIN (
        SELECT 'model' AS dimension
        UNION ALL SELECT 'provider'
        UNION ALL SELECT 'key'
        UNION ALL SELECT 'cache_status'
        UNION ALL SELECT 'tier'
    ) AS d
) AS x
GROUP BY org_id, dimension, hour_start, value;
