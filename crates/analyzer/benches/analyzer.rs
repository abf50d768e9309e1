//! One million synthetic ledger records through the analyzer, generated in memory as a store
//! cursor would hand them over (one reused row buffer, nothing kept). Prints the elapsed time
//! and records per second; run it under `/usr/bin/time -v` for the peak RSS:
//!
//! ```text
//! cargo bench -p cognitude-analyzer --bench analyzer -- 1000000
//! ```
//!
//! The mix: four organizations; a tenth of requests repeat one of 50,000 popular requests;
//! the rest are distinct; tiers, models, max_tokens and system prompts vary.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    reason = "a bench harness reports on stdout"
)]

use std::fmt::Write;
use std::time::Instant;

use cognitude_analyzer::{Analyzer, Record};
use cognitude_catalog::Catalog;
use cognitude_router::{Policy, Router};

const ORGS: [&str; 4] = ["org_a", "org_b", "org_c", "org_d"];
const MODELS: [&str; 5] = [
    "gpt-5",
    "gpt-4o",
    "gpt-4o-mini",
    "claude-sonnet-4-5",
    "gemini-2.5-flash",
];
const TIERS: [&str; 3] = ["simple", "medium", "complex"];
const SYSTEMS: [&str; 4] = ["sys-a", "sys-b", "sys-c", "sys-d"];

/// A 64-character hex string like the ledger's SHA-256 fingerprints (cheaper than `{:064x}`,
/// so the harness measures the analyzer rather than formatting).
fn hex64(out: &mut String, v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for _ in 0..48 {
        out.push('0');
    }
    for shift in (0..16).rev() {
        out.push(char::from(DIGITS[((v >> (shift * 4)) & 0xF) as usize]));
    }
}

fn main() {
    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let catalog = Catalog::builtin();
    let router = Router::new(Policy::default());
    let mut analyzer = Analyzer::new(&catalog, &router);
    let (mut id, mut hash, mut prefix) = (String::new(), String::new(), String::new());
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let start = Instant::now();
    for i in 0..n {
        // xorshift: fast, deterministic, no dependency.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let r = rng;
        id.clear();
        hash.clear();
        prefix.clear();
        write!(id, "req-{i}").unwrap();
        hex64(
            &mut hash,
            if r.is_multiple_of(10) {
                (r >> 8) % 50_000
            } else {
                u64::MAX - i
            },
        );
        hex64(&mut prefix, (r >> 20) % 200_000);
        let model = MODELS[(r >> 4) as usize % MODELS.len()];
        let prompt = 200 + (r >> 12) % 3000;
        let completion = 20 + (r >> 24) % 600;
        let long_system = (r >> 40).is_multiple_of(4);
        analyzer.observe(&Record {
            request_id: &id,
            org_id: ORGS[(r >> 2) as usize % ORGS.len()],
            created_at: 1_750_000_000_000_000 + i as i64 * 2_000_000,
            model_used: Some(model),
            status: 200,
            prompt_tokens: prompt as i64,
            completion_tokens: completion as i64,
            cost_pico: ((prompt * 2 + completion * 10) * 1_000_000) as i64,
            max_tokens: (r >> 32).is_multiple_of(2).then_some(4096),
            cache_status: Some(if r.is_multiple_of(3) { "off" } else { "miss" }),
            route_tier: Some(TIERS[(r >> 36) as usize % TIERS.len()]),
            request_hash: &hash,
            system_hash: long_system.then_some(SYSTEMS[(r >> 44) as usize % SYSTEMS.len()]),
            system_len: if long_system { 6000 } else { 0 },
            prefix_hash: &prefix,
            prompt_chars: (prompt * 4) as i64,
            ..Record::default()
        });
    }
    let observed = start.elapsed();
    let report = analyzer.finish();
    let total = start.elapsed();
    println!(
        "{n} records: observe {:.3} s, finish {:.3} s, total {:.3} s, {:.0} records/s",
        observed.as_secs_f64(),
        (total - observed).as_secs_f64(),
        total.as_secs_f64(),
        n as f64 / total.as_secs_f64()
    );
    println!(
        "{} recommendations; fingerprints {}/{} (shift {}), system prompts {}, prefixes {}/{} (evicted {})",
        report.recommendations.len(),
        report.stats.fingerprints.peak,
        report.stats.fingerprints.cap,
        report.stats.fingerprints.sample_shift,
        report.stats.system_prompts.peak,
        report.stats.prefixes.peak,
        report.stats.prefixes.cap,
        report.stats.prefixes.evicted,
    );
    for r in report.recommendations.iter().take(8) {
        println!(
            "  {:>12}  {:<16} {}",
            r.monthly_saving.to_string(),
            r.kind,
            r.title
        );
    }
}
