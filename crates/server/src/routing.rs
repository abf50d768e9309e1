//! Smart routing in the proxy: `model: "cognitude/auto[:mode]"` on chat completions,
//! `POST /v1/smart/completions`, `POST /v1/smart/analyze` and `GET /v1/smart/info`.
//!
//! The router crate decides over the catalog; this module restricts it to the models the proxy
//! serves, maps its choice back to a route, and converts a protocol request into the router's
//! borrowed input. Every completion request is classified (cheaply, without allocation in the
//! classifier) so the ledger carries a complexity score for the analyzer even when routing is
//! off.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use cognitude_catalog::{Catalog, ModelInfo, Money};
use cognitude_protocol::{ChatRequest, MessageContent, Role as WireRole, parse_json};
use cognitude_router::{
    Classification, Content, Decision, Error as RouterError, Message, Mode, Policy, Request, Role,
    RouteRequest, Router,
};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use serde_json::{Value, json};

use crate::body::ResponseBody;
use crate::config::{ResolvedRoute, RoutingConfig};
use crate::error::ApiError;
use crate::json_response;
use crate::state::AppState;

/// The model name that asks for routing; `cognitude/auto:cost` (…`:latency`, `:quality`) also
/// names the mode.
pub(crate) const AUTO: &str = "cognitude/auto";

/// The routers of the default policy and of each organization with its own.
#[derive(Debug)]
pub(crate) struct SmartRouting {
    default: Router,
    orgs: HashMap<String, Router>,
    /// Catalog id → the route that serves it (the route of the same name first).
    route_of: HashMap<String, String>,
}

/// How a routed request was decided, for headers and the ledger.
#[derive(Debug, Clone)]
pub(crate) struct Routed {
    pub route: String,
    pub score: f64,
    pub tier: &'static str,
    pub mode: Mode,
    pub reason: String,
    /// The baseline model, to measure the saving against when the answer's usage is known.
    pub baseline: Option<ModelInfo>,
    /// The saving estimated before the call (baseline estimate minus the chosen one).
    pub estimated_saving: Option<Money>,
}

impl SmartRouting {
    pub fn new(config: &RoutingConfig, catalog: &Catalog, routes: &[ResolvedRoute]) -> Self {
        let mut route_of: HashMap<String, String> = HashMap::new();
        for r in routes {
            if r.name == r.catalog_id {
                route_of.insert(r.catalog_id.clone(), r.name.clone());
            } else {
                route_of
                    .entry(r.catalog_id.clone())
                    .or_insert_with(|| r.name.clone());
            }
        }
        let build = |policy: &Policy| {
            let mut policy = policy.clone();
            // Only models the proxy can call may be chosen. When every catalog model is served
            // (the mock-only default), no constraint is needed.
            if catalog
                .models()
                .iter()
                .any(|m| !route_of.contains_key(&m.id))
            {
                let allowed = &policy.constraints.allowed_models;
                let served: Vec<String> = catalog
                    .models()
                    .iter()
                    .map(|m| m.id.clone())
                    .filter(|id| route_of.contains_key(id))
                    .filter(|id| allowed.is_empty() || allowed.contains(id))
                    .collect();
                policy.constraints.allowed_models = served;
            }
            Router::new(policy)
        };
        SmartRouting {
            default: build(&config.default),
            orgs: config
                .orgs
                .iter()
                .map(|(org, p)| (org.clone(), build(p)))
                .collect(),
            route_of,
        }
    }

    pub fn router(&self, org: &str) -> &Router {
        self.orgs.get(org).unwrap_or(&self.default)
    }

    /// The complexity of a request under the organization's thresholds.
    pub fn classify(&self, org: &str, req: &ChatRequest) -> Classification {
        let router = self.router(org);
        with_request(req, |r| router.classify(r))
    }

