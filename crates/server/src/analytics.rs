//! `/analytics/*`: an organization's usage broken down by a dimension, cost-saving
//! recommendations from the analyzer, and the savings realised and still possible.
//!
//! - `GET /analytics/breakdown?from=&to=&group_by=` — `from`/`to` Unix seconds (default: the
//!   last 30 days), `group_by` one of `model` (default), `provider`, `day`, `hour`, `key`,
//!   `cache_status`, `tier`; aggregated in SQL by the store.
//! - `GET /analytics/recommendations?window=30d` — the org's records in the window streamed
//!   through [`cognitude_analyzer::Analyzer`], oldest first, one page at a time (read by
//!   [`scan`]); the
//!   [`Report`] as JSON.
//! - `GET /analytics/savings?window=30d` — realised savings (cache, routing) and the potential
//!   monthly saving of the open recommendations.
//!
//! An organization key sees its own organization; the admin key names one with `org=`.

use std::sync::Arc;

use cognitude_analyzer::{Analyzer, Kind, Record, Report};
use cognitude_catalog::{Catalog, Money};
use cognitude_router::{Policy, Router};
use cognitude_store::{GroupBy, LedgerRow, Store};
use http::{Response, StatusCode};
use serde_json::json;

use crate::auth::Principal;
use crate::body::ResponseBody;
use crate::error::ApiError;
use crate::json_response;
use crate::state::AppState;

/// The longest window or `from`–`to` span accepted: a year and a day.
pub const MAX_WINDOW_SECS: i64 = 366 * 86_400;
/// The window when none is given: 30 days.
pub const DEFAULT_WINDOW_SECS: i64 = 30 * 86_400;
/// Records read from the database at a time.
const PAGE: i64 = 5_000;
/// About how many records one slice of a scan holds (see [`scan`]).
const SLICE_RECORDS: i64 = 25_000;
/// Slices read at once, each by its own task on its own connection.
const READERS: usize = 2;
/// Pages a slice's reader may read ahead of the analysis: the whole of a typical slice, so the
/// next slice is ready when the analysis reaches it.
const AHEAD_PAGES: usize = 8;

/// Parses a window such as `30d`, `7d` or `24h`: a whole number of days or hours, at least an
/// hour and at most [`MAX_WINDOW_SECS`]. Returns seconds.
pub fn parse_window(s: &str) -> Result<i64, String> {
    let err = || {
        format!(
            "'{s}' is not a window: use a number of days or hours such as 30d, 7d or 24h, at most 366d"
        )
    };
    let s = s.trim();
    let (n, unit) = match s.char_indices().last() {
        Some((i, 'd')) => (&s[..i], 86_400),
        Some((i, 'h')) => (&s[..i], 3_600),
        _ => return Err(err()),
    };
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || n.len() > 6 {
        return Err(err());
    }
    let secs = n.parse::<i64>().map_err(|_| err())? * unit;
    if (3_600..=MAX_WINDOW_SECS).contains(&secs) {
        Ok(secs)
    } else {
        Err(err())
    }
}

/// Recommendations for an organization from its records of the last `window_secs` seconds.
pub async fn recommendations(
    store: &Store,
    catalog: &Catalog,
    policy: &Policy,
    org_id: &str,
    window_secs: i64,
) -> Result<Report, cognitude_store::Error> {
    let to = cognitude_store::now_micros();
    analyze(
        store,
        catalog,
        policy,
        org_id,
        to - window_secs * 1_000_000,
        to,
    )
    .await
}

