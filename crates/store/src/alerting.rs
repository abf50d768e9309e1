//! Alert channels, rules, firings, delivery attempts and digest schedules, and the spend
//! aggregations over the ledger that alert rules and digests read.
//!
//! The store keeps rule parameters and channel configurations as JSON text and does not interpret
//! them (the alerts crate does). Aggregations run in SQL on both backends. A money column is
//! summed in two parts, whole microdollars (`cost_pico / 1000000`) and the picodollars left
//! (`cost_pico % 1000000`), each returned as decimal text and recombined exactly: PostgreSQL's
//! `SUM(bigint)` is `NUMERIC`, which text carries whole, and SQLite's integer `SUM` fails on
//! overflow, which the split puts out of reach (a sum past 9.2 million dollars overflows a
//! BIGINT of picodollars; the split sums reach trillions).

use cognitude_catalog::Money;
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};

use crate::schema::usage_records;
use crate::{Backend, Error, Result, Store, pool_err};

diesel::table! {
    alert_channels (id) {
        id -> Text,
        org_id -> Text,
        kind -> Text,
        name -> Text,
        config -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    alert_rules (id) {
        id -> Text,
        org_id -> Text,
        name -> Text,
        kind -> Text,
        params -> Text,
        channel_ids -> Text,
        enabled -> Bool,
        time_zone -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    alert_firings (id) {
        id -> Text,
        org_id -> Text,
        rule_id -> Text,
        period_key -> Text,
        kind -> Text,
        fired_at -> BigInt,
        payload -> Text,
    }
}

diesel::table! {
    alert_deliveries (id) {
        id -> Text,
        org_id -> Text,
        firing_id -> Text,
        channel_id -> Text,
        attempt -> Integer,
        status -> Text,
        error -> Nullable<Text>,
        at -> BigInt,
    }
}

diesel::table! {
    digest_schedules (org_id) {
        org_id -> Text,
        time_zone -> Text,
        send_hour -> Integer,
        daily -> Bool,
        weekly_weekday -> Nullable<Integer>,
        channel_ids -> Text,
        last_daily -> Nullable<Text>,
        last_weekly -> Nullable<Text>,
        updated_at -> BigInt,
    }
}

/// An alert channel as stored: `config` is JSON with its secrets in it.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Queryable, Selectable, Insertable,
)]
#[diesel(table_name = alert_channels)]
pub struct AlertChannelRow {
    pub id: String,
    pub org_id: String,
    pub kind: String,
    pub name: String,
    pub config: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An alert rule as stored: `params` is JSON, `channel_ids` a JSON array of channel ids.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Queryable, Selectable, Insertable,
)]
#[diesel(table_name = alert_rules)]
pub struct AlertRuleRow {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub kind: String,
    pub params: String,
    pub channel_ids: String,
    pub enabled: bool,
    pub time_zone: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A (rule, period) that fired, a digest that went out, or a test message.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Queryable, Selectable, Insertable,
)]
#[diesel(table_name = alert_firings)]
pub struct AlertFiringRow {
    pub id: String,
    pub org_id: String,
    /// A rule id, or `digest:daily:<org>` / `digest:weekly:<org>` / `test:<channel>`.
    pub rule_id: String,
    pub period_key: String,
    /// `alert`, `digest` or `test`.
    pub kind: String,
    pub fired_at: i64,
    /// JSON: what was sent.
    pub payload: String,
}

/// One delivery attempt of a firing to a channel.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Queryable, Selectable, Insertable,
)]
#[diesel(table_name = alert_deliveries)]
pub struct AlertDeliveryRow {
    pub id: String,
    pub org_id: String,
    pub firing_id: String,
    pub channel_id: String,
    /// 1 for the first attempt.
    pub attempt: i32,
    /// `ok` or `failed`.
    pub status: String,
    pub error: Option<String>,
    pub at: i64,
}

/// When an organization's digests go out, and which periods have been sent.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Queryable, Selectable, Insertable,
)]
#[diesel(table_name = digest_schedules)]
pub struct DigestScheduleRow {
    pub org_id: String,
    pub time_zone: String,
    /// Local hour, 0–23.
    pub send_hour: i32,
    pub daily: bool,
    /// ISO weekday, 1 (Monday) – 7 (Sunday); `None`: no weekly digest.
    pub weekly_weekday: Option<i32>,
    /// JSON array of channel ids; empty means every channel of the organization.
    pub channel_ids: String,
    pub last_daily: Option<String>,
    pub last_weekly: Option<String>,
    pub updated_at: i64,
}

