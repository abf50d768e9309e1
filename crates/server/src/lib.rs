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
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! # let dir = std::env::temp_dir().join(format!("cognitude-server-doc-{}", std::process::id()));
//! // No provider key: every catalog model is served by the built-in mock.
//! let toml = format!("[database]\nurl = \"sqlite://{}/doc.db\"\n[ledger]\nspill_path = \"{}/spill\"\n",
//!                    dir.display(), dir.display());
//! let settings = Config::from_toml(&toml).unwrap().resolve(&HashMap::new()).unwrap();
//! let (state, _background) = AppState::start(settings, None).await.unwrap();
//! let org = state.store().create_org("docs").await.unwrap();
//! let key = state.store().create_key(&org.id, "example").await.unwrap();
//! let req = http::Request::post("/v1/chat/completions")
//!     .header("authorization", format!("Bearer {}", key.secret))
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
//! # std::fs::remove_dir_all(&dir).ok();
//! # });
//! ```

mod admin;
mod alerts_api;
pub mod analytics;
mod auth;
mod body;
mod cache;
mod chat;
pub mod config;
mod error;
mod limits;
mod routing;
mod serve;
mod state;
mod usage;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use cognitude_protocol::{ModelList, ModelObject};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;

pub use auth::PeerAddr;
pub use body::ResponseBody;
pub use cache::migrate_cache;
pub use config::{Config, ConfigError, Env, ProcessEnv, Settings};
pub use error::ApiError;
pub use serve::serve;
pub use state::{AppState, Background, BuildError, Route};
pub use usage::Caller;

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
    pub const CACHE: &str = "cognitude_cache_requests_total";
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
    let peer = req.extensions().get::<PeerAddr>().map(|p| p.0.ip());
    let trimmed = path.trim_end_matches('/');
    match trimmed {
        "/v1/chat/completions" | "/v1/smart/completions" => {
            allow(&Method::POST)?;
            completion(state, ctx, req, peer, trimmed == "/v1/smart/completions").await
        }
        "/v1/smart/analyze" | "/v1/smart/info" => {
            allow(if trimmed == "/v1/smart/info" {
                &Method::GET
            } else {
                &Method::POST
            })?;
            let caller = org_caller(state, peer, req.headers()).await?;
            let body = read_body(req, state.settings.max_body_bytes).await?;
            routing::handle_read(state, &caller.org_id, trimmed, &body)
        }
        "/v1/models" => {
            allow(&Method::GET)?;
            auth::authenticate(
                state.authenticator(),
                state.settings.admin_key.as_ref(),
                state.failed_auth(),
                peer,
                req.headers(),
                true,
            )
            .await?;
            Ok(models(state))
        }
        "/v1/usage" => {
            allow(&Method::GET)?;
            let query = admin::UsageQuery::parse(req.uri().query())?;
            let principal = auth::authenticate(
                state.authenticator(),
                state.settings.admin_key.as_ref(),
                state.failed_auth(),
                peer,
                req.headers(),
                true,
            )
            .await?;
            let org = match (principal, &query.org) {
                (auth::Principal::Org(c), None) => c.org_id,
                (auth::Principal::Org(c), Some(o)) if *o == c.org_id => c.org_id,
                (auth::Principal::Org(_), Some(_)) => {
                    return Err(ApiError::Forbidden(
                        "An organization key can only read its own usage.".into(),
                    ));
                }
                (auth::Principal::Admin, Some(o)) => o.clone(),
                (auth::Principal::Admin, None) => {
                    return Err(ApiError::invalid(
                        "the admin key must name an organization with 'org'",
                        Some("org".into()),
                    ));
                }
            };
            admin::usage(state, &org, &query).await
        }
        "/health" => {
            allow(&Method::GET)?;
            Ok(health(state).await)
        }
        "/metrics" => {
            allow(&Method::GET)?;
            Ok(prometheus(state))
        }
        "/cache/stats" | "/cache" => {
            let principal = auth::authenticate(
                state.authenticator(),
                state.settings.admin_key.as_ref(),
                state.failed_auth(),
                peer,
                req.headers(),
                true,
            )
            .await?;
            let query = req.uri().query().map(str::to_owned);
            let named_org = query.as_deref().and_then(|q| {
                q.split('&')
                    .find_map(|p| p.strip_prefix("org="))
                    .map(str::to_owned)
            });
            let org = match (&principal, named_org) {
                (auth::Principal::Org(c), None) => Some(c.org_id.clone()),
                (auth::Principal::Org(c), Some(o)) if o == c.org_id => Some(o),
                (auth::Principal::Org(_), Some(_)) => {
                    return Err(ApiError::Forbidden(
                        "An organization key can only reach its own cache.".into(),
                    ));
                }
                (auth::Principal::Admin, o) => o,
            };
            match (trimmed, &method) {
                ("/cache/stats", &Method::GET) => {
                    let org = org.ok_or_else(|| {
                        ApiError::invalid(
                            "the admin key must name an organization with 'org'",
                            Some("org".into()),
                        )
                    })?;
                    cache::stats(state, &org, query.as_deref()).await
                }
                ("/cache", &Method::DELETE) => cache::clear(state, org.as_deref()).await,
                _ => Err(ApiError::MethodNotAllowed {
                    method: method.to_string(),
                    path: path.clone(),
                }),
            }
        }
        p if p.starts_with("/analytics") => {
            allow(&Method::GET)?;
            let principal = auth::authenticate(
                state.authenticator(),
                state.settings.admin_key.as_ref(),
                state.failed_auth(),
                peer,
                req.headers(),
                true,
            )
            .await?;
            analytics::handle(state, principal, p, req.uri().query()).await
        }
        p if p == "/alerts" || p.starts_with("/alerts/") => {
            let caller = org_caller(state, peer, req.headers()).await?;
            let query = req.uri().query().map(str::to_owned);
            let body = read_body(req, state.settings.max_body_bytes).await?;
            alerts_api::handle(state, &caller.org_id, &method, p, query.as_deref(), body).await
        }
        p if p == "/admin" || p.starts_with("/admin/") => {
            admin_caller(state, peer, req.headers()).await?;
            let body = read_body(req, state.settings.max_body_bytes).await?;
            admin::handle(state, &method, p, body).await
        }
        _ => Err(ApiError::NotFound(path)),
    }
}

