//! The policy for when the shared backend is away: fail open to a per-replica limiter (the
//! default) or fail closed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::Limiter;
use crate::clock::micros;
use crate::decision::{Decision, Reservation};
use crate::error::{Error, Result};
use crate::memory::MemoryLimiter;
use crate::quota::Admission;

/// Metric: checks answered by the fallback limiter while the primary was unavailable (counter).
const FALLBACK_CHECKS: &str = "cognitude_ratelimit_fallback_checks_total";
/// Metric: checks and settlements the primary failed (counter).
const BACKEND_ERRORS: &str = "cognitude_ratelimit_backend_errors_total";
/// Metric: 1 while degraded, 0 otherwise (gauge).
const DEGRADED: &str = "cognitude_ratelimit_degraded";

/// What to do with a request when the shared backend cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailPolicy {
    /// Limit per replica with the fallback limiter: N replicas then admit up to N times the limit,
    /// but no request fails because Redis is away.
    #[default]
    Open,
    /// Refuse: [`Limiter::admit`] returns [`Error::Unavailable`] (a 503 for the client).
    Closed,
}

/// Settings of a [`FailoverLimiter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailoverConfig {
    /// Open (the default) or closed.
    pub policy: FailPolicy,
    /// While degraded, how often one request tries the primary again; the others go straight to
    /// the policy, so a hung Redis costs one timeout per interval rather than one per request.
    pub retry_interval: Duration,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        FailoverConfig {
            policy: FailPolicy::Open,
            retry_interval: Duration::from_millis(500),
        }
    }
}

/// A primary limiter (Redis) with a fallback (in-process) for when the primary is unavailable.
///
/// The first [`Error::Unavailable`] from the primary sets the degraded flag
/// ([`Limiter::is_degraded`], for `/health`) and applies the [`FailPolicy`]. While degraded, one
/// check per `retry_interval` tries the primary again; the first success clears the flag, and
/// shared limiting resumes by itself. Other errors (a bad id) pass through unchanged.
///
/// Settlements go to the limiter that issued the reservation; one the primary cannot apply is
/// dropped under [`FailPolicy::Open`] (its reserved tokens expire with the bucket) and returned
/// as an error under [`FailPolicy::Closed`].
///
/// Metrics: `cognitude_ratelimit_fallback_checks_total` (checks answered by the fallback),
/// `cognitude_ratelimit_backend_errors_total` (primary failures), `cognitude_ratelimit_degraded`
/// (gauge, 1 while degraded).
#[derive(Debug)]
pub struct FailoverLimiter<P, F = MemoryLimiter> {
    primary: P,
    fallback: F,
    config: FailoverConfig,
    origin: Instant,
    degraded: AtomicBool,
    /// When (µs since `origin`) the primary may be tried again while degraded.
    next_attempt: AtomicU64,
}

impl<P: Limiter, F: Limiter> FailoverLimiter<P, F> {
    /// Wraps `primary`, falling back to `fallback` as `config` says.
    pub fn new(primary: P, fallback: F, config: FailoverConfig) -> Self {
        FailoverLimiter {
            primary,
            fallback,
            config,
            origin: Instant::now(),
            degraded: AtomicBool::new(false),
            next_attempt: AtomicU64::new(0),
        }
    }

    /// The primary limiter.
    pub fn primary(&self) -> &P {
        &self.primary
    }

    /// The fallback limiter.
    pub fn fallback(&self) -> &F {
        &self.fallback
    }

