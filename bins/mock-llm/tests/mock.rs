//! The mock server over real HTTP, driven by hyper-util's client the way the proxy drives it.
// Marks the helpers below as test code too, so the workspace's allow-unwrap-in-tests covers them.
#![cfg(test)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use cognitude_mock_llm::{MockConfig, MockServer};
use cognitude_protocol::sse::{SseDecoder, SseEvent};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn start() -> MockServer {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    assert_eq!(server.base_url(), format!("http://{}/v1", server.addr()));
    server
}

/// Sends a request to `path` on the server and returns the response with its body unread.
async fn send(
    client: &HttpClient,
    server: &MockServer,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Response<Incoming> {
    let url = format!("http://{}{path}", server.addr());
    let mut builder = Request::builder().uri(url);
    builder = match body {
        Some(_) => builder
            .method("POST")
            .header("content-type", "application/json"),
        None => builder.method("GET"),
    };
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    client
        .request(builder.body(Full::new(Bytes::from(bytes))).unwrap())
        .await
        .unwrap()
}

/// Sends a request and reads its JSON body.
async fn call(
    server: &MockServer,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (StatusCode, HeaderMap, Value) {
    let response = send(&client(), server, path, headers, body).await;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        serde_json::from_slice(&bytes).unwrap(),
    )
}

/// Reads a stream's events until it ends; the second value says whether it ended with an error.
async fn events(response: Response<Incoming>) -> (Vec<SseEvent>, bool) {
    let mut body = response.into_body();
    let mut decoder = SseDecoder::default();
    let mut out = Vec::new();
    let mut failed = false;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    decoder.push(data).unwrap();
                }
                while let Some(event) = decoder.next_event() {
                    out.push(event);
                }
            }
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    (out, failed)
}

fn chat(user: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": user}]})
}

fn json_of(event: &SseEvent) -> Value {
    serde_json::from_str(&event.data).unwrap()
}

const ANTHROPIC_HEADERS: [(&str, &str); 2] = [
    ("x-api-key", "sk-ant-test"),
    ("anthropic-version", "2023-06-01"),
];