/// Streams an organization's records in `[from, to)` (Unix microseconds) through the analyzer,
/// oldest first, and returns its report. Savings are scaled from the window, not from the span
/// of the records. Memory stays bounded: the pages [`scan`] reads ahead, the analyzer's own caps.
/// `policy` is the organization's routing policy: its thresholds, quality bars and allowed
/// models decide tiers and the cost-mode alternatives.
pub async fn analyze(
    store: &Store,
    catalog: &Catalog,
    policy: &Policy,
    org_id: &str,
    from: i64,
    to: i64,
) -> Result<Report, cognitude_store::Error> {
    let (mut rx, reader) = scan(store, org_id, from, to).await?;
    let catalog = catalog.clone();
    let policy = policy.clone();
    let org = org_id.to_owned();
    // The analysis is CPU work: off the async workers, so other requests keep being served.
    let report = tokio::task::spawn_blocking(move || {
        let router = Router::new(policy);
        let mut analyzer = Analyzer::new(&catalog, &router).with_window(from, to);
        while let Some(page) = rx.blocking_recv() {
            for row in &page? {
                analyzer.observe(&record(row, &org));
            }
        }
        Ok(analyzer.finish())
    })
    .await
    .map_err(|e| cognitude_store::Error::Query(format!("analysis failed: {e}")))?;
    reader.abort();
    report
}

/// Pages of records read by [`scan`], oldest first; an error ends them.
pub type Pages = tokio::sync::mpsc::Receiver<Result<Vec<LedgerRow>, cognitude_store::Error>>;

/// Reads an organization's records in `[from, to)`, oldest first, into the returned channel,
/// from a task that is returned too (abort it to stop early).
///
/// The window is cut into slices of about [`SLICE_RECORDS`] records at hour boundaries, sized
/// from the hourly counts of the usage rollups (one cheap query). [`READERS`] slices are read at
/// once, each by a task of its own paging through it on its own connection, up to
/// [`AHEAD_PAGES`] pages ahead; the pages are handed on slice by slice, so the order is that of
/// one scan. The database encodes one slice while this side decodes another, so the scan uses
/// two cores where a single keyset scan alternated between them. Memory stays bounded by the
/// pages read ahead, whatever the window holds.
pub async fn scan(
    store: &Store,
    org_id: &str,
    from: i64,
    to: i64,
) -> Result<(Pages, tokio::task::JoinHandle<()>), cognitude_store::Error> {
    scan_in_slices(store, org_id, from, to, SLICE_RECORDS).await
}

/// [`scan`] with slices of about `slice_records` records instead of [`SLICE_RECORDS`].
pub async fn scan_in_slices(
    store: &Store,
    org_id: &str,
    from: i64,
    to: i64,
    slice_records: i64,
) -> Result<(Pages, tokio::task::JoinHandle<()>), cognitude_store::Error> {
    let hours = store
        .usage_breakdown(org_id, from, to, GroupBy::Hour)
        .await?;
    let slices = slices(
        from,
        to,
        hours
            .iter()
            .filter_map(|g| Some((g.start?.saturating_mul(1_000_000), g.requests))),
        slice_records,
    );
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let store = store.clone();
    let org = org_id.to_owned();
    let feeder = tokio::spawn(async move {
        let read = |(a, b): (i64, i64)| {
            let (stx, srx) = tokio::sync::mpsc::channel(AHEAD_PAGES);
            let mut scan = store.usage_scan(&org, a, b, PAGE);
            let task = tokio::spawn(async move {
                loop {
                    let page = match scan.next_page().await {
                        Ok(Some(page)) => Ok(page),
                        Ok(None) => break,
                        Err(e) => Err(e),
                    };
                    let failed = page.is_err();
                    if stx.send(page).await.is_err() || failed {
                        break;
                    }
                }
            });
            (srx, AbortOnDrop(task))
        };
        let mut slices = slices.into_iter();
        let mut reading: std::collections::VecDeque<_> =
            slices.by_ref().take(READERS).map(read).collect();
        while let Some((mut pages, _task)) = reading.pop_front() {
            while let Some(page) = pages.recv().await {
                let failed = page.is_err();
                if tx.send(page).await.is_err() || failed {
                    return;
                }
            }
            reading.extend(slices.next().map(read));
        }
    });
    Ok((rx, feeder))
}

