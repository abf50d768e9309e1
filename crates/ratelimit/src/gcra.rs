//! The GCRA arithmetic both backends share, so they cannot drift apart: the in-process limiter and
//! the Redis script only store and compare the numbers computed here.
//!
//! Time is in whole microseconds. A bucket's state is its theoretical arrival time (TAT); the
//! "before" value of a check is `max(TAT - now, 0)`, how far the bucket is from full. A charge of
//! `n` units adds `inc = n * 1 min / per_minute`; it fits when `before + inc <= tau`, where
//! `tau = burst * 1 min / per_minute` is the capacity expressed as time.

use std::time::Duration;

use crate::decision::{Bucket, Denial, Exceeded, Held, Scope, Snapshot};
use crate::error::Result;
use crate::quota::{Admission, Rate, validate_id};

const MINUTE_US: u64 = 60_000_000;
/// Every time value stays below 2^52 µs (~142 years) so the Redis script, whose numbers are
/// doubles, computes exactly what this module does.
pub(crate) const MAX_US: u64 = 1 << 52;
/// `retry_after` for a concurrency denial: a permit frees when some other request ends, which
/// cannot be predicted.
pub(crate) const CONCURRENCY_RETRY: Duration = Duration::from_secs(1);

/// Bucket slots, in the order both backends use: org requests, org tokens, key requests, key tokens.
pub(crate) const BUCKETS: usize = 4;
/// Concurrency slots: org, key.
pub(crate) const PERMITS: usize = 2;

/// What a bucket counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Requests,
    Tokens,
}

/// One bucket a check touches, with its charge and capacity precomputed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BucketSpec {
    pub(crate) kind: Kind,
    pub(crate) scope: Scope,
    pub(crate) rate: Rate,
    pub(crate) units: u64,
    pub(crate) inc: u64,
    pub(crate) tau: u64,
}

/// A validated admission turned into buckets and concurrency caps, by fixed slot.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan<'a> {
    pub(crate) admission: Admission<'a>,
    pub(crate) buckets: [Option<BucketSpec>; BUCKETS],
    pub(crate) caps: [Option<u64>; PERMITS],
}

/// What the backend found, by slot: each bucket's distance from full, each scope's permits in use.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Observed {
    pub(crate) before: [u64; BUCKETS],
    pub(crate) in_flight: [u64; PERMITS],
}

/// The outcome of a check before it is wrapped in a [`Decision`](crate::Decision).
#[derive(Debug, Clone)]
pub(crate) struct Verdict {
    pub(crate) snapshot: Snapshot,
    pub(crate) denial: Option<Denial>,
    /// Each bucket's distance from full after the charge (meaningful when admitted).
    pub(crate) after: [u64; BUCKETS],
}

impl<'a> Plan<'a> {
    #[inline]
    pub(crate) fn new(admission: Admission<'a>) -> Result<Plan<'a>> {
        validate_id(admission.org)?;
        let mut buckets = [None; BUCKETS];
        let mut caps = [None; PERMITS];
        let tokens = admission.tokens;
        let org = admission.org_quota;
        buckets[0] = org
            .requests
            .map(|r| BucketSpec::new(Kind::Requests, Scope::Org, r, 1));
        buckets[1] = org
            .tokens
            .map(|r| BucketSpec::new(Kind::Tokens, Scope::Org, r, tokens));
        caps[0] = org.concurrency.map(|c| u64::from(c.get()));
        if let Some((key, quota)) = admission.key {
            validate_id(key)?;
            buckets[2] = quota
                .requests
                .map(|r| BucketSpec::new(Kind::Requests, Scope::Key, r, 1));
            buckets[3] = quota
                .tokens
                .map(|r| BucketSpec::new(Kind::Tokens, Scope::Key, r, tokens));
            caps[1] = quota.concurrency.map(|c| u64::from(c.get()));
        }
        Ok(Plan {
            admission,
            buckets,
            caps,
        })
    }

    /// What settling needs, or `None` when there is nothing to settle or release.
    pub(crate) fn held(&self, permit_id: u64) -> Option<Held> {
        let token_rates = [
            self.buckets[1].map(|b| b.rate),
            self.buckets[3].map(|b| b.rate),
        ];
        let permits = [self.caps[0].is_some(), self.caps[1].is_some()];
        if token_rates.iter().all(Option::is_none) && !permits.iter().any(|p| *p) {
            return None;
        }
        Some(Held {
            org: self.admission.org.to_owned(),
            key: self.admission.key.map(|(k, _)| k.to_owned()),
            reserved: self.admission.tokens,
            token_rates,
            permits,
            permit_id,
        })
    }
}

impl BucketSpec {
    #[inline]
    fn new(kind: Kind, scope: Scope, rate: Rate, units: u64) -> BucketSpec {
        BucketSpec {
            kind,
            scope,
            rate,
            units,
            inc: cost_us(rate, units),
            tau: cost_us(rate, rate.burst.get()),
        }
    }

