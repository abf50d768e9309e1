//! The `cognitude` binary: parses the command line and configuration, installs logging and
//! metrics, and runs the server until SIGINT or SIGTERM. Everything else lives in the crates.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use cognitude_server::config::LogFormat;
use cognitude_server::{AppState, Config, DURATION_BUCKETS, ProcessEnv, Settings};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tokio::net::TcpListener;

/// Cognitude: an OpenAI-compatible LLM gateway that cuts cost and latency.
#[derive(Debug, Parser)]
#[command(name = "cognitude", version, about)]
struct Cli {
    /// Configuration file (default: ./cognitude.toml if it exists).
    #[arg(long, short, global = true, env = "COGNITUDE_CONFIG")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Serve,
    /// Check the configuration and print what it resolves to, without binding a port.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One crypto provider for the whole process (ring); see docs/ARCHITECTURE.md.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let settings = load_settings(cli.config.as_deref())?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => {
            check_config(&settings);
            Ok(())
        }
        Command::Serve => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("could not start the async runtime")?;
            runtime.block_on(serve(settings))
        }
    }
}

/// Reads and validates the configuration; nothing is bound before this succeeds.
fn load_settings(path: Option<&Path>) -> Result<Settings> {
    let default = Path::new("cognitude.toml");
    let (text, source) = match path {
        Some(p) => (
            std::fs::read_to_string(p)
                .with_context(|| format!("could not read config file {}", p.display()))?,
            p.display().to_string(),
        ),
        None if default.exists() => (
            std::fs::read_to_string(default).context("could not read ./cognitude.toml")?,
            "cognitude.toml".to_owned(),
        ),
        None => (String::new(), "built-in defaults".to_owned()),
    };
    let config = Config::from_toml(&text).with_context(|| format!("invalid config ({source})"))?;
    config
        .resolve(&ProcessEnv)
        .with_context(|| format!("invalid config ({source})"))
}

#[expect(clippy::print_stdout, reason = "check-config prints its report")]
fn check_config(s: &Settings) {
    println!("configuration is valid");
    println!("listen: {}", s.listen);
    println!(
        "providers: {}",
        s.providers.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    println!("models: {}", s.models.len());
    for m in &s.models {
        let fallbacks = if m.fallbacks.is_empty() {
            String::new()
        } else {
            format!(" (fallbacks: {})", m.fallbacks.join(", "))
        };
        println!(
            "  {} -> {}:{}{fallbacks}",
            m.name, m.provider, m.upstream_model
        );
    }
}

fn install_tracing(s: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&s.log.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match s.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

async fn serve(settings: Settings) -> Result<()> {
    install_tracing(&settings);
    let metrics = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
        .context("invalid histogram buckets")?
        .install_recorder()
        .context("could not install the metrics recorder")?;

    let listen = settings.listen;
    let mock_only = settings.mock_only;
    let models = settings.models.len();
    let state = AppState::new(settings, Some(metrics))?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("could not listen on {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, models, "cognitude listening on http://{addr}");
    if mock_only {
        tracing::warn!(
            "no provider key found (OPENAI_API_KEY, ANTHROPIC_API_KEY, …) and no config: every model \
             is answered by the built-in MOCK provider. Set a key or write cognitude.toml to use real models."
        );
    }
    cognitude_server::serve(listener, state, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown signal received");
}
