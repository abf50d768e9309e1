//! Time for the evaluator, injectable so tests move it instead of waiting for it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// A wall clock in Unix microseconds (the ledger's unit).
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    fn now_micros(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_micros(&self) -> i64 {
        cognitude_store::now_micros()
    }
}

/// A clock that is wherever it was last set; clones share the same time. For tests.
#[derive(Debug, Clone)]
pub struct ManualClock {
    micros: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock at `micros` (Unix microseconds).
    pub fn new(micros: i64) -> ManualClock {
        ManualClock {
            micros: Arc::new(AtomicI64::new(micros)),
        }
    }

    pub fn set(&self, micros: i64) {
        self.micros.store(micros, Ordering::SeqCst);
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.micros.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_micros(&self) -> i64 {
        self.micros.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(1_000);
        let shared = c.clone();
        assert_eq!(c.now_micros(), 1_000);
        c.advance(Duration::from_millis(2));
        assert_eq!(shared.now_micros(), 3_000);
        shared.set(10);
        assert_eq!(c.now_micros(), 10);
        assert!(SystemClock.now_micros() > 1_700_000_000_000_000);
    }
}
