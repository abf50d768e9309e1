//! Smart routing through the proxy: `cognitude/auto` on plain chat completions, the
//! `/v1/smart/*` endpoints, routing headers, and the routing fields of the ledger.

use super::*;

use cognitude_catalog::{Catalog, TokenUsage};

/// Policy rules send anything about contracts to Claude and the research team's requests to
/// gpt-4o (a catalog id: this proxy serves it as the route "primary"); everything else is
/// classified.
const ROUTING: &str = r#"
[[routing.default.rules]]
prompt_contains = "contract"
model = "claude-haiku-4-5"

[[routing.default.rules]]
metadata = { field = "team", equals = "research" }
model = "gpt-4o"
"#;

async fn smart_harness() -> Harness {
    Harness::full(
        MockConfig::default(),
        DEFAULT_UPSTREAM,
        &format!("{DEFAULT_EXTRA}\n{ROUTING}"),
    )
    .await
}

async fn smart(h: &Harness, path: &str, body: &Value) -> http::Response<Incoming> {
    h.request(
        "POST",
        path,
        &[("content-type", "application/json")],
        serde_json::to_vec(body).unwrap(),
    )
    .await
}

const HARD: &str = "Prove that for every prime p > 3, p^2 - 1 is divisible by 24. Then \
    write a Rust function that checks it for all primes below 10^6, explain its complexity, \
    and compare it with a sieve-based approach in a table:\n```rust\nfn is_prime(n: u64) -> bool \
    { (2..n).all(|d| n % d != 0) }\n```\n1. correctness\n2. complexity\n3. memory";

