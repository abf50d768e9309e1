//! The response cache in the request path: tiers built from config, lookups, stores, coalescing
//! of identical misses, replay of hits as streams, and `/cache/stats` and `DELETE /cache`.

use std::sync::Arc;
use std::time::Duration;

use cognitude_cache::{
    BackendKind, Cache, CacheKey, CachePolicy, CacheStatus, CachedResponse, CanonicalRequest,
    Coalescer, Directives, MemoryCache, PostgresCache, PostgresConfig, RedisCache, RedisConfig,
    ReplayOptions, TierOptions, TieredCache,
};
use cognitude_catalog::Money;
use cognitude_protocol::{ChatCompletion, sse};
use http::{HeaderMap, Response, StatusCode};
use serde_json::json;

use crate::body::ResponseBody;
use crate::config::CacheConfig;
use crate::error::ApiError;
use crate::json_response;
use crate::state::AppState;

/// A completion an upstream call produced, shared with coalesced callers. It is made in the
/// form the cache stores, so storing it copies nothing and its JSON is encoded once for the
/// client's body and the cache's size checks.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    /// The completion, the route that answered it (`model`) and its provider.
    pub response: Arc<CachedResponse>,
    /// `None` when the route's price is unknown.
    pub cost: Option<Money>,
}

impl Answer {
    pub fn new(
        completion: ChatCompletion,
        route: &str,
        provider: &str,
        cost: Option<Money>,
    ) -> Self {
        let pico = cost.map_or(0, |c| i64::try_from(c.pico()).unwrap_or(i64::MAX));
        Answer {
            response: Arc::new(CachedResponse::new(completion, route, provider, pico)),
            cost,
        }
    }

    pub fn completion(&self) -> &ChatCompletion {
        self.response.completion()
    }

    /// The route that answered.
    pub fn route(&self) -> &str {
        self.response.model()
    }
}

/// The cache as the server uses it.
#[derive(Debug)]
pub(crate) struct CacheLayer {
    pub tiered: TieredCache,
    pub policy: CachePolicy,
    pub coalescer: Coalescer<CacheKey, Result<Arc<Answer>, ApiError>>,
}

impl CacheLayer {
    /// Builds the tiers the config names: memory, then Redis and PostgreSQL when configured.
    /// Remote tiers connect lazily: the proxy starts while they are down and uses them when
    /// they come up.
    pub async fn build(c: &CacheConfig) -> Result<Option<Arc<CacheLayer>>, cognitude_cache::Error> {
        if !c.enabled {
            return Ok(None);
        }
        let mut tiers: Vec<(Arc<dyn Cache>, TierOptions)> = vec![(
            Arc::new(MemoryCache::new(c.memory_max_bytes)),
            TierOptions::for_kind(BackendKind::Memory),
        )];
        if let Some(url) = &c.redis_url {
            let mut cfg = RedisConfig::new(url.expose());
            cfg.key_prefix.clone_from(&c.redis_prefix);
            let redis = RedisCache::connect_lazy(cfg).await?;
            tiers.push((
                Arc::new(redis),
                TierOptions::new(Duration::from_millis(c.redis_timeout_ms.max(1))),
            ));
        }
        if let Some(url) = &c.postgres_url {
            let mut cfg = PostgresConfig::new(url.expose());
            cfg.schema.clone_from(&c.postgres_schema);
            migrate_postgres_tier(cfg.clone()).await;
            let pg = PostgresCache::connect_lazy(cfg).await?;
            tiers.push((
                Arc::new(pg),
                TierOptions::new(Duration::from_millis(c.postgres_timeout_ms.max(1))),
            ));
        }
        let mut policy = CachePolicy::default();
        policy.default_ttl = Duration::from_secs(c.default_ttl_secs);
        policy.model_ttls = c
            .model_ttl_secs
            .iter()
            .map(|(m, s)| (m.clone(), Duration::from_secs(*s)))
            .collect();
        policy.max_entry_bytes = c.max_entry_bytes;
        policy.cache_truncated = c.cache_truncated;
        Ok(Some(Arc::new(CacheLayer {
            tiered: TieredCache::new(tiers),
            policy,
            coalescer: Coalescer::new(),
        })))
    }

    /// Stores a complete answer if the policy and the request allow it.
    pub async fn store_answer(
        &self,
        key: &CacheKey,
        model_requested: &str,
        directives: &Directives,
        answer: &Answer,
    ) {
        let Some(ttl) = self.policy.ttl(model_requested, directives) else {
            return;
        };
        if let Err(why) = self.policy.check(&answer.response) {
            tracing::debug!(reason = %why, "response not cached");
            return;
        }
        self.tiered.store(key, answer.response.clone(), ttl).await;
    }
}

/// The cache directives of a request (`Cache-Control`, `x-cognitude-cache-ttl`).
pub(crate) fn directives(headers: &HeaderMap) -> Result<Directives, ApiError> {
    let cc: Vec<&str> = headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let ttl = headers
        .get(cognitude_cache::TTL_HEADER)
        .and_then(|v| v.to_str().ok());
    Directives::parse(cc, ttl).map_err(|e| ApiError::invalid(e.to_string(), None))
}

/// What the cache decided for a request before the upstream call.
#[derive(Debug)]
pub(crate) struct Plan {
    pub layer: Option<Arc<CacheLayer>>,
    pub key: Option<CacheKey>,
    pub directives: Directives,
    pub status: CacheStatus,
}

