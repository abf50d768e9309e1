//! The analyzer as the server will use it: synthetic ledgers with one planted inefficiency
//! each and the saving worked out by hand, efficient traffic that must yield nothing, bounded
//! memory on a million distinct fingerprints, and deterministic output.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use cognitude_analyzer::{Analyzer, Confidence, Details, Kind, Record, Report, Settings, analyze};
use cognitude_catalog::{Catalog, Money, TokenUsage};
use cognitude_router::{Classifier, Message, Mode, Policy, Request, Router, Selector, Tier};

/// Prices per million tokens; quality bars (router defaults) are simple 55, medium 74,
/// complex 85, so only `premium` is premium.
const CATALOG: &str = r#"
[[model]]
id = "premium"
provider = "acme-ai"
input = 5
output = 20
cached_input = 0.5
cache_write = 6.25
context_window = 200000
max_output = 32000
capabilities = ["tools", "json"]
quality = 95

[[model]]
id = "mid"
provider = "acme-ai"
input = 1
output = 4
cached_input = 0.1
context_window = 128000
max_output = 16000
capabilities = ["tools", "json"]
quality = 80

[[model]]
id = "small"
provider = "acme-ai"
input = 0.1
output = 0.4
cached_input = 0.01
context_window = 128000
max_output = 16000
capabilities = ["tools", "json"]
quality = 60

# Cheapest of all, but without tools or JSON: never a replacement for the models above.
[[model]]
id = "bare"
provider = "other"
input = 0.05
output = 0.2
context_window = 32000
max_output = 8000
quality = 58
"#;

const T0: i64 = 1_750_000_000_000_000;
const SEC: i64 = 1_000_000;
const DAY: i64 = 86_400 * SEC;

fn catalog() -> Catalog {
    Catalog::from_toml(CATALOG).unwrap()
}

fn usd(s: &str) -> Money {
    s.parse().unwrap()
}

/// What `model` bills for the tokens, in picodollars.
fn cost(model: &str, prompt: u64, completion: u64) -> i64 {
    let c = catalog();
    let m = c.get(model).unwrap();
    let usage = TokenUsage {
        input: prompt,
        output: completion,
        ..TokenUsage::default()
    };
    i64::try_from(m.cost(&usage).pico()).unwrap()
}

/// A ledger row with owned strings; `record()` borrows it the way a store row would be.
#[derive(Clone)]
struct Row {
    request_id: String,
    org: &'static str,
    model: &'static str,
    at: i64,
    prompt: i64,
    completion: i64,
    cached: i64,
    cost: i64,
    max_tokens: Option<i64>,
    cache: Option<&'static str>,
    routed: bool,
    route_saving: Option<i64>,
    tier: Option<&'static str>,
    hash: String,
    system: Option<&'static str>,
    system_len: i64,
    prefix: String,
    chars: i64,
}

impl Row {
    fn new(i: usize, org: &'static str, model: &'static str, at: i64) -> Row {
        Row {
            request_id: format!("{org}-{i}"),
            org,
            model,
            at,
            prompt: 1000,
            completion: 200,
            cached: 0,
            cost: cost(model, 1000, 200),
            max_tokens: None,
            cache: None,
            routed: false,
            route_saving: None,
            tier: None,
            hash: format!("h-{org}-{i}"),
            system: None,
            system_len: 0,
            prefix: format!("p-{org}-{i}"),
            chars: 4000,
        }
    }

    fn record(&self) -> Record<'_> {
        Record {
            request_id: &self.request_id,
            org_id: self.org,
            created_at: self.at,
            model_used: Some(self.model),
            status: 200,
            prompt_tokens: self.prompt,
            cached_prompt_tokens: self.cached,
            completion_tokens: self.completion,
            cost_pico: self.cost,
            max_tokens: self.max_tokens,
            cache_status: self.cache,
            routed: self.routed,
            route_saving_pico: self.route_saving,
            route_tier: self.tier,
            request_hash: &self.hash,
            system_hash: self.system,
            system_len: self.system_len,
            prefix_hash: &self.prefix,
            prompt_chars: self.chars,
            ..Record::default()
        }
    }
}

