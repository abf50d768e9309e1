//! Per-organization rate limits for requests, tokens and concurrency, enforced with GCRA (the
//! generic cell rate algorithm) so that a limit holds across every replica of the proxy.
//!
//! One trait, [`Limiter`], and its implementations, which share the same arithmetic:
//! - [`MemoryLimiter`]: in-process, for a single instance (and the fallback below). Its memory is
//!   bounded: idle organizations are forgotten, and a flood of ids cannot grow it past its cap.
//! - [`RedisLimiter`]: one atomic Lua script per check, timed by the Redis server, so N replicas
//!   share one limit instead of each allowing it.
//! - [`FailoverLimiter`]: Redis with a documented policy for when it is away: fail open to the
//!   in-process limiter (the default), counted in metrics and flagged by
//!   [`Limiter::is_degraded`] for `/health`, or fail closed.
//!
//! [`AuthFailureLimiter`] limits failed authentications per client address.
//!
//! Quotas are plain values passed on every call, so per-organization overrides need no rebuild.
//! A request reserves tokens at admission (its estimated prompt plus `max_tokens`); when the
//! response ends, [`Limiter::settle`] corrects the bucket to the real usage.
//!
//! ```
//! use cognitude_ratelimit::{Admission, Decision, Limiter, MemoryLimiter, Quota, Rate};
//!
//! # async fn run() -> cognitude_ratelimit::Result<()> {
//! let limiter = MemoryLimiter::new();
//! // 100 requests (the default) and 10 000 tokens a minute, each bucket a minute deep.
//! let quota = Quota::default().with_tokens(Rate::try_new(10_000, 10_000)?);
//!
//! match limiter.admit(Admission::new("org_1", quota).with_tokens(1_200)).await? {
//!     Decision::Admitted(reservation) => {
//!         let requests = reservation.snapshot().requests;
//!         assert_eq!(requests.map(|b| (b.limit, b.remaining)), Some((100, 99)));
//!         // … call the model; it used 300 tokens: 900 go back to the bucket.
//!         limiter.settle(reservation, 300).await?;
//!     }
//!     Decision::Denied(denial) => {
//!         // 429 with `Retry-After: denial.retry_after`
//!         let _ = denial.retry_after;
//!     }
//! }
//! # Ok(())
//! # }
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(run()).unwrap();
//! ```

mod auth;
mod clock;
mod decision;
mod error;
mod failover;
mod gcra;
mod memory;
mod quota;
mod redis;
mod table;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

pub use auth::AuthFailureLimiter;
pub use clock::{Clock, ManualClock, SystemClock};
pub use decision::{Bucket, Decision, Denial, Exceeded, Reservation, Scope, Snapshot};
pub use error::{Error, Result};
pub use failover::{FailPolicy, FailoverConfig, FailoverLimiter};
pub use memory::MemoryLimiter;
pub use quota::{Admission, Quota, Rate};
pub use redis::{RedisConfig, RedisLimiter};

/// Admits requests against quotas and settles what they really used.
///
/// Every implementation follows the same GCRA semantics: a bucket holds `burst` units and refills
/// continuously at `per_minute`; a request is admitted only if every bucket that applies to it
/// (the organization's and, when given, its key's; requests and tokens) and every concurrency cap
/// has room, and then it is charged to all of them at once. A denied request charges nothing.
#[async_trait]
pub trait Limiter: Send + Sync + fmt::Debug {
    /// Checks and, when admitted, charges one request and its `tokens`, and takes a concurrency
    /// permit. Errors are a bad id ([`Error::InvalidId`]) or an unavailable backend.
    async fn admit(&self, admission: Admission<'_>) -> Result<Decision>;

    /// Settles a reservation when the response has ended: refunds the reserved tokens not used
    /// (never past a full bucket) or charges the extra ones (even into debt, which later requests
    /// wait out), and releases the concurrency permit.
    async fn settle(&self, reservation: Reservation, actual_tokens: u64) -> Result<()> {
        reservation.settle_with_issuer(actual_tokens).await
    }

    /// Whether the limiter is running on a fallback (reported by `/health`).
    fn is_degraded(&self) -> bool {
        false
    }
}

#[async_trait]
impl<L: Limiter + ?Sized> Limiter for Arc<L> {
    async fn admit(&self, admission: Admission<'_>) -> Result<Decision> {
        (**self).admit(admission).await
    }

    async fn settle(&self, reservation: Reservation, actual_tokens: u64) -> Result<()> {
        (**self).settle(reservation, actual_tokens).await
    }

    fn is_degraded(&self) -> bool {
        (**self).is_degraded()
    }
}
