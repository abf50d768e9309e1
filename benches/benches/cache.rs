//! The response cache, below the HTTP layer: key computation, a memory-tier hit (the backend
//! alone and through the tiered cache), a Redis-tier hit (one round trip plus decoding; Redis at
//! `REDIS_URL`, default `redis://127.0.0.1:6379`, skipped with a note when unreachable), and
//! stream replay of a hit.
//!
//! `cargo bench -p cognitude-benches --bench cache`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cognitude_cache::{
    BackendKind, Cache, CacheKey, CachedResponse, MemoryCache, RedisCache, RedisConfig,
    ReplayOptions, TierOptions, TieredCache, replay,
};
use cognitude_protocol::{ChatCompletion, ChatRequest};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use tokio::runtime::Runtime;

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

const TTL: Duration = Duration::from_secs(3600);

fn runtime() -> BenchResult<Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// A typical chat request: a system prompt and a short conversation.
fn small_request() -> BenchResult<ChatRequest> {
    Ok(serde_json::from_value(json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
            {"role": "user", "content": "What is the capital of France?"}
        ],
        "temperature": 0.2, "max_tokens": 256, "stream": true
    }))?)
}

/// An agent-style request: twenty turns, tools with JSON schemas, a response format.
fn large_request() -> BenchResult<ChatRequest> {
    let messages: Vec<_> = (0..20)
        .map(|i| {
            json!({"role": if i % 2 == 0 { "user" } else { "assistant" },
                   "content": format!("Turn {i}: {}", "some earlier conversation text ".repeat(10))})
        })
        .collect();
    let tools: Vec<_> = (0..5)
        .map(|i| {
            json!({"type": "function", "function": {"name": format!("tool_{i}"),
                "description": "Looks something up.",
                "parameters": {"type": "object", "required": ["q"],
                    "properties": {"q": {"type": "string"}, "limit": {"type": "integer"}}}}})
        })
        .collect();
    Ok(serde_json::from_value(json!({
        "model": "gpt-4o", "messages": messages, "tools": tools, "tool_choice": "auto",
        "response_format": {"type": "json_object"}, "temperature": 1, "seed": 42
    }))?)
}

/// A completion of about `chars` characters of content.
fn response(chars: usize) -> BenchResult<Arc<CachedResponse>> {
    let text: String = "The capital of France is Paris. "
        .chars()
        .cycle()
        .take(chars)
        .collect();
    let completion: ChatCompletion = serde_json::from_value(json!({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1_700_000_000u64,
        "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 25, "completion_tokens": 200, "total_tokens": 225}
    }))?;
    Ok(Arc::new(CachedResponse::new(
        completion,
        "gpt-4o-mini",
        "openai",
        123_000_000,
    )))
}

fn keys(c: &mut Criterion) -> BenchResult<()> {
    let mut g = c.benchmark_group("cache/key");
    let small = small_request()?;
    let large = large_request()?;
    g.bench_function("small_request", |b| {
        b.iter(|| CacheKey::for_request(black_box("org_bench"), black_box(&small)))
    });
    g.bench_function("agent_request_20_turns_5_tools", |b| {
        b.iter(|| CacheKey::for_request(black_box("org_bench"), black_box(&large)))
    });
    g.finish();
    Ok(())
}

fn memory(c: &mut Criterion) -> BenchResult<()> {
    let rt = runtime()?;
    let mut g = c.benchmark_group("cache/memory");
    let memory = Arc::new(MemoryCache::new(256 << 20));
    let tiered = TieredCache::new([(
        memory.clone() as Arc<dyn Cache>,
        TierOptions::for_kind(BackendKind::Memory),
    )]);
    let key = CacheKey::for_request("org_bench", &small_request()?)?;
    let absent = CacheKey::from_digest("org_bench", [0; 32]);
    rt.block_on(memory.put(&key, response(1000)?, TTL))?;

    g.bench_function("get_hit", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let _ = black_box(memory.get(black_box(&key)).await);
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("tiered_lookup_hit", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let _ = black_box(tiered.lookup(black_box(&key)).await);
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("tiered_lookup_miss", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let _ = black_box(tiered.lookup(black_box(&absent)).await);
                }
                start.elapsed()
            })
        })
    });
    g.finish();
    Ok(())
}

fn redis(c: &mut Criterion) -> BenchResult<()> {
    let rt = runtime()?;
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let mut config = RedisConfig::new(url);
    config.key_prefix = format!("cognitude-bench:{}", std::process::id());
    let redis = match rt.block_on(RedisCache::connect(config)) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            eprintln!("cache/redis skipped: {e}");
            return Ok(());
        }
    };
    // Redis alone as the tier: every lookup is a Redis round trip, never a memory hit.
    let tiered = TieredCache::new([(
        redis.clone() as Arc<dyn Cache>,
        TierOptions::for_kind(BackendKind::Redis),
    )]);
    let small = CacheKey::for_request("org_bench", &small_request()?)?;
    let large = CacheKey::for_request("org_bench", &large_request()?)?;
    rt.block_on(redis.put(&small, response(1000)?, TTL))?;
    rt.block_on(redis.put(&large, response(20_000)?, TTL))?;

    let mut g = c.benchmark_group("cache/redis");
    for (name, key) in [("get_hit_1kb", &small), ("get_hit_20kb_lz4", &large)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let _ = black_box(redis.get(black_box(key)).await);
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.bench_function("tiered_lookup_hit_1kb", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let _ = black_box(tiered.lookup(black_box(&small)).await);
                }
                start.elapsed()
            })
        })
    });
    g.finish();
    rt.block_on(async {
        let _ = redis.clear_all().await;
        redis.close().await;
    });
    Ok(())
}

fn replays(c: &mut Criterion) -> BenchResult<()> {
    let mut g = c.benchmark_group("cache/replay");
    let r = response(1000)?;
    g.bench_function("1kb_completion_to_chunks", |b| {
        b.iter(|| replay(black_box(r.completion()), ReplayOptions::new(true)))
    });
    g.finish();
    Ok(())
}

fn benches(c: &mut Criterion) {
    for (name, bench) in [
        ("key", keys as fn(&mut Criterion) -> BenchResult<()>),
        ("memory", memory),
        ("redis", redis),
        ("replay", replays),
    ] {
        if let Err(e) = bench(c) {
            eprintln!("cache/{name} failed: {e}");
        }
    }
}

criterion_group!(cache, benches);
criterion_main!(cache);