/// Ledger totals of one organization over `[from, to)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UsageSummary {
    pub requests: i64,
    /// Requests that failed upstream: status ≥ 500, or an `error_type` starting with
    /// `upstream` (a stream the upstream broke off answers 200).
    pub upstream_errors: i64,
    pub cost: Money,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// Requests answered from the cache (`cache_status` `hit…`).
    pub cache_hits: i64,
    /// Requests that looked the cache up: hits and misses.
    pub cache_lookups: i64,
    pub cache_saved: Money,
    pub routed: i64,
    pub route_saving: Money,
}

/// Cost and requests of one model or one key over a window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CostShare {
    /// The model used, or the API key id; `None` for records without one.
    pub name: Option<String>,
    pub cost: Money,
    pub requests: i64,
}

/// What a listing of the ledger groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CostGroup {
    Model,
    ApiKey,
}

const COST_MICROS: &str = "CAST(COALESCE(SUM(cost_pico / 1000000), 0) AS TEXT)";
const COST_REST: &str = "CAST(COALESCE(SUM(cost_pico % 1000000), 0) AS TEXT)";
const SAVED_MICROS: &str = "CAST(COALESCE(SUM(cache_saved_pico / 1000000), 0) AS TEXT)";
const SAVED_REST: &str = "CAST(COALESCE(SUM(cache_saved_pico % 1000000), 0) AS TEXT)";
const ROUTE_MICROS: &str = "CAST(COALESCE(SUM(route_saving_pico / 1000000), 0) AS TEXT)";
const ROUTE_REST: &str = "CAST(COALESCE(SUM(route_saving_pico % 1000000), 0) AS TEXT)";
/// Orders groups by cost; the float sum is for the order only (ties are broken exactly after).
const COST_ORDER: &str = "SUM(CAST(cost_pico AS DOUBLE PRECISION)) DESC";

/// Money from the two partial sums (see the module docs).
pub(crate) fn parse_money(micros: &str, rest: &str) -> Result<Money> {
    let int = |t: &str| {
        t.trim()
            .parse::<i128>()
            .map_err(|_| Error::Query(format!("not an integer sum: '{t}'")))
    };
    Ok(Money::from_pico(int(micros)? * 1_000_000 + int(rest)?))
}

impl Store {
    // ---- channels ------------------------------------------------------------------------

