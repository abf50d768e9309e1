//! Ledger analytics: an organization's usage grouped in SQL ([`Store::usage_breakdown`]), its
//! records streamed oldest first in pages for the analyzer ([`Store::usage_scan`]), and the
//! savings the cache and routing realised ([`Store::realised_savings`]).
//!
//! Everything is aggregated by the database on both backends with the same SQL. Money columns
//! are summed split into whole microdollars and the picodollars left, as `alerting.rs` explains,
//! so sums are exact and cannot overflow. Breakdowns read the hourly rollups
//! (`usage_dimension_rollups`, one row per organization, dimension, hour and value, kept by
//! [`Store::insert_usage`], see `rollup.rs`) for the whole hours of their window and the records
//! themselves only for the partial hours at its ends.
//!
//! # Latency percentiles
//!
//! Neither SQLite nor portable SQL has a percentile aggregate, so each group's latencies are
//! counted in a fixed histogram in SQL (the bucket of a row is found by a balanced tree of
//! `CASE` comparisons, six or seven per row) and p50/p95 are read from it in Rust. A percentile
//! is reported as the upper bound of the bucket holding it, capped at the group's maximum: it
//! is never below the true value and at most one bucket step above it. The bounds
//! ([`LATENCY_BOUNDS_MS`]) run from 1 ms to 10 minutes, ten per decade (1, 1.25, 1.6, 2, 2.5,
//! 3.2, 4, 5, 6.4, 8 × 10ⁿ, rounded to whole milliseconds), so above 10 ms the resolution is
//! about 25%; below it, one or two milliseconds. Latencies above 10 minutes fall in a last
//! bucket whose bound is the group's maximum.

use cognitude_catalog::Money;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use serde::Serialize;

use crate::alerting::parse_money;
use crate::rollup::{BUCKETS, HOUR_MICROS, TIME_DIMENSION};
use crate::schema::usage_records;
use crate::{Backend, BackendKind, Error, Result, Store, pool_err};

/// What [`Store::usage_breakdown`] groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// The model that answered (`none` when no upstream answered).
    Model,
    /// The provider that answered (`none` likewise).
    Provider,
    /// The UTC day of `created_at`, as `YYYY-MM-DD`.
    Day,
    /// The UTC hour of `created_at`, as `YYYY-MM-DDTHH:00Z`.
    Hour,
    /// The API key id (`none` for records without one).
    Key,
    /// The cache status (`none` when the request never reached the cache).
    CacheStatus,
    /// The router's tier (`unclassified` when the request was not classified).
    Tier,
}

impl GroupBy {
    pub const ALL: [GroupBy; 7] = [
        GroupBy::Model,
        GroupBy::Provider,
        GroupBy::Day,
        GroupBy::Hour,
        GroupBy::Key,
        GroupBy::CacheStatus,
        GroupBy::Tier,
    ];

