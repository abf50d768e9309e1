//! Routing and the request flow: count, check, read the directive, wait, then answer or fail.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cognitude_protocol::anthropic::MessagesRequest;
use cognitude_protocol::{ChatRequest, parse_json};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use serde::Serialize;
use serde_json::{Number, Value};

use crate::directive::{self, Directive, Faults};
use crate::reply::{Call, reply};
use crate::stats::Stats;
use crate::stream::{self, BodyError, Pacing};
use crate::{MockConfig, anthropic, openai};

/// The body of every response.
pub(crate) type ResponseBody = BoxBody<Bytes, BodyError>;

/// Request bodies larger than this are refused.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// What every request handler shares.
#[derive(Debug)]
pub(crate) struct State {
    pub config: MockConfig,
    pub stats: Arc<Stats>,
}

/// Which API a request speaks; it decides the error body format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    OpenAi,
    Anthropic,
}

/// Answers one request.
pub(crate) async fn handle<B>(state: &State, req: Request<B>) -> Response<ResponseBody>
where
    B: Body,
    B::Error: Into<BodyError>,
{
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/chat/completions") => generate(state, Api::OpenAi, req).await,
        (&Method::POST, "/v1/messages") => generate(state, Api::Anthropic, req).await,
        (&Method::GET, "/v1/models") => json(StatusCode::OK, &openai::models()),
        (&Method::GET, "/_mock/stats") => json(StatusCode::OK, &state.stats.to_json()),
        (method, path) => error(
            Api::OpenAi,
            StatusCode::NOT_FOUND,
            &format!("Unknown request URL: {method} {path}"),
        ),
    }
}

/// Serializes a wire type. These hold only strings, numbers, and maps with string keys, which
/// serde_json always serializes; the fallback only keeps a future change from panicking.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|e| {
        Value::String(format!("mock-llm could not serialize its answer: {e}"))
            .to_string()
            .into_bytes()
    })
}

async fn generate<B>(state: &State, api: Api, req: Request<B>) -> Response<ResponseBody>
where
    B: Body,
    B::Error: Into<BodyError>,
{
    let (parts, body) = req.into_parts();
    let seq = state.stats.count_request(&parts.headers);
    let bytes = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let message = format!("could not read the request body: {e}");
            return error(api, StatusCode::BAD_REQUEST, &message);
        }
    };
    let parsed = serde_json::from_slice::<Value>(&bytes);
    state.stats.record_body(match &parsed {
        Ok(value) => value.clone(),
        Err(_) => Value::String(String::from_utf8_lossy(&bytes).into_owned()),
    });
    if api == Api::Anthropic
        && let Err((status, message)) = anthropic::check_headers(&parts.headers)
    {
        return error(api, status, message);
    }
    if let Err(e) = parsed {
        let message = format!("request body is not valid JSON: {e}");
        return error(api, StatusCode::BAD_REQUEST, &message);
    }
    let call = match api {
        Api::OpenAi => parse_json::<ChatRequest>(&bytes).map(|r| openai::call(&r)),
        Api::Anthropic => parse_json::<MessagesRequest>(&bytes).map(|r| anthropic::call(&r)),
    };
    let mut call = match call {
        Ok(call) => call,
        Err(e) => return error(api, StatusCode::BAD_REQUEST, &e.message),
    };
    let directive = match read_directive(&mut call, &parts.headers) {
        Ok(d) => d,
        Err(message) => return error(api, StatusCode::BAD_REQUEST, &message),
    };
    if let Some(key) = &directive.key {
        state.stats.count_key(key);
    }
    let faults = active_faults(&directive, &call.model, &state.stats);

    pause(state.config.latency + faults.delay).await;
    if let Some(status) = faults.status {
        return injected(api, status, faults.retry_after.as_ref());
    }
    let reply = reply(state.config.answer.as_deref(), &directive, &call.prompt);
    let created = unix_time();
    let mut response = if call.stream {
        let script = match api {
            Api::OpenAi => openai::script(&reply, &call.model, seq, created, call.include_usage),
            Api::Anthropic => anthropic::script(&reply, &call.model, seq),
        };
        let pacing = Pacing {
            chunk_delay: faults.chunk_delay.unwrap_or(state.config.per_token),
            cut_after: faults.cut_after,
            malformed_at: faults.malformed_at,
        };
        let body = stream::play(script, pacing, state.stats.clone());
        let mut response = Response::new(body.boxed());
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    } else {
        // Generation time: the whole answer's tokens, paid before the headers as a real
        // non-streaming API does.
        let tokens = u32::try_from(reply.completion_tokens).unwrap_or(u32::MAX);
        pause(state.config.per_token.saturating_mul(tokens)).await;
        match api {
            Api::OpenAi => json(
                StatusCode::OK,
                &openai::completion(&reply, &call.model, seq, created),
            ),
            Api::Anthropic => json(
                StatusCode::OK,
                &anthropic::response(&reply, &call.model, seq),
            ),
        }
    };
    let request_id = match api {
        Api::OpenAi => "x-request-id",
        Api::Anthropic => "request-id",
    };
    if let Ok(value) = HeaderValue::from_str(&format!("req_mock_{seq}")) {
        response.headers_mut().insert(request_id, value);
    }
    response
}

