//! Per-organization rate limits in the request path: admission before any work, settlement when
//! the response ends, OpenAI's `x-ratelimit-*` headers, and overrides that every replica picks up
//! from the database within `ratelimit.refresh_ms`.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use cognitude_ratelimit::{
    Admission, Decision, Denial, Exceeded, FailPolicy, FailoverConfig, FailoverLimiter, Limiter,
    MemoryLimiter, Quota, Rate, RedisConfig, RedisLimiter, Reservation, Scope, Snapshot,
};
use cognitude_store::{LimitOverride, LimitValues, Store};
use http::{HeaderMap, HeaderValue};
use serde::Serialize;

use crate::config::{FailurePolicy, RateLimitConfig};
use crate::error::ApiError;
use crate::usage::Caller;

/// Metric: overrides applied by the refresh task.
const OVERRIDES_APPLIED: &str = "cognitude_ratelimit_overrides_applied_total";

/// How far back each poll looks beyond the newest change it has seen: a change committed late
/// with an earlier timestamp is still picked up (applying a row twice is harmless).
const POLL_OVERLAP_MICROS: i64 = 5_000_000;

/// The rate limiter and the quotas it applies.
#[derive(Debug)]
pub(crate) struct RateLimits {
    limiter: Arc<dyn Limiter>,
    defaults: LimitValues,
    /// Overrides by subject (organization id or key id); empty overrides are not kept.
    overrides: RwLock<HashMap<String, LimitValues>>,
    store: Store,
    refresh: Duration,
    backend: &'static str,
    policy: FailurePolicy,
    redis: Option<RedisLimiter>,
}

/// The limits in force for one organization or key, as the admin API shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Effective {
    pub requests_per_minute: Option<u64>,
    pub request_burst: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub token_burst: Option<u64>,
    pub max_concurrent: Option<u32>,
}

impl RateLimits {
    /// The limiter the configuration asks for, or `None` when rate limiting is off.
    pub fn build(config: &RateLimitConfig, store: Store) -> Result<Option<RateLimits>, String> {
        if !config.enabled {
            return Ok(None);
        }
        let local = MemoryLimiter::with_max_keys(config.max_tracked);
        let mut shared = None;
        let (limiter, backend): (Arc<dyn Limiter>, _) = match &config.redis_url {
            Some(url) => {
                let redis = RedisLimiter::connect_lazy(
                    url.expose(),
                    RedisConfig {
                        prefix: config.redis_prefix.clone(),
                        command_timeout: Duration::from_millis(config.redis_timeout_ms),
                        ..RedisConfig::default()
                    },
                )
                .map_err(|e| e.to_string())?;
                shared = Some(redis.clone());
                let policy = match config.on_redis_failure {
                    FailurePolicy::Open => FailPolicy::Open,
                    FailurePolicy::Closed => FailPolicy::Closed,
                };
                let failover = FailoverLimiter::new(
                    redis,
                    local,
                    FailoverConfig {
                        policy,
                        ..FailoverConfig::default()
                    },
                );
                (Arc::new(failover), "redis")
            }
            None => (Arc::new(local), "memory"),
        };
        let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Ok(Some(RateLimits {
            limiter,
            defaults: LimitValues {
                requests_per_minute: Some(to_i64(config.requests_per_minute)),
                request_burst: config.request_burst.map(to_i64),
                tokens_per_minute: Some(to_i64(config.tokens_per_minute)),
                token_burst: config.token_burst.map(to_i64),
                max_concurrent: Some(i64::from(config.max_concurrent)),
            },
            overrides: RwLock::new(HashMap::new()),
            store,
            refresh: Duration::from_millis(config.refresh_ms),
            backend,
            policy: config.on_redis_failure,
            redis: shared,
        }))
    }

    /// Waits (up to `timeout`) for the shared Redis, so the first requests after a start are
    /// limited across replicas rather than answered by the fallback.
    pub async fn wait_connected(&self, timeout: Duration) {
        if let Some(redis) = &self.redis
            && !redis.wait_connected(timeout).await
        {
            tracing::warn!(
                "rate-limit Redis not reachable at start; limits are per replica until it is"
            );
        }
    }

