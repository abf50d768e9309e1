//! `cognitude-router` on its own: classify a few requests and pick a model for each from a
//! custom three-model catalog, in each mode, then route through an organization's policy.
//!
//! `cargo run -p cognitude-examples --example router`

use anyhow::Result;
use cognitude_catalog::Catalog;
use cognitude_router::{
    Classifier, Condition, Message, Mode, Policy, Request, RouteRequest, Router, Rule, Selector,
    Thresholds,
};

/// Your own models: ids, prices per million tokens, limits, capabilities, quality, speed.
const CATALOG: &str = r#"
[[model]]
id = "house-small"
provider = "self-hosted"
input = 0.05
output = 0.20
context_window = 32000
max_output = 4096
capabilities = ["json"]
quality = 62
latency_ms = 150
tokens_per_second = 250

[[model]]
id = "vendor-mid"
provider = "vendor"
input = 0.40
output = 1.60
context_window = 128000
max_output = 16384
capabilities = ["json", "tools"]
quality = 78
latency_ms = 400
tokens_per_second = 120

[[model]]
id = "vendor-large"
provider = "vendor"
input = 2.50
output = 10.00
context_window = 200000
max_output = 32768
capabilities = ["json", "tools", "vision", "reasoning"]
quality = 93
latency_ms = 1200
tokens_per_second = 70
"#;

#[expect(clippy::print_stdout, reason = "an example prints what it shows")]
fn main() -> Result<()> {
    let catalog = Catalog::from_toml(CATALOG)?;
    // Thresholds are yours to tune: a lower `complex` sends more traffic to strong models.
    let classifier = Classifier::new(Thresholds::new(0.20, 0.47)?);

    let chat = [Message::user("Thanks! And what's the capital of Canada?")];
    let email = [Message::user(
        "Write a friendly email to a customer apologising for a late delivery, and offer a 10% discount.",
    )];
    let debug = [Message::user(
        "This Go code deadlocks under load; find the bug and fix it:\n```go\nfunc (s *Store) Transfer(a, b *Account, n int) {\n    a.mu.Lock()\n    defer a.mu.Unlock()\n    b.mu.Lock()\n    defer b.mu.Unlock()\n    a.balance -= n\n    b.balance += n\n}\n```",
    )];
    let requests = [
        ("chat", Request::new(&chat)),
        ("email", Request::new(&email)),
        ("debug", Request::new(&debug).with_tools(true)),
    ];

    for (name, request) in &requests {
        let c = classifier.classify(request);
        println!(
            "{name}: score {:.2}, {} tier, ~{} input tokens",
            c.score, c.tier, c.input_tokens
        );
        for s in c.top_signals().take(3) {
            println!(
                "    {:<12} value {:>6.1}  +{:.3}",
                s.kind, s.value, s.contribution
            );
        }
        for mode in Mode::ALL {
            let sel = Selector::new(mode).select(&catalog, &c)?;
            println!(
                "  {mode:<8} -> {:<13} ${} est. — {}",
                sel.model.id, sel.cost, sel.reason
            );
        }
    }

    // An organization's policy: latency by default, a baseline to measure savings against, and
    // a rule that sends the legal team to the large model whatever the classifier says.
    let router = Router::new(Policy {
        mode: Mode::Latency,
        baseline: Some("vendor-large".into()),
        rules: vec![Rule {
            when: Condition::Metadata {
                field: "team".into(),
                equals: "legal".into(),
            },
            model: "vendor-large".into(),
        }],
        ..Policy::default()
    });
    router.policy().validate(&catalog)?;
    let metadata = [("team", "legal")];
    for (who, meta) in [("support", &[][..]), ("legal", &metadata[..])] {
        let input = RouteRequest::new(Request::new(&email)).with_metadata(meta);
        let d = router.route(&catalog, &input)?;
        let saving = d.baseline.map(|b| b.saving.to_string()).unwrap_or_default();
        println!(
            "policy, {who} team: {} (saves ${saving} vs the baseline) — {}",
            d.selection.model.id, d.selection.reason
        );
    }
    Ok(())
}
