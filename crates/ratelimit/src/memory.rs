//! The in-process limiter: one replica's view, for a single instance or as the fallback while
//! Redis is away.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::Limiter;
use crate::clock::{Clock, SystemClock, micros};
use crate::decision::{Decision, Held, Reservation, Settler};
use crate::error::Result;
use crate::gcra::{self, Kind, Observed, Plan};
use crate::quota::Admission;
use crate::table::{Slot, Table};

/// How many organizations and keys an in-process limiter tracks by default.
const DEFAULT_MAX_KEYS: usize = 100_000;

/// GCRA over a bounded in-process map; the same arithmetic as [`RedisLimiter`](crate::RedisLimiter),
/// held per replica.
///
/// Memory is bounded: at most about `max_keys` organizations and keys are tracked (plus those
/// holding concurrency permits). An organization whose buckets are full again is forgotten, which
/// changes no answer; past the cap, the entries closest to full are forgotten first.
pub struct MemoryLimiter<C: Clock = SystemClock> {
    inner: Arc<Inner<C>>,
}

struct Inner<C> {
    table: Table<String, Entry>,
    clock: C,
}

/// One organization's or key's state: the TAT of its request and token buckets (µs on the
/// limiter's clock) and its permits in use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Entry {
    tat: [u64; 2],
    in_flight: u64,
}

impl MemoryLimiter {
    /// A limiter on the system clock tracking up to 100 000 ids.
    pub fn new() -> MemoryLimiter {
        MemoryLimiter::with_clock(DEFAULT_MAX_KEYS, SystemClock::new())
    }

    /// A limiter on the system clock tracking up to `max_keys` ids.
    pub fn with_max_keys(max_keys: usize) -> MemoryLimiter {
        MemoryLimiter::with_clock(max_keys, SystemClock::new())
    }
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        MemoryLimiter::new()
    }
}

impl<C: Clock> MemoryLimiter<C> {
    /// A limiter on `clock` tracking up to `max_keys` ids.
    pub fn with_clock(max_keys: usize, clock: C) -> MemoryLimiter<C> {
        MemoryLimiter {
            inner: Arc::new(Inner {
                table: Table::new(max_keys),
                clock,
            }),
        }
    }

    /// The same check as [`Limiter::admit`], without a future: it never waits.
    pub fn admit_now(&self, admission: Admission<'_>) -> Result<Decision> {
        let plan = Plan::new(admission)?;
        let now = micros(self.inner.clock.now());
        let key_entry = uses_key_entry(&plan).then(|| key_entry_name(&plan));
        let verdict =
            self.inner
                .table
                .update(now, admission.org, key_entry.as_deref(), |org, key| {
                    let mut seen = Observed::default();
                    observe(org, now, &mut seen, 0);
                    if let Some(key) = key.as_deref() {
                        observe(key, now, &mut seen, 1);
                    }
                    let verdict = gcra::decide(&plan, &seen);
                    if verdict.denial.is_none() {
                        charge(&plan, &verdict.after, now, org, 0);
                        if let Some(key) = key {
                            charge(&plan, &verdict.after, now, key, 1);
                        }
                    }
                    verdict
                });
        Ok(match verdict.denial {
            Some(denial) => Decision::Denied(denial),
            None => {
                let held = plan
                    .held(0)
                    .map(|h| (Arc::clone(&self.inner) as Arc<dyn Settler>, h));
                Decision::Admitted(Reservation::new(verdict.snapshot, admission.tokens, held))
            }
        })
    }

    /// Organizations and keys currently tracked.
    pub fn tracked_keys(&self) -> usize {
        self.inner.table.len()
    }

    /// The most ids tracked at once (permit holders aside).
    pub fn max_keys(&self) -> usize {
        self.inner.table.capacity()
    }
}

#[async_trait]
impl<C: Clock> Limiter for MemoryLimiter<C> {
    async fn admit(&self, admission: Admission<'_>) -> Result<Decision> {
        self.admit_now(admission)
    }
}

