//! The response cache through the whole proxy, over real HTTP/1.1 keep-alive connections on
//! loopback, against `mock-llm` with no artificial latency. In one run, sequential requests:
//!
//! - **direct**: the same request straight to the mock upstream (the baseline);
//! - **memory hit**: a repeated prompt through the proxy, answered by its in-process tier;
//! - **miss**: a new prompt each time through the proxy (memory and Redis looked up, the
//!   upstream called, the answer stored in both);
//! - **Redis hit**: each of those prompts once more, through a second proxy instance that shares
//!   the Redis and the database (as a second replica would) but not the first one's memory
//!   tier, so its lookup misses memory and is answered by Redis. This keeps the memory tier as
//!   configured in production instead of shrinking it until it stops admitting entries.
//!
//! The direct, memory-hit and miss requests are interleaved, and each Redis hit is paired with
//! another direct request, so load on a shared machine falls on every case alike. Targets
//! (issue): memory hit p50 ≤ 150 µs, Redis hit p50 ≤ 400 µs.
//!
//! Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`), keys under a prefix of this run's
//! own, cleared at the end; without Redis the Redis case is skipped with a note. Samples per case
//! from `PROXY_BENCH_SAMPLES` (default 5,000), after 500 of warm-up.
//!
//! `cargo bench -p cognitude-benches --bench proxy_cache`

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use cognitude_mock_llm::{MockConfig, MockServer};
use cognitude_server::{AppState, Config};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const WARM_UP: usize = 500;
const DEFAULT_SAMPLES: usize = 5_000;

fn main() -> anyhow::Result<()> {
    // Two workers, like the machine: the proxy, the mock and the client share them.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = std::env::temp_dir().join(format!("cognitude-proxy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = rt.block_on(run(&dir));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run(dir: &Path) -> anyhow::Result<()> {
    let samples = match std::env::var("PROXY_BENCH_SAMPLES") {
        Ok(v) => v.parse().context("PROXY_BENCH_SAMPLES")?,
        Err(_) => DEFAULT_SAMPLES,
    };
    let redis_url =
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let redis = if redis_answers(&redis_url).await {
        Some(redis_url)
    } else {
        eprintln!("no Redis at {redis_url}: the Redis-hit case is skipped");
        None
    };
    let prefix = format!("cognitude-bench:{}", std::process::id());
    let metrics = PrometheusBuilder::new().install_recorder()?;

    let mock = MockServer::start(MockConfig::default()).await?;
    let a = Proxy::start(&mock, dir, "a", redis.as_deref(), &prefix, &metrics, None).await?;
    let b = match &redis {
        Some(url) => {
            Some(Proxy::start(&mock, dir, "b", Some(url), &prefix, &metrics, Some(&a)).await?)
        }
        None => None,
    };

    let mut direct = Client::connect(mock.addr(), None).await?;
    let mut via_a = Client::connect(a.addr, Some(&a.key)).await?;
    // Redis connects in the background: lookups before it is up time out, and three of those
    // open the tier's circuit for five seconds, so start once every tier is up.
    via_a.wait_until_healthy().await?;
    if let Some(b) = &b {
        Client::connect(b.addr, Some(&a.key))
            .await?
            .wait_until_healthy()
            .await?;
    }
    let repeated = body("What is the capital of France?");
    let (s, _) = via_a.send(&repeated).await?;
    ensure!(s == "miss", "the first request was a {s}");

    let mut cases = Cases::default();
    let total = WARM_UP + samples;
    for i in 0..total {
        let keep = i >= WARM_UP;
        let t = direct.time(&repeated, None).await?;
        cases.record("direct", keep, t);
        let t = via_a.time(&repeated, Some("hit-memory")).await?;
        cases.record("memory hit", keep, t);
        let t = via_a
            .time(&body(&format!("new prompt {i}")), Some("miss"))
            .await?;
        cases.record("miss", keep, t);
    }

    if let Some(b) = &b {
        // The misses above were written to Redis in the background; let the last ones land.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut via_b = Client::connect(b.addr, Some(&a.key)).await?;
        for i in 0..total {
            let keep = i >= WARM_UP;
            let t = direct.time(&repeated, None).await?;
            cases.record("direct (during Redis hits)", keep, t);
            let t = via_b
                .time(&body(&format!("new prompt {i}")), Some("hit-redis"))
                .await?;
            cases.record("Redis hit", keep, t);
        }
        eprintln!("instance b: {}", via_b.cache_health().await?);
        via_b.clear_cache().await?;
    }
    eprintln!("instance a: {}", via_a.cache_health().await?);
    via_a.clear_cache().await?;

    cases.report(samples);
    // Open connections would hold the graceful shutdown until its deadline.
    drop((direct, via_a));
    a.stop().await;
    if let Some(b) = b {
        b.stop().await;
    }
    Ok(())
}

