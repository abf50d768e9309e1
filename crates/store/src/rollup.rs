//! The hourly usage rollups (`usage_dimension_rollups`, migration
//! `000005_usage_dimension_rollups`): what a batch of newly inserted ledger records adds to them,
//! and the upsert that adds it.
//!
//! A rollup row is keyed by (organization, dimension, hour, value): the dimension is one of the
//! breakdown's non-time `group_by` names ([`DIMENSIONS`]) and the value the group name the
//! breakdown shows for a record. Each record adds to exactly one row per dimension, five in
//! all, so a batch upserts one row per distinct value it holds in each hour rather than one per
//! combination of values.
//!
//! The invariant: within each dimension, every record in `usage_records` is counted in
//! `usage_dimension_rollups` exactly once. [`crate::Store::insert_usage`] upserts the rollups of
//! the records it actually inserted (not those skipped as already present) in the same
//! transaction, so a replayed batch adds nothing and a failed one adds nothing either. The
//! migration backfills the rollups of the records that were there before it.
//!
//! Every value here is computed the way the breakdown's SQL over `usage_records` computes it:
//! the values are the breakdown's group names (`COALESCE(model_used, 'none')`…), money is
//! split into whole microdollars and the picodollars left with truncating division, and the
//! latency bucket is the first bound the latency does not exceed.

use std::collections::BTreeMap;

use crate::analytics::LATENCY_BOUNDS_MS;
use crate::{BackendKind, UsageRecord};

/// The migration that creates the rollups and backfills them.
macro_rules! rollup_migration {
    ($backend:literal, $file:literal) => {
        include_str!(concat!(
            "../migrations/",
            $backend,
            "/2026-11-26-000005_usage_dimension_rollups/",
            $file
        ))
    };
}

/// The migration's backfill: every record's rollups, computed in SQL from `usage_records`
/// into an empty `usage_dimension_rollups`.
pub(crate) fn backfill_sql(kind: BackendKind) -> &'static str {
    let up = match kind {
        BackendKind::Postgres => rollup_migration!("postgres", "up.sql"),
        BackendKind::Sqlite => rollup_migration!("sqlite", "up.sql"),
    };
    up.find("INSERT INTO usage_dimension_rollups")
        .map_or("", |i| &up[i..])
}

/// The dimensions a record is rolled up by, as stored in `dimension`: the breakdown's
/// `group_by` names. Every record has a value in each (its defaults replace NULL).
pub(crate) const DIMENSIONS: [&str; 5] = ["model", "provider", "key", "cache_status", "tier"];

/// The dimension whose rows time breakdowns (by day or hour) sum: any one dimension counts
/// every record once.
pub(crate) const TIME_DIMENSION: &str = "tier";

/// One hour in microseconds.
pub(crate) const HOUR_MICROS: i64 = 3_600_000_000;

/// Histogram buckets: one per bound and a last one for the rest.
pub(crate) const BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// Rows per upsert statement: 2 bound texts each, far below both backends' limits.
const ROWS_PER_STATEMENT: usize = 200;

/// (org, dimension, hour start, value), the primary key's columns in order. Rows are upserted
/// sorted by it, so every writer locks the rows it shares with another in the same order.
pub(crate) type Key<'a> = (&'a str, &'static str, i64, &'a str);

/// The counters of one rollup row (or of what a batch adds to it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Counters {
    requests: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    cost_micros: i64,
    cost_rest: i64,
    saved_micros: i64,
    saved_rest: i64,
    cache_hits: i64,
    latency_max: i64,
    histogram: [i64; BUCKETS],
}

/// The bucket of a latency: the index of the first bound it does not exceed.
pub(crate) fn latency_bucket(latency_ms: i64) -> usize {
    LATENCY_BOUNDS_MS.partition_point(|b| *b < latency_ms)
}