    /// Routes a request: the route to call and how it was chosen.
    pub fn route(
        &self,
        catalog: &Catalog,
        org: &str,
        req: &ChatRequest,
        mode: Option<Mode>,
        requested: Option<&str>,
    ) -> Result<Routed, ApiError> {
        let router = self.router(org);
        let metadata = metadata(req);
        with_request(req, |r| {
            let mut input = RouteRequest::new(*r).with_metadata(&metadata);
            if let Some(m) = mode {
                input = input.with_mode(m);
            }
            if let Some(m) = requested {
                input = input.with_requested_model(m);
            }
            let decision = router.route(catalog, &input).map_err(routing_error)?;
            let route = self
                .route_of
                .get(&decision.selection.model.id)
                .cloned()
                .ok_or_else(|| {
                    ApiError::Internal(format!(
                        "the router chose '{}', which no route serves",
                        decision.selection.model.id
                    ))
                })?;
            // Without a policy baseline, the model the client named is what it would have used.
            let baseline = decision
                .baseline
                .map(|b| b.model.clone())
                .or_else(|| requested.and_then(|m| catalog.get(m)).cloned());
            let estimated_saving = decision.baseline.map(|b| b.saving).or_else(|| {
                baseline.as_ref().map(|b| {
                    let (cost, _) = cognitude_router::estimate(
                        b,
                        decision.classification.input_tokens,
                        decision.selection.output_tokens,
                    );
                    cost - decision.selection.cost
                })
            });
            Ok(Routed {
                route,
                score: decision.classification.score,
                tier: decision.classification.tier.as_str(),
                mode: decision.selection.mode,
                reason: decision.selection.reason.clone(),
                baseline,
                estimated_saving,
            })
        })
    }

    /// `POST /v1/smart/analyze`: the decision without a call.
    pub fn analyze(
        &self,
        catalog: &Catalog,
        org: &str,
        smart: &SmartBody,
    ) -> Result<Response<ResponseBody>, ApiError> {
        let router = self.router(org);
        let req = &smart.request;
        let metadata = metadata(req);
        with_request(req, |r| {
            let mut input = RouteRequest::new(*r).with_metadata(&metadata);
            if let Some(m) = smart.mode {
                input = input.with_mode(m);
            }
            if let Some(m) = smart.requested.as_deref() {
                input = input.with_requested_model(m);
            }
            let d = router.route(catalog, &input).map_err(routing_error)?;
            Ok(json_response(StatusCode::OK, &self.decision_json(&d)))
        })
    }

    fn decision_json(&self, d: &Decision<'_>) -> Value {
        let c = &d.classification;
        let candidate = |m: &ModelInfo, cost: Money, latency_ms: u64| {
            json!({
                "model": m.id,
                "route": self.route_of.get(&m.id),
                "provider": m.provider,
                "quality": m.quality,
                "estimated_cost_usd": cost,
                "estimated_latency_ms": latency_ms,
            })
        };
        json!({
            "object": "smart.analysis",
            "classification": {
                "score": c.score,
                "tier": c.tier.as_str(),
                "input_tokens": c.input_tokens,
                "max_tokens": c.max_tokens,
                "signals": c.top_signals().collect::<Vec<_>>(),
            },
            "mode": d.selection.mode.as_str(),
            "quality_bar": d.selection.bar,
            "rule": d.rule.map(|i| i + 1),
            "model": self.route_of.get(&d.selection.model.id),
            "reason": d.selection.reason,
            "estimated_output_tokens": d.selection.output_tokens,
            "chosen": candidate(d.selection.model, d.selection.cost, d.selection.latency_ms),
            "candidates": d.selection.candidates.iter().map(|k| {
                let mut v = candidate(k.model, k.cost, k.latency_ms);
                v["meets_bar"] = json!(k.meets_bar);
                v
            }).collect::<Vec<_>>(),
            "baseline": d.baseline.map(|b| json!({
                "model": b.model.id,
                "estimated_cost_usd": b.cost,
                "estimated_saving_usd": b.saving,
            })),
        })
    }