    /// Checks a request against its organization's (and key's) limits and charges it.
    pub async fn admit(
        self: &Arc<Self>,
        caller: &Caller,
        tokens: u64,
        snapshot: &mut Option<Snapshot>,
    ) -> Result<Held, ApiError> {
        let org_quota = self.effective(&caller.org_id, false).quota();
        let key_quota = caller
            .key_id
            .as_deref()
            .and_then(|k| self.key_effective(k).map(|e| (k, e.quota())));
        let mut admission = Admission::new(&caller.org_id, org_quota).with_tokens(tokens);
        if let Some((k, q)) = key_quota {
            admission = admission.with_key(k, q);
        }
        match self.limiter.admit(admission).await {
            Ok(Decision::Admitted(reservation)) => {
                *snapshot = Some(*reservation.snapshot());
                Ok(Held {
                    limits: self.clone(),
                    reservation: Some(reservation),
                })
            }
            Ok(Decision::Denied(denial)) => {
                *snapshot = Some(denial.snapshot);
                Err(denied(&caller.org_id, tokens, &denial))
            }
            Err(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, "rate limiter unavailable; refusing (fail closed)");
                Err(ApiError::Unavailable(
                    "The rate limiter is unavailable; retry shortly.".into(),
                ))
            }
            Err(e) => Err(ApiError::Internal(format!("rate limiter: {e}"))),
        }
    }

    /// The limits in force for an organization (`key = false`) or, for a key, its own override
    /// (the organization's limits apply on top).
    pub fn effective(&self, subject: &str, key: bool) -> Effective {
        let overrides = self.overrides.read().unwrap_or_else(|e| e.into_inner());
        let o = overrides.get(subject).copied().unwrap_or_default();
        let base = if key {
            LimitValues::default()
        } else {
            self.defaults
        };
        resolve(&base, &o)
    }

    fn key_effective(&self, key_id: &str) -> Option<Effective> {
        let present = self
            .overrides
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(key_id);
        present.then(|| self.effective(key_id, true))
    }

    /// Applies an override at once on this replica (others pick it up from the database).
    pub fn apply(&self, row: &LimitOverride) {
        let mut overrides = self.overrides.write().unwrap_or_else(|e| e.into_inner());
        let values = row.values();
        if values.is_empty() {
            overrides.remove(&row.subject);
        } else {
            overrides.insert(row.subject.clone(), values);
        }
    }

    /// Reads the overrides changed since `since` and applies them; returns the newest change
    /// seen (or `since`).
    pub async fn refresh_once(&self, since: i64) -> Result<i64, cognitude_store::Error> {
        let rows = self
            .store
            .limits_changed_since(since.saturating_sub(POLL_OVERLAP_MICROS))
            .await?;
        let mut newest = since;
        for row in &rows {
            self.apply(row);
            newest = newest.max(row.updated_at);
        }
        if !rows.is_empty() {
            metrics::counter!(OVERRIDES_APPLIED).increment(rows.len() as u64);
        }
        Ok(newest)
    }

    /// Polls the database for overrides until `stop` resolves. The first poll loads them all.
    pub async fn run_refresh(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let mut since = 0;
        let mut tick = tokio::time::interval(self.refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = tick.tick() => {}
            }
            match self.refresh_once(since).await {
                Ok(newest) => since = newest,
                Err(e) => tracing::warn!(error = %e, "could not read rate-limit overrides"),
            }
        }
    }

    pub fn is_degraded(&self) -> bool {
        self.limiter.is_degraded()
    }

    /// What `/health` shows.
    pub fn health(&self) -> serde_json::Value {
        serde_json::json!({
            "status": if self.is_degraded() { "degraded" } else { "up" },
            "required": false,
            "backend": self.backend,
            "on_redis_failure": match self.policy {
                FailurePolicy::Open => "open",
                FailurePolicy::Closed => "closed",
            },
        })
    }
}

/// An admitted request's reservation, settled to the real token usage when the response ends.
/// Dropped unsettled (the client went away mid-request), the concurrency permit is released and
/// the reserved tokens stay charged.
#[derive(Debug)]
pub(crate) struct Held {
    limits: Arc<RateLimits>,
    reservation: Option<Reservation>,
}

impl Held {
    /// Settles in the background: the response does not wait for the limiter's round trip.
    pub fn settle(mut self, actual_tokens: u64) {
        if let Some(reservation) = self.reservation.take() {
            let limiter = self.limits.limiter.clone();
            tokio::spawn(async move {
                if let Err(e) = limiter.settle(reservation, actual_tokens).await {
                    tracing::debug!(error = %e, "rate-limit settlement not applied");
                }
            });
        }
    }
}

/// The override's values over `base`, field by field. A rate set without its burst gets a burst
/// equal to the rate, not the base's burst.
fn resolve(base: &LimitValues, o: &LimitValues) -> Effective {
    let pos = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok()).filter(|v| *v > 0);
    let rate = |rate: Option<i64>, burst: Option<i64>, base_rate, base_burst| {
        let per_minute = pos(rate.or(base_rate))?;
        let burst = if rate.is_some() {
            burst
        } else {
            burst.or(base_burst)
        };
        Some((per_minute, pos(burst).unwrap_or(per_minute)))
    };
    let requests = rate(
        o.requests_per_minute,
        o.request_burst,
        base.requests_per_minute,
        base.request_burst,
    );
    let tokens = rate(
        o.tokens_per_minute,
        o.token_burst,
        base.tokens_per_minute,
        base.token_burst,
    );
    Effective {
        requests_per_minute: requests.map(|r| r.0),
        request_burst: requests.map(|r| r.1),
        tokens_per_minute: tokens.map(|r| r.0),
        token_burst: tokens.map(|r| r.1),
        max_concurrent: pos(o.max_concurrent.or(base.max_concurrent))
            .map(|v| u32::try_from(v).unwrap_or(u32::MAX)),
    }
}