/// `POST /v1/chat/completions`, or `/v1/smart/completions` (`smart`): one ledger record
/// whatever happens after authentication, and the rate-limit headers on every answer.
async fn completion<B>(
    state: &Arc<AppState>,
    ctx: &RequestCtx,
    req: Request<B>,
    peer: Option<std::net::IpAddr>,
    smart: bool,
) -> Result<Response<ResponseBody>, ApiError>
where
    B: Body<Data = Bytes> + Send,
    B::Error: std::fmt::Display,
{
    if state.is_shutting_down() {
        return Err(ApiError::ShuttingDown);
    }
    let caller = org_caller(state, peer, req.headers()).await?;
    let mut recorder = usage::Recorder::new(
        state.ledger().clone(),
        &caller,
        &ctx.request_id,
        if smart {
            "smart_completions"
        } else {
            "chat_completions"
        },
        ctx.started,
        state.settings.ledger.store_prompts,
    );
    let mut limits = None;
    let result = async {
        check_json_content_type(req.headers())?;
        let headers = req.headers().clone();
        let mut body = read_body(req, state.settings.max_body_bytes).await?;
        let mut requested = None;
        if smart {
            let parsed = routing::SmartBody::parse(&body)?;
            requested = parsed.requested.clone();
            body = parsed.into_chat_body()?;
        }
        let inbound = chat::Inbound {
            headers,
            body,
            requested,
        };
        chat::handle(state, ctx, inbound, &caller, &mut recorder, &mut limits).await
    }
    .await;
    // A stream has taken the record with it and finishes it when it ends.
    let mut resp = match result {
        Ok(resp) => {
            recorder.finish(resp.status().as_u16(), None);
            resp
        }
        Err(e) => {
            let (status, kind, _) = e.parts();
            recorder.finish(status.as_u16(), Some(kind));
            error_response(&e)
        }
    };
    if let Some(snapshot) = &limits {
        limits::headers(resp.headers_mut(), snapshot);
    }
    Ok(resp)
}

/// The organization behind a request's API key.
async fn org_caller(
    state: &AppState,
    peer: Option<std::net::IpAddr>,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    match auth::authenticate(
        state.authenticator(),
        None,
        state.failed_auth(),
        peer,
        headers,
        false,
    )
    .await?
    {
        auth::Principal::Org(c) => Ok(c),
        auth::Principal::Admin => Err(ApiError::Forbidden(
            "The admin key cannot make completion requests.".into(),
        )),
    }
}

