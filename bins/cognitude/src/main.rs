//! The `cognitude` binary: parses the command line and configuration, installs logging and
//! metrics, and runs the server until SIGINT or SIGTERM. Everything else lives in the crates.

mod analyze;
mod route;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use cognitude_server::config::LogFormat;
use cognitude_server::{AppState, Config, DURATION_BUCKETS, ProcessEnv, Settings};
use cognitude_store::{LimitValues, Store};
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
    /// Run the database migrations and exit.
    Migrate,
    /// Manage organizations.
    #[command(subcommand)]
    Orgs(OrgsCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Print an organization's cost-saving recommendations from its ledger.
    Analyze {
        /// The organization's name.
        #[arg(long)]
        org: String,
        /// How far back to look: days or hours, e.g. 30d (the default), 7d, 24h.
        #[arg(long)]
        window: Option<String>,
    },
    /// Classify and route prompts read as JSON lines on stdin; one JSON line out per line in.
    Route {
        /// cost, latency or quality (default: cost).
        #[arg(long)]
        mode: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum OrgsCommand {
    /// Create an organization.
    Create { name: String },
    /// List organizations.
    List,
    /// Delete an organization and its keys (its ledger records stay).
    Delete { name: String },
    /// Show or change an organization's rate limits (running proxies apply a change within
    /// `ratelimit.refresh_ms`). Flags change only what they name.
    Limits {
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
}

/// Rate-limit flags: a value of 0 lifts that limit; `--reset` goes back to the configured
/// defaults.
#[derive(Debug, clap::Args)]
struct LimitArgs {
    /// Requests per minute.
    #[arg(long)]
    rpm: Option<u64>,
    /// Requests that may arrive at once (default: the rpm).
    #[arg(long)]
    request_burst: Option<u64>,
    /// Tokens per minute.
    #[arg(long)]
    tpm: Option<u64>,
    /// Tokens one burst may use (default: the tpm).
    #[arg(long)]
    token_burst: Option<u64>,
    /// Requests in flight at once.
    #[arg(long)]
    max_concurrent: Option<u64>,
    /// Drop the override: the configured defaults apply again.
    #[arg(long, conflicts_with_all = ["rpm", "request_burst", "tpm", "token_burst", "max_concurrent"])]
    reset: bool,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key for an organization. The secret is printed once, on the last line.
    Create {
        #[arg(long)]
        org: String,
        #[arg(long, default_value = "default")]
        name: String,
    },
    /// List keys (prefixes only, never secrets).
    List {
        #[arg(long)]
        org: Option<String>,
    },
    /// Revoke a key by its prefix (cgk_…).
    Revoke { prefix: String },
    /// Show or change a key's own rate limits, which apply inside its organization's.
    Limits {
        prefix: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
}

/// jemalloc rather than the system allocator: under load the proxy spent a fifth of its CPU in
/// glibc malloc (arena locks, consolidation); see docs/benchmarks.md.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    let command = cli.command.unwrap_or(Command::Serve);
    match &command {
        Command::CheckConfig => {
            check_config(&settings);
            return Ok(());
        }
        Command::Route { mode } => {
            let stdin = std::io::stdin();
            let stdout = std::io::stdout();
            return route::run(
                mode.as_deref(),
                &settings.catalog,
                stdin.lock(),
                std::io::BufWriter::new(stdout.lock()),
            );
        }
        _ => {}
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    runtime.block_on(async move {
        match command {
            Command::Serve => serve(settings).await,
            Command::CheckConfig | Command::Route { .. } => Ok(()),
            Command::Migrate => {
                open_store(&settings).await?;
                if cognitude_server::migrate_cache(&settings)
                    .await
                    .context("the PostgreSQL cache tier's migrations failed")?
                {
                    say("cache tier migrations are up to date");
                }
                say("migrations are up to date");
                Ok(())
            }
            Command::Orgs(c) => orgs(&open_store(&settings).await?, c).await,
            Command::Keys(c) => keys(&open_store(&settings).await?, c).await,
            Command::Analyze { org, window } => {
                let store = open_store(&settings).await?;
                let org = org_named(&store, &org).await?;
                // The organization's routing policy decides tiers and the cheaper alternatives.
                let routing = &settings.routing;
                let policy = routing.orgs.get(&org.id).unwrap_or(&routing.default);
                let text = analyze::run(&store, &settings.catalog, policy, &org, window.as_deref())
                    .await?;
                say(text.trim_end());
                Ok(())
            }
        }
    })
}

async fn open_store(settings: &Settings) -> Result<Store> {
    let url = settings.database_url.expose();
    let store = Store::connect(url)
        .await
        .with_context(|| format!("could not open {}", cognitude_store::redact_url(url)))?;
    store
        .migrate()
        .await
        .context("could not migrate the database")?;
    Ok(store)
}

#[expect(clippy::print_stdout, reason = "the CLI prints its results")]
fn say(line: &str) {
    println!("{line}");
}

async fn org_named(store: &Store, name: &str) -> Result<cognitude_store::Org> {
    store
        .org_by_name(name)
        .await?
        .with_context(|| format!("no organization named '{name}'"))
}

async fn orgs(store: &Store, c: OrgsCommand) -> Result<()> {
    match c {
        OrgsCommand::Create { name } => {
            let org = store.create_org(&name).await?;
            say(&format!("created organization '{}' ({})", org.name, org.id));
        }
        OrgsCommand::List => {
            for o in store.list_orgs().await? {
                say(&format!("{}\t{}", o.id, o.name));
            }
        }
        OrgsCommand::Delete { name } => {
            let org = org_named(store, &name).await?;
            store.delete_org(&org.id).await?;
            say(&format!("deleted organization '{name}'"));
        }
        OrgsCommand::Limits { name, limits } => {
            let org = org_named(store, &name).await?;
            set_limits(store, &org.id, None, &limits).await?;
        }
    }
    Ok(())
}

/// Applies the flags to the stored override (or shows it when no flag is given) and prints it.
async fn set_limits(
    store: &Store,
    org_id: &str,
    key_id: Option<&str>,
    args: &LimitArgs,
) -> Result<()> {
    let subject = key_id.unwrap_or(org_id);
    let current = store.limits(subject).await?.map(|r| r.values());
    let mut values = current.unwrap_or_default();
    let changes = [
        (&mut values.requests_per_minute, args.rpm),
        (&mut values.request_burst, args.request_burst),
        (&mut values.tokens_per_minute, args.tpm),
        (&mut values.token_burst, args.token_burst),
        (&mut values.max_concurrent, args.max_concurrent),
    ];
    let mut changed = args.reset;
    for (field, new) in changes {
        if let Some(v) = new {
            *field = Some(i64::try_from(v).context("a limit is too large")?);
            changed = true;
        }
    }
    if args.reset {
        values = LimitValues::default();
    }
    if changed {
        store.set_limits(org_id, key_id, &values).await?;
    }
    let show = |v: Option<i64>| match v {
        None => "default".to_owned(),
        Some(0) => "unlimited".to_owned(),
        Some(n) => n.to_string(),
    };
    say(&format!(
        "{subject}\trpm={}\trequest_burst={}\ttpm={}\ttoken_burst={}\tmax_concurrent={}",
        show(values.requests_per_minute),
        show(values.request_burst),
        show(values.tokens_per_minute),
        show(values.token_burst),
        show(values.max_concurrent),
    ));
    Ok(())
}

async fn keys(store: &Store, c: KeysCommand) -> Result<()> {
    match c {
        KeysCommand::Create { org, name } => {
            let org = org_named(store, &org).await?;
            let created = store.create_key(&org.id, &name).await?;
            say(&format!(
                "created key {} for organization '{}'; the secret is shown once, below:",
                created.key.prefix, org.name
            ));
            say(&created.secret);
        }
        KeysCommand::List { org } => {
            let org_id = match org {
                Some(name) => Some(org_named(store, &name).await?.id),
                None => None,
            };
            for k in store.list_keys(org_id.as_deref()).await? {
                let state = if k.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                say(&format!(
                    "{}\t{}\t{}\t{}",
                    k.prefix, k.org_id, k.name, state
                ));
            }
        }
        KeysCommand::Revoke { prefix } => match store.revoke_key(&prefix).await? {
            Some(_) => say(&format!("revoked {prefix}")),
            None => anyhow::bail!("no key with prefix '{prefix}'"),
        },
        KeysCommand::Limits { prefix, limits } => {
            let key = store
                .key(&prefix)
                .await?
                .with_context(|| format!("no key with prefix '{prefix}'"))?;
            set_limits(store, &key.org_id, Some(&key.id), &limits).await?;
        }
    }
    Ok(())
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
    let roots = s.alerts.extra_root_certificates.len();
    if roots > 0 {
        println!("alerts: {roots} extra root certificates trusted");
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
    let has_admin = settings.admin_key.is_some();
    let db = cognitude_store::redact_url(settings.database_url.expose());
    let (state, background) = AppState::start(settings, Some(metrics))
        .await
        .with_context(|| format!("could not start with database {db}"))?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("could not listen on {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, models, database = %db, "cognitude listening on http://{addr}");
    if mock_only {
        tracing::warn!(
            "no provider key found (OPENAI_API_KEY, ANTHROPIC_API_KEY, …) and no config: every model \
             is answered by the built-in MOCK provider. Set a key or write cognitude.toml to use real models."
        );
    }
    if !has_admin && state.store().count_orgs().await? == 0 {
        quickstart(state.store(), addr).await?;
    }
    cognitude_server::serve(listener, state.clone(), shutdown_signal()).await?;
    // In-flight requests are done: write what the ledger still holds before exiting.
    state.ledger().flush().await;
    drop(background);
    tracing::info!("stopped");
    Ok(())
}

/// First start with an empty store and no admin key: create an organization and a key so the
/// README's curl works at once. The key is printed here and never again.
async fn quickstart(store: &Store, addr: std::net::SocketAddr) -> Result<()> {
    let org = store.create_org("default").await?;
    let created = store.create_key(&org.id, "quickstart").await?;
    let key = &created.secret;
    say(&format!(
        "\n  Quickstart: created organization 'default' and this API key (shown once, store it now):\n\n      \
         {key}\n\n  Try it:\n\n      curl http://{addr}/v1/chat/completions \\\n        \
         -H 'Authorization: Bearer {key}' -H 'content-type: application/json' \\\n        \
         -d '{{\"model\":\"gpt-4o-mini\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'\n\n  \
         Manage organizations and keys with `cognitude orgs …` and `cognitude keys …`, or set an \
         admin key (COGNITUDE_ADMIN_KEY) for the /admin API.\n"
    ));
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
