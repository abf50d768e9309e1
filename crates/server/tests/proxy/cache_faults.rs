//! Shared cache tiers failing under a running proxy: Redis killed and started again mid-load,
//! PostgreSQL answering far slower than its timeout. A sick tier must never fail a request nor
//! hold one past the tier's timeout, must show in `/health`, and must come back by itself.
//!
//! Each test runs two proxy instances on one SQLite database (so they share organizations and
//! keys) and one shared tier, as two replicas would. An instance's in-process tier has never
//! seen the other's answers, so when it answers a prompt only the other has asked before, the
//! answer came from the shared tier: that is how the tests know Redis or PostgreSQL is really in
//! the path, with the memory tier left as configured in production.

use std::sync::atomic::{AtomicUsize, Ordering};

use cognitude_testkit::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// Redis is killed while clients send new and repeated prompts, streamed and not, to both
/// instances, and started again (empty) a moment later. Nobody tells the proxy.
#[tokio::test(flavor = "multi_thread")]
async fn redis_killed_mid_load_fails_no_request_and_the_tier_comes_back() {
    const TENANTS: usize = 6;
    const ROUNDS: usize = 20;
    let mut redis = RedisServer::start().await.unwrap();
    let shared = temp_dir();
    let db_url = format!("sqlite://{}/shared.db", shared.display());
    // Not the 50 ms default: on a busy two-core machine that can trip the breaker while Redis
    // is fine, and this test is about Redis going away, not about slow answers.
    let extra = format!(
        "{DEFAULT_EXTRA}\n[cache]\nredis_url = \"{}\"\nredis_timeout_ms = 250",
        redis.url()
    );
    let a = Arc::new(
        Harness::build(
            MockConfig::default(),
            DEFAULT_UPSTREAM,
            &extra,
            Some(&db_url),
        )
        .await,
    );
    let b = Arc::new(replica(&a, &extra, &db_url).await);
    let own = format!("Bearer {}", a.key);

    // Redis is in the path: what A stores there, B finds.
    redis_round_trip(&a, &b, &redis, "before the kill").await;

    // Each tenant, round i: a new prompt to A (a miss, stored in A's memory and in Redis), the
    // previous one again to A (A's memory), and the one before that to B (Redis, while it is up
    // and still holds it; otherwise a miss). Under 60 requests per organization.
    let rounds_done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for t in 0..TENANTS {
        let (_, auth) = tenant(&a, &format!("redis load {t}")).await;
        let (a, b, rounds_done) = (a.clone(), b.clone(), rounds_done.clone());
        workers.push(tokio::spawn(async move {
            let prompt = |i: usize| format!("tenant {t} asks question {i}");
            let mut outcomes = Vec::new();
            for i in 0..ROUNDS {
                outcomes.push(send(&a, &auth, &prompt(i), i % 2 == 1).await);
                if i >= 1 {
                    outcomes.push(send(&a, &auth, &prompt(i - 1), i % 3 == 0).await);
                }
                if i >= 2 {
                    outcomes.push(send(&b, &auth, &prompt(i - 2), i % 2 == 0).await);
                }
                rounds_done.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            outcomes
        }));
    }

    while rounds_done.load(Ordering::SeqCst) < TENANTS * ROUNDS / 4 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    redis.kill();
    // Both instances notice on their own and open the tier's circuit while the load goes on.
    for h in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let cache = cache_health(h).await;
            if cache["status"] == "degraded" && tier(&cache, "redis")["state"] == "degraded" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Redis is down but /health says {cache}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart().await.unwrap();
    let restarted = Instant::now();
    let rounds_at_restart = rounds_done.load(Ordering::SeqCst);

    let mut outcomes = Vec::new();
    for w in workers {
        outcomes.extend(w.await.unwrap());
    }
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.is_correct()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:#?}",
        failed.len(),
        outcomes.len()
    );
    let served = |status: &str| outcomes.iter().filter(|o| o.cache == status).count();
    let (redis_hits, memory_hits, misses) =
        (served("hit-redis"), served("hit-memory"), served("miss"));
    assert!(
        redis_hits > 0 && memory_hits > 0 && misses > 0,
        "hit-redis {redis_hits}, hit-memory {memory_hits}, miss {misses} of {}",
        outcomes.len()
    );
    assert!(
        rounds_at_restart < TENANTS * ROUNDS,
        "the load ended before Redis came back; the test no longer covers the restart"
    );

    // After the cool-down, the next lookup that reaches the tier probes Redis, which answers:
    // each instance is healthy again with no operator. A new prompt misses the memory tier, so
    // its lookup goes on to Redis.
    let deadline = restarted + Duration::from_secs(15);
    let mut probes = 0;
    for h in [&a, &b] {
        loop {
            let cache = cache_health(h).await;
            if cache["status"] == "up" && tier(&cache, "redis")["state"] == "up" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Redis is back for {:?} but /health says {cache}",
                restarted.elapsed()
            );
            probes += 1;
            let probe = send(h, &own, &format!("probe {probes}"), false).await;
            assert!(probe.is_correct(), "{probe:?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    redis_round_trip(&a, &b, &redis, "after the restart").await;

    let (Ok(a), Ok(b)) = (Arc::try_unwrap(a), Arc::try_unwrap(b)) else {
        panic!("an instance is still shared");
    };
    a.stop().await;
    b.stop().await;
    drop(redis);
    let _ = std::fs::remove_dir_all(&shared);
}

/// PostgreSQL answers two seconds late (through a relay) with a 100 ms tier timeout: requests
/// are answered without waiting for it, the tier is reported and skipped, and it is used again
/// once PostgreSQL is fast again.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_postgres_tier_never_holds_a_request_and_comes_back() {
    const TIMEOUT: Duration = Duration::from_millis(100);
    const DELAY: Duration = Duration::from_secs(2);
    let db = TestDatabase::create().await.unwrap();
    // The server creates the tier's table itself, at start, on a database that has none.
    let relay = Relay::start(TestDatabase::server_addr()).await;
    let shared = temp_dir();
    let db_url = format!("sqlite://{}/shared.db", shared.display());
    let extra = format!(
        "{DEFAULT_EXTRA}\n[cache]\npostgres_url = \"{}\"\npostgres_timeout_ms = {}",
        db.url_via(&relay),
        TIMEOUT.as_millis()
    );
    let a = Harness::build(
        MockConfig::default(),
        DEFAULT_UPSTREAM,
        &extra,
        Some(&db_url),
    )
    .await;
    let b = replica(&a, &extra, &db_url).await;
    let own = format!("Bearer {}", a.key);

    postgres_round_trip(&a, &b, "before the delay").await;

    relay.set_delay(DELAY);
    let (_, auth) = tenant(&a, "postgres slow").await;
    let mut outcomes = Vec::new();
    for i in 0..8 {
        // New to A, then new to B: each lookup goes on to PostgreSQL until its circuit opens.
        // Then the same prompt to A again: its memory tier.
        let prompt = format!("asked while PostgreSQL is slow {i}");
        outcomes.push(send(&a, &auth, &prompt, i % 2 == 0).await);
        outcomes.push(send(&b, &auth, &prompt, i % 2 == 1).await);
        outcomes.push(send(&a, &auth, &prompt, false).await);
    }
    for o in &outcomes {
        assert!(o.is_correct(), "{o:?}");
        // Generous on purpose: the point is that nobody waits out the delay.
        assert!(
            o.elapsed < TIMEOUT + Duration::from_secs(1),
            "a request waited on the slow tier: {o:?}"
        );
    }
    for h in [&a, &b] {
        let cache = cache_health(h).await;
        let pg = tier(&cache, "postgres");
        assert_eq!(cache["status"], "degraded", "{cache}");
        assert_eq!(pg["state"], "degraded", "{cache}");
        assert!(pg["timeouts"].as_u64().unwrap() >= 3, "{cache}");
        assert!(pg["skipped"].as_u64().unwrap() >= 1, "{cache}");
    }

    relay.set_delay(Duration::ZERO);
    let fast_again = Instant::now();
    let deadline = fast_again + Duration::from_secs(15);
    let mut probes = 0;
    for h in [&a, &b] {
        loop {
            let cache = cache_health(h).await;
            if cache["status"] == "up" && tier(&cache, "postgres")["state"] == "up" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL is fast again for {:?} but /health says {cache}",
                fast_again.elapsed()
            );
            probes += 1;
            let probe = send(h, &own, &format!("probe {probes}"), false).await;
            assert!(probe.is_correct(), "{probe:?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    postgres_round_trip(&a, &b, "after the delay").await;

    a.stop().await;
    b.stop().await;
    drop(relay);
    db.drop_db().await;
    let _ = std::fs::remove_dir_all(&shared);
}

// ---- helpers ------------------------------------------------------------------------------

/// One chat completion as the client saw it.
#[derive(Debug)]
struct Outcome {
    prompt: String,
    #[expect(dead_code, reason = "read in failure messages, through Debug")]
    stream: bool,
    status: u16,
    /// `x-cognitude-cache`.
    cache: String,
    /// The answer's text, or what came back instead.
    text: String,
    elapsed: Duration,
}

impl Outcome {
    /// A 200 carrying the mock's answer to this very prompt, as a whole stream when streamed.
    fn is_correct(&self) -> bool {
        self.status == 200 && self.text == format!("Hello from mock-llm. You said: {}", self.prompt)
    }
}

/// Sends `prompt` to `h` as the key in `auth`; never panics on a failed request, so a test can
/// report every failure at once.
async fn send(h: &Harness, auth: &str, prompt: &str, stream: bool) -> Outcome {
    let body = if stream {
        stream_chat("gpt-4o-mini", prompt, false)
    } else {
        chat("gpt-4o-mini", prompt)
    };
    let req = http::Request::post(h.url("/v1/chat/completions"))
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
        .unwrap();
    let started = Instant::now();
    let result = async {
        let resp = h.client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let cache = resp
            .headers()
            .get("x-cognitude-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((status, cache, bytes))
    }
    .await;
    let elapsed = started.elapsed();
    let (status, cache, text) = match result {
        Ok((200, cache, bytes)) => (200, cache, answer_text(&bytes, stream)),
        Ok((status, cache, bytes)) => (status, cache, String::from_utf8_lossy(&bytes).into()),
        Err(e) => (0, String::new(), e),
    };
    Outcome {
        prompt: prompt.to_owned(),
        stream,
        status,
        cache,
        text,
        elapsed,
    }
}

/// The text of a completion, or of a stream that ended with `[DONE]`; otherwise a description
/// that matches no answer.
fn answer_text(bytes: &[u8], stream: bool) -> String {
    let raw = || String::from_utf8_lossy(bytes).into_owned();
    if !stream {
        return serde_json::from_slice::<Value>(bytes)
            .ok()
            .and_then(|v| {
                v["choices"][0]["message"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| format!("not a completion: {}", raw()));
    }
    let mut decoder = SseDecoder::default();
    if decoder.push(bytes).is_err() {
        return format!("not an event stream: {}", raw());
    }
    let events: Vec<SseEvent> = std::iter::from_fn(|| decoder.next_event()).collect();
    if !events.last().is_some_and(|e| e.is_done()) {
        return format!("a stream without [DONE]: {}", raw());
    }
    streamed_text(&chunks_before_done(&events))
}

/// A second instance on the same database: the same organization, a key of its own.
async fn replica(first: &Harness, extra: &str, db_url: &str) -> Harness {
    let second = Harness::build(MockConfig::default(), DEFAULT_UPSTREAM, extra, Some(db_url)).await;
    assert_eq!(second.org_id, first.org_id);
    second
}

/// A new organization and an `authorization` value for a key of it. Spreading a test's load
/// over several keeps each organization well under a per-organization request limit.
async fn tenant(h: &Harness, name: &str) -> (String, String) {
    let org = h.state.store().create_org(name).await.unwrap();
    let key = h.state.store().create_key(&org.id, "load").await.unwrap();
    (org.id, format!("Bearer {}", key.secret))
}

/// The cache's part of `/health`.
async fn cache_health(h: &Harness) -> Value {
    let resp = h.request("GET", "/health", &[], Vec::new()).await;
    body_json(resp).await["components"]["cache"].clone()
}

/// One tier's line in the cache's health.
fn tier(cache: &Value, kind: &str) -> Value {
    cache["tiers"]
        .as_array()
        .and_then(|tiers| tiers.iter().find(|t| t["tier"] == kind))
        .cloned()
        .unwrap_or_else(|| panic!("no {kind} tier in {cache}"))
}

/// A new tenant's prompt answered by A (a miss, which A writes to Redis in the background),
/// found in the private Redis, then answered by B from Redis.
async fn redis_round_trip(a: &Harness, b: &Harness, redis: &RedisServer, when: &str) {
    let (org, auth) = tenant(a, &format!("redis round trip {when}")).await;
    let prompt = format!("a prompt {when}");
    let stored = send(a, &auth, &prompt, false).await;
    assert!(stored.is_correct() && stored.cache == "miss", "{stored:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis_keys_of(redis.port(), &org).await == 0 {
        assert!(Instant::now() < deadline, "A never wrote {when} to Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hit = send(b, &auth, &prompt, true).await;
    assert!(hit.is_correct(), "{hit:?}");
    assert_eq!(hit.cache, "hit-redis", "{when}: {hit:?}");
}

/// How many keys of `org` the Redis on `port` holds, asked directly (not through a proxy).
async fn redis_keys_of(port: u16, org: &str) -> usize {
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    conn.write_all(format!("KEYS *:{org}:*\r\n").as_bytes())
        .await
        .unwrap();
    // The reply starts `*N\r\n`; N is all we need, and it arrives in the first read.
    let mut buf = vec![0u8; 4096];
    let n = conn.read(&mut buf).await.unwrap();
    let reply = String::from_utf8_lossy(&buf[..n]);
    reply
        .strip_prefix('*')
        .and_then(|r| r.split("\r\n").next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("KEYS answered {reply:?}"))
}

/// A new tenant's prompt answered by A (a miss, which A writes to PostgreSQL in the
/// background), then by B from PostgreSQL. A's write may time out on a loaded machine (a fresh
/// pooled connection, say), so a few prompts are tried before giving up.
async fn postgres_round_trip(a: &Harness, b: &Harness, when: &str) {
    let (_, auth) = tenant(a, &format!("postgres round trip {when}")).await;
    let mut seen = Vec::new();
    for attempt in 0..5 {
        let prompt = format!("a prompt {when}, attempt {attempt}");
        let stored = send(a, &auth, &prompt, false).await;
        assert!(stored.is_correct(), "{stored:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let hit = send(b, &auth, &prompt, true).await;
        assert!(hit.is_correct(), "{hit:?}");
        if hit.cache == "hit-postgres" {
            return;
        }
        seen.push(hit.cache);
    }
    panic!("{when}: B never found A's answer in PostgreSQL: {seen:?}");
}
