//! Configuration: one TOML file plus environment overrides, parsed strictly and validated before
//! anything binds a port.
//!
//! Parsing goes in two steps (as tensorzero does): the file is read into raw structs with
//! `deny_unknown_fields`, so a typo is an error naming the key; then [`Config::resolve`] checks
//! values and builds the [`Settings`] the server runs on. Environment access goes through the
//! [`Env`] trait so tests pass a map.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use cognitude_catalog::{Catalog, ModelPatch};
use cognitude_providers::Timeouts;
use serde::Deserialize;

/// A configuration problem, naming the key it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Where configuration reads environment variables from.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned().filter(|v| !v.is_empty())
    }
}

/// A secret string: never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// The configuration file as written. Every field is documented in `cognitude.example.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub upstream: UpstreamConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Upstream providers by name.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// The models clients may ask for. Empty: every catalog model whose provider is configured.
    #[serde(default)]
    pub models: Vec<ModelRoute>,
    /// Catalog additions and overrides (prices, limits, quality, speed).
    #[serde(default)]
    pub catalog: Vec<ModelPatch>,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub ledger: LedgerConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub alerts: AlertsSection,
    #[serde(default)]
    pub ratelimit: RateLimitConfig,
    #[serde(default)]
    pub routing: RoutingConfig,
}

/// `[routing]`: smart routing for `/v1/smart/completions` and `model: "cognitude/auto"`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// The policy every organization gets: mode, thresholds, quality bars, allowed models and
    /// providers, baseline, rules.
    pub default: cognitude_router::Policy,
    /// Policies of particular organizations, by organization id; each replaces the default.
    pub orgs: BTreeMap<String, cognitude_router::Policy>,
}

/// `[ratelimit]`: per-organization limits on requests, tokens and requests in flight.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Each organization's default; 0 lifts the limit. Overrides: `PUT /admin/orgs/{id}/limits`.
    pub requests_per_minute: u64,
    /// Requests that may arrive at once; default `requests_per_minute`.
    pub request_burst: Option<u64>,
    /// 0 (the default) lifts the limit. A request reserves its estimated prompt tokens plus its
    /// `max_tokens`, settled to the real usage when it ends.
    pub tokens_per_minute: u64,
    pub token_burst: Option<u64>,
    /// Requests in flight per organization; 0 (the default) lifts the cap.
    pub max_concurrent: u32,
    /// Share limits across replicas through this Redis. Unset: `cache.redis_url` if that is set,
    /// else limits are held in this process.
    pub redis_url: Option<Secret>,
    pub redis_prefix: String,
    pub redis_timeout_ms: u64,
    /// When Redis is unreachable: "open" (limit per replica in process) or "closed" (503).
    pub on_redis_failure: FailurePolicy,
    /// How often overrides made on other replicas are read from the database.
    pub refresh_ms: u64,
    /// Organizations (and keys) tracked in process before idle ones are forgotten.
    pub max_tracked: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    #[default]
    Open,
    Closed,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: true,
            requests_per_minute: 100,
            request_burst: None,
            tokens_per_minute: 0,
            token_burst: None,
            max_concurrent: 0,
            redis_url: None,
            redis_prefix: "cognitude:rl".into(),
            redis_timeout_ms: 100,
            on_redis_failure: FailurePolicy::Open,
            refresh_ms: 1_000,
            max_tracked: 100_000,
        }
    }
}

/// `[alerts]`: cost alerts and digests.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsSection {
    /// Evaluate rules and send digests (the `/alerts` API works either way).
    pub enabled: bool,
    pub evaluate_every_secs: u64,
    /// Hosts tenants may point webhooks and SMTP at although they are private or not TLS.
    pub allow_hosts: Vec<String>,
    pub email_from: String,
    pub delivery_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    /// PEM files of root certificates trusted besides the public ones when delivering over TLS
    /// (SMTP, Slack, webhooks), for a private certificate authority; each may hold several.
    /// Read once, when the configuration is loaded.
    pub extra_root_certificates: Vec<String>,
    /// The operator's SMTP relay for email channels that name no server.
    pub smtp: Option<SmtpRelay>,
}

