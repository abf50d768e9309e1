//! The router as a library user sees it: the labelled set, allocation-free classification,
//! robustness on arbitrary input, and routing with policies.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    reason = "tests fail loudly and print the labelled-set report"
)]

use std::alloc::System;
use std::sync::{Mutex, MutexGuard};

use cognitude_catalog::Catalog;
use cognitude_router::{
    Classification, Classifier, Content, Message, Mode, Policy, Request, Role, RouteRequest,
    Router, Selector, SignalKind, Tier,
};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use serde_json::Value;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Tests in this binary run one at a time, so the allocation count of one is not disturbed by
/// another's threads. Every test holds this lock for its whole body, input generation included
/// (the property tests run their cases inside it), since the counter is process-wide.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

const LABELLED: &str = include_str!("data/labelled.jsonl");

/// One labelled prompt, owned; `request` borrows from it.
struct Labelled {
    id: String,
    tier: Tier,
    messages: Vec<(Role, String)>,
    tools: bool,
    json: bool,
    images: bool,
    max_tokens: Option<u64>,
}

fn labelled() -> Vec<Labelled> {
    LABELLED
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let messages = v["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    let role = match m["role"].as_str().unwrap() {
                        "user" => Role::User,
                        "assistant" => Role::Assistant,
                        "system" => Role::System,
                        other => panic!("role {other}"),
                    };
                    (role, m["content"].as_str().unwrap().to_owned())
                })
                .collect();
            Labelled {
                id: v["id"].as_str().unwrap().to_owned(),
                tier: v["tier"].as_str().unwrap().parse().unwrap(),
                messages,
                tools: v["tools"].as_bool().unwrap_or(false),
                json: v["json"].as_bool().unwrap_or(false),
                images: v["images"].as_bool().unwrap_or(false),
                max_tokens: v["max_tokens"].as_u64(),
            }
        })
        .collect()
}

fn classify_labelled(item: &Labelled) -> Classification {
    let msgs: Vec<Message<'_>> = item
        .messages
        .iter()
        .map(|(role, text)| Message::new(*role, text))
        .collect();
    let mut request = Request::new(&msgs)
        .with_tools(item.tools)
        .with_json_output(item.json)
        .with_images(item.images);
    request.max_tokens = item.max_tokens;
    Classifier::default().classify(&request)
}

#[test]
fn labelled_set_accuracy_and_confusion_matrix() {
    let _g = serial();
    let items = labelled();
    assert!(items.len() >= 300, "{} prompts", items.len());
    let mut matrix = [[0usize; 3]; 3];
    let mut complex_as_simple = Vec::new();
    for item in &items {
        let c = classify_labelled(item);
        matrix[item.tier as usize][c.tier as usize] += 1;
        if item.tier == Tier::Complex && c.tier == Tier::Simple {
            complex_as_simple.push(format!("{} (score {:.3})", item.id, c.score));
        }
    }
    let correct: usize = (0..3).map(|i| matrix[i][i]).sum();
    let accuracy = correct as f64 / items.len() as f64;
    println!(
        "labelled set: {} prompts, accuracy {:.1}%",
        items.len(),
        accuracy * 100.0
    );
    println!(
        "{:>10} {:>8} {:>8} {:>8}   (rows: label, columns: predicted)",
        "", "simple", "medium", "complex"
    );
    for t in Tier::ALL {
        let row = matrix[t as usize];
        println!(
            "{:>10} {:>8} {:>8} {:>8}",
            t.as_str(),
            row[0],
            row[1],
            row[2]
        );
    }
    assert!(
        complex_as_simple.is_empty(),
        "complex prompts classified simple: {complex_as_simple:?}"
    );
    assert!(accuracy >= 0.85, "accuracy {accuracy:.3} below 85%");
}

#[test]
fn labelled_set_covers_languages_kinds_and_turns() {
    let _g = serial();
    let items = labelled();
    let rows: Vec<Value> = LABELLED
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let count = |key: &str, value: &str| rows.iter().filter(|r| r[key] == value).count();
    for t in ["simple", "medium", "complex"] {
        assert!(count("tier", t) >= 80, "{t}");
    }
    for lang in ["en", "es", "fr", "de", "zh", "ja", "ru"] {
        assert!(count("lang", lang) >= 5, "{lang}");
    }
    for kind in ["code", "math", "chat", "extract", "longdoc", "multi"] {
        assert!(count("kind", kind) >= 5, "{kind}");
    }
    assert!(
        items
            .iter()
            .any(|i| i.messages.iter().map(|m| m.1.len()).sum::<usize>() > 3000)
    );
}