impl<C: Clock> fmt::Debug for MemoryLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryLimiter")
            .field("tracked_keys", &self.tracked_keys())
            .field("max_keys", &self.max_keys())
            .field("clock", &self.inner.clock)
            .finish()
    }
}

impl<C: Clock> fmt::Debug for Inner<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryLimiter")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<C: Clock> Settler for Inner<C> {
    async fn settle(&self, held: &Held, actual_tokens: u64) -> Result<()> {
        self.apply(held, |entry, now, scope| {
            if let Some(rate) = held.token_rates[scope] {
                let delta = gcra::settle_delta_us(rate, held.reserved, actual_tokens);
                entry.tat[1] = gcra::apply_delta(entry.tat[1], now, delta);
            }
        });
        Ok(())
    }

    fn release(&self, held: &Held) {
        self.apply(held, |_, _, _| {});
    }
}

impl<C: Clock> Inner<C> {
    /// Runs `correct(entry, now, scope)` on the org's (scope 0) and the key's (scope 1) entries
    /// and releases their permits, in one step.
    fn apply(&self, held: &Held, correct: impl Fn(&mut Entry, u64, usize)) {
        let now = micros(self.clock.now());
        let key_entry = held
            .key
            .as_ref()
            .filter(|_| held.token_rates[1].is_some() || held.permits[1]);
        let key_entry = key_entry.map(|k| join(&held.org, k));
        self.table
            .update(now, held.org.as_str(), key_entry.as_deref(), |org, key| {
                for (scope, entry) in [Some(org), key].into_iter().enumerate() {
                    let Some(entry) = entry else { continue };
                    correct(entry, now, scope);
                    if held.permits[scope] {
                        entry.in_flight = entry.in_flight.saturating_sub(1);
                    }
                }
            });
    }
}

impl Slot for Entry {
    fn is_idle(&self, now: u64) -> bool {
        self.in_flight == 0 && self.tat[0] <= now && self.tat[1] <= now
    }

    fn idle_at(&self) -> u64 {
        self.tat[0].max(self.tat[1])
    }

    fn is_pinned(&self) -> bool {
        self.in_flight > 0
    }
}

/// Reads one scope's entry into the slots the plan uses (scope 0: org, 1: key).
fn observe(entry: &Entry, now: u64, seen: &mut Observed, scope: usize) {
    seen.before[2 * scope] = entry.tat[0].saturating_sub(now);
    seen.before[2 * scope + 1] = entry.tat[1].saturating_sub(now);
    seen.in_flight[scope] = entry.in_flight;
}

/// Writes an admitted charge into one scope's entry.
fn charge(
    plan: &Plan<'_>,
    after: &[u64; gcra::BUCKETS],
    now: u64,
    entry: &mut Entry,
    scope: usize,
) {
    for slot in [2 * scope, 2 * scope + 1] {
        if let Some(b) = plan.buckets[slot] {
            let i = usize::from(b.kind == Kind::Tokens);
            entry.tat[i] = now.saturating_add(after[slot]);
        }
    }
    if plan.caps[scope].is_some() {
        entry.in_flight += 1;
    }
}

fn uses_key_entry(plan: &Plan<'_>) -> bool {
    plan.buckets[2].is_some() || plan.buckets[3].is_some() || plan.caps[1].is_some()
}

fn key_entry_name(plan: &Plan<'_>) -> String {
    join(
        plan.admission.org,
        plan.admission.key.map_or("", |(k, _)| k),
    )
}

