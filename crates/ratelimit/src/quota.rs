//! Quotas and the admission request: plain values passed on every call, so a per-organization
//! override takes effect on the next request without rebuilding anything.

use std::num::{NonZeroU32, NonZeroU64};

use crate::error::{Error, Result};

/// A refill rate and a bucket capacity, for requests or for tokens.
///
/// The bucket holds `burst` units and refills continuously at `per_minute` units a minute. From a
/// full bucket, `burst` units are admitted back to back; over any window of length `w` at most
/// `burst + per_minute * w / 1 min` units are admitted (GCRA). `burst` is what OpenAI's
/// `x-ratelimit-limit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    /// Units added back to the bucket per minute.
    pub per_minute: NonZeroU64,
    /// The bucket's capacity: how many units fit back to back.
    pub burst: NonZeroU64,
}

impl Rate {
    /// `per_minute` units a minute with a bucket of the same size (a full minute's worth at once).
    pub const fn per_minute(per_minute: NonZeroU64) -> Rate {
        Rate {
            per_minute,
            burst: per_minute,
        }
    }

    /// The same refill rate with another capacity.
    #[must_use]
    pub const fn with_burst(self, burst: NonZeroU64) -> Rate {
        Rate { burst, ..self }
    }

    /// Builds a rate from plain numbers, as read from configuration; zero is rejected.
    pub fn try_new(per_minute: u64, burst: u64) -> Result<Rate> {
        let per_minute = NonZeroU64::new(per_minute)
            .ok_or(Error::InvalidQuota("per_minute must be at least 1"))?;
        let burst =
            NonZeroU64::new(burst).ok_or(Error::InvalidQuota("burst must be at least 1"))?;
        Ok(Rate { per_minute, burst })
    }
}

/// The limits of one organization or one API key. `None` means "not limited on this axis".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    /// Requests (each request costs one unit).
    pub requests: Option<Rate>,
    /// Tokens (a request reserves its estimated prompt tokens plus `max_tokens`).
    pub tokens: Option<Rate>,
    /// Requests in flight at once.
    pub concurrency: Option<NonZeroU32>,
}

/// The default number of requests per minute for an organization with no override.
const DEFAULT_REQUESTS_PER_MINUTE: NonZeroU64 = match NonZeroU64::new(100) {
    Some(n) => n,
    None => NonZeroU64::MIN,
};

impl Default for Quota {
    /// 100 requests a minute (burst 100), tokens and concurrency unlimited.
    fn default() -> Self {
        Quota {
            requests: Some(Rate::per_minute(DEFAULT_REQUESTS_PER_MINUTE)),
            tokens: None,
            concurrency: None,
        }
    }
}

impl Quota {
    /// No limit on any axis.
    pub const fn unlimited() -> Quota {
        Quota {
            requests: None,
            tokens: None,
            concurrency: None,
        }
    }

    /// This quota with a request rate.
    #[must_use]
    pub const fn with_requests(self, rate: Rate) -> Quota {
        Quota {
            requests: Some(rate),
            ..self
        }
    }

    /// This quota with a token rate.
    #[must_use]
    pub const fn with_tokens(self, rate: Rate) -> Quota {
        Quota {
            tokens: Some(rate),
            ..self
        }
    }

    /// This quota with a cap on requests in flight.
    #[must_use]
    pub const fn with_concurrency(self, max_in_flight: NonZeroU32) -> Quota {
        Quota {
            concurrency: Some(max_in_flight),
            ..self
        }
    }
}

/// One request asking to be admitted: who it is for, their quotas, and the tokens to reserve.
///
/// The organization's quota always applies; a key's quota, when given, applies on top of it
/// (the request must fit both, and is charged to both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission<'a> {
    /// The organization id.
    pub org: &'a str,
    /// The organization's quota.
    pub org_quota: Quota,
    /// An API key id inside the organization and that key's own quota.
    pub key: Option<(&'a str, Quota)>,
    /// Tokens to reserve: the estimated prompt tokens plus `max_tokens`.
    pub tokens: u64,
}

impl<'a> Admission<'a> {
    /// A request for `org` under `quota`, reserving no tokens.
    pub const fn new(org: &'a str, quota: Quota) -> Admission<'a> {
        Admission {
            org,
            org_quota: quota,
            key: None,
            tokens: 0,
        }
    }

    /// Also limit the request by an API key's own quota.
    #[must_use]
    pub const fn with_key(self, key: &'a str, quota: Quota) -> Admission<'a> {
        Admission {
            key: Some((key, quota)),
            ..self
        }
    }

    /// Reserve `tokens` from the token buckets.
    #[must_use]
    pub const fn with_tokens(self, tokens: u64) -> Admission<'a> {
        Admission { tokens, ..self }
    }
}

/// The longest id accepted, in bytes.
const MAX_ID_LEN: usize = 256;

/// Ids become parts of Redis keys (`prefix:{org}:…`, braces making a cluster hash tag) and of the
/// in-process map's keys (`org\0key`); these characters would let two ids collide.
#[inline]
pub(crate) fn validate_id(id: &str) -> Result<()> {
    let reason = if id.is_empty() {
        "empty"
    } else if id.len() > MAX_ID_LEN {
        "longer than 256 bytes"
    } else if id.bytes().any(|b| matches!(b, b'{' | b'}' | 0)) {
        "contains '{', '}' or NUL"
    } else {
        return Ok(());
    };
    Err(Error::InvalidId {
        id: id.chars().take(64).collect(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_quota_is_100_requests_a_minute_with_burst_100() {
        let q = Quota::default();
        let r = q.requests.unwrap();
        assert_eq!((r.per_minute.get(), r.burst.get()), (100, 100));
        assert_eq!((q.tokens, q.concurrency), (None, None));
    }

    #[test]
    fn try_new_rejects_zero() {
        assert_eq!(
            Rate::try_new(0, 1),
            Err(Error::InvalidQuota("per_minute must be at least 1"))
        );
        assert_eq!(
            Rate::try_new(1, 0),
            Err(Error::InvalidQuota("burst must be at least 1"))
        );
        let r = Rate::try_new(60, 5).unwrap();
        assert_eq!((r.per_minute.get(), r.burst.get()), (60, 5));
    }

    #[test]
    fn ids_that_could_collide_are_rejected() {
        for bad in ["", "a{b", "a}b", "a\0b", &"x".repeat(257)] {
            assert!(
                matches!(validate_id(bad), Err(Error::InvalidId { .. })),
                "{bad:?}"
            );
        }
        for good in ["org_0123abcd", "key:with:colons", &"x".repeat(256)] {
            assert_eq!(validate_id(good), Ok(()), "{good:?}");
        }
    }
}
