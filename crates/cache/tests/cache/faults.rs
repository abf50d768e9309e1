//! Fault tests: a private Redis killed under load, a PostgreSQL made slow by a relay. The shared
//! services are never touched.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cognitude_cache::{
    BackendKind, Cache, MemoryCache, RedisCache, RedisConfig, TierOptions, TierState, TieredCache,
};

use cognitude_testkit::{RedisServer, Relay, TestDatabase};

use crate::support::{
    database_url, eventually, key, postgres_backend, response, unique, with_host_port, with_schema,
};

const MINUTE: Duration = Duration::from_secs(60);

fn tier(timeout: Duration, cool_down: Duration) -> TierOptions {
    let mut o = TierOptions::new(timeout);
    o.failure_threshold = 3;
    o.cool_down = cool_down;
    o
}

/// What the load saw.
#[derive(Default)]
struct Load {
    ops: AtomicU64,
    /// A stored entry not found again, or a lookup of a never-stored key that hit.
    wrong: AtomicU64,
    slowest_us: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_load_memory_keeps_answering_and_redis_comes_back_by_itself() {
    let mut server = RedisServer::start().await.unwrap();
    let mut config = RedisConfig::new(server.url());
    config.key_prefix = unique("fault");
    config.reconnect_delay = Duration::from_millis(50);
    config.command_timeout = Duration::from_millis(500);
    let redis = Arc::new(RedisCache::connect(config).await.unwrap());
    let memory_timeout = Duration::from_millis(100);
    let redis_timeout = Duration::from_millis(100);
    let tiered = Arc::new(TieredCache::new([
        (
            Arc::new(MemoryCache::new(64 << 20)) as Arc<dyn Cache>,
            tier(memory_timeout, Duration::from_millis(300)),
        ),
        (
            redis.clone() as Arc<dyn Cache>,
            tier(redis_timeout, Duration::from_millis(300)),
        ),
    ]));

    // Healthy: a store reaches Redis.
    let before = key("org_fault", "before the outage");
    tiered.store(&before, response("b"), MINUTE).await;
    tiered.settle().await;
    assert!(redis.get(&before).await.unwrap().is_some());

    let load = Arc::new(Load::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (tiered, load, stop) = (tiered.clone(), load.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let started = Instant::now();
                let k = key("org_fault", &format!("w{w} request {i}"));
                tiered.store(&k, response("r"), MINUTE).await;
                let found = tiered.lookup(&k).await;
                // A miss goes through every tier, Redis included.
                let absent = tiered
                    .lookup(&key("org_fault", &format!("w{w} absent {i}")))
                    .await;
                if found.is_none() || absent.is_some() {
                    load.wrong.fetch_add(1, Ordering::Relaxed);
                }
                let us = started.elapsed().as_micros() as u64;
                load.slowest_us.fetch_max(us, Ordering::Relaxed);
                load.ops.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    server.kill();
    let ops_at_kill = load.ops.load(Ordering::Relaxed);
    eventually(Duration::from_secs(15), "the Redis circuit opens", || {
        let state = tiered.tier_health()[1].state;
        async move { state != TierState::Up }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let skipped = tiered.tier_health()[1].skipped;
    assert!(skipped > 0, "no call was skipped while Redis was down");
    assert!(
        load.ops.load(Ordering::Relaxed) > ops_at_kill,
        "the load stalled"
    );

    server.restart().await.unwrap();
    // Recovery needs no call from the test to the backend: the tiered cache's own traffic
    // probes Redis and closes the circuit.
    let probe = key("org_fault", "after the outage");
    eventually(Duration::from_secs(30), "the tier is used again", || {
        let (tiered, redis, probe) = (tiered.clone(), redis.clone(), probe.clone());
        async move {
            tiered.store(&probe, response("a"), MINUTE).await;
            tiered.settle().await;
            tiered.tier_health()[1].state == TierState::Up
                && matches!(redis.get(&probe).await, Ok(Some(_)))
        }
    })
    .await;

    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let wrong = load.wrong.load(Ordering::Relaxed);
    let slowest = Duration::from_micros(load.slowest_us.load(Ordering::Relaxed));
    assert_eq!(wrong, 0, "requests answered wrongly during the outage");
    // Per iteration: a store and two lookups, each bounded by the tiers' timeouts. The bound is
    // loose on purpose: the point is "bounded", not fast.
    let bound = (memory_timeout + redis_timeout) * 3 * 5;
    assert!(
        slowest < bound,
        "an operation waited {slowest:?} (bound {bound:?})"
    );
    redis.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_postgres_never_delays_a_lookup_past_its_timeout() {
    with_schema(slow_postgres).await;
}

async fn slow_postgres(schema: String) {
    let relay = Relay::start(TestDatabase::server_addr()).await;
    let via_relay = with_host_port(&database_url(), &relay.addr().to_string());
    let pg = postgres_backend(&via_relay, &schema).await;
    let pg_timeout = Duration::from_millis(200);
    let tiered = TieredCache::new([
        (
            Arc::new(MemoryCache::new(64 << 20)) as Arc<dyn Cache>,
            tier(Duration::from_millis(100), Duration::from_secs(2)),
        ),
        (
            pg.clone() as Arc<dyn Cache>,
            tier(pg_timeout, Duration::from_secs(2)),
        ),
    ]);
    let warm = key("org_slow", "warm");
    tiered.store(&warm, response("w"), MINUTE).await;
    tiered.settle().await;
    assert!(
        pg.get(&warm).await.unwrap().is_some(),
        "the relay passes traffic"
    );

    relay.set_delay(Duration::from_secs(3));
    for i in 0..3 {
        let started = Instant::now();
        let miss = tiered
            .lookup(&key("org_slow", &format!("absent {i}")))
            .await;
        let waited = started.elapsed();
        assert!(miss.is_none());
        // Loose on purpose: the point is "bounded by the timeout", not fast.
        assert!(waited < pg_timeout * 5, "lookup {i} waited {waited:?}");
        // The memory tier still answers what it holds.
        let hit = tiered.lookup(&warm).await.unwrap();
        assert_eq!(hit.tier, BackendKind::Memory);
    }
    let health = tiered.tier_health()[1].clone();
    assert_eq!(health.state, TierState::Degraded);
    assert_eq!(health.timeouts, 3, "{health:?}");
    // Open circuit: PostgreSQL is not even asked.
    assert!(
        tiered
            .lookup(&key("org_slow", "while open"))
            .await
            .is_none()
    );
    let after = tiered.tier_health()[1].clone();
    assert_eq!((after.timeouts, after.skipped), (3, health.skipped + 1));

    relay.set_delay(Duration::ZERO);
    let cold = key("org_slow", "stored while slow");
    // Written straight to PostgreSQL; the tiered cache finds it once its probe succeeds.
    eventually(
        Duration::from_secs(30),
        "PostgreSQL answers through the relay",
        || {
            let (pg, cold) = (pg.clone(), cold.clone());
            async move { pg.put(&cold, response("c"), MINUTE).await.is_ok() }
        },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the PostgreSQL tier is used again",
        || {
            let hit = tiered.lookup(&cold);
            async move { hit.await.is_some_and(|h| h.tier == BackendKind::Postgres) }
        },
    )
    .await;
    assert_eq!(tiered.tier_health()[1].state, TierState::Up);
}
