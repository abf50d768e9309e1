//! Authentication latency with a warm key cache, and ledger writer throughput into PostgreSQL.
//!
//! A plain bench binary rather than criterion: the targets are a p99 (criterion reports means
//! and medians) and a sustained rate. Run with `cargo bench -p cognitude-benches --bench store`;
//! it needs the PostgreSQL at DATABASE_URL (default: the local server) and creates and drops a
//! database of its own.

use std::time::{Duration, Instant};

use anyhow::Result;
use cognitude_store::{AuthOutcome, Authenticator, Ledger, LedgerOptions, Store, UsageRecord};
use cognitude_testkit::TestDatabase;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn record(i: u64) -> UsageRecord {
    UsageRecord {
        id: format!("rec_bench_{i:012}"),
        request_id: format!("req_{i}"),
        org_id: "org_bench".into(),
        api_key_id: Some("key_bench".into()),
        created_at: 1_780_000_000_000_000 + i as i64,
        endpoint: "chat_completions".into(),
        model_requested: "gpt-4o-mini".into(),
        model_used: Some("gpt-4o-mini".into()),
        provider: Some("openai".into()),
        status: 200,
        prompt_tokens: 812,
        completion_tokens: 96,
        cost_pico: 179_400_000,
        latency_ms: 640,
        stream: i.is_multiple_of(2),
        max_tokens: Some(512),
        temperature: Some(0.2),
        request_hash: format!("{:064x}", i),
        system_hash: Some("ab".repeat(32)),
        system_len: 1200,
        prefix_hash: format!("{:064x}", i / 7),
        prompt_chars: 3_300,
        prompt_tokens_est: 825,
        ..UsageRecord::default()
    }
}

#[expect(clippy::print_stdout, reason = "a bench prints its results")]
fn report(line: &str) {
    println!("{line}");
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let db = TestDatabase::create().await.map_err(anyhow::Error::msg)?;
    let store = Store::connect(&db.url).await?;
    store.migrate().await?;

    // Authentication with a warm cache: parse, hash, look up.
    let org = store.create_org("bench").await?;
    let key = store.create_key(&org.id, "bench").await?;
    let auth = Authenticator::new(store.clone(), Duration::from_secs(600));
    assert!(matches!(
        auth.authenticate(&key.secret).await?,
        AuthOutcome::Valid(_)
    ));
    let n = 200_000;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let outcome = auth.authenticate(&key.secret).await?;
        samples.push(t.elapsed());
        std::hint::black_box(outcome);
    }
    samples.sort();
    report(&format!(
        "auth (warm cache, {n} calls): p50 {:?}  p99 {:?}  p99.9 {:?}  max {:?}",
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        percentile(&samples, 0.999),
        samples[samples.len() - 1]
    ));

    // Ledger writer: records queued as fast as the caller can, until all are in the database.
    let dir = std::env::temp_dir().join(format!("cognitude-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for (batch_size, total) in [(500usize, 200_000u64), (1000, 200_000)] {
        let (ledger, _task) = Ledger::start(
            store.clone(),
            LedgerOptions {
                batch_size,
                queue_capacity: 300_000,
                spill_path: dir.join("bench.spill"),
                ..LedgerOptions::default()
            },
        );
        let offset = batch_size as u64 * 1_000_000;
        let started = Instant::now();
        for i in 0..total {
            ledger.record(record(offset + i));
        }
        let queued_in = started.elapsed();
        ledger.flush().await;
        let elapsed = started.elapsed();
        let spilled = ledger.stats().spilled();
        report(&format!(
            "ledger → PostgreSQL (batch {batch_size}): {total} records in {:.2?} = {:.0} records/s \
             (queueing took {:.2?}; spilled {spilled})",
            elapsed,
            total as f64 / elapsed.as_secs_f64(),
            queued_in
        ));
    }
    let (count, _) = store.usage_totals("org_bench").await?;
    report(&format!("records in the ledger: {count}"));
    drop(store);
    db.drop_db().await;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