/// Aborts a slice reader when its slice is done with or the scan is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Cuts `[from, to)` into consecutive ranges holding about `target` records each, given the
/// records per hour (`(hour start in microseconds, records)`, in time order); each cut is at the
/// end of an hour. The ranges cover the window exactly, whatever the counts say: they only
/// decide where the cuts fall.
fn slices(
    from: i64,
    to: i64,
    hours: impl IntoIterator<Item = (i64, i64)>,
    target: i64,
) -> Vec<(i64, i64)> {
    const HOUR: i64 = 3_600_000_000;
    let mut out = Vec::new();
    let mut start = from;
    let mut held = 0i64;
    for (hour, records) in hours {
        held = held.saturating_add(records);
        let end = hour.saturating_add(HOUR);
        if held >= target && end > start && end < to {
            out.push((start, end));
            start = end;
            held = 0;
        }
    }
    if start < to || out.is_empty() {
        out.push((start, to));
    }
    out
}

/// A store row of `org_id`'s as the analyzer reads it, borrowed.
fn record<'a>(r: &'a LedgerRow, org_id: &'a str) -> Record<'a> {
    Record {
        request_id: &r.request_id,
        org_id,
        created_at: r.created_at,
        model_used: r.model_used.as_deref(),
        status: r.status,
        prompt_tokens: r.prompt_tokens,
        cached_prompt_tokens: r.cached_prompt_tokens,
        completion_tokens: r.completion_tokens,
        cost_pico: r.cost_pico,
        max_tokens: r.max_tokens,
        cache_status: r.cache_status.as_deref(),
        routed: r.routed,
        route_score: r.route_score,
        route_tier: r.route_tier.as_deref(),
        route_saving_pico: r.route_saving_pico,
        request_hash: &r.request_hash,
        system_hash: r.system_hash.as_deref(),
        system_len: r.system_len,
        prefix_hash: &r.prefix_hash,
        prompt_chars: r.prompt_chars,
    }
}

/// Answers `/analytics/…` for an authenticated principal.
pub(crate) async fn handle(
    state: &Arc<AppState>,
    principal: Principal,
    path: &str,
    query: Option<&str>,
) -> Result<Response<ResponseBody>, ApiError> {
    let params = Params::parse(query)?;
    let org = match (principal, params.get("org")) {
        (Principal::Org(c), None) => c.org_id,
        (Principal::Org(c), Some(o)) if o == c.org_id => c.org_id,
        (Principal::Org(_), Some(_)) => {
            return Err(ApiError::Forbidden(
                "An organization key can only read its own analytics.".into(),
            ));
        }
        (Principal::Admin, Some(o)) => o.to_owned(),
        (Principal::Admin, None) => {
            return Err(ApiError::invalid(
                "the admin key must name an organization with 'org'",
                Some("org".into()),
            ));
        }
    };
    match path {
        "/analytics/breakdown" => {
            params.only(&["org", "from", "to", "group_by"])?;
            breakdown(state, &org, &params).await
        }
        "/analytics/recommendations" => {
            params.only(&["org", "window"])?;
            let window = params.window()?;
            let report = recommendations(
                state.store(),
                state.catalog(),
                state.routing().router(&org).policy(),
                &org,
                window,
            )
            .await?;
            let mut body = serde_json::to_value(&report)
                .map_err(|e| ApiError::Internal(format!("report: {e}")))?;
            if let Some(o) = body.as_object_mut() {
                o.insert("org".into(), json!(org));
                o.insert("window_seconds".into(), json!(window));
            }
            Ok(json_response(StatusCode::OK, &body))
        }
        "/analytics/savings" => {
            params.only(&["org", "window"])?;
            savings(state, &org, params.window()?).await
        }
        _ => Err(ApiError::NotFound(path.to_owned())),
    }
}