    /// The query-string name: `model`, `provider`, `day`, `hour`, `key`, `cache_status`, `tier`.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Model => "model",
            GroupBy::Provider => "provider",
            GroupBy::Day => "day",
            GroupBy::Hour => "hour",
            GroupBy::Key => "key",
            GroupBy::CacheStatus => "cache_status",
            GroupBy::Tier => "tier",
        }
    }

    pub fn parse(s: &str) -> Option<GroupBy> {
        GroupBy::ALL.into_iter().find(|g| g.as_str() == s)
    }

    /// The SQL the rows are grouped by, and the text selected for the group's name (a
    /// function of the first, so both backends accept it).
    fn sql(self) -> (&'static str, &'static str) {
        match self {
            GroupBy::Model => (
                "COALESCE(model_used, 'none')",
                "COALESCE(model_used, 'none')",
            ),
            GroupBy::Provider => ("COALESCE(provider, 'none')", "COALESCE(provider, 'none')"),
            GroupBy::Day => (
                "created_at / 86400000000",
                "CAST(created_at / 86400000000 AS TEXT)",
            ),
            GroupBy::Hour => (
                "created_at / 3600000000",
                "CAST(created_at / 3600000000 AS TEXT)",
            ),
            GroupBy::Key => (
                "COALESCE(api_key_id, 'none')",
                "COALESCE(api_key_id, 'none')",
            ),
            GroupBy::CacheStatus => (
                "COALESCE(cache_status, 'none')",
                "COALESCE(cache_status, 'none')",
            ),
            GroupBy::Tier => (
                "COALESCE(route_tier, 'unclassified')",
                "COALESCE(route_tier, 'unclassified')",
            ),
        }
    }

    /// The same over `usage_dimension_rollups`: the dimension whose rows are read, and the
    /// group and name expressions over them. A dimension's `value` already holds the group
    /// name; day and hour sum the rows of one dimension (each record is counted once in any
    /// one), whose hours start on hour boundaries (so an hour's day and hour are those of its
    /// records).
    fn rollup_sql(self) -> (&'static str, &'static str, &'static str) {
        match self {
            GroupBy::Day => (
                TIME_DIMENSION,
                "hour_start / 86400000000",
                "CAST(hour_start / 86400000000 AS TEXT)",
            ),
            GroupBy::Hour => (
                TIME_DIMENSION,
                "hour_start / 3600000000",
                "CAST(hour_start / 3600000000 AS TEXT)",
            ),
            GroupBy::Model
            | GroupBy::Provider
            | GroupBy::Key
            | GroupBy::CacheStatus
            | GroupBy::Tier => (self.as_str(), "value", "value"),
        }
    }

    fn is_time(self) -> bool {
        matches!(self, GroupBy::Day | GroupBy::Hour)
    }
}

/// One group of a breakdown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakdownGroup {
    /// The group's name (see [`GroupBy`]).
    pub group: String,
    /// For `day` and `hour`: the bucket's start, Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<i64>,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// What the organization paid (exact).
    pub cost: Money,
    /// What the response cache saved (`cache_saved_pico`) plus what routing saved against the
    /// baseline where it saved anything (`route_saving_pico` > 0; a routed request that cost
    /// more than its baseline counts 0 here, see [`RealisedSavings::routing_extra_cost`]).
    pub saved: Money,
    /// Requests answered by the cache: `cache_status` `hit…` or `coalesced`.
    pub cache_hits: i64,
    /// `cache_hits / requests`: the share of the group's requests the cache answered.
    pub cache_hit_rate: f64,
    /// Latency percentiles in milliseconds, as bucket upper bounds (see the module docs).
    pub latency_p50_ms: i64,
    pub latency_p95_ms: i64,
    pub latency_max_ms: i64,
}

/// The histogram's bucket upper bounds in milliseconds (inclusive); a last bucket takes the
/// rest. See the module docs.
pub const LATENCY_BOUNDS_MS: &[i64] = &[
    1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 25, 32, 40, 50, 64, 80, 100, 125, 160, 200, 250, 320, 400,
    500, 640, 800, 1_000, 1_250, 1_600, 2_000, 2_500, 3_200, 4_000, 5_000, 6_400, 8_000, 10_000,
    12_500, 16_000, 20_000, 25_000, 32_000, 40_000, 50_000, 64_000, 80_000, 100_000, 125_000,
    160_000, 200_000, 250_000, 320_000, 400_000, 500_000, 640_000,
];

/// What the response cache and routing saved an organization over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RealisedSavings {
    pub requests: i64,
    /// Requests answered by the cache (`hit…` or `coalesced`).
    pub cache_hits: i64,
    /// The sum of `cache_saved_pico`: what those answers would have cost.
    pub cache_saved: Money,
    pub routed_requests: i64,
    /// The sum of `route_saving_pico` over routed requests that cost less than their baseline.
    pub routing_saved: Money,
    /// The sum, made positive, of `route_saving_pico` over those that cost more.
    pub routing_extra_cost: Money,
}

