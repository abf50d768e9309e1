//! The Cognitude HTTP service: an OpenAI-compatible proxy in front of LLM providers.
//!
//! The server owns HTTP: routing, request ids, body limits, status codes, headers and SSE. It
//! composes the other crates (protocol types, the catalog, the providers) and is built from a
//! state value, so tests drive [`handle`] without a socket and other programs can embed it.
//!
//! ```
//! use std::collections::HashMap;
//! use cognitude_server::{AppState, Config, ResponseBody, handle};
//! use http_body_util::{BodyExt, Full};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! // No configuration and no provider key: every catalog model is served by the built-in mock.
//! let settings = Config::default().resolve(&HashMap::new()).unwrap();
//! let state = AppState::new(settings, None).unwrap();
//! let req = http::Request::post("/v1/chat/completions")
//!     .header("content-type", "application/json")
//!     .body(Full::new(bytes::Bytes::from_static(
//!         br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}"#,
//!     )))
//!     .unwrap();
//! let resp = handle(state, req).await;
//! assert_eq!(resp.status(), 200);
//! assert_eq!(resp.headers()["x-cognitude-model"], "gpt-4o-mini");
//! let body = resp.into_body().collect().await.unwrap().to_bytes();
//! assert!(std::str::from_utf8(&body).unwrap().contains("Hello"));
//! # });
//! ```

mod body;
mod chat;
pub mod config;
mod error;
mod serve;
mod state;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use cognitude_protocol::{ModelList, ModelObject};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;

pub use body::ResponseBody;
pub use config::{Config, ConfigError, Env, ProcessEnv, Settings};
pub use error::ApiError;
pub use serve::serve;
pub use state::{AppState, BuildError, Route};

/// Per-request context shared by the handlers.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    pub request_id: String,
    pub started: Instant,
}

/// Metric names, in one place so dashboards and docs can rely on them.
pub mod metrics_names {
    pub const REQUESTS: &str = "cognitude_requests_total";
    pub const REQUEST_DURATION: &str = "cognitude_request_duration_seconds";
    pub const UPSTREAM_DURATION: &str = "cognitude_upstream_duration_seconds";
    pub const TOKENS: &str = "cognitude_tokens_total";
    pub const COST_NANO: &str = "cognitude_cost_nanodollars_total";
    pub const RETRIES: &str = "cognitude_upstream_retries_total";
    pub const FALLBACKS: &str = "cognitude_upstream_fallbacks_total";
    pub const STREAMS: &str = "cognitude_streams_total";
}

/// Histogram buckets (seconds) for the duration metrics: fine below 10 ms for cache hits, coarse
/// up to minutes for long generations.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0,
];

/// Answers one request. Never fails: every error becomes an OpenAI error response.
pub async fn handle<B>(state: Arc<AppState>, req: Request<B>) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send,
    B::Error: std::fmt::Display,
{
    let ctx = RequestCtx {
        request_id: request_id(req.headers()),
        started: Instant::now(),
    };
    let endpoint = endpoint_label(req.uri().path());
    let mut resp = match dispatch(&state, &ctx, req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let status = resp.status();
    metrics::counter!(metrics_names::REQUESTS, "endpoint" => endpoint, "status" => status_label(status))
        .increment(1);
    metrics::histogram!(metrics_names::REQUEST_DURATION, "endpoint" => endpoint)
        .record(ctx.started.elapsed().as_secs_f64());
    resp
}

/// The service hyper runs for each connection.
pub(crate) async fn service<B>(
    state: Arc<AppState>,
    req: Request<B>,
) -> Result<Response<ResponseBody>, Infallible>
where
    B: Body<Data = Bytes> + Send,
    B::Error: std::fmt::Display,
{
    Ok(handle(state, req).await)
}

async fn dispatch<B>(
    state: &Arc<AppState>,
    ctx: &RequestCtx,
    req: Request<B>,
) -> Result<Response<ResponseBody>, ApiError>
where
    B: Body<Data = Bytes> + Send,
    B::Error: std::fmt::Display,
{
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let allow = |expected: &Method| {
        if method == expected {
            Ok(())
        } else {
            Err(ApiError::MethodNotAllowed {
                method: method.to_string(),
                path: path.clone(),
            })
        }
    };
    match path.trim_end_matches('/') {
        "/v1/chat/completions" => {
            allow(&Method::POST)?;
            if state.is_shutting_down() {
                return Err(ApiError::ShuttingDown);
            }
            check_json_content_type(req.headers())?;
            let body = read_body(req, state.settings.max_body_bytes).await?;
            chat::handle(state, ctx, body).await
        }
        "/v1/models" => {
            allow(&Method::GET)?;
            Ok(models(state))
        }
        "/health" => {
            allow(&Method::GET)?;
            Ok(health(state))
        }
        "/metrics" => {
            allow(&Method::GET)?;
            Ok(prometheus(state))
        }
        _ => Err(ApiError::NotFound(path)),
    }
}

/// The client's `x-request-id` when it is short and printable, else a new random id.
fn request_id(headers: &HeaderMap) -> String {
    if let Some(v) = headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()) {
            return v.to_owned();
        }
    }
    format!("req_{:016x}{:08x}", fastrand::u64(..), fastrand::u32(..))
}