#[test]
fn classify_does_not_allocate() {
    let _g = serial();
    let long = "Here is the quarterly report.\n\n".to_owned()
        + &"Revenue grew 12% to $4.1M, driven by the Pro plan; churn fell to 2.3%. ".repeat(300)
        + "\n\nSummarize the drivers and compute the growth per segment.";
    let parts = [
        "Explain this code:",
        "```rust\nfn f(x: u32) -> u32 { x * 2 }\n```",
    ];
    let messages = [
        Message::system("You are precise.\n1. Cite clauses.\n2. Be brief."),
        Message::user("Prove that √2 is irrational, step by step. Почему? 为什么？"),
        Message::assistant("Suppose √2 = p/q in lowest terms …"),
        Message::with_parts(Role::User, &parts),
    ];
    let single = [Message::user(long.as_str())];
    let requests = [
        Request::new(&messages)
            .with_max_tokens(2000)
            .with_tools(true),
        Request::new(&single)
            .with_system("Answer in JSON.")
            .with_json_output(true),
        Request::new(&[]),
    ];
    let classifier = Classifier::default();
    // Warm up anything lazily initialised by the test harness itself.
    let _ = classifier.classify(&requests[0]);
    // The counter is process-wide, and the harness's main thread may allocate while this runs
    // (progress output as other tests finish). Classification that allocates does so on every
    // attempt, so the quietest of several attempts is the honest count.
    let quietest = (0..10)
        .map(|_| {
            let region = Region::new(GLOBAL);
            let mut total = 0.0;
            for r in &requests {
                let c = classifier.classify(r);
                total += c.score;
                for s in c.top_signals() {
                    total += s.contribution;
                }
            }
            assert!(total > 0.0);
            region.change()
        })
        .min_by_key(|s| s.allocations + s.reallocations)
        .unwrap();
    assert_eq!(quietest.allocations, 0, "{quietest:?}");
    assert_eq!(quietest.reallocations, 0, "{quietest:?}");
}

