//! Cost alerts and digests over the usage ledger, delivered to Slack, email and signed webhooks.
//!
//! - **Rules** per organization ([`Condition`]): spend over a day, ISO week or calendar month
//!   (in the rule's time zone) crossing an amount or shares of a budget; a month-end forecast
//!   over budget; a spike of the current hour's or day's spend over k × its trailing average;
//!   an upstream error rate over a window. Evaluation is pure: [`plan`] names the ledger windows
//!   a condition needs at a moment, the store sums them in SQL into [`Figures`], and
//!   [`evaluate`] decides. Time comes from a [`Clock`], so tests move it.
//! - **Once per period**: a firing is recorded under the store's unique `(rule, period)` before
//!   anything is sent; the evaluator whose insert wins sends, so restarts and replicas never
//!   send twice. Delivery retries with exponential backoff; every attempt is recorded.
//! - **Channels**: a Slack incoming webhook (Block Kit), email over SMTP (STARTTLS or implicit
//!   TLS, authentication, plain text and HTML parts), and a JSON webhook signed with
//!   HMAC-SHA256 (see [`signature`] for the scheme receivers verify). Tenant URLs must be
//!   `https` to public addresses (every address the host resolves to, checked again at each
//!   delivery) unless the operator allow-lists the host. Certificates are checked against the
//!   public web PKI roots plus any [`RootCertificates`] the operator adds for a private
//!   authority. Secrets are write-only.
//! - **Digests**: daily (at a local hour) and weekly (on a weekday): spend and its change, requests,
//!   tokens, cache hit rate and savings, routing savings, top models and keys, recommendations.
//!
//! [`Alerts`] is the service the server holds: the organization-scoped API behind
//! `/alerts/*` and [`Alerts::tick`], one evaluation pass, which [`run_alerts`] repeats.
//!
//! ```
//! use cognitude_alerts::{Condition, Figures, evaluate, plan, time_zone};
//!
//! let rule: Condition = serde_json::from_str(
//!     r#"{"kind": "spend", "period": "month", "budget_usd": "1000", "percents": [50, 80, 100]}"#,
//! ).unwrap();
//! let rule = rule.validated().unwrap();
//! // 2026-11-20 12:00 UTC, read in the organization's zone.
//! let now = 1_795_176_000_000_000;
//! let window = plan(&rule, now, &time_zone("Europe/Paris").unwrap()).unwrap();
//! let spent = Figures { spend: "812.5".parse().unwrap(), ..Figures::default() };
//! let fired = evaluate(&rule, &window, &spent, now).unwrap();
//! assert_eq!(fired.key, "month:2026-11@80%");
//! assert_eq!(fired.superseded_keys, ["month:2026-11@50%"]);
//! ```

mod channels;
mod clock;
mod config;
mod deliver;
mod digest;
mod engine;
mod error;
mod guard;
mod period;
mod render;
mod roots;
mod rules;
pub mod signature;

pub use channels::{
    ChannelConfig, ChannelKind, EmailConfig, SlackConfig, SmtpServer, SmtpTls, WebhookConfig,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::AlertsConfig;
pub use digest::{Digest, DigestKind, Recommendation, RecommendationSource};
pub use engine::{
    Alerts, Channel, ChannelInput, ChannelPatch, DeliveryAttempt, DigestSchedule,
    DigestScheduleInput, HistoryEntry, HistoryPage, Rule, RuleInput, RulePatch, TestOutcome,
    TickReport, run_alerts,
};
pub use error::{Error, Result};
pub use guard::{UrlPolicy, is_public};
pub use jiff::tz::TimeZone;
pub use period::{Period, PeriodWindow, Window, period_window, previous_period, time_zone};
pub use render::{AlertEvent, Contributor, Notification};
pub use roots::RootCertificates;
pub use rules::{Breach, Condition, Figures, Plan, SpikeWindow, Trigger, evaluate, plan};
