//! The Redis-backed limiter: every replica shares one limit through one atomic script per check.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fred::clients::Client;
use fred::interfaces::{ClientLike, LuaInterface};
use fred::types::config::{Config, ReconnectPolicy};
use fred::types::{Builder, Value};

use crate::Limiter;
use crate::clock::micros;
use crate::decision::{Decision, Held, Reservation, Scope, Settler, Snapshot};
use crate::error::{Error, Result};
use crate::gcra::{self, Kind, Observed, Plan};
use crate::quota::Admission;

/// The script behind every check and settlement.
const SCRIPT: &str = include_str!("gcra.lua");

/// How a [`RedisLimiter`] names its keys and how long it waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Prefix of every key, so several deployments (or test runs) can share one Redis.
    /// Keys look like `{prefix}:{{org_id}}:r` (requests), `…:t` (tokens), `…:c` (permits) and
    /// `{prefix}:{{org_id}}:k:{key_id}:r` for a key's; the braces around the organization make
    /// it a cluster hash tag, so all keys of one check live in one slot.
    pub prefix: String,
    /// How long a check or settlement waits for Redis before it counts as unavailable.
    pub command_timeout: Duration,
    /// How long [`RedisLimiter::connect`] waits for the first connection.
    pub connect_timeout: Duration,
    /// How long a concurrency permit outlives a replica that died holding it.
    pub permit_lease: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            prefix: "cognitude:rl".to_owned(),
            command_timeout: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(2),
            permit_lease: Duration::from_secs(600),
        }
    }
}

/// GCRA in Redis: the state of each bucket is one key holding its theoretical arrival time, set
/// with an expiry at the moment the bucket is full again; each check is one `EVALSHA` of a Lua
/// script that reads, decides and writes atomically with the server's clock (`TIME`). No
/// read-then-write race, and replicas' clocks do not matter.
///
/// Concurrency permits are members of a sorted set scored by their lease's end, so a replica that
/// dies holding permits gives them back when the lease runs out.
#[derive(Clone)]
pub struct RedisLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    runner: Runner,
    config: RedisConfig,
    /// Random per instance: permit ids from different replicas never collide.
    instance: u64,
    next_permit: AtomicU64,
    /// Whether this limiter built the client (and so closes it when dropped).
    owns_client: bool,
}

/// Runs the script; cheap to clone into a task.
#[derive(Clone)]
struct Runner {
    client: Client,
    sha: Arc<OnceLock<String>>,
    timeout: Duration,
}

impl RedisLimiter {
    /// A limiter on a client the caller manages (connected or connecting). The client should not
    /// retry commands after a reconnection (`max_command_attempts = 1`): a script that ran but
    /// whose reply was lost would otherwise be charged twice.
    pub fn new(client: Client, config: RedisConfig) -> RedisLimiter {
        RedisLimiter::build(client, config, false)
    }

