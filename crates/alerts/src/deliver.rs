//! Sending one message to one channel, once: Slack and webhooks over HTTPS (hyper-util with
//! rustls and ring, through the guarded resolver), email over SMTP with lettre. Both verify
//! certificates against the public web PKI roots plus the operator's extra roots. Retries and
//! the record of attempts are the engine's.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::json;

use crate::channels::{ChannelConfig, EmailConfig, SmtpServer, SmtpTls};
use crate::config::AlertsConfig;
use crate::error::{Error, Result};
use crate::guard::{GuardedResolver, UrlPolicy};
use crate::render::Notification;
use crate::roots::RootCertificates;
use crate::signature;

/// A failed attempt, and whether another may succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SendError {
    pub message: String,
    pub retryable: bool,
}

impl SendError {
    fn retry(message: impl Into<String>) -> SendError {
        SendError {
            message: message.into(),
            retryable: true,
        }
    }
    fn fatal(message: impl Into<String>) -> SendError {
        SendError {
            message: message.into(),
            retryable: false,
        }
    }
}

/// What identifies one delivery to its receiver.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Envelope<'a> {
    /// The firing id: the same on every attempt, so receivers can drop duplicates.
    pub delivery_id: &'a str,
    pub org_id: &'a str,
    /// Unix seconds, from the engine's clock.
    pub timestamp: i64,
}

type HttpClient = Client<HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>;

/// Sends messages.
#[derive(Debug, Clone)]
pub(crate) struct Notifier {
    http: HttpClient,
    policy: Arc<UrlPolicy>,
    relay: Option<SmtpServer>,
    from: Mailbox,
    /// The operator's extra roots, as lettre takes them (the public ones are lettre's own).
    smtp_roots: Vec<Certificate>,
    timeout: Duration,
}

/// Bodies of error answers are read this far, for the attempt's record.
const ERROR_BODY_LIMIT: usize = 16 * 1024;

impl Notifier {
    pub fn new(config: &AlertsConfig, policy: Arc<UrlPolicy>) -> Result<Notifier> {
        let mut http = HttpConnector::new_with_resolver(GuardedResolver {
            policy: policy.clone(),
        });
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS setup: {e}")))?
        .with_root_certificates(config.extra_root_certificates.root_store())
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            // Plain http only reaches allow-listed hosts: URLs are checked before every send.
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        let from = config
            .email_from
            .parse::<Mailbox>()
            .map_err(|e| Error::Config(format!("email_from: {e}")))?;
        let smtp_roots = smtp_roots(&config.extra_root_certificates)?;
        Ok(Notifier {
            http: client,
            policy,
            relay: config.smtp_relay.clone(),
            from,
            smtp_roots,
            timeout: config.request_timeout,
        })
    }

    pub fn policy(&self) -> &UrlPolicy {
        &self.policy
    }