impl Default for AlertsSection {
    fn default() -> Self {
        AlertsSection {
            enabled: true,
            evaluate_every_secs: 60,
            allow_hosts: Vec::new(),
            email_from: "Cognitude <alerts@localhost>".into(),
            delivery_attempts: 4,
            initial_backoff_ms: 2_000,
            max_backoff_ms: 60_000,
            connect_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            extra_root_certificates: Vec::new(),
            smtp: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpRelay {
    pub host: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: cognitude_alerts::SmtpTls,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    pub enabled: bool,
    /// TTL of a stored response unless the model or the request sets one.
    pub default_ttl_secs: u64,
    /// TTL per model name (as clients send it).
    pub model_ttl_secs: BTreeMap<String, u64>,
    /// Largest response stored (its JSON size).
    pub max_entry_bytes: usize,
    /// Also store responses cut by max_tokens (finish_reason "length").
    pub cache_truncated: bool,
    /// The in-process tier's size bound.
    pub memory_max_bytes: u64,
    /// The Redis hot tier, if any (`redis://…`).
    pub redis_url: Option<Secret>,
    pub redis_prefix: String,
    pub redis_timeout_ms: u64,
    /// The PostgreSQL cold tier, if any (`postgres://…`).
    pub postgres_url: Option<Secret>,
    pub postgres_schema: String,
    pub postgres_timeout_ms: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            default_ttl_secs: 3600,
            model_ttl_secs: BTreeMap::new(),
            max_entry_bytes: 1024 * 1024,
            cache_truncated: false,
            memory_max_bytes: 64 * 1024 * 1024,
            redis_url: None,
            redis_prefix: "cognitude:cache".into(),
            redis_timeout_ms: 50,
            postgres_url: None,
            postgres_schema: "cognitude_cache".into(),
            postgres_timeout_ms: 200,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://…` or `sqlite://PATH`.
    pub url: Secret,
    pub pool_size: u32,
    /// How long to wait for a database connection before treating the database as down.
    pub connect_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: Secret::new("sqlite://./cognitude.db"),
            pool_size: 16,
            connect_timeout_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Guards `/admin/*`. Prefer `admin_key_env` or COGNITUDE_ADMIN_KEY.
    pub admin_key: Option<Secret>,
    pub admin_key_env: Option<String>,
    /// How long a verified key is trusted without asking the database.
    pub key_cache_ttl_secs: u64,
    /// Failed authentications allowed per client address per minute before 429.
    pub failed_attempts_per_minute: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            admin_key: None,
            admin_key_env: None,
            key_cache_ttl_secs: 30,
            failed_attempts_per_minute: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LedgerConfig {
    pub batch_size: usize,
    pub flush_interval_ms: u64,
    pub queue_capacity: usize,
    pub retry_interval_ms: u64,
    /// Where records wait while the database is unreachable.
    pub spill_path: String,
    /// Also store prompt and completion text (off: only hashes and lengths).
    pub store_prompts: bool,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            batch_size: 500,
            flush_interval_ms: 200,
            queue_capacity: 100_000,
            retry_interval_ms: 1_000,
            spill_path: "./cognitude-ledger.spill".into(),
            store_prompts: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: String,
    pub max_body_bytes: u64,
    pub shutdown_grace_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 10 * 1024 * 1024,
            shutdown_grace_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    pub connect_timeout_ms: u64,
    pub first_byte_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub total_timeout_ms: u64,
    pub max_retries: u32,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            connect_timeout_ms: 10_000,
            first_byte_timeout_ms: 60_000,
            idle_timeout_ms: 60_000,
            total_timeout_ms: 600_000,
            max_retries: 2,
            retry_base_ms: 200,
            retry_max_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Any OpenAI-compatible `/chat/completions` API.
    Openai,
    /// Anthropic's Messages API.
    Anthropic,
    /// The in-process mock.
    Mock,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    pub base_url: Option<String>,
    /// The key itself. Prefer `api_key_env`.
    pub api_key: Option<Secret>,
    /// The environment variable holding the key.
    pub api_key_env: Option<String>,
    /// Headers sent on every request to this provider.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRoute {
    /// What clients put in `model`.
    pub name: String,
    /// A key of `[providers]`.
    pub provider: String,
    /// The upstream's own id (default: `name`).
    pub upstream_model: Option<String>,
    /// The catalog entry that prices this model (default: `upstream_model`, then `name`).
    pub catalog_id: Option<String>,
    /// Models (by `name`) tried in order when this one fails with 5xx, 429, a timeout or a
    /// connection error.
    #[serde(default)]
    pub fallbacks: Vec<String>,
}

/// A provider the built-in defaults know: its name, protocol, base URL and key variable.
struct KnownProvider {
    name: &'static str,
    kind: ProviderKind,
    base_url: &'static str,
    key_env: &'static str,
}

const KNOWN_PROVIDERS: &[KnownProvider] = &[
    KnownProvider {
        name: "openai",
        kind: ProviderKind::Openai,
        base_url: "https://api.openai.com/v1",
        key_env: "OPENAI_API_KEY",
    },
    KnownProvider {
        name: "anthropic",
        kind: ProviderKind::Anthropic,
        base_url: "https://api.anthropic.com/v1",
        key_env: "ANTHROPIC_API_KEY",
    },
    KnownProvider {
        name: "google",
        kind: ProviderKind::Openai,
        base_url: "https://generativelanguage.googleapis.com/v1beta/openai",
        key_env: "GEMINI_API_KEY",
    },
    KnownProvider {
        name: "mistral",
        kind: ProviderKind::Openai,
        base_url: "https://api.mistral.ai/v1",
        key_env: "MISTRAL_API_KEY",
    },
    KnownProvider {
        name: "deepseek",
        kind: ProviderKind::Openai,
        base_url: "https://api.deepseek.com/v1",
        key_env: "DEEPSEEK_API_KEY",
    },
    KnownProvider {
        name: "groq",
        kind: ProviderKind::Openai,
        base_url: "https://api.groq.com/openai/v1",
        key_env: "GROQ_API_KEY",
    },
    KnownProvider {
        name: "cerebras",
        kind: ProviderKind::Openai,
        base_url: "https://api.cerebras.ai/v1",
        key_env: "CEREBRAS_API_KEY",
    },
];

/// Validated settings the server runs on.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub max_body_bytes: u64,
    pub shutdown_grace: Duration,
    pub timeouts: Timeouts,
    pub retry: RetryPolicy,
    pub log: LogConfig,
    pub providers: BTreeMap<String, ResolvedProvider>,
    pub models: Vec<ResolvedRoute>,
    pub catalog: Catalog,
    /// True when no provider is configured and every model is served by the built-in mock.
    pub mock_only: bool,
    pub database_url: Secret,
    pub database_pool_size: u32,
    pub database_connect_timeout: Duration,
    pub admin_key: Option<Secret>,
    pub key_cache_ttl: Duration,
    pub failed_auth_per_minute: u32,
    pub ledger: LedgerConfig,
    pub cache: CacheConfig,
    pub alerts_enabled: bool,
    pub alerts: cognitude_alerts::AlertsConfig,
    pub ratelimit: RateLimitConfig,
    pub routing: RoutingConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub base: Duration,
    pub max: Duration,
}

#[derive(Debug, Clone)]
pub struct ResolvedProvider {
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: String,
    pub api_key: Option<Secret>,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct ResolvedRoute {
    pub name: String,
    pub provider: String,
    pub upstream_model: String,
    pub catalog_id: String,
    pub fallbacks: Vec<String>,
}

impl Config {
    /// Parses a TOML document; an unknown key or a wrongly typed value is an error naming it.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let message = e.message().to_owned();
            let key = e
                .span()
                .and_then(|span| key_at(text, span.start))
                .unwrap_or_else(|| "config".to_owned());
            ConfigError::new(key, message)
        })
    }

    /// Applies `COGNITUDE_*` overrides, checks every value, and builds the settings.
    pub fn resolve(mut self, env: &dyn Env) -> Result<Settings, ConfigError> {
        self.apply_env(env)?;

        let listen: SocketAddr = self.server.listen.parse().map_err(|_| {
            ConfigError::new(
                "server.listen",
                format!(
                    "'{}' is not an address like 127.0.0.1:8080",
                    self.server.listen
                ),
            )
        })?;
        if self.server.max_body_bytes == 0 {
            return Err(ConfigError::new(
                "server.max_body_bytes",
                "must be positive",
            ));
        }
        let u = &self.upstream;
        for (key, v) in [
            ("upstream.connect_timeout_ms", u.connect_timeout_ms),
            ("upstream.first_byte_timeout_ms", u.first_byte_timeout_ms),
            ("upstream.idle_timeout_ms", u.idle_timeout_ms),
            ("upstream.total_timeout_ms", u.total_timeout_ms),
        ] {
            if v == 0 {
                return Err(ConfigError::new(key, "must be positive"));
            }
        }
        if u.retry_base_ms > u.retry_max_ms {
            return Err(ConfigError::new(
                "upstream.retry_base_ms",
                "must not exceed upstream.retry_max_ms",
            ));
        }
        if tracing_level_ok(&self.log.level).is_err() {
            return Err(ConfigError::new(
                "log.level",
                format!(
                    "'{}' is not a level (trace, debug, info, warn, error) or a filter",
                    self.log.level
                ),
            ));
        }

        let mut catalog = Catalog::builtin();
        for (i, patch) in self.catalog.iter().enumerate() {
            catalog
                .apply(patch.clone())
                .map_err(|e| ConfigError::new(format!("catalog[{i}]"), e.to_string()))?;
        }

        let mut providers = BTreeMap::new();
        for (name, p) in &self.providers {
            providers.insert(name.clone(), resolve_provider(name, p, env)?);
        }
        // Known providers whose key is in the environment join without any configuration.
        for k in KNOWN_PROVIDERS {
            if providers.contains_key(k.name) {
                continue;
            }
            if let Some(key) = env.var(k.key_env) {
                providers.insert(
                    k.name.to_owned(),
                    ResolvedProvider {
                        name: k.name.to_owned(),
                        kind: k.kind,
                        base_url: k.base_url.to_owned(),
                        api_key: Some(Secret::new(key)),
                        headers: Vec::new(),
                    },
                );
            }
        }

        let mock_only = providers.is_empty();
        if mock_only {
            providers.insert(
                "mock".to_owned(),
                ResolvedProvider {
                    name: "mock".to_owned(),
                    kind: ProviderKind::Mock,
                    base_url: String::new(),
                    api_key: None,
                    headers: Vec::new(),
                },
            );
        }

        let db_url = self.database.url.expose();
        if !(db_url.starts_with("postgres://")
            || db_url.starts_with("postgresql://")
            || db_url.starts_with("sqlite:"))
        {
            return Err(ConfigError::new(
                "database.url",
                "must start with postgres://, postgresql:// or sqlite://",
            ));
        }
        if self.database.pool_size == 0 {
            return Err(ConfigError::new("database.pool_size", "must be positive"));
        }
        let admin_key = match (&self.auth.admin_key, &self.auth.admin_key_env) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "auth.admin_key",
                    "set either admin_key or admin_key_env, not both",
                ));
            }
            (Some(k), None) => Some(k.clone()),
            (None, Some(var)) => Some(Secret::new(env.var(var).ok_or_else(|| {
                ConfigError::new(
                    "auth.admin_key_env",
                    format!("environment variable {var} is not set"),
                )
            })?)),
            (None, None) => None,
        };
        if let Some(k) = &admin_key
            && k.expose().len() < 16
        {
            return Err(ConfigError::new(
                "auth.admin_key",
                "must be at least 16 characters",
            ));
        }
        let l = &self.ledger;
        if l.batch_size == 0 || l.queue_capacity == 0 || l.flush_interval_ms == 0 {
            return Err(ConfigError::new(
                "ledger",
                "batch_size, queue_capacity and flush_interval_ms must be positive",
            ));
        }
        if l.spill_path.trim().is_empty() {
            return Err(ConfigError::new("ledger.spill_path", "must not be empty"));
        }

        let c = &self.cache;
        if c.enabled && (c.default_ttl_secs == 0 || c.memory_max_bytes == 0) {
            return Err(ConfigError::new(
                "cache",
                "default_ttl_secs and memory_max_bytes must be positive",
            ));
        }
        if let Some(u) = &c.redis_url
            && !(u.expose().starts_with("redis://") || u.expose().starts_with("rediss://"))
        {
            return Err(ConfigError::new(
                "cache.redis_url",
                "must start with redis://",
            ));
        }
        if let Some(u) = &c.postgres_url
            && !(u.expose().starts_with("postgres://") || u.expose().starts_with("postgresql://"))
        {
            return Err(ConfigError::new(
                "cache.postgres_url",
                "must start with postgres://",
            ));
        }
        if c.postgres_schema.is_empty()
            || !c
                .postgres_schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(ConfigError::new(
                "cache.postgres_schema",
                "must be lowercase letters, digits and underscores",
            ));
        }

        let mut ratelimit = self.ratelimit.clone();
        if ratelimit.redis_url.is_none() {
            ratelimit.redis_url.clone_from(&self.cache.redis_url);
        }
        if let Some(u) = &ratelimit.redis_url
            && !(u.expose().starts_with("redis://") || u.expose().starts_with("rediss://"))
        {
            return Err(ConfigError::new(
                "ratelimit.redis_url",
                "must start with redis://",
            ));
        }
        for (field, burst) in [
            ("ratelimit.request_burst", ratelimit.request_burst),
            ("ratelimit.token_burst", ratelimit.token_burst),
        ] {
            if burst == Some(0) {
                return Err(ConfigError::new(field, "must be positive (or left out)"));
            }
        }
        if ratelimit.refresh_ms == 0
            || ratelimit.redis_timeout_ms == 0
            || ratelimit.max_tracked == 0
        {
            return Err(ConfigError::new(
                "ratelimit",
                "refresh_ms, redis_timeout_ms and max_tracked must be positive",
            ));
        }

        let a = &self.alerts;
        let mut extra_roots = cognitude_alerts::RootCertificates::default();
        for path in &a.extra_root_certificates {
            let roots = cognitude_alerts::RootCertificates::read_pem_file(Path::new(path))
                .map_err(|e| {
                    let message = match e {
                        cognitude_alerts::Error::Config(m) => m,
                        other => other.to_string(),
                    };
                    ConfigError::new("alerts.extra_root_certificates", message)
                })?;
            extra_roots.extend(roots);
        }
        let alerts = cognitude_alerts::AlertsConfig {
            evaluate_every: Duration::from_secs(a.evaluate_every_secs),
            allow_hosts: a.allow_hosts.clone(),
            smtp_relay: a.smtp.as_ref().map(|r| cognitude_alerts::SmtpServer {
                host: r.host.clone(),
                port: r.port,
                tls: r.tls,
                username: r.username.clone(),
                password: r.password.as_ref().map(|p| p.expose().to_owned()),
            }),
            email_from: a.email_from.clone(),
            extra_root_certificates: extra_roots,
            delivery_attempts: a.delivery_attempts,
            initial_backoff: Duration::from_millis(a.initial_backoff_ms),
            max_backoff: Duration::from_millis(a.max_backoff_ms),
            connect_timeout: Duration::from_millis(a.connect_timeout_ms),
            request_timeout: Duration::from_millis(a.request_timeout_ms),
            ..cognitude_alerts::AlertsConfig::default()
        };
        alerts.validate().map_err(|e| match e {
            cognitude_alerts::Error::Config(m) => ConfigError::new("alerts", m),
            other => ConfigError::new("alerts", other.to_string()),
        })?;

        let models = if self.models.is_empty() {
            default_routes(&catalog, &providers, mock_only)
        } else {
            resolve_routes(&self.models, &providers, &catalog)?
        };

        check_routing(&self.routing, &catalog, &models)?;

        Ok(Settings {
            listen,
            max_body_bytes: self.server.max_body_bytes,
            shutdown_grace: Duration::from_secs(self.server.shutdown_grace_secs),
            timeouts: Timeouts {
                connect: Duration::from_millis(u.connect_timeout_ms),
                first_byte: Duration::from_millis(u.first_byte_timeout_ms),
                idle: Duration::from_millis(u.idle_timeout_ms),
                total: Duration::from_millis(u.total_timeout_ms),
            },
            retry: RetryPolicy {
                max_retries: u.max_retries,
                base: Duration::from_millis(u.retry_base_ms),
                max: Duration::from_millis(u.retry_max_ms),
            },
            log: self.log,
            providers,
            models,
            catalog,
            mock_only,
            database_url: self.database.url.clone(),
            database_pool_size: self.database.pool_size,
            database_connect_timeout: Duration::from_millis(
                self.database.connect_timeout_ms.max(1),
            ),
            admin_key,
            key_cache_ttl: Duration::from_secs(self.auth.key_cache_ttl_secs),
            failed_auth_per_minute: self.auth.failed_attempts_per_minute,
            ledger: self.ledger.clone(),
            cache: self.cache.clone(),
            alerts_enabled: self.alerts.enabled,
            alerts,
            ratelimit,
            routing: self.routing,
        })
    }

    fn apply_env(&mut self, env: &dyn Env) -> Result<(), ConfigError> {
        if let Some(v) = env.var("COGNITUDE_LISTEN") {
            self.server.listen = v;
        }
        if let Some(v) = env.var("COGNITUDE_MAX_BODY_BYTES") {
            self.server.max_body_bytes = v.parse().map_err(|_| {
                ConfigError::new(
                    "COGNITUDE_MAX_BODY_BYTES",
                    "must be a whole number of bytes",
                )
            })?;
        }
        if let Some(v) = env.var("COGNITUDE_DATABASE_URL") {
            self.database.url = Secret::new(v);
        }
        if let Some(v) = env.var("COGNITUDE_ADMIN_KEY") {
            self.auth.admin_key = Some(Secret::new(v));
            self.auth.admin_key_env = None;
        }
        if let Some(v) = env.var("COGNITUDE_REDIS_URL") {
            self.cache.redis_url = Some(Secret::new(v));
        }
        if let Some(v) = env.var("COGNITUDE_LOG_LEVEL") {
            self.log.level = v;
        }
        if let Some(v) = env.var("COGNITUDE_LOG_FORMAT") {
            self.log.format = match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => {
                    return Err(ConfigError::new(
                        "COGNITUDE_LOG_FORMAT",
                        "must be 'text' or 'json'",
                    ));
                }
            };
        }
        Ok(())
    }
}