/// The columns of a ledger record the analyzer reads, and `id` for paging. Only these are
/// selected: the scan's cost is mostly per column and row (the database encoding each value,
/// this side decoding it), so every column left out makes it cheaper. The organization is the
/// scan's own and not repeated on every row.
#[derive(Debug, Clone, PartialEq, Default, Queryable, Selectable)]
#[diesel(table_name = usage_records)]
pub struct LedgerRow {
    pub id: String,
    pub request_id: String,
    pub created_at: i64,
    pub model_used: Option<String>,
    pub status: i32,
    pub prompt_tokens: i64,
    pub cached_prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_pico: i64,
    pub max_tokens: Option<i64>,
    pub cache_status: Option<String>,
    pub routed: bool,
    pub route_score: Option<f64>,
    pub route_tier: Option<String>,
    pub route_saving_pico: Option<i64>,
    pub request_hash: String,
    pub system_hash: Option<String>,
    pub system_len: i64,
    pub prefix_hash: String,
    pub prompt_chars: i64,
}

/// Pages through an organization's records in `[from, to)`, oldest first, by keyset on
/// `(created_at, id)`: each page is one indexed range read, whatever the depth.
#[derive(Debug, Clone)]
pub struct UsageScan {
    store: Store,
    org_id: String,
    to: i64,
    after: (i64, String),
    page_size: i64,
    done: bool,
}

impl UsageScan {
    /// The next page; `None` once every record has been returned.
    pub async fn next_page(&mut self) -> Result<Option<Vec<LedgerRow>>> {
        if self.done {
            return Ok(None);
        }
        let (ts, id) = (self.after.0, self.after.1.clone());
        let to = self.to;
        let org = self.org_id.clone();
        let limit = self.page_size;
        let rows: Vec<LedgerRow> = with_conn!(self.store, |conn| {
            usage_records::table
                .filter(usage_records::org_id.eq(&org))
                // The first bound alone is what an index range can use; the second excludes
                // the records of the last page that share its timestamp.
                .filter(usage_records::created_at.ge(ts))
                .filter(
                    usage_records::created_at
                        .gt(ts)
                        .or(usage_records::id.gt(&id)),
                )
                .filter(usage_records::created_at.lt(to))
                .order((usage_records::created_at.asc(), usage_records::id.asc()))
                .limit(limit)
                .select(LedgerRow::as_select())
                .load(conn)
                .await?
        });
        if (rows.len() as i64) < limit {
            self.done = true;
        }
        match rows.last() {
            Some(last) => self.after = (last.created_at, last.id.clone()),
            None => return Ok(None),
        }
        Ok(Some(rows))
    }
}

impl Store {
    /// An organization's records in `[from, to)` (Unix microseconds), oldest first, `page_size`
    /// (1–50,000) at a time.
    pub fn usage_scan(&self, org_id: &str, from: i64, to: i64, page_size: i64) -> UsageScan {
        UsageScan {
            store: self.clone(),
            org_id: org_id.to_owned(),
            to,
            // Ids are never empty, so `(from, "")` is before every record at `from`.
            after: (from, String::new()),
            page_size: page_size.clamp(1, 50_000),
            done: false,
        }
    }

    /// An organization's usage over `[from, to)` (Unix microseconds), grouped and summed in
    /// SQL. Time groups come in time order; the others costliest first, ties by name.
    ///
    /// The whole hours of the window are read from the hourly rollups
    /// (`usage_dimension_rollups`: the grouped dimension's rows, one per hour and value, or for
    /// day and hour those of one dimension, which counts every record once), the partial hours
    /// at either end (at most two hours) from the records themselves, and the two merged: the
    /// result is exactly that of [`Store::usage_breakdown_from_records`], at a fraction of the
    /// rows read.
    pub async fn usage_breakdown(
        &self,
        org_id: &str,
        from: i64,
        to: i64,
        group_by: GroupBy,
    ) -> Result<Vec<BreakdownGroup>> {
        // Rollup hours are floor(created_at / 1 h); the breakdown's own time groups truncate
        // instead, which differs before 1970, so records before 0 are always read directly.
        let first = i128::from(from.max(0));
        let h = i128::from(HOUR_MICROS);
        let lo = (first + h - 1).div_euclid(h) * h;
        let hi = i128::from(to).div_euclid(h) * h;
        let mut parts = Vec::new();
        if lo < hi {
            // Both are within [0, to], so they fit in an i64.
            let (lo, hi) = (lo as i64, hi as i64);
            if from < lo {
                parts.extend(
                    self.partials_from_records(org_id, from, lo, group_by)
                        .await?,
                );
            }
            parts.extend(self.partials_from_rollups(org_id, lo, hi, group_by).await?);
            if hi < to {
                parts.extend(self.partials_from_records(org_id, hi, to, group_by).await?);
            }
        } else {
            parts = self
                .partials_from_records(org_id, from, to, group_by)
                .await?;
        }
        fold_groups(parts, group_by)
    }