/// Checks that a request carries the admin key.
async fn admin_caller(
    state: &AppState,
    peer: Option<std::net::IpAddr>,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let Some(admin_key) = state.settings.admin_key.as_ref() else {
        return Err(ApiError::Forbidden(
            "The admin API is disabled: set auth.admin_key or COGNITUDE_ADMIN_KEY.".into(),
        ));
    };
    match auth::authenticate(
        state.authenticator(),
        Some(admin_key),
        state.failed_auth(),
        peer,
        headers,
        true,
    )
    .await?
    {
        auth::Principal::Admin => Ok(()),
        auth::Principal::Org(_) => {
            Err(ApiError::Forbidden("This key is not the admin key.".into()))
        }
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
    let mut id = String::with_capacity(28);
    id.push_str("req_");
    cognitude_store::keys::push_hex(&mut id, u128::from(fastrand::u64(..)), 16);
    cognitude_store::keys::push_hex(&mut id, u128::from(fastrand::u32(..)), 8);
    id
}

fn endpoint_label(path: &str) -> &'static str {
    match path.trim_end_matches('/') {
        "/v1/chat/completions" => "chat_completions",
        "/v1/smart/completions" => "smart_completions",
        "/v1/smart/analyze" | "/v1/smart/info" => "smart",
        "/v1/models" => "models",
        "/v1/usage" => "usage",
        "/cache" | "/cache/stats" => "cache",
        p if p.starts_with("/alerts") => "alerts",
        p if p.starts_with("/analytics") => "analytics",
        "/health" => "health",
        "/metrics" => "metrics",
        p if p.starts_with("/admin") => "admin",
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

/// Reads a request body up to `limit` bytes; a larger one is a 413.
///
/// The rest of an oversized body is read and dropped (for at most two seconds and 64 MiB)
/// before answering: closing a connection with unread data makes the kernel send a reset, and
/// the client would see a broken connection instead of the 413.
async fn read_body<B>(req: Request<B>, limit: u64) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes> + Send,
    B::Error: std::fmt::Display,
{
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = std::pin::pin!(req.into_body());
    let mut out = bytes::BytesMut::new();
    let mut too_large = declared.is_some_and(|len| len > limit);
    if !too_large {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ApiError::invalid(format!("could not read the request body: {e}"), None)
            })?;
            if let Ok(data) = frame.into_data() {
                if (out.len() + data.len()) as u64 > limit {
                    too_large = true;
                    break;
                }
                out.extend_from_slice(&data);
            }
        }
    }
    if too_large {
        let drain = async {
            let mut seen: u64 = 0;
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(d) = frame.into_data() {
                    seen += d.len() as u64;
                    if seen > 64 * 1024 * 1024 {
                        break;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
        return Err(ApiError::PayloadTooLarge { limit });
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
            "/v1/chat/completions" | "/v1/smart/completions" | "/v1/smart/analyze" => "POST",
            p if p.starts_with("/admin") && p.ends_with("/limits") => "GET, PUT, DELETE",
            p if p.starts_with("/admin") => "GET, POST, DELETE",
            _ => "GET",
        };
        resp.headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    }
    if let Some(wait) = e.retry_after() {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(http::header::RETRY_AFTER, v);
        }
        // The OpenAI SDKs read this first: the wait to the millisecond.
        if let Ok(v) = HeaderValue::from_str(&wait.as_millis().max(1).to_string()) {
            resp.headers_mut().insert("retry-after-ms", v);
        }
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

async fn health(state: &AppState) -> Response<ResponseBody> {
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
    // The database is required for authentication of new keys; the ledger survives without it
    // (records spill to disk), so a failed ping makes the service degraded, not down.
    let db = tokio::time::timeout(std::time::Duration::from_secs(2), state.store().ping()).await;
    let (db_status, db_error) = match db {
        Ok(Ok(())) => ("up", None),
        Ok(Err(e)) => ("down", Some(e.to_string())),
        Err(_) => ("down", Some("ping timed out".to_owned())),
    };
    let ledger = state.ledger();
    let status = if draining {
        "shutting_down"
    } else if db_status == "up" && !state.limits().is_some_and(|l| l.is_degraded()) {
        "ok"
    } else {
        "degraded"
    };
    let body = serde_json::json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.uptime().as_secs(),
        "mock_only": state.settings.mock_only,
        "components": {
            "server": {"status": if draining { "down" } else { "up" }, "required": true},
            "database": {
                "status": db_status,
                "required": false,
                "backend": format!("{:?}", state.store().kind()).to_lowercase(),
                "error": db_error,
            },
            "ledger": {
                "status": if ledger.spill_pending() { "degraded" } else { "up" },
                "required": false,
                "queued": ledger.stats().queued(),
                "written": ledger.stats().written(),
                "spilled": ledger.stats().spilled(),
                "replayed": ledger.stats().replayed(),
            },
            "providers": providers,
            "ratelimit": state.limits().map(|l| l.health()),
            "cache": state.cache().map(|l| serde_json::json!({
                "status": if l.tiered.tier_health().iter().all(|t| t.consecutive_failures == 0) { "up" } else { "degraded" },
                "required": false,
                "tiers": l.tiered.tier_health(),
            })),
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

    pub fn cache(h: &mut HeaderMap, status: cognitude_cache::CacheStatus) {
        h.insert(
            "x-cognitude-cache",
            HeaderValue::from_static(status.as_str()),
        );
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
        let id = request_id(&HeaderMap::new());
        assert_eq!(id.len(), 28, "{id}");
        assert!(id[4..].bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
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