/// Whether the breakdown counts a cache status as answered by the cache. The SQL is
/// `cache_status LIKE 'hit%' OR cache_status = 'coalesced'`, and SQLite's `LIKE` ignores ASCII
/// case where PostgreSQL's does not.
pub(crate) fn is_cache_hit(status: Option<&str>, kind: BackendKind) -> bool {
    let Some(s) = status else { return false };
    let prefix = s.as_bytes().get(..3);
    let hit = match kind {
        BackendKind::Postgres => prefix == Some(b"hit"),
        BackendKind::Sqlite => prefix.is_some_and(|p| p.eq_ignore_ascii_case(b"hit")),
    };
    hit || s == "coalesced"
}

/// Splits picodollars into whole microdollars and the rest, truncating like SQL's `/` and `%`.
fn split(pico: i128) -> (i64, i64) {
    (
        i64::try_from(pico / 1_000_000).unwrap_or(i64::MAX),
        // |rest| < 1,000,000.
        (pico % 1_000_000) as i64,
    )
}

/// What `records` add to the rollups, one entry per key, in key order (so concurrent writers
/// lock rollup rows in the same order and cannot deadlock each other).
pub(crate) fn aggregate<'a>(
    records: impl IntoIterator<Item = &'a UsageRecord>,
    kind: BackendKind,
) -> Vec<(Key<'a>, Counters)> {
    let mut out: BTreeMap<Key<'a>, Counters> = BTreeMap::new();
    for r in records {
        let or = |v: &'a Option<String>, d: &'static str| v.as_deref().unwrap_or(d);
        let hour = r.created_at - r.created_at.rem_euclid(HOUR_MICROS);
        // In the order of `DIMENSIONS`.
        let values = [
            or(&r.model_used, "none"),
            or(&r.provider, "none"),
            or(&r.api_key_id, "none"),
            or(&r.cache_status, "none"),
            or(&r.route_tier, "unclassified"),
        ];
        let (cost_micros, cost_rest) = split(i128::from(r.cost_pico));
        let saved = i128::from(r.cache_saved_pico)
            + i128::from(r.route_saving_pico.filter(|s| *s > 0).unwrap_or(0));
        let (saved_micros, saved_rest) = split(saved);
        let hit = i64::from(is_cache_hit(r.cache_status.as_deref(), kind));
        let bucket = latency_bucket(r.latency_ms);
        for (dimension, value) in DIMENSIONS.into_iter().zip(values) {
            let c = out
                .entry((r.org_id.as_str(), dimension, hour, value))
                .or_insert_with(|| Counters {
                    requests: 0,
                    prompt_tokens: 0,
                    completion_tokens: 0,
                    cost_micros: 0,
                    cost_rest: 0,
                    saved_micros: 0,
                    saved_rest: 0,
                    cache_hits: 0,
                    latency_max: i64::MIN,
                    histogram: [0; BUCKETS],
                });
            c.requests += 1;
            c.prompt_tokens = c.prompt_tokens.saturating_add(r.prompt_tokens);
            c.completion_tokens = c.completion_tokens.saturating_add(r.completion_tokens);
            c.cost_micros = c.cost_micros.saturating_add(cost_micros);
            c.cost_rest += cost_rest;
            c.saved_micros = c.saved_micros.saturating_add(saved_micros);
            c.saved_rest += saved_rest;
            c.cache_hits += hit;
            c.latency_max = c.latency_max.max(r.latency_ms);
            c.histogram[bucket] += 1;
        }
    }
    out.into_iter().collect()
}

/// The records of `chunk` that `inserted_ids` says were inserted: the first record of each id
/// (a later duplicate in the same statement was skipped by `ON CONFLICT DO NOTHING`).
pub(crate) fn inserted<'a>(
    chunk: &'a [UsageRecord],
    inserted_ids: &[String],
) -> Vec<&'a UsageRecord> {
    let mut ids: std::collections::HashSet<&str> =
        inserted_ids.iter().map(String::as_str).collect();
    chunk.iter().filter(|r| ids.remove(r.id.as_str())).collect()
}