fn tracing_level_ok(level: &str) -> Result<(), ()> {
    let l = level.trim();
    if l.is_empty() {
        return Err(());
    }
    let ok = l.split(',').all(|part| {
        let lvl = part.rsplit('=').next().unwrap_or("");
        matches!(
            lvl.trim().to_ascii_lowercase().as_str(),
            "trace" | "debug" | "info" | "warn" | "error" | "off"
        )
    });
    if ok { Ok(()) } else { Err(()) }
}

fn resolve_provider(
    name: &str,
    p: &ProviderConfig,
    env: &dyn Env,
) -> Result<ResolvedProvider, ConfigError> {
    let key_path = |field: &str| format!("providers.{name}.{field}");
    let known = KNOWN_PROVIDERS.iter().find(|k| k.name == name);
    let base_url = match (&p.base_url, known, p.kind) {
        (Some(u), _, _) => u.clone(),
        (None, _, ProviderKind::Mock) => String::new(),
        (None, Some(k), _) => k.base_url.to_owned(),
        (None, None, _) => {
            return Err(ConfigError::new(
                key_path("base_url"),
                "is required for a provider Cognitude does not know",
            ));
        }
    };
    if p.kind != ProviderKind::Mock {
        let uri: http::Uri = base_url.parse().map_err(|_| {
            ConfigError::new(key_path("base_url"), format!("'{base_url}' is not a URL"))
        })?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(ConfigError::new(
                key_path("base_url"),
                format!("'{base_url}' must be an http:// or https:// URL"),
            ));
        }
    }
    let api_key = match (&p.api_key, &p.api_key_env) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                key_path("api_key"),
                "set either api_key or api_key_env, not both",
            ));
        }
        (Some(k), None) => Some(k.clone()),
        (None, Some(var)) => Some(Secret::new(env.var(var).ok_or_else(|| {
            ConfigError::new(
                key_path("api_key_env"),
                format!("environment variable {var} is not set"),
            )
        })?)),
        (None, None) => known.and_then(|k| env.var(k.key_env)).map(Secret::new),
    };
    for (h, v) in &p.headers {
        if http::HeaderName::from_bytes(h.as_bytes()).is_err()
            || http::HeaderValue::from_str(v).is_err()
        {
            return Err(ConfigError::new(
                key_path(&format!("headers.{h}")),
                "is not a valid HTTP header",
            ));
        }
    }
    Ok(ResolvedProvider {
        name: name.to_owned(),
        kind: p.kind,
        base_url,
        api_key,
        headers: p
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}

/// Every routing policy names only catalog models, and every model it may choose by name (a
/// baseline aside) is one the proxy serves.
fn check_routing(
    routing: &RoutingConfig,
    catalog: &Catalog,
    models: &[ResolvedRoute],
) -> Result<(), ConfigError> {
    let policies = std::iter::once(("routing.default".to_owned(), &routing.default)).chain(
        routing
            .orgs
            .iter()
            .map(|(org, p)| (format!("routing.orgs.{org}"), p)),
    );
    for (key, policy) in policies {
        policy
            .validate(catalog)
            .map_err(|e| ConfigError::new(key.clone(), e.to_string()))?;
        let served = |id: &str| models.iter().any(|r| r.catalog_id == id);
        for rule in &policy.rules {
            if !served(&rule.model) {
                return Err(ConfigError::new(
                    format!("{key}.rules"),
                    format!(
                        "model '{}' is not served by any [[models]] route",
                        rule.model
                    ),
                ));
            }
        }
        if !policy.constraints.allowed_models.is_empty()
            && !policy.constraints.allowed_models.iter().any(|m| served(m))
        {
            return Err(ConfigError::new(
                format!("{key}.allowed_models"),
                "none of these models is served by a [[models]] route",
            ));
        }
    }
    Ok(())
}

fn default_routes(
    catalog: &Catalog,
    providers: &BTreeMap<String, ResolvedProvider>,
    mock_only: bool,
) -> Vec<ResolvedRoute> {
    catalog
        .models()
        .iter()
        .filter(|m| mock_only || providers.contains_key(&m.provider))
        .map(|m| ResolvedRoute {
            name: m.id.clone(),
            provider: if mock_only {
                "mock".to_owned()
            } else {
                m.provider.clone()
            },
            upstream_model: m.id.clone(),
            catalog_id: m.id.clone(),
            fallbacks: Vec::new(),
        })
        .collect()
}

fn resolve_routes(
    routes: &[ModelRoute],
    providers: &BTreeMap<String, ResolvedProvider>,
    catalog: &Catalog,
) -> Result<Vec<ResolvedRoute>, ConfigError> {
    let mut out: Vec<ResolvedRoute> = Vec::with_capacity(routes.len());
    for (i, r) in routes.iter().enumerate() {
        let key = |f: &str| format!("models[{i}].{f}");
        if r.name.trim().is_empty() {
            return Err(ConfigError::new(key("name"), "must not be empty"));
        }
        if out.iter().any(|o| o.name == r.name) {
            return Err(ConfigError::new(
                key("name"),
                format!("model '{}' is listed twice", r.name),
            ));
        }
        if !providers.contains_key(&r.provider) {
            return Err(ConfigError::new(
                key("provider"),
                format!(
                    "'{}' is not a configured provider (configured: {})",
                    r.provider,
                    providers.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let upstream_model = r.upstream_model.clone().unwrap_or_else(|| r.name.clone());
        let catalog_id = match &r.catalog_id {
            Some(c) => {
                if catalog.get(c).is_none() {
                    return Err(ConfigError::new(
                        key("catalog_id"),
                        format!("'{c}' is not in the catalog"),
                    ));
                }
                c.clone()
            }
            None if catalog.get(&upstream_model).is_some() => upstream_model.clone(),
            None => r.name.clone(),
        };
        out.push(ResolvedRoute {
            name: r.name.clone(),
            provider: r.provider.clone(),
            upstream_model,
            catalog_id,
            fallbacks: r.fallbacks.clone(),
        });
    }
    for (i, r) in out.iter().enumerate() {
        for f in &r.fallbacks {
            if f == &r.name {
                return Err(ConfigError::new(
                    format!("models[{i}].fallbacks"),
                    "a model cannot be its own fallback",
                ));
            }
            if !out.iter().any(|o| &o.name == f) {
                return Err(ConfigError::new(
                    format!("models[{i}].fallbacks"),
                    format!("'{f}' is not a configured model"),
                ));
            }
        }
    }
    Ok(out)
}

/// The dotted key at a byte offset of a TOML document: the table header above it plus the key
/// on its line (`server.listen`), for error messages.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let line = text[line_start..line_end].trim();
    let mut table = String::new();
    for l in before[..line_start].lines().rev() {
        let l = l.trim();
        if l.starts_with('[') {
            table = l.trim_matches(|c| c == '[' || c == ']').trim().to_owned();
            break;
        }
    }
    if line.starts_with('[') {
        return Some(
            line.trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_owned(),
        );
    }
    let key = line.split('=').next()?.trim().trim_matches('"');
    if key.is_empty() {
        return (!table.is_empty()).then_some(table);
    }
    Some(if table.is_empty() {
        key.to_owned()
    } else {
        format!("{table}.{key}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn check_err(toml: &str, env_pairs: &[(&str, &str)], key: &str) {
        let err = Config::from_toml(toml)
            .and_then(|c| c.resolve(&env(env_pairs)))
            .unwrap_err();
        assert_eq!(err.key, key, "{err}");
    }

    #[test]
    fn empty_config_serves_the_mock() {
        let s = Config::from_toml("").unwrap().resolve(&env(&[])).unwrap();
        assert!(s.mock_only);
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert!(s.models.iter().any(|m| m.name == "gpt-4o-mini"));
        assert!(s.models.iter().all(|m| m.provider == "mock"));
    }

    #[test]
    fn provider_key_in_env_enables_its_models() {
        let s = Config::from_toml("")
            .unwrap()
            .resolve(&env(&[("OPENAI_API_KEY", "sk-test")]))
            .unwrap();
        assert!(!s.mock_only);
        assert!(s.models.iter().all(|m| m.provider == "openai"));
        assert!(s.models.iter().any(|m| m.name == "gpt-4o"));
        assert!(
            !format!("{s:?}").contains("sk-test"),
            "secret leaked in Debug"
        );
    }

    #[test]
    fn errors_name_the_key() {
        check_err("[server]\nlisten = \"nope\"\n", &[], "server.listen");
        check_err("[server]\nlistn = \"x\"\n", &[], "server.listn");
        check_err(
            "[upstream]\nmax_retries = \"two\"\n",
            &[],
            "upstream.max_retries",
        );
        check_err(
            "[upstream]\nidle_timeout_ms = 0\n",
            &[],
            "upstream.idle_timeout_ms",
        );
        check_err("[log]\nlevel = \"loud\"\n", &[], "log.level");
        check_err(
            "[providers.local]\nkind = \"openai\"\n",
            &[],
            "providers.local.base_url",
        );
        check_err(
            "[providers.local]\nkind = \"openai\"\nbase_url = \"ftp://x\"\n",
            &[],
            "providers.local.base_url",
        );
        check_err(
            "[providers.openai]\nkind = \"openai\"\napi_key_env = \"MISSING_KEY\"\n",
            &[],
            "providers.openai.api_key_env",
        );
        check_err(
            "[providers.m]\nkind = \"mock\"\n[[models]]\nname = \"a\"\nprovider = \"x\"\n",
            &[],
            "models[0].provider",
        );
        check_err(
            "[providers.m]\nkind = \"mock\"\n[[models]]\nname = \"a\"\nprovider = \"m\"\nfallbacks = [\"b\"]\n",
            &[],
            "models[0].fallbacks",
        );
        check_err("[[catalog]]\nid = \"new\"\n", &[], "catalog[0]");
        check_err(
            "",
            &[("COGNITUDE_MAX_BODY_BYTES", "lots")],
            "COGNITUDE_MAX_BODY_BYTES",
        );
    }

    #[test]
    fn extra_root_certificates_are_read_at_load() {
        let dir = std::env::temp_dir().join(format!("cognitude-roots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = include_str!("../../alerts/tests/fixtures/test-ca.pem");
        let good = dir.join("ca.pem");
        std::fs::write(&good, format!("{ca}{ca}")).unwrap();
        let bad = dir.join("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let toml = |paths: &[&Path]| {
            let list: Vec<String> = paths
                .iter()
                .map(|p| format!("{:?}", p.display().to_string()))
                .collect();
            format!(
                "[alerts]\nextra_root_certificates = [{}]\n",
                list.join(", ")
            )
        };
        let s = Config::from_toml(&toml(&[&good, &good]))
            .unwrap()
            .resolve(&env(&[]))
            .unwrap();
        assert_eq!(s.alerts.extra_root_certificates.len(), 4);

        let missing = dir.join("missing.pem");
        for (paths, named) in [
            (vec![good.as_path(), missing.as_path()], &missing),
            (vec![bad.as_path()], &bad),
        ] {
            let err = Config::from_toml(&toml(&paths))
                .unwrap()
                .resolve(&env(&[]))
                .unwrap_err();
            assert_eq!(err.key, "alerts.extra_root_certificates", "{err}");
            assert!(err.message.contains(&named.display().to_string()), "{err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn env_overrides_apply() {
        let s = Config::from_toml("[server]\nlisten = \"127.0.0.1:1\"\n")
            .unwrap()
            .resolve(&env(&[("COGNITUDE_LISTEN", "0.0.0.0:9000")]))
            .unwrap();
        assert_eq!(s.listen.to_string(), "0.0.0.0:9000");
    }

    #[test]
    fn routes_with_fallbacks_resolve() {
        let toml = r#"
            [providers.up]
            kind = "openai"
            base_url = "http://127.0.0.1:1/v1"
            [[models]]
            name = "primary"
            provider = "up"
            upstream_model = "gpt-4o"
            fallbacks = ["backup"]
            [[models]]
            name = "backup"
            provider = "up"
            upstream_model = "gpt-4o-mini"
        "#;
        let s = Config::from_toml(toml).unwrap().resolve(&env(&[])).unwrap();
        assert_eq!(s.models[0].catalog_id, "gpt-4o");
        assert_eq!(s.models[0].fallbacks, vec!["backup".to_owned()]);
    }

    #[test]
    fn example_config_parses_and_resolves() {
        let text = include_str!("../../../cognitude.example.toml");
        let cfg = Config::from_toml(text).unwrap();
        let s = cfg
            .resolve(&env(&[
                ("OPENAI_API_KEY", "sk-1"),
                ("ANTHROPIC_API_KEY", "sk-2"),
            ]))
            .unwrap();
        assert!(!s.models.is_empty());
    }
}
