//! Limits failed authentication attempts per client address, so keys cannot be guessed quickly.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::clock::{Clock, SystemClock, micros};
use crate::gcra;
use crate::quota::Rate;
use crate::table::{Slot, Table};

/// Addresses tracked by default.
const DEFAULT_MAX_ADDRESSES: usize = 100_000;

/// Counts failed authentications per client address with GCRA and says when an address must wait.
///
/// Use: [`check`](Self::check) before verifying a key (refuse with 429 and `Retry-After` when it
/// returns `Err`), [`record_failure`](Self::record_failure) after a key fails. Successes cost
/// nothing. IPv6 clients are grouped by /64 (one host usually holds a whole /64), and IPv4-mapped
/// IPv6 addresses count as the IPv4 address. Memory is bounded as in
/// [`MemoryLimiter`](crate::MemoryLimiter): addresses whose budget is whole again are forgotten, and
/// at the cap the ones closest to that go first, so a flood of fresh addresses cannot unblock a
/// blocked one nor exhaust memory.
pub struct AuthFailureLimiter<C: Clock = SystemClock> {
    table: Table<AddrKey, Tat>,
    rate: Rate,
    clock: C,
}

impl AuthFailureLimiter {
    /// Allows `rate.burst` failures at once and `rate.per_minute` a minute after that, per address,
    /// tracking up to 100 000 addresses.
    pub fn new(rate: Rate) -> AuthFailureLimiter {
        AuthFailureLimiter::with_clock(rate, DEFAULT_MAX_ADDRESSES, SystemClock::new())
    }
}

impl<C: Clock> AuthFailureLimiter<C> {
    /// As [`new`](AuthFailureLimiter::new), on `clock`, tracking up to `max_addresses`.
    pub fn with_clock(rate: Rate, max_addresses: usize, clock: C) -> AuthFailureLimiter<C> {
        AuthFailureLimiter {
            table: Table::new(max_addresses),
            rate,
            clock,
        }
    }

    /// `Ok` when `addr` may try to authenticate; `Err(retry_after)` when it has used up its
    /// failures and must wait that long.
    pub fn check(&self, addr: IpAddr) -> Result<(), Duration> {
        let now = micros(self.clock.now());
        let one = gcra::cost_us(self.rate, 1);
        let tau = gcra::cost_us(self.rate, self.rate.burst.get());
        let tat = self.table.update(now, &AddrKey::of(addr), None, |t, _| t.0);
        let after = tat.max(now) - now + one;
        if after <= tau {
            Ok(())
        } else {
            Err(Duration::from_micros(after - tau))
        }
    }

    /// Counts one failed attempt from `addr` (always, even past the budget: hammering while
    /// blocked extends the wait).
    pub fn record_failure(&self, addr: IpAddr) {
        let now = micros(self.clock.now());
        let one = gcra::cost_us(self.rate, 1);
        self.table.update(now, &AddrKey::of(addr), None, |t, _| {
            t.0 = gcra::apply_delta(t.0, now, i64::try_from(one).unwrap_or(i64::MAX));
        });
    }

    /// Addresses currently tracked.
    pub fn tracked_addresses(&self) -> usize {
        self.table.len()
    }

    /// The most addresses tracked at once.
    pub fn max_addresses(&self) -> usize {
        self.table.capacity()
    }
}

impl<C: Clock> fmt::Debug for AuthFailureLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthFailureLimiter")
            .field("rate", &self.rate)
            .field("tracked_addresses", &self.tracked_addresses())
            .field("clock", &self.clock)
            .finish()
    }
}

/// An address as limited: IPv4 whole, IPv6 by its /64 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum AddrKey {
    V4(u32),
    V6(u64),
}

impl AddrKey {
    fn of(addr: IpAddr) -> AddrKey {
        match addr {
            IpAddr::V4(v4) => AddrKey::V4(v4.to_bits()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddrKey::V4(v4.to_bits()),
                None => AddrKey::V6((v6.to_bits() >> 64) as u64),
            },
        }
    }
}

/// A bare theoretical arrival time (µs on the limiter's clock).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tat(u64);

impl Slot for Tat {
    fn is_idle(&self, now: u64) -> bool {
        self.0 <= now
    }

    fn idle_at(&self) -> u64 {
        self.0
    }

    fn is_pinned(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::clock::ManualClock;

    fn limiter(max: usize) -> (AuthFailureLimiter<ManualClock>, ManualClock) {
        let clock = ManualClock::new();
        (
            AuthFailureLimiter::with_clock(Rate::try_new(6, 3).unwrap(), max, clock.clone()),
            clock,
        )
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn blocks_after_the_burst_and_unblocks_with_time() {
        let (l, clock) = limiter(1_000);
        let addr = v4(192, 0, 2, 1);
        for _ in 0..3 {
            assert_eq!(l.check(addr), Ok(()));
            l.record_failure(addr);
        }
        assert_eq!(
            l.check(addr),
            Err(Duration::from_secs(10)),
            "6 a minute: one every 10 s"
        );
        assert_eq!(
            l.check(v4(192, 0, 2, 2)),
            Ok(()),
            "other addresses are unaffected"
        );
        clock.advance(Duration::from_secs(10));
        assert_eq!(l.check(addr), Ok(()));
    }

    #[test]
    fn ipv6_is_grouped_by_64_and_mapped_ipv4_is_ipv4() {
        let (l, _clock) = limiter(1_000);
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().unwrap();
        for _ in 0..3 {
            l.record_failure(IpAddr::V6(a));
        }
        assert!(l.check(IpAddr::V6(b)).is_err(), "same /64");
        assert!(
            l.check("2001:db8:1:3::1".parse().unwrap()).is_ok(),
            "another /64"
        );
        for _ in 0..3 {
            l.record_failure(v4(198, 51, 100, 7));
        }
        assert!(l.check("::ffff:198.51.100.7".parse().unwrap()).is_err());
    }

    #[test]
    fn a_flood_of_addresses_is_bounded_and_does_not_unblock_a_blocked_one() {
        let (l, _clock) = limiter(1_024);
        let blocked = v4(203, 0, 113, 9);
        for _ in 0..10 {
            l.record_failure(blocked);
        }
        for i in 0..100_000u32 {
            l.record_failure(IpAddr::V4(Ipv4Addr::from_bits(
                i.wrapping_mul(2_654_435_761),
            )));
        }
        assert!(
            l.tracked_addresses() <= l.max_addresses(),
            "{}",
            l.tracked_addresses()
        );
        assert!(l.check(blocked).is_err());
    }
}
