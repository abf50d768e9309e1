//! Ordered tiers (memory → Redis → PostgreSQL) behind one cache that never fails a request.
//!
//! Each tier call is bounded by the tier's timeout and guarded by a circuit breaker: after
//! `failure_threshold` consecutive errors or timeouts the tier is skipped for `cool_down`, then
//! the next call through is a single probe (half-open); its success closes the circuit, its
//! failure opens it for another cool-down. Recovery needs no operator, only traffic.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::{
    BackendKind, BackendStats, Cache, CacheKey, CachedResponse, Entry, Error, Hit, Result,
};

/// Counter of calls skipped because a tier's circuit is open; label `tier`.
pub const METRIC_TIER_SKIPPED: &str = "cognitude_cache_tier_skipped_total";
/// Counter of tier calls that failed; labels `tier`, `reason` (`error` or `timeout`).
pub const METRIC_TIER_FAILURES: &str = "cognitude_cache_tier_failures_total";
/// Gauge, 1 while a tier's circuit is closed and 0 while it is open; label `tier`.
pub const METRIC_TIER_UP: &str = "cognitude_cache_tier_up";

/// How one tier is called.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TierOptions {
    /// Longest wait for a lookup, store, fill or delete; a slower answer counts as a miss and as
    /// a failure for the breaker.
    pub timeout: Duration,
    /// Consecutive failures (errors or timeouts) that open the circuit.
    pub failure_threshold: u32,
    /// How long an open circuit skips the tier before one probe is let through.
    pub cool_down: Duration,
    /// Longest wait for clear, stats, health and purge, which may walk the whole tier.
    pub admin_timeout: Duration,
}

impl TierOptions {
    /// Options with `timeout` and the default breaker (3 failures, 5 s cool-down).
    pub fn new(timeout: Duration) -> TierOptions {
        TierOptions {
            timeout,
            failure_threshold: 3,
            cool_down: Duration::from_secs(5),
            admin_timeout: Duration::from_secs(10),
        }
    }

    /// Typical options for a backend kind: 5 ms in memory, 50 ms for Redis, 200 ms for
    /// PostgreSQL.
    pub fn for_kind(kind: BackendKind) -> TierOptions {
        TierOptions::new(match kind {
            BackendKind::Memory => Duration::from_millis(5),
            BackendKind::Redis => Duration::from_millis(50),
            BackendKind::Postgres | BackendKind::Tiered => Duration::from_millis(200),
        })
    }
}

/// A tier's state for `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum TierState {
    /// In use.
    Up,
    /// Skipped after errors until its cool-down ends.
    Degraded,
    /// Cool-down over: a probe call decides whether it is up again.
    Probing,
}

/// One tier's line in `/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TierHealth {
    pub tier: BackendKind,
    pub state: TierState,
    pub consecutive_failures: u32,
    /// Calls skipped while the circuit was open, since start.
    pub skipped: u64,
    pub timeouts: u64,
    pub errors: u64,
}

/// One tier's line in `/cache/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TierStats {
    pub tier: BackendKind,
    /// Lookups through the tiered cache that this tier answered.
    pub hits: u64,
    /// The backend's own figures, or why they are missing.
    pub backend: Option<BackendStats>,
    pub error: Option<String>,
}

/// Tiers composed in order, fastest first.
///
/// - [`TieredCache::lookup`] asks each tier in turn; a hit in a slower tier is copied into the
///   faster ones (the fastest inline, the others spawned) with the entry's remaining TTL.
/// - [`TieredCache::store`] writes every tier: the slowest in a spawned task, the others in
///   order before returning. [`TieredCache::settle`] waits for spawned writes.
/// - Neither ever returns an error nor waits longer than the tiers' timeouts: a fault is a miss.
///
/// Implements [`Cache`] too (get and put are the two above and never return `Err`), so it can
/// stand wherever one backend does.
#[derive(Debug)]
pub struct TieredCache {
    tiers: Vec<Arc<Tier>>,
    misses: AtomicU64,
    pending: Arc<Pending>,
}

