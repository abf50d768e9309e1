//! Channel configurations: what is stored (secrets included), what the API accepts (secrets
//! optional on update, where leaving one out keeps it), and what the API shows (never a secret).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{Result, invalid};
use crate::guard::UrlPolicy;

/// Where messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// A Slack incoming webhook (Block Kit message).
    Slack,
    /// Email over SMTP (plain text and HTML).
    Email,
    /// A JSON POST signed with HMAC-SHA256.
    Webhook,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Slack => "slack",
            ChannelKind::Email => "email",
            ChannelKind::Webhook => "webhook",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<ChannelKind> {
        match s {
            "slack" => Some(ChannelKind::Slack),
            "email" => Some(ChannelKind::Email),
            "webhook" => Some(ChannelKind::Webhook),
            _ => None,
        }
    }
}

/// A channel's stored configuration, secrets included. `Debug` hides the secrets.
#[derive(Clone, PartialEq, Eq)]
pub enum ChannelConfig {
    Slack(SlackConfig),
    Email(EmailConfig),
    Webhook(WebhookConfig),
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The incoming-webhook URL: its path is the credential.
    pub webhook_url: String,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub to: Vec<String>,
    /// The sender, with the channel's own SMTP server; through the operator's relay (and when
    /// absent) it is the operator's `email_from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The organization's own SMTP server; the operator's relay when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpServer>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// The HMAC-SHA256 signing key.
    pub secret: String,
}

/// An SMTP server to send through.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpServer {
    pub host: String,
    /// 587 for STARTTLS, 465 for implicit TLS, 25 without TLS, when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: SmtpTls,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// How an SMTP connection is encrypted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required, never skipped).
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
    /// No encryption: only for allow-listed hosts (a relay on the same machine or network).
    None,
}

impl SmtpServer {
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        })
    }
}

impl fmt::Debug for SlackConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackConfig")
            .field("webhook_url", &redact_url(&self.webhook_url))
            .finish()
    }
}

impl fmt::Debug for EmailConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailConfig")
            .field("to", &self.to)
            .field("from", &self.from)
            .field("smtp", &self.smtp)
            .finish()
    }
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("secret", &"***")
            .finish()
    }
}

impl fmt::Debug for SmtpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpServer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl fmt::Debug for ChannelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelConfig::Slack(c) => c.fmt(f),
            ChannelConfig::Email(c) => c.fmt(f),
            ChannelConfig::Webhook(c) => c.fmt(f),
        }
    }
}

impl ChannelConfig {
    pub fn kind(&self) -> ChannelKind {
        match self {
            ChannelConfig::Slack(_) => ChannelKind::Slack,
            ChannelConfig::Email(_) => ChannelKind::Email,
            ChannelConfig::Webhook(_) => ChannelKind::Webhook,
        }
    }

    /// The stored JSON (with secrets).
    pub(crate) fn to_stored(&self) -> String {
        let v = match self {
            ChannelConfig::Slack(c) => serde_json::to_string(c),
            ChannelConfig::Email(c) => serde_json::to_string(c),
            ChannelConfig::Webhook(c) => serde_json::to_string(c),
        };
        v.unwrap_or_default()
    }

    pub(crate) fn from_stored(kind: &str, config: &str) -> Result<ChannelConfig> {
        let bad = |e: serde_json::Error| invalid("config", format!("stored configuration: {e}"));
        Ok(match ChannelKind::parse(kind) {
            Some(ChannelKind::Slack) => {
                ChannelConfig::Slack(serde_json::from_str(config).map_err(bad)?)
            }
            Some(ChannelKind::Email) => {
                ChannelConfig::Email(serde_json::from_str(config).map_err(bad)?)
            }
            Some(ChannelKind::Webhook) => {
                ChannelConfig::Webhook(serde_json::from_str(config).map_err(bad)?)
            }
            None => return Err(invalid("kind", format!("unknown channel kind '{kind}'"))),
        })
    }