async fn breakdown(
    state: &AppState,
    org: &str,
    params: &Params<'_>,
) -> Result<Response<ResponseBody>, ApiError> {
    let now = cognitude_store::now_micros() / 1_000_000;
    let to = params.seconds("to")?.unwrap_or(now + 1);
    let from = params.seconds("from")?.unwrap_or(to - DEFAULT_WINDOW_SECS);
    if from >= to {
        return Err(ApiError::invalid(
            "'from' must be before 'to'",
            Some("from".into()),
        ));
    }
    if to - from > MAX_WINDOW_SECS {
        return Err(ApiError::invalid(
            "'from' and 'to' may be at most 366 days apart",
            Some("from".into()),
        ));
    }
    let group_by = match params.get("group_by") {
        None => GroupBy::Model,
        Some(g) => GroupBy::parse(g).ok_or_else(|| {
            ApiError::invalid(
                format!(
                    "'group_by' must be one of model, provider, day, hour, key, cache_status, tier (got '{g}')"
                ),
                Some("group_by".into()),
            )
        })?,
    };
    let groups = state
        .store()
        .usage_breakdown(org, from * 1_000_000, to * 1_000_000, group_by)
        .await?;
    let total = |f: fn(&cognitude_store::BreakdownGroup) -> i64| groups.iter().map(f).sum::<i64>();
    let requests = total(|g| g.requests);
    let cache_hits = total(|g| g.cache_hits);
    let totals = json!({
        "requests": requests,
        "prompt_tokens": total(|g| g.prompt_tokens),
        "completion_tokens": total(|g| g.completion_tokens),
        "cost": groups.iter().map(|g| g.cost).sum::<Money>(),
        "saved": groups.iter().map(|g| g.saved).sum::<Money>(),
        "cache_hits": cache_hits,
        "cache_hit_rate": if requests > 0 { cache_hits as f64 / requests as f64 } else { 0.0 },
    });
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "org": org,
            "from": from,
            "to": to,
            "group_by": group_by,
            "groups": groups,
            "totals": totals,
        }),
    ))
}

async fn savings(
    state: &AppState,
    org: &str,
    window: i64,
) -> Result<Response<ResponseBody>, ApiError> {
    let to = cognitude_store::now_micros();
    let from = to - window * 1_000_000;
    let realised = state.store().realised_savings(org, from, to).await?;
    let report = analyze(
        state.store(),
        state.catalog(),
        state.routing().router(org).policy(),
        org,
        from,
        to,
    )
    .await?;
    let mut by_kind = serde_json::Map::new();
    for kind in [
        Kind::Cache,
        Kind::ModelDowngrade,
        Kind::SmartRouting,
        Kind::PromptCaching,
        Kind::PromptTemplate,
    ] {
        let sum: Money = report
            .recommendations
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| r.monthly_saving)
            .sum();
        if !sum.is_zero() {
            by_kind.insert(kind.as_str().into(), json!(sum));
        }
    }
    let potential: Money = report
        .recommendations
        .iter()
        .map(|r| r.monthly_saving)
        .sum();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "org": org,
            "window_seconds": window,
            "from": from / 1_000_000,
            "to": to / 1_000_000,
            "realised": {
                "requests": realised.requests,
                "cache_hits": realised.cache_hits,
                "cache_usd": realised.cache_saved,
                "routed_requests": realised.routed_requests,
                "routing_usd": realised.routing_saved,
                "routing_extra_cost_usd": realised.routing_extra_cost,
                "net_usd": realised.cache_saved + realised.routing_saved
                    - realised.routing_extra_cost,
            },
            "potential": {
                "monthly_usd": potential,
                "recommendations": report.recommendations.len(),
                "by_kind": by_kind,
            },
        }),
    ))
}

/// A query string's `name=value` pairs (no percent-decoding: every value here is plain).
struct Params<'q> {
    pairs: Vec<(&'q str, &'q str)>,
}