impl TieredCache {
    /// Tiers in lookup order, fastest first.
    pub fn new(tiers: impl IntoIterator<Item = (Arc<dyn Cache>, TierOptions)>) -> TieredCache {
        let tiers = tiers
            .into_iter()
            .map(|(backend, options)| {
                let kind = backend.kind();
                metrics::gauge!(METRIC_TIER_UP, "tier" => kind.as_str()).set(1.0);
                Arc::new(Tier {
                    kind,
                    breaker: Breaker::new(&options),
                    backend,
                    options,
                    hits: AtomicU64::new(0),
                    skipped: AtomicU64::new(0),
                    timeouts: AtomicU64::new(0),
                    errors: AtomicU64::new(0),
                })
            })
            .collect();
        TieredCache {
            tiers,
            misses: AtomicU64::new(0),
            pending: Arc::new(Pending::default()),
        }
    }

    /// The entry under `key` from the first tier that has it, and which tier that was.
    pub async fn lookup(&self, key: &CacheKey) -> Option<Hit> {
        for (i, tier) in self.tiers.iter().enumerate() {
            if let Ok(Some(entry)) = tier.call(|| tier.backend.get(key)).await {
                tier.hits.fetch_add(1, Ordering::Relaxed);
                self.fill(key, &entry, i).await;
                return Some(Hit {
                    entry,
                    tier: tier.kind,
                });
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Stores `response` in every tier for `ttl` (nothing when `ttl` is zero).
    pub async fn store(&self, key: &CacheKey, response: Arc<CachedResponse>, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let Some((slowest, faster)) = self.tiers.split_last() else {
            return;
        };
        for tier in faster {
            let _ = tier.put(key, Arc::clone(&response), ttl).await;
        }
        if faster.is_empty() {
            let _ = slowest.put(key, response, ttl).await;
        } else {
            self.spawn_put(slowest, key, response, ttl).await;
        }
    }

    /// Waits until every write spawned so far has finished (for shutdown and tests).
    pub async fn settle(&self) {
        self.pending.wait_idle().await;
    }

    /// Each tier's state, for `/health`.
    pub fn tier_health(&self) -> Vec<TierHealth> {
        self.tiers
            .iter()
            .map(|t| {
                let (state, consecutive_failures) = t.breaker.view();
                TierHealth {
                    tier: t.kind,
                    state,
                    consecutive_failures,
                    skipped: t.skipped.load(Ordering::Relaxed),
                    timeouts: t.timeouts.load(Ordering::Relaxed),
                    errors: t.errors.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Each tier's figures, for `/cache/stats`. A tier whose circuit is open is not asked.
    pub async fn tier_stats(&self) -> Vec<TierStats> {
        let mut out = Vec::with_capacity(self.tiers.len());
        for t in &self.tiers {
            let result = if t.breaker.view().0 == TierState::Degraded {
                Err(Error::CircuitOpen { backend: t.kind })
            } else {
                t.admin(|| t.backend.stats()).await
            };
            let (backend, error) = match result {
                Ok(s) => (Some(s), None),
                Err(e) => (None, Some(e.to_string())),
            };
            out.push(TierStats {
                tier: t.kind,
                hits: t.hits.load(Ordering::Relaxed),
                backend,
                error,
            });
        }
        out
    }

    /// Lookups that no tier answered, since start.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Copies a hit from tier `hit_at` into the faster tiers.
    async fn fill(&self, key: &CacheKey, entry: &Entry, hit_at: usize) {
        let ttl = entry.ttl_left();
        if ttl.is_zero() {
            return;
        }
        for (j, tier) in self.tiers[..hit_at].iter().enumerate() {
            if j == 0 {
                let _ = tier.put(key, Arc::clone(&entry.response), ttl).await;
            } else {
                self.spawn_put(tier, key, Arc::clone(&entry.response), ttl)
                    .await;
            }
        }
    }

    /// Writes to `tier` in a task of its own; inline when there is no tokio runtime to spawn on.
    async fn spawn_put(
        &self,
        tier: &Arc<Tier>,
        key: &CacheKey,
        response: Arc<CachedResponse>,
        ttl: Duration,
    ) {
        let guard = PendingGuard::new(&self.pending);
        let tier = Arc::clone(tier);
        let key = key.clone();
        let task = async move {
            let _ = tier.put(&key, response, ttl).await;
            drop(guard);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(task);
            }
            Err(_) => task.await,
        }
    }

    /// Runs an administrative call on every tier; the first error after all were tried.
    async fn every_tier<T, F, Fut>(&self, op: F) -> Result<Vec<T>>
    where
        F: Fn(Arc<dyn Cache>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut out = Vec::with_capacity(self.tiers.len());
        let mut first_err = None;
        for t in &self.tiers {
            match t.admin(|| op(Arc::clone(&t.backend))).await {
                Ok(v) => out.push(v),
                Err(e) => {
                    tracing::warn!(tier = %t.kind, error = %e, "cache administrative call failed");
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

#[async_trait]
impl Cache for TieredCache {
    fn kind(&self) -> BackendKind {
        BackendKind::Tiered
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<Entry>> {
        Ok(self.lookup(key).await.map(|h| h.entry))
    }

    async fn put(
        &self,
        key: &CacheKey,
        response: Arc<CachedResponse>,
        ttl: Duration,
    ) -> Result<()> {
        self.store(key, response, ttl).await;
        Ok(())
    }

    /// Deletes from every tier (through the breaker and the lookup timeout), after the writes
    /// already spawned, so a write in flight cannot bring the entry back.
    async fn delete(&self, key: &CacheKey) -> Result<bool> {
        self.settle().await;
        let mut any = false;
        let mut first_err = None;
        for t in &self.tiers {
            match t.call(|| t.backend.delete(key)).await {
                Ok(found) => any |= found,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(any),
        }
    }

    /// Clears every tier (after the writes already spawned); the largest count any tier
    /// reported, since an entry usually sits in several.
    async fn clear_org(&self, org: &str) -> Result<u64> {
        self.settle().await;
        let counts = self
            .every_tier(|b| async move { b.clear_org(org).await })
            .await?;
        Ok(counts.into_iter().max().unwrap_or(0))
    }

    async fn clear_all(&self) -> Result<u64> {
        self.settle().await;
        let counts = self
            .every_tier(|b| async move { b.clear_all().await })
            .await?;
        Ok(counts.into_iter().max().unwrap_or(0))
    }

    /// Lookup counts of the tiered cache itself; per-tier figures are in
    /// [`TieredCache::tier_stats`].
    async fn stats(&self) -> Result<BackendStats> {
        Ok(BackendStats {
            hits: self
                .tiers
                .iter()
                .map(|t| t.hits.load(Ordering::Relaxed))
                .sum(),
            misses: self.misses(),
            ..BackendStats::default()
        })
    }

    /// Asks every tier directly (ignoring breakers); the first failure.
    async fn health(&self) -> Result<()> {
        self.every_tier(|b| async move { b.health().await })
            .await
            .map(|_| ())
    }

    /// Purges every tier; the total.
    async fn purge_expired(&self) -> Result<u64> {
        let counts = self
            .every_tier(|b| async move { b.purge_expired().await })
            .await?;
        Ok(counts.into_iter().sum())
    }
}

#[derive(Debug)]
struct Tier {
    kind: BackendKind,
    backend: Arc<dyn Cache>,
    options: TierOptions,
    breaker: Breaker,
    hits: AtomicU64,
    skipped: AtomicU64,
    timeouts: AtomicU64,
    errors: AtomicU64,
}

impl Tier {
    /// One call through the breaker, bounded by the tier's timeout.
    async fn call<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        if !self.breaker.admit() {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(METRIC_TIER_SKIPPED, "tier" => self.kind.as_str()).increment(1);
            return Err(Error::CircuitOpen { backend: self.kind });
        }
        let outcome = tokio::time::timeout(self.options.timeout, op()).await;
        let err = match outcome {
            Ok(Ok(v)) => {
                if self.breaker.succeeded() {
                    tracing::info!(tier = %self.kind, "cache tier is back");
                    metrics::gauge!(METRIC_TIER_UP, "tier" => self.kind.as_str()).set(1.0);
                }
                return Ok(v);
            }
            Ok(Err(e)) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(METRIC_TIER_FAILURES, "tier" => self.kind.as_str(), "reason" => "error")
                    .increment(1);
                e
            }
            Err(_) => {
                self.timeouts.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(METRIC_TIER_FAILURES, "tier" => self.kind.as_str(), "reason" => "timeout")
                    .increment(1);
                Error::Timeout {
                    backend: self.kind,
                    after: self.options.timeout,
                }
            }
        };
        tracing::debug!(tier = %self.kind, error = %err, "cache tier call failed");
        if self.breaker.failed() {
            tracing::warn!(
                tier = %self.kind, error = %err, cool_down = ?self.options.cool_down,
                "cache tier skipped after repeated failures"
            );
            metrics::gauge!(METRIC_TIER_UP, "tier" => self.kind.as_str()).set(0.0);
        }
        Err(err)
    }

    async fn put(
        &self,
        key: &CacheKey,
        response: Arc<CachedResponse>,
        ttl: Duration,
    ) -> Result<()> {
        self.call(|| self.backend.put(key, response, ttl)).await
    }

    /// An administrative call: the long timeout, no breaker.
    async fn admin<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        tokio::time::timeout(self.options.admin_timeout, op())
            .await
            .unwrap_or(Err(Error::Timeout {
                backend: self.kind,
                after: self.options.admin_timeout,
            }))
    }
}

/// Consecutive-failure circuit breaker with a single half-open probe.
#[derive(Debug)]
struct Breaker {
    threshold: u32,
    cool_down: Duration,
    /// A probe that has not reported after this long was abandoned (its caller went away);
    /// another call may probe.
    probe_deadline: Duration,
    state: Mutex<BreakerState>,
}

#[derive(Debug, Clone, Copy)]
enum BreakerState {
    Closed { failures: u32 },
    Open { until: Instant, failures: u32 },
    HalfOpen { since: Instant, failures: u32 },
}

impl Breaker {
    fn new(options: &TierOptions) -> Breaker {
        Breaker {
            threshold: options.failure_threshold.max(1),
            cool_down: options.cool_down,
            probe_deadline: options.timeout.saturating_mul(2),
            state: Mutex::new(BreakerState::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a call may go to the tier now.
    fn admit(&self) -> bool {
        let mut state = self.lock();
        let now = Instant::now();
        match *state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until, failures } if now >= until => {
                *state = BreakerState::HalfOpen {
                    since: now,
                    failures,
                };
                true
            }
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen { since, failures } if now >= since + self.probe_deadline => {
                *state = BreakerState::HalfOpen {
                    since: now,
                    failures,
                };
                true
            }
            BreakerState::HalfOpen { .. } => false,
        }
    }

    /// Records a success; whether it closed an open or probing circuit.
    fn succeeded(&self) -> bool {
        let mut state = self.lock();
        match *state {
            BreakerState::Closed { .. } => {
                *state = BreakerState::Closed { failures: 0 };
                false
            }
            BreakerState::HalfOpen { .. } => {
                *state = BreakerState::Closed { failures: 0 };
                true
            }
            // A call admitted before the circuit opened; the probe decides.
            BreakerState::Open { .. } => false,
        }
    }

    /// Records a failure; whether it opened the circuit.
    fn failed(&self) -> bool {
        let mut state = self.lock();
        let now = Instant::now();
        match *state {
            BreakerState::Closed { failures } => {
                let failures = failures.saturating_add(1);
                if failures >= self.threshold {
                    *state = BreakerState::Open {
                        until: now + self.cool_down,
                        failures,
                    };
                    true
                } else {
                    *state = BreakerState::Closed { failures };
                    false
                }
            }
            BreakerState::HalfOpen { failures, .. } => {
                *state = BreakerState::Open {
                    until: now + self.cool_down,
                    failures: failures.saturating_add(1),
                };
                true
            }
            BreakerState::Open { .. } => false,
        }
    }

    fn view(&self) -> (TierState, u32) {
        match *self.lock() {
            BreakerState::Closed { failures } => (TierState::Up, failures),
            BreakerState::Open { failures, .. } => (TierState::Degraded, failures),
            BreakerState::HalfOpen { failures, .. } => (TierState::Probing, failures),
        }
    }
}

/// Counts spawned writes so [`TieredCache::settle`] can wait for them.
#[derive(Debug, Default)]
struct Pending {
    count: AtomicUsize,
    idle: Notify,
}

impl Pending {
    async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Registered before the check, so a write finishing in between still wakes us.
            notified.as_mut().enable();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Held by a spawned write; dropping it (also when the task is cancelled) marks it done.
struct PendingGuard(Arc<Pending>);

impl PendingGuard {
    fn new(pending: &Arc<Pending>) -> PendingGuard {
        pending.count.fetch_add(1, Ordering::AcqRel);
        PendingGuard(Arc::clone(pending))
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::SystemTime;

    use super::*;
    use crate::entry::tests::completion;

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Mode {
        Ok,
        Fail,
        Hang,
    }

    /// A backend whose behaviour the test sets.
    #[derive(Debug)]
    struct Fake {
        kind: BackendKind,
        mode: Mutex<Mode>,
        map: Mutex<HashMap<CacheKey, Entry>>,
        calls: AtomicU64,
    }

    impl Fake {
        fn new(kind: BackendKind) -> Arc<Fake> {
            Arc::new(Fake {
                kind,
                mode: Mutex::new(Mode::Ok),
                map: Mutex::new(HashMap::new()),
                calls: AtomicU64::new(0),
            })
        }
        fn set(&self, mode: Mode) {
            *self.mode.lock().unwrap() = mode;
        }
        fn calls(&self) -> u64 {
            self.calls.load(Ordering::SeqCst)
        }
        fn holds(&self, key: &CacheKey) -> bool {
            self.map.lock().unwrap().contains_key(key)
        }
        fn insert(&self, key: &CacheKey, text: &str, ttl: Duration) {
            self.map.lock().unwrap().insert(
                key.clone(),
                Entry {
                    response: response(text),
                    expires_at: SystemTime::now() + ttl,
                },
            );
        }
        async fn enter(&self) -> Result<()> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let mode = *self.mode.lock().unwrap();
            match mode {
                Mode::Ok => Ok(()),
                Mode::Fail => Err(Error::backend(self.kind, "down")),
                Mode::Hang => std::future::pending().await,
            }
        }
    }

    #[async_trait]
    impl Cache for Fake {
        fn kind(&self) -> BackendKind {
            self.kind
        }
        async fn get(&self, key: &CacheKey) -> Result<Option<Entry>> {
            self.enter().await?;
            Ok(self.map.lock().unwrap().get(key).cloned())
        }
        async fn put(&self, key: &CacheKey, r: Arc<CachedResponse>, ttl: Duration) -> Result<()> {
            self.enter().await?;
            self.map.lock().unwrap().insert(
                key.clone(),
                Entry {
                    response: r,
                    expires_at: SystemTime::now() + ttl,
                },
            );
            Ok(())
        }
        async fn delete(&self, key: &CacheKey) -> Result<bool> {
            self.enter().await?;
            Ok(self.map.lock().unwrap().remove(key).is_some())
        }
        async fn clear_org(&self, org: &str) -> Result<u64> {
            self.enter().await?;
            let mut map = self.map.lock().unwrap();
            let before = map.len();
            map.retain(|k, _| k.org() != org);
            Ok((before - map.len()) as u64)
        }
        async fn clear_all(&self) -> Result<u64> {
            self.enter().await?;
            let mut map = self.map.lock().unwrap();
            let n = map.len() as u64;
            map.clear();
            Ok(n)
        }
        async fn stats(&self) -> Result<BackendStats> {
            self.enter().await?;
            Ok(BackendStats::default())
        }
        async fn health(&self) -> Result<()> {
            self.enter().await
        }
    }

    fn response(text: &str) -> Arc<CachedResponse> {
        Arc::new(CachedResponse::new(completion(text), "m", "p", 1))
    }

    fn key(n: u8) -> CacheKey {
        CacheKey::from_digest("org", [n; 32])
    }

    const TIMEOUT: Duration = Duration::from_millis(50);
    const COOL_DOWN: Duration = Duration::from_secs(5);

    fn options() -> TierOptions {
        let mut o = TierOptions::new(TIMEOUT);
        o.failure_threshold = 3;
        o.cool_down = COOL_DOWN;
        o
    }

    fn two_tiers() -> (Arc<Fake>, Arc<Fake>, TieredCache) {
        let fast = Fake::new(BackendKind::Memory);
        let slow = Fake::new(BackendKind::Redis);
        let tiered = TieredCache::new([
            (fast.clone() as Arc<dyn Cache>, options()),
            (slow.clone() as Arc<dyn Cache>, options()),
        ]);
        (fast, slow, tiered)
    }

    fn state_of(t: &TieredCache, i: usize) -> TierState {
        t.tier_health()[i].state
    }

    #[tokio::test]
    async fn a_hit_in_a_slower_tier_fills_the_faster_one_with_the_time_left() {
        let (fast, slow, tiered) = two_tiers();
        slow.insert(&key(1), "from redis", Duration::from_secs(100));
        let hit = tiered.lookup(&key(1)).await.unwrap();
        assert_eq!(hit.tier, BackendKind::Redis);
        assert_eq!(hit.status().as_str(), "hit-redis");
        assert!(fast.holds(&key(1)));
        let hit = tiered.lookup(&key(1)).await.unwrap();
        assert_eq!(hit.tier, BackendKind::Memory);
        assert!(hit.entry.ttl_left() <= Duration::from_secs(100));
        assert!(hit.entry.ttl_left() > Duration::from_secs(90));
        assert_eq!(tiered.tier_stats().await[1].hits, 1);
    }

    #[tokio::test]
    async fn a_store_reaches_every_tier_the_slowest_in_the_background() {
        let (fast, slow, tiered) = two_tiers();
        tiered
            .store(&key(2), response("x"), Duration::from_secs(60))
            .await;
        assert!(fast.holds(&key(2)));
        tiered.settle().await;
        assert!(slow.holds(&key(2)));
        assert!(tiered.lookup(&key(3)).await.is_none());
        assert_eq!(tiered.misses(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_tier_is_a_miss_then_skipped_then_probed_back() {
        let (fast, slow, tiered) = two_tiers();
        slow.set(Mode::Fail);
        fast.insert(&key(1), "in memory", Duration::from_secs(600));
        for _ in 0..3 {
            assert!(tiered.lookup(&key(9)).await.is_none());
        }
        assert_eq!(slow.calls(), 3);
        assert_eq!(state_of(&tiered, 1), TierState::Degraded);
        // Open: the tier is not called; the memory tier still answers.
        for _ in 0..5 {
            assert!(tiered.lookup(&key(9)).await.is_none());
            assert_eq!(
                tiered.lookup(&key(1)).await.unwrap().tier,
                BackendKind::Memory
            );
        }
        assert_eq!(slow.calls(), 3);
        let h = &tiered.tier_health()[1];
        assert_eq!((h.skipped, h.errors), (5, 3));
        assert_eq!(state_of(&tiered, 0), TierState::Up);

        // After the cool-down one probe goes through; it fails, so the circuit opens again.
        tokio::time::advance(COOL_DOWN).await;
        assert!(tiered.lookup(&key(9)).await.is_none());
        assert_eq!(slow.calls(), 4);
        assert_eq!(state_of(&tiered, 1), TierState::Degraded);
        assert!(tiered.lookup(&key(9)).await.is_none());
        assert_eq!(slow.calls(), 4);

        // The next probe succeeds and the tier is used again.
        slow.set(Mode::Ok);
        slow.insert(&key(5), "back", Duration::from_secs(600));
        tokio::time::advance(COOL_DOWN).await;
        assert_eq!(
            tiered.lookup(&key(5)).await.unwrap().tier,
            BackendKind::Redis
        );
        assert_eq!(state_of(&tiered, 1), TierState::Up);
        assert!(tiered.lookup(&key(9)).await.is_none());
        assert_eq!(slow.calls(), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_tier_answers_as_a_miss_after_its_timeout() {
        let (_fast, slow, tiered) = two_tiers();
        slow.set(Mode::Hang);
        let started = Instant::now();
        assert!(tiered.lookup(&key(1)).await.is_none());
        // Paused clock: the elapsed time is exactly what the cache waited.
        assert_eq!(started.elapsed(), TIMEOUT);
        tiered
            .store(&key(1), response("x"), Duration::from_secs(60))
            .await;
        tiered.settle().await;
        let h = &tiered.tier_health()[1];
        assert_eq!(h.timeouts, 2);
        assert_eq!(h.consecutive_failures, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn only_one_probe_runs_while_half_open() {
        let (_fast, slow, tiered) = two_tiers();
        let tiered = Arc::new(tiered);
        slow.set(Mode::Fail);
        for _ in 0..3 {
            tiered.lookup(&key(1)).await;
        }
        slow.set(Mode::Hang);
        tokio::time::advance(COOL_DOWN).await;
        let probe = tokio::spawn({
            let t = Arc::clone(&tiered);
            async move { t.lookup(&key(1)).await.is_none() }
        });
        // Let the probe reach the tier.
        while slow.calls() < 4 {
            tokio::task::yield_now().await;
        }
        assert_eq!(state_of(&tiered, 1), TierState::Probing);
        assert!(tiered.lookup(&key(1)).await.is_none());
        assert_eq!(slow.calls(), 4, "a second call went through while probing");
        assert!(probe.await.unwrap());
        assert_eq!(state_of(&tiered, 1), TierState::Degraded);
    }

    #[tokio::test]
    async fn administrative_calls_reach_every_tier_and_report_failures() {
        let (fast, slow, tiered) = two_tiers();
        tiered
            .store(&key(1), response("a"), Duration::from_secs(60))
            .await;
        tiered.settle().await;
        assert_eq!(tiered.clear_org("org").await.unwrap(), 1);
        assert!(!fast.holds(&key(1)) && !slow.holds(&key(1)));

        tiered
            .store(&key(2), response("b"), Duration::from_secs(60))
            .await;
        tiered.settle().await;
        assert!(tiered.delete(&key(2)).await.unwrap());
        assert!(!fast.holds(&key(2)) && !slow.holds(&key(2)));

        slow.set(Mode::Fail);
        fast.insert(&key(3), "c", Duration::from_secs(60));
        assert!(tiered.clear_all().await.is_err());
        assert!(!fast.holds(&key(3)), "the healthy tier was still cleared");
        assert!(tiered.health().await.is_err());
        let stats = tiered.tier_stats().await;
        assert!(stats[0].backend.is_some() && stats[1].error.is_some());
    }

    #[test]
    fn skips_are_counted_in_the_metric() {
        let recorder = TestRecorder::default();
        metrics::with_local_recorder(&recorder, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let (_fast, slow, tiered) = two_tiers();
                slow.set(Mode::Fail);
                for _ in 0..5 {
                    tiered.lookup(&key(1)).await;
                }
            });
        });
        assert_eq!(recorder.counter(METRIC_TIER_SKIPPED), 2);
        assert_eq!(recorder.counter(METRIC_TIER_FAILURES), 3);
    }

    /// Sums counters by name.
    #[derive(Default)]
    struct TestRecorder {
        counters: Mutex<HashMap<String, Arc<TestCounter>>>,
    }

    #[derive(Default)]
    struct TestCounter(AtomicU64);

    impl metrics::CounterFn for TestCounter {
        fn increment(&self, value: u64) {
            self.0.fetch_add(value, Ordering::SeqCst);
        }
        fn absolute(&self, value: u64) {
            self.0.store(value, Ordering::SeqCst);
        }
    }

    impl TestRecorder {
        fn counter(&self, name: &str) -> u64 {
            self.counters
                .lock()
                .unwrap()
                .get(name)
                .map_or(0, |c| c.0.load(Ordering::SeqCst))
        }
    }

    impl metrics::Recorder for TestRecorder {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn register_counter(
            &self,
            key: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            let c = Arc::clone(
                self.counters
                    .lock()
                    .unwrap()
                    .entry(key.name().to_owned())
                    .or_default(),
            );
            metrics::Counter::from_arc(c)
        }
        fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::noop()
        }
        fn register_histogram(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }
}
