//! `POST /v1/chat/completions`: validate, resolve the model, call the upstream with retries and
//! fallbacks, and answer as JSON or as an SSE stream forwarded chunk by chunk.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cognitude_catalog::{Money, TokenUsage};
use cognitude_protocol::sse;
use cognitude_protocol::{ChatChunk, ChatRequest, ErrorBody, StreamAssembler, Usage, parse_json};
use cognitude_providers::{ChunkStream, Error as UpstreamError};
use cognitude_ratelimit::Snapshot;
use http::{HeaderValue, Response};

use cognitude_cache::{CacheKey, CacheStatus, CanonicalRequest, Directives};

use crate::body::ResponseBody;
use crate::cache::{self, Answer, CacheLayer, Plan};
use crate::error::ApiError;
use crate::limits::Held;
use crate::routing;
use crate::state::{AppState, Route};
use crate::usage::{Caller, Recorder, estimated_usage};
use crate::{RequestCtx, headers, metrics_names as m};

/// What an upstream call produced, and which route produced it.
struct Answered<'a, T> {
    value: T,
    route: &'a Route,
}

/// What a completion request brought.
pub(crate) struct Inbound {
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// On `/v1/smart/completions`, the concrete model the client named (for policy rules and
    /// as the savings baseline).
    pub requested: Option<String>,
}

pub(crate) async fn handle(
    state: &Arc<AppState>,
    ctx: &RequestCtx,
    inbound: Inbound,
    caller: &Caller,
    recorder: &mut Recorder,
    limits: &mut Option<Snapshot>,
) -> Result<Response<ResponseBody>, ApiError> {
    let Inbound {
        headers: req_headers,
        body,
        requested,
    } = inbound;
    let requested = requested.as_deref();
    let mut req: ChatRequest =
        parse_json(&body).map_err(|e| ApiError::invalid(e.message, e.field))?;
    // Canonical once: the ledger's request hash and the cache key both come from it.
    let mut canonical = CanonicalRequest::of(&req).ok();
    recorder.request(&req, canonical.as_ref());
    req.validate()
        .map_err(|e| ApiError::invalid(e.to_string(), Some(e.field)))?;
    let directives = cache::directives(&req_headers)?;
    let routing = state.routing();
    let (route, routed) = match routing::auto_mode(&req.model)? {
        Some(mode) => {
            let routed = routing.route(state.catalog(), &caller.org_id, &req, mode, requested)?;
            let route = state
                .route(&routed.route)
                .ok_or_else(|| ApiError::ModelNotFound(routed.route.clone()))?;
            recorder.routed(&routed);
            // From here on the request is for the chosen model (the cache key included).
            req.model.clone_from(&routed.route);
            canonical = CanonicalRequest::of(&req).ok();
            (route, Some(routed))
        }
        None => {
            let route = state
                .route(&req.model)
                .ok_or_else(|| ApiError::ModelNotFound(req.model.clone()))?;
            let c = routing.classify(&caller.org_id, &req);
            recorder.classified(c.score, c.tier.as_str());
            (route, None)
        }
    };
    let mut resp = answer_routed(
        state, ctx, req, canonical, route, caller, recorder, limits, directives,
    )
    .await?;
    if let Some(r) = &routed {
        routing::headers(resp.headers_mut(), r);
    }
    Ok(resp)
}

/// Admits, looks up the cache, and calls the route.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site; the request's whole context"
)]
async fn answer_routed(
    state: &Arc<AppState>,
    ctx: &RequestCtx,
    req: ChatRequest,
    canonical: Option<CanonicalRequest>,
    route: &Route,
    caller: &Caller,
    recorder: &mut Recorder,
    limits: &mut Option<Snapshot>,
    directives: Directives,
) -> Result<Response<ResponseBody>, ApiError> {
    // Admission reserves the prompt's estimated tokens plus max_tokens; settled to the real
    // usage when the response ends.
    let held = match state.limits() {
        Some(l) => {
            let r = recorder.rec();
            let reserve = u64::try_from(r.prompt_tokens_est).unwrap_or(0)
                + r.max_tokens
                    .and_then(|m| u64::try_from(m).ok())
                    .unwrap_or(0);
            Some(l.admit(caller, reserve, limits).await?)
        }
        None => None,
    };

    let plan = Plan::new(state, &caller.org_id, canonical.as_ref(), directives);
    if plan.status == CacheStatus::Miss
        && let (Some(layer), Some(key)) = (&plan.layer, &plan.key)
        && let Some(hit) = layer.tiered.lookup(key).await
    {
        // A hit calls no model: the reserved tokens go back.
        settle(held, 0);
        recorder.no_route_saving();
        return Ok(serve_hit(&req, hit, recorder));
    }
    recorder.rec().cache_status = Some(plan.status.as_str().to_owned());

    if req.is_stream() {
        stream(state, ctx, req, route, recorder, plan, held).await
    } else {
        complete(state, ctx, req, route, recorder, plan, held).await
    }
}