fn endpoint_label(path: &str) -> &'static str {
    match path.trim_end_matches('/') {
        "/v1/chat/completions" => "chat_completions",
        "/v1/models" => "models",
        "/health" => "health",
        "/metrics" => "metrics",
        _ => "other",
    }
}

fn status_label(s: StatusCode) -> &'static str {
    // Static labels keep the metric's cardinality bounded whatever a client sends.
    match s.as_u16() {
        200 => "200",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        413 => "413",
        415 => "415",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        s if s < 300 => "2xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(ct) = headers.get(http::header::CONTENT_TYPE) else {
        // Absent: accept, as OpenAI does, and let the JSON parser judge the body.
        return Ok(());
    };
    let text = ct.to_str().unwrap_or("");
    let mime = text.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/json") || mime.to_ascii_lowercase().ends_with("+json")
    {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(
            text.chars().take(100).collect(),
        ))
    }
}

/// Reads a request body up to `limit` bytes; a larger one is a 413 before it is all read.
async fn read_body<B>(req: Request<B>, limit: u64) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes> + Send,
    B::Error: std::fmt::Display,
{
    if let Some(len) = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit
    {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut body = std::pin::pin!(req.into_body());
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::invalid(format!("could not read the request body: {e}"), None)
        })?;
        if let Ok(data) = frame.into_data() {
            if (out.len() + data.len()) as u64 > limit {
                return Err(ApiError::PayloadTooLarge { limit });
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}

pub(crate) fn json_response(
    status: StatusCode,
    value: &impl serde::Serialize,
) -> Response<ResponseBody> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(ResponseBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_response(e: &ApiError) -> Response<ResponseBody> {
    let (status, _, _) = e.parts();
    if status.is_server_error() {
        tracing::warn!(status = status.as_u16(), error = %e, "request failed");
    }
    let mut resp = json_response(status, &e.body());
    if let ApiError::MethodNotAllowed { path, .. } = e {
        let allow = match path.trim_end_matches('/') {
            "/v1/chat/completions" => "POST",
            _ => "GET",
        };
        resp.headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    }
    resp
}

fn models(state: &AppState) -> Response<ResponseBody> {
    let list = ModelList {
        object: "list".into(),
        data: state
            .routes()
            .map(|r| ModelObject {
                id: r.name.clone(),
                object: "model".into(),
                created: 0,
                owned_by: state
                    .model_info(r)
                    .map_or_else(|| r.provider.name().to_owned(), |m| m.provider.clone()),
            })
            .collect(),
    };
    json_response(StatusCode::OK, &list)
}

fn health(state: &AppState) -> Response<ResponseBody> {
    let providers: serde_json::Map<String, serde_json::Value> = state
        .settings
        .providers
        .values()
        .map(|p| {
            (
                p.name.clone(),
                serde_json::json!({"status": "configured", "kind": format!("{:?}", p.kind).to_lowercase()}),
            )
        })
        .collect();
    let draining = state.is_shutting_down();
    let status = if draining { "shutting_down" } else { "ok" };
    let body = serde_json::json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.uptime().as_secs(),
        "mock_only": state.settings.mock_only,
        "components": {
            "server": {"status": if draining { "down" } else { "up" }, "required": true},
            "providers": providers,
        },
    });
    let code = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json_response(code, &body)
}

fn prometheus(state: &AppState) -> Response<ResponseBody> {
    let text = state.metrics().map(|h| h.render()).unwrap_or_default();
    let mut resp = Response::new(ResponseBody::full(text));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

/// Response headers that say who answered and what it cost.
pub(crate) mod headers {
    use cognitude_catalog::Money;
    use http::{HeaderMap, HeaderValue};

    use crate::state::Route;

    pub fn answered_by(h: &mut HeaderMap, route: &Route) {
        if let Ok(v) = HeaderValue::from_str(&route.name) {
            h.insert("x-cognitude-model", v);
        }
        if let Ok(v) = HeaderValue::from_str(route.provider.name()) {
            h.insert("x-cognitude-provider", v);
        }
    }

    pub fn cost(h: &mut HeaderMap, cost: Money) {
        if let Ok(v) = HeaderValue::from_str(&cost.to_string()) {
            h.insert("x-cognitude-cost-usd", v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_is_kept_when_sane() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert("x-request-id", HeaderValue::from_static("has space"));
        assert!(request_id(&h).starts_with("req_"));
        assert_ne!(request_id(&HeaderMap::new()), request_id(&HeaderMap::new()));
    }

    #[test]
    fn content_types() {
        let mut h = HeaderMap::new();
        assert!(check_json_content_type(&h).is_ok());
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(check_json_content_type(&h).is_ok());
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
        assert!(check_json_content_type(&h).is_err());
    }
}
