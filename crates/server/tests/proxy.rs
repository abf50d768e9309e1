//! End-to-end tests: the real server on an ephemeral port in front of `mock-llm` on another,
//! talking real HTTP both ways.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail loudly on anything unexpected"
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cognitude_mock_llm::{MockConfig, MockServer};
use cognitude_protocol::sse::{SseDecoder, SseEvent};
use cognitude_server::{AppState, Config};
use cognitude_testkit::{Relay, TestDatabase};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[path = "proxy/analytics.rs"]
mod analytics;
#[path = "proxy/cache_faults.rs"]
mod cache_faults;
#[path = "proxy/ratelimit.rs"]
mod ratelimit;
#[path = "proxy/smart.rs"]
mod smart;

/// The process-wide metrics recorder (a recorder can be installed once per process).
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().unwrap())
        .clone()
}

/// A proxy in front of a mock upstream, with its own SQLite store, an organization and a key.
struct Harness {
    mock: MockServer,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    client: Client<HttpConnector, Full<Bytes>>,
    state: Arc<AppState>,
    org_id: String,
    key: String,
    dir: PathBuf,
    _background: cognitude_server::Background,
}

const ADMIN_KEY: &str = "test-admin-key-0123456789";

/// Models: `gpt-4o-mini` (OpenAI protocol), `claude-haiku-4-5` (Anthropic protocol), `primary`
/// (upstream model `up-a`, falls back to `backup`), `backup` (upstream `up-b`).
fn config_for(
    mock: &MockServer,
    upstream: &str,
    dir: &std::path::Path,
    extra: &str,
    db_url: Option<&str>,
) -> String {
    let base = mock.base_url();
    let db_url = db_url.map_or_else(
        || format!("sqlite://{}/cognitude.db", dir.display()),
        str::to_owned,
    );
    let dir = dir.display();
    format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        max_body_bytes = 65536
        shutdown_grace_secs = 10

        [upstream]
        {upstream}

        [database]
        url = "{db_url}"
        pool_size = 4
        connect_timeout_ms = 2000

        [ledger]
        spill_path = "{dir}/ledger.spill"
        flush_interval_ms = 20

        [providers.up]
        kind = "openai"
        base_url = "{base}"
        api_key = "sk-upstream-secret"

        [providers.claude]
        kind = "anthropic"
        base_url = "{base}"
        api_key = "sk-ant-secret"

        [[models]]
        name = "gpt-4o-mini"
        provider = "up"

        [[models]]
        name = "claude-haiku-4-5"
        provider = "claude"

        [[models]]
        name = "primary"
        provider = "up"
        upstream_model = "up-a"
        catalog_id = "gpt-4o"
        fallbacks = ["backup"]

        [[models]]
        name = "backup"
        provider = "up"
        upstream_model = "up-b"
        catalog_id = "gpt-4o-mini"

        {extra}
        {ratelimit}
        "#,
        // Tests that are not about rate limits must not run into the default 100 a minute.
        ratelimit = if extra.contains("[ratelimit]") {
            ""
        } else {
            "[ratelimit]\nrequests_per_minute = 1000000"
        },
    )
}

fn temp_dir() -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "cognitude-proxy-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const DEFAULT_UPSTREAM: &str = "max_retries = 2\nretry_base_ms = 10\nretry_max_ms = 100";
const DEFAULT_EXTRA: &str =
    "[auth]\nadmin_key = \"test-admin-key-0123456789\"\nfailed_attempts_per_minute = 1000";

impl Harness {
    async fn start() -> Harness {
        Harness::with(MockConfig::default(), DEFAULT_UPSTREAM).await
    }

    async fn with(mock_config: MockConfig, upstream: &str) -> Harness {
        Harness::full(mock_config, upstream, DEFAULT_EXTRA).await
    }

    async fn full(mock_config: MockConfig, upstream: &str, extra: &str) -> Harness {
        Harness::build(mock_config, upstream, extra, None).await
    }

