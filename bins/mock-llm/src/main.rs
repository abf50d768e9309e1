//! `mock-llm`: the mock LLM server as a process, for benches, demos and manual testing.
//!
//! ```text
//! mock-llm --port 0 --per-token-ms 20
//! mock-llm listening on http://127.0.0.1:40213
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use cognitude_mock_llm::{MockConfig, Stats, serve};
use tokio::net::TcpListener;

/// A mock LLM provider speaking the OpenAI and Anthropic APIs, with controllable latency and
/// per-request faults (`@mock{…}` directives).
#[derive(Debug, Parser)]
#[command(name = "mock-llm", version)]
struct Args {
    /// Port to listen on; 0 picks a free one (the line printed at start names it).
    #[arg(long, default_value_t = 9999)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Delay before the response headers of every completion, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Delay between stream chunks (and per output token of a non-streaming answer), in
    /// milliseconds.
    #[arg(long, default_value_t = 0)]
    per_token_ms: u64,
    /// Answer every request with this text.
    #[arg(long)]
    answer: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = MockConfig {
        latency: Duration::from_millis(args.latency_ms),
        per_token: Duration::from_millis(args.per_token_ms),
        answer: args.answer,
    };
    let listener = TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    announce(listener.local_addr()?);
    tokio::select! {
        served = serve(listener, config, Arc::new(Stats::default())) => served,
        signal = shutdown_signal() => signal,
    }
}

#[expect(
    clippy::print_stdout,
    reason = "the listening line is the binary's interface: scripts read the bound address from it"
)]
fn announce(addr: SocketAddr) {
    println!("mock-llm listening on http://{addr}");
}

/// Resolves on SIGINT, or SIGTERM on Unix.
async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            interrupted = tokio::signal::ctrl_c() => interrupted?,
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}