#[test]
fn a_ten_megabyte_prompt_is_classified() {
    let _g = serial();
    let big = "The committee reviewed 14 proposals, accepted 3 and asked for changes to 5. "
        .repeat(140_000);
    assert!(big.len() > 10_000_000);
    let msgs = [Message::user(&big)];
    let c = Classifier::default().classify(&Request::new(&msgs));
    assert!((0.0..1.0).contains(&c.score));
    // About 20 tokens per sentence: the estimate stays linear on huge inputs.
    let per_sentence = c.input_tokens as f64 / 140_000.0;
    assert!((12.0..30.0).contains(&per_sentence), "{per_sentence}");
    // About 2.8 million tokens: no model of the built-in catalog takes that, and the error
    // says why.
    let cat = Catalog::builtin();
    match Selector::new(Mode::Cost).select(&cat, &c) {
        Err(cognitude_router::Error::NoModel(r)) => assert_eq!(r.too_small, cat.len()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn only_a_system_prompt_or_nothing() {
    let _g = serial();
    let sys = [Message::system(
        "Translate every message into French, formally.",
    )];
    let c = Classifier::default().classify(&Request::new(&sys));
    assert!(c.score > 0.0 && c.input_tokens > 0);
    let empty_parts = [Message::with_parts(Role::User, &[]), Message::user("")];
    let c = Classifier::default().classify(&Request::new(&empty_parts));
    assert!(c.score < 0.05, "{}", c.score);
    assert_eq!(c.tier, Tier::Simple);
    assert_eq!(c.signal(SignalKind::Length).value, 0.0);
}

#[test]
fn score_is_the_same_however_the_text_is_split_into_parts() {
    let _g = serial();
    let text = "List three causes of inflation, then explain which one matters most and why.";
    let (a, b) = text.split_at(30);
    let parts = [a, b];
    let one = Classifier::default().classify(&Request::new(&[Message::user(text)]));
    let split =
        Classifier::default().classify(&Request::new(&[Message::with_parts(Role::User, &parts)]));
    assert!(one.input_tokens.abs_diff(split.input_tokens) <= 1);
    assert!(
        (one.score - split.score).abs() < 0.1,
        "{} vs {}",
        one.score,
        split.score
    );
}

#[test]
fn routing_end_to_end_with_the_builtin_catalog() {
    let _g = serial();
    let cat = Catalog::builtin();
    let router = Router::new(Policy {
        baseline: Some("gpt-5".into()),
        ..Policy::default()
    });
    let simple = [Message::user("What is the capital of Japan?")];
    let hard = [Message::user(
        "Prove that for every integer n ≥ 1, 7^n − 1 is divisible by 6, and find all n for which \
         it is divisible by 36. Justify each step.",
    )];
    let s = router
        .route(&cat, &RouteRequest::new(Request::new(&simple)))
        .unwrap();
    let h = router
        .route(&cat, &RouteRequest::new(Request::new(&hard)))
        .unwrap();
    assert_eq!(s.classification.tier, Tier::Simple);
    assert_eq!(h.classification.tier, Tier::Complex);
    assert!(s.selection.model.quality < h.selection.model.quality);
    assert!(s.selection.cost < h.selection.cost);
    assert!(h.selection.model.quality >= 85, "{}", h.selection.reason);
    let saving = s.baseline.unwrap().saving;
    assert!(saving.pico() > 0);
    // Every candidate is allowed and the list is ranked by cost among those meeting the bar.
    let costs: Vec<_> = h
        .selection
        .candidates
        .iter()
        .take_while(|c| c.meets_bar)
        .map(|c| c.cost)
        .collect();
    assert!(costs.windows(2).all(|w| w[0] <= w[1]), "{costs:?}");
}

#[test]
fn selection_over_a_fifty_model_catalog() {
    let _g = serial();
    let cat = cognitude_testkit::fifty_models();
    assert_eq!(cat.len(), 50);
    let msgs = [Message::user(
        "Write a SQL query for the top 5 customers by revenue.",
    )];
    let c = Classifier::default().classify(&Request::new(&msgs));
    for mode in Mode::ALL {
        let sel = Selector::new(mode).select(&cat, &c).unwrap();
        assert_eq!(sel.candidates.len(), 50);
        assert_eq!(sel.candidates[0].model.id, sel.model.id);
        // What it allocates is what it returns: the ranked list and the reason. The quietest
        // of several attempts, as in `classify_does_not_allocate`.
        let quietest = (0..10)
            .map(|_| {
                let region = Region::new(GLOBAL);
                let again = Selector::new(mode).select(&cat, &c).unwrap();
                assert_eq!(again, sel);
                region.change()
            })
            .min_by_key(|s| s.allocations + s.reallocations)
            .unwrap();
        assert_eq!(quietest.allocations, 2, "{mode}: {quietest:?}");
        assert_eq!(quietest.reallocations, 0, "{mode}: {quietest:?}");
    }
}

#[cfg(feature = "serde")]
#[test]
fn policy_from_configuration_is_validated() {
    let _g = serial();
    let ok = r#"{
        "mode": "latency",
        "thresholds": {"medium": 0.25, "complex": 0.55},
        "quality_bars": {"simple": 50, "medium": 70, "complex": 88},
        "allowed_providers": ["openai", "anthropic"],
        "required_capabilities": ["tools"],
        "price_ceiling": "0.05",
        "baseline": "gpt-5",
        "rules": [
            {"metadata": {"field": "team", "equals": "legal"}, "model": "claude-opus-4-6"},
            {"requested_model": "gpt-4*", "model": "gpt-4.1-mini"},
            {"prompt_contains": "contract", "model": "claude-sonnet-4-6"}
        ]
    }"#;
    let p: Policy = serde_json::from_str(ok).unwrap();
    assert_eq!(p.mode, Mode::Latency);
    assert_eq!(p.rules.len(), 3);
    assert!(p.constraints.required.tools);
    p.validate(&Catalog::builtin()).unwrap();
    for bad in [
        r#"{"thresholds": {"medium": 0.7, "complex": 0.5}}"#,
        r#"{"quality_bars": {"simple": 90, "medium": 70, "complex": 80}}"#,
        r#"{"mode": "fastest"}"#,
        r#"{"colour": "blue"}"#,
        r#"{"rules": [{"model": "x", "prompt_contains": "a", "requested_model": "b"}]}"#,
        r#"{"required_capabilities": ["telepathy"]}"#,
    ] {
        assert!(serde_json::from_str::<Policy>(bad).is_err(), "{bad}");
    }
}

#[cfg(feature = "serde")]
#[test]
fn classification_serializes_with_signals() {
    let _g = serial();
    let msgs = [Message::user("Solve x^2 - 5x + 6 = 0.")];
    let c = Classifier::default().classify(&Request::new(&msgs));
    let v = serde_json::to_value(&c).unwrap();
    assert_eq!(v["tier"], c.tier.as_str());
    assert_eq!(
        v["signals"].as_array().unwrap().len(),
        SignalKind::ALL.len()
    );
    assert_eq!(v["signals"][2]["signal"], "math");
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![
        Just(Role::System),
        Just(Role::User),
        Just(Role::Assistant),
        Just(Role::Tool)
    ]
}

/// Text from every corner of Unicode, plus prompt-like ASCII with markup.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        proptest::collection::vec(any::<u8>(), 0..400)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        "[ -~\n\t]{0,300}",
        "[a-z0-9 ,.;:?!()\\[\\]{}=+*/^<>%|`#\"'_\n-]{0,300}",
        "[\u{300}-\u{36f}\u{4e00}-\u{4e20}\u{600}-\u{620}\u{900}-\u{920}\u{1f600}-\u{1f610}\u{2200}-\u{2210}\u{ff01}-\u{ff20} ]{0,200}",
    ]
}