    /// [`Store::usage_breakdown`] computed from the ledger's records alone, reading every
    /// record of the window: the reference the rollups must agree with (tests and audits
    /// compare the two), and what the rollup migration's backfill reproduces.
    pub async fn usage_breakdown_from_records(
        &self,
        org_id: &str,
        from: i64,
        to: i64,
        group_by: GroupBy,
    ) -> Result<Vec<BreakdownGroup>> {
        let parts = self
            .partials_from_records(org_id, from, to, group_by)
            .await?;
        fold_groups(parts, group_by)
    }

    /// Per (group, latency bucket) sums over the records in `[from, to)`.
    async fn partials_from_records(
        &self,
        org_id: &str,
        from: i64,
        to: i64,
        group_by: GroupBy,
    ) -> Result<Vec<Partial>> {
        let (p1, p2, p3) = match self.kind() {
            BackendKind::Postgres => ("$1", "$2", "$3"),
            BackendKind::Sqlite => ("?", "?", "?"),
        };
        let (group_expr, name_expr) = group_by.sql();
        let bucket = bucket_sql(LATENCY_BOUNDS_MS, 0);
        let saved = "(cache_saved_pico + CASE WHEN route_saving_pico > 0 \
                     THEN route_saving_pico ELSE 0 END)";
        let sql = format!(
            "SELECT {name_expr} AS grp, {bucket} AS bucket, \
             CAST(COUNT(*) AS BIGINT) AS requests, \
             CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS prompt_tokens, \
             CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS completion_tokens, \
             CAST(COALESCE(SUM(cost_pico / 1000000), 0) AS TEXT) AS cost_micros, \
             CAST(COALESCE(SUM(cost_pico % 1000000), 0) AS TEXT) AS cost_rest, \
             CAST(COALESCE(SUM({saved} / 1000000), 0) AS TEXT) AS saved_micros, \
             CAST(COALESCE(SUM({saved} % 1000000), 0) AS TEXT) AS saved_rest, \
             CAST(COALESCE(SUM(CASE WHEN cache_status LIKE 'hit%' OR cache_status = 'coalesced' \
             THEN 1 ELSE 0 END), 0) AS BIGINT) AS cache_hits, \
             CAST(MAX(latency_ms) AS BIGINT) AS latency_max \
             FROM usage_records \
             WHERE org_id = {p1} AND created_at >= {p2} AND created_at < {p3} \
             GROUP BY {group_expr}, {bucket}"
        );
        let rows: Vec<BucketRow> = with_conn!(self, |conn| {
            diesel::sql_query(sql.clone())
                .bind::<Text, _>(org_id)
                .bind::<BigInt, _>(from)
                .bind::<BigInt, _>(to)
                .load::<BucketRow>(conn)
                .await?
        });
        rows.into_iter().map(Partial::from_bucket).collect()
    }

