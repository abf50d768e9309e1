//! Rate-limit checks: the in-process limiter (target ≤ 200 ns a check) and the Redis limiter (one
//! round trip, target p50 ≤ 150 µs on loopback; Redis at `REDIS_URL`, default
//! `redis://127.0.0.1:6379`, skipped with a note when unreachable).
//!
//! `cargo bench -p cognitude-benches --bench ratelimit`

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use cognitude_ratelimit::{
    Admission, Decision, Limiter, MemoryLimiter, Quota, Rate, RedisConfig, RedisLimiter,
};
use criterion::{Criterion, criterion_group, criterion_main};

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// A quota that always admits yet stores and updates state on every check: one microsecond of
/// refill per request, and a bucket deep enough never to run dry during a bench.
fn busy_quota() -> BenchResult<Quota> {
    let rate = Rate::try_new(60_000_000, 1_000_000_000_000)?;
    Ok(Quota::unlimited().with_requests(rate))
}

fn memory(c: &mut Criterion) -> BenchResult<()> {
    let mut g = c.benchmark_group("ratelimit/memory");
    let l = MemoryLimiter::new();
    let quota = busy_quota()?;

    g.bench_function("admit_now", |b| {
        b.iter(|| {
            l.admit_now(black_box(Admission::new("org_bench", quota)))
                .map(|d| d.is_admitted())
        })
    });

    let exhausted = Quota::unlimited().with_requests(Rate::try_new(1, 1)?);
    let _ = l.admit_now(Admission::new("org_exhausted", exhausted))?;
    g.bench_function("admit_now_denied", |b| {
        b.iter(|| {
            l.admit_now(black_box(Admission::new("org_exhausted", exhausted)))
                .map(|d| d.is_admitted())
        })
    });

    let dyn_limiter: &dyn Limiter = &l;
    g.bench_function("admit_via_trait", |b| {
        b.iter(|| {
            ready(dyn_limiter.admit(black_box(Admission::new("org_bench", quota))))
                .map(|d| d.is_admitted())
        })
    });

    let orgs: Vec<String> = (0..10_000).map(|i| format!("org_{i:05}")).collect();
    let mut next = 0;
    g.bench_function("admit_now_10k_orgs", |b| {
        b.iter(|| {
            next = (next + 1) % orgs.len();
            l.admit_now(Admission::new(&orgs[next], quota))
                .map(|d| d.is_admitted())
        })
    });

    let tokens = busy_quota()?.with_tokens(Rate::try_new(60_000_000, 1_000_000_000_000)?);
    g.bench_function("admit_key_tokens_then_settle", |b| {
        b.iter(|| {
            let a = Admission::new("org_bench", tokens)
                .with_key("key_bench", tokens)
                .with_tokens(1_000);
            if let Ok(Decision::Admitted(r)) = l.admit_now(black_box(a)) {
                let _ = ready(dyn_limiter.settle(r, 300));
            }
        })
    });
    g.finish();
    Ok(())
}

fn redis(c: &mut Criterion) -> BenchResult<()> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let config = RedisConfig {
        prefix: format!("cognitude-bench:{}", std::process::id()),
        ..RedisConfig::default()
    };
    let l = match rt.block_on(RedisLimiter::connect(&url, config)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ratelimit/redis skipped: {e}");
            return Ok(());
        }
    };
    let quota = busy_quota()?;
    let tokens = quota.with_tokens(Rate::try_new(60_000_000, 1_000_000_000_000)?);
    let mut g = c.benchmark_group("ratelimit/redis");
    g.measurement_time(Duration::from_secs(10));
    let latencies = Mutex::new(Vec::new());

    g.bench_function("admit", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                let mut seen = Vec::with_capacity(usize::try_from(iters).unwrap_or(0));
                for _ in 0..iters {
                    let start = Instant::now();
                    let d = l.admit(Admission::new("org_bench", quota)).await;
                    let took = start.elapsed();
                    black_box(d.map(|d| d.is_admitted()).ok());
                    total += took;
                    seen.push(took);
                }
                if let Ok(mut all) = latencies.lock() {
                    all.extend(seen);
                }
                total
            })
        })
    });

    g.bench_function("admit_key_tokens_then_settle", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let a = Admission::new("org_bench", tokens)
                        .with_key("key_bench", tokens)
                        .with_tokens(1_000);
                    if let Ok(Decision::Admitted(r)) = l.admit(a).await {
                        let _ = l.settle(r, 300).await;
                    }
                }
                start.elapsed()
            })
        })
    });
    g.finish();

    if let Ok(mut all) = latencies.lock()
        && !all.is_empty()
    {
        all.sort_unstable();
        let at = |q: f64| all[((all.len() - 1) as f64 * q) as usize];
        eprintln!(
            "ratelimit/redis/admit latency over {} checks: p50 {:?}, p90 {:?}, p99 {:?}",
            all.len(),
            at(0.5),
            at(0.9),
            at(0.99)
        );
    }
    Ok(())
}

/// Polls a future that never waits (the in-process limiter's) to completion.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fn benches(c: &mut Criterion) {
    for (name, bench) in [
        ("memory", memory as fn(&mut Criterion) -> BenchResult<()>),
        ("redis", redis),
    ] {
        if let Err(e) = bench(c) {
            eprintln!("ratelimit/{name} failed: {e}");
        }
    }
}

criterion_group!(ratelimit, benches);
criterion_main!(ratelimit);