/// A chat request as a client would send it.
fn body(prompt: &str) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
                {"role": "user", "content": prompt}
            ],
            "temperature": 0.2
        })
        .to_string(),
    )
}

/// A proxy instance on an ephemeral port.
struct Proxy {
    addr: SocketAddr,
    key: String,
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Proxy {
    /// Starts an instance in front of `mock`, on the SQLite database in `dir` (shared by every
    /// instance of the run). The first makes an organization and a key; later ones use `first`'s.
    async fn start(
        mock: &MockServer,
        dir: &Path,
        name: &str,
        redis_url: Option<&str>,
        prefix: &str,
        metrics: &PrometheusHandle,
        first: Option<&Proxy>,
    ) -> anyhow::Result<Proxy> {
        let redis = redis_url.map_or_else(String::new, |u| {
            format!("redis_url = \"{u}\"\nredis_prefix = \"{prefix}\"")
        });
        let toml = format!(
            r#"
            [server]
            listen = "127.0.0.1:0"
            [database]
            url = "sqlite://{dir}/bench.db"
            [ledger]
            spill_path = "{dir}/ledger-{name}.spill"
            [alerts]
            enabled = false
            [providers.up]
            kind = "openai"
            base_url = "{base}"
            api_key = "sk-upstream"
            [[models]]
            name = "gpt-4o-mini"
            provider = "up"
            [cache]
            default_ttl_secs = 600
            {redis}
            "#,
            dir = dir.display(),
            base = mock.base_url(),
        );
        let settings = Config::from_toml(&toml)?.resolve(&HashMap::<String, String>::new())?;
        let (state, _background) = AppState::start(settings, Some(metrics.clone())).await?;
        let key = match first {
            Some(p) => p.key.clone(),
            None => {
                let org = state.store().create_org("bench").await?;
                state.store().create_key(&org.id, "bench").await?.secret
            }
        };
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let server = tokio::spawn(cognitude_server::serve(listener, state, async {
            let _ = stopped.await;
        }));
        Ok(Proxy {
            addr,
            key,
            stop,
            server,
        })
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
    }
}

/// One HTTP/1.1 keep-alive connection, used for one request at a time.
struct Client {
    sender: SendRequest<Full<Bytes>>,
    authorization: Option<String>,
}

impl Client {
    async fn connect(addr: SocketAddr, key: Option<&str>) -> anyhow::Result<Client> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        Ok(Client {
            sender,
            authorization: key.map(|k| format!("Bearer {k}")),
        })
    }

    /// Posts a chat completion and reads the whole answer; the `x-cognitude-cache` header.
    async fn send(&mut self, body: &Bytes) -> anyhow::Result<(String, Bytes)> {
        let mut req = http::Request::post("/v1/chat/completions")
            .header("host", "bench")
            .header("content-type", "application/json");
        if let Some(a) = &self.authorization {
            req = req.header("authorization", a);
        }
        self.sender.ready().await?;
        let resp = self
            .sender
            .send_request(req.body(Full::new(body.clone()))?)
            .await?;
        let status = resp.status();
        let cache = resp
            .headers()
            .get("x-cognitude-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        let bytes = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("{status}: {}", String::from_utf8_lossy(&bytes));
        }
        Ok((cache, bytes))
    }

    /// One request's wall time, from the first byte sent to the last byte read, and whether the
    /// cache answered as `expect`ed (a sample that did not measures something else).
    async fn time(&mut self, body: &Bytes, expect: Option<&str>) -> anyhow::Result<Sample> {
        let started = Instant::now();
        let (cache, _) = self.send(body).await?;
        let took = started.elapsed();
        Ok(Sample {
            took,
            as_expected: expect.is_none_or(|e| e == cache),
        })
    }