    /// Connects to `url` (`redis://host:port/db`) and waits up to `config.connect_timeout` for the
    /// first connection. The client reconnects by itself whenever the connection drops.
    pub async fn connect(url: &str, config: RedisConfig) -> Result<RedisLimiter> {
        let client = build_client(url, &config)?;
        let connection = client.connect();
        let deadline = Instant::now() + config.connect_timeout;
        while !client.is_connected() {
            if Instant::now() >= deadline {
                connection.abort();
                return Err(Error::Unavailable(format!(
                    "no connection to Redis within {:?}",
                    config.connect_timeout
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(RedisLimiter::build(client, config, true))
    }

    /// Like [`connect`](Self::connect) but returns at once and connects in the background, so a
    /// replica can start while Redis is away (checks fail as unavailable until it connects).
    /// Must be called inside a tokio runtime.
    pub fn connect_lazy(url: &str, config: RedisConfig) -> Result<RedisLimiter> {
        let client = build_client(url, &config)?;
        drop(client.connect()); // the connection task runs detached until the limiter is dropped
        Ok(RedisLimiter::build(client, config, true))
    }

    /// Waits up to `timeout` for the connection; whether it is up. A replica that starts while
    /// Redis is away keeps running (degraded) and connects when Redis comes.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.inner.runner.client.is_connected() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// The Redis client, for health checks or to share the connection.
    pub fn client(&self) -> &Client {
        &self.inner.runner.client
    }

    fn build(client: Client, config: RedisConfig, owns_client: bool) -> RedisLimiter {
        let runner = Runner {
            client,
            sha: Arc::new(OnceLock::new()),
            timeout: config.command_timeout,
        };
        let instance = RandomState::new().hash_one(std::process::id());
        let inner = Inner {
            runner,
            config,
            instance,
            next_permit: AtomicU64::new(0),
            owns_client,
        };
        RedisLimiter {
            inner: Arc::new(inner),
        }
    }
}

#[async_trait]
impl Limiter for RedisLimiter {
    async fn admit(&self, admission: Admission<'_>) -> Result<Decision> {
        let plan = Plan::new(admission)?;
        let inner = &self.inner;
        let (mut keys, mut charges, mut caps) = (Vec::new(), Vec::new(), Vec::new());
        let mut slots = Vec::new();
        for (i, b) in plan.buckets.iter().enumerate() {
            if let Some(b) = b {
                keys.push(inner.key(&plan, scope_of_bucket(i), suffix(b.kind)));
                charges.extend([int(b.inc), int(b.tau)]);
                slots.push(i);
            }
        }
        let mut permit_slots = Vec::new();
        for (j, cap) in plan.caps.iter().enumerate() {
            if let Some(cap) = cap {
                keys.push(inner.key(&plan, if j == 0 { Scope::Org } else { Scope::Key }, "c"));
                caps.push(int(*cap));
                permit_slots.push(j);
            }
        }
        if keys.is_empty() {
            return Ok(Decision::Admitted(Reservation::new(
                Snapshot::default(),
                admission.tokens,
                None,
            )));
        }
        let permit_id = if permit_slots.is_empty() {
            0
        } else {
            inner.next_permit.fetch_add(1, Ordering::Relaxed)
        };
        let mut args: Vec<Value> = vec![
            "a".into(),
            count(slots.len()),
            count(permit_slots.len()),
            inner.member(permit_id).into(),
            int(micros(inner.config.permit_lease)),
        ];
        args.extend(charges);
        args.extend(caps);
        let reply = inner.runner.run(keys, args).await?;
        if reply.len() != 1 + slots.len() + permit_slots.len() {
            return Err(Error::Unavailable(format!(
                "unexpected script reply {reply:?}"
            )));
        }
        let mut seen = Observed::default();
        for (slot, v) in slots.iter().zip(&reply[1..]) {
            seen.before[*slot] = u64::try_from(*v).unwrap_or(0);
        }
        for (slot, v) in permit_slots.iter().zip(&reply[1 + slots.len()..]) {
            seen.in_flight[*slot] = u64::try_from(*v).unwrap_or(0);
        }
        let verdict = gcra::decide(&plan, &seen);
        if (reply[0] == 1) != verdict.denial.is_none() {
            return Err(Error::Unavailable(format!(
                "script and decision disagree on {reply:?}"
            )));
        }
        Ok(match verdict.denial {
            Some(denial) => Decision::Denied(denial),
            None => {
                let held = plan
                    .held(permit_id)
                    .map(|h| (Arc::clone(&self.inner) as Arc<dyn Settler>, h));
                Decision::Admitted(Reservation::new(verdict.snapshot, admission.tokens, held))
            }
        })
    }
}

#[async_trait]
impl Settler for Inner {
    async fn settle(&self, held: &Held, actual_tokens: u64) -> Result<()> {
        let mut keys = Vec::new();
        let mut deltas = Vec::new();
        for (scope, rate) in held.token_rates.iter().enumerate() {
            if let Some(rate) = rate {
                let delta = gcra::settle_delta_us(*rate, held.reserved, actual_tokens);
                if delta != 0 {
                    keys.push(self.held_key(held, scope, "t"));
                    deltas.push(Value::Integer(delta));
                }
            }
        }
        let (nb, permits) = (keys.len(), self.permit_keys(held));
        if nb == 0 && permits.is_empty() {
            return Ok(());
        }
        let mut args = vec![
            "s".into(),
            count(nb),
            count(permits.len()),
            self.member(held.permit_id).into(),
        ];
        args.extend(deltas);
        keys.extend(permits);
        self.runner.run(keys, args).await.map(drop)
    }

    fn release(&self, held: &Held) {
        let keys = self.permit_keys(held);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // no runtime to send from: the permit's lease ends it instead
        };
        let args = vec![
            "s".into(),
            count(0),
            count(keys.len()),
            self.member(held.permit_id).into(),
        ];
        let runner = self.runner.clone();
        runtime.spawn(async move {
            if let Err(e) = runner.run(keys, args).await {
                tracing::debug!(error = %e, "rate-limit permit not released; its lease will end it");
            }
        });
    }
}

impl Inner {
    /// `{prefix}:{org}:r` for the org's request bucket, `{prefix}:{org}:k:{key}:t` for a key's
    /// token bucket, `…:c` for concurrency sets.
    fn key(&self, plan: &Plan<'_>, scope: Scope, suffix: &str) -> String {
        let key = match scope {
            Scope::Org => None,
            Scope::Key => plan.admission.key.map(|(k, _)| k),
        };
        self.name(plan.admission.org, key, suffix)
    }

    fn held_key(&self, held: &Held, scope: usize, suffix: &str) -> String {
        self.name(
            &held.org,
            if scope == 0 {
                None
            } else {
                held.key.as_deref()
            },
            suffix,
        )
    }

    fn name(&self, org: &str, key: Option<&str>, suffix: &str) -> String {
        let prefix = &self.config.prefix;
        match key {
            None => format!("{prefix}:{{{org}}}:{suffix}"),
            Some(key) => format!("{prefix}:{{{org}}}:k:{key}:{suffix}"),
        }
    }

    fn permit_keys(&self, held: &Held) -> Vec<String> {
        (0..2)
            .filter(|s| held.permits[*s])
            .map(|s| self.held_key(held, s, "c"))
            .collect()
    }

    fn member(&self, permit_id: u64) -> String {
        format!("{:016x}-{permit_id:x}", self.instance)
    }
}

impl Runner {
    /// One round trip: `EVALSHA`, or `EVAL` when Redis lost its script cache (a restart, a
    /// `SCRIPT FLUSH`); `EVAL` caches the script again for the next `EVALSHA`.
    async fn run(&self, keys: Vec<String>, args: Vec<Value>) -> Result<Vec<i64>> {
        if !self.client.is_connected() {
            return Err(Error::Unavailable("not connected to Redis".to_owned()));
        }
        match tokio::time::timeout(self.timeout, self.run_unbounded(keys, args)).await {
            Ok(reply) => reply,
            Err(_) => Err(Error::Unavailable(format!(
                "Redis did not answer within {:?}",
                self.timeout
            ))),
        }
    }

    async fn run_unbounded(&self, keys: Vec<String>, args: Vec<Value>) -> Result<Vec<i64>> {
        let sha = match self.sha.get() {
            Some(sha) => sha.clone(),
            None => {
                let sha: String = self.client.script_load(SCRIPT).await?;
                self.sha.get_or_init(|| sha).clone()
            }
        };
        match self.client.evalsha(sha, keys.clone(), args.clone()).await {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                Ok(self.client.eval(SCRIPT, keys, args).await?)
            }
            reply => Ok(reply?),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.owns_client {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let client = self.runner.client.clone();
            runtime.spawn(async move { client.quit().await });
        }
    }
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("config", &self.config)
            .field("connected", &self.runner.client.is_connected())
            .finish_non_exhaustive()
    }
}

fn build_client(url: &str, config: &RedisConfig) -> Result<Client> {
    let mut redis = Config::from_url(url).map_err(|e| Error::Config(format!("Redis URL: {e}")))?;
    // Keep retrying the first connection too, as after any later drop.
    redis.fail_fast = false;
    Builder::from_config(redis)
        .with_connection_config(|c| {
            c.connection_timeout = config.connect_timeout;
            // A script whose reply was lost may have run: never send it twice.
            c.max_command_attempts = 1;
        })
        .with_performance_config(|p| p.default_command_timeout = config.command_timeout)
        .set_policy(ReconnectPolicy::new_exponential(0, 50, 1_000, 2))
        .build()
        .map_err(|e| Error::Config(format!("Redis client: {e}")))
}

fn scope_of_bucket(slot: usize) -> Scope {
    if slot < 2 { Scope::Org } else { Scope::Key }
}

fn suffix(kind: Kind) -> &'static str {
    match kind {
        Kind::Requests => "r",
        Kind::Tokens => "t",
    }
}

/// Every time value is below 2^52 (see `gcra::MAX_US`), so it fits an `i64`.
fn int(v: u64) -> Value {
    Value::Integer(i64::try_from(v).unwrap_or(i64::MAX))
}

fn count(n: usize) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}
