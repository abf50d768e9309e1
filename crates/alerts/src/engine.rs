//! [`Alerts`]: the organization-scoped API (rules, channels, digest schedule, history, test
//! sends) and the evaluator that fires rules and sends digests.
//!
//! Each (rule, period) fires once across restarts and replicas: the evaluator records the
//! firing first, under the store's unique `(rule_id, period_key)`, and sends only if its insert
//! won. Then it delivers to every channel of the rule, retrying with exponential backoff, and
//! records every attempt.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use cognitude_catalog::Money;
use cognitude_store::{
    AlertChannelRow, AlertDeliveryRow, AlertFiringRow, AlertRuleRow, CostGroup, DigestScheduleRow,
    Store, keys,
};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::channels::{self, ChannelConfig, ChannelKind};
use crate::clock::Clock;
use crate::config::AlertsConfig;
use crate::deliver::{Envelope, Notifier};
use crate::digest::{self, DigestKind, DigestRequest, RecommendationSource};
use crate::error::{Error, Result, invalid};
use crate::guard::UrlPolicy;
use crate::period::{self, Period, PeriodWindow};
use crate::render::{self, AlertEvent, Notification};
use crate::rules::{self, Condition, Figures};

const MAX_RULES_PER_ORG: usize = 100;
const MAX_CHANNELS_PER_ORG: usize = 50;
const MAX_CHANNELS_PER_RULE: usize = 20;

/// A rule as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub enabled: bool,
    /// IANA zone whose days, weeks and months the rule's periods follow.
    pub time_zone: String,
    /// Channels to notify; empty means every channel of the organization.
    pub channel_ids: Vec<String>,
    pub condition: Condition,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A new rule, as the API takes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleInput {
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "utc")]
    pub time_zone: String,
    #[serde(default)]
    pub channel_ids: Vec<String>,
    pub condition: Condition,
}

/// Changes to a rule; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulePatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub time_zone: Option<String>,
    #[serde(default)]
    pub channel_ids: Option<Vec<String>>,
    #[serde(default)]
    pub condition: Option<Condition>,
}

fn yes() -> bool {
    true
}
fn utc() -> String {
    "UTC".to_owned()
}

/// A channel. Serializes without secrets (the API's view); the configuration inside has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub config: ChannelConfig,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Serialize for Channel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        json!({
            "id": self.id,
            "org_id": self.org_id,
            "name": self.name,
            "kind": self.config.kind(),
            "config": self.config.public_view(),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
        .serialize(s)
    }
}

/// A new channel, as the API takes it: `config` depends on `kind` (see the crate docs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelInput {
    pub name: String,
    pub kind: ChannelKind,
    pub config: Value,
}

/// Changes to a channel. In `config`, secrets left out keep their stored values.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelPatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub config: Option<Value>,
}

/// When an organization's digests go out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DigestSchedule {
    pub time_zone: String,
    /// Local hour, 0–23.
    pub send_hour: u8,
    pub daily: bool,
    /// ISO weekday, 1 (Monday) – 7 (Sunday); `None`: no weekly digest.
    pub weekly_weekday: Option<u8>,
    /// Empty: every channel of the organization.
    pub channel_ids: Vec<String>,
    pub last_daily: Option<String>,
    pub last_weekly: Option<String>,
}

/// A digest schedule as the API takes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestScheduleInput {
    #[serde(default = "utc")]
    pub time_zone: String,
    #[serde(default = "eight")]
    pub send_hour: u8,
    #[serde(default = "yes")]
    pub daily: bool,
    /// Monday when absent; `null` turns the weekly digest off.
    #[serde(default = "monday")]
    pub weekly_weekday: Option<u8>,
    #[serde(default)]
    pub channel_ids: Vec<String>,
}

fn eight() -> u8 {
    8
}
fn monday() -> Option<u8> {
    Some(1)
}

/// A firing, digest or test message and its delivery attempts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEntry {
    pub id: String,
    /// `alert`, `superseded` (a lower budget share crossed with a higher one), `digest`, `test`.
    pub kind: String,
    pub rule_id: String,
    pub period_key: String,
    pub fired_at: i64,
    pub subject: Option<String>,
    pub data: Value,
    pub deliveries: Vec<DeliveryAttempt>,
}

