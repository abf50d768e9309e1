//! `cognitude analyze --org NAME`: the organization's cost-saving recommendations, read from
//! the ledger the same way `GET /analytics/recommendations` reads them, printed for a person.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use cognitude_catalog::{Catalog, Money};
use cognitude_router::Policy;
use cognitude_server::analytics::{DEFAULT_WINDOW_SECS, parse_window, recommendations};
use cognitude_store::{Org, Store};

/// Analyzes `org`'s records over `window` (default 30 days) and returns the text to print.
pub async fn run(
    store: &Store,
    catalog: &Catalog,
    policy: &Policy,
    org: &Org,
    window: Option<&str>,
) -> Result<String> {
    let (window_text, window_secs) = match window {
        Some(w) => (
            w.trim().to_owned(),
            parse_window(w)
                .map_err(anyhow::Error::msg)
                .context("--window")?,
        ),
        None => ("30d".to_owned(), DEFAULT_WINDOW_SECS),
    };
    let report = recommendations(store, catalog, policy, &org.id, window_secs)
        .await
        .with_context(|| format!("could not analyze organization '{}'", org.name))?;
    let mut out = String::new();
    let records = report.stats.records;
    let _ = writeln!(
        out,
        "Organization '{}' ({}), last {window_text}: {records} records analysed.",
        org.name, org.id
    );
    if report.recommendations.is_empty() {
        let why = if records == 0 {
            "there are no ledger records in this window".to_owned()
        } else {
            format!(
                "none of the {records} records showed enough evidence for a saving of at least $1.00 a month \
                 ({} candidates below the thresholds)",
                report.stats.below_threshold
            )
        };
        let _ = writeln!(out, "No recommendations: {why}.");
        return Ok(out);
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:>4}  {:>12}  {:<16}  {:<6}  TITLE",
        "RANK", "MONTHLY", "KIND", "CONF."
    );
    for (i, r) in report.recommendations.iter().enumerate() {
        let _ = writeln!(
            out,
            "{:>4}  {:>12}  {:<16}  {:<6}  {}",
            i + 1,
            usd(r.monthly_saving),
            r.kind.as_str(),
            format!("{:?}", r.confidence).to_lowercase(),
            r.title
        );
        let _ = writeln!(out, "{:>46}→ {}", "", r.action.summary);
    }
    let total: Money = report
        .recommendations
        .iter()
        .map(|r| r.monthly_saving)
        .sum();
    let _ = writeln!(out);
    let n = report.recommendations.len();
    let _ = writeln!(
        out,
        "Total estimated saving: {} a month ({n} recommendation{}).",
        usd(total),
        if n == 1 { "" } else { "s" }
    );
    let _ = writeln!(
        out,
        "Details, arithmetic and config snippets: GET /analytics/recommendations?window={window_text}"
    );
    Ok(out)
}

/// Dollars with cents, and every digit below a cent.
fn usd(m: Money) -> String {
    if m.pico().abs() >= 10_000_000_000 {
        format!("${:.2}", m.as_usd_f64())
    } else {
        format!("${m}")
    }
}
