//! The conformance suite, written once against `dyn Limiter` and stamped out for the in-process and
//! the Redis limiter (on the machine's Redis at `REDIS_URL`, default `redis://127.0.0.1:6379`,
//! under a key prefix unique to the run), then the Redis-only behaviour: replicas sharing one
//! limit, and the failure policy against a private `redis-server` this binary starts and kills.
//!
//! Quotas refill at one unit a minute unless a test is about refill, so counts are exact however
//! slowly the machine runs; the refill tests bound counts by the time they measured.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail loudly on anything unexpected"
)]

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cognitude_ratelimit::{
    Admission, Decision, Denial, Error, Exceeded, FailPolicy, FailoverConfig, FailoverLimiter,
    Limiter, MemoryLimiter, Quota, Rate, RedisConfig, RedisLimiter, Reservation, Scope, Snapshot,
};
use cognitude_testkit::RedisServer;
use fred::interfaces::{ClientLike, KeysInterface, LuaInterface};
use fred::types::CustomCommand;

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A limiter under test and what to clean up after it.
struct Fixture {
    limiter: Arc<dyn Limiter>,
    redis_prefix: Option<String>,
}

impl Fixture {
    async fn finish(self) {
        if let Some(prefix) = self.redis_prefix {
            delete_keys(&prefix).await;
        }
    }
}

async fn memory(_case: &str) -> Fixture {
    Fixture {
        limiter: Arc::new(MemoryLimiter::new()),
        redis_prefix: None,
    }
}

async fn redis(case: &str) -> Fixture {
    let prefix = test_prefix(case);
    let limiter = RedisLimiter::connect(&redis_url(), test_config(&prefix))
        .await
        .expect("the machine's Redis");
    Fixture {
        limiter: Arc::new(limiter),
        redis_prefix: Some(prefix),
    }
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// `cognitude-test:{case}_{pid}_{random}`: unique to this run and this test.
fn test_prefix(case: &str) -> String {
    format!("cognitude-test:{}", cognitude_testkit::unique(case))
}

/// Generous timeouts: a loaded two-core machine must not turn a slow reply into a failure.
fn test_config(prefix: &str) -> RedisConfig {
    RedisConfig {
        prefix: prefix.to_owned(),
        command_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(10),
        ..RedisConfig::default()
    }
}

async fn delete_keys(prefix: &str) {
    let Ok(l) = RedisLimiter::connect(&redis_url(), test_config(prefix)).await else {
        return;
    };
    let keys: Vec<String> = l
        .client()
        .custom(
            CustomCommand::new_static("KEYS", None::<u16>, false),
            vec![format!("{prefix}:*")],
        )
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<i64, _> = l.client().del(keys).await;
    }
}

fn rate(per_minute: u64, burst: u64) -> Rate {
    Rate::try_new(per_minute, burst).unwrap()
}

/// Requests only, refilling one a minute.
fn requests(burst: u64) -> Quota {
    Quota::unlimited().with_requests(rate(1, burst))
}

/// Tokens only, refilling one a minute.
fn tokens(burst: u64) -> Quota {
    Quota::unlimited().with_tokens(rate(1, burst))
}

async fn admit(l: &dyn Limiter, a: Admission<'_>) -> Decision {
    l.admit(a).await.unwrap()
}

async fn admitted(l: &dyn Limiter, a: Admission<'_>) -> Reservation {
    match admit(l, a).await {
        Decision::Admitted(r) => r,
        Decision::Denied(d) => panic!("denied: {d:?}"),
    }
}

async fn denied(l: &dyn Limiter, a: Admission<'_>) -> Denial {
    match admit(l, a).await {
        Decision::Denied(d) => d,
        Decision::Admitted(r) => panic!("admitted: {r:?}"),
    }
}

/// The remaining units of the request and token buckets.
fn remaining(s: &Snapshot) -> (Option<u64>, Option<u64>) {
    (
        s.requests.map(|b| b.remaining),
        s.tokens.map(|b| b.remaining),
    )
}

