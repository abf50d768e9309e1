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
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cognitude_mock_llm::{MockConfig, MockServer};
use cognitude_protocol::sse::{SseDecoder, SseEvent};
use cognitude_server::{AppState, Config};
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

/// The process-wide metrics recorder (a recorder can be installed once per process).
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().unwrap())
        .clone()
}

/// A proxy in front of a mock upstream.
struct Harness {
    mock: MockServer,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// Models: `gpt-4o-mini` (OpenAI protocol), `claude-haiku-4-5` (Anthropic protocol), `primary`
/// (upstream model `up-a`, falls back to `backup`), `backup` (upstream `up-b`).
fn config_for(mock: &MockServer, upstream: &str) -> String {
    let base = mock.base_url();
    format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        max_body_bytes = 65536
        shutdown_grace_secs = 10

        [upstream]
        {upstream}

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
        "#
    )
}

impl Harness {
    async fn start() -> Harness {
        Harness::with(
            MockConfig::default(),
            "max_retries = 2\nretry_base_ms = 10\nretry_max_ms = 100",
        )
        .await
    }

    async fn with(mock_config: MockConfig, upstream: &str) -> Harness {
        let mock = MockServer::start(mock_config).await.unwrap();
        let settings = Config::from_toml(&config_for(&mock, upstream))
            .unwrap()
            .resolve(&HashMap::<String, String>::new())
            .unwrap();
        let state = AppState::new(settings, Some(metrics_handle())).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let server = tokio::spawn(cognitude_server::serve(listener, state, async {
            let _ = rx.await;
        }));
        let client = Client::builder(TokioExecutor::new()).build_http();
        Harness {
            mock,
            addr,
            shutdown: Some(tx),
            server: Some(server),
            client,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> http::Response<Incoming> {
        let mut b = http::Request::builder().method(method).uri(self.url(path));
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

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(s) = self.server.take() {
            s.await.unwrap().unwrap();
        }
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
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "usage leaked"
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
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
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
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
                events[..events.len() - 1]
                    .iter()
                    .map(|e| serde_json::from_str::<Value>(&e.data).unwrap())
                    .filter_map(|c| {
                        c["choices"][0]["delta"]["content"]
                            .as_str()
                            .map(str::to_owned)
                    })
                    .collect::<String>()
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
