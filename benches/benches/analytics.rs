//! Analytics at scale: a ledger generator fills a PostgreSQL database of its own with N records
//! (`COGNITUDE_BENCH_RECORDS`, default 1,000,000), then times `GET /analytics/breakdown`'s query
//! for every `group_by` over 30 days and the recommendations analysis, whose peak memory is
//! measured in a child process of its own (VmHWM from /proc/self/status).
//!
//! A plain bench binary: each figure is one long operation, not a hot loop. Run with
//! `cargo bench -p cognitude-benches --bench analytics`; it needs PostgreSQL at DATABASE_URL
//! (default: the local server) and `psql` (for VACUUM ANALYZE and the query plans), and drops
//! its database at the end. `COGNITUDE_BENCH_ORGS` (default 20) sets how many organizations
//! share the records. `COGNITUDE_BENCH_KEEP=1` keeps the database and prints the command that
//! reruns the analysis alone against it (`analytics --recommend URL ORG`).
//!
//! The generated ledger: organizations of Zipf-distributed sizes, each with a few API keys, a
//! model mix (premium and cheap models from the catalog, priced exactly), log-normal prompt and
//! completion sizes, a fifth of requests repeating one of the org's popular requests, shared
//! system prompts and prompt templates, the response cache on for some orgs (hits cost nothing
//! and record what they saved) and off for the others, smart routing on for a few, router
//! tiers and scores on 85% of records, a few errors, latencies that grow with the output, and
//! a daily load curve (a trough at night, quieter weekends) over the last 30 days.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cognitude_catalog::{Catalog, TokenUsage};
use cognitude_store::{GroupBy, Store, UsageRecord};
use cognitude_testkit::TestDatabase;

const DAY: i64 = 86_400_000_000;
const MODELS: [(&str, u32); 6] = [
    ("gpt-4o", 20),
    ("gpt-4o-mini", 30),
    ("claude-sonnet-4-5", 15),
    ("claude-haiku-4-5", 15),
    ("gpt-4.1", 10),
    ("gemini-2.5-flash", 10),
];

/// The allocator the `cognitude` binary ships with, so the analysis is measured as it runs in
/// `GET /analytics/recommendations` and `cognitude analyze`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[expect(clippy::print_stdout, reason = "a bench prints its results")]
fn report(line: &str) {
    println!("{line}");
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(i) = args.iter().position(|a| a == "--recommend") {
        let (url, org) = match (args.get(i + 1), args.get(i + 2)) {
            (Some(u), Some(o)) => (u.clone(), o.clone()),
            _ => bail!("usage: --recommend URL ORG"),
        };
        return runtime.block_on(recommend_child(&url, &org));
    }
    runtime.block_on(run())
}

/// The parent: generate, load, time the breakdowns, run the analysis in a child.
async fn run() -> Result<()> {
    let n: u64 = env_number("COGNITUDE_BENCH_RECORDS", 1_000_000);
    let orgs: usize = env_number("COGNITUDE_BENCH_ORGS", 20);
    let db = TestDatabase::create().await.map_err(anyhow::Error::msg)?;
    let result = bench(&db.url, n, orgs).await;
    if std::env::var("COGNITUDE_BENCH_KEEP").is_ok_and(|v| v == "1") {
        report(&format!(
            "kept the database: rerun the analysis with `{} --recommend {} <org>`",
            std::env::current_exe()?.display(),
            db.url
        ));
    } else {
        db.drop_db().await;
    }
    result
}

