//! The seam every cache backend implements.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::{CacheKey, CachedResponse, Entry, Result};

/// A store of cached responses. Object safe: the tiered cache holds `Arc<dyn Cache>`.
///
/// Every entry belongs to the organization in its key; a backend stores the organization with
/// the entry and never returns an entry to a key of another organization.
#[async_trait]
pub trait Cache: Send + Sync + fmt::Debug {
    /// Which backend this is; a tiered cache reports the tier of a hit with it.
    fn kind(&self) -> BackendKind;

    /// The live entry under `key`, or `None`.
    async fn get(&self, key: &CacheKey) -> Result<Option<Entry>>;

    /// Stores `response` under `key` for `ttl`, replacing what was there.
    async fn put(&self, key: &CacheKey, response: Arc<CachedResponse>, ttl: Duration)
    -> Result<()>;

    /// Removes the entry under `key`; whether there was one.
    async fn delete(&self, key: &CacheKey) -> Result<bool>;

    /// Removes every entry of `org`; how many were removed (best effort for backends that
    /// cannot count exactly).
    async fn clear_org(&self, org: &str) -> Result<u64>;

    /// Removes every entry this backend holds (within its key prefix or schema).
    async fn clear_all(&self) -> Result<u64>;

    /// Figures for `/cache/stats`.
    async fn stats(&self) -> Result<BackendStats>;

    /// Whether the backend answers.
    async fn health(&self) -> Result<()>;

    /// Deletes expired entries that the backend does not drop by itself; how many. Meant to run
    /// periodically. Memory and Redis expire entries on their own and return 0.
    async fn purge_expired(&self) -> Result<u64> {
        Ok(0)
    }
}

/// The kinds of backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum BackendKind {
    Memory,
    Redis,
    Postgres,
    /// Several backends composed by [`crate::TieredCache`].
    Tiered,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Memory => "memory",
            BackendKind::Redis => "redis",
            BackendKind::Postgres => "postgres",
            BackendKind::Tiered => "tiered",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A backend's figures. `None` where the backend has no such figure.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BackendStats {
    /// Entries held: memory-tier entries; keys in the Redis database (all prefixes, from
    /// `INFO keyspace`); PostgreSQL rows (expired rows not yet purged included).
    pub entries: Option<u64>,
    /// Bytes held: memory-tier weighted size; Redis `used_memory`; PostgreSQL table size with
    /// indexes and TOAST.
    pub bytes: Option<u64>,
    /// Entries evicted for space: memory-tier size evictions; Redis `evicted_keys`.
    pub evictions: Option<u64>,
    /// Lookups this instance answered from the backend since it started.
    pub hits: u64,
    /// Lookups this instance found nothing for since it started.
    pub misses: u64,
    /// Redis server-wide `keyspace_hits` (every client, every prefix).
    pub server_hits: Option<u64>,
    /// Redis server-wide `keyspace_misses`.
    pub server_misses: Option<u64>,
}

/// A lookup answered by the tiered cache.
#[derive(Debug, Clone)]
pub struct Hit {
    pub entry: Entry,
    /// The tier that had it.
    pub tier: BackendKind,
}

impl Hit {
    /// The `x-cognitude-cache` status of this hit.
    pub fn status(&self) -> CacheStatus {
        CacheStatus::hit(self.tier)
    }
}

/// The value of the `x-cognitude-cache` response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[non_exhaustive]
pub enum CacheStatus {
    HitMemory,
    HitRedis,
    HitPostgres,
    /// Looked up, not found (the response may be stored).
    Miss,
    /// The request asked not to look up (`Cache-Control: no-cache` / `no-store`).
    Bypass,
    /// The cache is disabled.
    Off,
}

impl CacheStatus {
    /// The status of a hit in `tier`.
    pub fn hit(tier: BackendKind) -> CacheStatus {
        match tier {
            BackendKind::Memory => CacheStatus::HitMemory,
            BackendKind::Redis => CacheStatus::HitRedis,
            // A nested tiered cache has no tier of its own; report the cold end.
            BackendKind::Postgres | BackendKind::Tiered => CacheStatus::HitPostgres,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::HitMemory => "hit-memory",
            CacheStatus::HitRedis => "hit-redis",
            CacheStatus::HitPostgres => "hit-postgres",
            CacheStatus::Miss => "miss",
            CacheStatus::Bypass => "bypass",
            CacheStatus::Off => "off",
        }
    }

    pub fn is_hit(self) -> bool {
        matches!(
            self,
            CacheStatus::HitMemory | CacheStatus::HitRedis | CacheStatus::HitPostgres
        )
    }
}

impl fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_match_the_documented_ones() {
        let all = [
            (CacheStatus::hit(BackendKind::Memory), "hit-memory"),
            (CacheStatus::hit(BackendKind::Redis), "hit-redis"),
            (CacheStatus::hit(BackendKind::Postgres), "hit-postgres"),
            (CacheStatus::Miss, "miss"),
            (CacheStatus::Bypass, "bypass"),
            (CacheStatus::Off, "off"),
        ];
        for (status, text) in all {
            assert_eq!(status.to_string(), text);
            assert_eq!(status.is_hit(), text.starts_with("hit-"));
        }
    }
}