fn check_invariants(c: &Classification) {
    assert!(
        c.score.is_finite() && (0.0..=1.0).contains(&c.score),
        "{}",
        c.score
    );
    let sum: f64 = c.signals().iter().map(|s| s.contribution).sum();
    assert!((sum - c.score).abs() < 1e-9, "{sum} vs {}", c.score);
    for s in c.signals() {
        assert!(
            s.value.is_finite() && s.points.is_finite() && s.contribution >= 0.0,
            "{s:?}"
        );
    }
    assert_eq!(c.tier, Classifier::default().thresholds().tier(c.score));
}

/// 256 cases in the normal suite; `PROPTEST_CASES` runs more (a long robustness run).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Runs a property over `strategy` while holding the test lock, input generation and shrinking
/// included, and fails with the smallest failing input.
fn check_property<S: Strategy>(
    strategy: S,
    property: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let _g = serial();
    let config = ProptestConfig {
        cases: cases(),
        source_file: Some(file!()),
        ..ProptestConfig::default()
    };
    if let Err(e) = TestRunner::new(config).run(&strategy, property) {
        panic!("{e}");
    }
}

#[test]
fn never_panics_on_arbitrary_conversations() {
    let strategy = (
        proptest::collection::vec((role(), proptest::collection::vec(text(), 0..4)), 0..6),
        proptest::option::of(text()),
        proptest::option::of(any::<u64>()),
        any::<(bool, bool, bool)>(),
    );
    check_property(strategy, |(turns, system, max_tokens, flags)| {
        let parts: Vec<Vec<&str>> = turns
            .iter()
            .map(|(_, p)| p.iter().map(String::as_str).collect())
            .collect();
        let msgs: Vec<Message<'_>> = turns
            .iter()
            .zip(&parts)
            .map(|((role, _), p)| Message {
                role: *role,
                content: Content::Parts(p),
            })
            .collect();
        let mut req = Request::new(&msgs)
            .with_tools(flags.0)
            .with_json_output(flags.1)
            .with_images(flags.2);
        req.system = system.as_deref();
        req.max_tokens = max_tokens;
        let c = Classifier::default().classify(&req);
        check_invariants(&c);
        prop_assert_eq!(&c, &Classifier::default().classify(&req), "deterministic");
        let cat = Catalog::builtin();
        for mode in Mode::ALL {
            // Either a model or a typed error; never a panic.
            if let Ok(sel) = Selector::new(mode).select(&cat, &c) {
                prop_assert!(!sel.reason.is_empty());
            }
        }
        Ok(())
    });
}

#[test]
fn many_parts_deep_inside_one_message() {
    let strategy = proptest::collection::vec(text(), 0..200);
    check_property(strategy, |pieces| {
        let parts: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let msgs = [Message::with_parts(Role::User, &parts)];
        let c = Classifier::default().classify(&Request::new(&msgs));
        check_invariants(&c);
        Ok(())
    });
}