    /// `GET /v1/smart/info`: modes, thresholds and bars, and the catalog as the router sees it.
    pub fn info(&self, catalog: &Catalog, org: &str) -> Response<ResponseBody> {
        let policy = self.router(org).policy();
        let allowed = &policy.constraints.allowed_models;
        let per_million = |m: Money| m.times(1_000_000);
        let models: Vec<Value> = catalog
            .models()
            .iter()
            .filter(|m| self.route_of.contains_key(&m.id))
            .filter(|m| allowed.is_empty() || allowed.contains(&m.id))
            .map(|m| {
                json!({
                    "id": m.id,
                    "route": self.route_of.get(&m.id),
                    "provider": m.provider,
                    "quality": m.quality,
                    "latency_ms": m.latency_ms,
                    "tokens_per_second": m.tokens_per_second,
                    "context_window": m.context_window,
                    "max_output": m.max_output,
                    "capabilities": {
                        "tools": m.capabilities.tools,
                        "vision": m.capabilities.vision,
                        "json": m.capabilities.json,
                        "reasoning": m.capabilities.reasoning,
                    },
                    "price_per_million_usd": {
                        "input": per_million(m.prices.input),
                        "output": per_million(m.prices.output),
                        "cached_input": per_million(m.prices.cached_input),
                    },
                })
            })
            .collect();
        json_response(
            StatusCode::OK,
            &json!({
                "object": "smart.info",
                "modes": ["cost", "latency", "quality"],
                "default_mode": policy.mode.as_str(),
                "auto_models": [AUTO, format!("{AUTO}:cost"), format!("{AUTO}:latency"), format!("{AUTO}:quality")],
                "thresholds": policy.thresholds,
                "quality_bars": policy.bars,
                "baseline": policy.baseline,
                "rules": policy.rules.len(),
                "models": models,
            }),
        )
    }
}

/// Whether `model` asks for routing, and in which mode (`None`: the policy's).
pub(crate) fn auto_mode(model: &str) -> Result<Option<Option<Mode>>, ApiError> {
    let Some(rest) = model.strip_prefix(AUTO) else {
        return Ok(None);
    };
    match rest {
        "" => Ok(Some(None)),
        _ => match rest.strip_prefix(':').map(str::parse::<Mode>) {
            Some(Ok(mode)) => Ok(Some(Some(mode))),
            _ => Err(ApiError::invalid(
                format!(
                    "unknown routing mode in model '{model}': use {AUTO}, {AUTO}:cost, {AUTO}:latency or {AUTO}:quality"
                ),
                Some("model".into()),
            )),
        },
    }
}

/// A `/v1/smart/*` body: an OpenAI chat request whose `model` is optional, plus `optimize_for`.
#[derive(Debug)]
pub(crate) struct SmartBody {
    pub request: ChatRequest,
    pub mode: Option<Mode>,
    /// The concrete model the client named, if any: policy rules may match on it, and it is the
    /// baseline savings are measured against when the policy has none.
    pub requested: Option<String>,
}

impl SmartBody {
    pub fn parse(body: &[u8]) -> Result<SmartBody, ApiError> {
        let mut value: Value =
            parse_json(body).map_err(|e| ApiError::invalid(e.message, e.field))?;
        let Some(obj) = value.as_object_mut() else {
            return Err(ApiError::invalid(
                "the request body must be a JSON object",
                None,
            ));
        };
        let mode = match obj.remove("optimize_for") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.parse::<Mode>().map_err(|_| {
                ApiError::invalid(
                    format!("'optimize_for' must be cost, latency or quality (got '{s}')"),
                    Some("optimize_for".into()),
                )
            })?),
            Some(_) => {
                return Err(ApiError::invalid(
                    "'optimize_for' must be a string: cost, latency or quality",
                    Some("optimize_for".into()),
                ));
            }
        };
        let (mode, requested) = match obj.get("model") {
            None | Some(Value::Null) => (mode, None),
            Some(Value::String(m)) => match auto_mode(m)? {
                Some(auto) => (mode.or(auto), None),
                None => (mode, Some(m.clone())),
            },
            Some(_) => {
                return Err(ApiError::invalid(
                    "'model' must be a string",
                    Some("model".into()),
                ));
            }
        };
        obj.insert("model".into(), Value::String(AUTO.into()));
        let request: ChatRequest = serde_json::from_value(value)
            .map_err(|e| ApiError::invalid(format!("invalid request: {e}"), None))?;
        request
            .validate()
            .map_err(|e| ApiError::invalid(e.to_string(), Some(e.field)))?;
        Ok(SmartBody {
            request,
            mode,
            requested,
        })
    }

    /// The body as a plain chat completion request for the routed path.
    pub fn into_chat_body(self) -> Result<Bytes, ApiError> {
        let mut request = self.request;
        request.model = match self.mode {
            Some(m) => format!("{AUTO}:{}", m.as_str()),
            None => AUTO.to_owned(),
        };
        serde_json::to_vec(&request)
            .map(Bytes::from)
            .map_err(|e| ApiError::Internal(format!("could not encode the request: {e}")))
    }
}

