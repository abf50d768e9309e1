//! Integration tests against the machine's Redis (`REDIS_URL`) and PostgreSQL (`DATABASE_URL`):
//! the conformance suite once per backend and for the tiered cache, backend specifics, and
//! fault tests on a private redis-server and a slowed-down relay. Every run works in its own
//! Redis key prefix and PostgreSQL schema, removed at the end.
// Marks the helpers as test code too, so the workspace's allow-unwrap-in-tests covers them.
#![cfg(test)]

#[path = "cache/backends.rs"]
mod backends;
#[path = "cache/faults.rs"]
mod faults;
#[path = "cache/suite.rs"]
mod suite;
#[path = "cache/support.rs"]
mod support;

/// Stamps out every suite function for one backend kind, in a module named after it.
macro_rules! conformance {
    ($backend:ident, $kind:expr) => {
        conformance!(@tests $backend, $kind;
            stored_entry_comes_back,
            absent_key_is_a_miss,
            orgs_never_see_each_others_entries,
            put_replaces_the_entry,
            delete_removes_only_that_entry,
            clear_org_removes_all_of_its_entries,
            clear_all_empties_the_cache,
            entries_expire_after_their_ttl,
            large_entries_round_trip,
            concurrent_puts_and_gets_see_their_own_entries,
            stats_count_hits_and_misses,
            health_is_ok,
            zero_ttl_stores_nothing,
        );
    };
    (@tests $backend:ident, $kind:expr; $($test:ident),* $(,)?) => {
        mod $backend {
            use crate::support::{Kind, with_fixture};
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    with_fixture($kind, |f| crate::suite::$test(f.cache)).await;
                }
            )*
        }
    };
}

conformance!(memory, Kind::Memory);
conformance!(redis, Kind::Redis);
conformance!(postgres, Kind::Postgres);
conformance!(tiered, Kind::Tiered);
