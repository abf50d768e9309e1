//! The response cache: answers repeated chat completion requests from memory, Redis or
//! PostgreSQL, per organization, without ever failing or slowing the request it serves.
//!
//! - [`Cache`] is the backend seam: [`MemoryCache`] (moka, bounded by bytes), [`RedisCache`]
//!   (fred pool, LZ4 for large values) and [`PostgresCache`] (diesel-async, its own migration and
//!   schema) implement it.
//! - [`TieredCache`] composes backends fastest first, with a timeout and a circuit breaker per
//!   tier: a lookup is a hit with its tier, or a miss; faults never surface as errors.
//! - [`CacheKey`] hashes the organization and the canonical request; [`CachePolicy`] and
//!   [`Directives`] decide what is stored and for how long; [`replay`] turns a stored completion
//!   into stream chunks; [`Coalescer`] makes concurrent identical misses share one upstream call.
//!
//! ```
//! use std::sync::Arc;
//! use cognitude_cache::{
//!     Cache, CacheKey, CachePolicy, CachedResponse, Directives, MemoryCache, ReplayOptions,
//!     TierOptions, TieredCache, replay,
//! };
//! use cognitude_protocol::{ChatCompletion, ChatRequest};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! let memory: Arc<dyn Cache> = Arc::new(MemoryCache::new(64 << 20));
//! let cache = TieredCache::new([(memory, TierOptions::for_kind(cognitude_cache::BackendKind::Memory))]);
//! let policy = CachePolicy::default();
//!
//! let request: ChatRequest = serde_json::from_str(
//!     r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}],"stream":true}"#,
//! )?;
//! let directives = Directives::parse(["no-cache"], Some("600"))?;
//! let key = CacheKey::for_request("org_1", &request)?;
//! assert!(!directives.lookup()); // no-cache: skip the lookup…
//!
//! // …call the upstream, then store its complete answer.
//! let completion: ChatCompletion = serde_json::from_str(
//!     r#"{"id":"c1","created":1,"model":"gpt-4o-mini","choices":[{"index":0,
//!         "message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}]}"#,
//! )?;
//! let response = CachedResponse::new(completion, "gpt-4o-mini", "openai", 1_500_000);
//! policy.check(&response)?;
//! if let Some(ttl) = policy.ttl(&request.model, &directives) {
//!     cache.store(&key, Arc::new(response), ttl).await;
//! }
//!
//! // The next identical request, streamed or not, hits.
//! let hit = cache.lookup(&key).await.ok_or("expected a hit")?;
//! assert_eq!(hit.status().as_str(), "hit-memory");
//! let chunks = replay(hit.entry.response.completion(), ReplayOptions::new(request.wants_stream_usage()));
//! assert_eq!(chunks.last().and_then(|c| c.choices[0].finish_reason.as_deref()), Some("stop"));
//!
//! // Another organization asking the same thing misses.
//! let other = CacheKey::for_request("org_2", &request)?;
//! assert!(cache.lookup(&other).await.is_none());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```

mod backend;
mod coalesce;
mod entry;
mod error;
mod key;
mod memory;
mod policy;
mod postgres;
mod redis;
mod replay;
mod tiered;

pub use backend::{BackendKind, BackendStats, Cache, CacheStatus, Hit};
pub use coalesce::{Coalesced, Coalescer};
pub use entry::{CachedResponse, Entry};
pub use error::{BoxError, Error, Result};
pub use key::{CacheKey, CanonicalRequest};
pub use memory::MemoryCache;
pub use policy::{CachePolicy, Directives, InvalidDirective, TTL_HEADER, Uncacheable};
pub use postgres::{PostgresCache, PostgresConfig};
pub use redis::{RedisCache, RedisConfig};
pub use replay::{ReplayOptions, replay};
pub use tiered::{
    METRIC_TIER_FAILURES, METRIC_TIER_SKIPPED, METRIC_TIER_UP, TierHealth, TierOptions, TierState,
    TierStats, TieredCache,
};