    /// Per group sums over the rollups of the hours in `[from, to)` (both on hour boundaries).
    async fn partials_from_rollups(
        &self,
        org_id: &str,
        from: i64,
        to: i64,
        group_by: GroupBy,
    ) -> Result<Vec<Partial>> {
        let (p1, p2, p3) = match self.kind() {
            BackendKind::Postgres => ("$1", "$2", "$3"),
            BackendKind::Sqlite => ("?", "?", "?"),
        };
        let (dimension, group_expr, name_expr) = group_by.rollup_sql();
        let histogram = (0..BUCKETS)
            .map(|b| format!("CAST(SUM(b{b:02}) AS TEXT)"))
            .collect::<Vec<_>>()
            .join(" || ',' || ");
        let sql = format!(
            "SELECT {name_expr} AS grp, \
             CAST(SUM(requests) AS BIGINT) AS requests, \
             CAST(SUM(prompt_tokens) AS BIGINT) AS prompt_tokens, \
             CAST(SUM(completion_tokens) AS BIGINT) AS completion_tokens, \
             CAST(SUM(cost_micros) AS TEXT) AS cost_micros, \
             CAST(SUM(cost_rest) AS TEXT) AS cost_rest, \
             CAST(SUM(saved_micros) AS TEXT) AS saved_micros, \
             CAST(SUM(saved_rest) AS TEXT) AS saved_rest, \
             CAST(SUM(cache_hits) AS BIGINT) AS cache_hits, \
             CAST(MAX(latency_max) AS BIGINT) AS latency_max, \
             {histogram} AS histogram \
             FROM usage_dimension_rollups \
             WHERE org_id = {p1} AND dimension = '{dimension}' \
             AND hour_start >= {p2} AND hour_start < {p3} \
             GROUP BY {group_expr}"
        );
        let rows: Vec<RollupGroupRow> = with_conn!(self, |conn| {
            diesel::sql_query(sql.clone())
                .bind::<Text, _>(org_id)
                .bind::<BigInt, _>(from)
                .bind::<BigInt, _>(to)
                .load::<RollupGroupRow>(conn)
                .await?
        });
        rows.into_iter().map(Partial::from_rollup).collect()
    }

    /// Recomputes the hourly rollups of every organization from the ledger's records, with the
    /// migration's backfill, in one transaction: a repair after records were deleted or
    /// restored by hand. Run it while no ledger writer is writing.
    pub async fn rebuild_usage_rollups(&self) -> Result<()> {
        use diesel_async::AsyncConnection;
        let backfill = crate::rollup::backfill_sql(self.kind());
        if backfill.is_empty() {
            return Err(Error::Query("the rollup migration has no backfill".into()));
        }
        with_conn!(self, |conn| {
            conn.transaction::<(), diesel::result::Error, _>(async |conn| {
                diesel::sql_query("DELETE FROM usage_dimension_rollups")
                    .execute(conn)
                    .await?;
                diesel::sql_query(backfill).execute(conn).await?;
                Ok(())
            })
            .await?;
        });
        Ok(())
    }

    /// What the response cache and routing saved an organization over `[from, to)` (Unix
    /// microseconds), summed in SQL.
    pub async fn realised_savings(
        &self,
        org_id: &str,
        from: i64,
        to: i64,
    ) -> Result<RealisedSavings> {
        use diesel::dsl::sql;
        type Row = (
            i64,
            i64,
            String,
            String,
            i64,
            String,
            String,
            String,
            String,
        );
        let positive = "CASE WHEN route_saving_pico > 0 THEN route_saving_pico ELSE 0 END";
        let negative = "CASE WHEN route_saving_pico < 0 THEN -route_saving_pico ELSE 0 END";
        let split = |expr: &str| {
            (
                format!("CAST(COALESCE(SUM(({expr}) / 1000000), 0) AS TEXT)"),
                format!("CAST(COALESCE(SUM(({expr}) % 1000000), 0) AS TEXT)"),
            )
        };
        let (cm, cr) = split("cache_saved_pico");
        let (pm, pr) = split(positive);
        let (nm, nr) = split(negative);
        let row: Row = with_conn!(self, |conn| {
            usage_records::table
                .filter(usage_records::org_id.eq(org_id))
                .filter(usage_records::created_at.ge(from))
                .filter(usage_records::created_at.lt(to))
                .select((
                    sql::<BigInt>("CAST(COUNT(*) AS BIGINT)"),
                    sql::<BigInt>(
                        "CAST(COALESCE(SUM(CASE WHEN cache_status LIKE 'hit%' \
                         OR cache_status = 'coalesced' THEN 1 ELSE 0 END), 0) AS BIGINT)",
                    ),
                    sql::<Text>(&cm),
                    sql::<Text>(&cr),
                    sql::<BigInt>(
                        "CAST(COALESCE(SUM(CASE WHEN routed THEN 1 ELSE 0 END), 0) AS BIGINT)",
                    ),
                    sql::<Text>(&pm),
                    sql::<Text>(&pr),
                    sql::<Text>(&nm),
                    sql::<Text>(&nr),
                ))
                .first(conn)
                .await?
        });
        let (requests, cache_hits, cm, cr, routed_requests, pm, pr, nm, nr) = row;
        Ok(RealisedSavings {
            requests,
            cache_hits,
            cache_saved: parse_money(&cm, &cr)?,
            routed_requests,
            routing_saved: parse_money(&pm, &pr)?,
            routing_extra_cost: parse_money(&nm, &nr)?,
        })
    }
}