// ---------------------------------------------------------------------------------------------
// The conformance suite

macro_rules! conformance {
    ($backend:ident, $make:path; $($case:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let fixture = $make(concat!(stringify!($backend), "-", stringify!($case))).await;
                    super::cases::$case(&fixture.limiter).await;
                    fixture.finish().await;
                }
            )*
        }
    };
}

macro_rules! conformance_suite {
    ($($backend:ident => $make:path),* $(,)?) => {
        $(
            conformance!($backend, $make;
                burst_then_deny_with_openai_numbers,
                orgs_are_independent,
                key_quota_applies_inside_the_org,
                org_quota_binds_all_its_keys,
                tokens_are_reserved_then_refunded_or_charged,
                tokens_over_capacity_are_refused_without_charge,
                token_debt_blocks_until_refilled,
                a_denied_request_charges_nothing,
                concurrency_permits_are_released_by_settle_and_drop,
                key_concurrency_is_separate_from_the_org,
                invalid_ids_are_rejected,
                unlimited_quota_always_admits,
                settle_without_tokens_or_permits_is_a_no_op,
                hammering_one_org_admits_exactly_the_burst,
                hammering_with_refill_stays_within_limit_plus_burst,
                hammering_tokens_with_settle_stays_within_the_bucket,
            );
        )*
    };
}

conformance_suite!(memory_limiter => super::memory, redis_limiter => super::redis);

mod cases {
    use super::*;

    pub async fn burst_then_deny_with_openai_numbers(l: &Arc<dyn Limiter>) {
        let a = Admission::new("org_a", requests(5));
        for i in 1..=5u64 {
            let r = admitted(l, a).await;
            let b = r.snapshot().requests.unwrap();
            assert_eq!((b.limit, b.remaining), (5, 5 - i));
            // Each request is one minute of refill; time passing can only shorten the reset.
            assert!(
                b.reset <= Duration::from_secs(60 * i)
                    && b.reset > Duration::from_secs(60 * i - 30),
                "{b:?}"
            );
        }
        let d = denied(l, a).await;
        assert_eq!((d.exceeded, d.scope), (Exceeded::Requests, Scope::Org));
        assert!(
            d.retry_after > Duration::from_secs(30) && d.retry_after <= Duration::from_secs(60),
            "{d:?}"
        );
        let b = d.snapshot.requests.unwrap();
        assert_eq!((b.limit, b.remaining), (5, 0));
        assert!(
            b.reset > Duration::from_secs(270) && b.reset <= Duration::from_secs(300),
            "{b:?}"
        );
        assert_eq!(d.snapshot.tokens, None);
    }

    pub async fn orgs_are_independent(l: &Arc<dyn Limiter>) {
        for _ in 0..2 {
            admitted(l, Admission::new("org_a", requests(2))).await;
        }
        denied(l, Admission::new("org_a", requests(2))).await;
        let r = admitted(l, Admission::new("org_b", requests(2))).await;
        assert_eq!(remaining(r.snapshot()), (Some(1), None));
    }

    pub async fn key_quota_applies_inside_the_org(l: &Arc<dyn Limiter>) {
        let org = requests(10);
        let r = admitted(
            l,
            Admission::new("org_a", org).with_key("key_1", requests(2)),
        )
        .await;
        let b = r.snapshot().requests.unwrap();
        assert_eq!(
            (b.limit, b.remaining),
            (2, 1),
            "the key's bucket binds and is reported"
        );
        admitted(
            l,
            Admission::new("org_a", org).with_key("key_1", requests(2)),
        )
        .await;
        let d = denied(
            l,
            Admission::new("org_a", org).with_key("key_1", requests(2)),
        )
        .await;
        assert_eq!((d.exceeded, d.scope), (Exceeded::Requests, Scope::Key));
        admitted(
            l,
            Admission::new("org_a", org).with_key("key_2", requests(2)),
        )
        .await;
        let r = admitted(l, Admission::new("org_a", org)).await;
        assert_eq!(
            remaining(r.snapshot()),
            (Some(6), None),
            "three key requests and this one; not the denied one"
        );
    }