/// The request's `metadata` object (OpenAI's field, forwarded untouched): its string values,
/// which policy rules may match.
fn metadata(req: &ChatRequest) -> Vec<(&str, &str)> {
    req.extra
        .get("metadata")
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.as_str(), v)))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `f` on the router's borrowed view of a protocol request.
pub(crate) fn with_request<T>(req: &ChatRequest, f: impl FnOnce(&Request<'_>) -> T) -> T {
    // Multi-part messages need their text parts gathered into one slice each.
    let parts: Vec<Vec<&str>> = req
        .messages
        .iter()
        .map(|m| match &m.content {
            Some(MessageContent::Parts(ps)) => {
                ps.iter().filter_map(|p| p.text.as_deref()).collect()
            }
            _ => Vec::new(),
        })
        .collect();
    let messages: Vec<Message<'_>> = req
        .messages
        .iter()
        .zip(&parts)
        .map(|(m, parts)| Message {
            role: match m.role {
                WireRole::System | WireRole::Developer => Role::System,
                WireRole::User => Role::User,
                WireRole::Assistant => Role::Assistant,
                WireRole::Tool | WireRole::Function => Role::Tool,
            },
            content: match &m.content {
                Some(MessageContent::Text(t)) => Content::Text(t),
                Some(MessageContent::Parts(_)) => Content::Parts(parts),
                None => Content::Text(""),
            },
        })
        .collect();
    let images = req.messages.iter().any(|m| {
        matches!(&m.content, Some(MessageContent::Parts(ps)) if ps.iter().any(|p| p.image_url.is_some()))
    });
    let json_output = req
        .response_format
        .as_ref()
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str)
        .is_some_and(|t| t == "json_object" || t == "json_schema");
    let mut request = Request::new(&messages);
    request.max_tokens = req.max_output_tokens().map(u64::from);
    request.tools = req.tools.as_ref().is_some_and(|t| !t.is_empty());
    request.json_output = json_output;
    request.images = images;
    f(&request)
}

fn routing_error(e: RouterError) -> ApiError {
    match e {
        RouterError::NoModel(_) => ApiError::invalid(
            format!("{e}: relax the request (max_tokens, tools, images) or the routing policy"),
            None,
        ),
        other => ApiError::Internal(format!("routing: {other}")),
    }
}

/// The routing headers of a routed answer.
pub(crate) fn headers(h: &mut HeaderMap, routed: &Routed) {
    if let Ok(v) = HeaderValue::from_str(&format!("{}; score={:.3}", routed.tier, routed.score)) {
        h.insert("x-cognitude-complexity", v);
    }
    // A header value must be visible ASCII: the reason's few typographic characters are
    // spelled out, anything else becomes '?'.
    let mut reason = String::with_capacity(routed.reason.len());
    for c in routed.reason.chars().take(300) {
        match c {
            '≥' => reason.push_str(">="),
            '≤' => reason.push_str("<="),
            '—' | '–' => reason.push('-'),
            '…' => reason.push_str("..."),
            '→' => reason.push_str("->"),
            c if c == ' ' || c.is_ascii_graphic() => reason.push(c),
            _ => reason.push('?'),
        }
    }
    if let Ok(v) = HeaderValue::from_str(&reason) {
        h.insert("x-cognitude-route-reason", v);
    }
    h.insert(
        "x-cognitude-route-mode",
        HeaderValue::from_static(routed.mode.as_str()),
    );
    if let (Some(b), Some(saving)) = (&routed.baseline, routed.estimated_saving) {
        if let Ok(v) = HeaderValue::from_str(&b.id) {
            h.insert("x-cognitude-baseline-model", v);
        }
        if let Ok(v) = HeaderValue::from_str(&saving.to_string()) {
            h.insert("x-cognitude-estimated-saving-usd", v);
        }
    }
}

/// `/v1/smart/analyze` and `/v1/smart/info` for the caller's organization.
pub(crate) fn handle_read(
    state: &Arc<AppState>,
    org: &str,
    path: &str,
    body: &[u8],
) -> Result<Response<ResponseBody>, ApiError> {
    let routing = state.routing();
    match path {
        "/v1/smart/analyze" => routing.analyze(state.catalog(), org, &SmartBody::parse(body)?),
        _ => Ok(routing.info(state.catalog(), org)),
    }
}