/// One (group, latency bucket) of the breakdown query.
#[derive(Debug, QueryableByName)]
struct BucketRow {
    #[diesel(sql_type = Text)]
    grp: String,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    bucket: i32,
    #[diesel(sql_type = BigInt)]
    requests: i64,
    #[diesel(sql_type = BigInt)]
    prompt_tokens: i64,
    #[diesel(sql_type = BigInt)]
    completion_tokens: i64,
    #[diesel(sql_type = Text)]
    cost_micros: String,
    #[diesel(sql_type = Text)]
    cost_rest: String,
    #[diesel(sql_type = Text)]
    saved_micros: String,
    #[diesel(sql_type = Text)]
    saved_rest: String,
    #[diesel(sql_type = BigInt)]
    cache_hits: i64,
    #[diesel(sql_type = BigInt)]
    latency_max: i64,
}

/// One group of the rollup query.
#[derive(Debug, QueryableByName)]
struct RollupGroupRow {
    #[diesel(sql_type = Text)]
    grp: String,
    #[diesel(sql_type = BigInt)]
    requests: i64,
    #[diesel(sql_type = BigInt)]
    prompt_tokens: i64,
    #[diesel(sql_type = BigInt)]
    completion_tokens: i64,
    #[diesel(sql_type = Text)]
    cost_micros: String,
    #[diesel(sql_type = Text)]
    cost_rest: String,
    #[diesel(sql_type = Text)]
    saved_micros: String,
    #[diesel(sql_type = Text)]
    saved_rest: String,
    #[diesel(sql_type = BigInt)]
    cache_hits: i64,
    #[diesel(sql_type = BigInt)]
    latency_max: i64,
    /// The bucket counts, comma-separated.
    #[diesel(sql_type = Text)]
    histogram: String,
}

/// Sums over part of a group's records (one latency bucket, or some hours); [`fold_groups`]
/// adds up the parts of each group.
#[derive(Debug)]
struct Partial {
    grp: String,
    requests: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    cost: i128,
    saved: i128,
    cache_hits: i64,
    latency_max: i64,
    histogram: Vec<i64>,
}

impl Partial {
    fn from_bucket(r: BucketRow) -> Result<Partial> {
        let b = usize::try_from(r.bucket)
            .ok()
            .filter(|b| *b < BUCKETS)
            .ok_or_else(|| Error::Query(format!("latency bucket {} out of range", r.bucket)))?;
        let mut histogram = vec![0; BUCKETS];
        histogram[b] = r.requests;
        Ok(Partial {
            cost: parse_money(&r.cost_micros, &r.cost_rest)?.pico(),
            saved: parse_money(&r.saved_micros, &r.saved_rest)?.pico(),
            grp: r.grp,
            requests: r.requests,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            cache_hits: r.cache_hits,
            latency_max: r.latency_max,
            histogram,
        })
    }

