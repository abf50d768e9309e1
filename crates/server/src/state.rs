//! The state a server runs on, built once from validated [`Settings`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cognitude_alerts::{Alerts, SystemClock};
use cognitude_catalog::{Catalog, ModelInfo};
use cognitude_providers::{AnthropicProvider, HttpClient, MockProvider, OpenAiProvider, Provider};
use cognitude_store::{Authenticator, Ledger, LedgerOptions, Store};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::task::JoinHandle;

use crate::auth::FailedAuthLimiter;
use crate::config::{ProviderKind, RetryPolicy, Settings};
use crate::limits::RateLimits;
use crate::routing::SmartRouting;

/// One model clients can ask for.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub provider: Arc<dyn Provider>,
    pub upstream_model: String,
    pub catalog_id: String,
    pub fallbacks: Vec<String>,
    /// The route's metric handles, registered on first use (after the recorder is installed),
    /// so a request does not look its series up by name.
    pub(crate) metrics: Arc<std::sync::OnceLock<RouteMetrics>>,
}

/// The series every answered call of a route updates. Holding handles is sound because the
/// Prometheus exporter is built without an idle timeout: with one, a series left idle would be
/// dropped from the registry while these handles went on counting into it unseen.
#[derive(Debug)]
pub(crate) struct RouteMetrics {
    pub prompt_tokens: metrics::Counter,
    pub completion_tokens: metrics::Counter,
    pub cost_nano: metrics::Counter,
    pub upstream_ok: metrics::Histogram,
}

impl Route {
    pub(crate) fn metrics(&self) -> &RouteMetrics {
        use crate::metrics_names as m;
        self.metrics.get_or_init(|| RouteMetrics {
            prompt_tokens: metrics::counter!(m::TOKENS, "model" => self.name.clone(), "kind" => "prompt"),
            completion_tokens: metrics::counter!(m::TOKENS, "model" => self.name.clone(), "kind" => "completion"),
            cost_nano: metrics::counter!(m::COST_NANO, "model" => self.name.clone()),
            upstream_ok: metrics::histogram!(
                m::UPSTREAM_DURATION,
                "provider" => self.provider.name().to_owned(),
                "model" => self.name.clone(),
                "outcome" => "ok"
            ),
        })
    }
}

/// Everything a request needs, shared by all connections.
#[derive(Debug)]
pub struct AppState {
    pub settings: Settings,
    routes: HashMap<String, Route>,
    route_order: Vec<String>,
    metrics: Option<PrometheusHandle>,
    started: Instant,
    shutting_down: AtomicBool,
    store: Store,
    authenticator: Authenticator,
    ledger: Ledger,
    failed_auth: FailedAuthLimiter,
    cache: Option<Arc<crate::cache::CacheLayer>>,
    alerts: Alerts,
    limits: Option<Arc<RateLimits>>,
    routing: SmartRouting,
}

/// Background tasks a running server owns.
#[derive(Debug)]
pub struct Background {
    pub ledger_writer: JoinHandle<()>,
    /// The alert evaluator, when `alerts.enabled`; it stops when this value is dropped.
    pub alerts: Option<JoinHandle<()>>,
    /// Reads rate-limit overrides made on other replicas; stops when this value is dropped.
    pub limits: Option<JoinHandle<()>>,
    /// Folds the metrics' pending histogram samples every [`METRICS_UPKEEP_PERIOD`], when a
    /// metrics handle was given; stops when this value is dropped.
    pub metrics_upkeep: Option<JoinHandle<()>>,
    /// Dropped with this value, which stops the tasks above (not the ledger writer, which
    /// stops when the last `Ledger` handle goes).
    _stop: tokio::sync::watch::Sender<()>,
}

/// How often the Prometheus recorder's upkeep runs. The recorder keeps every histogram sample
/// until `/metrics` is rendered or its upkeep runs, so a server that nobody scrapes would
/// otherwise keep a few dozen bytes per request for ever.
pub const METRICS_UPKEEP_PERIOD: Duration = Duration::from_secs(5);

