//! Daily and weekly digests: an organization's figures for a period, next to the period before,
//! all summed in SQL over the ledger.

use std::collections::HashMap;
use std::fmt;

use cognitude_catalog::Money;
use cognitude_store::{CostGroup, Store};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::period::{PeriodWindow, Window, local_rfc3339};
use crate::render::Contributor;

/// Which digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DigestKind {
    /// The day before the send day.
    Daily,
    /// The seven days before the send day (the ISO week when sent on a Monday).
    Weekly,
}

/// A saving the analyzer suggests, listed in digests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recommendation {
    pub title: String,
    pub monthly_saving: Money,
}

/// Where digests get their recommendations from (the analyzer, once it exists).
#[async_trait::async_trait]
pub trait RecommendationSource: Send + Sync + fmt::Debug {
    /// The organization's best recommendations, largest saving first, at most `limit`.
    async fn top(&self, org_id: &str, limit: usize) -> Vec<Recommendation>;
}

/// One digest's figures. Money is exact; rates are basis points, changes per mille.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Digest {
    pub org_id: String,
    pub org_name: String,
    pub kind: DigestKind,
    pub period_key: String,
    pub period_label: String,
    pub previous_label: String,
    pub time_zone: String,
    /// The period, in the organization's zone (RFC 3339), and as Unix microseconds.
    pub from: String,
    pub to: String,
    pub window: Window,
    pub spend: Money,
    pub previous_spend: Money,
    pub change: Money,
    /// `change / previous_spend` in thousandths (rounded toward zero); none without a previous
    /// spend.
    pub change_permille: Option<i64>,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cache_hits: i64,
    pub cache_lookups: i64,
    pub cache_hit_rate_bp: Option<i64>,
    pub cache_saved: Money,
    pub routed: i64,
    pub route_saving: Money,
    pub top_models: Vec<Contributor>,
    pub top_keys: Vec<Contributor>,
    pub recommendations: Vec<Recommendation>,
}

/// The parameters of one digest.
#[derive(Debug, Clone)]
pub(crate) struct DigestRequest<'a> {
    pub org_id: &'a str,
    pub org_name: &'a str,
    pub kind: DigestKind,
    pub current: &'a PeriodWindow,
    pub previous: &'a PeriodWindow,
    pub time_zone: &'a str,
    pub tz: &'a jiff::tz::TimeZone,
    pub top_n: usize,
    pub recommendations: Vec<Recommendation>,
}

/// Builds a digest from the ledger.
pub(crate) async fn build(store: &Store, req: DigestRequest<'_>) -> Result<Digest> {
    let w = req.current.window;
    let now = store.usage_summary(req.org_id, w.from, w.to).await?;
    let pw = req.previous.window;
    let before = store.usage_summary(req.org_id, pw.from, pw.to).await?;
    let top_models = top_contributors(store, req.org_id, w, CostGroup::Model, req.top_n).await?;
    let top_keys = top_contributors(store, req.org_id, w, CostGroup::ApiKey, req.top_n).await?;
    let change = now.cost - before.cost;
    let change_permille = (before.cost.pico() != 0).then(|| {
        let pm = change.pico() * 1000 / before.cost.pico();
        i64::try_from(pm).unwrap_or(i64::MAX)
    });
    let cache_hit_rate_bp =
        (now.cache_lookups > 0).then(|| now.cache_hits * 10_000 / now.cache_lookups);
    Ok(Digest {
        org_id: req.org_id.to_owned(),
        org_name: req.org_name.to_owned(),
        kind: req.kind,
        period_key: req.current.key.clone(),
        period_label: req.current.label.clone(),
        previous_label: req.previous.label.clone(),
        time_zone: req.time_zone.to_owned(),
        from: local_rfc3339(w.from, req.tz),
        to: local_rfc3339(w.to, req.tz),
        window: w,
        spend: now.cost,
        previous_spend: before.cost,
        change,
        change_permille,
        requests: now.requests,
        prompt_tokens: now.prompt_tokens,
        completion_tokens: now.completion_tokens,
        cache_hits: now.cache_hits,
        cache_lookups: now.cache_lookups,
        cache_hit_rate_bp,
        cache_saved: now.cache_saved,
        routed: now.routed,
        route_saving: now.route_saving,
        top_models,
        top_keys,
        recommendations: req.recommendations,
    })
}

/// The models or keys that cost most over `window`, named for people (`ci (cgk_1a2b…)`).
pub(crate) async fn top_contributors(
    store: &Store,
    org_id: &str,
    window: Window,
    group: CostGroup,
    top_n: usize,
) -> Result<Vec<Contributor>> {
    let limit = i64::try_from(top_n).unwrap_or(50);
    let shares = store
        .cost_breakdown(org_id, window.from, window.to, group, limit)
        .await?;
    let key_names: HashMap<String, String> = match group {
        CostGroup::ApiKey if !shares.is_empty() => store
            .list_keys(Some(org_id))
            .await?
            .into_iter()
            .map(|k| (k.id, format!("{} ({})", k.name, k.prefix)))
            .collect(),
        _ => HashMap::new(),
    };
    Ok(shares
        .into_iter()
        .map(|s| {
            let name = match (group, s.name) {
                (CostGroup::Model, Some(m)) => m,
                (CostGroup::Model, None) => "(no model)".to_owned(),
                (CostGroup::ApiKey, Some(id)) => key_names.get(&id).cloned().unwrap_or(id),
                (CostGroup::ApiKey, None) => "(no key)".to_owned(),
            };
            Contributor {
                name,
                cost: s.cost,
                requests: s.requests,
            }
        })
        .collect())
}