    fn from_rollup(r: RollupGroupRow) -> Result<Partial> {
        let histogram = r
            .histogram
            .split(',')
            .map(|n| n.trim().parse::<i64>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .ok()
            .filter(|h| h.len() == BUCKETS)
            .ok_or_else(|| Error::Query(format!("bad rollup histogram '{}'", r.histogram)))?;
        Ok(Partial {
            cost: parse_money(&r.cost_micros, &r.cost_rest)?.pico(),
            saved: parse_money(&r.saved_micros, &r.saved_rest)?.pico(),
            grp: r.grp,
            requests: r.requests,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            cache_hits: r.cache_hits,
            latency_max: r.latency_max,
            histogram,
        })
    }
}

/// `CASE` that numbers the bucket of `latency_ms`: a balanced tree over `bounds`, so a row
/// costs about log2(buckets) comparisons. `offset` is the index of `bounds[0]`.
fn bucket_sql(bounds: &[i64], offset: usize) -> String {
    match bounds.len() {
        0 => offset.to_string(),
        1 => format!(
            "CASE WHEN latency_ms <= {} THEN {offset} ELSE {} END",
            bounds[0],
            offset + 1
        ),
        n => {
            let mid = n / 2;
            format!(
                "CASE WHEN latency_ms <= {} THEN {} ELSE {} END",
                bounds[mid - 1],
                bucket_sql(&bounds[..mid], offset),
                bucket_sql(&bounds[mid..], offset + mid)
            )
        }
    }
}

/// Adds up the parts of each group and reads its percentiles.
fn fold_groups(parts: Vec<Partial>, group_by: GroupBy) -> Result<Vec<BreakdownGroup>> {
    struct Acc {
        requests: i64,
        prompt_tokens: i64,
        completion_tokens: i64,
        cost: i128,
        saved: i128,
        cache_hits: i64,
        latency_max: i64,
        histogram: Vec<i64>,
    }
    let mut groups: std::collections::BTreeMap<String, Acc> = std::collections::BTreeMap::new();
    for r in parts {
        let acc = groups.entry(r.grp).or_insert_with(|| Acc {
            requests: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            cost: 0,
            saved: 0,
            cache_hits: 0,
            latency_max: 0,
            histogram: vec![0; BUCKETS],
        });
        acc.requests += r.requests;
        acc.prompt_tokens += r.prompt_tokens;
        acc.completion_tokens += r.completion_tokens;
        acc.cost += r.cost;
        acc.saved += r.saved;
        acc.cache_hits += r.cache_hits;
        acc.latency_max = acc.latency_max.max(r.latency_max);
        for (a, n) in acc.histogram.iter_mut().zip(&r.histogram) {
            *a += n;
        }
    }
    let mut out = Vec::with_capacity(groups.len());
    for (name, acc) in groups {
        let (group, start) = if group_by.is_time() {
            let n: i64 = name
                .trim()
                .parse()
                .map_err(|_| Error::Query(format!("time bucket '{name}' is not an integer")))?;
            let secs = if group_by == GroupBy::Day {
                n * 86_400
            } else {
                n * 3_600
            };
            (format_utc(secs, group_by == GroupBy::Hour), Some(secs))
        } else {
            (name, None)
        };
        out.push(BreakdownGroup {
            group,
            start,
            requests: acc.requests,
            prompt_tokens: acc.prompt_tokens,
            completion_tokens: acc.completion_tokens,
            cost: Money::from_pico(acc.cost),
            saved: Money::from_pico(acc.saved),
            cache_hits: acc.cache_hits,
            cache_hit_rate: if acc.requests > 0 {
                acc.cache_hits as f64 / acc.requests as f64
            } else {
                0.0
            },
            latency_p50_ms: percentile(&acc.histogram, acc.requests, 0.50, acc.latency_max),
            latency_p95_ms: percentile(&acc.histogram, acc.requests, 0.95, acc.latency_max),
            latency_max_ms: acc.latency_max,
        });
    }
    if group_by.is_time() {
        out.sort_by_key(|g| g.start);
    } else {
        out.sort_by(|a, b| b.cost.cmp(&a.cost).then_with(|| a.group.cmp(&b.group)));
    }
    Ok(out)
}

/// The upper bound of the bucket holding the `p` quantile (nearest rank), capped at `max`.
fn percentile(histogram: &[i64], total: i64, p: f64, max: i64) -> i64 {
    if total <= 0 {
        return 0;
    }
    let rank = ((p * total as f64).ceil() as i64).clamp(1, total);
    let mut seen = 0;
    for (i, n) in histogram.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return LATENCY_BOUNDS_MS.get(i).map_or(max, |b| (*b).min(max));
        }
    }
    max
}

