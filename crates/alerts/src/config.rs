//! The operator's settings for alerts (the server's `[alerts]` section maps onto these).

use std::time::Duration;

use crate::channels::{SmtpServer, SmtpTls};
use crate::error::{Error, Result};
use crate::roots::RootCertificates;

/// How alerts are evaluated and delivered.
#[derive(Debug, Clone)]
pub struct AlertsConfig {
    /// How often rules and digest schedules are evaluated.
    pub evaluate_every: Duration,
    /// Hosts (names or IP addresses) tenants may point webhooks and SMTP at even though they are
    /// not public or not TLS. Empty in production unless a relay is internal.
    pub allow_hosts: Vec<String>,
    /// The operator's SMTP relay, used by email channels that name no server of their own.
    /// Trusted: it is not held to the tenant URL rules.
    pub smtp_relay: Option<SmtpServer>,
    /// The sender of alert mail when a channel names none (`Cognitude <alerts@example.com>`).
    pub email_from: String,
    /// Roots trusted besides the public ones when delivering over TLS (SMTP, Slack, webhooks):
    /// for a relay or receiver whose certificate a private authority signed.
    pub extra_root_certificates: RootCertificates,
    /// Delivery attempts per message and channel, the first included.
    pub delivery_attempts: u32,
    /// Wait before the second attempt; doubled after each failure, up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// To connect to a receiver.
    pub connect_timeout: Duration,
    /// For a whole delivery attempt.
    pub request_timeout: Duration,
    /// Models and keys listed in a message.
    pub top_n: usize,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            evaluate_every: Duration::from_secs(60),
            allow_hosts: Vec::new(),
            smtp_relay: None,
            email_from: "Cognitude <alerts@localhost>".to_owned(),
            extra_root_certificates: RootCertificates::default(),
            delivery_attempts: 4,
            initial_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            top_n: 5,
        }
    }
}

impl AlertsConfig {
    /// Checks the settings; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, m: &str| Err(Error::Config(format!("{field}: {m}")));
        if self.evaluate_every < Duration::from_secs(1) {
            return bad("evaluate_every", "must be at least one second");
        }
        if self.email_from.parse::<lettre::message::Mailbox>().is_err() {
            return bad("email_from", "is not an email address");
        }
        if !(1..=20).contains(&self.delivery_attempts) {
            return bad("delivery_attempts", "must be 1 to 20");
        }
        if self.max_backoff < self.initial_backoff {
            return bad("max_backoff", "must not be below initial_backoff");
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return bad("timeouts", "must be above zero");
        }
        if !(1..=50).contains(&self.top_n) {
            return bad("top_n", "must be 1 to 50");
        }
        if self.allow_hosts.iter().any(|h| h.trim().is_empty()) {
            return bad("allow_hosts", "must not contain empty names");
        }
        if let Some(r) = &self.smtp_relay {
            if r.host.trim().is_empty() {
                return bad("smtp_relay.host", "must not be empty");
            }
            if r.username.is_some() != r.password.is_some() {
                return bad("smtp_relay", "username and password go together");
            }
            if r.tls == SmtpTls::None && r.username.is_some() {
                tracing::warn!("the SMTP relay sends its password without TLS");
            }
        }
        Ok(())
    }

    /// The wait before attempt `attempt + 1`, after `attempt` failed (1-based).
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_backoff_doubles_to_a_cap() {
        let c = AlertsConfig::default();
        c.validate().unwrap();
        assert_eq!(c.backoff(1), Duration::from_secs(2));
        assert_eq!(c.backoff(3), Duration::from_secs(8));
        assert_eq!(c.backoff(30), Duration::from_secs(60));
        let bad = AlertsConfig {
            email_from: "nope".into(),
            ..AlertsConfig::default()
        };
        assert!(matches!(bad.validate(), Err(Error::Config(m)) if m.starts_with("email_from")));
    }
}
