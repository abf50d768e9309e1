//! API key verification with a short-lived cache of verified keys.
//!
//! The cache is keyed by the key's SHA-256 (never the key) and holds only successful checks, for
//! `ttl`. A key revoked on another replica stops working when its entry expires; on the replica
//! that revoked it, at once ([`Authenticator::invalidate_prefix`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::{Result, Store, keys, now_micros};

/// The identity behind a valid key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthedKey {
    pub org_id: String,
    pub key_id: String,
    pub prefix: String,
}

/// What checking a presented key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    Valid(AuthedKey),
    /// Not of the key format at all; no lookup was made.
    Malformed,
    /// Well formed, but no such key (or the secret does not match).
    Unknown,
    Revoked,
}

#[derive(Debug)]
struct Entry {
    key: AuthedKey,
    verified_at: Instant,
}

/// Verifies keys against the store, caching successes for `ttl`.
#[derive(Debug)]
pub struct Authenticator {
    store: Store,
    ttl: Duration,
    max_entries: usize,
    cache: RwLock<HashMap<String, Entry>>,
    /// One database lookup per key prefix at a time: a burst of requests with a key not yet
    /// cached (a start, a cache expiry) waits on one lookup instead of draining the pool.
    lookups: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Authenticator {
    pub fn new(store: Store, ttl: Duration) -> Authenticator {
        Authenticator {
            store,
            ttl,
            max_entries: 100_000,
            cache: RwLock::new(HashMap::new()),
            lookups: Mutex::new(HashMap::new()),
        }
    }

    /// Checks a presented key. Only a database failure is an error.
    pub async fn authenticate(&self, presented: &str) -> Result<AuthOutcome> {
        let Some(parsed) = keys::parse(presented) else {
            return Ok(AuthOutcome::Malformed);
        };
        let hash = keys::hash(presented);
        if let Some(hit) = self.cached(&hash) {
            return Ok(AuthOutcome::Valid(hit));
        }
        let lock = {
            let mut lookups = self.lookups.lock().unwrap_or_else(|e| e.into_inner());
            lookups.entry(parsed.prefix.to_owned()).or_default().clone()
        };
        let outcome = {
            let _turn = lock.lock().await;
            // Whoever held the turn before may have verified this very key.
            match self.cached(&hash) {
                Some(hit) => Ok(AuthOutcome::Valid(hit)),
                None => self.lookup(presented, parsed.prefix, hash).await,
            }
        };
        let mut lookups = self.lookups.lock().unwrap_or_else(|e| e.into_inner());
        // The last one out removes the entry, so unknown prefixes do not accumulate.
        if Arc::strong_count(&lock) <= 2 {
            lookups.remove(parsed.prefix);
        }
        outcome
    }

    /// Verifies a key not in the cache against the database, caching it when valid.
    async fn lookup(&self, presented: &str, prefix: &str, hash: String) -> Result<AuthOutcome> {
        let Some(row) = self.store.key_by_prefix(prefix).await? else {
            return Ok(AuthOutcome::Unknown);
        };
        if !keys::verify(presented, &row.secret_hash) {
            return Ok(AuthOutcome::Unknown);
        }
        if row.revoked_at.is_some() {
            return Ok(AuthOutcome::Revoked);
        }
        let key = AuthedKey {
            org_id: row.org_id,
            key_id: row.id,
            prefix: row.prefix,
        };
        self.insert(hash, key.clone());
        // Last-used is informational: written once per cache period, off the request path.
        let store = self.store.clone();
        let id = key.key_id.clone();
        tokio::spawn(async move {
            if let Err(e) = store.touch_key(&id, now_micros()).await {
                tracing::debug!(error = %e, "could not record key use");
            }
        });
        Ok(AuthOutcome::Valid(key))
    }

    /// Forgets cached verifications of the key with this prefix (after revoking it here).
    pub fn invalidate_prefix(&self, prefix: &str) {
        if let Ok(mut c) = self.cache.write() {
            c.retain(|_, e| e.key.prefix != prefix);
        }
    }

    /// Forgets cached verifications of an organization's keys (after deleting it).
    pub fn invalidate_org(&self, org_id: &str) {
        if let Ok(mut c) = self.cache.write() {
            c.retain(|_, e| e.key.org_id != org_id);
        }
    }

    fn cached(&self, hash: &str) -> Option<AuthedKey> {
        let c = self.cache.read().ok()?;
        let e = c.get(hash)?;
        (e.verified_at.elapsed() < self.ttl).then(|| e.key.clone())
    }

    fn insert(&self, hash: String, key: AuthedKey) {
        let Ok(mut c) = self.cache.write() else {
            return;
        };
        if c.len() >= self.max_entries {
            let ttl = self.ttl;
            c.retain(|_, e| e.verified_at.elapsed() < ttl);
            if c.len() >= self.max_entries {
                c.clear();
            }
        }
        c.insert(
            hash,
            Entry {
                key,
                verified_at: Instant::now(),
            },
        );
    }
}
