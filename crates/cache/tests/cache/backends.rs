//! What only one backend does: Redis key layout, TTL and compression; PostgreSQL rows, purge
//! and migrations; the tiered cache over the real services.

use std::sync::Arc;
use std::time::Duration;

use cognitude_cache::{BackendKind, Cache, CacheKey, PostgresCache, PostgresConfig, TierState};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Bool, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use fred::prelude::{Builder, ClientLike, Config, KeysInterface};

use cognitude_cache::{RedisCache, RedisConfig};
use cognitude_testkit::{RedisServer, Relay, TestDatabase};

use crate::support::{
    Kind, database_url, eventually, key, postgres_backend, redis_url, response, unique,
    with_fixture, with_host_port, with_schema,
};

const MINUTE: Duration = Duration::from_secs(60);

async fn raw_redis() -> fred::prelude::Client {
    let client = Builder::from_config(Config::from_url(&redis_url()).unwrap())
        .build()
        .unwrap();
    client.init().await.unwrap();
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keys_are_prefix_org_hash_with_ttl_and_large_values_compressed() {
    with_fixture(Kind::Redis, |f| async move {
        let redis = f.redis.unwrap();
        let raw = raw_redis().await;
        let org = unique("org");
        let small = key(&org, "small");
        let large = key(&org, "large");
        redis.put(&small, response("tiny"), MINUTE).await.unwrap();
        let essay: String = (0..5_000).map(|i| format!("token{} ", i % 50)).collect();
        let big = response(&essay);
        redis.put(&large, big.clone(), MINUTE).await.unwrap();

        let name = redis.redis_key(&small);
        assert!(name.ends_with(&format!(":{org}:{}", small.hex())), "{name}");
        let ttl: i64 = raw.ttl(name.clone()).await.unwrap();
        assert!((50..=60).contains(&ttl), "TTL {ttl}");

        let small_raw: Vec<u8> = raw.get(name).await.unwrap();
        assert_eq!(small_raw[0], 0, "small values are stored as is");
        let large_raw: Vec<u8> = raw.get(redis.redis_key(&large)).await.unwrap();
        assert_eq!(large_raw[0], 1, "large values are LZ4-compressed");
        let json_len = serde_json::to_vec(&*big).unwrap().len();
        assert!(
            large_raw.len() < json_len / 3,
            "{} vs {json_len}",
            large_raw.len()
        );
        assert_eq!(*redis.get(&large).await.unwrap().unwrap().response, *big);

        let stats = redis.stats().await.unwrap();
        assert!(
            stats.entries.unwrap() >= 2 && stats.bytes.unwrap() > 0,
            "{stats:?}"
        );
        assert!(stats.server_hits.is_some() && stats.server_misses.is_some());
        raw.quit().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_clear_org_spares_an_org_whose_id_extends_it() {
    with_fixture(Kind::Redis, |f| async move {
        let redis = f.redis.unwrap();
        let base = unique("org");
        let (a, a_colon) = (base.clone(), format!("{base}:b"));
        redis
            .put(&key(&a, "p"), response("a"), MINUTE)
            .await
            .unwrap();
        redis
            .put(&key(&a_colon, "p"), response("a:b"), MINUTE)
            .await
            .unwrap();
        assert_eq!(redis.clear_org(&a).await.unwrap(), 1);
        assert!(redis.get(&key(&a_colon, "p")).await.unwrap().is_some());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_corrupt_or_foreign_values_are_misses_not_errors() {
    with_fixture(Kind::Redis, |f| async move {
        let redis = f.redis.unwrap();
        let raw = raw_redis().await;
        let org = unique("org");
        let k = key(&org, "p");
        let () = raw
            .set(
                redis.redis_key(&k),
                b"\x00{broken".to_vec(),
                None,
                None,
                false,
            )
            .await
            .unwrap();
        assert!(redis.get(&k).await.unwrap().is_none());

        // Another org's envelope copied under this org's key is refused.
        let other = key(&unique("org"), "p");
        redis.put(&other, response("other"), MINUTE).await.unwrap();
        let stolen: Vec<u8> = raw.get(redis.redis_key(&other)).await.unwrap();
        let () = raw
            .set(redis.redis_key(&k), stolen, None, None, false)
            .await
            .unwrap();
        assert!(redis.get(&k).await.unwrap().is_none());
        raw.quit().await.unwrap();
    })
    .await;
}

#[derive(QueryableByName, Debug)]
struct Row {
    #[diesel(sql_type = Text)]
    org: String,
    #[diesel(sql_type = BigInt)]
    hit_count: i64,
    #[diesel(sql_type = Bool)]
    has_last_hit: bool,
    #[diesel(sql_type = Bool)]
    live: bool,
}

async fn row(schema: &str, k: &CacheKey) -> Row {
    let mut conn = AsyncPgConnection::establish(&database_url()).await.unwrap();
    diesel::sql_query(format!(
        "SELECT org, hit_count, last_hit IS NOT NULL AS has_last_hit, expires > now() AS live \
         FROM \"{schema}\".cache_entries WHERE key_hash = $1"
    ))
    .bind::<diesel::sql_types::Bytea, _>(k.digest().as_slice())
    .get_result(&mut conn)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rows_keep_org_expiry_and_count_hits() {
    with_fixture(Kind::Postgres, |f| async move {
        let pg = f.postgres.unwrap();
        let org = unique("org");
        let k = key(&org, "p");
        pg.put(&k, response("x"), MINUTE).await.unwrap();
        let r = row(pg.schema(), &k).await;
        assert_eq!(
            (r.org.as_str(), r.hit_count, r.has_last_hit, r.live),
            (org.as_str(), 0, false, true)
        );
        pg.get(&k).await.unwrap().unwrap();
        pg.get(&k).await.unwrap().unwrap();
        let r = row(pg.schema(), &k).await;
        assert_eq!((r.hit_count, r.has_last_hit), (2, true));
        let stats = pg.stats().await.unwrap();
        assert_eq!(stats.entries, Some(1));
        assert!(stats.bytes.unwrap() > 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_purge_deletes_expired_rows_only() {
    with_fixture(Kind::Postgres, |f| async move {
        let pg = f.postgres.unwrap();
        let org = unique("org");
        for i in 0..5 {
            pg.put(&key(&org, &format!("old {i}")), response("o"), MINUTE)
                .await
                .unwrap();
        }
        pg.put(&key(&org, "fresh"), response("f"), MINUTE)
            .await
            .unwrap();
        let mut conn = AsyncPgConnection::establish(&database_url()).await.unwrap();
        conn.batch_execute(&format!(
            "UPDATE \"{}\".cache_entries SET expires = now() - interval '1 second' \
             WHERE key_hash <> decode('{}', 'hex')",
            pg.schema(),
            key(&org, "fresh").hex()
        ))
        .await
        .unwrap();
        assert!(
            pg.get(&key(&org, "old 0")).await.unwrap().is_none(),
            "expired row served"
        );
        assert_eq!(pg.purge_expired().await.unwrap(), 5);
        assert_eq!(pg.stats().await.unwrap().entries, Some(1));
        assert!(pg.get(&key(&org, "fresh")).await.unwrap().is_some());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_purge_works_in_batches() {
    with_schema(|schema| async move {
        let mut config = PostgresConfig::new(database_url());
        config.schema = schema.clone();
        config.purge_batch = 2;
        let pg = PostgresCache::connect(config).await.unwrap();
        let org = unique("org");
        for i in 0..5 {
            let k = key(&org, &format!("{i}"));
            pg.put(&k, response("o"), MINUTE).await.unwrap();
        }
        let mut conn = AsyncPgConnection::establish(&database_url()).await.unwrap();
        conn.batch_execute(&format!(
            "UPDATE \"{schema}\".cache_entries SET expires = now() - interval '1 second'"
        ))
        .await
        .unwrap();
        assert_eq!(pg.purge_expired().await.unwrap(), 5);
        assert_eq!(pg.stats().await.unwrap().entries, Some(0));
    })
    .await;
}

/// The migration runs on a current-thread runtime too (plain `#[tokio::test]`), and running it
/// again on an existing schema changes nothing.
#[tokio::test]
async fn postgres_migration_is_idempotent_and_runs_on_a_current_thread_runtime() {
    with_schema(|schema| async move {
        let first = postgres_backend(&database_url(), &schema).await;
        let k = key(&unique("org"), "kept");
        first.put(&k, response("kept"), MINUTE).await.unwrap();
        let second = postgres_backend(&database_url(), &schema).await;
        assert!(
            second.get(&k).await.unwrap().is_some(),
            "a second connect lost the data"
        );
    })
    .await;
}

#[tokio::test]
async fn postgres_rejects_an_unsafe_schema_name_before_connecting() {
    let mut config = PostgresConfig::new("postgres://nowhere.invalid/db");
    config.schema = "x; DROP TABLE y".to_owned();
    let err = PostgresCache::connect(config).await.unwrap_err();
    assert!(err.to_string().contains("schema"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiered_hit_in_postgres_fills_redis_and_memory() {
    with_fixture(Kind::Tiered, |f| async move {
        let (tiered, memory, redis, pg) = (
            f.tiered.unwrap(),
            f.memory.unwrap(),
            f.redis.unwrap(),
            f.postgres.unwrap(),
        );
        let k = key(&unique("org"), "cold");
        pg.put(&k, response("from the cold tier"), MINUTE)
            .await
            .unwrap();

        let hit = tiered.lookup(&k).await.unwrap();
        assert_eq!(hit.tier, BackendKind::Postgres);
        assert_eq!(hit.status().as_str(), "hit-postgres");
        tiered.settle().await;
        assert!(memory.get(&k).await.unwrap().is_some());
        let in_redis = redis.get(&k).await.unwrap().unwrap();
        assert!(in_redis.ttl_left() <= MINUTE && in_redis.ttl_left() > Duration::from_secs(50));
        assert_eq!(tiered.lookup(&k).await.unwrap().tier, BackendKind::Memory);

        memory.delete(&k).await.unwrap();
        assert_eq!(tiered.lookup(&k).await.unwrap().tier, BackendKind::Redis);
        assert!(
            tiered
                .tier_health()
                .iter()
                .all(|h| h.state == TierState::Up)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiered_store_reaches_every_tier_and_stats_cover_each() {
    with_fixture(Kind::Tiered, |f| async move {
        let tiered = f.tiered.unwrap();
        let k = key(&unique("org"), "everywhere");
        tiered.store(&k, response("e"), MINUTE).await;
        tiered.settle().await;
        for backend in [
            f.memory.unwrap() as Arc<dyn Cache>,
            f.redis.unwrap(),
            f.postgres.unwrap(),
        ] {
            assert!(
                backend.get(&k).await.unwrap().is_some(),
                "{:?}",
                backend.kind()
            );
        }
        let stats = tiered.tier_stats().await;
        let tiers: Vec<_> = stats.iter().map(|s| s.tier).collect();
        assert_eq!(
            tiers,
            [
                BackendKind::Memory,
                BackendKind::Redis,
                BackendKind::Postgres
            ]
        );
        assert!(
            stats
                .iter()
                .all(|s| s.backend.is_some() && s.error.is_none()),
            "{stats:?}"
        );
        assert!(stats[2].backend.as_ref().unwrap().entries >= Some(1));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lazy_connect_starts_while_redis_is_away_and_connects_when_it_arrives() {
    let mut server = RedisServer::start().await.unwrap();
    server.kill();
    let mut config = RedisConfig::new(server.url());
    config.key_prefix = unique("lazy");
    config.reconnect_delay = Duration::from_millis(50);
    config.command_timeout = Duration::from_millis(300);
    let redis = Arc::new(RedisCache::connect_lazy(config).await.unwrap());
    assert!(redis.health().await.is_err(), "nothing listens yet");
    server.restart().await.unwrap();
    eventually(Duration::from_secs(20), "the lazy pool connects", || {
        let redis = redis.clone();
        async move { redis.health().await.is_ok() }
    })
    .await;
    let k = key(&unique("org"), "p");
    redis.put(&k, response("late"), MINUTE).await.unwrap();
    assert!(redis.get(&k).await.unwrap().is_some());
    redis.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lazy_connect_starts_while_postgres_is_away() {
    with_schema(|schema| async move {
        let mut direct = PostgresConfig::new(database_url());
        direct.schema = schema.clone();
        PostgresCache::migrate(&direct).await.unwrap();

        let relay = Relay::start(TestDatabase::server_addr()).await;
        relay.cut();
        let mut config =
            PostgresConfig::new(with_host_port(&database_url(), &relay.addr().to_string()));
        config.schema = schema;
        config.connect_timeout = Duration::from_millis(500);
        let pg = PostgresCache::connect_lazy(config).await.unwrap();
        assert!(
            pg.get(&key("org", "p")).await.is_err(),
            "a call while PostgreSQL is away is an error"
        );
        relay.restore();
        let k = key(&unique("org"), "p");
        pg.put(&k, response("late"), MINUTE).await.unwrap();
        assert!(pg.get(&k).await.unwrap().is_some());
    })
    .await;
}