    async fn build(
        mock_config: MockConfig,
        upstream: &str,
        extra: &str,
        db_url: Option<&str>,
    ) -> Harness {
        let mock = MockServer::start(mock_config).await.unwrap();
        let dir = temp_dir();
        let settings = Config::from_toml(&config_for(&mock, upstream, &dir, extra, db_url))
            .unwrap()
            .resolve(&HashMap::<String, String>::new())
            .unwrap();
        let (state, background) = AppState::start(settings, Some(metrics_handle()))
            .await
            .unwrap();
        // Replicas sharing a database share the organization.
        let org = match state.store().org_by_name("test-org").await.unwrap() {
            Some(org) => org,
            None => state.store().create_org("test-org").await.unwrap(),
        };
        let key = state.store().create_key(&org.id, "test").await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let server = tokio::spawn(cognitude_server::serve(listener, state.clone(), async {
            let _ = rx.await;
        }));
        let client = Client::builder(TokioExecutor::new()).build_http();
        Harness {
            mock,
            addr,
            shutdown: Some(tx),
            server: Some(server),
            client,
            state,
            org_id: org.id,
            key: key.secret,
            dir,
            _background: background,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A request with the harness's key unless `headers` carry a credential of their own.
    async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> http::Response<Incoming> {
        let mut b = http::Request::builder().method(method).uri(self.url(path));
        let has_credential = headers.iter().any(|(k, _)| {
            k.eq_ignore_ascii_case("authorization") || k.eq_ignore_ascii_case("x-api-key")
        });
        if !has_credential {
            b = b.header("authorization", format!("Bearer {}", self.key));
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.client
            .request(b.body(Full::new(body.into())).unwrap())
            .await
            .unwrap()
    }

    async fn post_json(&self, body: &Value) -> http::Response<Incoming> {
        self.request(
            "POST",
            "/v1/chat/completions",
            &[("content-type", "application/json")],
            serde_json::to_vec(body).unwrap(),
        )
        .await
    }

    async fn admin(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let auth = format!("Bearer {ADMIN_KEY}");
        let resp = self
            .request(
                method,
                path,
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                serde_json::to_vec(&body).unwrap(),
            )
            .await;
        let status = resp.status().as_u16();
        (status, body_json(resp).await)
    }

    /// Every ledger record of the harness's organization, once the ledger has written them.
    async fn ledger(&self) -> Vec<cognitude_store::UsageRecord> {
        self.state.ledger().flush().await;
        self.state
            .store()
            .list_usage(&self.org_id, None, None, 1000, None)
            .await
            .unwrap()
            .records
    }

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(s) = self.server.take() {
            s.await.unwrap().unwrap();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

fn stream_chat(model: &str, text: &str, usage: bool) -> Value {
    let mut v = chat(model, text);
    v["stream"] = json!(true);
    if usage {
        v["stream_options"] = json!({"include_usage": true});
    }
    v
}

async fn body_json(resp: http::Response<Incoming>) -> Value {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

async fn sse_events(resp: http::Response<Incoming>) -> Vec<SseEvent> {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let mut d = SseDecoder::default();
    d.push(&bytes).unwrap();
    std::iter::from_fn(|| d.next_event()).collect()
}

/// The chunks of a stream, parsed, without the closing `[DONE]`.
fn chunks_before_done(events: &[SseEvent]) -> Vec<Value> {
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect()
}

/// The content a stream's chunks add up to.
fn streamed_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

fn header<'a>(resp: &'a http::Response<Incoming>, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing header {name}"))
        .to_str()
        .unwrap()
}

fn assert_openai_error(v: &Value, kind: &str) {
    assert_eq!(v["error"]["type"], kind, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    assert!(
        v["error"].get("param").is_some() && v["error"].get("code").is_some(),
        "{v}"
    );
}

/// Polls `f` until it is true or two seconds pass.
async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

#[tokio::test(flavor = "multi_thread")]
async fn non_stream_completion_with_headers_and_exact_cost() {
    let h = Harness::start().await;
    let resp = h
        .request(
            "POST",
            "/v1/chat/completions",
            &[
                ("content-type", "application/json"),
                ("x-request-id", "client-id-1"),
            ],
            serde_json::to_vec(&chat("gpt-4o-mini", "Tell me about otters")).unwrap(),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-request-id"), "client-id-1");
    assert_eq!(header(&resp, "x-cognitude-model"), "gpt-4o-mini");
    assert_eq!(header(&resp, "x-cognitude-provider"), "up");
    let cost = header(&resp, "x-cognitude-cost-usd").to_owned();
    let v = body_json(resp).await;
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("Tell me about otters")
    );
    // The upstream's unknown fields pass through.
    assert_eq!(v["service_tier"], "default");
    // gpt-4o-mini: $0.15 / 1M input, $0.60 / 1M output = 150,000 and 600,000 picodollars a token.
    let p = v["usage"]["prompt_tokens"].as_u64().unwrap();
    let c = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(p > 0 && c > 0);
    let pico = u128::from(p) * 150_000 + u128::from(c) * 600_000;
    let expected = format!("0.{:012}", pico);
    assert_eq!(cost, expected.trim_end_matches('0'));
    // The upstream saw its own key, never the client's headers.
    let up_headers = h.mock.stats().last_headers().unwrap();
    assert_eq!(up_headers["authorization"], "Bearer sk-upstream-secret");
    assert!(up_headers.get("x-request-id").is_none());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_request_fields_are_forwarded_untouched() {
    let h = Harness::start().await;
    let mut body = chat("gpt-4o-mini", "hi");
    body["reasoning_effort"] = json!("low");
    body["metadata"] = json!({"team": "search"});
    body["messages"][0]["x_trace"] = json!(7);
    let resp = h.post_json(&body).await;
    assert_eq!(resp.status(), 200);
    let seen = h.mock.stats().last_request().unwrap();
    assert_eq!(seen["reasoning_effort"], "low");
    assert_eq!(seen["metadata"]["team"], "search");
    assert_eq!(seen["messages"][0]["x_trace"], 7);
    assert_eq!(seen["model"], "gpt-4o-mini");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_forwards_chunks_and_hides_usage_unless_asked() {
    let h = Harness::start().await;
    let resp = h
        .post_json(&stream_chat("gpt-4o-mini", "stream please", false))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "text/event-stream");
    let events = sse_events(resp).await;
    assert!(events.last().unwrap().is_done());
    let chunks = chunks_before_done(&events);
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "usage leaked"
    );
    let text = streamed_text(&chunks);
    assert!(text.contains("stream please"), "{text}");
    // The proxy always asks the upstream for usage, so cost is known even when the client did not.
    let seen = h.mock.stats().last_request().unwrap();
    assert_eq!(seen["stream_options"]["include_usage"], true);

    let resp = h
        .post_json(&stream_chat("gpt-4o-mini", "with usage", true))
        .await;
    let events = sse_events(resp).await;
    let last_chunk: Value = serde_json::from_str(&events[events.len() - 2].data).unwrap();
    assert_eq!(last_chunk["choices"], json!([]));
    assert!(last_chunk["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn first_chunk_reaches_the_client_before_the_upstream_finishes() {
    let h = Harness::start().await;
    let body = stream_chat(
        "gpt-4o-mini",
        r#"go @mock{"words": 12, "chunk_delay_ms": 100}"#,
        false,
    );
    let started = Instant::now();
    let resp = h.post_json(&body).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut decoder = SseDecoder::default();
    let first = loop {
        let frame = body.frame().await.unwrap().unwrap();
        if let Ok(data) = frame.into_data() {
            decoder.push(&data).unwrap();
            if let Some(e) = decoder.next_event() {
                break e;
            }
        }
    };
    let first_at = started.elapsed();
    // The mock needs 12 × 100 ms to send everything; the first chunk came long before.
    assert_eq!(
        h.mock.stats().streams_completed(),
        0,
        "mock already finished"
    );
    assert!(
        first_at < Duration::from_millis(900),
        "first chunk after {first_at:?}"
    );
    let chunk: Value = serde_json::from_str(&first.data).unwrap();
    assert_eq!(chunk["object"], "chat.completion.chunk");
    // Drain the rest: it completes.
    let rest = body.collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&rest).contains("[DONE]"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_upstream_is_translated_both_ways() {
    let h = Harness::start().await;
    let mut body = chat("claude-haiku-4-5", "Bonjour from the client");
    body["messages"] = json!([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Bonjour from the client"}
    ]);
    body["max_tokens"] = json!(50);
    let resp = h.post_json(&body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-cognitude-provider"), "claude");
    let v = body_json(resp).await;
    assert_eq!(v["object"], "chat.completion");
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("Bonjour from the client")
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    // What the upstream received is a Messages request: system lifted out, x-api-key auth.
    let seen = h.mock.stats().last_request().unwrap();
    assert_eq!(seen["system"], "Be brief.");
    assert_eq!(seen["max_tokens"], 50);
    assert_eq!(seen["messages"][0]["role"], "user");
    let up_headers = h.mock.stats().last_headers().unwrap();
    assert_eq!(up_headers["x-api-key"], "sk-ant-secret");
    assert!(up_headers.get("anthropic-version").is_some());

    // Streaming: Anthropic events become OpenAI chunks.
    let resp = h
        .post_json(&stream_chat("claude-haiku-4-5", "stream en français", true))
        .await;
    assert_eq!(resp.status(), 200);
    let events = sse_events(resp).await;
    assert!(events.last().unwrap().is_done());
    let chunks = chunks_before_done(&events);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text = streamed_text(&chunks);
    assert!(text.contains("stream en français"), "{text}");
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "stop")
    );
    let usage = &chunks.last().unwrap()["usage"];
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0, "{usage}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tool_calls_survive_both_protocols() {
    let h = Harness::start().await;
    for model in ["gpt-4o-mini", "claude-haiku-4-5"] {
        let mut body = chat(model, r#"weather? @mock{"tool_call": true}"#);
        body["tools"] = json!([{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}]);
        let v = body_json(h.post_json(&body).await).await;
        let call = &v["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "get_weather", "{model}: {v}");
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert!(args.is_object(), "{model}");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{model}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_recover_from_transient_upstream_errors() {
    let h = Harness::start().await;
    // Fails twice, then succeeds: within max_retries = 2.
    let resp = h
        .post_json(&chat(
            "gpt-4o-mini",
            r#"@mock{"status": 500, "times": 2, "key": "r1"}"#,
        ))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(h.mock.stats().requests_for_key("r1"), 3);

    // A 429 with Retry-After is retried after the wait.
    let started = Instant::now();
    let resp = h
        .post_json(&chat(
            "gpt-4o-mini",
            r#"@mock{"status": 429, "times": 1, "key": "r2", "retry_after": 0.05}"#,
        ))
        .await;
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(h.mock.stats().requests_for_key("r2"), 2);

    // Always failing: 1 + 2 retries, then 502 with the OpenAI error body.
    let resp = h
        .post_json(&chat("gpt-4o-mini", r#"@mock{"status": 503, "key": "r3"}"#))
        .await;
    assert_eq!(resp.status(), 502);
    assert_eq!(h.mock.stats().requests_for_key("r3"), 3);
    assert_openai_error(&body_json(resp).await, "upstream_error");

    // A client error from the upstream is not retried, and keeps its status.
    let resp = h
        .post_json(&chat("gpt-4o-mini", r#"@mock{"status": 400, "key": "r4"}"#))
        .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(h.mock.stats().requests_for_key("r4"), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fallback_model_answers_when_the_primary_keeps_failing() {
    let h = Harness::start().await;
    for status in [500, 429] {
        let key = format!("fb{status}");
        let text = format!(r#"@mock{{"status": {status}, "models": ["up-a"], "key": "{key}"}}"#);
        let resp = h.post_json(&chat("primary", &text)).await;
        assert_eq!(resp.status(), 200, "status {status}");
        assert_eq!(header(&resp, "x-cognitude-model"), "backup");
        // primary: 1 try + 2 retries; backup: 1.
        assert_eq!(h.mock.stats().requests_for_key(&key), 4);
        let v = body_json(resp).await;
        assert_eq!(v["model"], "up-b");
    }
    // Streams fall back too, before the first chunk.
    let resp = h
        .post_json(&stream_chat(
            "primary",
            r#"@mock{"status": 502, "models": ["up-a"]}"#,
            false,
        ))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-cognitude-model"), "backup");
    assert!(sse_events(resp).await.last().unwrap().is_done());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_timeouts_give_504_or_fall_back() {
    let h = Harness::with(
        MockConfig::default(),
        "max_retries = 0\nfirst_byte_timeout_ms = 300\nidle_timeout_ms = 300\nretry_base_ms = 10\nretry_max_ms = 100",
    )
    .await;
    let started = Instant::now();
    let resp = h
        .post_json(&chat("gpt-4o-mini", r#"@mock{"delay_ms": 3000}"#))
        .await;
    assert_eq!(resp.status(), 504);
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert_openai_error(&body_json(resp).await, "timeout_error");

    let resp = h
        .post_json(&chat(
            "primary",
            r#"@mock{"delay_ms": 3000, "models": ["up-a"]}"#,
        ))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-cognitude-model"), "backup");

    // A stream that stalls between chunks ends with an error event, not a hang.
    let resp = h
        .post_json(&stream_chat(
            "gpt-4o-mini",
            r#"@mock{"words": 5, "chunk_delay_ms": 2000}"#,
            false,
        ))
        .await;
    assert_eq!(resp.status(), 200);
    let events = sse_events(resp).await;
    let last: Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
    assert_eq!(last["error"]["type"], "timeout_error", "{last}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_upstream_streams_end_with_an_error_event() {
    let h = Harness::start().await;
    for directive in [
        r#"@mock{"words": 8, "cut_after": 3}"#,
        r#"@mock{"words": 8, "malformed_at": 2}"#,
    ] {
        let resp = h
            .post_json(&stream_chat("gpt-4o-mini", directive, false))
            .await;
        assert_eq!(resp.status(), 200, "{directive}");
        let events = sse_events(resp).await;
        let last = events.last().unwrap();
        assert!(
            !last.is_done(),
            "{directive}: a broken stream must not look complete"
        );
        let v: Value = serde_json::from_str(&last.data).unwrap();
        assert_eq!(v["error"]["type"], "upstream_error", "{directive}: {v}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn client_disconnect_cancels_the_upstream_stream() {
    let h = Harness::start().await;
    let resp = h
        .post_json(&stream_chat(
            "gpt-4o-mini",
            r#"@mock{"words": 200, "chunk_delay_ms": 50}"#,
            false,
        ))
        .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let frame = body.frame().await.unwrap().unwrap();
    assert!(frame.is_data());
    assert_eq!(h.mock.stats().streams_started(), 1);
    drop(body);
    let stats = h.mock.stats();
    assert!(
        eventually(|| stats.streams_cancelled() == 1).await,
        "upstream stream was not cancelled"
    );
    assert_eq!(stats.streams_completed(), 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn client_errors_get_the_right_status_and_openai_body() {
    let h = Harness::start().await;
    let json_ct = [("content-type", "application/json")];
    type Case<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        Vec<u8>,
        u16,
        Option<&'a str>,
    );
    let cases: Vec<Case> = vec![
        ("POST", "/v1/chat/completions", json_ct.to_vec(), b"{not json".to_vec(), 400, None),
        ("POST", "/v1/chat/completions", json_ct.to_vec(), b"".to_vec(), 400, None),
        (
            "POST",
            "/v1/chat/completions",
            json_ct.to_vec(),
            br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#.to_vec(),
            400,
            Some("temperature"),
        ),
        (
            "POST",
            "/v1/chat/completions",
            json_ct.to_vec(),
            br#"{"model":"gpt-4o-mini","messages":[{"role":"wizard","content":"x"}]}"#.to_vec(),
            400,
            Some("messages[0].role"),
        ),
        (
            "POST",
            "/v1/chat/completions",
            json_ct.to_vec(),
            br#"{"model":"gpt-4o-mini","messages":[]}"#.to_vec(),
            400,
            Some("messages"),
        ),
        (
            "POST",
            "/v1/chat/completions",
            json_ct.to_vec(),
            br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}],"top_p":7}"#.to_vec(),
            400,
            Some("top_p"),
        ),
        (
            "POST",
            "/v1/chat/completions",
            json_ct.to_vec(),
            br#"{"model":"no-such-model","messages":[{"role":"user","content":"x"}]}"#.to_vec(),
            404,
            Some("model"),
        ),
        ("GET", "/v1/chat/completions", vec![], vec![], 405, None),
        ("DELETE", "/v1/models", vec![], vec![], 405, None),
        ("GET", "/v1/nothing-here", vec![], vec![], 404, None),
        (
            "POST",
            "/v1/chat/completions",
            vec![("content-type", "text/plain")],
            br#"{"model":"gpt-4o-mini","messages":[]}"#.to_vec(),
            415,
            None,
        ),
        (
            "POST",
            "/v1/chat/completions",
            json_ct.to_vec(),
            vec![b' '; 70_000],
            413,
            None,
        ),
        (
            "POST",
            "/v1/chat/completions",
            json_ct.to_vec(),
            vec![0xff, 0xfe, 0x00, 0x7b],
            400,
            None,
        ),
    ];
    for (method, path, headers, body, status, param) in cases {
        let resp = h.request(method, path, &headers, body).await;
        assert_eq!(resp.status(), status, "{method} {path}");
        assert!(resp.headers().get("x-request-id").is_some());
        let v = body_json(resp).await;
        assert_eq!(v["error"]["param"].as_str(), param, "{method} {path}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_body_over_the_limit_is_413() {
    let h = Harness::start().await;
    // No content-length: the limit is enforced while reading.
    let (mut sender, body) =
        http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(4);
    let req = http::Request::post(h.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", h.key))
        .body(body)
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http();
    let send = tokio::spawn(async move {
        for _ in 0..20 {
            if sender
                .send_data(Bytes::from(vec![b' '; 8192]))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 413);
    let _ = send.await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn models_health_and_metrics() {
    let h = Harness::start().await;
    let v = body_json(h.request("GET", "/v1/models", &[], Vec::new()).await).await;
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["gpt-4o-mini", "claude-haiku-4-5", "primary", "backup"]
    );

    let resp = h.request("GET", "/health", &[], Vec::new()).await;
    assert_eq!(resp.status(), 200);
    let v = body_json(resp).await;
    assert_eq!(v["status"], "ok");
    assert!(v["components"]["providers"]["up"].is_object());

    let resp = h.post_json(&chat("gpt-4o-mini", "count me")).await;
    assert_eq!(resp.status(), 200);
    let text = String::from_utf8(
        h.request("GET", "/metrics", &[], Vec::new())
            .await
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains("cognitude_requests_total{endpoint=\"chat_completions\",status=\"200\"}"),
        "{text}"
    );
    assert!(text.contains("cognitude_tokens_total{model=\"gpt-4o-mini\",kind=\"prompt\"}"));
    assert!(text.contains("cognitude_cost_nanodollars_total{model=\"gpt-4o-mini\"}"));
    assert!(text.contains("cognitude_upstream_duration_seconds"));
    // No secret ever reaches a response.
    assert!(!text.contains("sk-upstream-secret"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_lets_a_stream_in_flight_finish() {
    let mut h = Harness::start().await;
    let resp = h
        .post_json(&stream_chat(
            "gpt-4o-mini",
            r#"@mock{"words": 10, "chunk_delay_ms": 60}"#,
            false,
        ))
        .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    assert!(body.frame().await.unwrap().unwrap().is_data());
    // Shut down while the stream is still going.
    let _ = h.shutdown.take().unwrap().send(());
    let rest = body.collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&rest);
    assert!(text.contains("[DONE]"), "stream cut by shutdown: {text}");
    let server = h.server.take().unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server did not stop")
        .unwrap()
        .unwrap();
    // The listener is closed.
    assert!(tokio::net::TcpStream::connect(h.addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_cleartext_is_served() {
    let h = Harness::start().await;
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let req = http::Request::post(h.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", h.key))
        .body(Full::new(Bytes::from(
            serde_json::to_vec(&chat("gpt-4o-mini", "over h2")).unwrap(),
        )))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_clients_are_all_answered() {
    let h = Arc::new(Harness::start().await);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let stream = i % 2 == 0;
            let body = if stream {
                stream_chat("gpt-4o-mini", &format!("client {i}"), true)
            } else {
                chat("gpt-4o-mini", &format!("client {i}"))
            };
            let resp = h.post_json(&body).await;
            let status = resp.status();
            let text = if stream {
                let events = sse_events(resp).await;
                assert!(events.last().unwrap().is_done());
                streamed_text(&chunks_before_done(&events))
            } else {
                body_json(resp).await["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            };
            (status, text.contains(&format!("client {i}")))
        }));
    }
    for t in tasks {
        let (status, echoed) = t.await.unwrap();
        assert_eq!(status, 200);
        assert!(echoed);
    }
}

// ---- organizations, keys and the ledger ---------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn requests_need_a_valid_key_in_either_header() {
    let h = Harness::start().await;
    let body = serde_json::to_vec(&chat("gpt-4o-mini", "hi")).unwrap();
    let ct = ("content-type", "application/json");
    let (good_prefix, _) = h.key.split_at(16);
    let wrong_secret = format!("{good_prefix}_{}", "0".repeat(48));
    let long = "a".repeat(100_000);
    for (headers, what) in [
        (vec![("authorization", "Bearer ")], "empty"),
        (vec![("authorization", "Bearer cgk_123")], "truncated"),
        (vec![("authorization", long.as_str())], "oversized"),
        (
            vec![("authorization", "Basic dXNlcjpwYXNz")],
            "wrong scheme",
        ),
        (vec![("x-api-key", "sk-not-ours")], "foreign key"),
        (
            vec![("authorization", &*format!("Bearer {wrong_secret}"))],
            "wrong secret",
        ),
        (
            vec![("authorization", "Bearer cgk_'; DROP TABLE api_keys;--")],
            "sql",
        ),
    ] {
        let mut hs = headers.clone();
        hs.push(ct);
        let resp = h
            .request("POST", "/v1/chat/completions", &hs, body.clone())
            .await;
        assert_eq!(resp.status(), 401, "{what}");
        let v = body_json(resp).await;
        assert_eq!(v["error"]["code"], "invalid_api_key", "{what}");
    }
    // X-API-Key works as well as Bearer.
    let resp = h
        .request(
            "POST",
            "/v1/chat/completions",
            &[("x-api-key", &h.key), ct],
            body.clone(),
        )
        .await;
    assert_eq!(resp.status(), 200);
    // Unauthenticated requests are not in the ledger; the authenticated one is.
    assert_eq!(h.ledger().await.len(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_revoked_mid_traffic_stops_at_once_on_this_instance() {
    let h = Harness::start().await;
    let org = h.state.store().org(&h.org_id).await.unwrap().unwrap();
    assert_eq!(org.name, "test-org");
    let prefix = h.key[..16].to_owned();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h = Arc::new(h);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (h, stop) = (h.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                statuses.push(
                    h.post_json(&chat("gpt-4o-mini", "x"))
                        .await
                        .status()
                        .as_u16(),
                );
            }
            statuses
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (status, v) = h
        .admin("DELETE", &format!("/admin/keys/{prefix}"), json!({}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["revoked_at"].is_i64());
    // After the revocation answered, no request with the key succeeds.
    let resp = h.post_json(&chat("gpt-4o-mini", "after")).await;
    assert_eq!(resp.status(), 401);
    assert!(
        body_json(resp).await["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in tasks {
        let statuses = t.await.unwrap();
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 401),
            "{statuses:?}"
        );
        // Once refused, never accepted again.
        if let Some(first_401) = statuses.iter().position(|s| *s == 401) {
            assert!(statuses[first_401..].iter().all(|s| *s == 401));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_auth_failures_from_one_address_are_slowed_down() {
    let h = Harness::full(
        MockConfig::default(),
        DEFAULT_UPSTREAM,
        "[auth]\nfailed_attempts_per_minute = 5",
    )
    .await;
    let bad = format!("Bearer cgk_000000000000_{}", "0".repeat(48));
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let resp = h
            .request("GET", "/v1/models", &[("authorization", &bad)], Vec::new())
            .await;
        if resp.status() == 429 {
            let retry: u64 = header(&resp, "retry-after").parse().unwrap();
            assert!((1..=60).contains(&retry));
        }
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429, 429, 429]);
    // The address is blocked even for a good key until its window ends: brute force gains nothing.
    let resp = h.request("GET", "/v1/models", &[], Vec::new()).await;
    assert_eq!(resp.status(), 429);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_api_manages_orgs_and_keys() {
    let h = Harness::start().await;
    // Not the admin key: 403; no key: 401.
    let resp = h.request("GET", "/admin/orgs", &[], Vec::new()).await;
    assert_eq!(resp.status(), 403);
    let resp = h
        .request(
            "GET",
            "/admin/orgs",
            &[("authorization", "Bearer nope")],
            Vec::new(),
        )
        .await;
    assert_eq!(resp.status(), 401);

    let weird = "Ümlaut \"quoted\" 'single' 🚀 שלום; DROP TABLE organizations;--";
    let (status, org) = h.admin("POST", "/admin/orgs", json!({"name": weird})).await;
    assert_eq!(status, 201, "{org}");
    assert_eq!(org["name"], weird);
    let org_id = org["id"].as_str().unwrap().to_owned();
    let (status, v) = h.admin("POST", "/admin/orgs", json!({"name": weird})).await;
    assert_eq!(status, 409, "{v}");
    let (status, v) = h.admin("POST", "/admin/orgs", json!({"name": ""})).await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = h.admin("POST", "/admin/orgs", json!({"nom": "x"})).await;
    assert_eq!(status, 400, "{v}");

    let (status, created) = h
        .admin(
            "POST",
            &format!("/admin/orgs/{org_id}/keys"),
            json!({"name": "ci"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    let prefix = created["key"]["prefix"].as_str().unwrap().to_owned();
    // The new key works, as that organization.
    let auth = format!("Bearer {secret}");
    let resp = h
        .request(
            "POST",
            "/v1/chat/completions",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            serde_json::to_vec(&chat("gpt-4o-mini", "new key")).unwrap(),
        )
        .await;
    assert_eq!(resp.status(), 200);
    // Listings never show a secret.
    let (status, list) = h
        .admin("GET", &format!("/admin/orgs/{org_id}/keys"), json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["data"][0]["prefix"], prefix.as_str());
    assert!(!list.to_string().contains(&secret));
    let (_, all) = h.admin("GET", "/admin/keys", json!({})).await;
    assert!(!all.to_string().contains(&secret));
    assert!(!all.to_string().contains(&h.key));

    let (status, _) = h
        .admin("DELETE", &format!("/admin/keys/{prefix}"), json!({}))
        .await;
    assert_eq!(status, 200);
    let resp = h
        .request("GET", "/v1/models", &[("authorization", &auth)], Vec::new())
        .await;
    assert_eq!(resp.status(), 401);
    let (status, _) = h
        .admin("DELETE", "/admin/keys/cgk_ffffffffffff", json!({}))
        .await;
    assert_eq!(status, 404);

    let (status, _) = h
        .admin("DELETE", &format!("/admin/orgs/{org_id}"), json!({}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = h
        .admin("GET", &format!("/admin/orgs/{org_id}"), json!({}))
        .await;
    assert_eq!(status, 404);
    let (status, _) = h.admin("PATCH", "/admin/orgs", json!({})).await;
    assert_eq!(status, 405);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_authenticated_request_lands_in_the_ledger_once() {
    let h = Harness::start().await;
    // A plain completion, with a client request id.
    let resp = h
        .request(
            "POST",
            "/v1/chat/completions",
            &[
                ("content-type", "application/json"),
                ("x-request-id", "ledger-1"),
            ],
            serde_json::to_vec(&chat("gpt-4o-mini", "first")).unwrap(),
        )
        .await;
    let cost_header = header(&resp, "x-cognitude-cost-usd").to_owned();
    body_json(resp).await;
    // A stream with usage.
    sse_events(
        h.post_json(&stream_chat("gpt-4o-mini", "second", false))
            .await,
    )
    .await;
    // A bad request after authentication.
    let resp = h
        .post_json(&json!({"model": "gpt-4o-mini", "messages": []}))
        .await;
    assert_eq!(resp.status(), 400);
    // An upstream failure.
    let resp = h
        .post_json(&chat("gpt-4o-mini", r#"@mock{"status": 503}"#))
        .await;
    assert_eq!(resp.status(), 502);
    // A stream the client abandons.
    let resp = h
        .post_json(&stream_chat(
            "gpt-4o-mini",
            r#"@mock{"words": 100, "chunk_delay_ms": 30}"#,
            false,
        ))
        .await;
    let mut body = resp.into_body();
    let _ = body.frame().await;
    let _ = body.frame().await;
    drop(body);
    let stats = h.mock.stats();
    assert!(eventually(|| stats.streams_cancelled() == 1).await);

    let mut recs = Vec::new();
    for _ in 0..50 {
        recs = h.ledger().await;
        if recs.len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(recs.len(), 5, "{recs:#?}");
    let mut ids: Vec<&str> = recs.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 5);

    let first = recs.iter().find(|r| r.request_id == "ledger-1").unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(first.model_used.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(first.provider.as_deref(), Some("up"));
    assert!(first.prompt_tokens > 0 && first.completion_tokens > 0);
    assert!(!first.tokens_estimated);
    assert_eq!(
        cognitude_catalog::Money::from_pico(i128::from(first.cost_pico)).to_string(),
        cost_header
    );
    assert_eq!(first.request_hash.len(), 64);
    assert!(
        first.prompt_text.is_none(),
        "prompt text stored without the flag"
    );
    assert_eq!(
        first.api_key_id.as_deref().map(|k| k.starts_with("key_")),
        Some(true)
    );

    let stream = recs
        .iter()
        .find(|r| r.stream && r.error_type.is_none())
        .unwrap();
    assert!(stream.cost_pico > 0 && !stream.tokens_estimated);
    assert!(stream.ttft_ms.is_some());

    let bad = recs.iter().find(|r| r.status == 400).unwrap();
    assert_eq!(bad.error_type.as_deref(), Some("invalid_request_error"));
    assert_eq!(bad.cost_pico, 0);

    let failed = recs.iter().find(|r| r.status == 502).unwrap();
    assert_eq!(failed.error_type.as_deref(), Some("upstream_error"));

    let cut = recs
        .iter()
        .find(|r| r.error_type.as_deref() == Some("client_closed_stream"))
        .unwrap();
    assert!(
        cut.tokens_estimated,
        "a cut stream's tokens are counted, not reported"
    );
    assert!(cut.completion_tokens > 0);
    assert!(cut.cost_pico > 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_endpoint_pages_the_callers_own_records() {
    let h = Harness::start().await;
    for i in 0..7 {
        let resp = h.post_json(&chat("gpt-4o-mini", &format!("n{i}"))).await;
        assert_eq!(resp.status(), 200);
    }
    h.ledger().await;
    let mut seen = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/usage?limit=3&cursor={c}"),
            None => "/v1/usage?limit=3".to_owned(),
        };
        let v = body_json(h.request("GET", &path, &[], Vec::new()).await).await;
        let n = v["data"].as_array().unwrap().len();
        assert!(n <= 3);
        seen += n;
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, 7);

    // Another organization sees none of them, and cannot ask for them.
    let other = h.state.store().create_org("other").await.unwrap();
    let other_key = h
        .state
        .store()
        .create_key(&other.id, "k")
        .await
        .unwrap()
        .secret;
    let auth = format!("Bearer {other_key}");
    let v = body_json(
        h.request("GET", "/v1/usage", &[("authorization", &auth)], Vec::new())
            .await,
    )
    .await;
    assert_eq!(v["data"], json!([]));
    let resp = h
        .request(
            "GET",
            &format!("/v1/usage?org={}", h.org_id),
            &[("authorization", &auth)],
            Vec::new(),
        )
        .await;
    assert_eq!(resp.status(), 403);
    // The admin can read any organization.
    let (status, v) = h
        .admin(
            "GET",
            &format!("/v1/usage?org={}&limit=100", h.org_id),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(v["data"].as_array().unwrap().len(), 7);
    let resp = h.request("GET", "/v1/usage?limit=0", &[], Vec::new()).await;
    assert_eq!(resp.status(), 400);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn database_cut_mid_load_loses_and_doubles_nothing() {
    let db = TestDatabase::create().await.unwrap();
    let relay = Relay::start(TestDatabase::server_addr()).await;
    let h = Arc::new(
        Harness::build(
            MockConfig::default(),
            DEFAULT_UPSTREAM,
            DEFAULT_EXTRA,
            Some(&db.url_via(&relay)),
        )
        .await,
    );
    // The key is verified once; later checks come from the key cache.
    assert_eq!(
        h.post_json(&chat("gpt-4o-mini", "warm")).await.status(),
        200
    );

    let clients = 8;
    let per_client = 40;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let mut costs = Vec::new();
            for i in 0..per_client {
                let resp = h
                    .post_json(&chat("gpt-4o-mini", &format!("client {c} request {i}")))
                    .await;
                assert_eq!(
                    resp.status(),
                    200,
                    "a client request failed during the outage"
                );
                let cost: cognitude_catalog::Money =
                    header(&resp, "x-cognitude-cost-usd").parse().unwrap();
                body_json(resp).await;
                costs.push(cost);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            costs
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    relay.cut();
    // Longer than the pool's connect timeout (2 s), so the ledger writer gives up and spills.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    relay.restore();
    let mut header_total = cognitude_catalog::Money::ZERO;
    let mut requests = 1;
    for t in tasks {
        let costs = t.await.unwrap();
        requests += costs.len() as i64;
        header_total += costs.into_iter().sum();
    }
    assert!(
        h.state.ledger().stats().spilled() > 0,
        "the outage did not reach the ledger; the test proves nothing"
    );
    for _ in 0..100 {
        h.state.ledger().flush().await;
        if !h.state.ledger().spill_pending() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!h.state.ledger().spill_pending());
    // Read the ledger straight from the database, not through the relay.
    let direct = cognitude_store::Store::connect(&db.url).await.unwrap();
    let (count, cost_pico) = direct.usage_totals(&h.org_id).await.unwrap();
    assert_eq!(count, requests, "records lost or doubled");
    // The warm-up's cost is in the ledger too: add it from the record.
    let warm = direct
        .list_usage(&h.org_id, None, None, 1000, None)
        .await
        .unwrap()
        .records
        .into_iter()
        .find(|r| r.request_hash.len() == 64 && r.prompt_chars == 4)
        .unwrap();
    assert_eq!(
        cost_pico,
        header_total.pico() + i128::from(warm.cost_pico),
        "ledger cost differs from what the clients were told"
    );
    drop(direct);
    db.drop_db().await;
}

// ---- the response cache -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn identical_requests_hit_the_cache_and_cost_nothing() {
    let h = Harness::start().await;
    let body = chat("gpt-4o-mini", "cache me please");
    let first = h.post_json(&body).await;
    assert_eq!(header(&first, "x-cognitude-cache"), "miss");
    let cost = header(&first, "x-cognitude-cost-usd").to_owned();
    let first_bytes = first.into_body().collect().await.unwrap().to_bytes();
    let a: Value = serde_json::from_slice(&first_bytes).unwrap();
    // Field order and `user` do not matter; the hit is the stored answer, byte for byte.
    let reordered =
        json!({"user": "someone", "messages": body["messages"], "model": "gpt-4o-mini"});
    let second = h.post_json(&reordered).await;
    assert_eq!(header(&second, "x-cognitude-cache"), "hit-memory");
    assert_eq!(header(&second, "x-cognitude-cost-usd"), "0");
    assert_eq!(header(&second, "x-cognitude-model"), "gpt-4o-mini");
    let second_bytes = second.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&first_bytes),
        String::from_utf8_lossy(&second_bytes)
    );
    let b: Value = serde_json::from_slice(&second_bytes).unwrap();
    assert_eq!(a, b);
    assert_eq!(a["choices"][0]["message"]["role"], "assistant");
    assert_eq!(h.mock.stats().requests(), 1, "a hit went upstream");

    // A streamed request with the same content is replayed from the entry as SSE.
    let resp = h
        .post_json(&stream_chat("gpt-4o-mini", "cache me please", true))
        .await;
    assert_eq!(header(&resp, "x-cognitude-cache"), "hit-memory");
    let events = sse_events(resp).await;
    assert!(events.last().unwrap().is_done());
    let chunks = chunks_before_done(&events);
    let text = streamed_text(&chunks);
    assert_eq!(
        text,
        a["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert!(
        chunks.last().unwrap()["usage"]["total_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(h.mock.stats().requests(), 1);

    // The ledger: one paid miss, two free hits that record what they saved.
    let mut recs = Vec::new();
    for _ in 0..50 {
        recs = h.ledger().await;
        if recs.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(recs.len(), 3);
    let miss_cost: cognitude_catalog::Money = cost.parse().unwrap();
    let hits: Vec<_> = recs
        .iter()
        .filter(|r| r.cache_status.as_deref() == Some("hit-memory"))
        .collect();
    assert_eq!(hits.len(), 2);
    for r in &hits {
        assert_eq!(r.cost_pico, 0);
        assert_eq!(i128::from(r.cache_saved_pico), miss_cost.pico());
    }
    let stats = body_json(h.request("GET", "/cache/stats", &[], Vec::new()).await).await;
    assert_eq!(stats["hits"], 2, "{stats}");
    assert_eq!(stats["misses"], 1, "{stats}");
    assert_eq!(stats["usd_saved"], (miss_cost.times(2)).to_string());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_org_never_gets_another_orgs_cached_answer() {
    let h = Harness::start().await;
    let body = chat("gpt-4o-mini", "the same prompt for everyone");
    assert_eq!(
        header(&h.post_json(&body).await, "x-cognitude-cache"),
        "miss"
    );
    assert_eq!(
        header(&h.post_json(&body).await, "x-cognitude-cache"),
        "hit-memory"
    );
    let other = h.state.store().create_org("other-tenant").await.unwrap();
    let other_key = h
        .state
        .store()
        .create_key(&other.id, "k")
        .await
        .unwrap()
        .secret;
    let auth = format!("Bearer {other_key}");
    let resp = h
        .request(
            "POST",
            "/v1/chat/completions",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
    assert_eq!(header(&resp, "x-cognitude-cache"), "miss");
    assert_eq!(h.mock.stats().requests(), 2);
    // Clearing one org's entries leaves the other's.
    let resp = h
        .request("DELETE", "/cache", &[("authorization", &auth)], Vec::new())
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&h.post_json(&body).await, "x-cognitude-cache"),
        "hit-memory"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_directives_errors_and_cut_streams() {
    let h = Harness::start().await;
    let json_ct = ("content-type", "application/json");
    let send = |text: &str, cc: Option<&str>| {
        let body = serde_json::to_vec(&chat("gpt-4o-mini", text)).unwrap();
        let cc = cc.map(str::to_owned);
        let h = &h;
        async move {
            let mut headers = vec![json_ct];
            if let Some(c) = cc.as_deref() {
                headers.push(("cache-control", c));
            }
            let resp = h
                .request("POST", "/v1/chat/completions", &headers, body)
                .await;
            let status = resp.status().as_u16();
            let cache = resp
                .headers()
                .get("x-cognitude-cache")
                .map(|v| v.to_str().unwrap().to_owned());
            body_json(resp).await;
            (status, cache)
        }
    };
    // no-store: neither looked up nor stored.
    assert_eq!(
        send("ns", Some("no-store")).await.1.as_deref(),
        Some("bypass")
    );
    assert_eq!(send("ns", None).await.1.as_deref(), Some("miss"));
    // no-cache: not looked up, but stored.
    assert_eq!(
        send("nc", Some("no-cache")).await.1.as_deref(),
        Some("bypass")
    );
    assert_eq!(send("nc", None).await.1.as_deref(), Some("hit-memory"));
    // An error is never stored.
    let fail = r#"@mock{"status": 400}"#;
    assert_eq!(send(fail, None).await.0, 400);
    assert_eq!(send(fail, None).await.0, 400);
    // A bad TTL header is a 400 naming it.
    let resp = h
        .request(
            "POST",
            "/v1/chat/completions",
            &[json_ct, ("x-cognitude-cache-ttl", "forever")],
            serde_json::to_vec(&chat("gpt-4o-mini", "ttl")).unwrap(),
        )
        .await;
    assert_eq!(resp.status(), 400);
    assert!(
        body_json(resp).await["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-cognitude-cache-ttl")
    );
    // A stream cut short is not stored; a complete one is, and serves a plain request.
    let cut = r#"@mock{"words": 6, "cut_after": 2}"#;
    sse_events(h.post_json(&stream_chat("gpt-4o-mini", cut, false)).await).await;
    assert_eq!(send(cut, None).await.1.as_deref(), Some("miss"));
    sse_events(
        h.post_json(&stream_chat("gpt-4o-mini", "full stream", false))
            .await,
    )
    .await;
    h.state.ledger().flush().await;
    let mut cached = None;
    for _ in 0..50 {
        cached = send("full stream", None).await.1;
        if cached.as_deref() == Some("hit-memory") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cached.as_deref(), Some("hit-memory"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn identical_misses_at_once_make_one_upstream_call() {
    let h = Arc::new(Harness::start().await);
    let body = chat(
        "gpt-4o-mini",
        r#"slow one @mock{"delay_ms": 300, "key": "coalesce"}"#,
    );
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (h, body) = (h.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let resp = h.post_json(&body).await;
            let status = resp.status();
            (status, body_json(resp).await)
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        let (status, v) = t.await.unwrap();
        assert_eq!(status, 200);
        answers.push(v);
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(h.mock.stats().requests_for_key("coalesce"), 1);
}

// ---- alerts -------------------------------------------------------------------------------

/// A loopback HTTP receiver standing in for a customer's webhook endpoint.
async fn webhook_receiver() -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<(http::HeaderMap, Bytes)>,
) {
    use hyper::service::service_fn;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let bytes = body.collect().await.unwrap().to_bytes();
                        let _ = tx.send((parts.headers, bytes));
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_api_manages_channels_and_rules_per_org() {
    let h = Harness::full(
        MockConfig::default(),
        DEFAULT_UPSTREAM,
        "[auth]\nfailed_attempts_per_minute = 1000\n[alerts]\nenabled = false\nallow_hosts = [\"127.0.0.1\"]",
    )
    .await;
    let (addr, mut received) = webhook_receiver().await;
    let secret = "whsec-0123456789abcdef";
    let post = |path: &str, body: Value| {
        let path = path.to_owned();
        let h = &h;
        async move {
            let resp = h
                .request(
                    "POST",
                    &path,
                    &[("content-type", "application/json")],
                    serde_json::to_vec(&body).unwrap(),
                )
                .await;
            let status = resp.status().as_u16();
            (status, body_json(resp).await)
        }
    };
    let (status, channel) = post(
        "/alerts/channels",
        json!({"name": "ops hook", "kind": "webhook",
               "config": {"url": format!("http://{addr}/hook"), "secret": secret}}),
    )
    .await;
    assert_eq!(status, 201, "{channel}");
    assert!(
        !channel.to_string().contains(secret),
        "a signing secret was returned"
    );
    let id = channel["id"].as_str().unwrap().to_owned();

    let (status, v) = post(&format!("/alerts/channels/{id}/test"), json!({})).await;
    assert_eq!(status, 200, "{v}");
    let (headers, body) = tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .unwrap()
        .unwrap();
    let sig = headers["x-cognitude-signature"].to_str().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(cognitude_alerts::signature::verify(
        secret.as_bytes(),
        sig,
        &body,
        now,
        300
    ));
    assert!(!cognitude_alerts::signature::verify(
        b"wrong-secret-000000",
        sig,
        &body,
        now,
        300
    ));

    let (status, rule) = post(
        "/alerts/rules",
        json!({"name": "daily spend", "channel_ids": [id],
               "condition": {"kind": "spend", "period": "day", "amount_usd": "5"}}),
    )
    .await;
    assert_eq!(status, 201, "{rule}");
    let list = body_json(h.request("GET", "/alerts/rules", &[], Vec::new()).await).await;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1), "{list}");

    // A private address that is not allow-listed is refused.
    let (status, v) = post(
        "/alerts/channels",
        json!({"name": "internal", "kind": "webhook",
               "config": {"url": "https://10.1.2.3/hook", "secret": secret}}),
    )
    .await;
    assert_eq!(status, 400, "{v}");

    // Another organization sees none of it.
    let other = h.state.store().create_org("elsewhere").await.unwrap();
    let key = h
        .state
        .store()
        .create_key(&other.id, "k")
        .await
        .unwrap()
        .secret;
    let auth = format!("Bearer {key}");
    let list = body_json(
        h.request(
            "GET",
            "/alerts/rules",
            &[("authorization", &auth)],
            Vec::new(),
        )
        .await,
    )
    .await;
    assert_eq!(list["data"], json!([]), "{list}");
    let resp = h
        .request(
            "GET",
            &format!("/alerts/channels/{id}"),
            &[("authorization", &auth)],
            Vec::new(),
        )
        .await;
    assert_eq!(resp.status(), 404);
    let history = h.request("GET", "/alerts/history", &[], Vec::new()).await;
    assert_eq!(history.status(), 200);
    h.stop().await;
}