fn run(rows: &[Row], window: Option<(i64, i64)>) -> Report {
    let catalog = catalog();
    let router = Router::new(Policy::default());
    let mut a = Analyzer::new(&catalog, &router);
    if let Some((s, e)) = window {
        a = a.with_window(s, e);
    }
    let mut sorted = rows.to_vec();
    sorted.sort_by_key(|r| r.at);
    a.observe_all(sorted.iter().map(Row::record));
    a.finish()
}

fn kinds(report: &Report) -> Vec<Kind> {
    report.recommendations.iter().map(|r| r.kind).collect()
}

/// Ten distinct requests, each sent five times two minutes apart, with the cache off.
fn cache_ledger() -> Vec<Row> {
    let mut rows = Vec::new();
    for j in 0..10i64 {
        for n in 0..5i64 {
            let mut r = Row::new(rows.len(), "acme", "mid", T0 + j * SEC + n * 120 * SEC);
            r.completion = 250;
            r.cost = cost("mid", 1000, 250);
            r.cache = Some("off");
            r.hash = format!("same-{j}");
            rows.push(r);
        }
    }
    rows
}

#[test]
fn cache_opportunity_finds_repeats_and_the_ttl_that_catches_them() {
    let report = run(&cache_ledger(), None);
    assert_eq!(kinds(&report), [Kind::Cache], "{report:#?}");
    let rec = &report.recommendations[0];
    // Each request costs 1000 × $1/M + 250 × $4/M = $0.002. Each fingerprint comes at 0, 2, 4,
    // 6 and 8 minutes. A 5-minute TTL stores at 0 (hits at 2, 4), stores again at 6 (hit at 8):
    // 3 hits. A 15-minute TTL catches all 4 repeats. 3 < 90% of 4, so the TTL is 15 minutes:
    // 10 × 4 = 40 repeats × $0.002 = $0.08 observed. The records span 8 minutes, so the window
    // is the one-day floor: × 30 = $2.40 a month.
    assert_eq!(rec.monthly_saving, usd("2.40"));
    assert_eq!(rec.basis.observed_saving, usd("0.08"));
    assert_eq!(rec.basis.requests, 40);
    assert_eq!(rec.basis.window_days, 1.0);
    match &rec.details {
        Details::Cache {
            suggested_ttl_secs,
            repeats_cache_off,
            saving_by_ttl,
            ..
        } => {
            assert_eq!(*suggested_ttl_secs, 900);
            assert_eq!(*repeats_cache_off, 40);
            assert_eq!(saving_by_ttl[0], (60, Money::ZERO));
            assert_eq!(saving_by_ttl[1], (300, usd("0.06")));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        rec.action
            .config
            .as_deref()
            .unwrap()
            .contains("default_ttl_secs = 900")
    );
    assert_eq!(rec.confidence, Confidence::Low);
}

/// 100 simple requests on the premium model, over a ten-day window.
fn downgrade_ledger() -> Vec<Row> {
    (0..100)
        .map(|i| {
            let mut r = Row::new(i, "acme", "premium", T0 + i as i64 * 600 * SEC);
            r.tier = Some("simple");
            r.cache = Some("miss");
            r
        })
        .collect()
}

#[test]
fn model_downgrade_prices_the_cheapest_model_meeting_the_tier_bar() {
    let report = run(&downgrade_ledger(), Some((T0, T0 + 10 * DAY)));
    // Routing would save exactly what the downgrade lists, so it is folded into it.
    assert_eq!(kinds(&report), [Kind::ModelDowngrade], "{report:#?}");
    let rec = &report.recommendations[0];
    // On premium: 1000 × $5/M + 200 × $20/M = $0.009. Cost mode for a simple request picks
    // the cheapest model with quality ≥ 55 that has premium's tools and JSON: small (bare has
    // neither), 1000 × $0.1/M + 200 × $0.4/M = $0.00018. Saving 100 × $0.00882 = $0.882 in ten
    // days, × 30 / 10 = $2.646 a month.
    assert_eq!(rec.basis.observed_saving, usd("0.882"));
    assert_eq!(rec.monthly_saving, usd("2.646"));
    assert_eq!(rec.basis.window_days, 10.0);
    match &rec.details {
        Details::ModelDowngrade {
            from_model,
            to_model,
            simple,
            example_request_ids,
            ..
        } => {
            assert_eq!(
                (from_model.as_str(), to_model.as_str()),
                ("premium", "small")
            );
            assert_eq!(*simple, 100);
            assert_eq!(example_request_ids, &["acme-0", "acme-1", "acme-2"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rec.basis.prices.len(), 2);
    assert!(
        rec.basis
            .formula
            .contains("100000 prompt + 20000 completion"),
        "{}",
        rec.basis.formula
    );
    // Ids are stable: the same finding has the same id in every run and release.
    assert_eq!(rec.id, "model_downgrade-9388fbbdf52b8dfd");
    assert_eq!(rec.id, run(&downgrade_ledger(), None).recommendations[0].id);
}

#[test]
fn unclassified_requests_make_no_downgrade_claim() {
    let mut rows = downgrade_ledger();
    for r in &mut rows {
        r.tier = None;
    }
    assert!(
        run(&rows, Some((T0, T0 + 10 * DAY)))
            .recommendations
            .is_empty()
    );
}

#[test]
fn max_tokens_suggests_a_limit_from_the_completion_distribution() {
    let rows: Vec<Row> = (0..500)
        .map(|i| {
            let mut r = Row::new(i, "acme", "mid", T0 + i as i64 * 60 * SEC);
            r.max_tokens = Some(4096);
            r.completion = if i % 50 == 0 { 200 } else { 100 };
            r.cost = cost("mid", 1000, r.completion as u64);
            r
        })
        .collect();
    let report = run(&rows, Some((T0, T0 + 10 * DAY)));
    assert_eq!(kinds(&report), [Kind::MaxTokens], "{report:#?}");
    let rec = &report.recommendations[0];
    // 490 completions of 100 tokens and 10 of 200: p50 = p95 = 100, and the 495th of 500
    // (p99) is 200. Suggested: 200 × 1.25 = 250, up to a multiple of 64 = 256. Each request
    // reserves 4096 − 256 = 3840 tokens too many: 500 × 3840 = 1,920,000 tokens × $4/M output
    // = $7.68 of worst case in ten days, × 3 = $23.04 a month; over 14,400 minutes that is
    // 133.3 tokens a minute of headroom. Billing does not change.
    assert_eq!(rec.monthly_saving, Money::ZERO);
    match &rec.details {
        Details::MaxTokens {
            requested_median,
            completion_p50,
            completion_p95,
            completion_p99,
            limit_hit_rate,
            suggested_max_tokens,
            tpm_headroom_freed,
            worst_case_monthly_reduction,
            ..
        } => {
            assert_eq!(*requested_median, 4096);
            assert_eq!(
                (*completion_p50, *completion_p95, *completion_p99),
                (100, 100, 200)
            );
            assert_eq!(*limit_hit_rate, 0.0);
            assert_eq!(*suggested_max_tokens, 256);
            assert!((tpm_headroom_freed - 1_920_000.0 / 14_400.0).abs() < 1e-9);
            assert_eq!(*worst_case_monthly_reduction, usd("23.04"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rec.basis.figures["excess_tokens"], 1_920_000.0);
    assert_eq!(rec.action.code.as_deref(), Some("\"max_tokens\": 256"));
}

#[test]
fn smart_routing_nets_out_and_reports_what_routing_realised() {
    let mut rows = Vec::new();
    // beta: 200 simple and 20 medium requests on mid, a fixed model that is not premium.
    for i in 0..220 {
        let mut r = Row::new(i, "beta", "mid", T0 + i as i64 * 10 * SEC);
        r.tier = Some(if i < 200 { "simple" } else { "medium" });
        rows.push(r);
    }
    // gamma already routes: 50 requests that each saved $0.001 against its baseline.
    for i in 0..50 {
        let mut r = Row::new(i, "gamma", "small", T0 + i as i64 * 10 * SEC);
        r.routed = true;
        r.tier = Some("simple");
        r.route_saving = Some(1_000_000_000);
        rows.push(r);
    }
    let report = run(&rows, None);
    assert_eq!(kinds(&report), [Kind::SmartRouting], "{report:#?}");
    let rec = &report.recommendations[0];
    assert_eq!(rec.org_id, "beta");
    // Simple on mid: 1000 × $1/M + 200 × $4/M = $0.0018; cost mode picks small: $0.00018; the
    // 200 save $0.00162 each = $0.324. Medium: the cheapest model with quality ≥ 74 is mid
    // itself, no change. Window: the one-day floor, so × 30 = $9.72 a month.
    assert_eq!(rec.basis.observed_saving, usd("0.324"));
    assert_eq!(rec.monthly_saving, usd("9.72"));
    match &rec.details {
        Details::SmartRouting {
            classified_requests,
            moved_requests,
            overlapping,
            ..
        } => {
            assert_eq!((*classified_requests, *moved_requests), (220, 200));
            assert!(overlapping.is_empty());
        }
        other => panic!("{other:?}"),
    }
    // gamma: 50 × $0.001 = $0.05 in the one-day window, $1.50 a month.
    assert_eq!(report.routing_realised.len(), 1);
    let g = &report.routing_realised[0];
    assert_eq!((g.org_id.as_str(), g.routed_requests), ("gamma", 50));
    assert_eq!(g.monthly_saving, usd("1.5"));
}

#[test]
fn repeated_long_system_prompt_is_priced_with_the_provider_cache() {
    let rows: Vec<Row> = (0..60)
        .map(|i| {
            let mut r = Row::new(i, "acme", "premium", T0 + i as i64 * 60 * SEC);
            r.prompt = 2500;
            r.completion = 100;
            r.cost = cost("premium", 2500, 100);
            r.chars = 10_000;
            r.system = Some("sys-1");
            r.system_len = 8000;
            r.cache = Some("miss");
            r
        })
        .collect();
    let report = run(&rows, None);
    assert_eq!(kinds(&report), [Kind::PromptCaching], "{report:#?}");
    let rec = &report.recommendations[0];
    // System prompt: 8000 of 10,000 characters of a 2500-token prompt = 2000 tokens (≥ the
    // 1024-token minimum). Requests a minute apart: the first writes the cache, 59 read it.
    // 59 × 2000 = 118,000 tokens × ($5 − $0.5)/M = $0.531, minus the write's premium
    // 2000 × ($6.25 − $5)/M = $0.0025: $0.5285 observed, × 30 (one-day floor) = $15.855.
    assert_eq!(rec.basis.observed_saving, usd("0.5285"));
    assert_eq!(rec.monthly_saving, usd("15.855"));
    match &rec.details {
        Details::PromptCaching {
            pattern,
            repeated_tokens,
            cache_reads,
            cache_writes,
            ..
        } => {
            assert_eq!(*pattern, "system_prompt");
            assert_eq!(
                (*repeated_tokens, *cache_reads, *cache_writes),
                (2000, 59, 1)
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn near_duplicate_prompts_suggest_a_template() {
    let rows: Vec<Row> = (0..400)
        .map(|i| {
            let mut r = Row::new(i, "acme", "mid", T0 + i as i64 * 60 * SEC);
            // The same template with slots of two lengths: 5000 or 5200 characters.
            (r.chars, r.prompt) = if i % 2 == 0 {
                (5000, 1250)
            } else {
                (5200, 1300)
            };
            r.completion = 100;
            r.cost = cost("mid", r.prompt as u64, 100);
            r.prefix = "template-1".into();
            r
        })
        .collect();
    let report = run(&rows, None);
    assert_eq!(kinds(&report), [Kind::PromptTemplate], "{report:#?}");
    let rec = &report.recommendations[0];
    // The ledger's prefix hash covers 1024 bytes: 1024 × 1250 / 5000 = 1024 × 1300 / 5200 =
    // 256 tokens. One write, 399 reads: 399 × 256 = 102,144 tokens × ($1 − $0.1)/M =
    // $0.0919296 (mid's cache write costs the input price: no premium), × 30 = $2.757888.
    assert_eq!(rec.basis.observed_saving, usd("0.0919296"));
    assert_eq!(rec.monthly_saving, usd("2.757888"));
    assert_eq!(rec.confidence, Confidence::Low);
}

#[test]
fn efficient_traffic_yields_no_recommendation() {
    let mut rows = Vec::new();
    for i in 0..3000 {
        let at = T0 + i as i64 * 20 * SEC;
        // Each tier on the model cost mode would pick anyway.
        let (model, tier) = match i % 3 {
            0 => ("small", "simple"),
            1 => ("mid", "medium"),
            _ => ("premium", "complex"),
        };
        let mut r = Row::new(i, "eff", model, at);
        r.tier = Some(tier);
        // max_tokens close to what completions use.
        r.max_tokens = Some(512);
        r.completion = 100 + (i % 300) as i64;
        r.cost = cost(model, 1000, r.completion as u64);
        // Short system prompts; some requests repeat, and the cache serves them for free.
        r.system = Some("short");
        r.system_len = 300;
        if i % 10 == 9 {
            r.hash = format!("h-eff-{}", i - 1);
            r.cache = Some("hit-memory");
            r.cost = 0;
        } else {
            r.cache = Some("miss");
        }
        rows.push(r);
    }
    // A long shared system prompt whose tokens the provider already serves from its cache.
    for i in 0..100 {
        let mut r = Row::new(10_000 + i, "eff", "premium", T0 + i as i64 * 60 * SEC);
        r.tier = Some("complex");
        (r.prompt, r.chars, r.cached) = (2500, 10_000, 2048);
        r.system = Some("long");
        r.system_len = 8000;
        rows.push(r);
    }
    let report = run(&rows, None);
    assert!(report.recommendations.is_empty(), "{report:#?}");
    assert_eq!(report.stats.records, 3100);
}

#[test]
fn thin_evidence_is_not_enough() {
    // The cache ledger with 2 fingerprints instead of 10: 8 repeats, under the minimum of 20,
    // however expensive each one is.
    let rows: Vec<Row> = cache_ledger()
        .into_iter()
        .filter(|r| r.hash == "same-0" || r.hash == "same-1")
        .map(|mut r| {
            r.cost = 1_000_000_000_000;
            r
        })
        .collect();
    let report = run(&rows, None);
    assert!(report.recommendations.is_empty(), "{report:#?}");
    assert!(report.stats.below_threshold >= 1);
}

#[test]
fn a_million_distinct_fingerprints_stay_within_the_caps() {
    let catalog = catalog();
    let router = Router::new(Policy::default());
    let settings = Settings::default();
    let mut a = Analyzer::with_settings(&catalog, &router, settings.clone());
    let (mut hash, mut prefix, mut id) = (String::new(), String::new(), String::new());
    use std::fmt::Write;
    for i in 0..1_000_000i64 {
        hash.clear();
        prefix.clear();
        id.clear();
        write!(hash, "{i:064x}").unwrap();
        write!(prefix, "prefix-{i}").unwrap();
        write!(id, "r{i}").unwrap();
        a.observe(&Record {
            request_id: &id,
            org_id: "big",
            created_at: T0 + i * 1000,
            model_used: Some("mid"),
            status: 200,
            prompt_tokens: 1500,
            completion_tokens: 100,
            cost_pico: 1_900_000_000,
            cache_status: Some("off"),
            request_hash: &hash,
            prefix_hash: &prefix,
            prompt_chars: 6000,
            ..Record::default()
        });
    }
    let mem = a.memory();
    assert!(mem.fingerprints.peak <= settings.fingerprint_cap, "{mem:?}");
    assert_eq!(mem.fingerprints.cap, 1 << 18);
    assert!(mem.fingerprints.sample_shift >= 2, "{mem:?}");
    assert!(mem.prefixes.peak <= settings.group_cap, "{mem:?}");
    assert!(mem.prefixes.evicted > 0, "{mem:?}");
    let report = a.finish();
    assert!(report.recommendations.is_empty(), "{report:#?}");
}

#[test]
fn sampled_fingerprints_still_estimate_the_saving() {
    // 20,000 requests each repeated once, 30 s later, with a map of only 1,000 fingerprints.
    let catalog = catalog();
    let router = Router::new(Policy::default());
    let settings = Settings {
        fingerprint_cap: 1000,
        ..Settings::default()
    };
    let mut events: Vec<(i64, usize)> = (0..20_000)
        .flat_map(|j| [(j as i64 * 10, j), (j as i64 * 10 + 30, j)])
        .collect();
    events.sort_unstable();
    let hashes: Vec<String> = (0..20_000).map(|j| format!("fp-{j}")).collect();
    let mut a = Analyzer::with_settings(&catalog, &router, settings);
    for (t, j) in events {
        a.observe(&Record {
            org_id: "acme",
            created_at: T0 + t * SEC,
            model_used: Some("mid"),
            status: 200,
            cost_pico: 2_000_000_000,
            cache_status: Some("off"),
            request_hash: &hashes[j],
            ..Record::default()
        });
    }
    let report = a.finish();
    assert!(report.stats.fingerprints.peak <= 1000);
    assert!(report.stats.fingerprints.sample_shift >= 4);
    // Truth: 20,000 repeats × $0.002 = $40 observed; the sample must land within 20%.
    let rec = &report.recommendations[0];
    let observed = rec.basis.observed_saving.as_usd_f64();
    assert!((32.0..=48.0).contains(&observed), "{observed}");
    assert!(rec.basis.sample_rate < 1.0);
}

#[test]
fn output_is_deterministic_and_ranked() {
    let mut rows = cache_ledger();
    rows.extend(downgrade_ledger());
    let a = run(&rows, None);
    let b = run(&rows, None);
    let json_a = serde_json::to_string(&a).unwrap();
    assert_eq!(json_a, serde_json::to_string(&b).unwrap());
    assert_eq!(a.recommendations.len(), 2, "{a:#?}");
    assert!(
        a.recommendations
            .windows(2)
            .all(|w| w[0].monthly_saving >= w[1].monthly_saving)
    );
    // The same findings keep their ids when the ledger order and the window change.
    let mut reversed = rows.clone();
    reversed.reverse();
    let c = run(&reversed, None);
    let ids = |r: &Report| {
        let mut v: Vec<String> = r.recommendations.iter().map(|x| x.id.clone()).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&a), ids(&c));
    let value: serde_json::Value = serde_json::from_str(&json_a).unwrap();
    let first = &value["recommendations"][0];
    assert!(first["monthly_saving"].is_string());
    assert!(first["basis"]["formula"].as_str().unwrap().contains("× 30"));
    assert!(first["kind"].is_string());
}

#[test]
fn cost_mode_choice_agrees_with_the_router() {
    let catalog = Catalog::builtin();
    let router = Router::new(Policy::default());
    let analyzer = Analyzer::new(&catalog, &router);
    for (prompt, max_tokens) in [
        ("What is the capital of Portugal?", None),
        ("Translate 'good morning' into Spanish.", Some(50)),
        (
            "Compare three approaches to rate limiting in a distributed API gateway, with their failure modes, and recommend one for a multi-region deployment.",
            None,
        ),
        (
            "Find every integer n such that n^2 + 3n + 2 is divisible by 7, and prove you found them all.",
            Some(2000),
        ),
    ] {
        let messages = [Message::user(prompt)];
        let mut request = Request::new(&messages);
        if let Some(m) = max_tokens {
            request = request.with_max_tokens(m);
        }
        let c = Classifier::default().classify(&request);
        let expected = Selector::new(Mode::Cost).select(&catalog, &c).unwrap();
        let ours = analyzer
            .cost_mode_choice(c.tier, c.input_tokens, c.max_tokens, None)
            .unwrap();
        assert_eq!(ours.id, expected.model.id, "{prompt} ({:?})", c.tier);
    }
    assert!(
        analyzer
            .cost_mode_choice(Tier::Simple, 100, None, None)
            .is_some()
    );
}

#[test]
fn analyze_reads_an_iterator() {
    let rows = cache_ledger();
    let report = analyze(&catalog(), &Router::default(), rows.iter().map(Row::record));
    assert_eq!(kinds(&report), [Kind::Cache]);
}
