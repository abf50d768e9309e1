//! Rate limits through the whole proxy: OpenAI's headers and 429s, limits shared by two
//! replicas through the machine's Redis, overrides reaching every replica, and the fallback
//! when a private Redis is taken away.

use super::*;

use cognitude_testkit::{RedisServer, unique};

/// These tests are about sharing, not failing over: on a loaded machine a check may wait for
/// Redis longer than the default timeout, and the replica would then (rightly) limit alone.
const PATIENT: &str = "redis_timeout_ms = 5000";

/// Two proxies on one PostgreSQL database and one Redis prefix, as two replicas would run.
struct Replicas {
    a: Harness,
    b: Harness,
    db: TestDatabase,
}

impl Replicas {
    async fn start(ratelimit: &str) -> Replicas {
        let db = TestDatabase::create().await.unwrap();
        let extra = format!("{DEFAULT_EXTRA}\n[ratelimit]\n{ratelimit}\n");
        let a = Harness::build(
            MockConfig::default(),
            DEFAULT_UPSTREAM,
            &extra,
            Some(&db.url),
        )
        .await;
        let b = Harness::build(
            MockConfig::default(),
            DEFAULT_UPSTREAM,
            &extra,
            Some(&db.url),
        )
        .await;
        Replicas { a, b, db }
    }

    async fn stop(self) {
        self.a.stop().await;
        self.b.stop().await;
        self.db.drop_db().await;
    }
}