/// One attempt to deliver a message to a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryAttempt {
    pub channel_id: String,
    pub attempt: u32,
    /// `ok` or `failed`.
    pub status: String,
    pub error: Option<String>,
    pub at: i64,
}

/// A page of the history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryPage {
    pub entries: Vec<HistoryEntry>,
    /// Pass back as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// The result of `POST /alerts/channels/{id}/test`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestOutcome {
    pub delivered: bool,
    pub firing_id: String,
    pub attempts: Vec<DeliveryAttempt>,
}

/// What one evaluation pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    pub rules_evaluated: usize,
    /// `(rule id, period key)` of each firing this pass recorded (and so sent).
    pub fired: Vec<(String, String)>,
    /// `(org id, period key)` of each digest this pass sent.
    pub digests: Vec<(String, String)>,
    pub deliveries_ok: usize,
    pub deliveries_failed: usize,
    /// Rules or schedules that could not be evaluated (the others were).
    pub errors: Vec<String>,
}

/// The alerts service: cheap to clone, shared by the API and the evaluator.
#[derive(Debug, Clone)]
pub struct Alerts {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    clock: Arc<dyn Clock>,
    config: AlertsConfig,
    notifier: Notifier,
    recommendations: Option<Arc<dyn RecommendationSource>>,
}

/// A message to deliver to some of an organization's channels.
struct Job {
    org_id: String,
    firing_id: String,
    channel_ids: Vec<String>,
    notification: Arc<Notification>,
}

/// Runs the evaluator every `config.evaluate_every` until `shutdown` completes.
pub async fn run_alerts(
    store: Store,
    clock: Arc<dyn Clock>,
    config: AlertsConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    Alerts::new(store, clock, config)?.run(shutdown).await;
    Ok(())
}

impl Alerts {
    /// Validates `config` and builds the service (no I/O).
    pub fn new(store: Store, clock: Arc<dyn Clock>, config: AlertsConfig) -> Result<Alerts> {
        config.validate()?;
        let policy = Arc::new(UrlPolicy::new(&config.allow_hosts));
        let notifier = Notifier::new(&config, policy)?;
        Ok(Alerts {
            inner: Arc::new(Inner {
                store,
                clock,
                config,
                notifier,
                recommendations: None,
            }),
        })
    }

    /// Digests list the top recommendations from `source`.
    pub fn with_recommendations(self, source: Arc<dyn RecommendationSource>) -> Alerts {
        let inner = &self.inner;
        Alerts {
            inner: Arc::new(Inner {
                store: inner.store.clone(),
                clock: inner.clock.clone(),
                config: inner.config.clone(),
                notifier: inner.notifier.clone(),
                recommendations: Some(source),
            }),
        }
    }

    pub fn config(&self) -> &AlertsConfig {
        &self.inner.config
    }

    fn store(&self) -> &Store {
        &self.inner.store
    }

    fn now(&self) -> i64 {
        self.inner.clock.now_micros()
    }