impl Effective {
    fn quota(&self) -> Quota {
        let rate = |pm: Option<u64>, b: Option<u64>| {
            pm.and_then(|pm| Rate::try_new(pm, b.unwrap_or(pm)).ok())
        };
        Quota {
            requests: rate(self.requests_per_minute, self.request_burst),
            tokens: rate(self.tokens_per_minute, self.token_burst),
            concurrency: self.max_concurrent.and_then(NonZeroU32::new),
        }
    }
}

/// The 429 for a refused request, worded as OpenAI words its own.
fn denied(org: &str, tokens: u64, d: &Denial) -> ApiError {
    let whose = match d.scope {
        Scope::Org => format!("organization {org}"),
        Scope::Key => format!("this API key in organization {org}"),
    };
    let wait = format_reset(d.retry_after);
    let limit = |b: Option<cognitude_ratelimit::Bucket>| b.map_or(0, |b| b.limit);
    let (kind, message) = match d.exceeded {
        Exceeded::Requests => (
            "requests",
            format!(
                "Rate limit reached for {whose} on requests per min (RPM): Limit {}. Please try again in {wait}.",
                limit(d.snapshot.requests)
            ),
        ),
        Exceeded::Tokens => (
            "tokens",
            format!(
                "Rate limit reached for {whose} on tokens per min (TPM): Limit {}, Requested {tokens}. Please try again in {wait}.",
                limit(d.snapshot.tokens)
            ),
        ),
        Exceeded::TokensOverCapacity => (
            "tokens",
            format!(
                "Request too large for {whose} on tokens per min (TPM): Limit {}, Requested {tokens}. Lower max_tokens or the prompt's size.",
                limit(d.snapshot.tokens)
            ),
        ),
        Exceeded::Concurrency | _ => (
            "requests",
            format!("Too many requests in flight for {whose}. Please try again in {wait}."),
        ),
    };
    ApiError::RateLimited {
        message,
        kind,
        retry_after: d.retry_after,
    }
}

/// OpenAI's `x-ratelimit-*` headers for a decision's snapshot.
pub(crate) fn headers(h: &mut HeaderMap, s: &Snapshot) {
    use http::HeaderName;
    // Static names: this runs on every completion response.
    const NAMES: [[HeaderName; 3]; 2] = [
        [
            HeaderName::from_static("x-ratelimit-limit-requests"),
            HeaderName::from_static("x-ratelimit-remaining-requests"),
            HeaderName::from_static("x-ratelimit-reset-requests"),
        ],
        [
            HeaderName::from_static("x-ratelimit-limit-tokens"),
            HeaderName::from_static("x-ratelimit-remaining-tokens"),
            HeaderName::from_static("x-ratelimit-reset-tokens"),
        ],
    ];
    for (names, bucket) in NAMES.iter().zip([s.requests, s.tokens]) {
        let Some(b) = bucket else { continue };
        h.insert(names[0].clone(), HeaderValue::from(b.limit));
        h.insert(names[1].clone(), HeaderValue::from(b.remaining));
        if let Ok(v) = HeaderValue::from_str(&format_reset(b.reset)) {
            h.insert(names[2].clone(), v);
        }
    }
}

/// A duration as OpenAI writes its reset headers: `20ms`, `1.5s`, `6m0s`.
pub(crate) fn format_reset(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let s = d.as_secs_f64();
        let text = format!("{s:.3}");
        format!("{}s", text.trim_end_matches('0').trim_end_matches('.'))
    } else {
        let secs = d.as_secs();
        format!("{}m{}s", secs / 60, secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_format_matches_openai() {
        assert_eq!(format_reset(Duration::from_millis(20)), "20ms");
        assert_eq!(format_reset(Duration::from_millis(1_500)), "1.5s");
        assert_eq!(format_reset(Duration::from_secs(2)), "2s");
        assert_eq!(format_reset(Duration::from_secs(360)), "6m0s");
    }

    #[test]
    fn overrides_resolve_field_by_field() {
        let defaults = LimitValues {
            requests_per_minute: Some(100),
            request_burst: Some(20),
            tokens_per_minute: Some(0),
            token_burst: None,
            max_concurrent: Some(0),
        };
        let none = resolve(&defaults, &LimitValues::default());
        assert_eq!(
            (none.requests_per_minute, none.request_burst),
            (Some(100), Some(20))
        );
        assert_eq!((none.tokens_per_minute, none.max_concurrent), (None, None));
        // A new rate without a burst gets burst = rate, not the default's burst.
        let o = LimitValues {
            requests_per_minute: Some(500),
            tokens_per_minute: Some(10_000),
            max_concurrent: Some(3),
            ..LimitValues::default()
        };
        let e = resolve(&defaults, &o);
        assert_eq!(
            (e.requests_per_minute, e.request_burst),
            (Some(500), Some(500))
        );
        assert_eq!(
            (e.tokens_per_minute, e.token_burst),
            (Some(10_000), Some(10_000))
        );
        assert_eq!(e.max_concurrent, Some(3));
        // 0 lifts a limit.
        let lifted = resolve(
            &defaults,
            &LimitValues {
                requests_per_minute: Some(0),
                ..LimitValues::default()
            },
        );
        assert_eq!(lifted.requests_per_minute, None);
        assert_eq!(lifted.quota().requests, None);
    }
}