/// Upsert statements adding `rows` to `usage_dimension_rollups`: the SQL of each and its text binds, in
/// order. Integers are written into the SQL (they are numbers the store computed, never
/// text); the texts are bound.
pub(crate) fn upserts(
    rows: &[(Key<'_>, Counters)],
    kind: BackendKind,
) -> Vec<(String, Vec<String>)> {
    use std::fmt::Write;
    let mut out = Vec::new();
    for part in rows.chunks(ROWS_PER_STATEMENT) {
        let mut sql = String::with_capacity(200 + part.len() * 300);
        sql.push_str(
            "INSERT INTO usage_dimension_rollups (org_id, dimension, hour_start, value, \
             requests, prompt_tokens, completion_tokens, cost_micros, cost_rest, saved_micros, \
             saved_rest, cache_hits, latency_max",
        );
        for b in 0..BUCKETS {
            let _ = write!(sql, ", b{b:02}");
        }
        sql.push_str(") VALUES ");
        let mut binds = Vec::with_capacity(part.len() * 2);
        for (i, ((org, dimension, hour, value), c)) in part.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            let mut param = |text: &str| {
                binds.push(text.to_owned());
                match kind {
                    BackendKind::Postgres => format!("${}", binds.len()),
                    BackendKind::Sqlite => "?".to_owned(),
                }
            };
            let org = param(org);
            let value = param(value);
            // The dimension is one of `DIMENSIONS`, a fixed name.
            let _ = write!(sql, "({org}, '{dimension}', {hour}, {value}");
            let _ = write!(
                sql,
                ", {}, {}, {}, {}, {}, {}, {}, {}, {}",
                c.requests,
                c.prompt_tokens,
                c.completion_tokens,
                c.cost_micros,
                c.cost_rest,
                c.saved_micros,
                c.saved_rest,
                c.cache_hits,
                c.latency_max
            );
            for n in &c.histogram {
                let _ = write!(sql, ", {n}");
            }
            sql.push(')');
        }
        sql.push_str(" ON CONFLICT (org_id, dimension, hour_start, value) DO UPDATE SET ");
        let mut sums = vec![
            "requests",
            "prompt_tokens",
            "completion_tokens",
            "cost_micros",
            "cost_rest",
            "saved_micros",
            "saved_rest",
            "cache_hits",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        sums.extend((0..BUCKETS).map(|b| format!("b{b:02}")));
        for col in &sums {
            let _ = write!(
                sql,
                "{col} = usage_dimension_rollups.{col} + excluded.{col}, "
            );
        }
        sql.push_str(
            "latency_max = CASE WHEN excluded.latency_max > usage_dimension_rollups.latency_max \
             THEN excluded.latency_max ELSE usage_dimension_rollups.latency_max END",
        );
        out.push((sql, binds));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_match_the_bounds() {
        assert_eq!(latency_bucket(-5), 0);
        assert_eq!(latency_bucket(1), 0);
        assert_eq!(latency_bucket(2), 1);
        assert_eq!(latency_bucket(11), 8);
        for (i, b) in LATENCY_BOUNDS_MS.iter().enumerate() {
            assert_eq!(latency_bucket(*b), i);
            assert_eq!(latency_bucket(*b + 1), i + 1);
        }
        assert_eq!(latency_bucket(i64::MAX), BUCKETS - 1);
    }

    #[test]
    fn the_migration_counts_the_same_buckets() {
        // The backfill's bucket conditions are written out in the migration: check them
        // against the bounds, so neither can change alone.
        for sql in [
            rollup_migration!("postgres", "up.sql"),
            rollup_migration!("sqlite", "up.sql"),
            rollup_migration!("postgres", "down.sql"),
            rollup_migration!("sqlite", "down.sql"),
        ] {
            let mut prev: Option<i64> = None;
            for b in LATENCY_BOUNDS_MS {
                let cond = match prev {
                    None => format!("WHEN latency_ms <= {b} THEN"),
                    Some(p) => format!("WHEN latency_ms > {p} AND latency_ms <= {b} THEN"),
                };
                assert!(sql.contains(&cond), "missing {cond}");
                prev = Some(*b);
            }
            let last = LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.len() - 1];
            assert!(sql.contains(&format!("WHEN latency_ms > {last} THEN")));
            assert!(sql.contains(&format!("b{:02} BIGINT NOT NULL", BUCKETS - 1)));
            assert!(!sql.contains(&format!("b{BUCKETS:02} ")));
        }
    }

    #[test]
    fn dimensions_are_the_breakdowns_group_names() {
        use crate::analytics::GroupBy;
        let names: Vec<&str> = GroupBy::ALL
            .into_iter()
            .filter(|g| !matches!(g, GroupBy::Day | GroupBy::Hour))
            .map(GroupBy::as_str)
            .collect();
        assert_eq!(names, DIMENSIONS);
        assert!(DIMENSIONS.contains(&TIME_DIMENSION));
        // The backfill rolls every record up by each dimension, under the same names.
        for kind in [BackendKind::Postgres, BackendKind::Sqlite] {
            let sql = backfill_sql(kind);
            for d in DIMENSIONS {
                assert!(
                    sql.contains(&format!("WHEN '{d}' THEN")),
                    "backfill misses {d}"
                );
                assert!(
                    sql.contains(&format!("SELECT '{d}'")),
                    "backfill misses {d}"
                );
            }
        }
    }

    #[test]
    fn each_record_adds_to_one_row_per_dimension() {
        let mut a = UsageRecord {
            org_id: "o".into(),
            created_at: 3 * HOUR_MICROS + 5,
            model_used: Some("m".into()),
            cache_status: Some("hit-memory".into()),
            latency_ms: 11,
            cost_pico: 2_500_001,
            ..UsageRecord::default()
        };
        let mut b = a.clone();
        b.model_used = None;
        b.latency_ms = 3;
        a.route_tier = Some("simple".into());
        let rows = aggregate([&a, &b], BackendKind::Postgres);
        let keys: Vec<_> = rows.iter().map(|(k, _)| *k).collect();
        let h = 3 * HOUR_MICROS;
        assert_eq!(
            keys,
            [
                ("o", "cache_status", h, "hit-memory"),
                ("o", "key", h, "none"),
                ("o", "model", h, "m"),
                ("o", "model", h, "none"),
                ("o", "provider", h, "none"),
                ("o", "tier", h, "simple"),
                ("o", "tier", h, "unclassified"),
            ]
        );
        let both = &rows[0].1;
        assert_eq!(
            (both.requests, both.cache_hits, both.latency_max),
            (2, 2, 11)
        );
        assert_eq!((both.cost_micros, both.cost_rest), (4, 1_000_002));
        assert_eq!((both.histogram[2], both.histogram[8]), (1, 1));
        assert_eq!(rows[2].1.requests, 1);
    }

    #[test]
    fn cache_hits_follow_each_backends_like() {
        use BackendKind::{Postgres, Sqlite};
        for kind in [Postgres, Sqlite] {
            assert!(is_cache_hit(Some("hit-memory"), kind));
            assert!(is_cache_hit(Some("coalesced"), kind));
            assert!(!is_cache_hit(Some("miss"), kind));
            assert!(!is_cache_hit(Some("hi"), kind));
            assert!(!is_cache_hit(None, kind));
        }
        assert!(!is_cache_hit(Some("HIT"), Postgres));
        assert!(is_cache_hit(Some("HIT"), Sqlite));
    }

    #[test]
    fn money_splits_truncate_like_sql() {
        assert_eq!(split(1_500_000_000_001), (1_500_000, 1));
        assert_eq!(split(-1_000_001), (-1, -1));
        assert_eq!(split(999_999), (0, 999_999));
    }
}