/// Settles a reservation, if the request was rate limited, to the tokens it really used.
fn settle(held: Option<Held>, tokens: u64) {
    if let Some(h) = held {
        h.settle(tokens);
    }
}

/// The tokens a response used, as rate limits count them.
fn used_tokens(usage: Option<&Usage>) -> u64 {
    usage.map_or(0, |u| u.prompt_tokens.saturating_add(u.completion_tokens))
}

/// Answers from a cache entry: the stored completion as JSON, or replayed as a stream. A hit
/// costs the organization nothing; the ledger records what it saved.
fn serve_hit(
    req: &ChatRequest,
    hit: cognitude_cache::Hit,
    recorder: &mut Recorder,
) -> Response<ResponseBody> {
    let status = hit.status();
    let cached = &hit.entry.response;
    recorder.answered(
        cached.model(),
        cached.provider(),
        cached.completion().usage.as_ref(),
        false,
        Some(Money::ZERO),
    );
    let r = recorder.rec();
    r.cache_status = Some(status.as_str().to_owned());
    r.cache_saved_pico = cached.cost_picodollars();
    metrics::counter!(m::CACHE, "status" => status.as_str()).increment(1);
    let (body, content_type) = if req.is_stream() {
        (
            Bytes::from(cache::replay_body(
                cached.completion(),
                req.wants_stream_usage(),
            )),
            "text/event-stream",
        )
    } else {
        (cached.completion_json(), "application/json")
    };
    let mut resp = Response::new(ResponseBody::full(body));
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    if let Ok(v) = HeaderValue::from_str(cached.model()) {
        h.insert("x-cognitude-model", v);
    }
    if let Ok(v) = HeaderValue::from_str(cached.provider()) {
        h.insert("x-cognitude-provider", v);
    }
    headers::cost(h, Money::ZERO);
    headers::cache(h, status);
    resp
}

/// One upstream call for a complete response.
async fn answer(
    state: &Arc<AppState>,
    req: &ChatRequest,
    route: &Route,
) -> Result<Arc<Answer>, ApiError> {
    let answered = call_with_fallbacks(state, route, |r| {
        let upstream_req = for_route(req, r);
        async move { r.provider.complete(&upstream_req).await }
    })
    .await?;
    let used = answered.route;
    let completion = answered.value;
    let cost = completion
        .usage
        .as_ref()
        .and_then(|u| cost_of(state, used, u));
    record_usage(used, completion.usage.as_ref(), cost);
    Ok(Arc::new(Answer::new(
        completion,
        &used.name,
        used.provider.name(),
        cost,
    )))
}