impl Plan {
    /// `canonical` is the request's canonical form (`None` when it could not be encoded: the
    /// request is then neither looked up nor stored).
    pub fn new(
        state: &AppState,
        org: &str,
        canonical: Option<&CanonicalRequest>,
        directives: Directives,
    ) -> Plan {
        let Some(layer) = state.cache().cloned() else {
            return Plan {
                layer: None,
                key: None,
                directives,
                status: CacheStatus::Off,
            };
        };
        let key = canonical.map(|c| c.key(org));
        let status = if directives.lookup() {
            CacheStatus::Miss
        } else {
            CacheStatus::Bypass
        };
        Plan {
            layer: Some(layer),
            key,
            directives,
            status,
        }
    }

    /// The layer and key, when the response may be stored.
    pub fn storable(&self) -> Option<(Arc<CacheLayer>, CacheKey)> {
        match (&self.layer, &self.key) {
            (Some(l), Some(k)) if self.directives.store() => Some((l.clone(), k.clone())),
            _ => None,
        }
    }
}

/// A cached completion as an SSE body: content in pieces, the finish reason, the usage chunk
/// when asked, `[DONE]`.
pub(crate) fn replay_body(completion: &ChatCompletion, include_usage: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in cognitude_cache::replay(completion, ReplayOptions::new(include_usage)) {
        if let Ok(json) = serde_json::to_vec(&chunk) {
            out.extend_from_slice(&sse::encode_data(&json));
        }
    }
    out.extend_from_slice(&sse::done());
    out
}

/// `GET /cache/stats?window=SECONDS`: the org's hits, misses and savings from the ledger, and
/// the tiers' own figures.
pub(crate) async fn stats(
    state: &Arc<AppState>,
    org: &str,
    query: Option<&str>,
) -> Result<Response<ResponseBody>, ApiError> {
    let mut window_secs: i64 = 24 * 3600;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("window", v)) => {
                window_secs = v
                    .parse::<i64>()
                    .ok()
                    .filter(|w| (1..=366 * 24 * 3600).contains(w))
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "'window' must be a number of seconds between 1 and 31622400",
                            Some("window".into()),
                        )
                    })?;
            }
            Some(("org", _)) => {}
            _ => {
                return Err(ApiError::invalid(
                    format!("unknown query parameter '{pair}'"),
                    None,
                ));
            }
        }
    }
    let since = cognitude_store::now_micros() - window_secs * 1_000_000;
    let rows = state.store().cache_summary(org, since).await?;
    let mut hits = 0i64;
    let mut misses = 0i64;
    let mut saved = 0i128;
    let mut tokens_saved = 0i64;
    let mut by_status = serde_json::Map::new();
    for r in &rows {
        let status = r.cache_status.clone().unwrap_or_else(|| "none".into());
        if status.starts_with("hit-") || status == "coalesced" {
            hits += r.requests;
            saved += i128::from(r.saved_pico);
            tokens_saved += r.tokens;
        } else if status == "miss" {
            misses += r.requests;
        }
        by_status.insert(status, json!(r.requests));
    }
    let lookups = hits + misses;
    let tiers = match state.cache() {
        Some(l) => serde_json::to_value(l.tiered.tier_stats().await).unwrap_or_default(),
        None => json!([]),
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "org": org,
            "window_seconds": window_secs,
            "enabled": state.cache().is_some(),
            "hits": hits,
            "misses": misses,
            "hit_rate": if lookups > 0 { hits as f64 / lookups as f64 } else { 0.0 },
            "by_status": by_status,
            "tokens_saved": tokens_saved,
            "usd_saved": Money::from_pico(saved).to_string(),
            "tiers": tiers,
        }),
    ))
}

/// `DELETE /cache`: the caller's entries; the admin may name `org=` or clear everything.
pub(crate) async fn clear(
    state: &Arc<AppState>,
    org: Option<&str>,
) -> Result<Response<ResponseBody>, ApiError> {
    let Some(layer) = state.cache() else {
        return Ok(json_response(StatusCode::OK, &json!({"deleted": 0})));
    };
    let result = match org {
        Some(o) => layer.tiered.clear_org(o).await,
        None => layer.tiered.clear_all().await,
    };
    match result {
        Ok(n) => Ok(json_response(
            StatusCode::OK,
            &json!({"deleted": n, "org": org}),
        )),
        Err(e) => {
            tracing::warn!(error = %e, "cache clear failed");
            Err(ApiError::Unavailable(
                "A cache tier is unavailable; retry shortly.".into(),
            ))
        }
    }
}

/// Creates the PostgreSQL tier's table (and schema) before it is used. PostgreSQL away at start
/// must not stop the proxy: the tier then counts as failing (the breaker skips it) while a task
/// retries the migration until it succeeds.
pub(crate) async fn migrate_postgres_tier(cfg: PostgresConfig) {
    const ATTEMPT: Duration = Duration::from_secs(5);
    match tokio::time::timeout(ATTEMPT, PostgresCache::migrate(&cfg)).await {
        Ok(Ok(())) => return,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cache: PostgreSQL tier not ready; retrying in the background")
        }
        Err(_) => {
            tracing::warn!("cache: PostgreSQL tier did not answer; retrying in the background")
        }
    }
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(ATTEMPT).await;
            if let Ok(Ok(())) = tokio::time::timeout(ATTEMPT, PostgresCache::migrate(&cfg)).await {
                tracing::info!("cache: PostgreSQL tier migrated");
                return;
            }
        }
    });
}

/// Runs the PostgreSQL cache tier's migrations, when the configuration has that tier.
pub async fn migrate_cache(settings: &crate::Settings) -> Result<bool, cognitude_cache::Error> {
    let c = &settings.cache;
    let Some(url) = c.postgres_url.as_ref().filter(|_| c.enabled) else {
        return Ok(false);
    };
    let mut cfg = PostgresConfig::new(url.expose());
    cfg.schema.clone_from(&c.postgres_schema);
    PostgresCache::migrate(&cfg).await?;
    Ok(true)
}