#[tokio::test(flavor = "multi_thread")]
async fn auto_model_routes_answers_and_records_the_decision() {
    let h = smart_harness().await;

    // What the router would do, asked without a call.
    let upstream_calls = h.mock.stats().requests();
    let resp = smart(&h, "/v1/smart/analyze", &chat("cognitude/auto", "hi there")).await;
    assert_eq!(resp.status(), 200);
    let analysis = body_json(resp).await;
    assert_eq!(
        h.mock.stats().requests(),
        upstream_calls,
        "analyze called upstream"
    );
    assert_eq!(analysis["classification"]["tier"], "simple", "{analysis}");
    let planned = analysis["model"].as_str().unwrap().to_owned();
    let candidates = analysis["candidates"].as_array().unwrap();
    assert!(!candidates.is_empty());
    assert_eq!(candidates[0]["route"], planned.as_str());
    // Only models this proxy serves are candidates.
    let served = ["gpt-4o-mini", "claude-haiku-4-5", "primary"];
    for c in candidates {
        assert!(served.contains(&c["route"].as_str().unwrap()), "{c}");
        assert!(c["estimated_cost_usd"].as_str().is_some());
    }

    // The same request, answered: routed where the analysis said.
    let resp = h.post_json(&chat("cognitude/auto", "hi there")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-cognitude-model"), planned);
    assert!(header(&resp, "x-cognitude-complexity").starts_with("simple; score=0."));
    assert_eq!(header(&resp, "x-cognitude-route-mode"), "cost");
    let reason = header(&resp, "x-cognitude-route-reason");
    assert!(reason.contains("quality >="), "{reason}");
    let v = body_json(resp).await;
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("hi there")
    );

    // A demanding prompt in quality mode goes to the best model served (Claude Haiku 4.5,
    // quality 78, over gpt-4o at 75 and gpt-4o-mini at 60); streams are routed too.
    let resp = h
        .post_json(&stream_chat("cognitude/auto:quality", HARD, true))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-cognitude-model"), "claude-haiku-4-5");
    assert_eq!(header(&resp, "x-cognitude-route-mode"), "quality");
    let tier = header(&resp, "x-cognitude-complexity").to_owned();
    let events = sse_events(resp).await;
    assert!(streamed_text(&chunks_before_done(&events)).contains("Prove that"));
    assert!(!tier.starts_with("simple"), "{tier}");

    // A policy rule decides before the classifier, and says so.
    let resp = h
        .post_json(&chat("cognitude/auto", "Summarise this contract: …"))
        .await;
    assert_eq!(header(&resp, "x-cognitude-model"), "claude-haiku-4-5");
    assert!(header(&resp, "x-cognitude-route-reason").starts_with("policy rule 1"));

    // Rules can match the request's metadata (forwarded upstream untouched).
    let mut body = chat("cognitude/auto", "hello");
    body["metadata"] = json!({"team": "research"});
    let resp = h.post_json(&body).await;
    assert_eq!(header(&resp, "x-cognitude-model"), "primary");
    assert!(header(&resp, "x-cognitude-route-reason").starts_with("policy rule 2"));
    assert_eq!(
        h.mock.stats().last_request().unwrap()["metadata"]["team"],
        "research"
    );

    // A plain request is not routed, but its complexity is in the ledger for the analyzer.
    let resp = h.post_json(&chat("gpt-4o-mini", "plain")).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("x-cognitude-complexity").is_none());

    let ledger = h.ledger().await;
    assert_eq!(
        ledger.len(),
        5,
        "analyze is not a completion and is not in the ledger"
    );
    let routed: Vec<_> = ledger.iter().filter(|r| r.routed).collect();
    assert_eq!(routed.len(), 4);
    for r in &routed {
        assert!(r.model_requested.starts_with("cognitude/auto"));
        assert!(r.route_score.is_some() && r.route_tier.is_some() && r.route_mode.is_some());
    }
    let plain = ledger.iter().find(|r| !r.routed).unwrap();
    assert_eq!(plain.route_tier.as_deref(), Some("simple"));
    assert!(plain.route_score.unwrap() < 0.5);
    assert_eq!(plain.route_mode, None);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn smart_completions_measure_the_saving_against_the_named_model() {
    let h = smart_harness().await;
    let body = json!({
        "model": "claude-haiku-4-5",
        "optimize_for": "cost",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
    });
    let resp = smart(&h, "/v1/smart/completions", &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-cognitude-model"), "gpt-4o-mini");
    assert_eq!(
        header(&resp, "x-cognitude-baseline-model"),
        "claude-haiku-4-5"
    );
    let estimated: f64 = header(&resp, "x-cognitude-estimated-saving-usd")
        .parse()
        .unwrap();
    assert!(estimated > 0.0);
    let v = body_json(resp).await;
    let usage = &v["usage"];

    // The ledger's saving is exact: Claude's price for the usage the call really had, minus
    // what gpt-4o-mini cost.
    let ledger = h.ledger().await;
    let r = ledger.iter().find(|r| r.routed).unwrap();
    assert_eq!(r.endpoint, "smart_completions");
    assert_eq!(r.baseline_model.as_deref(), Some("claude-haiku-4-5"));
    let catalog = Catalog::builtin();
    let tokens = TokenUsage {
        input: usage["prompt_tokens"].as_u64().unwrap(),
        output: usage["completion_tokens"].as_u64().unwrap(),
        ..TokenUsage::default()
    };
    let baseline = catalog.get("claude-haiku-4-5").unwrap().cost(&tokens);
    let chosen = catalog.get("gpt-4o-mini").unwrap().cost(&tokens);
    assert_eq!(
        i128::from(r.route_saving_pico.unwrap()),
        (baseline - chosen).pico()
    );
    assert_eq!(i128::from(r.cost_pico), chosen.pico());

    // No model: the policy's mode; `optimize_for` overrides it.
    let body = json!({"optimize_for": "quality", "messages": [{"role": "user", "content": "hi"}]});
    let resp = smart(&h, "/v1/smart/completions", &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-cognitude-model"), "claude-haiku-4-5");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn smart_info_and_bad_input() {
    let h = smart_harness().await;
    let resp = h.request("GET", "/v1/smart/info", &[], Vec::new()).await;
    assert_eq!(resp.status(), 200);
    let info = body_json(resp).await;
    assert_eq!(info["modes"], json!(["cost", "latency", "quality"]));
    assert_eq!(info["default_mode"], "cost");
    assert_eq!(info["rules"], 2);
    let mut routes: Vec<&str> = info["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["route"].as_str().unwrap())
        .collect();
    routes.sort_unstable();
    assert_eq!(routes, ["claude-haiku-4-5", "gpt-4o-mini", "primary"]);

    let cases = [
        (
            "/v1/smart/completions",
            json!({"optimize_for": "cheap", "messages": [{"role": "user", "content": "x"}]}),
            "optimize_for",
        ),
        (
            "/v1/smart/completions",
            json!({"optimize_for": 3, "messages": [{"role": "user", "content": "x"}]}),
            "optimize_for",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "cognitude/auto:fast", "messages": [{"role": "user", "content": "x"}]}),
            "model",
        ),
        ("/v1/smart/analyze", json!({"messages": []}), "messages"),
    ];
    for (path, body, param) in cases {
        let resp = smart(&h, path, &body).await;
        assert_eq!(resp.status(), 400, "{path} {body}");
        let v = body_json(resp).await;
        assert_openai_error(&v, "invalid_request_error");
        assert_eq!(v["error"]["param"], param, "{v}");
    }
    let resp = smart(&h, "/v1/smart/analyze", &json!([1, 2])).await;
    assert_eq!(resp.status(), 400);
    let resp = h
        .request("GET", "/v1/smart/completions", &[], Vec::new())
        .await;
    assert_eq!(resp.status(), 405);
    assert_eq!(header(&resp, "allow"), "POST");
    // Unauthenticated: 401 like every /v1 endpoint.
    let resp = h
        .request(
            "GET",
            "/v1/smart/info",
            &[("authorization", "Bearer nope")],
            Vec::new(),
        )
        .await;
    assert_eq!(resp.status(), 401);
    h.stop().await;
}