async fn complete(
    state: &Arc<AppState>,
    ctx: &RequestCtx,
    req: ChatRequest,
    route: &Route,
    recorder: &mut Recorder,
    plan: Plan,
    held: Option<Held>,
) -> Result<Response<ResponseBody>, ApiError> {
    // Identical misses at the same time share one upstream call.
    let (result, shared) = match (&plan.layer, &plan.key, plan.status) {
        (Some(layer), Some(key), CacheStatus::Miss) => {
            let c = layer
                .coalescer
                .run(key.clone(), || answer(state, &req, route))
                .await;
            (c.value, c.shared)
        }
        _ => (answer(state, &req, route).await, false),
    };
    let ans = match result {
        Ok(ans) => ans,
        Err(e) => {
            settle(held, 0);
            return Err(e);
        }
    };
    // A caller that waited on another's identical call used no tokens of its own.
    settle(
        held,
        if shared {
            0
        } else {
            used_tokens(ans.completion().usage.as_ref())
        },
    );
    if !shared && let Some((layer, key)) = plan.storable() {
        layer
            .store_answer(&key, &req.model, &plan.directives, &ans)
            .await;
    }
    let completion = ans.completion();
    // A caller that waited on another's identical call made no call of its own: it costs nothing.
    let cost = if shared { Some(Money::ZERO) } else { ans.cost };
    recorder.answered(
        ans.route(),
        ans.response.provider(),
        completion.usage.as_ref(),
        false,
        cost,
    );
    if shared {
        let r = recorder.rec();
        r.cache_status = Some("coalesced".into());
        r.cache_saved_pico = ans
            .cost
            .map_or(0, |c| i64::try_from(c.pico()).unwrap_or(i64::MAX));
    }
    recorder.completion_text(|| {
        completion
            .choices
            .first()
            .map(|c| c.message.text_content())
            .unwrap_or_default()
    });
    metrics::counter!(m::CACHE, "status" => plan.status.as_str()).increment(1);

    let mut resp = Response::new(ResponseBody::full(ans.response.completion_json()));
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(used) = state.route(ans.route()) {
        headers::answered_by(h, used);
    }
    if let Some(c) = cost {
        headers::cost(h, c);
    }
    headers::cache(h, plan.status);
    tracing::debug!(request_id = %ctx.request_id, model = ans.route(), "completion served");
    Ok(resp)
}

async fn stream(
    state: &Arc<AppState>,
    ctx: &RequestCtx,
    req: ChatRequest,
    route: &Route,
    recorder: &mut Recorder,
    plan: Plan,
    held: Option<Held>,
) -> Result<Response<ResponseBody>, ApiError> {
    // Fallbacks apply until the first chunk: after that the client has content and a switch
    // would mix two answers.
    let answered = call_with_fallbacks(state, route, |r| {
        let upstream_req = for_route(&req, r);
        async move {
            let mut s = r.provider.stream(&upstream_req).await?;
            let first = s.next_chunk().await?;
            Ok((first, s))
        }
    })
    .await;
    let answered = match answered {
        Ok(a) => a,
        Err(e) => {
            settle(held, 0);
            return Err(e);
        }
    };
    let (first, upstream) = answered.value;
    let used = answered.route.clone();
    recorder.first_token();

    let (tx, body) = ResponseBody::channel(32);
    let forwarder = Forwarder {
        state: state.clone(),
        route: used.clone(),
        wants_usage: req.wants_stream_usage(),
        request_id: ctx.request_id.clone(),
        started: ctx.started,
        recorder: recorder.hand_off(),
        upstream_model: used.upstream_model.clone(),
        store_to: plan.storable().map(|(l, k)| (l, k, plan.directives)),
        req,
        held,
    };
    metrics::counter!(m::CACHE, "status" => plan.status.as_str()).increment(1);
    tokio::spawn(forwarder.run(first, upstream, tx));

    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    // Tells nginx-style proxies in front of us not to buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    headers::answered_by(h, &used);
    headers::cache(h, plan.status);
    Ok(resp)
}

/// Forwards a stream's chunks to the client while assembling them for usage and cost.
struct Forwarder {
    state: Arc<AppState>,
    route: Route,
    wants_usage: bool,
    request_id: String,
    started: Instant,
    recorder: Recorder,
    upstream_model: String,
    /// Where to store the assembled response if the stream completes.
    store_to: Option<(Arc<CacheLayer>, CacheKey, Directives)>,
    req: ChatRequest,
    /// The rate-limit reservation, settled when the stream ends.
    held: Option<Held>,
}

/// How a forwarded stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamEnd {
    Completed,
    UpstreamFailed,
    ClientGone,
}

impl StreamEnd {
    fn as_str(self) -> &'static str {
        match self {
            StreamEnd::Completed => "completed",
            StreamEnd::UpstreamFailed => "upstream_failed",
            StreamEnd::ClientGone => "client_gone",
        }
    }
}