impl<'q> Params<'q> {
    fn parse(query: Option<&'q str>) -> Result<Params<'q>, ApiError> {
        let mut pairs = Vec::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                ApiError::invalid(
                    format!("query parameter '{pair}' has no value"),
                    Some(pair.into()),
                )
            })?;
            pairs.push((k, v));
        }
        Ok(Params { pairs })
    }

    fn get(&self, name: &str) -> Option<&'q str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
    }

    fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self.pairs.iter().find(|(k, _)| !allowed.contains(k)) {
            Some((k, _)) => Err(ApiError::invalid(
                format!(
                    "unknown query parameter '{k}'; this endpoint takes {}",
                    allowed.join(", ")
                ),
                Some((*k).into()),
            )),
            None => Ok(()),
        }
    }

    fn window(&self) -> Result<i64, ApiError> {
        self.get("window").map_or(Ok(DEFAULT_WINDOW_SECS), |w| {
            parse_window(w).map_err(|m| ApiError::invalid(m, Some("window".into())))
        })
    }

    /// A Unix time in seconds.
    fn seconds(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse::<i64>()
                    .ok()
                    .filter(|s| (0..=253_402_300_799).contains(s))
                    .ok_or_else(|| {
                        ApiError::invalid(
                            format!("'{name}' must be a Unix time in seconds (got '{v}')"),
                            Some(name.into()),
                        )
                    })
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows() {
        assert_eq!(parse_window("30d"), Ok(30 * 86_400));
        assert_eq!(parse_window("24h"), Ok(86_400));
        assert_eq!(parse_window("366d"), Ok(MAX_WINDOW_SECS));
        for bad in [
            "",
            "d",
            "0d",
            "367d",
            "30",
            "7w",
            "-1d",
            "1.5d",
            "9999999999d",
            "30dd",
        ] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn slices_cover_the_window_and_cut_at_hour_ends() {
        const H: i64 = 3_600_000_000;
        let from = 10 * H + 17;
        let to = 20 * H + 5;
        // Hours 10..=20 with 3, 0, 9, 1, 1, 1, 7, 0, 0, 2, 4 records.
        let counts = [3, 0, 9, 1, 1, 1, 7, 0, 0, 2, 4];
        let hours = || (10..=20).zip(counts).map(|(h, n)| (h * H, n));
        let cut = slices(from, to, hours(), 4);
        assert_eq!(
            cut,
            // The last hour reaches the target but ends after the window: no cut.
            vec![(from, 13 * H), (13 * H, 17 * H), (17 * H, to)]
        );
        // Consecutive, non-empty, and exactly the window.
        for s in [
            cut,
            slices(from, to, hours(), 1),
            slices(from, to, hours(), 1_000),
        ] {
            assert_eq!(s.first().map(|s| s.0), Some(from));
            assert_eq!(s.last().map(|s| s.1), Some(to));
            assert!(s.windows(2).all(|w| w[0].1 == w[1].0));
            assert!(s.iter().all(|(a, b)| a < b), "{s:?}");
        }
        // No counts (no rollups yet), an empty window, counts outside the window: one slice.
        assert_eq!(slices(from, to, [], 4), vec![(from, to)]);
        assert_eq!(slices(from, from, hours(), 4), vec![(from, from)]);
        assert_eq!(slices(from, to, [(30 * H, 100)], 4), vec![(from, to)]);
        assert_eq!(slices(from, to, [(9 * H, 100)], 4), vec![(from, to)]);
    }

    #[test]
    fn params_name_what_is_wrong() {
        let p = Params::parse(Some("window=7d&org=o&x=1")).unwrap();
        assert_eq!(p.get("org"), Some("o"));
        let Err(ApiError::InvalidRequest { param, .. }) = p.only(&["org", "window"]) else {
            unreachable!("x is not allowed");
        };
        assert_eq!(param.as_deref(), Some("x"));
        let p = Params::parse(Some("from=abc")).unwrap();
        let Err(ApiError::InvalidRequest { param, .. }) = p.seconds("from") else {
            unreachable!("abc is not a time");
        };
        assert_eq!(param.as_deref(), Some("from"));
        assert!(Params::parse(Some("window")).is_err());
        assert_eq!(
            Params::parse(None).unwrap().window().unwrap(),
            DEFAULT_WINDOW_SECS
        );
    }
}
