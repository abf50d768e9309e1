//! What a check answers: admitted (with a reservation to settle) or denied (with when to retry),
//! and in both cases the numbers OpenAI's `x-ratelimit-*` headers carry.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::quota::Rate;

/// The answer to [`Limiter::admit`](crate::Limiter::admit).
#[derive(Debug)]
#[must_use = "a denied request must be refused, an admitted one settled"]
pub enum Decision {
    /// The request fits: its request and tokens are charged, a concurrency permit (if any) is held.
    Admitted(Reservation),
    /// The request does not fit; nothing was charged.
    Denied(Denial),
}

impl Decision {
    /// The bucket state to report in response headers.
    pub fn snapshot(&self) -> &Snapshot {
        match self {
            Decision::Admitted(r) => &r.snapshot,
            Decision::Denied(d) => &d.snapshot,
        }
    }

    /// Whether the request was admitted.
    pub fn is_admitted(&self) -> bool {
        matches!(self, Decision::Admitted(_))
    }
}

/// The state of the request and token buckets, for OpenAI's headers
/// (`x-ratelimit-{limit,remaining,reset}-{requests,tokens}`).
///
/// When both an organization and a key quota apply, each axis reports the bucket with the fewest
/// units remaining, the one that binds. `None` means the axis is not limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// The request bucket.
    pub requests: Option<Bucket>,
    /// The token bucket.
    pub tokens: Option<Bucket>,
}

/// One bucket as the headers describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// The capacity (the quota's burst).
    pub limit: u64,
    /// Units left after this decision (after the charge when admitted).
    pub remaining: u64,
    /// Time until the bucket is full again.
    pub reset: Duration,
}

/// Why and for how long a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The bucket state, unchanged by the refused request.
    pub snapshot: Snapshot,
    /// When the same request would fit, assuming no other traffic (`Retry-After`).
    pub retry_after: Duration,
    /// Which limit refused it: [`Exceeded::TokensOverCapacity`] first, then the one with the
    /// longest wait.
    pub exceeded: Exceeded,
    /// Whose quota that limit belongs to.
    pub scope: Scope,
}

/// The limit that refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exceeded {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
    /// The request asks for more tokens than the bucket holds: it can never fit; retrying is
    /// pointless (OpenAI answers "Request too large").
    TokensOverCapacity,
    /// Requests in flight. `retry_after` is a hint: a permit frees when another request ends.
    Concurrency,
}

/// Whose quota a limit belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The organization's.
    Org,
    /// The API key's, inside the organization's.
    Key,
}

/// An admitted request's charge: the tokens reserved and the concurrency permit.
///
/// Pass it to [`Limiter::settle`](crate::Limiter::settle) with the real token count when the
/// response ends (streams included): unused tokens are refunded, extra ones charged, and the permit
/// released. Dropped without settling, the permit is released and the reserved tokens stay
/// charged (the conservative choice for a request that died half way).
pub struct Reservation {
    pub(crate) snapshot: Snapshot,
    pub(crate) tokens: u64,
    /// Boxed: a check without tokens or permits carries nothing, and the decision stays small.
    pub(crate) held: Option<Box<(Arc<dyn Settler>, Held)>>,
}

impl Reservation {
    pub(crate) fn new(
        snapshot: Snapshot,
        tokens: u64,
        held: Option<(Arc<dyn Settler>, Held)>,
    ) -> Self {
        Reservation {
            snapshot,
            tokens,
            held: held.map(Box::new),
        }
    }

    /// The bucket state right after this admission, for response headers.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The tokens reserved at admission.
    pub fn reserved_tokens(&self) -> u64 {
        self.tokens
    }

    /// Applies the settlement through the limiter that issued the reservation.
    pub(crate) async fn settle_with_issuer(mut self, actual_tokens: u64) -> Result<()> {
        match self.held.take() {
            Some(ticket) => {
                let (issuer, held) = *ticket;
                issuer.settle(&held, actual_tokens).await
            }
            None => Ok(()),
        }
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("snapshot", &self.snapshot)
            .field("tokens", &self.tokens)
            .field("held", &self.held.as_ref().map(|t| &t.1))
            .finish()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(ticket) = self.held.take()
            && ticket.1.has_permit()
        {
            ticket.0.release(&ticket.1);
        }
    }
}

/// What a settlement needs to find the buckets again. Built only when there is something to
/// settle (a token bucket or a permit), so a requests-only check allocates nothing.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub(crate) org: String,
    pub(crate) key: Option<String>,
    pub(crate) reserved: u64,
    /// The token rates at admission, indexed by [`Slot`](crate::gcra::Slot) scope: org, key.
    pub(crate) token_rates: [Option<Rate>; 2],
    /// Which scopes hold a concurrency permit: org, key.
    pub(crate) permits: [bool; 2],
    /// Identifies the permit in a shared store.
    pub(crate) permit_id: u64,
}

impl Held {
    pub(crate) fn has_permit(&self) -> bool {
        self.permits.iter().any(|p| *p)
    }
}

/// The limiter that issued a reservation, reached again at settle or drop time.
#[async_trait]
pub(crate) trait Settler: Send + Sync + fmt::Debug {
    /// Corrects the token buckets to `actual_tokens` and releases the permit.
    async fn settle(&self, held: &Held, actual_tokens: u64) -> Result<()>;
    /// Releases the permit only; called from `Drop`, so it must not block.
    fn release(&self, held: &Held);
}