impl Forwarder {
    async fn run(
        mut self,
        first: Option<ChatChunk>,
        mut upstream: ChunkStream,
        tx: tokio::sync::mpsc::Sender<Bytes>,
    ) {
        let mut assembler = StreamAssembler::new();
        // The first chunk was read before the response started; `None` there is an empty stream.
        let mut pending = Some(Ok(first));
        let end = loop {
            let next = match pending.take() {
                Some(r) => r,
                None => {
                    tokio::select! {
                        // The client left: stop reading, which drops the upstream connection.
                        () = tx.closed() => break StreamEnd::ClientGone,
                        r = upstream.next_chunk() => r,
                    }
                }
            };
            match next {
                Ok(Some(mut chunk)) => {
                    assembler.push(&chunk);
                    let usage_only = chunk.choices.is_empty() && chunk.usage.is_some();
                    if !self.wants_usage {
                        if usage_only {
                            continue;
                        }
                        chunk.usage = None;
                    }
                    let Ok(json) = serde_json::to_vec(&chunk) else {
                        continue;
                    };
                    if tx.send(sse::encode_data(&json)).await.is_err() {
                        break StreamEnd::ClientGone;
                    }
                }
                Ok(None) => {
                    let _ = tx.send(sse::done()).await;
                    break StreamEnd::Completed;
                }
                Err(e) => {
                    tracing::warn!(request_id = %self.request_id, error = %e, "upstream stream failed");
                    let err = ApiError::from(e);
                    let body: ErrorBody = err.body();
                    if let Ok(json) = serde_json::to_vec(&body) {
                        let _ = tx.send(sse::encode_data(&json)).await;
                    }
                    break StreamEnd::UpstreamFailed;
                }
            }
        };
        drop(upstream);
        let reported = assembler.usage().cloned();
        let estimated = reported.is_none();
        let mut completion = assembler.finish();
        let text = || {
            completion
                .choices
                .iter()
                .map(|c| {
                    let mut t = c.message.text_content();
                    for call in c.message.tool_calls.iter().flatten() {
                        t.push_str(&call.function.arguments);
                    }
                    t
                })
                .collect::<String>()
        };
        // A stream cut short reports no usage: count what was generated up to that point.
        let usage =
            reported.unwrap_or_else(|| estimated_usage(&self.upstream_model, &self.req, &text()));
        let cost = cost_of(&self.state, &self.route, &usage);
        record_usage(&self.route, Some(&usage), cost);
        settle(self.held.take(), used_tokens(Some(&usage)));
        self.recorder.answered(
            &self.route.name,
            self.route.provider.name(),
            Some(&usage),
            estimated,
            cost,
        );
        self.recorder.completion_text(text);
        if end == StreamEnd::Completed
            && let Some((layer, key, directives)) = &self.store_to
        {
            if completion.usage.is_none() {
                completion.usage = Some(usage.clone());
            }
            let ans = Answer::new(
                completion,
                &self.route.name,
                self.route.provider.name(),
                cost,
            );
            layer
                .store_answer(key, &self.req.model, directives, &ans)
                .await;
        }
        let error_type = match end {
            StreamEnd::Completed => None,
            StreamEnd::UpstreamFailed => Some("upstream_stream_failed"),
            StreamEnd::ClientGone => Some("client_closed_stream"),
        };
        self.recorder.finish(200, error_type);
        metrics::counter!(m::STREAMS, "model" => self.route.name.clone(), "end" => end.as_str())
            .increment(1);
        tracing::debug!(
            request_id = %self.request_id,
            model = %self.route.name,
            end = end.as_str(),
            elapsed_ms = self.started.elapsed().as_millis() as u64,
            "stream ended"
        );
    }
}

/// The request as the route's upstream should see it.
fn for_route<'a>(req: &'a ChatRequest, route: &Route) -> Cow<'a, ChatRequest> {
    if req.model == route.upstream_model {
        return Cow::Borrowed(req);
    }
    let mut r = req.clone();
    r.model.clone_from(&route.upstream_model);
    Cow::Owned(r)
}

