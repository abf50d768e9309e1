//! The in-process tier: moka, bounded by bytes, per-entry TTL, TinyLFU admission and eviction.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use moka::notification::RemovalCause;
use moka::policy::{EvictionPolicy, Expiry};

use crate::{BackendKind, BackendStats, Cache, CacheKey, CachedResponse, Entry, Result};

/// Per-entry bookkeeping beyond the response's JSON size: the key and the shared handles.
const ENTRY_OVERHEAD: usize = 128;

/// The in-process tier.
///
/// Its byte bound counts each entry's JSON size (what [`CachedResponse::encoded_len`] returns)
/// plus a small overhead; the decoded response takes somewhat more memory than its JSON.
/// TinyLFU may decline to admit a new entry when the cache is full of more frequently used ones.
pub struct MemoryCache {
    cache: moka::sync::Cache<CacheKey, MemEntry>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: Arc<AtomicU64>,
}

#[derive(Clone)]
struct MemEntry {
    response: Arc<CachedResponse>,
    expires_at: SystemTime,
    ttl: Duration,
}

impl MemoryCache {
    /// A cache that holds at most `max_bytes` of entries.
    pub fn new(max_bytes: u64) -> MemoryCache {
        let evictions = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&evictions);
        let cache = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &CacheKey, e: &MemEntry| weight(key, &e.response))
            .expire_after(PerEntryTtl)
            .eviction_policy(EvictionPolicy::tiny_lfu())
            .eviction_listener(move |_key, _value, cause| {
                if cause == RemovalCause::Size {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        MemoryCache {
            cache,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions,
        }
    }
}

impl std::fmt::Debug for MemoryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCache")
            .field("entries", &self.cache.entry_count())
            .field("bytes", &self.cache.weighted_size())
            .finish()
    }
}

#[async_trait]
impl Cache for MemoryCache {
    fn kind(&self) -> BackendKind {
        BackendKind::Memory
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<Entry>> {
        // The key holds the org, so an entry of another org is a different map key.
        let found = self
            .cache
            .get(key)
            .filter(|e| e.expires_at > SystemTime::now());
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(found.map(|e| Entry {
            response: e.response,
            expires_at: e.expires_at,
        }))
    }

    async fn put(
        &self,
        key: &CacheKey,
        response: Arc<CachedResponse>,
        ttl: Duration,
    ) -> Result<()> {
        if ttl.is_zero() {
            self.cache.invalidate(key);
            return Ok(());
        }
        let entry = MemEntry {
            response,
            expires_at: SystemTime::now() + ttl,
            ttl,
        };
        self.cache.insert(key.clone(), entry);
        Ok(())
    }

    async fn delete(&self, key: &CacheKey) -> Result<bool> {
        Ok(self.cache.remove(key).is_some())
    }

    async fn clear_org(&self, org: &str) -> Result<u64> {
        // A walk over the tier: clearing is a rare administrative call.
        let mut removed = 0;
        let keys: Vec<Arc<CacheKey>> = self
            .cache
            .iter()
            .filter(|(k, _)| k.org() == org)
            .map(|(k, _)| k)
            .collect();
        for k in keys {
            if self.cache.remove(&*k).is_some() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn clear_all(&self) -> Result<u64> {
        self.cache.run_pending_tasks();
        let n = self.cache.entry_count();
        self.cache.invalidate_all();
        self.cache.run_pending_tasks();
        Ok(n)
    }

    async fn stats(&self) -> Result<BackendStats> {
        // Counts are updated by housekeeping; bring them up to date first.
        self.cache.run_pending_tasks();
        Ok(BackendStats {
            entries: Some(self.cache.entry_count()),
            bytes: Some(self.cache.weighted_size()),
            evictions: Some(self.evictions.load(Ordering::Relaxed)),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            server_hits: None,
            server_misses: None,
        })
    }

    async fn health(&self) -> Result<()> {
        Ok(())
    }
}

fn weight(key: &CacheKey, response: &CachedResponse) -> u32 {
    let bytes = response.encoded_len() + key.org().len() + ENTRY_OVERHEAD;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

struct PerEntryTtl;

impl Expiry<CacheKey, MemEntry> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        e: &MemEntry,
        _now: Instant,
    ) -> Option<Duration> {
        Some(e.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &CacheKey,
        e: &MemEntry,
        _now: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(e.ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::tests::completion;

    fn key(org: &str, n: u8) -> CacheKey {
        CacheKey::from_digest(org, [n; 32])
    }

    fn response(text: &str) -> Arc<CachedResponse> {
        Arc::new(CachedResponse::new(completion(text), "m", "p", 10))
    }

    #[tokio::test]
    async fn stays_within_its_byte_bound_and_counts_evictions() {
        let one = weight(&key("o", 0), &response(&"x".repeat(1000))) as u64;
        let cache = MemoryCache::new(one * 10);
        for n in 0..60u8 {
            cache
                .put(
                    &key("o", n),
                    response(&"x".repeat(1000)),
                    Duration::from_secs(60),
                )
                .await
                .unwrap();
            // Read some entries so TinyLFU has frequencies to weigh.
            let _ = cache.get(&key("o", n / 2)).await.unwrap();
        }
        let stats = cache.stats().await.unwrap();
        assert!(stats.bytes.unwrap() <= one * 10, "{stats:?}");
        assert!(stats.entries.unwrap() <= 10, "{stats:?}");
        assert!(stats.entries.unwrap() >= 1, "{stats:?}");
        assert!(stats.evictions.unwrap() >= 1, "{stats:?}");
    }

    #[tokio::test]
    async fn an_entry_larger_than_the_bound_is_not_kept() {
        let cache = MemoryCache::new(1_000);
        cache
            .put(
                &key("o", 1),
                response(&"y".repeat(5_000)),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        cache.cache.run_pending_tasks();
        assert!(cache.get(&key("o", 1)).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn each_entry_keeps_its_own_ttl() {
        let cache = MemoryCache::new(1 << 20);
        cache
            .put(&key("o", 1), response("short"), Duration::from_millis(50))
            .await
            .unwrap();
        cache
            .put(&key("o", 2), response("long"), Duration::from_secs(600))
            .await
            .unwrap();
        let long = cache.get(&key("o", 2)).await.unwrap().unwrap();
        assert!(long.ttl_left() > Duration::from_secs(590));
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(cache.get(&key("o", 1)).await.unwrap().is_none());
        assert!(cache.get(&key("o", 2)).await.unwrap().is_some());
    }
}
