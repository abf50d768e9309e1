//! Who is calling: API keys for `/v1/*`, the admin key for `/admin/*`, and a brake on clients
//! that keep presenting bad keys.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU64;
use std::time::Duration;

use cognitude_ratelimit::{AuthFailureLimiter, Rate};

use cognitude_store::{AuthOutcome, Authenticator};
use http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::config::Secret;
use crate::error::ApiError;
use crate::usage::Caller;

/// The client's address, put on each request by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// The credential a request presents: `Authorization: Bearer …` (what OpenAI SDKs send) or
/// `X-API-Key: …`.
pub(crate) fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let v = v.to_str().ok()?.trim();
        let (scheme, rest) = v.split_once(' ')?;
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(rest.trim());
        }
        return None;
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// What a request's credential turned out to be.
#[derive(Debug, Clone)]
pub(crate) enum Principal {
    Org(Caller),
    Admin,
}

/// Checks a request's credential. `allow_admin`: the admin key is accepted too.
pub(crate) async fn authenticate(
    authenticator: &Authenticator,
    admin_key: Option<&Secret>,
    limiter: &FailedAuthLimiter,
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    allow_admin: bool,
) -> Result<Principal, ApiError> {
    if let Some(ip) = peer
        && let Some(retry) = limiter.blocked(ip)
    {
        return Err(ApiError::TooManyAuthFailures { retry_after: retry });
    }
    let fail = |e: ApiError| {
        if let Some(ip) = peer {
            limiter.failed(ip);
        }
        Err(e)
    };
    let Some(key) = presented_key(headers) else {
        return fail(ApiError::Unauthorized(
            "Missing API key. Send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'."
                .into(),
        ));
    };
    if allow_admin && is_admin(admin_key, key) {
        return Ok(Principal::Admin);
    }
    match authenticator.authenticate(key).await {
        Ok(AuthOutcome::Valid(k)) => Ok(Principal::Org(Caller {
            org_id: k.org_id,
            key_id: Some(k.key_id),
        })),
        Ok(AuthOutcome::Revoked) => fail(ApiError::Unauthorized(
            "This API key has been revoked.".into(),
        )),
        Ok(AuthOutcome::Malformed | AuthOutcome::Unknown) => {
            fail(ApiError::Unauthorized("Incorrect API key provided.".into()))
        }
        Err(e) => {
            tracing::warn!(error = %e, "key lookup failed");
            Err(ApiError::Unavailable(
                "The key store is unavailable; retry shortly.".into(),
            ))
        }
    }
}

/// Whether `presented` is the admin key (constant-time).
pub(crate) fn is_admin(admin_key: Option<&Secret>, presented: &str) -> bool {
    admin_key.is_some_and(|k| {
        k.expose().len() == presented.len()
            && bool::from(k.expose().as_bytes().ct_eq(presented.as_bytes()))
    })
}

/// A brake on client addresses that keep failing authentication: past `per_minute` failures
/// (a GCRA bucket from the rate-limit crate, with bounded memory) the address gets 429 until the
/// bucket drains. Zero turns it off.
#[derive(Debug)]
pub(crate) struct FailedAuthLimiter(Option<AuthFailureLimiter>);

impl FailedAuthLimiter {
    pub fn new(per_minute: u32) -> Self {
        FailedAuthLimiter(
            NonZeroU64::new(u64::from(per_minute))
                .map(|n| AuthFailureLimiter::new(Rate::per_minute(n))),
        )
    }

    /// `Some(wait)` when the address is over its limit.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        self.0.as_ref()?.check(ip).err()
    }

    pub fn failed(&self, ip: IpAddr) {
        if let Some(l) = &self.0 {
            l.record_failure(ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn credentials_from_either_header() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h), None);
        h.insert("x-api-key", HeaderValue::from_static("k1"));
        assert_eq!(presented_key(&h), Some("k1"));
        h.insert("authorization", HeaderValue::from_static("Bearer  k2 "));
        assert_eq!(presented_key(&h), Some("k2"));
        h.insert("authorization", HeaderValue::from_static("Basic abc"));
        assert_eq!(presented_key(&h), None);
    }

    #[test]
    fn admin_key_comparison() {
        let k = Secret::new("admin-secret-0123456789");
        assert!(is_admin(Some(&k), "admin-secret-0123456789"));
        assert!(!is_admin(Some(&k), "admin-secret-012345678"));
        assert!(!is_admin(None, "admin-secret-0123456789"));
    }

    #[test]
    fn failures_block_after_the_limit() {
        let l = FailedAuthLimiter::new(3);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(l.blocked(ip).is_none());
            l.failed(ip);
        }
        let wait = l.blocked(ip).unwrap();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(60));
        assert!(l.blocked("10.0.0.2".parse().unwrap()).is_none());
        let off = FailedAuthLimiter::new(0);
        for _ in 0..10 {
            off.failed(ip);
        }
        assert!(off.blocked(ip).is_none());
    }
}