async fn bench(url: &str, n: u64, orgs: usize) -> Result<()> {
    let store = Store::connect(url).await?;
    store.migrate().await?;
    let now = cognitude_store::now_micros();
    let from = now - 30 * DAY;

    let started = Instant::now();
    let per_org = load(&store, n, orgs, from, now).await?;
    let load_time = started.elapsed();
    report(&format!(
        "loaded {n} records for {orgs} organizations in {:.1} s ({:.0} records/s)",
        load_time.as_secs_f64(),
        n as f64 / load_time.as_secs_f64()
    ));
    psql(url, "VACUUM ANALYZE usage_records")?;
    psql(url, "VACUUM ANALYZE usage_dimension_rollups")?;
    let size = psql(
        url,
        "SELECT pg_size_pretty(pg_total_relation_size('usage_records'))",
    )?;
    report(&format!("usage_records with its indexes: {}", size.trim()));
    let rollups = psql(
        url,
        "SELECT COUNT(*) || ' rows, ' \
         || pg_size_pretty(pg_total_relation_size('usage_dimension_rollups')) \
         FROM usage_dimension_rollups",
    )?;
    report(&format!(
        "usage_dimension_rollups with its index: {}",
        rollups.trim()
    ));

    let (big, big_n) = per_org
        .iter()
        .enumerate()
        .max_by_key(|(_, c)| **c)
        .map(|(i, c)| (org_id(i), *c))
        .context("no organizations")?;
    report(&format!(
        "largest organization: {big} with {big_n} records ({:.0}% of all)",
        100.0 * big_n as f64 / n as f64
    ));

    // Breakdowns: the first run (cold-ish: the table was just vacuumed, so partly cached) and
    // the median of three more; from the rollups (the endpoint's query), then from the records
    // alone (the query before the rollups, kept as the reference) for comparison. The window
    // is not on hour boundaries, so the rollup figures include the two partial hours read
    // from the records.
    for (label, rollups) in [("rollups", true), ("records only", false)] {
        report(&format!(
            "breakdown over 30 days, largest organization, {label} (first run, then median of 3):"
        ));
        for g in GroupBy::ALL {
            let mut times = Vec::new();
            let mut groups = 0;
            for _ in 0..4 {
                let t = Instant::now();
                groups = if rollups {
                    store.usage_breakdown(&big, from, now, g).await?.len()
                } else {
                    store
                        .usage_breakdown_from_records(&big, from, now, g)
                        .await?
                        .len()
                };
                times.push(t.elapsed());
            }
            let first = times[0];
            let mut warm = times[1..].to_vec();
            warm.sort();
            report(&format!(
                "  group_by={:<13} {:>4} groups  first {:>7.1} ms  median {:>7.1} ms",
                g.as_str(),
                groups,
                ms(first),
                ms(warm[1])
            ));
        }
    }
    for g in GroupBy::ALL {
        if store.usage_breakdown(&big, from, now, g).await?
            != store
                .usage_breakdown_from_records(&big, from, now, g)
                .await?
        {
            bail!(
                "group_by={}: the rollups disagree with the records",
                g.as_str()
            );
        }
    }
    report("rollup breakdowns equal the records' for every group_by");
    let plan = psql(
        url,
        &format!(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT COALESCE(model_used, 'none'), \
             COUNT(*), SUM(cost_pico / 1000000) FROM usage_records WHERE org_id = '{big}' \
             AND created_at >= {from} AND created_at < {now} GROUP BY 1"
        ),
    )?;
    report("plan of the breakdown's scan (simplified select list):");
    for line in plan.lines() {
        report(&format!("    {line}"));
    }

    let plan = psql(
        url,
        &format!(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT * FROM usage_records \
             WHERE org_id = '{big}' AND created_at >= {from} AND (created_at > {from} OR id > '') \
             AND created_at < {now} ORDER BY created_at, id LIMIT 5000"
        ),
    )?;
    report("plan of one page of the analyzer's scan:");
    for line in plan.lines() {
        report(&format!("    {line}"));
    }

    // Recommendations in a child process, so its peak memory is the analysis's alone.
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(exe)
        .args(["--recommend", url, &big])
        .output()?;
    if !out.status.success() {
        bail!(
            "the analysis failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    report(String::from_utf8_lossy(&out.stdout).trim_end());
    Ok(())
}

/// The child: runs the same analysis as `GET /analytics/recommendations` and reports its wall
/// time and the process's peak resident memory.
async fn recommend_child(url: &str, org: &str) -> Result<()> {
    let store = Store::connect(url).await?;
    let catalog = Catalog::builtin();
    let rss_before = vm_kb("VmHWM")?;
    let to = cognitude_store::now_micros();
    let t = Instant::now();
    let report_ = cognitude_server::analytics::analyze(
        &store,
        &catalog,
        &cognitude_router::Policy::default(),
        org,
        to - 30 * DAY,
        to,
    )
    .await?;
    let wall = t.elapsed();
    let peak = vm_kb("VmHWM")?;
    report(&format!(
        "recommendations over 30 days, {org}: {} records in {:.2} s ({:.0} records/s), {} recommendations; \
         peak RSS {:.1} MB (before the analysis {:.1} MB)",
        report_.stats.records,
        wall.as_secs_f64(),
        report_.stats.records as f64 / wall.as_secs_f64(),
        report_.recommendations.len(),
        peak as f64 / 1024.0,
        rss_before as f64 / 1024.0,
    ));
    // The same pages read again without the analysis: how much of the time is the scan.
    let t = Instant::now();
    let (mut pages, _reader) =
        cognitude_server::analytics::scan(&store, org, to - 30 * DAY, to).await?;
    let mut rows = 0usize;
    while let Some(page) = pages.recv().await {
        rows += page?.len();
    }
    let scan_wall = t.elapsed();
    report(&format!(
        "    the scan alone (no analysis): {rows} records in {:.2} s",
        scan_wall.as_secs_f64()
    ));
    for r in report_.recommendations.iter().take(8) {
        report(&format!(
            "    {:<16} {:>12} a month  {}",
            r.kind.as_str(),
            format!("${:.2}", r.monthly_saving.as_usd_f64()),
            r.title
        ));
    }
    report(&format!(
        "    fingerprints: {} of {} (sample shift {}), prefixes peak {}",
        report_.stats.fingerprints.len,
        report_.stats.fingerprints.cap,
        report_.stats.fingerprints.sample_shift,
        report_.stats.prefixes.peak
    ));
    Ok(())
}

/// Generates and inserts the ledger, four batches in flight. Returns records per org.
async fn load(store: &Store, n: u64, orgs: usize, from: i64, to: i64) -> Result<Vec<u64>> {
    let catalog = Catalog::builtin();
    let mut generator = Generator::new(&catalog, orgs, from, to)?;
    // The ledger writer appends records as requests finish, so the table is in time order on
    // disk; generating in that order keeps the heap's layout realistic.
    let mut times: Vec<i64> = (0..n).map(|_| generator.timestamp()).collect();
    times.sort_unstable();
    let mut counts = vec![0u64; orgs];
    let mut tasks = tokio::task::JoinSet::new();
    let batch = 5_000u64;
    let mut i = 0;
    while i < n {
        let records: Vec<UsageRecord> = (i..(i + batch).min(n))
            .map(|k| {
                let r = generator.record(k, times[k as usize]);
                counts[r.1] += 1;
                r.0
            })
            .collect();
        i += records.len() as u64;
        if tasks.len() >= 4
            && let Some(done) = tasks.join_next().await
        {
            done??;
        }
        let s = store.clone();
        tasks.spawn(async move { s.insert_usage(&records).await.map(|_| ()) });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(counts)
}

fn org_id(i: usize) -> String {
    format!("org_bench_{i:03}")
}

/// Deterministic record generator (seeded).
struct Generator<'c> {
    rng: fastrand::Rng,
    models: Vec<(&'c cognitude_catalog::ModelInfo, u32)>,
    org_weights: Vec<f64>,
    from: i64,
    days: i64,
    hour_weights: [f64; 24],
}

impl<'c> Generator<'c> {
    fn new(catalog: &'c Catalog, orgs: usize, from: i64, to: i64) -> Result<Generator<'c>> {
        let models = MODELS
            .iter()
            .map(|(id, w)| {
                catalog
                    .get(id)
                    .map(|m| (m, *w))
                    .with_context(|| format!("{id} is not in the catalog"))
            })
            .collect::<Result<Vec<_>>>()?;
        // Zipf with exponent 1.1: with 20 orgs the largest has about 30% of the traffic.
        let org_weights = (0..orgs)
            .map(|k| 1.0 / ((k + 1) as f64).powf(1.1))
            .collect();
        // A trough at night (UTC), a peak in the afternoon.
        let mut hour_weights = [0.0; 24];
        for (h, w) in hour_weights.iter_mut().enumerate() {
            let x = (h as f64 - 15.0) / 24.0 * std::f64::consts::TAU;
            *w = 1.0 + 0.8 * x.cos();
        }
        Ok(Generator {
            rng: fastrand::Rng::with_seed(42),
            models,
            org_weights,
            from,
            days: ((to - from) / DAY).max(1),
            hour_weights,
        })
    }

    fn pick(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut x = self.rng.f64() * total;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }

    /// exp(N(mu, sigma)), by Box–Muller.
    fn log_normal(&mut self, mu: f64, sigma: f64) -> f64 {
        let u1 = self.rng.f64().max(1e-12);
        let u2 = self.rng.f64();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        (mu + sigma * z).exp()
    }

    fn timestamp(&mut self) -> i64 {
        loop {
            let day = self.rng.i64(0..self.days);
            // 1970-01-01 was a Thursday: day numbers 2 and 3 mod 7 are Saturday and Sunday.
            let weekday = ((self.from / DAY + day) % 7) as i32;
            if matches!(weekday, 2 | 3) && self.rng.f64() < 0.4 {
                continue;
            }
            let weights = self.hour_weights;
            let hour = self.pick(&weights) as i64;
            let at = self.from - self.from % DAY
                + day * DAY
                + hour * 3_600_000_000
                + self.rng.i64(0..3_600_000_000);
            if at >= self.from {
                return at;
            }
        }
    }

    fn record(&mut self, i: u64, created_at: i64) -> (UsageRecord, usize) {
        let weights = self.org_weights.clone();
        let org = self.pick(&weights);
        // Each org leans on two models of the mix.
        let favourite = org % self.models.len();
        let model_weights: Vec<f64> = self
            .models
            .iter()
            .enumerate()
            .map(|(k, (_, w))| f64::from(*w) * if k == favourite { 4.0 } else { 1.0 })
            .collect();
        let m = self.pick(&model_weights);
        let model = self.models[m].0;

        // A fifth of requests repeat one of the org's 2,000 popular requests (Zipf-like).
        let repeat = self.rng.f64() < 0.2;
        let (request_hash, prompt_tokens, completion_tokens, prefix) = if repeat {
            let idx = (2_000.0 * self.rng.f64().powi(3)) as u64;
            let mut seeded = fastrand::Rng::with_seed(idx * 7919 + org as u64);
            let p = 50 + seeded.u64(0..2_000);
            let c = 10 + seeded.u64(0..400);
            (format!("{:016x}{:048x}", org, idx), p, c, idx % 40)
        } else {
            let p = self.log_normal(6.0, 1.0).clamp(10.0, 100_000.0) as u64;
            let c = self.log_normal(5.0, 0.8).clamp(1.0, 4_000.0) as u64;
            (
                format!("{:064x}", u64::MAX - i),
                p,
                c,
                40 + self.rng.u64(0..5_000),
            )
        };
        let status = match self.rng.u32(0..1000) {
            0..=9 => 429,
            10..=14 => 502,
            _ => 200,
        };
        let cost = if status == 200 {
            model.cost(&TokenUsage {
                input: prompt_tokens,
                output: completion_tokens,
                ..TokenUsage::default()
            })
        } else {
            cognitude_catalog::Money::ZERO
        };
        let cost_pico = i64::try_from(cost.pico()).unwrap_or(i64::MAX);
        let cache_on = org.is_multiple_of(3);
        let hit = cache_on && repeat && status == 200 && self.rng.f64() < 0.7;
        let cache_status = if !cache_on {
            "off"
        } else if hit {
            if self.rng.bool() {
                "hit-memory"
            } else {
                "hit-redis"
            }
        } else {
            "miss"
        };
        let routed = org % 5 == 1 && status == 200 && !hit;
        let route_saving = routed.then(|| {
            // Against a gpt-4o baseline: priced at its list prices.
            let baseline = (prompt_tokens * 2_500_000 + completion_tokens * 10_000_000) as i64;
            baseline - cost_pico
        });
        let classified = self.rng.f64() < 0.85;
        let score = self.rng.f64();
        let tier = if score < 0.2 {
            "simple"
        } else if score < 0.47 {
            "medium"
        } else {
            "complex"
        };
        let latency = if hit {
            1 + self.rng.i64(0..5)
        } else {
            (200.0 + completion_tokens as f64 * 12.0 * self.log_normal(0.0, 0.3)) as i64
        };
        let system = self.rng.u64(0..5);
        let max_tokens = match self.rng.u32(0..10) {
            0..=4 => Some(4_096),
            5 | 6 => Some(1_024),
            _ => None,
        };
        let record = UsageRecord {
            id: format!("rec_{i:012}"),
            request_id: format!("req_{i}"),
            org_id: org_id(org),
            api_key_id: Some(format!("key_{org:03}_{}", self.rng.u32(0..4))),
            created_at,
            endpoint: "chat_completions".into(),
            model_requested: if routed {
                "cognitude/auto".into()
            } else {
                model.id.clone()
            },
            model_used: (status != 502).then(|| model.id.clone()),
            provider: (status != 502).then(|| model.provider.clone()),
            status,
            error_type: (status != 200).then(|| {
                if status == 429 {
                    "rate_limited".into()
                } else {
                    "upstream_error".into()
                }
            }),
            prompt_tokens: prompt_tokens as i64,
            completion_tokens: if status == 200 {
                completion_tokens as i64
            } else {
                0
            },
            cost_pico: if hit { 0 } else { cost_pico },
            latency_ms: latency,
            ttft_ms: Some(latency / 4),
            stream: self.rng.bool(),
            max_tokens,
            temperature: Some(0.7),
            cache_status: Some(cache_status.into()),
            cache_saved_pico: if hit { cost_pico } else { 0 },
            routed,
            route_score: classified.then_some(score),
            route_tier: classified.then(|| tier.into()),
            route_mode: routed.then(|| "cost".into()),
            baseline_model: routed.then(|| "gpt-4o".into()),
            route_saving_pico: route_saving,
            request_hash,
            system_hash: Some(format!("{:060x}{system:04x}", org)),
            system_len: 400 + (system as i64) * 1_500,
            prefix_hash: format!("{:048x}{prefix:016x}", org),
            prompt_chars: prompt_tokens as i64 * 4,
            prompt_tokens_est: prompt_tokens as i64,
            ..UsageRecord::default()
        };
        (record, org)
    }
}

fn psql(url: &str, sql: &str) -> Result<String> {
    let out = std::process::Command::new("psql")
        .args([url, "-X", "-q", "-t", "-A", "-c", sql])
        .output()
        .context("could not run psql")?;
    if !out.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A `Vm…` line of /proc/self/status, in kB.
fn vm_kb(field: &str) -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/self/status"))
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