    pub async fn org_quota_binds_all_its_keys(l: &Arc<dyn Limiter>) {
        let org = requests(3);
        for key in ["key_1", "key_2", "key_3"] {
            admitted(l, Admission::new("org_a", org).with_key(key, requests(10))).await;
        }
        let d = denied(
            l,
            Admission::new("org_a", org).with_key("key_4", requests(10)),
        )
        .await;
        assert_eq!((d.exceeded, d.scope), (Exceeded::Requests, Scope::Org));
        let key_bucket = admitted(
            l,
            Admission::new("org_b", requests(3)).with_key("key_4", requests(10)),
        )
        .await;
        assert_eq!(
            remaining(key_bucket.snapshot()),
            (Some(2), None),
            "key_4 of org_b is another bucket"
        );
    }

    pub async fn tokens_are_reserved_then_refunded_or_charged(l: &Arc<dyn Limiter>) {
        let q = tokens(1000);
        let r = admitted(l, Admission::new("org_a", q).with_tokens(400)).await;
        assert_eq!(
            (r.reserved_tokens(), remaining(r.snapshot())),
            (400, (None, Some(600)))
        );
        l.settle(r, 100).await.unwrap();
        let r = admitted(l, Admission::new("org_a", q).with_tokens(100)).await;
        assert_eq!(
            remaining(r.snapshot()),
            (None, Some(800)),
            "300 refunded, then 100 reserved"
        );
        l.settle(r, 600).await.unwrap();
        let r = admitted(l, Admission::new("org_a", q)).await;
        assert_eq!(
            remaining(r.snapshot()),
            (None, Some(300)),
            "500 more charged"
        );
        let b = r.snapshot().tokens.unwrap();
        assert!(
            b.reset > Duration::from_secs(699 * 60) && b.reset <= Duration::from_secs(700 * 60),
            "{b:?}"
        );
    }

    pub async fn tokens_over_capacity_are_refused_without_charge(l: &Arc<dyn Limiter>) {
        let q = requests(5).with_tokens(rate(1, 1000));
        let d = denied(l, Admission::new("org_a", q).with_tokens(1001)).await;
        assert_eq!(
            (d.exceeded, d.scope),
            (Exceeded::TokensOverCapacity, Scope::Org)
        );
        assert_eq!(remaining(&d.snapshot), (Some(5), Some(1000)));
        let r = admitted(l, Admission::new("org_a", q).with_tokens(1000)).await;
        assert_eq!(remaining(r.snapshot()), (Some(4), Some(0)));
    }

    pub async fn token_debt_blocks_until_refilled(l: &Arc<dyn Limiter>) {
        let q = tokens(1000);
        let r = admitted(l, Admission::new("org_a", q).with_tokens(10)).await;
        l.settle(r, 1500).await.unwrap();
        let d = denied(l, Admission::new("org_a", q)).await;
        assert_eq!(
            (d.exceeded, remaining(&d.snapshot)),
            (Exceeded::Tokens, (None, Some(0)))
        );
        let min = Duration::from_secs(60);
        assert!(
            d.retry_after > 499 * min && d.retry_after <= 500 * min,
            "500 tokens of debt: {d:?}"
        );
    }

    pub async fn a_denied_request_charges_nothing(l: &Arc<dyn Limiter>) {
        let q = requests(5).with_tokens(rate(1, 100));
        admitted(l, Admission::new("org_a", q).with_tokens(60)).await;
        let d = denied(l, Admission::new("org_a", q).with_tokens(60)).await;
        assert_eq!(d.exceeded, Exceeded::Tokens);
        assert_eq!(
            remaining(&d.snapshot),
            (Some(4), Some(40)),
            "the state before the refused request"
        );
        let r = admitted(l, Admission::new("org_a", q).with_tokens(40)).await;
        assert_eq!(remaining(r.snapshot()), (Some(3), Some(0)));
    }