    #[inline]
    fn status(&self, distance_from_full: u64) -> Bucket {
        let burst = self.rate.burst.get();
        Bucket {
            limit: burst,
            remaining: units_in(self.rate, self.tau.saturating_sub(distance_from_full)).min(burst),
            reset: Duration::from_micros(distance_from_full),
        }
    }
}

/// Decides a check from what the backend observed; pure, so both backends agree by construction.
#[inline]
pub(crate) fn decide(plan: &Plan<'_>, seen: &Observed) -> Verdict {
    let mut after = [0; BUCKETS];
    let mut worst: Option<(Duration, Exceeded, Scope)> = None;
    // A request over capacity can never fit, so that reason wins over any wait.
    let rank =
        |wait: Duration, exceeded: Exceeded| (exceeded == Exceeded::TokensOverCapacity, wait);
    let mut note = |wait: Duration, exceeded: Exceeded, scope: Scope| {
        if worst.is_none_or(|(w, e, _)| rank(wait, exceeded) > rank(w, e)) {
            worst = Some((wait, exceeded, scope));
        }
    };
    for (i, spec) in plan.buckets.iter().enumerate() {
        let Some(b) = spec else { continue };
        after[i] = seen.before[i].saturating_add(b.inc);
        if after[i] > b.tau {
            let exceeded = match b.kind {
                Kind::Requests => Exceeded::Requests,
                Kind::Tokens if b.units > b.rate.burst.get() => Exceeded::TokensOverCapacity,
                Kind::Tokens => Exceeded::Tokens,
            };
            note(Duration::from_micros(after[i] - b.tau), exceeded, b.scope);
        }
    }
    for (i, cap) in plan.caps.iter().enumerate() {
        if let Some(cap) = cap
            && seen.in_flight[i] >= *cap
        {
            note(
                CONCURRENCY_RETRY,
                Exceeded::Concurrency,
                if i == 0 { Scope::Org } else { Scope::Key },
            );
        }
    }
    let state = if worst.is_none() {
        &after
    } else {
        &seen.before
    };
    let snapshot = Snapshot {
        requests: binding(plan, state, Kind::Requests),
        tokens: binding(plan, state, Kind::Tokens),
    };
    let denial = worst.map(|(retry_after, exceeded, scope)| Denial {
        snapshot,
        retry_after,
        exceeded,
        scope,
    });
    Verdict {
        snapshot,
        denial,
        after,
    }
}

/// The bucket of `kind` with the fewest units remaining (the longer reset on a tie).
#[inline]
fn binding(plan: &Plan<'_>, state: &[u64; BUCKETS], kind: Kind) -> Option<Bucket> {
    plan.buckets
        .iter()
        .zip(state)
        .filter_map(|(spec, d)| spec.filter(|b| b.kind == kind).map(|b| b.status(*d)))
        .min_by(|a, b| a.remaining.cmp(&b.remaining).then(b.reset.cmp(&a.reset)))
}

/// The time `units` take to refill at `rate`, rounded down to the microsecond (so `burst` charges
/// of one unit always fit in a bucket of `burst`).
#[inline]
pub(crate) fn cost_us(rate: Rate, units: u64) -> u64 {
    let per_minute = rate.per_minute.get();
    // 64-bit division when the product fits (the usual case): 128-bit division is several
    // times slower, and a check does a few of these.
    let us = match units.checked_mul(MINUTE_US) {
        Some(product) => u128::from(product / per_minute),
        None => u128::from(units) * u128::from(MINUTE_US) / u128::from(per_minute),
    };
    u64::try_from(us).unwrap_or(MAX_US).min(MAX_US)
}

/// Whole units that refill in `us`.
#[inline]
fn units_in(rate: Rate, us: u64) -> u64 {
    let per_minute = rate.per_minute.get();
    match us.checked_mul(per_minute) {
        Some(product) => product / MINUTE_US,
        None => u64::try_from(u128::from(us) * u128::from(per_minute) / u128::from(MINUTE_US))
            .unwrap_or(u64::MAX),
    }
}

/// The signed time correction when a reservation of `reserved` tokens turns out to be `actual`:
/// negative refunds, positive charges.
pub(crate) fn settle_delta_us(rate: Rate, reserved: u64, actual: u64) -> i64 {
    let magnitude = i64::try_from(cost_us(rate, reserved.abs_diff(actual))).unwrap_or(i64::MAX);
    if actual >= reserved {
        magnitude
    } else {
        -magnitude
    }
}

/// A stored TAT corrected by `delta` at `now`: a refund never takes the bucket past full (a TAT at
/// or before `now`), and a charge applies even past capacity, putting the bucket in debt.
pub(crate) fn apply_delta(tat: u64, now: u64, delta: i64) -> u64 {
    let base = tat.max(now);
    if delta >= 0 {
        base.saturating_add(delta.unsigned_abs())
            .min(now.saturating_add(MAX_US))
    } else {
        base.saturating_sub(delta.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use std::num::{NonZeroU32, NonZeroU64};

    use super::*;
    use crate::quota::Quota;

    fn rate(per_minute: u64, burst: u64) -> Rate {
        Rate::try_new(per_minute, burst).unwrap()
    }

    #[test]
    fn burst_single_charges_fit_despite_rounding() {
        // 60 s / 7 is not a whole number of microseconds: rounding the charge up would refuse the 7th.
        for (pm, burst) in [(7, 7), (3, 3), (100, 100), (600_000, 1000), (1, 1)] {
            let r = rate(pm, burst);
            assert!(cost_us(r, 1) * burst <= cost_us(r, burst), "{pm}/{burst}");
            assert!(
                cost_us(r, 1) * (burst + 1) > cost_us(r, burst),
                "{pm}/{burst}"
            );
        }
    }

    #[test]
    fn costs_saturate_instead_of_overflowing() {
        let r = rate(1, u64::MAX);
        assert_eq!(cost_us(r, u64::MAX), MAX_US);
        assert_eq!(settle_delta_us(r, 0, u64::MAX), MAX_US as i64);
        assert_eq!(apply_delta(u64::MAX, 0, i64::MAX), MAX_US);
    }

    #[test]
    fn settle_delta_refunds_and_charges() {
        let r = rate(600, 1000); // 100 ms per token
        assert_eq!(settle_delta_us(r, 500, 100), -40_000_000);
        assert_eq!(settle_delta_us(r, 100, 500), 40_000_000);
        assert_eq!(settle_delta_us(r, 7, 7), 0);
    }

    #[test]
    fn apply_delta_never_refunds_past_full() {
        assert_eq!(apply_delta(1_000, 400, -300), 700);
        assert_eq!(
            apply_delta(1_000, 400, -900),
            100,
            "below now is simply a full bucket"
        );
        assert_eq!(
            apply_delta(100, 400, -50),
            350,
            "an already full bucket stays full"
        );
        assert_eq!(apply_delta(100, 400, 50), 450, "a charge starts from now");
    }

    fn verdict(quota: Quota, tokens: u64, before: [u64; 4], in_flight: [u64; 2]) -> Verdict {
        let plan = Plan::new(Admission::new("org", quota).with_tokens(tokens)).unwrap();
        decide(&plan, &Observed { before, in_flight })
    }

    #[test]
    fn decide_table() {
        let q = Quota::unlimited().with_requests(rate(60, 3)); // 1 s per request, tau 3 s
        let s = 1_000_000;
        // (before, admitted, remaining, reset, retry_after)
        let cases = [
            (0, true, 2, s, None),
            (2 * s, true, 0, 3 * s, None),
            (2 * s + 1, false, 0, 2 * s + 1, Some(1)),
            (3 * s, false, 0, 3 * s, Some(s)),
        ];
        for (before, admitted, remaining, reset, retry) in cases {
            let v = verdict(q, 0, [before, 0, 0, 0], [0; 2]);
            let b = v.snapshot.requests.unwrap();
            assert_eq!(v.denial.is_none(), admitted, "before {before}");
            assert_eq!(
                (b.limit, b.remaining, b.reset),
                (3, remaining, Duration::from_micros(reset)),
                "{before}"
            );
            assert_eq!(
                v.denial.map(|d| d.retry_after),
                retry.map(Duration::from_micros),
                "{before}"
            );
        }
    }

    #[test]
    fn decide_blames_the_longest_wait_and_reports_over_capacity() {
        let q = Quota::unlimited()
            .with_requests(rate(60, 1))
            .with_tokens(rate(60, 10));
        let v = verdict(q, 11, [1_000_000, 0, 0, 0], [0; 2]);
        let d = v.denial.unwrap();
        assert_eq!(
            (d.exceeded, d.scope),
            (Exceeded::TokensOverCapacity, Scope::Org)
        );
        assert_eq!(
            d.retry_after,
            Duration::from_secs(1),
            "11 tokens at 1/s into a bucket of 10"
        );
        assert_eq!(
            v.snapshot.tokens.unwrap().remaining,
            10,
            "a denial charges nothing"
        );
    }

    #[test]
    fn decide_concurrency_and_binding_bucket() {
        let one = NonZeroU32::MIN;
        let org = Quota::unlimited()
            .with_requests(rate(60, 10))
            .with_concurrency(one);
        let key = Quota::unlimited().with_requests(rate(60, 2));
        let plan = Plan::new(Admission::new("o", org).with_key("k", key)).unwrap();
        let v = decide(
            &plan,
            &Observed {
                before: [0; 4],
                in_flight: [0, 0],
            },
        );
        let b = v.snapshot.requests.unwrap();
        assert!(v.denial.is_none());
        assert_eq!((b.limit, b.remaining), (2, 1), "the key's bucket binds");
        let v = decide(
            &plan,
            &Observed {
                before: [0; 4],
                in_flight: [1, 0],
            },
        );
        let d = v.denial.unwrap();
        assert_eq!(
            (d.exceeded, d.scope, d.retry_after),
            (Exceeded::Concurrency, Scope::Org, CONCURRENCY_RETRY)
        );
    }

    #[test]
    fn held_only_when_something_needs_settling() {
        let plain = Plan::new(Admission::new("o", Quota::default())).unwrap();
        assert!(plain.held(1).is_none());
        let t = Quota::default().with_tokens(Rate::per_minute(NonZeroU64::MIN));
        let held = Plan::new(Admission::new("o", t).with_tokens(5))
            .unwrap()
            .held(1)
            .unwrap();
        assert_eq!((held.reserved, held.permits), (5, [false, false]));
    }
}