/// Calls `attempt` on the route, retrying retryable failures with jittered exponential backoff
/// (honouring `Retry-After` up to the backoff cap), then on each fallback in order.
async fn call_with_fallbacks<'a, T, F, Fut>(
    state: &'a AppState,
    route: &'a Route,
    mut attempt: F,
) -> Result<Answered<'a, T>, ApiError>
where
    F: FnMut(&'a Route) -> Fut,
    Fut: Future<Output = Result<T, UpstreamError>>,
{
    let policy = state.retry();
    let chain =
        std::iter::once(route).chain(route.fallbacks.iter().filter_map(|name| state.route(name)));
    let mut last_err: Option<UpstreamError> = None;
    for (i, r) in chain.enumerate() {
        if i > 0 {
            metrics::counter!(m::FALLBACKS, "from" => route.name.clone(), "to" => r.name.clone())
                .increment(1);
        }
        for n in 0..=policy.max_retries {
            let started = Instant::now();
            let result = attempt(r).await;
            let took = started.elapsed().as_secs_f64();
            match &result {
                Ok(_) => r.metrics().upstream_ok.record(took),
                Err(e) => metrics::histogram!(
                    m::UPSTREAM_DURATION,
                    "provider" => r.provider.name().to_owned(),
                    "model" => r.name.clone(),
                    "outcome" => if e.is_retryable() { "retryable_error" } else { "error" }
                )
                .record(took),
            }
            match result {
                Ok(value) => return Ok(Answered { value, route: r }),
                Err(e) if !e.is_retryable() => return Err(e.into()),
                Err(e) => {
                    tracing::info!(model = %r.name, attempt = n, error = %e, "upstream attempt failed");
                    let wait = backoff(policy.base, policy.max, n, e.retry_after());
                    last_err = Some(e);
                    let Some(wait) = wait else { break };
                    if n < policy.max_retries {
                        metrics::counter!(m::RETRIES, "model" => r.name.clone()).increment(1);
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
    }
    Err(last_err.map_or_else(
        || ApiError::Internal("no upstream attempt was made".into()),
        ApiError::from,
    ))
}

/// The wait before retry `n + 1`: full jitter over `base × 2ⁿ` (capped at `max`), or the
/// upstream's `Retry-After` when it asked. `None` when the upstream asks for longer than `max`:
/// waiting would hold the client, so the next fallback is tried at once.
fn backoff(
    base: Duration,
    max: Duration,
    n: u32,
    retry_after: Option<Duration>,
) -> Option<Duration> {
    if let Some(ra) = retry_after {
        return (ra <= max).then_some(ra);
    }
    let exp = base.saturating_mul(1u32 << n.min(16)).min(max);
    let half = exp / 2;
    let jitter = Duration::from_nanos(fastrand::u64(0..=half.as_nanos() as u64));
    Some(half + jitter)
}

/// The usage in the catalog's terms.
pub(crate) fn token_usage(u: &Usage) -> TokenUsage {
    let cached = u.cached_tokens();
    let cache_write = u.cache_write_tokens();
    TokenUsage {
        input: u.prompt_tokens.saturating_sub(cached + cache_write),
        cached_input: cached,
        cache_write,
        output: u.completion_tokens,
        reasoning: u.reasoning_tokens(),
    }
}

/// The exact cost of a call, when the model is in the catalog.
pub(crate) fn cost_of(state: &AppState, route: &Route, usage: &Usage) -> Option<Money> {
    state.model_info(route).map(|m| m.cost(&token_usage(usage)))
}

fn record_usage(route: &Route, usage: Option<&Usage>, cost: Option<Money>) {
    let Some(u) = usage else { return };
    let series = route.metrics();
    series.prompt_tokens.increment(u.prompt_tokens);
    series.completion_tokens.increment(u.completion_tokens);
    if let Some(c) = cost {
        series
            .cost_nano
            .increment(u64::try_from(c.nano_rounded()).unwrap_or(0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let base = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        for n in 0..10 {
            let d = backoff(base, max, n, None).unwrap();
            let cap = (base * 2u32.pow(n.min(16))).min(max);
            assert!(d >= cap / 2 && d <= cap, "n={n} d={d:?}");
        }
        assert_eq!(
            backoff(base, max, 0, Some(Duration::from_millis(300))),
            Some(Duration::from_millis(300))
        );
        assert_eq!(backoff(base, max, 0, Some(Duration::from_secs(30))), None);
    }

    #[test]
    fn usage_split_for_billing() {
        let u: Usage = serde_json::from_str(
            r#"{"prompt_tokens":1000,"completion_tokens":50,"total_tokens":1050,
                "prompt_tokens_details":{"cached_tokens":600},
                "cache_creation_input_tokens":100}"#,
        )
        .unwrap();
        let t = token_usage(&u);
        assert_eq!(
            (t.input, t.cached_input, t.cache_write, t.output),
            (300, 600, 100, 50)
        );
    }
}