/// A key's entry name: ids contain no NUL, so it cannot collide with an org's or another key's.
fn join(org: &str, key: &str) -> String {
    let mut s = String::with_capacity(org.len() + 1 + key.len());
    s.push_str(org);
    s.push('\0');
    s.push_str(key);
    s
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;
    use crate::decision::{Bucket, Exceeded, Scope};
    use crate::quota::{Quota, Rate};

    fn rate(per_minute: u64, burst: u64) -> Rate {
        Rate::try_new(per_minute, burst).unwrap()
    }

    fn limiter() -> (MemoryLimiter<ManualClock>, ManualClock) {
        let clock = ManualClock::new();
        (MemoryLimiter::with_clock(1_000, clock.clone()), clock)
    }

    fn admit(l: &MemoryLimiter<ManualClock>, a: Admission<'_>) -> Decision {
        l.admit_now(a).unwrap()
    }

    fn bucket(limit: u64, remaining: u64, reset_ms: u64) -> Option<Bucket> {
        Some(Bucket {
            limit,
            remaining,
            reset: Duration::from_millis(reset_ms),
        })
    }

    #[test]
    fn exact_headers_and_retry_after_on_a_frozen_clock() {
        let (l, clock) = limiter();
        let q = Quota::unlimited().with_requests(rate(60, 3)); // one a second, three at once
        let a = Admission::new("org", q);
        for (remaining, reset) in [(2, 1000), (1, 2000), (0, 3000)] {
            assert_eq!(
                admit(&l, a).snapshot().requests,
                bucket(3, remaining, reset)
            );
        }
        let Decision::Denied(d) = admit(&l, a) else {
            panic!("fourth request admitted")
        };
        assert_eq!(
            (d.retry_after, d.exceeded, d.scope),
            (Duration::from_secs(1), Exceeded::Requests, Scope::Org)
        );
        assert_eq!(d.snapshot.requests, bucket(3, 0, 3000));
        clock.advance(Duration::from_millis(999));
        assert!(!admit(&l, a).is_admitted(), "1 ms early");
        clock.advance(Duration::from_millis(1));
        assert_eq!(admit(&l, a).snapshot().requests, bucket(3, 0, 3000));
        clock.advance(Duration::from_secs(3));
        assert_eq!(
            admit(&l, a).snapshot().requests,
            bucket(3, 2, 1000),
            "full again after 3 s"
        );
    }

    #[test]
    fn settle_refunds_and_charges_tokens_exactly() {
        let (l, _clock) = limiter();
        let q = Quota::unlimited().with_tokens(rate(60, 1000)); // one token a second
        let Decision::Admitted(r) = admit(&l, Admission::new("org", q).with_tokens(400)) else {
            panic!()
        };
        assert_eq!(r.snapshot().tokens, bucket(1000, 600, 400_000));
        futures_block_on(l.settle(r, 100)).unwrap();
        assert_eq!(
            admit(&l, Admission::new("org", q)).snapshot().tokens,
            bucket(1000, 900, 100_000)
        );
        let Decision::Admitted(r) = admit(&l, Admission::new("org", q).with_tokens(100)) else {
            panic!()
        };
        futures_block_on(l.settle(r, 1_200)).unwrap();
        let Decision::Denied(d) = admit(&l, Admission::new("org", q)) else {
            panic!("in debt yet admitted")
        };
        assert_eq!(d.snapshot.tokens, bucket(1000, 0, 1_300_000));
        assert_eq!(
            (d.exceeded, d.retry_after),
            (Exceeded::Tokens, Duration::from_secs(300))
        );
    }

    #[test]
    fn a_refund_never_overfills_the_bucket() {
        let (l, clock) = limiter();
        let q = Quota::unlimited().with_tokens(rate(60, 100));
        let Decision::Admitted(r) = admit(&l, Admission::new("org", q).with_tokens(50)) else {
            panic!()
        };
        clock.advance(Duration::from_secs(40));
        futures_block_on(l.settle(r, 0)).unwrap();
        assert_eq!(
            admit(&l, Admission::new("org", q)).snapshot().tokens,
            bucket(100, 100, 0)
        );
    }

    #[test]
    fn a_denied_request_charges_no_bucket() {
        let (l, _clock) = limiter();
        let org = Quota::unlimited()
            .with_requests(rate(60, 10))
            .with_tokens(rate(60, 100));
        let key = Quota::unlimited().with_requests(rate(60, 1));
        let a = Admission::new("org", org)
            .with_key("key", key)
            .with_tokens(10);
        assert!(admit(&l, a).is_admitted());
        let Decision::Denied(d) = admit(&l, a) else {
            panic!()
        };
        assert_eq!(d.scope, Scope::Key);
        let s = *admit(&l, Admission::new("org", org)).snapshot();
        assert_eq!(
            s.requests.map(|b| b.remaining),
            Some(8),
            "one earlier admission plus this one"
        );
        assert_eq!(
            s.tokens.map(|b| b.remaining),
            Some(90),
            "the denied request's 10 tokens were not taken"
        );
    }

    #[test]
    fn permits_are_released_by_settle_and_by_drop() {
        let (l, _clock) = limiter();
        let q = Quota::unlimited().with_concurrency(NonZeroU32::MIN.saturating_add(1));
        let a = Admission::new("org", q);
        let (Decision::Admitted(r1), Decision::Admitted(r2)) = (admit(&l, a), admit(&l, a)) else {
            panic!()
        };
        let Decision::Denied(d) = admit(&l, a) else {
            panic!("third permit granted")
        };
        assert_eq!(d.exceeded, Exceeded::Concurrency);
        drop(r1);
        let Decision::Admitted(r3) = admit(&l, a) else {
            panic!("drop did not release")
        };
        futures_block_on(l.settle(r2, 0)).unwrap();
        assert!(admit(&l, a).is_admitted(), "settle did not release");
        drop(r3);
    }

    #[test]
    fn a_flood_of_random_orgs_stays_bounded_and_keeps_an_exhausted_org_limited() {
        let (l, clock) = limiter();
        let q = Quota::unlimited().with_requests(rate(60, 5));
        for _ in 0..5 {
            assert!(admit(&l, Admission::new("victim", q)).is_admitted());
        }
        for i in 0..50_000u32 {
            let org = format!("flood-{i:08x}");
            let _ = admit(&l, Admission::new(&org, q));
            if i % 1000 == 0 {
                clock.advance(Duration::from_micros(10));
            }
        }
        assert!(
            l.tracked_keys() <= l.max_keys(),
            "{} > {}",
            l.tracked_keys(),
            l.max_keys()
        );
        assert!(
            !admit(&l, Admission::new("victim", q)).is_admitted(),
            "the flood reset the victim's bucket"
        );
    }

    #[test]
    fn idle_orgs_are_evicted_below_the_cap() {
        let clock = ManualClock::new();
        let l = MemoryLimiter::with_clock(100_000, clock.clone());
        let q = Quota::default();
        for i in 0..20_000u32 {
            let _ = admit(&l, Admission::new(&format!("first-{i}"), q));
        }
        assert_eq!(l.tracked_keys(), 20_000);
        clock.advance(Duration::from_secs(1)); // 100/min: one request refills in 600 ms
        for i in 0..20_000u32 {
            let _ = admit(&l, Admission::new(&format!("second-{i}"), q));
        }
        assert!(
            l.tracked_keys() < 25_000,
            "idle entries were kept: {}",
            l.tracked_keys()
        );
    }

    #[test]
    fn unlimited_quotas_touch_no_state() {
        let (l, _clock) = limiter();
        let d = admit(
            &l,
            Admission::new("org", Quota::unlimited()).with_tokens(1 << 40),
        );
        assert!(d.is_admitted());
        assert_eq!(*d.snapshot(), crate::Snapshot::default());
        assert_eq!(l.tracked_keys(), 0);
    }

    /// The memory limiter's futures never wait, so one poll finishes them.
    fn futures_block_on<F: std::future::Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the in-process limiter waited"),
        }
    }
}