    /// Runs [`Alerts::tick`] every `evaluate_every` until `shutdown` completes. A pass in
    /// progress is abandoned at shutdown.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let mut interval = tokio::time::interval(self.inner.config.evaluate_every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = interval.tick() => {
                    tokio::select! {
                        () = &mut shutdown => break,
                        r = self.tick() => match r {
                            Ok(report) => {
                                for e in &report.errors {
                                    tracing::warn!(error = %e, "alert evaluation");
                                }
                                if !report.fired.is_empty() || !report.digests.is_empty() {
                                    tracing::info!(
                                        fired = report.fired.len(),
                                        digests = report.digests.len(),
                                        delivered = report.deliveries_ok,
                                        failed = report.deliveries_failed,
                                        "alerts sent"
                                    );
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "alert evaluation failed"),
                        },
                    }
                }
            }
        }
    }

    /// One evaluation pass at the clock's time: every enabled rule, every digest schedule, and
    /// the deliveries of whatever fired (awaited).
    pub async fn tick(&self) -> Result<TickReport> {
        let now = self.now();
        let mut report = TickReport::default();
        let mut jobs = Vec::new();
        for row in self.store().enabled_alert_rules().await? {
            report.rules_evaluated += 1;
            match self.evaluate_rule(&row, now).await {
                Ok(Some((key, job))) => {
                    report.fired.push((row.id.clone(), key));
                    jobs.push(job);
                }
                Ok(None) => {}
                Err(e) => report.errors.push(format!("rule {}: {e}", row.id)),
            }
        }
        for sched in self.store().digest_schedules().await? {
            match self.due_digests(&sched, now).await {
                Ok(sent) => {
                    for (key, job) in sent {
                        report.digests.push((sched.org_id.clone(), key));
                        jobs.push(job);
                    }
                }
                Err(e) => report
                    .errors
                    .push(format!("digest of {}: {e}", sched.org_id)),
            }
        }
        let mut set = JoinSet::new();
        for job in jobs {
            let channels = match self.channels_for(&job.org_id, &job.channel_ids).await {
                Ok(c) => c,
                Err(e) => {
                    report
                        .errors
                        .push(format!("channels of {}: {e}", job.org_id));
                    continue;
                }
            };
            for channel in channels {
                let this = self.clone();
                let n = job.notification.clone();
                let firing_id = job.firing_id.clone();
                let attempts = self.inner.config.delivery_attempts;
                set.spawn(async move { this.deliver(&channel, &firing_id, &n, attempts).await.0 });
            }
        }
        while let Some(done) = set.join_next().await {
            match done {
                Ok(true) => report.deliveries_ok += 1,
                Ok(false) => report.deliveries_failed += 1,
                Err(e) => report.errors.push(format!("delivery task: {e}")),
            }
        }
        Ok(report)
    }

    async fn org_name(&self, org_id: &str) -> Result<Option<String>> {
        Ok(self.store().org(org_id).await?.map(|o| o.name))
    }

    /// Evaluates one rule; on a new firing, records it and returns what to deliver.
    async fn evaluate_rule(&self, row: &AlertRuleRow, now: i64) -> Result<Option<(String, Job)>> {
        let rule = rule_from_row(row)?;
        let tz = period::time_zone(&rule.time_zone)?;
        let plan = rules::plan(&rule.condition, now, &tz)?;
        let shares = matches!(
            rule.condition,
            Condition::Spend {
                budget_usd: Some(_),
                ..
            }
        );
        // Budget-share keys depend on the figures; every other key is known before any sum.
        if !shares
            && self
                .store()
                .alert_firing(&rule.id, &plan.key)
                .await?
                .is_some()
        {
            return Ok(None);
        }
        let store = self.store();
        let summary = store
            .usage_summary(&rule.org_id, plan.current.from, plan.current.to)
            .await?;
        let baseline_spend = match plan.baseline {
            Some(b) => store.usage_summary(&rule.org_id, b.from, b.to).await?.cost,
            None => Money::ZERO,
        };
        let figures = Figures {
            spend: summary.cost,
            baseline_spend,
            requests: summary.requests,
            upstream_errors: summary.upstream_errors,
        };
        let Some(trigger) = rules::evaluate(&rule.condition, &plan, &figures, now) else {
            return Ok(None);
        };
        if store.alert_firing(&rule.id, &trigger.key).await?.is_some() {
            return Ok(None);
        }
        let Some(org_name) = self.org_name(&rule.org_id).await? else {
            return Ok(None);
        };
        let top_n = self.inner.config.top_n;
        let top_models =
            digest::top_contributors(store, &rule.org_id, plan.current, CostGroup::Model, top_n)
                .await?;
        let top_keys =
            digest::top_contributors(store, &rule.org_id, plan.current, CostGroup::ApiKey, top_n)
                .await?;
        let event = AlertEvent {
            org_id: rule.org_id.clone(),
            org_name,
            rule_id: rule.id.clone(),
            rule_name: rule.name.clone(),
            condition: rule.condition.clone(),
            period_key: trigger.key.clone(),
            period_label: plan.label.clone(),
            time_zone: rule.time_zone.clone(),
            window_from: period::local_rfc3339(plan.current.from, &tz),
            window_to: period::local_rfc3339(plan.current.to, &tz),
            breach: trigger.breach.clone(),
            top_models,
            top_keys,
            fired_at: now,
        };
        let notification = render::alert(&event);
        let firing = AlertFiringRow {
            id: keys::new_id("fir")?,
            org_id: rule.org_id.clone(),
            rule_id: rule.id.clone(),
            period_key: trigger.key.clone(),
            kind: "alert".into(),
            fired_at: now,
            payload: json!({"subject": notification.subject, "data": notification.data})
                .to_string(),
        };
        if !store.insert_alert_firing(&firing).await? {
            // Another evaluator recorded it first, and sends it.
            return Ok(None);
        }
        for key in &trigger.superseded_keys {
            let row = AlertFiringRow {
                id: keys::new_id("fir")?,
                org_id: rule.org_id.clone(),
                rule_id: rule.id.clone(),
                period_key: key.clone(),
                kind: "superseded".into(),
                fired_at: now,
                payload: json!({"superseded_by": trigger.key}).to_string(),
            };
            store.insert_alert_firing(&row).await?;
        }
        Ok(Some((
            trigger.key,
            Job {
                org_id: rule.org_id,
                firing_id: firing.id,
                channel_ids: rule.channel_ids,
                notification: Arc::new(notification),
            },
        )))
    }

    /// The digests of one schedule that are due at `now` and not yet sent; each is recorded
    /// before it is returned for delivery.
    async fn due_digests(&self, sched: &DigestScheduleRow, now: i64) -> Result<Vec<(String, Job)>> {
        let tz = period::time_zone(&sched.time_zone)?;
        let (hour, weekday) = period::local_hour_and_weekday(now, &tz)?;
        if i32::from(hour) < sched.send_hour {
            return Ok(Vec::new());
        }
        let mut due: Vec<(DigestKind, PeriodWindow, PeriodWindow)> = Vec::new();
        if sched.daily {
            let today = period::period_window(Period::Day, now, &tz)?;
            let yesterday = period::previous_period(Period::Day, &today, &tz)?;
            let before = period::previous_period(Period::Day, &yesterday, &tz)?;
            due.push((DigestKind::Daily, yesterday, before));
        }
        if sched.weekly_weekday == Some(i32::from(weekday)) {
            let (week, before) = period::seven_days_before(now, &tz)?;
            due.push((DigestKind::Weekly, week, before));
        }
        let mut out = Vec::new();
        for (kind, current, previous) in due {
            let rule_id = digest_rule_id(kind, &sched.org_id);
            if self
                .store()
                .alert_firing(&rule_id, &current.key)
                .await?
                .is_some()
            {
                continue;
            }
            let Some(org_name) = self.org_name(&sched.org_id).await? else {
                continue;
            };
            let recommendations = match &self.inner.recommendations {
                Some(src) => src.top(&sched.org_id, 3).await,
                None => Vec::new(),
            };
            let d = digest::build(
                self.store(),
                DigestRequest {
                    org_id: &sched.org_id,
                    org_name: &org_name,
                    kind,
                    current: &current,
                    previous: &previous,
                    time_zone: &sched.time_zone,
                    tz: &tz,
                    top_n: self.inner.config.top_n,
                    recommendations,
                },
            )
            .await?;
            let notification = render::digest(&d);
            let firing = AlertFiringRow {
                id: keys::new_id("fir")?,
                org_id: sched.org_id.clone(),
                rule_id,
                period_key: current.key.clone(),
                kind: "digest".into(),
                fired_at: now,
                payload: json!({"subject": notification.subject, "data": notification.data})
                    .to_string(),
            };
            if !self.store().insert_alert_firing(&firing).await? {
                continue;
            }
            let (daily, weekly) = match kind {
                DigestKind::Daily => (Some(current.key.as_str()), None),
                DigestKind::Weekly => (None, Some(current.key.as_str())),
            };
            self.store()
                .mark_digest_sent(&sched.org_id, daily, weekly)
                .await?;
            out.push((
                current.key.clone(),
                Job {
                    org_id: sched.org_id.clone(),
                    firing_id: firing.id,
                    channel_ids: parse_ids(&sched.channel_ids)?,
                    notification: Arc::new(notification),
                },
            ));
        }
        Ok(out)
    }

    /// The organization's channels with these ids (all of them for an empty list); ids that no
    /// longer exist are skipped.
    async fn channels_for(&self, org_id: &str, ids: &[String]) -> Result<Vec<Channel>> {
        let all = self.store().alert_channels(org_id).await?;
        let wanted: HashSet<&String> = ids.iter().collect();
        all.into_iter()
            .filter(|c| wanted.is_empty() || wanted.contains(&c.id))
            .map(channel_from_row)
            .collect()
    }

    /// Delivers `n` to `channel`, up to `attempts` times with backoff, recording every attempt.
    /// Returns whether it was delivered, and the attempts.
    async fn deliver(
        &self,
        channel: &Channel,
        firing_id: &str,
        n: &Notification,
        attempts: u32,
    ) -> (bool, Vec<DeliveryAttempt>) {
        let mut record = Vec::new();
        for attempt in 1..=attempts.max(1) {
            let result = self
                .inner
                .notifier
                .send(
                    &channel.config,
                    n,
                    Envelope {
                        delivery_id: firing_id,
                        org_id: &channel.org_id,
                        timestamp: self.now().div_euclid(1_000_000),
                    },
                )
                .await;
            let row = AlertDeliveryRow {
                id: keys::new_id("dlv").unwrap_or_else(|_| format!("dlv_{firing_id}_{attempt}")),
                org_id: channel.org_id.clone(),
                firing_id: firing_id.to_owned(),
                channel_id: channel.id.clone(),
                attempt: i32::try_from(attempt).unwrap_or(i32::MAX),
                status: if result.is_ok() { "ok" } else { "failed" }.to_owned(),
                error: result.as_ref().err().map(|e| e.message.clone()),
                at: self.now(),
            };
            if let Err(e) = self.store().insert_alert_delivery(&row).await {
                tracing::warn!(error = %e, firing = firing_id, "could not record a delivery attempt");
            }
            record.push(attempt_view(row));
            match result {
                Ok(()) => return (true, record),
                Err(e) => {
                    tracing::warn!(
                        channel = %channel.id,
                        firing = firing_id,
                        attempt,
                        error = %e.message,
                        "alert delivery failed"
                    );
                    if !e.retryable || attempt >= attempts {
                        return (false, record);
                    }
                    tokio::time::sleep(self.inner.config.backoff(attempt)).await;
                }
            }
        }
        (false, record)
    }

    // ---- the organization's API ----------------------------------------------------------

    async fn require_org(&self, org_id: &str) -> Result<String> {
        self.org_name(org_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("organization '{org_id}'")))
    }

    pub async fn list_rules(&self, org_id: &str) -> Result<Vec<Rule>> {
        self.store()
            .alert_rules(org_id)
            .await?
            .iter()
            .map(rule_from_row)
            .collect()
    }

    pub async fn rule(&self, org_id: &str, id: &str) -> Result<Rule> {
        match self.store().alert_rule(org_id, id).await? {
            Some(row) => rule_from_row(&row),
            None => Err(Error::NotFound(format!("rule '{id}'"))),
        }
    }

    pub async fn create_rule(&self, org_id: &str, input: RuleInput) -> Result<Rule> {
        self.require_org(org_id).await?;
        if self.store().alert_rules(org_id).await?.len() >= MAX_RULES_PER_ORG {
            return Err(invalid(
                "rules",
                format!("an organization has at most {MAX_RULES_PER_ORG} rules"),
            ));
        }
        let now = self.now();
        let rule = Rule {
            id: keys::new_id("rule")?,
            org_id: org_id.to_owned(),
            name: check_name(&input.name)?,
            enabled: input.enabled,
            time_zone: check_zone(&input.time_zone)?,
            channel_ids: self.check_channel_ids(org_id, input.channel_ids).await?,
            condition: input.condition.validated()?,
            created_at: now,
            updated_at: now,
        };
        self.store().insert_alert_rule(&rule_to_row(&rule)).await?;
        Ok(rule)
    }

    pub async fn update_rule(&self, org_id: &str, id: &str, patch: RulePatch) -> Result<Rule> {
        let mut rule = self.rule(org_id, id).await?;
        if let Some(n) = patch.name {
            rule.name = check_name(&n)?;
        }
        if let Some(e) = patch.enabled {
            rule.enabled = e;
        }
        if let Some(z) = patch.time_zone {
            rule.time_zone = check_zone(&z)?;
        }
        if let Some(ids) = patch.channel_ids {
            rule.channel_ids = self.check_channel_ids(org_id, ids).await?;
        }
        if let Some(c) = patch.condition {
            rule.condition = c.validated()?;
        }
        rule.updated_at = self.now();
        if !self.store().update_alert_rule(&rule_to_row(&rule)).await? {
            return Err(Error::NotFound(format!("rule '{id}'")));
        }
        Ok(rule)
    }

    /// Deletes a rule. Its firings stay in the history.
    pub async fn delete_rule(&self, org_id: &str, id: &str) -> Result<()> {
        if self.store().delete_alert_rule(org_id, id).await? {
            Ok(())
        } else {
            Err(Error::NotFound(format!("rule '{id}'")))
        }
    }

    pub async fn list_channels(&self, org_id: &str) -> Result<Vec<Channel>> {
        self.store()
            .alert_channels(org_id)
            .await?
            .into_iter()
            .map(channel_from_row)
            .collect()
    }

    pub async fn channel(&self, org_id: &str, id: &str) -> Result<Channel> {
        match self.store().alert_channel(org_id, id).await? {
            Some(row) => channel_from_row(row),
            None => Err(Error::NotFound(format!("channel '{id}'"))),
        }
    }

    /// Creates a channel after checking its URL or SMTP host, DNS included.
    pub async fn create_channel(&self, org_id: &str, input: ChannelInput) -> Result<Channel> {
        self.require_org(org_id).await?;
        if self.store().alert_channels(org_id).await?.len() >= MAX_CHANNELS_PER_ORG {
            return Err(invalid(
                "channels",
                format!("an organization has at most {MAX_CHANNELS_PER_ORG} channels"),
            ));
        }
        let name = check_name(&input.name)?;
        let policy = self.inner.notifier.policy();
        let config = channels::from_input(input.kind, &input.config, None, policy)?;
        self.check_reachable(&config).await?;
        let now = self.now();
        let channel = Channel {
            id: keys::new_id("chan")?,
            org_id: org_id.to_owned(),
            name,
            config,
            created_at: now,
            updated_at: now,
        };
        self.store()
            .insert_alert_channel(&AlertChannelRow {
                id: channel.id.clone(),
                org_id: channel.org_id.clone(),
                kind: channel.config.kind().as_str().to_owned(),
                name: channel.name.clone(),
                config: channel.config.to_stored(),
                created_at: now,
                updated_at: now,
            })
            .await?;
        Ok(channel)
    }

    /// Updates a channel's name and/or configuration (its kind stays).
    pub async fn update_channel(
        &self,
        org_id: &str,
        id: &str,
        patch: ChannelPatch,
    ) -> Result<Channel> {
        let mut channel = self.channel(org_id, id).await?;
        if let Some(n) = patch.name {
            channel.name = check_name(&n)?;
        }
        if let Some(c) = patch.config {
            let policy = self.inner.notifier.policy();
            let config =
                channels::from_input(channel.config.kind(), &c, Some(&channel.config), policy)?;
            self.check_reachable(&config).await?;
            channel.config = config;
        }
        channel.updated_at = self.now();
        let stored = channel.config.to_stored();
        if !self
            .store()
            .update_alert_channel(org_id, id, &channel.name, &stored, channel.updated_at)
            .await?
        {
            return Err(Error::NotFound(format!("channel '{id}'")));
        }
        Ok(channel)
    }

    /// Deletes a channel; rules that named it skip it from then on.
    pub async fn delete_channel(&self, org_id: &str, id: &str) -> Result<()> {
        if self.store().delete_alert_channel(org_id, id).await? {
            Ok(())
        } else {
            Err(Error::NotFound(format!("channel '{id}'")))
        }
    }

    /// Sends a test message to a channel now (one attempt), recorded in the history.
    pub async fn test_channel(&self, org_id: &str, id: &str) -> Result<TestOutcome> {
        let org_name = self.require_org(org_id).await?;
        let channel = self.channel(org_id, id).await?;
        let n = render::test_message(&org_name, &channel.name);
        let firing_id = keys::new_id("fir")?;
        let row = AlertFiringRow {
            id: firing_id.clone(),
            org_id: org_id.to_owned(),
            rule_id: format!("test:{id}"),
            period_key: firing_id.clone(),
            kind: "test".into(),
            fired_at: self.now(),
            payload: json!({"subject": n.subject, "data": n.data}).to_string(),
        };
        self.store().insert_alert_firing(&row).await?;
        let (delivered, attempts) = self.deliver(&channel, &firing_id, &n, 1).await;
        Ok(TestOutcome {
            delivered,
            firing_id,
            attempts,
        })
    }

    /// A page of the organization's firings, digests and tests, newest first, with their
    /// attempts. `cursor` is the `next_cursor` of the previous page.
    pub async fn history(
        &self,
        org_id: &str,
        cursor: Option<&str>,
        limit: i64,
    ) -> Result<HistoryPage> {
        let after = match cursor {
            Some(c) => Some(parse_cursor(c)?),
            None => None,
        };
        let limit = limit.clamp(1, 200);
        let firings = self
            .store()
            .alert_firings(
                org_id,
                after.as_ref().map(|(t, id)| (*t, id.as_str())),
                limit,
            )
            .await?;
        let next_cursor = if firings.len() as i64 == limit {
            firings.last().map(|f| format!("{}.{}", f.fired_at, f.id))
        } else {
            None
        };
        let ids: Vec<String> = firings.iter().map(|f| f.id.clone()).collect();
        let deliveries = self.store().alert_deliveries(&ids).await?;
        let entries = firings
            .into_iter()
            .map(|f| {
                let payload: Value = serde_json::from_str(&f.payload).unwrap_or(Value::Null);
                let subject = payload
                    .get("subject")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let data = match payload.get("data") {
                    Some(d) => d.clone(),
                    None => payload.clone(),
                };
                HistoryEntry {
                    deliveries: deliveries
                        .iter()
                        .filter(|d| d.firing_id == f.id)
                        .cloned()
                        .map(attempt_view)
                        .collect(),
                    id: f.id,
                    kind: f.kind,
                    rule_id: f.rule_id,
                    period_key: f.period_key,
                    fired_at: f.fired_at,
                    subject,
                    data,
                }
            })
            .collect();
        Ok(HistoryPage {
            entries,
            next_cursor,
        })
    }

    pub async fn digest_schedule(&self, org_id: &str) -> Result<Option<DigestSchedule>> {
        self.store()
            .digest_schedule(org_id)
            .await?
            .map(schedule_from_row)
            .transpose()
    }

    pub async fn set_digest_schedule(
        &self,
        org_id: &str,
        input: DigestScheduleInput,
    ) -> Result<DigestSchedule> {
        self.require_org(org_id).await?;
        let time_zone = check_zone(&input.time_zone)?;
        if input.send_hour > 23 {
            return Err(invalid("send_hour", "must be 0 to 23"));
        }
        if let Some(w) = input.weekly_weekday
            && !(1..=7).contains(&w)
        {
            return Err(invalid(
                "weekly_weekday",
                "must be 1 (Monday) to 7 (Sunday), or null",
            ));
        }
        let channel_ids = self.check_channel_ids(org_id, input.channel_ids).await?;
        let row = DigestScheduleRow {
            org_id: org_id.to_owned(),
            time_zone,
            send_hour: i32::from(input.send_hour),
            daily: input.daily,
            weekly_weekday: input.weekly_weekday.map(i32::from),
            channel_ids: serde_json::to_string(&channel_ids).unwrap_or_else(|_| "[]".into()),
            last_daily: None,
            last_weekly: None,
            updated_at: self.now(),
        };
        self.store().upsert_digest_schedule(&row).await?;
        match self.digest_schedule(org_id).await? {
            Some(s) => Ok(s),
            None => Err(Error::NotFound(format!("digest schedule of '{org_id}'"))),
        }
    }

    pub async fn delete_digest_schedule(&self, org_id: &str) -> Result<()> {
        if self.store().delete_digest_schedule(org_id).await? {
            Ok(())
        } else {
            Err(Error::NotFound("digest schedule".into()))
        }
    }

    async fn check_channel_ids(&self, org_id: &str, ids: Vec<String>) -> Result<Vec<String>> {
        if ids.len() > MAX_CHANNELS_PER_RULE {
            return Err(invalid(
                "channel_ids",
                format!("at most {MAX_CHANNELS_PER_RULE} channels"),
            ));
        }
        let existing: HashSet<String> = self
            .store()
            .alert_channels(org_id)
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect();
        let mut out: Vec<String> = Vec::new();
        for id in ids {
            if !existing.contains(&id) {
                return Err(invalid(
                    "channel_ids",
                    format!("'{id}' is not a channel of this organization"),
                ));
            }
            if !out.contains(&id) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Resolves the channel's host and checks every address (the URL rules with DNS).
    async fn check_reachable(&self, config: &ChannelConfig) -> Result<()> {
        let policy = self.inner.notifier.policy();
        match config {
            ChannelConfig::Slack(c) => {
                let t = policy.check_url("config.webhook_url", &c.webhook_url)?;
                policy
                    .resolve("config.webhook_url", &t.host, t.port)
                    .await?;
            }
            ChannelConfig::Webhook(c) => {
                let t = policy.check_url("config.url", &c.url)?;
                policy.resolve("config.url", &t.host, t.port).await?;
            }
            ChannelConfig::Email(c) => {
                if let Some(s) = &c.smtp {
                    policy
                        .resolve("config.smtp.host", &s.host, s.port_or_default())
                        .await?;
                }
            }
        }
        Ok(())
    }
}

/// `<fired_at>.<id>`, as made by [`Alerts::history`].
fn parse_cursor(c: &str) -> Result<(i64, String)> {
    let bad = || invalid("cursor", "is not a cursor returned by this endpoint");
    let (ts, id) = c.split_once('.').ok_or_else(bad)?;
    let ts: i64 = ts.parse().map_err(|_| bad())?;
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(bad());
    }
    Ok((ts, id.to_owned()))
}