    /// One attempt to deliver `n` to `channel`.
    pub async fn send(
        &self,
        channel: &ChannelConfig,
        n: &Notification,
        env: Envelope<'_>,
    ) -> Result<(), SendError> {
        let attempt = async {
            match channel {
                ChannelConfig::Slack(c) => {
                    let body = serde_json::to_vec(&n.slack)
                        .map_err(|e| SendError::fatal(e.to_string()))?;
                    self.post(&c.webhook_url, body, Vec::new()).await
                }
                ChannelConfig::Webhook(c) => {
                    let body = serde_json::to_vec(&json!({
                        "id": env.delivery_id,
                        "type": n.event,
                        "created": env.timestamp,
                        "org_id": env.org_id,
                        "subject": n.subject,
                        "data": n.data,
                    }))
                    .map_err(|e| SendError::fatal(e.to_string()))?;
                    let sig = signature::sign(c.secret.as_bytes(), env.timestamp, &body);
                    let headers = vec![
                        (signature::SIGNATURE_HEADER, sig),
                        (signature::TIMESTAMP_HEADER, env.timestamp.to_string()),
                        ("x-cognitude-event", n.event.to_owned()),
                        ("x-cognitude-delivery", env.delivery_id.to_owned()),
                    ];
                    self.post(&c.url, body, headers).await
                }
                ChannelConfig::Email(c) => self.email(c, n, env).await,
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(SendError::retry(format!(
                "timed out after {} s",
                self.timeout.as_secs_f64()
            ))),
        }
    }

    async fn post(
        &self,
        url: &str,
        body: Vec<u8>,
        headers: Vec<(&'static str, String)>,
    ) -> Result<(), SendError> {
        // IP literals skip the resolver: the static check covers them, and re-checks the scheme.
        self.policy
            .check_url("url", url)
            .map_err(|e| SendError::fatal(e.to_string()))?;
        let mut req = Request::post(url)
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("cognitude-alerts/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SendError::fatal(format!("bad request: {e}")))?;
        let resp = self.http.request(req).await.map_err(|e| {
            let text = error_chain(&e);
            if refused_by_policy(&e) {
                SendError::fatal(text)
            } else {
                SendError::retry(text)
            }
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = Limited::new(resp.into_body(), ERROR_BODY_LIMIT)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let snippet: String = String::from_utf8_lossy(&body).chars().take(200).collect();
        let message = format!("HTTP {}: {}", status.as_u16(), snippet.trim());
        let retryable = status.is_server_error()
            || status == http::StatusCode::TOO_MANY_REQUESTS
            || status == http::StatusCode::REQUEST_TIMEOUT;
        Err(SendError { message, retryable })
    }

    async fn email(
        &self,
        c: &EmailConfig,
        n: &Notification,
        env: Envelope<'_>,
    ) -> Result<(), SendError> {
        let (server, trusted) = match (&c.smtp, &self.relay) {
            (Some(s), _) => (s, false),
            (None, Some(r)) => (r, true),
            (None, None) => {
                return Err(SendError::fatal(
                    "the channel names no SMTP server and no relay is configured",
                ));
            }
        };
        // Through the operator's relay, mail is always from the operator's address: a tenant
        // must not send as anyone it likes from the operator's domain.
        let from = match (&c.from, trusted) {
            (Some(f), false) => f
                .parse::<Mailbox>()
                .map_err(|e| SendError::fatal(format!("from: {e}")))?,
            _ => self.from.clone(),
        };
        // The firing id, as webhooks carry it: the same on every attempt, so a retry after a lost
        // answer reads as the same message.
        let message_id = format!("<{}@{}>", env.delivery_id, from.email.domain());
        let mut builder = Message::builder()
            .from(from)
            .subject(n.subject.clone())
            .message_id(Some(message_id));
        for to in &c.to {
            let mbox = to
                .parse::<Mailbox>()
                .map_err(|e| SendError::fatal(format!("to: {e}")))?;
            builder = builder.to(mbox);
        }
        let message = builder
            .multipart(MultiPart::alternative_plain_html(
                n.text.clone(),
                n.html.clone(),
            ))
            .map_err(|e| SendError::fatal(format!("message: {e}")))?;

        let port = server.port_or_default();
        let allowed = trusted || self.policy.allows_host(&server.host);
        if server.tls == SmtpTls::None && !allowed {
            return Err(SendError::fatal(
                "unencrypted SMTP is only allowed to allow-listed hosts",
            ));
        }
        // Connect to an address checked now (not whatever the name resolves to later), and
        // verify the certificate against the name.
        let connect_to = if allowed {
            server.host.clone()
        } else {
            let addrs = self
                .policy
                .resolve("smtp.host", &server.host, port)
                .await
                .map_err(|e| SendError::fatal(e.to_string()))?;
            match addrs.first() {
                Some(a) => a.ip().to_string(),
                None => return Err(SendError::fatal("the SMTP host has no address")),
            }
        };
        let tls = match server.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::Starttls => Tls::Required(self.tls_parameters(&server.host)?),
            SmtpTls::Tls => Tls::Wrapper(self.tls_parameters(&server.host)?),
        };
        let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(connect_to)
            .port(port)
            .tls(tls)
            .timeout(Some(self.timeout));
        if let (Some(u), Some(p)) = (&server.username, &server.password) {
            transport = transport
                .credentials(Credentials::new(u.clone(), p.clone()))
                .authentication(vec![Mechanism::Plain, Mechanism::Login]);
        }
        let transport: AsyncSmtpTransport<Tokio1Executor> = transport.build();
        match transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) => Err(SendError {
                message: format!("SMTP: {}", error_chain(&e)),
                retryable: !e.is_permanent(),
            }),
        }
    }

    /// Verification against `domain`'s name, with lettre's public roots and the extra ones.
    fn tls_parameters(&self, domain: &str) -> Result<TlsParameters, SendError> {
        self.smtp_roots
            .iter()
            .fold(TlsParameters::builder(domain.to_owned()), |b, cert| {
                b.add_root_certificate(cert.clone())
            })
            .build()
            .map_err(|e| SendError::fatal(format!("TLS: {e}")))
    }
}

fn smtp_roots(roots: &RootCertificates) -> Result<Vec<Certificate>> {
    roots
        .ders()
        .iter()
        .map(|der| {
            Certificate::from_der(der.to_vec())
                .map_err(|e| Error::Config(format!("extra_root_certificates: {e}")))
        })
        .collect()
}

/// The error and its sources, joined.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Whether the guarded resolver refused the host (a retry would be refused too).
fn refused_by_policy(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(inner) = src {
        if let Some(io) = inner.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::PermissionDenied
        {
            return true;
        }
        src = inner.source();
    }
    false
}