    /// What the API shows: no password, no signing key, and only the host of a Slack URL.
    pub fn public_view(&self) -> Value {
        match self {
            ChannelConfig::Slack(c) => json!({"webhook_url": redact_url(&c.webhook_url)}),
            ChannelConfig::Email(c) => {
                let smtp = c.smtp.as_ref().map(|s| {
                    json!({
                        "host": s.host,
                        "port": s.port_or_default(),
                        "tls": s.tls,
                        "username": s.username,
                        "password_set": s.password.is_some(),
                    })
                });
                json!({"to": c.to, "from": c.from, "smtp": smtp})
            }
            ChannelConfig::Webhook(c) => json!({"url": c.url, "secret_set": true}),
        }
    }
}

/// `https://host/…`: a URL whose path may be a credential, shown without it.
fn redact_url(url: &str) -> String {
    match url.parse::<http::Uri>() {
        Ok(u) => match (u.scheme_str(), u.host()) {
            (Some(s), Some(h)) => format!("{s}://{h}/…"),
            _ => "…".to_owned(),
        },
        Err(_) => "…".to_owned(),
    }
}

// ---- API input ---------------------------------------------------------------------------

/// A channel's configuration as the API takes it: secrets may be left out on update, which
/// keeps the stored ones.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlackInput {
    #[serde(default)]
    webhook_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailInput {
    to: Vec<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    smtp: Option<SmtpInput>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SmtpInput {
    host: String,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    tls: SmtpTls,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookInput {
    url: String,
    #[serde(default)]
    secret: Option<String>,
}

fn parse_input<T: serde::de::DeserializeOwned>(config: &Value) -> Result<T> {
    serde_path_to_error::deserialize(config).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path.is_empty() {
            "config".to_owned()
        } else {
            format!("config.{path}")
        };
        invalid(&field, e.into_inner().to_string())
    })
}

/// Builds a channel's configuration from API input, checked against the URL policy (without
/// DNS; the caller resolves afterwards). `existing` is the stored configuration on update:
/// secrets left out are kept from it.
pub(crate) fn from_input(
    kind: ChannelKind,
    config: &Value,
    existing: Option<&ChannelConfig>,
    policy: &UrlPolicy,
) -> Result<ChannelConfig> {
    match kind {
        ChannelKind::Slack => {
            let i: SlackInput = parse_input(config)?;
            let url = match (i.webhook_url, existing) {
                (Some(u), _) => u,
                (None, Some(ChannelConfig::Slack(e))) => e.webhook_url.clone(),
                (None, _) => return Err(invalid("config.webhook_url", "is required")),
            };
            policy.check_url("config.webhook_url", &url)?;
            Ok(ChannelConfig::Slack(SlackConfig { webhook_url: url }))
        }
        ChannelKind::Webhook => {
            let i: WebhookInput = parse_input(config)?;
            policy.check_url("config.url", &i.url)?;
            let secret = match (i.secret, existing) {
                (Some(s), _) => s,
                (None, Some(ChannelConfig::Webhook(e))) => e.secret.clone(),
                (None, _) => return Err(invalid("config.secret", "is required")),
            };
            if !(16..=256).contains(&secret.len()) || secret.chars().any(char::is_control) {
                return Err(invalid(
                    "config.secret",
                    "must be 16 to 256 printable characters",
                ));
            }
            Ok(ChannelConfig::Webhook(WebhookConfig { url: i.url, secret }))
        }
        ChannelKind::Email => {
            let i: EmailInput = parse_input(config)?;
            if i.to.is_empty() || i.to.len() > 20 {
                return Err(invalid("config.to", "must list 1 to 20 addresses"));
            }
            for (n, addr) in i.to.iter().enumerate() {
                check_mailbox(&format!("config.to[{n}]"), addr)?;
            }
            if let Some(f) = &i.from {
                check_mailbox("config.from", f)?;
            }
            let smtp = match i.smtp {
                None => None,
                Some(s) => {
                    let host = policy.check_host("config.smtp.host", &s.host)?;
                    if s.tls == SmtpTls::None && !policy.allows_host(&host) {
                        return Err(invalid(
                            "config.smtp.tls",
                            "must be 'starttls' or 'tls' (unencrypted SMTP only to allow-listed hosts)",
                        ));
                    }
                    if s.port == Some(0) {
                        return Err(invalid("config.smtp.port", "must be 1 to 65535"));
                    }
                    let old = match existing {
                        Some(ChannelConfig::Email(e)) => e.smtp.as_ref(),
                        _ => None,
                    };
                    // A stored password is only ever sent to the host it was given for.
                    let password = match (s.password, old) {
                        (Some(p), _) => Some(p),
                        (None, Some(o)) if o.host == host => o.password.clone(),
                        (None, _) => None,
                    };
                    if s.username.is_some() && password.is_none() {
                        return Err(invalid(
                            "config.smtp.password",
                            "is required with a username (and when the host changes)",
                        ));
                    }
                    Some(SmtpServer {
                        host,
                        port: s.port,
                        tls: s.tls,
                        username: s.username,
                        password,
                    })
                }
            };
            Ok(ChannelConfig::Email(EmailConfig {
                to: i.to,
                from: i.from,
                smtp,
            }))
        }
    }
}