fn digest_rule_id(kind: DigestKind, org_id: &str) -> String {
    match kind {
        DigestKind::Daily => format!("digest:daily:{org_id}"),
        DigestKind::Weekly => format!("digest:weekly:{org_id}"),
    }
}

fn check_name(name: &str) -> Result<String> {
    let t = name.trim();
    if t.is_empty() || t.chars().count() > 200 || t.chars().any(char::is_control) {
        return Err(invalid(
            "name",
            "must be 1 to 200 characters without control characters",
        ));
    }
    Ok(t.to_owned())
}

fn check_zone(zone: &str) -> Result<String> {
    period::time_zone(zone)?;
    Ok(zone.trim().to_owned())
}

fn parse_ids(json: &str) -> Result<Vec<String>> {
    serde_json::from_str(json).map_err(|e| invalid("channel_ids", format!("stored value: {e}")))
}

fn rule_from_row(row: &AlertRuleRow) -> Result<Rule> {
    let condition: Condition = serde_json::from_str(&row.params)
        .map_err(|e| invalid("condition", format!("stored value: {e}")))?;
    Ok(Rule {
        id: row.id.clone(),
        org_id: row.org_id.clone(),
        name: row.name.clone(),
        enabled: row.enabled,
        time_zone: row.time_zone.clone(),
        channel_ids: parse_ids(&row.channel_ids)?,
        condition,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn rule_to_row(rule: &Rule) -> AlertRuleRow {
    AlertRuleRow {
        id: rule.id.clone(),
        org_id: rule.org_id.clone(),
        name: rule.name.clone(),
        kind: rule.condition.kind().to_owned(),
        params: serde_json::to_string(&rule.condition).unwrap_or_default(),
        channel_ids: serde_json::to_string(&rule.channel_ids).unwrap_or_else(|_| "[]".into()),
        enabled: rule.enabled,
        time_zone: rule.time_zone.clone(),
        created_at: rule.created_at,
        updated_at: rule.updated_at,
    }
}

fn channel_from_row(row: AlertChannelRow) -> Result<Channel> {
    Ok(Channel {
        config: ChannelConfig::from_stored(&row.kind, &row.config)?,
        id: row.id,
        org_id: row.org_id,
        name: row.name,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn schedule_from_row(row: DigestScheduleRow) -> Result<DigestSchedule> {
    Ok(DigestSchedule {
        time_zone: row.time_zone,
        send_hour: u8::try_from(row.send_hour).unwrap_or(0),
        daily: row.daily,
        weekly_weekday: row.weekly_weekday.and_then(|w| u8::try_from(w).ok()),
        channel_ids: parse_ids(&row.channel_ids)?,
        last_daily: row.last_daily,
        last_weekly: row.last_weekly,
    })
}

fn attempt_view(row: AlertDeliveryRow) -> DeliveryAttempt {
    DeliveryAttempt {
        channel_id: row.channel_id,
        attempt: u32::try_from(row.attempt).unwrap_or(0),
        status: row.status,
        error: row.error,
        at: row.at,
    }
}