    pub async fn insert_alert_channel(&self, row: &AlertChannelRow) -> Result<()> {
        with_conn!(self, |conn| {
            diesel::insert_into(alert_channels::table)
                .values(row)
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    /// Replaces a channel's name and configuration. `false` if the organization has no such
    /// channel.
    pub async fn update_alert_channel(
        &self,
        org_id: &str,
        id: &str,
        name: &str,
        config: &str,
        updated_at: i64,
    ) -> Result<bool> {
        with_conn!(self, |conn| {
            let n = diesel::update(
                alert_channels::table
                    .filter(alert_channels::id.eq(id))
                    .filter(alert_channels::org_id.eq(org_id)),
            )
            .set((
                alert_channels::name.eq(name),
                alert_channels::config.eq(config),
                alert_channels::updated_at.eq(updated_at),
            ))
            .execute(conn)
            .await?;
            Ok(n > 0)
        })
    }

    /// An organization's channels, oldest first.
    pub async fn alert_channels(&self, org_id: &str) -> Result<Vec<AlertChannelRow>> {
        with_conn!(self, |conn| {
            Ok(alert_channels::table
                .filter(alert_channels::org_id.eq(org_id))
                .order((alert_channels::created_at.asc(), alert_channels::id.asc()))
                .select(AlertChannelRow::as_select())
                .load(conn)
                .await?)
        })
    }

    pub async fn alert_channel(&self, org_id: &str, id: &str) -> Result<Option<AlertChannelRow>> {
        with_conn!(self, |conn| {
            Ok(alert_channels::table
                .filter(alert_channels::id.eq(id))
                .filter(alert_channels::org_id.eq(org_id))
                .select(AlertChannelRow::as_select())
                .first(conn)
                .await
                .optional()?)
        })
    }

    pub async fn delete_alert_channel(&self, org_id: &str, id: &str) -> Result<bool> {
        with_conn!(self, |conn| {
            let n = diesel::delete(
                alert_channels::table
                    .filter(alert_channels::id.eq(id))
                    .filter(alert_channels::org_id.eq(org_id)),
            )
            .execute(conn)
            .await?;
            Ok(n > 0)
        })
    }

    // ---- rules ---------------------------------------------------------------------------

    pub async fn insert_alert_rule(&self, row: &AlertRuleRow) -> Result<()> {
        with_conn!(self, |conn| {
            diesel::insert_into(alert_rules::table)
                .values(row)
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    /// Replaces a rule (matched by id and organization; `created_at` is kept). `false` if the
    /// organization has no such rule.
    pub async fn update_alert_rule(&self, row: &AlertRuleRow) -> Result<bool> {
        with_conn!(self, |conn| {
            let n = diesel::update(
                alert_rules::table
                    .filter(alert_rules::id.eq(&row.id))
                    .filter(alert_rules::org_id.eq(&row.org_id)),
            )
            .set((
                alert_rules::name.eq(&row.name),
                alert_rules::kind.eq(&row.kind),
                alert_rules::params.eq(&row.params),
                alert_rules::channel_ids.eq(&row.channel_ids),
                alert_rules::enabled.eq(row.enabled),
                alert_rules::time_zone.eq(&row.time_zone),
                alert_rules::updated_at.eq(row.updated_at),
            ))
            .execute(conn)
            .await?;
            Ok(n > 0)
        })
    }

    /// An organization's rules, oldest first.
    pub async fn alert_rules(&self, org_id: &str) -> Result<Vec<AlertRuleRow>> {
        with_conn!(self, |conn| {
            Ok(alert_rules::table
                .filter(alert_rules::org_id.eq(org_id))
                .order((alert_rules::created_at.asc(), alert_rules::id.asc()))
                .select(AlertRuleRow::as_select())
                .load(conn)
                .await?)
        })
    }

    pub async fn alert_rule(&self, org_id: &str, id: &str) -> Result<Option<AlertRuleRow>> {
        with_conn!(self, |conn| {
            Ok(alert_rules::table
                .filter(alert_rules::id.eq(id))
                .filter(alert_rules::org_id.eq(org_id))
                .select(AlertRuleRow::as_select())
                .first(conn)
                .await
                .optional()?)
        })
    }

    pub async fn delete_alert_rule(&self, org_id: &str, id: &str) -> Result<bool> {
        with_conn!(self, |conn| {
            let n = diesel::delete(
                alert_rules::table
                    .filter(alert_rules::id.eq(id))
                    .filter(alert_rules::org_id.eq(org_id)),
            )
            .execute(conn)
            .await?;
            Ok(n > 0)
        })
    }

    /// Every enabled rule of every organization, for the evaluator.
    pub async fn enabled_alert_rules(&self) -> Result<Vec<AlertRuleRow>> {
        with_conn!(self, |conn| {
            Ok(alert_rules::table
                .filter(alert_rules::enabled.eq(true))
                .order((alert_rules::org_id.asc(), alert_rules::id.asc()))
                .select(AlertRuleRow::as_select())
                .load(conn)
                .await?)
        })
    }

    // ---- firings and deliveries ----------------------------------------------------------

    /// Records a firing unless its `(rule_id, period_key)` is already there. `true` if this call
    /// inserted it: the caller then owns sending it; `false` means another evaluator (a replica,
    /// or this one before a restart) already did.
    pub async fn insert_alert_firing(&self, row: &AlertFiringRow) -> Result<bool> {
        with_conn!(self, |conn| {
            let n = diesel::insert_into(alert_firings::table)
                .values(row)
                .on_conflict((alert_firings::rule_id, alert_firings::period_key))
                .do_nothing()
                .execute(conn)
                .await?;
            Ok(n > 0)
        })
    }

    pub async fn alert_firing(
        &self,
        rule_id: &str,
        period_key: &str,
    ) -> Result<Option<AlertFiringRow>> {
        with_conn!(self, |conn| {
            Ok(alert_firings::table
                .filter(alert_firings::rule_id.eq(rule_id))
                .filter(alert_firings::period_key.eq(period_key))
                .select(AlertFiringRow::as_select())
                .first(conn)
                .await
                .optional()?)
        })
    }

    /// An organization's firings, newest first. `after` is the `(fired_at, id)` of the last
    /// firing of the previous page: only older ones are returned.
    pub async fn alert_firings(
        &self,
        org_id: &str,
        after: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<AlertFiringRow>> {
        let limit = limit.clamp(1, 1000);
        with_conn!(self, |conn| {
            let mut q = alert_firings::table
                .filter(alert_firings::org_id.eq(org_id.to_owned()))
                .order((alert_firings::fired_at.desc(), alert_firings::id.desc()))
                .limit(limit)
                .select(AlertFiringRow::as_select())
                .into_boxed();
            if let Some((ts, id)) = after {
                q = q.filter(
                    alert_firings::fired_at.lt(ts).or(alert_firings::fired_at
                        .eq(ts)
                        .and(alert_firings::id.lt(id.to_owned()))),
                );
            }
            Ok(q.load(conn).await?)
        })
    }

    pub async fn insert_alert_delivery(&self, row: &AlertDeliveryRow) -> Result<()> {
        with_conn!(self, |conn| {
            diesel::insert_into(alert_deliveries::table)
                .values(row)
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    /// The delivery attempts of these firings, oldest first.
    pub async fn alert_deliveries(&self, firing_ids: &[String]) -> Result<Vec<AlertDeliveryRow>> {
        if firing_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for chunk in firing_ids.chunks(500) {
            let rows: Vec<AlertDeliveryRow> = with_conn!(self, |conn| {
                alert_deliveries::table
                    .filter(alert_deliveries::firing_id.eq_any(chunk))
                    .order((
                        alert_deliveries::at.asc(),
                        alert_deliveries::attempt.asc(),
                        alert_deliveries::id.asc(),
                    ))
                    .select(AlertDeliveryRow::as_select())
                    .load(conn)
                    .await?
            });
            out.extend(rows);
        }
        out.sort_by(|a, b| (a.at, a.attempt, &a.id).cmp(&(b.at, b.attempt, &b.id)));
        Ok(out)
    }

    // ---- digest schedules ----------------------------------------------------------------

    /// Creates or replaces an organization's digest schedule. The periods already sent are kept.
    pub async fn upsert_digest_schedule(&self, row: &DigestScheduleRow) -> Result<()> {
        let existing = self.digest_schedule(&row.org_id).await?;
        let mut row = row.clone();
        if let Some(e) = existing {
            row.last_daily = e.last_daily;
            row.last_weekly = e.last_weekly;
        }
        with_conn!(self, |conn| {
            diesel::insert_into(digest_schedules::table)
                .values(&row)
                .on_conflict(digest_schedules::org_id)
                .do_update()
                .set((
                    digest_schedules::time_zone.eq(&row.time_zone),
                    digest_schedules::send_hour.eq(row.send_hour),
                    digest_schedules::daily.eq(row.daily),
                    digest_schedules::weekly_weekday.eq(row.weekly_weekday),
                    digest_schedules::channel_ids.eq(&row.channel_ids),
                    digest_schedules::updated_at.eq(row.updated_at),
                ))
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    pub async fn digest_schedule(&self, org_id: &str) -> Result<Option<DigestScheduleRow>> {
        with_conn!(self, |conn| {
            Ok(digest_schedules::table
                .find(org_id)
                .select(DigestScheduleRow::as_select())
                .first(conn)
                .await
                .optional()?)
        })
    }

    /// Every organization's digest schedule.
    pub async fn digest_schedules(&self) -> Result<Vec<DigestScheduleRow>> {
        with_conn!(self, |conn| {
            Ok(digest_schedules::table
                .order(digest_schedules::org_id.asc())
                .select(DigestScheduleRow::as_select())
                .load(conn)
                .await?)
        })
    }

    pub async fn delete_digest_schedule(&self, org_id: &str) -> Result<bool> {
        with_conn!(self, |conn| {
            let n = diesel::delete(digest_schedules::table.find(org_id))
                .execute(conn)
                .await?;
            Ok(n > 0)
        })
    }

    /// Notes the last daily and/or weekly period sent (informational: the firing's unique key
    /// is what prevents a second send).
    pub async fn mark_digest_sent(
        &self,
        org_id: &str,
        daily: Option<&str>,
        weekly: Option<&str>,
    ) -> Result<()> {
        with_conn!(self, |conn| {
            if let Some(d) = daily {
                diesel::update(digest_schedules::table.find(org_id))
                    .set(digest_schedules::last_daily.eq(Some(d)))
                    .execute(conn)
                    .await?;
            }
            if let Some(w) = weekly {
                diesel::update(digest_schedules::table.find(org_id))
                    .set(digest_schedules::last_weekly.eq(Some(w)))
                    .execute(conn)
                    .await?;
            }
            Ok(())
        })
    }

    // ---- ledger aggregations -------------------------------------------------------------

    /// An organization's ledger totals over `[from, to)` (Unix microseconds), summed in SQL.
    pub async fn usage_summary(&self, org_id: &str, from: i64, to: i64) -> Result<UsageSummary> {
        type Row = (
            (i64, i64, String, String, i64, i64),
            (i64, i64, String, String, i64, String, String),
        );
        let row: Row = with_conn!(self, |conn| {
            usage_records::table
                .filter(usage_records::org_id.eq(org_id))
                .filter(usage_records::created_at.ge(from))
                .filter(usage_records::created_at.lt(to))
                .select((
                    (
                        sql::<BigInt>("CAST(COUNT(*) AS BIGINT)"),
                        sql::<BigInt>(
                            "CAST(COALESCE(SUM(CASE WHEN status >= 500 \
                             OR error_type LIKE 'upstream%' THEN 1 ELSE 0 END), 0) AS BIGINT)",
                        ),
                        sql::<Text>(COST_MICROS),
                        sql::<Text>(COST_REST),
                        sql::<BigInt>("CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT)"),
                        sql::<BigInt>("CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT)"),
                    ),
                    (
                        sql::<BigInt>(
                            "CAST(COALESCE(SUM(CASE WHEN cache_status LIKE 'hit%' \
                             THEN 1 ELSE 0 END), 0) AS BIGINT)",
                        ),
                        sql::<BigInt>(
                            "CAST(COALESCE(SUM(CASE WHEN cache_status LIKE 'hit%' \
                             OR cache_status = 'miss' THEN 1 ELSE 0 END), 0) AS BIGINT)",
                        ),
                        sql::<Text>(SAVED_MICROS),
                        sql::<Text>(SAVED_REST),
                        sql::<BigInt>(
                            "CAST(COALESCE(SUM(CASE WHEN routed THEN 1 ELSE 0 END), 0) AS BIGINT)",
                        ),
                        sql::<Text>(ROUTE_MICROS),
                        sql::<Text>(ROUTE_REST),
                    ),
                ))
                .first(conn)
                .await?
        });
        let ((requests, upstream_errors, cm, cr, prompt_tokens, completion_tokens), more) = row;
        let (cache_hits, cache_lookups, sm, sr, routed, rm, rr) = more;
        Ok(UsageSummary {
            requests,
            upstream_errors,
            cost: parse_money(&cm, &cr)?,
            prompt_tokens,
            completion_tokens,
            cache_hits,
            cache_lookups,
            cache_saved: parse_money(&sm, &sr)?,
            routed,
            route_saving: parse_money(&rm, &rr)?,
        })
    }

    /// An organization's spend over `[from, to)` grouped by model or API key, the costliest
    /// first (ties by name), at most `limit` groups.
    pub async fn cost_breakdown(
        &self,
        org_id: &str,
        from: i64,
        to: i64,
        group: CostGroup,
        limit: i64,
    ) -> Result<Vec<CostShare>> {
        let limit = limit.clamp(1, 1000);
        let rows: Vec<(Option<String>, String, String, i64)> = match group {
            CostGroup::Model => with_conn!(self, |conn| {
                usage_records::table
                    .filter(usage_records::org_id.eq(org_id))
                    .filter(usage_records::created_at.ge(from))
                    .filter(usage_records::created_at.lt(to))
                    .group_by(usage_records::model_used)
                    .select((
                        usage_records::model_used,
                        sql::<Text>(COST_MICROS),
                        sql::<Text>(COST_REST),
                        sql::<BigInt>("CAST(COUNT(*) AS BIGINT)"),
                    ))
                    .order_by((
                        sql::<Nullable<BigInt>>(COST_ORDER),
                        usage_records::model_used.asc(),
                    ))
                    .limit(limit)
                    .load(conn)
                    .await?
            }),
            CostGroup::ApiKey => with_conn!(self, |conn| {
                usage_records::table
                    .filter(usage_records::org_id.eq(org_id))
                    .filter(usage_records::created_at.ge(from))
                    .filter(usage_records::created_at.lt(to))
                    .group_by(usage_records::api_key_id)
                    .select((
                        usage_records::api_key_id,
                        sql::<Text>(COST_MICROS),
                        sql::<Text>(COST_REST),
                        sql::<BigInt>("CAST(COUNT(*) AS BIGINT)"),
                    ))
                    .order_by((
                        sql::<Nullable<BigInt>>(COST_ORDER),
                        usage_records::api_key_id.asc(),
                    ))
                    .limit(limit)
                    .load(conn)
                    .await?
            }),
        };
        let mut shares = rows
            .into_iter()
            .map(|(name, micros, rest, requests)| {
                Ok(CostShare {
                    name,
                    cost: parse_money(&micros, &rest)?,
                    requests,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        shares.sort_by(|a, b| b.cost.cmp(&a.cost).then_with(|| a.name.cmp(&b.name)));
        Ok(shares)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_sums_recombine_exactly() {
        assert_eq!(
            parse_money("123456789012345678", "901").unwrap().pico(),
            123_456_789_012_345_678_000_901
        );
        assert_eq!(parse_money("0", "0").unwrap(), Money::ZERO);
        assert_eq!(parse_money("-1", "-5").unwrap().pico(), -1_000_005);
        assert!(parse_money("1.5", "0").is_err());
    }
}