#[tokio::test]
async fn openai_completion_has_the_real_shape_and_usage() {
    let server = start().await;
    let body = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is the capital of France?"}]});
    let (status, headers, json) = call(&server, "/v1/chat/completions", &[], Some(&body)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(json["id"], "chatcmpl-mock-1");
    assert_eq!(json["object"], "chat.completion");
    assert!(json["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(json["model"], "gpt-4o-mini");
    assert_eq!(json["system_fingerprint"], "fp_mock");
    assert_eq!(json["service_tier"], "default");
    let choice = &json["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(
        choice["message"]["content"],
        "Hello from mock-llm. You said: What is the capital of France?"
    );
    assert_eq!(choice["message"]["refusal"], Value::Null);
    assert_eq!(choice["logprobs"], Value::Null);
    assert_eq!(choice["finish_reason"], "stop");
    // Prompt: "You are terse." is 14 bytes (4 + 4), the question 30 bytes (8 + 4).
    assert_eq!(
        json["usage"],
        json!({"prompt_tokens": 20, "completion_tokens": 11, "total_tokens": 31,
               "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
               "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                   "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}})
    );

    let mut cut = chat(r#"@mock{"words": 50}"#);
    cut["max_completion_tokens"] = json!(4);
    let (_, _, json) = call(&server, "/v1/chat/completions", &[], Some(&cut)).await;
    assert_eq!(json["choices"][0]["message"]["content"], "w1 w2 w3 w4");
    assert_eq!(json["choices"][0]["finish_reason"], "length");
    assert_eq!(json["usage"]["completion_tokens"], 4);
}

#[tokio::test]
async fn openai_tool_call_answers_with_the_first_tool() {
    let server = start().await;
    let mut body = chat(r#"Weather in Paris? @mock{"tool_call": true}"#);
    body["tools"] = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object"}}}]);
    let (_, _, json) = call(&server, "/v1/chat/completions", &[], Some(&body)).await;
    let choice = &json["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    assert_eq!(
        choice["message"]["tool_calls"],
        json!([{"id": "call_mock_1", "type": "function", "function": {"name": "get_weather",
            "arguments": "{\"location\":\"Paris\"}"}}])
    );
}

#[tokio::test]
async fn openai_stream_sends_chunks_in_order_and_usage_only_when_asked() {
    let server = start().await;
    let client = client();
    let mut body = chat(r#"@mock{"words": 3}"#);
    body["stream"] = json!(true);

    let response = send(&client, &server, "/v1/chat/completions", &[], Some(&body)).await;
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let (plain, failed) = events(response).await;
    assert!(!failed);
    let data: Vec<&str> = plain.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data.len(), 6, "{data:?}");
    let first = json_of(&plain[0]);
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(
        first["choices"][0]["delta"],
        json!({"role": "assistant", "content": "", "refusal": null})
    );
    let words: Vec<Value> = plain[1..4]
        .iter()
        .map(|e| json_of(e)["choices"][0]["delta"]["content"].clone())
        .collect();
    assert_eq!(words, [json!("w1 "), json!("w2 "), json!("w3")]);
    let finish = json_of(&plain[4]);
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert!(plain[..5].iter().all(|e| json_of(e).get("usage").is_none()));
    assert!(plain[5].is_done());

    body["stream_options"] = json!({"include_usage": true});
    let response = send(&client, &server, "/v1/chat/completions", &[], Some(&body)).await;
    let (with_usage, failed) = events(response).await;
    assert!(!failed);
    assert_eq!(with_usage.len(), 7);
    assert!(
        with_usage[..5]
            .iter()
            .all(|e| json_of(e)["usage"].is_null())
    );
    let usage = json_of(&with_usage[5]);
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 3);
    assert_eq!(usage["usage"]["prompt_tokens"], 9);
    assert!(with_usage[6].is_done());
}

#[tokio::test]
async fn cut_after_ends_the_stream_without_done_and_with_an_error() {
    let server = start().await;
    let mut body = chat(r#"@mock{"words": 10, "cut_after": 3}"#);
    body["stream"] = json!(true);
    let response = send(&client(), &server, "/v1/chat/completions", &[], Some(&body)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (events, failed) = events(response).await;
    assert!(failed, "reading a cut stream must fail");
    assert_eq!(events.len(), 4, "role chunk and three words");
    assert!(events.iter().all(|e| !e.is_done()));
    assert!(
        events
            .iter()
            .all(|e| json_of(e)["choices"][0]["finish_reason"].is_null())
    );
    assert_eq!(server.stats().streams_completed(), 0);
}

#[tokio::test]
async fn malformed_at_replaces_one_chunk_with_broken_json() {
    let server = start().await;
    let mut body = chat(r#"@mock{"words": 4, "malformed_at": 2}"#);
    body["stream"] = json!(true);
    let response = send(&client(), &server, "/v1/chat/completions", &[], Some(&body)).await;
    let (events, failed) = events(response).await;
    assert!(!failed);
    assert_eq!(events[3].data, "{not json");
    assert!(serde_json::from_str::<Value>(&events[2].data).is_ok());
    assert!(events.last().unwrap().is_done());
}

#[tokio::test]
async fn status_with_times_fails_that_many_times_per_key() {
    let server = start().await;
    let directive = [("x-mock", r#"{"status": 500, "times": 2, "key": "flaky"}"#)];
    let body = chat("hi");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (status, _, json) =
            call(&server, "/v1/chat/completions", &directive, Some(&body)).await;
        if status != StatusCode::OK {
            assert_eq!(
                json,
                json!({"error": {"message": "mock-llm injected status 500",
                    "type": "server_error", "param": null, "code": null}})
            );
        }
        statuses.push(status.as_u16());
    }
    assert_eq!(statuses, [500, 500, 200]);
    assert_eq!(server.stats().requests_for_key("flaky"), 3);
    assert_eq!(server.stats().requests_for_key("other"), 0);
}

#[tokio::test]
async fn delay_ms_holds_the_headers_only_for_the_listed_models() {
    let server = start().await;
    let directive = r#"@mock{"delay_ms": 300, "models": ["slow-model"]}"#;
    let mut body = chat(directive);
    let started = Instant::now();
    let (status, _, _) = call(&server, "/v1/chat/completions", &[], Some(&body)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_millis(300));
    body["model"] = json!("slow-model");
    let started = Instant::now();
    call(&server, "/v1/chat/completions", &[], Some(&body)).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn anthropic_messages_answer_and_stream_in_order() {
    let server = start().await;
    let mut body = json!({"model": "claude-sonnet-4-5", "max_tokens": 3, "system": "Be brief.",
        "messages": [{"role": "user", "content": "Say hello please"}]});

    let (status, _, json) = call(&server, "/v1/messages", &[], Some(&body)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json["type"], "error");
    assert_eq!(json["error"]["type"], "authentication_error");
    let (status, _, json) = call(
        &server,
        "/v1/messages",
        &ANTHROPIC_HEADERS[..1],
        Some(&body),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json["error"]["type"], "invalid_request_error");

    let (status, headers, json) =
        call(&server, "/v1/messages", &ANTHROPIC_HEADERS, Some(&body)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.contains_key("request-id"));
    assert_eq!(json["id"], "msg_mock_3");
    assert_eq!(json["type"], "message");
    assert_eq!(json["role"], "assistant");
    assert_eq!(json["model"], "claude-sonnet-4-5");
    assert_eq!(
        json["content"],
        json!([{"type": "text", "text": "Hello from mock-llm."}])
    );
    assert_eq!(json["stop_reason"], "max_tokens");
    assert_eq!(json["stop_sequence"], Value::Null);
    // "Be brief." is 9 bytes (3 + 4), the user text 16 bytes (4 + 4).
    assert_eq!(
        json["usage"],
        json!({"input_tokens": 15, "output_tokens": 3,
               "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
    );

    body["stream"] = json!(true);
    body["max_tokens"] = json!(100);
    let response = send(
        &client(),
        &server,
        "/v1/messages",
        &ANTHROPIC_HEADERS,
        Some(&body),
    )
    .await;
    let (events, failed) = events(response).await;
    assert!(!failed);
    let names: Vec<&str> = events.iter().filter_map(|e| e.event.as_deref()).collect();
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(["content_block_delta"; 8]);
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);
    for event in &events {
        assert_eq!(json_of(event)["type"], event.event.as_deref().unwrap());
    }
    assert_eq!(json_of(&events[0])["message"]["usage"]["input_tokens"], 15);
    assert_eq!(json_of(&events[0])["message"]["usage"]["output_tokens"], 1);
    assert_eq!(
        json_of(&events[1])["content_block"],
        json!({"type": "text", "text": ""})
    );
    let text: String = events[3..11]
        .iter()
        .map(|e| json_of(e)["delta"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "Hello from mock-llm. You said: Say hello please");
    let delta = json_of(&events[12]);
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 8);
}

#[tokio::test]
async fn anthropic_tool_use_streams_input_json() {
    let server = start().await;
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": true,
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "Weather? @mock{\"tool_call\": true}"}]});
    let response = send(
        &client(),
        &server,
        "/v1/messages",
        &ANTHROPIC_HEADERS,
        Some(&body),
    )
    .await;
    let (events, _) = events(response).await;
    let start = json_of(&events[1]);
    assert_eq!(start["content_block"]["type"], "tool_use");
    assert_eq!(start["content_block"]["id"], "toolu_mock_1");
    assert_eq!(start["content_block"]["name"], "get_weather");
    let input: String = events
        .iter()
        .map(json_of)
        .filter(|e| e["delta"]["type"] == "input_json_delta")
        .map(|e| e["delta"]["partial_json"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&input).unwrap(),
        json!({"location": "Paris"})
    );
    let stop = events
        .iter()
        .map(json_of)
        .find(|e| e["type"] == "message_delta")
        .unwrap();
    assert_eq!(stop["delta"]["stop_reason"], "tool_use");
}

#[tokio::test]
async fn stats_count_requests_streams_and_keep_the_last_request() {
    let server = start().await;
    let stats = server.stats();
    let client = client();
    call(
        &server,
        "/v1/chat/completions",
        &[("x-trace", "one")],
        Some(&chat("a")),
    )
    .await;
    let mut streamed = chat(r#"b @mock{"key": "s"}"#);
    streamed["stream"] = json!(true);
    for _ in 0..2 {
        let response = send(
            &client,
            &server,
            "/v1/chat/completions",
            &[],
            Some(&streamed),
        )
        .await;
        assert!(!events(response).await.1);
    }
    let (status, _, models) = call(&server, "/v1/models", &[], None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(models["object"], "list");
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "gpt-4o-mini")
    );
    let (status, _, _) = call(&server, "/v1/nowhere", &[], None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    assert_eq!(stats.requests(), 3);
    assert_eq!(stats.streams_started(), 2);
    assert_eq!(stats.streams_completed(), 2);
    assert_eq!(stats.streams_cancelled(), 0);
    assert_eq!(stats.requests_for_key("s"), 2);
    assert_eq!(stats.last_request(), Some(streamed));
    assert!(stats.last_headers().unwrap().get("x-trace").is_none());

    let (_, _, json) = call(&server, "/_mock/stats", &[], None).await;
    assert_eq!(
        json,
        json!({"requests": 3, "streams_started": 2, "streams_completed": 2,
               "streams_cancelled": 0, "keys": {"s": 2}})
    );
}

#[tokio::test]
async fn a_client_dropping_a_slow_stream_is_counted_as_cancelled() {
    let server = start().await;
    let stats = server.stats();
    let mut body = chat(r#"@mock{"words": 1000, "chunk_delay_ms": 20}"#);
    body["stream"] = json!(true);
    let client = client();
    let response = send(&client, &server, "/v1/chat/completions", &[], Some(&body)).await;
    let mut body = response.into_body();
    for _ in 0..3 {
        assert!(body.frame().await.unwrap().is_ok());
    }
    drop(body);
    drop(client);

    let deadline = Instant::now() + Duration::from_secs(2);
    while stats.streams_cancelled() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stats.streams_cancelled(), 1);
    assert_eq!(stats.streams_started(), 1);
    assert_eq!(stats.streams_completed(), 0);
}

#[tokio::test]
async fn shutdown_closes_the_port() {
    let server = start().await;
    let addr = server.addr();
    server.shutdown();
    let deadline = Instant::now() + Duration::from_secs(2);
    while tokio::net::TcpStream::connect(addr).await.is_ok() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