fn check_mailbox(field: &str, addr: &str) -> Result<()> {
    addr.parse::<lettre::message::Mailbox>()
        .map(|_| ())
        .map_err(|e| invalid(field, format!("'{addr}' is not an email address: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_kept_on_update_and_never_shown() {
        let p = UrlPolicy::new(["127.0.0.1"]);
        let created = from_input(
            ChannelKind::Email,
            &json!({"to": ["ops@example.com"], "smtp": {"host": "smtp.example.com",
                "username": "u", "password": "hunter22"}}),
            None,
            &p,
        )
        .unwrap();
        let view = created.public_view().to_string();
        assert!(!view.contains("hunter22"), "{view}");
        assert!(view.contains("\"password_set\":true"));
        assert!(!format!("{created:?}").contains("hunter22"));
        // Same host, no password: kept.
        let updated = from_input(
            ChannelKind::Email,
            &json!({"to": ["ops@example.com"], "smtp": {"host": "smtp.example.com", "username": "u"}}),
            Some(&created),
            &p,
        )
        .unwrap();
        assert_eq!(updated, created);
        // New host, no password: refused rather than sending the old one elsewhere.
        let e = from_input(
            ChannelKind::Email,
            &json!({"to": ["ops@example.com"], "smtp": {"host": "smtp.other.com", "username": "u"}}),
            Some(&created),
            &p,
        )
        .unwrap_err();
        assert!(
            matches!(e, crate::Error::Invalid { field, .. } if field == "config.smtp.password")
        );
    }

    #[test]
    fn inputs_are_checked() {
        let p = UrlPolicy::default();
        let field_of = |kind, v: Value| match from_input(kind, &v, None, &p) {
            Err(crate::Error::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field_of(
                ChannelKind::Webhook,
                json!({"url": "https://example.com/h", "secret": "short"})
            ),
            "config.secret"
        );
        assert_eq!(
            field_of(
                ChannelKind::Webhook,
                json!({"url": "http://example.com/h", "secret": "0123456789abcdef"})
            ),
            "config.url"
        );
        assert_eq!(
            field_of(
                ChannelKind::Slack,
                json!({"webhook_url": "https://192.168.0.1/x"})
            ),
            "config.webhook_url"
        );
        assert_eq!(
            field_of(ChannelKind::Email, json!({"to": ["not an address"]})),
            "config.to[0]"
        );
        assert_eq!(
            field_of(
                ChannelKind::Email,
                json!({"to": ["a@b.c"], "smtp": {"host": "h.example", "tls": "none"}})
            ),
            "config.smtp.tls"
        );
        assert_eq!(
            field_of(ChannelKind::Slack, json!({"webhook_url": 5})),
            "config.webhook_url"
        );
        let slack = from_input(
            ChannelKind::Slack,
            &json!({"webhook_url": "https://hooks.slack.com/services/T1/B2/secretpart"}),
            None,
            &p,
        )
        .unwrap();
        assert_eq!(
            slack.public_view(),
            json!({"webhook_url": "https://hooks.slack.com/…"})
        );
    }
}
