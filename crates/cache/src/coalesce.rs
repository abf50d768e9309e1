//! Request coalescing ("single flight"): concurrent identical misses share one upstream call.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

/// Runs one call per key at a time within this process; callers that arrive while a call for
/// their key is running wait for its result instead of making their own.
///
/// - The leader's result is shared as is, failure included: `V` is typically a
///   `Result<T, E>` with a cloneable `E`. Followers asked the same thing of the same upstream a
///   moment later; repeating a failing call once per follower would stampede an upstream that
///   is already struggling, and the ordinary retry and fallback path already ran for the leader.
/// - If the leader goes away without a result (its caller disconnected and the future was
///   dropped, or it panicked), no follower hangs: the waiting followers elect a new leader among
///   themselves, which makes its own call, and the others wait for that one.
#[derive(Debug)]
pub struct Coalescer<K, V> {
    flights: Mutex<HashMap<K, Flight<V>>>,
    next_id: AtomicU64,
}

#[derive(Debug)]
struct Flight<V> {
    id: u64,
    tx: watch::Sender<Option<V>>,
}

/// A coalesced call's value and whether it came from another caller's call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coalesced<V> {
    pub value: V,
    /// True when this caller waited for another's call and made none itself.
    pub shared: bool,
}

impl<K, V> Default for Coalescer<K, V> {
    fn default() -> Self {
        Coalescer {
            flights: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        }
    }
}

impl<K, V> Coalescer<K, V>
where
    K: Hash + Eq + Clone,
    V: Clone,
{
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `call` unless a call for `key` is already running, in which case waits for that one.
    pub async fn run<F, Fut>(&self, key: K, call: F) -> Coalesced<V>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let leader = loop {
            match self.join(&key) {
                Joined::Lead(guard) => break guard,
                Joined::Follow(rx) => {
                    if let Some(value) = wait(rx).await {
                        return Coalesced {
                            value,
                            shared: true,
                        };
                    }
                    // The leader left without a result: elect again.
                }
            }
        };
        let value = call().await;
        leader.complete(value.clone());
        Coalesced {
            value,
            shared: false,
        }
    }

    /// Keys with a call running.
    pub fn in_flight(&self) -> usize {
        self.lock().len()
    }

    /// Callers waiting for the running call of `key`.
    pub fn waiting(&self, key: &K) -> usize {
        self.lock().get(key).map_or(0, |f| f.tx.receiver_count())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Flight<V>>> {
        self.flights.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn join(&self, key: &K) -> Joined<'_, K, V> {
        let mut flights = self.lock();
        if let Some(flight) = flights.get(key) {
            return Joined::Follow(flight.tx.subscribe());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, _) = watch::channel(None);
        flights.insert(key.clone(), Flight { id, tx });
        Joined::Lead(LeaderGuard {
            owner: self,
            key: key.clone(),
            id,
        })
    }

    /// Ends flight `id` of `key`: publishes `value` to its followers, or with `None` lets them
    /// elect a new leader.
    fn end(&self, key: &K, id: u64, value: Option<V>) {
        let flight = {
            let mut flights = self.lock();
            match flights.get(key) {
                Some(f) if f.id == id => flights.remove(key),
                _ => None,
            }
        };
        if let (Some(flight), Some(value)) = (flight, value) {
            flight.tx.send_replace(Some(value));
        }
        // Dropping the sender wakes every follower; they see the value or the closed channel.
    }
}

enum Joined<'a, K: Hash + Eq + Clone, V: Clone> {
    Lead(LeaderGuard<'a, K, V>),
    Follow(watch::Receiver<Option<V>>),
}

/// Ends the flight when the leader finishes, or when its future is dropped or panics.
struct LeaderGuard<'a, K: Hash + Eq + Clone, V: Clone> {
    owner: &'a Coalescer<K, V>,
    key: K,
    id: u64,
}

impl<K: Hash + Eq + Clone, V: Clone> LeaderGuard<'_, K, V> {
    fn complete(self, value: V) {
        self.owner.end(&self.key, self.id, Some(value));
        // Drop runs `end` again with no value; the flight is already gone, so it does nothing.
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Drop for LeaderGuard<'_, K, V> {
    fn drop(&mut self) {
        self.owner.end(&self.key, self.id, None);
    }
}