/// Sends `body` as `key` to `h`; returns the status and the usage the response reported.
async fn send(h: &Harness, key: &str, body: &Value) -> (u16, u64) {
    let auth = format!("Bearer {key}");
    let resp = h
        .request(
            "POST",
            "/v1/chat/completions",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            serde_json::to_vec(body).unwrap(),
        )
        .await;
    let status = resp.status().as_u16();
    if status != 200 {
        let v = body_json(resp).await;
        assert_eq!(status, 429, "{v}");
        assert_eq!(v["error"]["code"], "rate_limit_exceeded", "{v}");
        assert!(
            v["error"]["type"] == "requests" || v["error"]["type"] == "tokens",
            "{v}"
        );
        return (status, 0);
    }
    let tokens = if body["stream"] == json!(true) {
        let events = sse_events(resp).await;
        let chunks = chunks_before_done(&events);
        let usage = chunks
            .iter()
            .rev()
            .find_map(|c| c.get("usage").filter(|u| !u.is_null()).cloned());
        usage.map_or(0, |u| u["total_tokens"].as_u64().unwrap())
    } else {
        body_json(resp).await["usage"]["total_tokens"]
            .as_u64()
            .unwrap()
    };
    (status, tokens)
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_and_429_are_what_openai_clients_expect() {
    let extra = format!("{DEFAULT_EXTRA}\n[ratelimit]\nrequests_per_minute = 3\n");
    let h = Harness::full(MockConfig::default(), DEFAULT_UPSTREAM, &extra).await;
    for remaining in [2, 1, 0] {
        let resp = h.post_json(&chat("gpt-4o-mini", "hi")).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-ratelimit-limit-requests"), "3");
        assert_eq!(
            header(&resp, "x-ratelimit-remaining-requests"),
            remaining.to_string()
        );
        assert!(header(&resp, "x-ratelimit-reset-requests").ends_with('s'));
        // No token limit configured: no token headers.
        assert!(resp.headers().get("x-ratelimit-limit-tokens").is_none());
    }
    let resp = h.post_json(&chat("gpt-4o-mini", "hi")).await;
    assert_eq!(resp.status(), 429);
    let retry: u64 = header(&resp, "retry-after").parse().unwrap();
    let retry_ms: u64 = header(&resp, "retry-after-ms").parse().unwrap();
    // One request refills in 20 s at 3 a minute.
    assert!((1..=20).contains(&retry), "{retry}");
    assert!(retry_ms > 0 && retry_ms <= 20_000, "{retry_ms}");
    assert_eq!(header(&resp, "x-ratelimit-remaining-requests"), "0");
    let v = body_json(resp).await;
    assert_eq!(v["error"]["type"], "requests");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("requests per min")
    );

    // A request too large for the token bucket can never fit: it says so.
    let (status, _) = h
        .admin(
            "PUT",
            &format!("/admin/orgs/{}/limits", h.org_id),
            json!({"requests_per_minute": 1000, "tokens_per_minute": 500}),
        )
        .await;
    assert_eq!(status, 200);
    let mut big = chat("gpt-4o-mini", "hi");
    big["max_tokens"] = json!(1000);
    let resp = h.post_json(&big).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(header(&resp, "x-ratelimit-limit-tokens"), "500");
    let v = body_json(resp).await;
    assert_eq!(v["error"]["type"], "tokens");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Request too large")
    );

    // Every refused request is in the ledger once, as a 429.
    let ledger = h.ledger().await;
    assert_eq!(ledger.len(), 5);
    assert_eq!(ledger.iter().filter(|r| r.status == 429).count(), 2);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_share_one_request_limit_under_200_clients() {
    let prefix = unique("rl");
    let r = Replicas::start(&format!(
        "requests_per_minute = 100\nredis_url = \"redis://127.0.0.1:6379\"\nredis_prefix = \"{prefix}\"\n{PATIENT}"
    ))
    .await;
    let key = r.a.key.clone();
    let started = Instant::now();
    let admitted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let r = Arc::new(r);
    let mut tasks = Vec::new();
    for client in 0..200 {
        let (r, key, admitted, refused) =
            (r.clone(), key.clone(), admitted.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            let h = if client % 2 == 0 { &r.a } else { &r.b };
            let mut n = 0;
            while started.elapsed() < Duration::from_secs(3) {
                let (status, _) =
                    send(h, &key, &chat("gpt-4o-mini", &format!("c{client} {n}"))).await;
                let counter = if status == 200 { &admitted } else { &refused };
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                n += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let admitted = admitted.load(std::sync::atomic::Ordering::SeqCst);
    let refused = refused.load(std::sync::atomic::Ordering::SeqCst);
    // Burst 100 plus what refills at 100 a minute while the clients ran. Held per replica, the
    // two would have admitted about twice that.
    let bound = 100.0 + 100.0 * elapsed / 60.0;
    assert!(
        (admitted as f64) <= bound.floor() + 1.0,
        "admitted {admitted} > {bound:.1} in {elapsed:.1}s"
    );
    assert!(admitted >= 100, "admitted only {admitted}");
    for h in [&r.a, &r.b] {
        let v = health(h).await;
        assert_eq!(v["components"]["ratelimit"]["status"], "up", "{v}");
    }
    assert!(refused > 0);
    let r = Arc::into_inner(r).unwrap();
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_share_one_token_limit_with_streams_settled_to_real_usage() {
    let prefix = unique("rl");
    let r = Replicas::start(&format!(
        "requests_per_minute = 0\ntokens_per_minute = 3000\nredis_url = \"redis://127.0.0.1:6379\"\nredis_prefix = \"{prefix}\"\n{PATIENT}"
    ))
    .await;
    let key = r.a.key.clone();
    let started = Instant::now();
    let used = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let admitted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let r = Arc::new(r);
    let mut tasks = Vec::new();
    for client in 0..200 {
        let (r, key, used, admitted) = (r.clone(), key.clone(), used.clone(), admitted.clone());
        tasks.push(tokio::spawn(async move {
            let h = if client % 2 == 0 { &r.a } else { &r.b };
            let mut n = 0;
            while started.elapsed() < Duration::from_secs(3) {
                // Reserves its prompt (about 10 tokens) + 150; uses a small fraction of that.
                let mut body =
                    stream_chat("gpt-4o-mini", &format!("client {client} asks {n}"), true);
                body["max_tokens"] = json!(150);
                let (status, tokens) = send(h, &key, &body).await;
                if status == 200 {
                    assert!(tokens > 0 && tokens < 150, "{tokens}");
                    used.fetch_add(tokens, std::sync::atomic::Ordering::SeqCst);
                    admitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                n += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let used = used.load(std::sync::atomic::Ordering::SeqCst);
    let admitted = admitted.load(std::sync::atomic::Ordering::SeqCst);
    // Every admitted request reserved at least what it used, so the tokens really used never
    // exceed the bucket (3000) plus what refilled meanwhile, across both replicas.
    let bound = 3000.0 + 3000.0 * elapsed / 60.0;
    assert!((used as f64) <= bound, "used {used} > {bound:.0}");
    // Settlement handed the unused reservations back: more requests got in than 3000 / 160
    // reservations alone would allow.
    let without_refunds = (bound / 160.0).ceil() as u64;
    assert!(
        admitted > without_refunds,
        "admitted {admitted}, no more than reservations alone ({without_refunds})"
    );
    let r = Arc::into_inner(r).unwrap();
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_limit_changed_on_one_replica_holds_on_both() {
    let prefix = unique("rl");
    let r = Replicas::start(&format!(
        "requests_per_minute = 1000\nredis_url = \"redis://127.0.0.1:6379\"\nredis_prefix = \"{prefix}\"\nrefresh_ms = 100"
    ))
    .await;
    assert_eq!(limit_on(&r.a).await, "1000");
    assert_eq!(limit_on(&r.b).await, "1000");
    let (status, v) =
        r.a.admin(
            "PUT",
            &format!("/admin/orgs/{}/limits", r.a.org_id),
            json!({"requests_per_minute": 40, "max_concurrent": 5}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["effective"]["requests_per_minute"], 40);
    assert_eq!(v["effective"]["request_burst"], 40);
    assert_eq!(v["effective"]["max_concurrent"], 5);
    // At once on the replica that made the change; within the refresh interval on the other.
    assert_eq!(limit_on(&r.a).await, "40");
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut seen = String::new();
    while Instant::now() < deadline {
        seen = limit_on(&r.b).await;
        if seen == "40" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, "40");

    // A key's own quota applies inside the organization's.
    let prefix_of_key = r.a.key.split('_').take(2).collect::<Vec<_>>().join("_");
    let (status, v) =
        r.a.admin(
            "PUT",
            &format!("/admin/keys/{prefix_of_key}/limits"),
            json!({"requests_per_minute": 2}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let resp = r.a.post_json(&chat("gpt-4o-mini", "hi")).await;
    assert_eq!(header(&resp, "x-ratelimit-limit-requests"), "2");
    let resp = r.a.post_json(&chat("gpt-4o-mini", "hi")).await;
    assert_eq!(resp.status(), 200);
    let resp = r.a.post_json(&chat("gpt-4o-mini", "hi")).await;
    assert_eq!(resp.status(), 429);
    assert!(
        body_json(resp).await["error"]["message"]
            .as_str()
            .unwrap()
            .contains("API key")
    );

    // Bad values are a 400 naming the field; back to the defaults with DELETE.
    let (status, v) =
        r.a.admin(
            "PUT",
            &format!("/admin/orgs/{}/limits", r.a.org_id),
            json!({"requests_per_minute": -5}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "requests_per_minute");
    let (status, _) =
        r.a.admin(
            "PUT",
            &format!("/admin/orgs/{}/limits", r.a.org_id),
            json!({"rpm": 5}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, v) =
        r.a.admin(
            "DELETE",
            &format!("/admin/orgs/{}/limits", r.a.org_id),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(v["effective"]["requests_per_minute"], 1000);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_taken_away_fails_open_and_shared_limiting_resumes() {
    let mut redis = RedisServer::start().await.unwrap();
    let extra = format!(
        "{DEFAULT_EXTRA}\n[ratelimit]\nrequests_per_minute = 100000\nredis_url = \"{}\"\nredis_timeout_ms = 50\n",
        redis.url()
    );
    let h = Harness::full(MockConfig::default(), DEFAULT_UPSTREAM, &extra).await;
    // Up and shared: the check ran as a script in Redis.
    let port = redis.port();
    let scripts_run = || {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "info", "commandstats"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                l.strip_prefix("cmdstat_evalsha:calls=")
                    .or_else(|| l.strip_prefix("cmdstat_eval:calls="))
            })
            .map(|rest| rest.split(',').next().unwrap().parse::<u64>().unwrap())
            .sum::<u64>()
    };
    let before = scripts_run();
    let resp = h.post_json(&chat("gpt-4o-mini", "before")).await;
    assert_eq!(resp.status(), 200);
    let v = health(&h).await;
    assert_eq!(v["components"]["ratelimit"]["status"], "up", "{v}");
    assert_eq!(v["components"]["ratelimit"]["backend"], "redis");
    assert!(scripts_run() > before, "the check did not run in Redis");

    redis.kill();
    let mut statuses = Vec::new();
    for i in 0..30 {
        let resp = h
            .post_json(&chat("gpt-4o-mini", &format!("during {i}")))
            .await;
        statuses.push(resp.status().as_u16());
        // Failing open, the in-process limiter still answers the headers.
        assert!(resp.headers().get("x-ratelimit-limit-requests").is_some());
    }
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let v = health(&h).await;
    assert_eq!(v["components"]["ratelimit"]["status"], "degraded", "{v}");
    assert_eq!(v["status"], "degraded");

    redis.restart().await.unwrap();
    // The limiter retries Redis by itself (one check every half second while degraded).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut back = false;
    while !back && Instant::now() < deadline {
        let resp = h.post_json(&chat("gpt-4o-mini", "after")).await;
        assert_eq!(resp.status(), 200);
        back = health(&h).await["components"]["ratelimit"]["status"] == "up";
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "the limiter did not go back to Redis");
    // A fresh server has fresh statistics: any script run now is a check reaching it again.
    let resp = h.post_json(&chat("gpt-4o-mini", "after, shared")).await;
    assert_eq!(resp.status(), 200);
    assert!(scripts_run() > 0, "checks are not reaching Redis again");
    h.stop().await;
}

/// The request limit a replica reports on a fresh completion.
async fn limit_on(h: &Harness) -> String {
    let resp = h.post_json(&chat("gpt-4o-mini", "hi")).await;
    assert_eq!(resp.status(), 200);
    header(&resp, "x-ratelimit-limit-requests").to_owned()
}

async fn health(h: &Harness) -> Value {
    body_json(h.request("GET", "/health", &[], Vec::new()).await).await
}
