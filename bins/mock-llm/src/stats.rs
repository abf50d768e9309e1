//! What the mock has seen, for tests to assert on.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use http::HeaderMap;
use serde_json::{Value, json};

/// Counters and the last request, shared between the server and the test that drives it.
#[derive(Debug, Default)]
pub struct Stats {
    requests: AtomicU64,
    streams_started: AtomicU64,
    streams_completed: AtomicU64,
    streams_cancelled: AtomicU64,
    /// Requests per directive `key`.
    keys: Mutex<BTreeMap<String, u64>>,
    /// Requests the fault of a `times` directive was considered for, per counter name.
    fault_counts: Mutex<BTreeMap<String, u64>>,
    last_request: Mutex<Option<Value>>,
    last_headers: Mutex<Option<HeaderMap>>,
}

impl Stats {
    /// Every `POST` to `/v1/chat/completions` or `/v1/messages`, whatever its outcome.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Streams whose response headers were sent.
    pub fn streams_started(&self) -> u64 {
        self.streams_started.load(Ordering::SeqCst)
    }

    /// Streams that wrote their final event.
    pub fn streams_completed(&self) -> u64 {
        self.streams_completed.load(Ordering::SeqCst)
    }

    /// Streams the client went away from before they ended.
    pub fn streams_cancelled(&self) -> u64 {
        self.streams_cancelled.load(Ordering::SeqCst)
    }

    /// Requests whose directive had this `key`.
    pub fn requests_for_key(&self, key: &str) -> u64 {
        lock(&self.keys).get(key).copied().unwrap_or(0)
    }

    /// The body of the last request, as JSON (a JSON string holding the text if it was not JSON).
    pub fn last_request(&self) -> Option<Value> {
        lock(&self.last_request).clone()
    }

    /// The headers of the last request.
    pub fn last_headers(&self) -> Option<HeaderMap> {
        lock(&self.last_headers).clone()
    }

    /// Counts a request and returns its sequence number, starting at 1.
    pub(crate) fn count_request(&self, headers: &HeaderMap) -> u64 {
        *lock(&self.last_headers) = Some(headers.clone());
        self.requests.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub(crate) fn record_body(&self, body: Value) {
        *lock(&self.last_request) = Some(body);
    }

    pub(crate) fn count_key(&self, key: &str) {
        *lock(&self.keys).entry(key.to_owned()).or_default() += 1;
    }

    /// Counts one more request against a `times` counter and returns the new count.
    pub(crate) fn count_fault(&self, name: &str) -> u64 {
        let mut counts = lock(&self.fault_counts);
        let count = counts.entry(name.to_owned()).or_default();
        *count += 1;
        *count
    }

    pub(crate) fn stream_started(&self) {
        self.streams_started.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn stream_completed(&self) {
        self.streams_completed.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn stream_cancelled(&self) {
        self.streams_cancelled.fetch_add(1, Ordering::SeqCst);
    }

    /// The counters as the `GET /_mock/stats` body.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "requests": self.requests(),
            "streams_started": self.streams_started(),
            "streams_completed": self.streams_completed(),
            "streams_cancelled": self.streams_cancelled(),
            "keys": *lock(&self.keys),
        })
    }
}

/// Locks a mutex; a panic while holding one of these cannot leave its data half-written (each
/// critical section is one assignment), so a poisoned lock is still safe to use.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_keys() {
        let stats = Stats::default();
        let mut headers = HeaderMap::new();
        headers.insert("x-test", http::HeaderValue::from_static("1"));
        assert_eq!(stats.count_request(&headers), 1);
        assert_eq!(stats.count_request(&HeaderMap::new()), 2);
        stats.count_key("a");
        stats.count_key("a");
        assert_eq!(stats.count_fault("a"), 1);
        assert_eq!(stats.count_fault("a"), 2);
        assert_eq!(stats.requests(), 2);
        assert_eq!(stats.requests_for_key("a"), 2);
        assert_eq!(stats.requests_for_key("b"), 0);
        assert!(stats.last_headers().unwrap().get("x-test").is_none());
        assert_eq!(
            stats.to_json(),
            json!({"requests":2,"streams_started":0,"streams_completed":0,
                   "streams_cancelled":0,"keys":{"a":2}})
        );
    }
}