/// `YYYY-MM-DD` (or `YYYY-MM-DDTHH:00Z` with `hour`) of a Unix time, UTC.
fn format_utc(secs: i64, hour: bool) -> String {
    let days = secs.div_euclid(86_400);
    let h = secs.rem_euclid(86_400) / 3_600;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    if hour {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:00Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0, false), "1970-01-01");
        assert_eq!(format_utc(951_782_400, false), "2000-02-29");
        assert_eq!(
            format_utc(1_798_761_600 + 13 * 3600, true),
            "2027-01-01T13:00Z"
        );
    }

    #[test]
    fn percentiles_are_bucket_upper_bounds_capped_at_the_max() {
        let mut h = vec![0; LATENCY_BOUNDS_MS.len() + 1];
        // 90 requests in (8, 10] ms, 10 in (800, 1000] ms.
        h[7] = 90;
        h[27] = 10;
        assert_eq!(percentile(&h, 100, 0.5, 950), 10);
        assert_eq!(percentile(&h, 100, 0.95, 950), 950);
        assert_eq!(percentile(&h, 100, 0.90, 950), 10);
        assert_eq!(percentile(&[], 0, 0.5, 0), 0);
    }

    #[test]
    fn bucket_tree_numbers_every_bucket() {
        // Evaluates the generated CASE for a latency, by hand.
        fn eval(sql: &str, latency: i64) -> usize {
            let s = sql.trim();
            if let Some(rest) = s.strip_prefix("CASE WHEN latency_ms <= ") {
                let (bound, rest) = rest.split_once(" THEN ").unwrap();
                let bound: i64 = bound.parse().unwrap();
                let body = rest.strip_suffix(" END").unwrap();
                // The ELSE of this level is the first one outside nested CASEs.
                let mut depth = 0;
                let mut i = 0;
                while i < body.len() {
                    if body[i..].starts_with("CASE ") {
                        depth += 1;
                    } else if body[i..].starts_with(" END") {
                        depth -= 1;
                    } else if depth == 0 && body[i..].starts_with(" ELSE ") {
                        break;
                    }
                    i += 1;
                }
                let (then, other) = (&body[..i], &body[i + 6..]);
                if latency <= bound {
                    eval(then, latency)
                } else {
                    eval(other, latency)
                }
            } else {
                s.parse().unwrap()
            }
        }
        let sql = bucket_sql(LATENCY_BOUNDS_MS, 0);
        assert_eq!(eval(&sql, 0), 0);
        assert_eq!(eval(&sql, 1), 0);
        assert_eq!(eval(&sql, 2), 1);
        assert_eq!(eval(&sql, 9), 7);
        assert_eq!(eval(&sql, 10), 7);
        assert_eq!(eval(&sql, 11), 8);
        assert_eq!(eval(&sql, 640_000), LATENCY_BOUNDS_MS.len() - 1);
        assert_eq!(eval(&sql, 640_001), LATENCY_BOUNDS_MS.len());
        for (i, b) in LATENCY_BOUNDS_MS.iter().enumerate() {
            assert_eq!(eval(&sql, *b), i, "bound {b}");
        }
        assert!(LATENCY_BOUNDS_MS.windows(2).all(|w| w[0] < w[1]));
    }
}