    /// Whether this check may try the primary: always when healthy; while degraded, only the one
    /// check that claims the next attempt slot.
    fn may_try_primary(&self) -> bool {
        if !self.degraded.load(Ordering::Acquire) {
            return true;
        }
        let now = self.now_us();
        let next = self.next_attempt.load(Ordering::Acquire);
        now >= next
            && self
                .next_attempt
                .compare_exchange(
                    next,
                    now + micros(self.config.retry_interval),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    fn trip(&self, error: &Error) {
        metrics::counter!(BACKEND_ERRORS).increment(1);
        self.next_attempt.store(
            self.now_us() + micros(self.config.retry_interval),
            Ordering::Release,
        );
        if !self.degraded.swap(true, Ordering::AcqRel) {
            metrics::gauge!(DEGRADED).set(1.0);
            tracing::warn!(%error, policy = ?self.config.policy, "rate-limit backend unavailable; degraded");
        }
    }

    fn recover(&self) {
        if self.degraded.swap(false, Ordering::AcqRel) {
            metrics::gauge!(DEGRADED).set(0.0);
            tracing::info!("rate-limit backend back; shared limiting resumed");
        }
    }

    async fn without_primary(&self, admission: Admission<'_>, error: Error) -> Result<Decision> {
        match self.config.policy {
            FailPolicy::Open => {
                metrics::counter!(FALLBACK_CHECKS).increment(1);
                self.fallback.admit(admission).await
            }
            FailPolicy::Closed => Err(error),
        }
    }

    fn now_us(&self) -> u64 {
        micros(self.origin.elapsed())
    }
}

#[async_trait]
impl<P: Limiter, F: Limiter> Limiter for FailoverLimiter<P, F> {
    async fn admit(&self, admission: Admission<'_>) -> Result<Decision> {
        if !self.may_try_primary() {
            let error =
                Error::Unavailable("rate-limit backend degraded; waiting to retry".to_owned());
            return self.without_primary(admission, error).await;
        }
        match self.primary.admit(admission).await {
            Ok(decision) => {
                self.recover();
                Ok(decision)
            }
            Err(error) if error.is_unavailable() => {
                self.trip(&error);
                self.without_primary(admission, error).await
            }
            Err(error) => Err(error),
        }
    }

    async fn settle(&self, reservation: Reservation, actual_tokens: u64) -> Result<()> {
        match reservation.settle_with_issuer(actual_tokens).await {
            Err(error) if error.is_unavailable() => {
                self.trip(&error);
                match self.config.policy {
                    FailPolicy::Open => Ok(()),
                    FailPolicy::Closed => Err(error),
                }
            }
            other => other,
        }
    }

    fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::quota::{Quota, Rate};

    /// A primary that is an in-process limiter which can be switched off.
    #[derive(Debug, Default)]
    struct Switchable {
        down: AtomicBool,
        inner: MemoryLimiter,
    }

    #[async_trait]
    impl Limiter for Switchable {
        async fn admit(&self, admission: Admission<'_>) -> Result<Decision> {
            if self.down.load(Ordering::SeqCst) {
                return Err(Error::Unavailable("switched off".to_owned()));
            }
            self.inner.admit(admission).await
        }
    }

    fn failover(policy: FailPolicy, retry_interval: Duration) -> FailoverLimiter<Switchable> {
        FailoverLimiter::new(
            Switchable::default(),
            MemoryLimiter::new(),
            FailoverConfig {
                policy,
                retry_interval,
            },
        )
    }

    fn quota() -> Quota {
        Quota::unlimited().with_requests(Rate::try_new(1, 2).unwrap())
    }

    #[tokio::test]
    async fn fail_open_uses_the_fallback_and_recovers_when_the_primary_answers() {
        let l = failover(FailPolicy::Open, Duration::ZERO);
        assert!(
            l.admit(Admission::new("org", quota()))
                .await
                .unwrap()
                .is_admitted()
        );
        assert!(!l.is_degraded());
        l.primary().down.store(true, Ordering::SeqCst);
        for _ in 0..2 {
            assert!(
                l.admit(Admission::new("org", quota()))
                    .await
                    .unwrap()
                    .is_admitted()
            );
        }
        assert!(l.is_degraded());
        assert!(
            !l.admit(Admission::new("org", quota()))
                .await
                .unwrap()
                .is_admitted(),
            "the fallback limits too"
        );
        l.primary().down.store(false, Ordering::SeqCst);
        let d = l.admit(Admission::new("org", quota())).await.unwrap();
        assert!(!l.is_degraded());
        assert_eq!(
            d.snapshot().requests.map(|b| b.remaining),
            Some(0),
            "the primary's state counts again"
        );
    }

    #[tokio::test]
    async fn while_degraded_the_primary_is_retried_only_after_the_interval() {
        let l = failover(FailPolicy::Open, Duration::from_secs(3600));
        l.primary().down.store(true, Ordering::SeqCst);
        assert!(
            l.admit(Admission::new("org", quota()))
                .await
                .unwrap()
                .is_admitted()
        );
        l.primary().down.store(false, Ordering::SeqCst);
        assert!(
            l.admit(Admission::new("org", quota()))
                .await
                .unwrap()
                .is_admitted()
        );
        assert!(
            l.is_degraded(),
            "the primary was tried before the retry interval"
        );
        assert_eq!(l.primary().inner.tracked_keys(), 0);
    }

    #[tokio::test]
    async fn fail_closed_refuses_and_other_errors_pass_through() {
        let l = failover(FailPolicy::Closed, Duration::ZERO);
        assert!(matches!(
            l.admit(Admission::new("bad{id", quota())).await,
            Err(Error::InvalidId { .. })
        ));
        assert!(!l.is_degraded(), "a caller error is not an outage");
        l.primary().down.store(true, Ordering::SeqCst);
        assert!(matches!(
            l.admit(Admission::new("org", quota())).await,
            Err(Error::Unavailable(_))
        ));
        assert!(l.is_degraded());
        assert_eq!(
            l.fallback().tracked_keys(),
            0,
            "fail-closed never consults the fallback"
        );
    }

    #[tokio::test]
    async fn a_reservation_settles_with_the_limiter_that_issued_it() {
        let l = failover(FailPolicy::Open, Duration::ZERO);
        let q = Quota::unlimited().with_tokens(Rate::try_new(1, 100).unwrap());
        l.primary().down.store(true, Ordering::SeqCst);
        let Decision::Admitted(r) = l
            .admit(Admission::new("org", q).with_tokens(80))
            .await
            .unwrap()
        else {
            panic!("denied")
        };
        l.primary().down.store(false, Ordering::SeqCst);
        l.settle(r, 10).await.unwrap();
        let seen = l.fallback().admit_now(Admission::new("org", q)).unwrap();
        assert_eq!(
            seen.snapshot().tokens.map(|b| b.remaining),
            Some(90),
            "refund reached the fallback"
        );
    }
}