    /// The tiers' lines of `/health`: a timeout or an open circuit explains samples left out.
    async fn cache_health(&mut self) -> anyhow::Result<String> {
        let req = http::Request::get("/health").header("host", "bench");
        self.sender.ready().await?;
        let resp = self
            .sender
            .send_request(req.body(Full::new(Bytes::new()))?)
            .await?;
        let bytes = resp.into_body().collect().await?.to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes)?;
        Ok(v["components"]["cache"]["tiers"].to_string())
    }

    /// Waits until every cache tier is up, sending new prompts so a tier whose circuit opened
    /// is probed again.
    async fn wait_until_healthy(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut probe = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let tiers = self.cache_health().await?;
            if !tiers.contains(r#""state":"degraded""#) && !tiers.contains("probing") {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "cache tiers not up: {tiers}");
            probe += 1;
            self.send(&body(&format!("warming up {probe}"))).await?;
        }
    }

    /// Removes the organization's entries from every tier (this run's Redis keys included).
    async fn clear_cache(&mut self) -> anyhow::Result<()> {
        let mut req = http::Request::delete("/cache").header("host", "bench");
        if let Some(a) = &self.authorization {
            req = req.header("authorization", a);
        }
        self.sender.ready().await?;
        let resp = self
            .sender
            .send_request(req.body(Full::new(Bytes::new()))?)
            .await?;
        let status = resp.status();
        let _ = resp.into_body().collect().await?;
        ensure!(status.is_success(), "clearing the cache answered {status}");
        Ok(())
    }
}

/// One timed request.
struct Sample {
    took: Duration,
    as_expected: bool,
}

/// Samples per case, in the order cases were first recorded, and how many were left out because
/// the cache did not answer as the case expects.
#[derive(Default)]
struct Cases {
    cases: Vec<(&'static str, Vec<Duration>)>,
    unexpected: Vec<(&'static str, usize)>,
}

impl Cases {
    fn record(&mut self, case: &'static str, keep: bool, sample: Sample) {
        if !keep {
            return;
        }
        if !sample.as_expected {
            match self.unexpected.iter_mut().find(|(c, _)| *c == case) {
                Some((_, n)) => *n += 1,
                None => self.unexpected.push((case, 1)),
            }
            return;
        }
        match self.cases.iter_mut().find(|(c, _)| *c == case) {
            Some((_, v)) => v.push(sample.took),
            None => self.cases.push((case, vec![sample.took])),
        }
    }

    fn report(mut self, samples: usize) {
        eprintln!(
            "\nproxy_cache: {samples} sequential requests per case, after {WARM_UP} of warm-up"
        );
        eprintln!(
            "{:<28} {:>8} {:>8} {:>8}   p50 over direct",
            "case", "p50 µs", "p90 µs", "p99 µs"
        );
        for (_, v) in &mut self.cases {
            v.sort_unstable();
        }
        let p50_of = |case: &str| {
            self.cases
                .iter()
                .find(|(c, _)| *c == case)
                .map(|(_, v)| micros(quantile(v, 0.5)))
        };
        for (case, n) in &self.unexpected {
            eprintln!("{case}: {n} samples left out, the cache answered otherwise");
        }
        for (case, v) in &self.cases {
            let p50 = micros(quantile(v, 0.5));
            let baseline = if *case == "Redis hit" {
                p50_of("direct (during Redis hits)")
            } else {
                p50_of("direct")
            };
            let overhead = match baseline {
                Some(d) if !case.starts_with("direct") => format!("{:+.0} µs", p50 - d),
                _ => String::new(),
            };
            eprintln!(
                "{case:<28} {p50:>8.0} {:>8.0} {:>8.0}   {overhead}  (n = {})",
                micros(quantile(v, 0.9)),
                micros(quantile(v, 0.99)),
                v.len(),
            );
        }
    }
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Whether something answers `PING` at `url`'s host and port (`redis://host:port[/db]`).
async fn redis_answers(url: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(hostport)).await
    else {
        return false;
    };
    let mut buf = [0u8; 64];
    s.write_all(b"PING\r\n").await.is_ok()
        && matches!(
            tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await,
            Ok(Ok(n)) if n > 0
        )
}
