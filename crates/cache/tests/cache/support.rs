//! Fixtures: backends on the machine's services, each in a key prefix / schema of its own.
//! Private redis-servers and relays come from cognitude-testkit.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cognitude_cache::{
    Cache, CacheKey, CachedResponse, MemoryCache, PostgresCache, PostgresConfig, RedisCache,
    RedisConfig, TierOptions, TieredCache,
};
use cognitude_protocol::{ChatCompletion, ChatRequest};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A name no other test or run uses: letters, digits and `_`.
pub fn unique(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{tag}_{}_{nanos}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn request(prompt: &str) -> ChatRequest {
    serde_json::from_value(serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}],
        "temperature": 0
    }))
    .unwrap()
}

pub fn key(org: &str, prompt: &str) -> CacheKey {
    CacheKey::for_request(org, &request(prompt)).unwrap()
}

pub fn completion(text: &str) -> ChatCompletion {
    serde_json::from_value(serde_json::json!({
        "id": "chatcmpl-test", "object": "chat.completion", "created": 1_700_000_000u64,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop", "logprobs": null}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
    }))
    .unwrap()
}

pub fn response(text: &str) -> Arc<CachedResponse> {
    Arc::new(CachedResponse::new(
        completion(text),
        "gpt-4o-mini",
        "openai",
        2_500_000,
    ))
}

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Memory,
    Redis,
    Postgres,
    /// Memory → Redis → PostgreSQL.
    Tiered,
}

/// A backend under test and handles to what it is made of.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub cache: Arc<dyn Cache>,
    pub memory: Option<Arc<MemoryCache>>,
    pub redis: Option<Arc<RedisCache>>,
    pub postgres: Option<Arc<PostgresCache>>,
    pub tiered: Option<Arc<TieredCache>>,
}

pub async fn redis_backend() -> Arc<RedisCache> {
    let mut config = RedisConfig::new(redis_url());
    config.key_prefix = format!("cognitude-test:{}", unique("run"));
    Arc::new(RedisCache::connect(config).await.unwrap())
}

pub async fn postgres_backend(url: &str, schema: &str) -> Arc<PostgresCache> {
    let mut config = PostgresConfig::new(url);
    config.schema = schema.to_owned();
    Arc::new(PostgresCache::connect(config).await.unwrap())
}

pub async fn drop_schema(schema: &str) {
    let mut conn = AsyncPgConnection::establish(&database_url()).await.unwrap();
    conn.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await
        .unwrap();
}

/// Generous: the suite checks behaviour, not speed, on a loaded machine.
fn relaxed(timeout: Duration) -> TierOptions {
    let mut o = TierOptions::new(timeout);
    o.failure_threshold = 1000;
    o
}

/// Builds the backend, runs `body` on it, then removes its keys or schema, also when `body`
/// panics.
pub async fn with_fixture<F, Fut>(kind: Kind, body: F)
where
    F: FnOnce(Fixture) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let schema = matches!(kind, Kind::Postgres | Kind::Tiered).then(|| unique("cache_test"));
    let mut f = Fixture {
        cache: Arc::new(MemoryCache::new(1)),
        memory: None,
        redis: None,
        postgres: None,
        tiered: None,
    };
    if matches!(kind, Kind::Memory | Kind::Tiered) {
        let m = Arc::new(MemoryCache::new(256 << 20));
        f.cache = m.clone();
        f.memory = Some(m);
    }
    if matches!(kind, Kind::Redis | Kind::Tiered) {
        let r = redis_backend().await;
        f.cache = r.clone();
        f.redis = Some(r);
    }
    if let Some(schema) = &schema {
        let p = postgres_backend(&database_url(), schema).await;
        f.cache = p.clone();
        f.postgres = Some(p);
    }
    if matches!(kind, Kind::Tiered) {
        let t = Arc::new(TieredCache::new([
            (
                f.memory.clone().unwrap() as Arc<dyn Cache>,
                relaxed(Duration::from_secs(2)),
            ),
            (
                f.redis.clone().unwrap() as Arc<dyn Cache>,
                relaxed(Duration::from_secs(2)),
            ),
            (
                f.postgres.clone().unwrap() as Arc<dyn Cache>,
                relaxed(Duration::from_secs(5)),
            ),
        ]));
        f.cache = t.clone();
        f.tiered = Some(t);
    }
    let redis = f.redis.clone();
    let tiered = f.tiered.clone();
    let outcome = tokio::spawn(body(f)).await;
    if let Some(t) = tiered {
        t.settle().await;
    }
    if let Some(r) = redis {
        let _ = r.clear_all().await;
        r.close().await;
    }
    if let Some(schema) = schema {
        drop_schema(&schema).await;
    }
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Runs `body` with a fresh schema name, then drops the schema, also when `body` panics.
pub async fn with_schema<F, Fut>(body: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let schema = unique("cache_test");
    let outcome = tokio::spawn(body(schema.clone())).await;
    drop_schema(&schema).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Polls `check` every 50 ms until it holds; panics with `what` after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `host[:port]` segment of a `postgres://user@host:port/db` URL, as written.
fn raw_host_port(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap()
}

/// `url` with its `host:port` replaced.
pub fn with_host_port(url: &str, new: &str) -> String {
    url.replacen(raw_host_port(url), new, 1)
}