/// The leader's value, or `None` when it left without one.
async fn wait<V: Clone>(mut rx: watch::Receiver<Option<V>>) -> Option<V> {
    loop {
        if let Some(v) = rx.borrow_and_update().clone() {
            return Some(v);
        }
        if rx.changed().await.is_err() {
            // Closed: the value, if any, was sent just before.
            return rx.borrow().clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use tokio::sync::Notify;

    use super::*;

    /// Waits until `n` callers wait on `key`.
    async fn until_waiting(
        c: &Coalescer<&'static str, Result<u32, String>>,
        key: &'static str,
        n: usize,
    ) {
        while c.waiting(&key) < n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_identical_calls_make_one_call() {
        let c = Arc::new(Coalescer::<&'static str, Result<u32, String>>::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (c, calls, release) = (c.clone(), calls.clone(), release.clone());
            tasks.push(tokio::spawn(async move {
                c.run("k", || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    release.notified().await;
                    Ok(42)
                })
                .await
            }));
        }
        until_waiting(&c, "k", 15).await;
        release.notify_one();
        let mut shared = 0;
        for t in tasks {
            let r = t.await.unwrap();
            assert_eq!(r.value, Ok(42));
            shared += usize::from(r.shared);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(shared, 15);
        assert_eq!(c.in_flight(), 0);
    }

    #[tokio::test]
    async fn different_keys_do_not_wait_for_each_other() {
        let c = Coalescer::<&'static str, u32>::new();
        let a = c.run("a", || async { 1 }).await;
        let b = c.run("b", || async { 2 }).await;
        assert_eq!((a.value, b.value), (1, 2));
        assert!(!a.shared && !b.shared);
    }

    #[tokio::test]
    async fn the_leaders_error_is_shared() {
        let c = Arc::new(Coalescer::<&'static str, Result<u32, String>>::new());
        let release = Arc::new(Notify::new());
        let leader = tokio::spawn({
            let (c, release) = (c.clone(), release.clone());
            async move {
                c.run("k", || async move {
                    release.notified().await;
                    Err("upstream 503".to_owned())
                })
                .await
            }
        });
        while c.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
        let follower = tokio::spawn({
            let c = c.clone();
            async move { c.run("k", || async { Ok(1) }).await }
        });
        until_waiting(&c, "k", 1).await;
        release.notify_one();
        let f = follower.await.unwrap();
        assert_eq!(f.value, Err("upstream 503".to_owned()));
        assert!(f.shared);
        assert!(!leader.await.unwrap().shared);
    }

    #[tokio::test]
    async fn a_cancelled_leader_hands_over_to_a_follower() {
        let c = Arc::new(Coalescer::<&'static str, Result<u32, String>>::new());
        let leader = tokio::spawn({
            let c = c.clone();
            async move {
                c.run("k", std::future::pending::<Result<u32, String>>)
                    .await
            }
        });
        while c.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
        let calls = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        let followers: Vec<_> = (0..3)
            .map(|i| {
                let (c, calls, release) = (c.clone(), calls.clone(), release.clone());
                tokio::spawn(async move {
                    c.run("k", move || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        release.notified().await;
                        Ok(i)
                    })
                    .await
                })
            })
            .collect();
        until_waiting(&c, "k", 3).await;
        leader.abort();
        assert!(leader.await.unwrap_err().is_cancelled());
        // One follower took over and the other two wait for it.
        while calls.load(Ordering::SeqCst) < 1 || c.waiting(&"k") < 2 {
            tokio::task::yield_now().await;
        }
        release.notify_one();
        let results: Vec<_> = futures_join(followers).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(results.iter().filter(|r| !r.shared).count(), 1);
        assert!(results.iter().all(|r| r.value == results[0].value));
        assert_eq!(c.in_flight(), 0);
    }

    async fn futures_join<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn a_panicking_leader_does_not_strand_followers() {
        let c = Arc::new(Coalescer::<&'static str, Result<u32, String>>::new());
        let release = Arc::new(Notify::new());
        let leader = tokio::spawn({
            let (c, release) = (c.clone(), release.clone());
            async move {
                c.run("k", || async move {
                    release.notified().await;
                    panic!("leader failed hard");
                })
                .await
            }
        });
        while c.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
        let follower = tokio::spawn({
            let c = c.clone();
            async move { c.run("k", || async { Ok(7) }).await }
        });
        until_waiting(&c, "k", 1).await;
        release.notify_one();
        assert!(leader.await.unwrap_err().is_panic());
        let f = follower.await.unwrap();
        assert_eq!(f.value, Ok(7));
        assert!(!f.shared);
    }
}