/// Reads the directive from the last user message and the `x-mock` header, and takes it out of
/// the text the default answer quotes.
/// Waits `delay`; no wait at all when it is zero. A zero-length tokio sleep still waits for the
/// timer's next millisecond tick, which made a "no latency" mock take about a millisecond per
/// sleep and hid the proxy's own cost under it.
async fn pause(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

fn read_directive(call: &mut Call, headers: &HeaderMap) -> Result<Directive, String> {
    let (in_text, rest) = directive::extract(&call.prompt.user_text)?;
    call.prompt.user_text = rest;
    let header = headers.get(directive::HEADER).map(HeaderValue::as_bytes);
    Directive::merge(in_text, header)
}

/// The faults that apply to this request: those of a directive that targets its model, within
/// the directive's `times`.
fn active_faults(directive: &Directive, model: &str, stats: &Stats) -> Faults {
    if !directive.has_fault() || !directive.targets(model) {
        return Faults::default();
    }
    let within_times = directive
        .times
        .is_none_or(|times| stats.count_fault(directive.counter_name()) <= u64::from(times));
    if within_times {
        directive.faults()
    } else {
        Faults::default()
    }
}

/// The response to an injected `status`.
fn injected(api: Api, status: StatusCode, retry_after: Option<&Number>) -> Response<ResponseBody> {
    let message = format!("mock-llm injected status {}", status.as_u16());
    let mut response = error(api, status, &message);
    if let Some(seconds) = retry_after {
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            headers.insert(RETRY_AFTER, value);
        }
        if let Some(secs) = seconds.as_f64().filter(|s| s.is_finite() && *s >= 0.0) {
            let millis = Duration::from_secs_f64(secs).as_millis();
            if let Ok(value) = HeaderValue::from_str(&millis.to_string()) {
                // OpenAI's own header, which its SDKs prefer to `retry-after`.
                headers.insert("retry-after-ms", value);
            }
        }
    }
    response
}

fn error(api: Api, status: StatusCode, message: &str) -> Response<ResponseBody> {
    match api {
        Api::OpenAi => json(status, &openai::error(status, message)),
        Api::Anthropic => json(status, &anthropic::error(status, message)),
    }
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<ResponseBody> {
    let body = Full::new(Bytes::from(encode(value)))
        .map_err(|never: Infallible| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State {
            config: MockConfig::default(),
            stats: Arc::new(Stats::default()),
        }
    }

    async fn post(state: &State, path: &str, body: &str) -> (StatusCode, HeaderMap, Value) {
        let req = Request::post(path)
            .header("x-api-key", "k")
            .header("anthropic-version", "2023-06-01")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let response = handle(state, req).await;
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (parts.status, parts.headers, json)
    }

    #[tokio::test]
    async fn times_is_counted_only_for_targeted_models() {
        let state = state();
        let body = |model: &str| {
            format!(
                r#"{{"model":"{model}","messages":[{{"role":"user","content":
                "@mock{{\"status\":503,\"times\":2,\"key\":\"t\",\"models\":[\"a\"]}}"}}]}}"#
            )
        };
        let statuses = [
            post(&state, "/v1/chat/completions", &body("a")).await.0,
            post(&state, "/v1/chat/completions", &body("b")).await.0,
            post(&state, "/v1/chat/completions", &body("a")).await.0,
            post(&state, "/v1/chat/completions", &body("a")).await.0,
        ];
        assert_eq!(statuses.map(|s| s.as_u16()), [503, 200, 503, 200]);
        assert_eq!(state.stats.requests_for_key("t"), 4);
    }

    #[tokio::test]
    async fn injected_status_sets_retry_headers_in_each_format() {
        let state = state();
        let body = r#"{"model":"m","max_tokens":5,"messages":[{"role":"user",
            "content":"@mock{\"status\":429,\"retry_after\":1.5}"}]}"#;
        let (status, headers, json) = post(&state, "/v1/chat/completions", body).await;
        assert_eq!(status, 429);
        assert_eq!(headers[RETRY_AFTER], "1.5");
        assert_eq!(headers["retry-after-ms"], "1500");
        assert_eq!(json["error"]["message"], "mock-llm injected status 429");
        let (status, _, json) = post(&state, "/v1/messages", body).await;
        assert_eq!(status, 429);
        assert_eq!(json["type"], "error");
        assert_eq!(json["error"]["type"], "rate_limit_error");
    }

    #[tokio::test]
    async fn bad_bodies_and_bad_directives_are_400() {
        let state = state();
        let (status, _, json) = post(&state, "/v1/chat/completions", "not json").await;
        assert_eq!(status, 400);
        assert_eq!(json["error"]["type"], "invalid_request_error");
        assert_eq!(state.stats.last_request(), Some(Value::from("not json")));
        let typo = r#"{"model":"m","messages":[{"role":"user","content":"@mock{\"stauts\":1}"}]}"#;
        let (status, _, json) = post(&state, "/v1/chat/completions", typo).await;
        assert_eq!(status, 400);
        assert!(
            json["error"]["message"]
                .as_str()
                .unwrap()
                .contains("stauts")
        );
        let (status, _, json) = post(&state, "/v1/nothing", "{}").await;
        assert_eq!(status, 404);
        assert!(
            json["error"]["message"]
                .as_str()
                .unwrap()
                .contains("/v1/nothing")
        );
        assert_eq!(state.stats.requests(), 2);
    }

    #[tokio::test]
    async fn the_directive_is_not_quoted_back() {
        let state = state();
        let body = r#"{"model":"m","messages":[{"role":"user","content":"ping @mock{\"key\":\"q\"} pong"}]}"#;
        let (status, headers, json) = post(&state, "/v1/chat/completions", body).await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-request-id"], "req_mock_1");
        assert_eq!(
            json["choices"][0]["message"]["content"],
            "Hello from mock-llm. You said: ping  pong"
        );
    }
}