    pub async fn concurrency_permits_are_released_by_settle_and_drop(l: &Arc<dyn Limiter>) {
        let q = Quota::unlimited().with_concurrency(2.try_into().unwrap());
        let a = Admission::new("org_a", q);
        let r1 = admitted(l, a).await;
        let r2 = admitted(l, a).await;
        let d = denied(l, a).await;
        assert_eq!((d.exceeded, d.scope), (Exceeded::Concurrency, Scope::Org));
        l.settle(r1, 0).await.unwrap();
        let r3 = admitted(l, a).await;
        denied(l, a).await;
        drop(r2);
        // A shared store is told about a drop in the background: give it time.
        let deadline = Instant::now() + Duration::from_secs(20);
        let r4 = loop {
            match admit(l, a).await {
                Decision::Admitted(r) => break r,
                Decision::Denied(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Decision::Denied(d) => panic!("the dropped permit was never released: {d:?}"),
            }
        };
        denied(l, a).await;
        drop((r3, r4));
    }

    pub async fn key_concurrency_is_separate_from_the_org(l: &Arc<dyn Limiter>) {
        let org = Quota::unlimited().with_concurrency(10.try_into().unwrap());
        let key = Quota::unlimited().with_concurrency(1.try_into().unwrap());
        let r = admitted(l, Admission::new("org_a", org).with_key("key_1", key)).await;
        let d = denied(l, Admission::new("org_a", org).with_key("key_1", key)).await;
        assert_eq!((d.exceeded, d.scope), (Exceeded::Concurrency, Scope::Key));
        let other = admitted(l, Admission::new("org_a", org).with_key("key_2", key)).await;
        l.settle(r, 0).await.unwrap();
        l.settle(other, 0).await.unwrap();
        admitted(l, Admission::new("org_a", org).with_key("key_1", key)).await;
    }

    pub async fn invalid_ids_are_rejected(l: &Arc<dyn Limiter>) {
        for (org, key) in [
            ("", None),
            ("org{a}", None),
            ("org_a", Some("key}")),
            ("org_a", Some("")),
        ] {
            let mut a = Admission::new(org, Quota::default());
            if let Some(key) = key {
                a = a.with_key(key, Quota::default());
            }
            assert!(
                matches!(l.admit(a).await, Err(Error::InvalidId { .. })),
                "{org:?} {key:?}"
            );
        }
    }

    pub async fn unlimited_quota_always_admits(l: &Arc<dyn Limiter>) {
        for _ in 0..50 {
            let r = admitted(
                l,
                Admission::new("org_a", Quota::unlimited()).with_tokens(1 << 40),
            )
            .await;
            assert_eq!(*r.snapshot(), Snapshot::default());
        }
    }

    pub async fn settle_without_tokens_or_permits_is_a_no_op(l: &Arc<dyn Limiter>) {
        let r = admitted(l, Admission::new("org_a", requests(2))).await;
        l.settle(r, 10_000).await.unwrap();
        let r = admitted(l, Admission::new("org_a", requests(2))).await;
        assert_eq!(
            remaining(r.snapshot()),
            (Some(0), None),
            "settling touched no token bucket"
        );
    }

    /// Many tasks on one org, no refill to speak of: a race between reading and writing the
    /// bucket would admit more than the burst.
    pub async fn hammering_one_org_admits_exactly_the_burst(l: &Arc<dyn Limiter>) {
        let (admitted, _) = hammer(
            l,
            32,
            Duration::from_millis(800),
            |_| Admission::new("org_a", requests(25)),
            0,
        )
        .await;
        assert_eq!(admitted, 25);
    }

    /// 120 a minute (one every 500 ms) with a burst of 20: over the window, never more than the
    /// burst plus what refilled, and every refill is used.
    pub async fn hammering_with_refill_stays_within_limit_plus_burst(l: &Arc<dyn Limiter>) {
        let q = Quota::unlimited().with_requests(rate(120, 20));
        let start = Instant::now();
        let (admitted, _) = hammer(
            l,
            16,
            Duration::from_millis(2_000),
            move |_| Admission::new("org_a", q),
            0,
        )
        .await;
        let refills = (start.elapsed().as_millis() / 500) as u64;
        assert!(
            admitted <= 20 + refills + 1,
            "{admitted} admitted, at most {} allowed",
            20 + refills + 1
        );
        assert!(
            admitted >= 20 + 2,
            "refill was not used: {admitted} admitted"
        );
    }

    /// Reserve 100 tokens, settle 0 to 20: refunds let far more requests through than the
    /// reservations alone would, yet the tokens really used never exceed the bucket plus refill.
    pub async fn hammering_tokens_with_settle_stays_within_the_bucket(l: &Arc<dyn Limiter>) {
        let q = Quota::unlimited().with_tokens(rate(600, 1000)); // ten tokens a second
        let start = Instant::now();
        let (admitted, used) = hammer(
            l,
            16,
            Duration::from_millis(2_000),
            move |_| Admission::new("org_a", q).with_tokens(100),
            20,
        )
        .await;
        let refill = start.elapsed().as_millis() as u64 / 100;
        assert!(
            used <= 1000 + refill + 1,
            "{used} tokens used, at most {} allowed",
            1000 + refill + 1
        );
        assert!(
            admitted > 10 + refill / 100 + 10,
            "refunds did not free the bucket: {admitted} admitted"
        );
    }

    /// Runs `tasks` tokio tasks for `run`, each admitting `admission(i)` in a loop; an admitted
    /// request is settled at once with a random 0..=`max_actual` tokens.
    /// Returns (admitted, tokens settled).
    async fn hammer(
        l: &Arc<dyn Limiter>,
        tasks: usize,
        run: Duration,
        admission: impl Fn(usize) -> Admission<'static> + Send + Sync + 'static,
        max_actual: u64,
    ) -> (u64, u64) {
        let admission = Arc::new(admission);
        let deadline = Instant::now() + run;
        let workers: Vec<_> = (0..tasks)
            .map(|i| {
                let (l, admission) = (Arc::clone(l), Arc::clone(&admission));
                tokio::spawn(async move {
                    let (mut admitted, mut used) = (0, 0);
                    while Instant::now() < deadline {
                        match l.admit(admission(i)).await.unwrap() {
                            Decision::Admitted(r) => {
                                admitted += 1;
                                let actual = if max_actual == 0 {
                                    0
                                } else {
                                    fastrand::u64(0..=max_actual)
                                };
                                used += actual;
                                l.settle(r, actual).await.unwrap();
                            }
                            Decision::Denied(_) => {
                                tokio::time::sleep(Duration::from_millis(2)).await
                            }
                        }
                        tokio::task::yield_now().await;
                    }
                    (admitted, used)
                })
            })
            .collect();
        let (mut admitted, mut used) = (0, 0);
        for w in workers {
            let (a, u) = w.await.unwrap();
            admitted += a;
            used += u;
        }
        (admitted, used)
    }
}

// ---------------------------------------------------------------------------------------------
// Redis only: replicas share one limit

/// Two replicas, each with its own client, hammering one org: together they admit the burst,
/// not the burst each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_redis_replicas_share_one_limit() {
    let prefix = test_prefix("replicas");
    let a: Arc<dyn Limiter> = Arc::new(
        RedisLimiter::connect(&redis_url(), test_config(&prefix))
            .await
            .unwrap(),
    );
    let b: Arc<dyn Limiter> = Arc::new(
        RedisLimiter::connect(&redis_url(), test_config(&prefix))
            .await
            .unwrap(),
    );
    let q = requests(30).with_tokens(rate(1, 3000));
    let deadline = Instant::now() + Duration::from_millis(800);
    let workers: Vec<_> = (0..16)
        .map(|i| {
            let l = Arc::clone(if i % 2 == 0 { &a } else { &b });
            tokio::spawn(async move {
                let mut admitted = 0u64;
                while Instant::now() < deadline {
                    if let Decision::Admitted(r) = l
                        .admit(Admission::new("org_a", q).with_tokens(200))
                        .await
                        .unwrap()
                    {
                        admitted += 1;
                        l.settle(r, 50).await.unwrap(); // 150 refunded each time
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                admitted
            })
        })
        .collect();
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    assert_eq!(
        total, 30,
        "the request limit is shared, with room in the shared token bucket"
    );
    let r = admitted(&a, Admission::new("org_b", tokens(3000)).with_tokens(1000)).await;
    drop(r);
    let seen = denied(&b, Admission::new("org_b", tokens(3000)).with_tokens(2001)).await;
    assert_eq!(
        remaining(&seen.snapshot),
        (None, Some(2000)),
        "replica b sees replica a's reservation"
    );
    delete_keys(&prefix).await;
}

// ---------------------------------------------------------------------------------------------
// Redis only: the failure policy, against a private redis-server (killed and restarted)

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

async fn wait_until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn fail_open(primary: RedisLimiter) -> FailoverLimiter<RedisLimiter> {
    let config = FailoverConfig {
        policy: FailPolicy::Open,
        retry_interval: Duration::from_millis(100),
    };
    FailoverLimiter::new(primary, MemoryLimiter::new(), config)
}

/// Redis dies mid-traffic: requests keep being answered (by each replica's own limiter), no
/// error surfaces, the degraded flag is set; Redis comes back on the same port (empty, without
/// its scripts): the flag clears and the two replicas share one limit again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_open_then_shared_limiting_resumes() {
    let mut redis = RedisServer::start().await.unwrap();
    let config = RedisConfig {
        command_timeout: Duration::from_secs(2),
        ..test_config("outage")
    };
    let a = Arc::new(fail_open(
        RedisLimiter::connect(&redis.url(), config.clone())
            .await
            .unwrap(),
    ));
    let b = Arc::new(fail_open(
        RedisLimiter::connect(&redis.url(), config).await.unwrap(),
    ));
    let traffic = Quota::unlimited()
        .with_requests(rate(60_000, 1_000))
        .with_tokens(rate(600_000, 100_000));

    let stop = Arc::new(AtomicBool::new(false));
    let admitted = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (a, stop, admitted, errors) = (
                Arc::clone(&a),
                Arc::clone(&stop),
                Arc::clone(&admitted),
                Arc::clone(&errors),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    match a
                        .admit(Admission::new("org_traffic", traffic).with_tokens(50))
                        .await
                    {
                        Ok(Decision::Admitted(r)) => {
                            admitted.fetch_add(1, Ordering::SeqCst);
                            if a.settle(r, 10).await.is_err() {
                                errors.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Ok(Decision::Denied(_)) => {}
                        Err(_) => {
                            errors.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect();

    wait_until(
        "traffic flows through Redis",
        Duration::from_secs(20),
        async || admitted.load(Ordering::SeqCst) > 20,
    )
    .await;
    assert!(!a.is_degraded());
    redis.kill();
    wait_until("replica a notices", Duration::from_secs(20), async || {
        a.is_degraded()
    })
    .await;
    let during = admitted.load(Ordering::SeqCst);
    wait_until("the fallback admits", Duration::from_secs(20), async || {
        admitted.load(Ordering::SeqCst) > during + 20
    })
    .await;
    assert!(a.is_degraded(), "Redis is still away");

    redis.restart().await.unwrap();
    wait_until("replica a recovers", Duration::from_secs(30), async || {
        !a.is_degraded()
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(
        errors.load(Ordering::SeqCst),
        0,
        "an error reached the caller"
    );

    // Replica b saw no traffic during the outage; let its client reconnect too.
    let probe = Quota::unlimited().with_requests(rate(60_000, 60_000));
    wait_until(
        "replica b talks to Redis",
        Duration::from_secs(30),
        async || b.admit(Admission::new("org_probe", probe)).await.is_ok() && !b.is_degraded(),
    )
    .await;
    for _ in 0..3 {
        admitted_dyn(&*a, Admission::new("org_shared", requests(3))).await;
    }
    let d = denied(&*b, Admission::new("org_shared", requests(3))).await;
    assert_eq!(d.exceeded, Exceeded::Requests);
    assert!(
        !a.is_degraded() && !b.is_degraded(),
        "both answers came from Redis"
    );
}

async fn admitted_dyn(l: &dyn Limiter, a: Admission<'_>) -> Reservation {
    admitted(l, a).await
}

/// Redis lost its script cache (`SCRIPT FLUSH`, as after a restart): the next check falls back
/// from `EVALSHA` to `EVAL` and succeeds, with the bucket state intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_script_cache_is_reloaded() {
    let redis = RedisServer::start().await.unwrap();
    let l = RedisLimiter::connect(&redis.url(), test_config("flush"))
        .await
        .unwrap();
    admitted(&l, Admission::new("org_a", requests(2))).await;
    let () = l.client().script_flush(false).await.unwrap();
    let r = admitted(&l, Admission::new("org_a", requests(2))).await;
    assert_eq!(remaining(r.snapshot()), (Some(0), None));
    let exists: bool = l
        .client()
        .script_exists::<Vec<bool>, _>(vec![sha_of_loaded(&l).await])
        .await
        .unwrap()[0];
    assert!(exists, "EVAL put the script back in the cache");
}

/// The SHA-1 Redis gives the script (loading it again is idempotent).
async fn sha_of_loaded(l: &RedisLimiter) -> String {
    let scripts: Vec<String> = l
        .client()
        .custom(
            CustomCommand::new_static("SCRIPT", None::<u16>, false),
            vec!["LOAD", include_str!("../src/gcra.lua")],
        )
        .await
        .map(|sha: String| vec![sha])
        .unwrap();
    scripts[0].clone()
}

/// Fail-closed: with Redis unreachable a check is an error, not an admission, and the replica
/// reports itself degraded. `connect` to the same address gives up within its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_refuses_while_redis_is_unreachable() {
    let url = format!("redis://127.0.0.1:{}", free_port());
    let config = RedisConfig {
        connect_timeout: Duration::from_millis(300),
        ..test_config("closed")
    };
    assert!(matches!(
        RedisLimiter::connect(&url, config.clone()).await,
        Err(Error::Unavailable(_))
    ));
    let primary = RedisLimiter::connect_lazy(&url, config).unwrap();
    let closed = FailoverConfig {
        policy: FailPolicy::Closed,
        ..FailoverConfig::default()
    };
    let l = FailoverLimiter::new(primary, MemoryLimiter::new(), closed);
    for _ in 0..3 {
        assert!(matches!(
            l.admit(Admission::new("org_a", Quota::default())).await,
            Err(Error::Unavailable(_))
        ));
    }
    assert!(l.is_degraded());
    assert_eq!(l.fallback().tracked_keys(), 0);
}

/// Fail-open is visible in metrics: every check the fallback answered is counted, and the
/// degraded gauge is 1.
#[test]
fn fail_open_is_counted_in_metrics() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let url = format!("redis://127.0.0.1:{}", free_port());
            let l = fail_open(RedisLimiter::connect_lazy(&url, test_config("metrics")).unwrap());
            for _ in 0..3 {
                admitted(&l, Admission::new("org_a", requests(5))).await;
            }
            assert!(l.is_degraded());
        });
    });
    let text = handle.render();
    assert_eq!(
        metric(&text, "cognitude_ratelimit_fallback_checks_total"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "cognitude_ratelimit_degraded"),
        Some(1.0),
        "{text}"
    );
    assert!(
        metric(&text, "cognitude_ratelimit_backend_errors_total") >= Some(1.0),
        "{text}"
    );
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