/// Building the state failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    #[error("provider '{provider}': {source}")]
    Provider {
        provider: String,
        #[source]
        source: cognitude_providers::Error,
    },
    #[error("database: {0}")]
    Store(#[from] cognitude_store::Error),
    #[error("cache: {0}")]
    Cache(#[from] cognitude_cache::Error),
    #[error("alerts: {0}")]
    Alerts(#[from] cognitude_alerts::Error),
    #[error("rate limiter: {0}")]
    RateLimit(String),
}

impl AppState {
    /// Connects the store (running its migrations), starts the ledger writer, and builds the
    /// state. `metrics` renders `/metrics`; without it the endpoint is empty.
    pub async fn start(
        settings: Settings,
        metrics: Option<PrometheusHandle>,
    ) -> Result<(Arc<AppState>, Background), BuildError> {
        let store = Store::connect_with(
            settings.database_url.expose(),
            settings.database_pool_size,
            settings.database_connect_timeout,
        )
        .await?;
        store.migrate().await?;
        let l = &settings.ledger;
        let (ledger, ledger_writer) = Ledger::start(
            store.clone(),
            LedgerOptions {
                batch_size: l.batch_size,
                flush_interval: std::time::Duration::from_millis(l.flush_interval_ms),
                queue_capacity: l.queue_capacity,
                retry_interval: std::time::Duration::from_millis(l.retry_interval_ms),
                spill_path: l.spill_path.clone().into(),
            },
        );
        let cache = crate::cache::CacheLayer::build(&settings.cache).await?;
        let state = AppState::build(settings, metrics, store, ledger, cache)?;
        // One signal stops every task below: dropping `Background` drops its sender.
        let (stop, stop_rx) = tokio::sync::watch::channel(());
        let stopped = || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.changed().await;
            }
        };
        let alerts = state
            .settings
            .alerts_enabled
            .then(|| tokio::spawn(state.alerts().clone().run(stopped())));
        if let Some(l) = state.limits() {
            l.wait_connected(std::time::Duration::from_secs(2)).await;
        }
        let limits = state
            .limits
            .clone()
            .map(|l| tokio::spawn(l.run_refresh(stopped())));
        let metrics_upkeep = state.metrics.clone().map(|handle| {
            run_periodically(METRICS_UPKEEP_PERIOD, stopped(), move || {
                handle.run_upkeep();
            })
        });
        Ok((
            state,
            Background {
                ledger_writer,
                alerts,
                limits,
                metrics_upkeep,
                _stop: stop,
            },
        ))
    }

    /// Builds the state from a connected store and a running ledger, without a response cache.
    pub fn new(
        settings: Settings,
        metrics: Option<PrometheusHandle>,
        store: Store,
        ledger: Ledger,
    ) -> Result<Arc<AppState>, BuildError> {
        AppState::build(settings, metrics, store, ledger, None)
    }

    fn build(
        settings: Settings,
        metrics: Option<PrometheusHandle>,
        store: Store,
        ledger: Ledger,
        cache: Option<Arc<crate::cache::CacheLayer>>,
    ) -> Result<Arc<AppState>, BuildError> {
        let client = HttpClient::new(settings.timeouts).map_err(|source| BuildError::Provider {
            provider: "(http client)".into(),
            source,
        })?;
        let mut providers: HashMap<String, Arc<dyn Provider>> = HashMap::new();
        for (name, p) in &settings.providers {
            let err = |source| BuildError::Provider {
                provider: name.clone(),
                source,
            };
            let key = p.api_key.as_ref().map(|k| k.expose());
            let provider: Arc<dyn Provider> = match p.kind {
                ProviderKind::Openai => Arc::new(
                    OpenAiProvider::new(name, &p.base_url, key, &p.headers, client.clone())
                        .map_err(err)?,
                ),
                ProviderKind::Anthropic => Arc::new(
                    AnthropicProvider::new(name, &p.base_url, key, &p.headers, client.clone())
                        .map_err(err)?,
                ),
                ProviderKind::Mock => Arc::new(MockProvider::new(name)),
            };
            providers.insert(name.clone(), provider);
        }
        let mut routes = HashMap::new();
        let mut route_order = Vec::new();
        for r in &settings.models {
            let Some(provider) = providers.get(&r.provider) else {
                continue;
            };
            route_order.push(r.name.clone());
            routes.insert(
                r.name.clone(),
                Route {
                    name: r.name.clone(),
                    provider: provider.clone(),
                    upstream_model: r.upstream_model.clone(),
                    catalog_id: r.catalog_id.clone(),
                    fallbacks: r.fallbacks.clone(),
                    metrics: Arc::default(),
                },
            );
        }
        let alerts = Alerts::new(
            store.clone(),
            Arc::new(SystemClock),
            settings.alerts.clone(),
        )?;
        let authenticator = Authenticator::new(store.clone(), settings.key_cache_ttl);
        let failed_auth = FailedAuthLimiter::new(settings.failed_auth_per_minute);
        let limits = RateLimits::build(&settings.ratelimit, store.clone())
            .map_err(BuildError::RateLimit)?
            .map(Arc::new);
        let routing = SmartRouting::new(&settings.routing, &settings.catalog, &settings.models);
        Ok(Arc::new(AppState {
            settings,
            routes,
            route_order,
            metrics,
            started: Instant::now(),
            shutting_down: AtomicBool::new(false),
            store,
            authenticator,
            ledger,
            failed_auth,
            cache,
            alerts,
            limits,
            routing,
        }))
    }

    pub fn route(&self, model: &str) -> Option<&Route> {
        self.routes.get(model)
    }

    /// Routes in configuration order.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.route_order.iter().filter_map(|n| self.routes.get(n))
    }

    pub fn catalog(&self) -> &Catalog {
        &self.settings.catalog
    }

    pub fn model_info(&self, route: &Route) -> Option<&ModelInfo> {
        self.settings.catalog.get(&route.catalog_id)
    }

    pub fn retry(&self) -> RetryPolicy {
        self.settings.retry
    }

    pub fn metrics(&self) -> Option<&PrometheusHandle> {
        self.metrics.as_ref()
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn alerts(&self) -> &Alerts {
        &self.alerts
    }

    pub(crate) fn cache(&self) -> Option<&Arc<crate::cache::CacheLayer>> {
        self.cache.as_ref()
    }

    pub(crate) fn routing(&self) -> &SmartRouting {
        &self.routing
    }

    pub(crate) fn limits(&self) -> Option<&Arc<RateLimits>> {
        self.limits.as_ref()
    }

    pub(crate) fn failed_auth(&self) -> &FailedAuthLimiter {
        &self.failed_auth
    }

    /// Marks the server as draining: `/health` answers 503 so load balancers stop sending.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}

/// Runs `f` now and then every `period` until `stop` resolves.
fn run_periodically(
    period: Duration,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
    mut f: impl FnMut() + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut stop = std::pin::pin!(stop);
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => f(),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test(start_paused = true)]
    async fn periodic_task_runs_on_its_period_and_stops_when_its_owner_goes() {
        let runs = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let counted = runs.clone();
        let stopped = async move {
            let _ = stopped.await;
        };
        let task = run_periodically(Duration::from_secs(5), stopped, move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        // Runs at 0 s, 5 s and 10 s.
        tokio::time::sleep(Duration::from_secs(12)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        drop(stop);
        task.await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }
}
