//! The alerts crate against real receivers on loopback: an HTTP server standing in for Slack and
//! webhooks (it checks payloads and verifies signatures) and an SMTP server (EHLO, AUTH PLAIN,
//! MAIL, RCPT, DATA over plain TCP) whose messages are read back. Backend-dependent tests run on
//! a SQLite file and on a throwaway database of the machine's PostgreSQL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly on anything unexpected"
)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cognitude_alerts::{
    Alerts, AlertsConfig, ChannelInput, ChannelKind, ChannelPatch, Clock, DigestScheduleInput,
    Error, ManualClock, Recommendation, RecommendationSource, RuleInput, RulePatch, signature,
};
use cognitude_catalog::Money;
use cognitude_store::{
    AlertChannelRow, AlertFiringRow, AlertRuleRow, CostGroup, Store, UsageRecord,
};
use cognitude_testkit::{TestDatabase, unique};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

// ---- databases ---------------------------------------------------------------------------

/// A database of the test's own, dropped at the end.
struct TestDb {
    store: Store,
    url: String,
    pg: Option<TestDatabase>,
    dir: PathBuf,
}

impl TestDb {
    async fn sqlite() -> TestDb {
        let dir = std::env::temp_dir().join(unique("cognitude_alerts"));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}/test.db", dir.display());
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        TestDb {
            store,
            url,
            pg: None,
            dir,
        }
    }

    async fn postgres() -> TestDb {
        let pg = TestDatabase::create().await.unwrap();
        let store = Store::connect(&pg.url).await.unwrap();
        store.migrate().await.unwrap();
        let dir = std::env::temp_dir().join(unique("cognitude_alerts"));
        std::fs::create_dir_all(&dir).unwrap();
        TestDb {
            store,
            url: pg.url.clone(),
            pg: Some(pg),
            dir,
        }
    }

    /// A second, independent connection pool to the same database (another replica).
    async fn another_store(&self) -> Store {
        Store::connect(&self.url).await.unwrap()
    }

    async fn drop_db(self) {
        let TestDb { store, pg, dir, .. } = self;
        drop(store);
        if let Some(pg) = pg {
            pg.drop_db().await;
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    let db = super::TestDb::sqlite().await;
                    super::$name(&db).await;
                    db.drop_db().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    let db = super::TestDb::postgres().await;
                    super::$name(&db).await;
                    db.drop_db().await;
                }
            )*
        }
    };
}

on_both_backends!(
    two_evaluators_send_each_firing_once,
    digest_figures_equal_sql_sums,
    store_aggregations_and_firing_uniqueness,
);

/// Sums over the ledger in plain SQL, outside the crate under test.
#[derive(Debug, diesel::QueryableByName)]
struct SqlSums {
    #[diesel(sql_type = diesel::sql_types::Text)]
    cost: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    requests: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    tokens: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    hits: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    cache_saved: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    route_saving: String,
}

async fn sql_sums(db: &TestDb, org: &str, from: i64, to: i64) -> SqlSums {
    use diesel_async::{AsyncConnection, RunQueryDsl};
    // Ids are hex and times integers: nothing here needs escaping.
    let q = format!(
        "SELECT CAST(COALESCE(SUM(cost_pico), 0) AS TEXT) AS cost, \
         CAST(COUNT(*) AS BIGINT) AS requests, \
         CAST(COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS BIGINT) AS tokens, \
         CAST(COUNT(CASE WHEN cache_status LIKE 'hit%' THEN 1 END) AS BIGINT) AS hits, \
         CAST(COALESCE(SUM(cache_saved_pico), 0) AS TEXT) AS cache_saved, \
         CAST(COALESCE(SUM(route_saving_pico), 0) AS TEXT) AS route_saving \
         FROM usage_records WHERE org_id = '{org}' AND created_at >= {from} AND created_at < {to}"
    );
    if db.pg.is_some() {
        let mut c = diesel_async::AsyncPgConnection::establish(&db.url)
            .await
            .unwrap();
        diesel::sql_query(q).get_result(&mut c).await.unwrap()
    } else {
        let path = db.url.trim_start_matches("sqlite://").to_owned();
        let mut c = diesel_async::sync_connection_wrapper::SyncConnectionWrapper::<
            diesel::SqliteConnection,
        >::establish(&path)
        .await
        .unwrap();
        diesel::sql_query(q).get_result(&mut c).await.unwrap()
    }
}

// ---- ledger records ----------------------------------------------------------------------

/// Unix microseconds of a zoned time such as `2026-11-25T10:00[America/New_York]`.
fn at(s: &str) -> i64 {
    s.parse::<jiff::ZonedDateTime>()
        .unwrap()
        .timestamp()
        .as_microsecond()
}

fn usd(s: &str) -> Money {
    s.parse().unwrap()
}

/// A ledger record; `cost` in dollars.
fn record(org: &str, key: Option<&str>, model: &str, cost: &str, when: i64) -> UsageRecord {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = format!("rec_{}", NEXT.fetch_add(1, Ordering::Relaxed));
    UsageRecord {
        request_id: format!("req-{id}"),
        id,
        org_id: org.to_owned(),
        api_key_id: key.map(str::to_owned),
        created_at: when,
        endpoint: "chat_completions".into(),
        model_requested: model.into(),
        model_used: Some(model.into()),
        provider: Some("openai".into()),
        status: 200,
        prompt_tokens: 100,
        completion_tokens: 20,
        cost_pico: i64::try_from(usd(cost).pico()).unwrap(),
        latency_ms: 12,
        request_hash: "ab".repeat(32),
        prefix_hash: "cd".repeat(32),
        ..UsageRecord::default()
    }
}

async fn insert(store: &Store, records: &[UsageRecord]) {
    assert_eq!(
        store.insert_usage(records).await.unwrap(),
        records.len(),
        "records inserted"
    );
}

// ---- an HTTP receiver --------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }
}

#[derive(Default)]
struct ReceiverState {
    requests: Vec<Received>,
    /// Statuses to answer the next requests to a path with (then 200).
    script: HashMap<String, VecDeque<u16>>,
}

/// An HTTP/1.1 server on 127.0.0.1 that records every request and answers 200 unless scripted.
struct Receiver {
    addr: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
    task: JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<Incoming>| {
                        let state = state.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            let path = parts.uri.path().to_owned();
                            let status = {
                                let mut s = state.lock().unwrap();
                                s.requests.push(Received {
                                    path: path.clone(),
                                    headers: parts.headers,
                                    body,
                                });
                                s.script
                                    .get_mut(&path)
                                    .and_then(VecDeque::pop_front)
                                    .unwrap_or(200)
                            };
                            let mut resp =
                                http::Response::new(Full::new(Bytes::from(if status == 200 {
                                    "ok"
                                } else {
                                    "receiver says no"
                                })));
                            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Receiver { addr, state, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn script(&self, path: &str, statuses: &[u16]) {
        self.state
            .lock()
            .unwrap()
            .script
            .insert(path.to_owned(), statuses.iter().copied().collect());
    }

    fn requests(&self, path: &str) -> Vec<Received> {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---- an SMTP server ----------------------------------------------------------------------

#[derive(Debug, Clone, Default)]
struct Mail {
    /// The decoded AUTH PLAIN response: `\0user\0password`.
    auth: Option<String>,
    from: String,
    to: Vec<String>,
    data: String,
}

/// A minimal SMTP server on 127.0.0.1 (plain TCP): EHLO with AUTH PLAIN, MAIL, RCPT, DATA.
struct SmtpSink {
    addr: SocketAddr,
    mails: Arc<Mutex<Vec<Mail>>>,
    task: JoinHandle<()>,
}

impl SmtpSink {
    async fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let shared = mails.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let mails = shared.clone();
                tokio::spawn(async move {
                    let _ = smtp_session(stream, mails).await;
                });
            }
        });
        SmtpSink { addr, mails, task }
    }

    fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn smtp_session(
    stream: tokio::net::TcpStream,
    mails: Arc<Mutex<Vec<Mail>>>,
) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"220 sink.test ESMTP\r\n").await?;
    let mut mail = Mail::default();
    let mut auth = None;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_owned();
        let upper = cmd.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            w.write_all(b"250-sink.test\r\n250 AUTH PLAIN LOGIN\r\n")
                .await?;
        } else if upper.starts_with("AUTH PLAIN ") {
            let decoded = base64_decode(cmd["AUTH PLAIN ".len()..].trim());
            auth = Some(String::from_utf8(decoded).unwrap());
            w.write_all(b"235 2.7.0 Authentication successful\r\n")
                .await?;
        } else if upper.starts_with("MAIL FROM:") {
            mail = Mail {
                auth: auth.clone(),
                from: cmd["MAIL FROM:".len()..].trim().to_owned(),
                ..Mail::default()
            };
            w.write_all(b"250 2.1.0 OK\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            mail.to.push(cmd["RCPT TO:".len()..].trim().to_owned());
            w.write_all(b"250 2.1.5 OK\r\n").await?;
        } else if upper == "DATA" {
            w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await?;
            let mut data = String::new();
            loop {
                let mut l = String::new();
                if r.read_line(&mut l).await? == 0 {
                    return Ok(());
                }
                if l == ".\r\n" {
                    break;
                }
                // Dot-unstuffing.
                data.push_str(l.strip_prefix('.').unwrap_or(&l));
            }
            mail.data = data;
            mails.lock().unwrap().push(mail.clone());
            w.write_all(b"250 2.0.0 Queued\r\n").await?;
        } else if upper == "QUIT" {
            w.write_all(b"221 2.0.0 Bye\r\n").await?;
            return Ok(());
        } else if upper == "RSET" || upper == "NOOP" {
            w.write_all(b"250 2.0.0 OK\r\n").await?;
        } else {
            w.write_all(b"502 5.5.2 Command not recognized\r\n").await?;
        }
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter_map(value) {
        acc = (acc << 6) | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn quoted_printable_decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' {
            if b.get(i + 1) == Some(&b'\r') && b.get(i + 2) == Some(&b'\n') {
                i += 3;
                continue;
            }
            if b.get(i + 1) == Some(&b'\n') {
                i += 2;
                continue;
            }
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// A parsed message: top-level headers and the decoded body of each MIME part by content type.
struct ParsedMail {
    headers: HashMap<String, String>,
    parts: HashMap<String, String>,
}

fn split_head(s: &str) -> (HashMap<String, String>, &str) {
    let (head, body) = s.split_once("\r\n\r\n").unwrap();
    let mut headers: HashMap<String, String> = HashMap::new();
    let mut last: Option<String> = None;
    for line in head.split("\r\n") {
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(k) = &last {
                headers.get_mut(k).unwrap().push_str(line);
            }
            continue;
        }
        let (k, v) = line.split_once(':').unwrap();
        let k = k.trim().to_ascii_lowercase();
        headers.insert(k.clone(), v.trim().to_owned());
        last = Some(k);
    }
    (headers, body)
}

fn parse_mail(data: &str) -> ParsedMail {
    let (headers, body) = split_head(data);
    let ct = &headers["content-type"];
    assert!(ct.starts_with("multipart/alternative"), "{ct}");
    let boundary = ct
        .split("boundary=")
        .nth(1)
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let mut parts = HashMap::new();
    for chunk in body.split(&format!("--{boundary}")).skip(1) {
        if chunk.starts_with("--") {
            break;
        }
        let (h, b) = split_head(chunk.trim_start_matches("\r\n"));
        let kind = h["content-type"]
            .split(';')
            .next()
            .unwrap()
            .trim()
            .to_owned();
        let b = b.trim_end_matches("\r\n");
        let decoded = match h
            .get("content-transfer-encoding")
            .map(|e| e.to_ascii_lowercase())
            .as_deref()
        {
            Some("base64") => String::from_utf8(base64_decode(b)).unwrap(),
            Some("quoted-printable") => quoted_printable_decode(b),
            _ => b.to_owned(),
        };
        parts.insert(kind, decoded);
    }
    ParsedMail { headers, parts }
}

// ---- the service -------------------------------------------------------------------------

/// Fast retries; loopback allow-listed.
fn config() -> AlertsConfig {
    AlertsConfig {
        allow_hosts: vec!["127.0.0.1".into()],
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        delivery_attempts: 4,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(10),
        email_from: "Cognitude Alerts <alerts@cognitude.test>".into(),
        ..AlertsConfig::default()
    }
}

fn alerts(store: &Store, clock: &ManualClock, config: AlertsConfig) -> Alerts {
    Alerts::new(store.clone(), Arc::new(clock.clone()), config).unwrap()
}

fn rule(name: &str, zone: &str, channels: &[&str], condition: Value) -> RuleInput {
    serde_json::from_value(json!({
        "name": name,
        "time_zone": zone,
        "channel_ids": channels,
        "condition": condition,
    }))
    .unwrap()
}

fn channel(name: &str, kind: ChannelKind, config: Value) -> ChannelInput {
    ChannelInput {
        name: name.into(),
        kind,
        config,
    }
}

const SECRET: &str = "whsec_0123456789abcdef0123";

async fn webhook_channel(a: &Alerts, org: &str, url: String) -> String {
    a.create_channel(
        org,
        channel(
            "ops webhook",
            ChannelKind::Webhook,
            json!({"url": url, "secret": SECRET}),
        ),
    )
    .await
    .unwrap()
    .id
}

/// Checks the signature headers of a webhook delivery with an independent HMAC computation,
/// and with the crate's verifier; returns the timestamp.
fn check_signature(r: &Received) -> i64 {
    use hmac::Mac;
    let t: i64 = r.header("x-cognitude-timestamp").parse().unwrap();
    let sig = r.header("x-cognitude-signature");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&r.body);
    let expected = format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(sig, expected, "signature over \"<t>.<body>\"");
    assert!(signature::verify(
        SECRET.as_bytes(),
        sig,
        &r.body,
        t + 60,
        300
    ));
    // A replay ten minutes later is refused; a tampered body too.
    assert!(!signature::verify(
        SECRET.as_bytes(),
        sig,
        &r.body,
        t + 600,
        300
    ));
    let mut tampered = r.body.to_vec();
    tampered[0] = b' ';
    assert!(!signature::verify(
        SECRET.as_bytes(),
        sig,
        &tampered,
        t,
        300
    ));
    t
}

// ---- tests -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn budget_alert_reaches_slack_and_a_signed_webhook_once_per_share() {
    let db = TestDb::sqlite().await;
    let store = &db.store;
    let org = store.create_org("acme").await.unwrap();
    let key = store.create_key(&org.id, "ci").await.unwrap();
    let rx = Receiver::start().await;
    let clock = ManualClock::new(at("2026-11-20T12:00[Europe/Paris]"));
    let a = alerts(store, &clock, config());

    let slack = a
        .create_channel(
            &org.id,
            channel(
                "slack",
                ChannelKind::Slack,
                json!({"webhook_url": rx.url("/slack/T1/B2/tok")}),
            ),
        )
        .await
        .unwrap()
        .id;
    let hook = webhook_channel(&a, &org.id, rx.url("/hook")).await;
    let budget = a
        .create_rule(
            &org.id,
            rule(
                "Monthly budget",
                "Europe/Paris",
                &[&slack, &hook],
                json!({"kind": "spend", "period": "month", "budget_usd": "100"}),
            ),
        )
        .await
        .unwrap();

    // $85.50 this month (Paris), across two models and two keys; $40 last month doesn't count.
    insert(
        store,
        &[
            record(
                &org.id,
                Some(&key.key.id),
                "gpt-4o",
                "60.25",
                at("2026-11-01T00:00[Europe/Paris]"),
            ),
            record(
                &org.id,
                Some(&key.key.id),
                "gpt-4o-mini",
                "20.25",
                at("2026-11-19T09:00[Europe/Paris]"),
            ),
            record(
                &org.id,
                None,
                "gpt-4o",
                "5",
                at("2026-11-20T11:59[Europe/Paris]"),
            ),
            record(
                &org.id,
                None,
                "gpt-4o",
                "40",
                at("2026-10-31T23:59[Europe/Paris]"),
            ),
        ],
    )
    .await;

    let report = a.tick().await.unwrap();
    assert_eq!(
        report.fired,
        vec![(budget.id.clone(), "month:2026-11@80%".to_owned())]
    );
    assert_eq!((report.deliveries_ok, report.deliveries_failed), (2, 0));

    let s = rx.requests("/slack/T1/B2/tok");
    assert_eq!(s.len(), 1);
    let msg = s[0].json();
    let blocks = msg["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(
        blocks[0]["text"]["text"],
        "Alert \"Monthly budget\" for acme"
    );
    let headline = blocks[1]["text"]["text"].as_str().unwrap();
    assert!(
        headline.contains(
            "80% of the $100.00 monthly budget: $85.50 spent, $5.50 over the $80.00 line"
        ),
        "{headline}"
    );
    let models = blocks[2]["text"]["text"].as_str().unwrap();
    assert!(models.contains("gpt-4o: $65.25 (2 requests)"), "{models}");
    assert!(
        models.contains("gpt-4o-mini: $20.25 (1 requests)"),
        "{models}"
    );
    let keys = blocks[3]["text"]["text"].as_str().unwrap();
    assert!(
        keys.contains(&format!("ci ({}): $80.50", key.key.prefix)),
        "{keys}"
    );
    assert!(keys.contains("(no key): $5.00"), "{keys}");

    let w = rx.requests("/hook");
    assert_eq!(w.len(), 1);
    let t = check_signature(&w[0]);
    assert_eq!(t, clock.now_micros() / 1_000_000);
    assert_eq!(w[0].header("x-cognitude-event"), "alert.fired");
    let body = w[0].json();
    assert_eq!(body["type"], "alert.fired");
    assert_eq!(body["org_id"], org.id.as_str());
    assert_eq!(
        w[0].header("x-cognitude-delivery"),
        body["id"].as_str().unwrap()
    );
    let breach = &body["data"]["breach"];
    assert_eq!(breach["kind"], "spend");
    assert_eq!(usd(breach["spent"].as_str().unwrap()), usd("85.5"));
    assert_eq!(usd(breach["threshold"].as_str().unwrap()), usd("80"));
    assert_eq!(breach["percent"], 80);
    assert_eq!(body["data"]["window_from"], "2026-11-01T00:00:00+01:00");

    // Nothing new: nothing sent.
    clock.advance(Duration::from_secs(60));
    let again = a.tick().await.unwrap();
    assert!(again.fired.is_empty(), "{again:?}");
    assert_eq!(rx.requests("/hook").len(), 1);

    // Past 100%: one more firing, then quiet again.
    insert(
        store,
        &[record(&org.id, None, "gpt-4o", "15", clock.now_micros())],
    )
    .await;
    let report = a.tick().await.unwrap();
    assert_eq!(
        report.fired,
        vec![(budget.id.clone(), "month:2026-11@100%".into())]
    );
    assert!(a.tick().await.unwrap().fired.is_empty());
    assert_eq!(rx.requests("/hook").len(), 2);
    assert_eq!(rx.requests("/slack/T1/B2/tok").len(), 2);

    // The history has both firings (and the superseded 50% share), each delivered once per
    // channel; secrets appear nowhere in what the API returns.
    let history = a.history(&org.id, None, 50).await.unwrap().entries;
    let kinds: Vec<(&str, &str)> = history
        .iter()
        .map(|h| (h.kind.as_str(), h.period_key.as_str()))
        .collect();
    assert!(kinds.contains(&("alert", "month:2026-11@100%")));
    assert!(kinds.contains(&("alert", "month:2026-11@80%")));
    assert!(kinds.contains(&("superseded", "month:2026-11@50%")));
    for h in history.iter().filter(|h| h.kind == "alert") {
        assert_eq!(h.deliveries.len(), 2);
        assert!(
            h.deliveries
                .iter()
                .all(|d| d.status == "ok" && d.attempt == 1)
        );
    }
    let listed = serde_json::to_string(&a.list_channels(&org.id).await.unwrap()).unwrap();
    let all = format!("{listed}{}", serde_json::to_string(&history).unwrap());
    assert!(!all.contains(SECRET), "{all}");
    assert!(!all.contains("/slack/T1/B2/tok"), "{all}");
    assert!(listed.contains("\"secret_set\":true"));

    // Disabled rules are not evaluated.
    a.update_rule(
        &org.id,
        &budget.id,
        RulePatch {
            enabled: Some(false),
            ..RulePatch::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(a.tick().await.unwrap().rules_evaluated, 0);
    db.drop_db().await;
}

#[derive(Debug)]
struct FixedRecommendations;

#[async_trait::async_trait]
impl RecommendationSource for FixedRecommendations {
    async fn top(&self, _org_id: &str, limit: usize) -> Vec<Recommendation> {
        let all = vec![
            Recommendation {
                title: "Route classification prompts to gpt-4o-mini".into(),
                monthly_saving: usd("412.3"),
            },
            Recommendation {
                title: "Cache the FAQ system prompt".into(),
                monthly_saving: usd("57"),
            },
        ];
        all.into_iter().take(limit).collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn daily_digest_by_email_with_auth_text_and_html() {
    let db = TestDb::sqlite().await;
    let store = &db.store;
    let org = store.create_org("acme").await.unwrap();
    let smtp = SmtpSink::start().await;
    // 07:59 in New York on Thursday 2026-11-26: the 08:00 digest is not due yet.
    let clock = ManualClock::new(at("2026-11-26T07:59[America/New_York]"));
    let a = alerts(store, &clock, config()).with_recommendations(Arc::new(FixedRecommendations));
    let mail = a
        .create_channel(
            &org.id,
            channel(
                "finance mail",
                ChannelKind::Email,
                json!({
                    "to": ["finance@acme.test", "Ops <ops@acme.test>"],
                    "smtp": {"host": "127.0.0.1", "port": smtp.addr.port(), "tls": "none",
                             "username": "mailer", "password": "s3cret-pw"},
                }),
            ),
        )
        .await
        .unwrap();
    assert!(!serde_json::to_string(&mail).unwrap().contains("s3cret-pw"));
    a.set_digest_schedule(
        &org.id,
        serde_json::from_value::<DigestScheduleInput>(json!({
            "time_zone": "America/New_York", "send_hour": 8, "weekly_weekday": 1,
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let mut cached = record(
        &org.id,
        None,
        "gpt-4o",
        "0",
        at("2026-11-25T12:00[America/New_York]"),
    );
    cached.cache_status = Some("hit-memory".into());
    cached.cache_saved_pico = 2_500_000_000_000;
    let mut routed = record(
        &org.id,
        None,
        "gpt-4o-mini",
        "0.75",
        at("2026-11-25T13:00[America/New_York]"),
    );
    routed.routed = true;
    routed.route_saving_pico = Some(1_250_000_000_000);
    routed.cache_status = Some("miss".into());
    insert(
        store,
        &[
            record(
                &org.id,
                None,
                "gpt-4o",
                "10",
                at("2026-11-25T00:00[America/New_York]"),
            ),
            record(
                &org.id,
                None,
                "gpt-4o",
                "2.5",
                at("2026-11-25T23:59:59.999999[America/New_York]"),
            ),
            cached,
            routed,
            // The day before (for the change) and the day after (not in the digest).
            record(
                &org.id,
                None,
                "gpt-4o",
                "10",
                at("2026-11-24T09:00[America/New_York]"),
            ),
            record(
                &org.id,
                None,
                "gpt-4o",
                "99",
                at("2026-11-26T00:00[America/New_York]"),
            ),
        ],
    )
    .await;

    assert!(a.tick().await.unwrap().digests.is_empty());
    clock.set(at("2026-11-26T08:00[America/New_York]"));
    let report = a.tick().await.unwrap();
    assert_eq!(
        report.digests,
        vec![(org.id.clone(), "day:2026-11-25".into())]
    );
    assert_eq!(report.deliveries_ok, 1);
    // Once a day.
    clock.advance(Duration::from_secs(3600));
    assert!(a.tick().await.unwrap().digests.is_empty());

    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    let m = &mails[0];
    assert_eq!(m.auth.as_deref(), Some("\0mailer\0s3cret-pw"));
    assert_eq!(m.from, "<alerts@cognitude.test>");
    assert_eq!(m.to, ["<finance@acme.test>", "<ops@acme.test>"]);
    let parsed = parse_mail(&m.data);
    assert_eq!(
        parsed.headers["subject"],
        "[Cognitude] Daily digest for acme: 2026-11-25"
    );
    assert!(parsed.headers["from"].contains("alerts@cognitude.test"));
    assert!(parsed.headers["to"].contains("finance@acme.test"));
    assert!(parsed.headers["to"].contains("ops@acme.test"));
    let text = &parsed.parts["text/plain"];
    let html = &parsed.parts["text/html"];
    // $13.25 on the 25th against $10.00 on the 24th: +$3.25, +32.5%.
    for expected in [
        "Spend: $13.25, +$3.25 (+32.5%) vs $10.00 for 2026-11-24",
        "Requests: 4",
        "Tokens: 480 (400 prompt, 80 completion)",
        "Cache: 50.00% hit rate (1 of 2 lookups), $2.50 saved",
        "Routing: 1 requests routed, $1.25 saved",
        "gpt-4o  $12.50  (3 requests)",
        "Route classification prompts to gpt-4o-mini: saves $412.30 a month",
    ] {
        assert!(
            text.contains(expected),
            "text part lacks {expected:?}:\n{text}"
        );
    }
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(
        html.contains("<th align=\"left\">Spend</th><td>$13.25, +$3.25 (+32.5%)"),
        "{html}"
    );
    assert!(html.contains("Cache the FAQ system prompt: saves $57.00 a month"));

    // Monday 2026-11-30 08:30: the daily digest of Sunday and the weekly one of the seven days
    // before, both by mail.
    clock.set(at("2026-11-30T08:30[America/New_York]"));
    let report = a.tick().await.unwrap();
    let mut keys: Vec<String> = report.digests.iter().map(|d| d.1.clone()).collect();
    keys.sort();
    assert_eq!(keys, ["7d:2026-11-23/2026-11-29", "day:2026-11-29"]);
    let mails = smtp.mails();
    assert_eq!(mails.len(), 3);
    let weekly = mails
        .iter()
        .map(|m| parse_mail(&m.data))
        .find(|p| p.headers["subject"].contains("Weekly"))
        .unwrap();
    // The week holds every record from the 23rd on: $13.25 + $10 + $99.
    assert!(
        weekly.parts["text/plain"]
            .contains("Spend: $122.25, +$122.25 vs $0.00 for 2026-11-16 to 2026-11-22"),
        "{}",
        weekly.parts["text/plain"]
    );
    let schedule = a.digest_schedule(&org.id).await.unwrap().unwrap();
    assert_eq!(schedule.last_daily.as_deref(), Some("day:2026-11-29"));
    assert_eq!(
        schedule.last_weekly.as_deref(),
        Some("7d:2026-11-23/2026-11-29")
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_relay_sends_as_the_operator() {
    let db = TestDb::sqlite().await;
    let org = db.store.create_org("acme").await.unwrap();
    let relay = SmtpSink::start().await;
    let clock = ManualClock::new(at("2026-11-20T12:00[UTC]"));
    let a = alerts(
        &db.store,
        &clock,
        AlertsConfig {
            // The operator's relay is trusted: no allow-list entry is needed for it.
            allow_hosts: Vec::new(),
            smtp_relay: Some(
                serde_json::from_value(json!({
                    "host": "127.0.0.1", "port": relay.addr.port(), "tls": "none",
                }))
                .unwrap(),
            ),
            ..config()
        },
    );
    let ch = a
        .create_channel(
            &org.id,
            channel(
                "mail",
                ChannelKind::Email,
                json!({"to": ["ops@acme.test"], "from": "ceo@bank.test"}),
            ),
        )
        .await
        .unwrap();
    assert!(a.test_channel(&org.id, &ch.id).await.unwrap().delivered);
    let mails = relay.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].auth, None);
    assert_eq!(mails[0].from, "<alerts@cognitude.test>");
    let parsed = parse_mail(&mails[0].data);
    assert!(!parsed.headers["from"].contains("bank.test"));
    assert!(parsed.parts["text/plain"].contains("channel \"mail\" receives alerts"));
    // Without a relay, a channel without a server cannot send, and says why.
    let b = alerts(&db.store, &clock, config());
    let failed = b.test_channel(&org.id, &ch.id).await.unwrap();
    assert!(!failed.delivered);
    assert!(
        failed.attempts[0]
            .error
            .as_deref()
            .unwrap()
            .contains("no SMTP server")
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_channel_is_retried_with_every_attempt_recorded() {
    let db = TestDb::sqlite().await;
    let store = &db.store;
    let org = store.create_org("acme").await.unwrap();
    let rx = Receiver::start().await;
    let clock = ManualClock::new(at("2026-11-20T12:00[UTC]"));
    let a = alerts(store, &clock, config());
    let flaky = webhook_channel(&a, &org.id, rx.url("/flaky")).await;
    let broken = webhook_channel(&a, &org.id, rx.url("/broken")).await;
    let refusing = webhook_channel(&a, &org.id, rx.url("/refusing")).await;
    rx.script("/flaky", &[500, 503]);
    rx.script("/broken", &[500; 10]);
    rx.script("/refusing", &[410]);
    a.create_rule(
        &org.id,
        rule(
            "daily cap",
            "UTC",
            &[],
            json!({"kind": "spend", "period": "day", "amount_usd": "1"}),
        ),
    )
    .await
    .unwrap();
    insert(
        store,
        &[record(&org.id, None, "gpt-4o", "2", clock.now_micros())],
    )
    .await;

    let report = a.tick().await.unwrap();
    assert_eq!(report.fired.len(), 1);
    assert_eq!((report.deliveries_ok, report.deliveries_failed), (1, 2));
    // The flaky receiver saw three attempts of the same delivery, each signed.
    let seen = rx.requests("/flaky");
    assert_eq!(seen.len(), 3);
    let ids: Vec<&str> = seen
        .iter()
        .map(|r| r.header("x-cognitude-delivery"))
        .collect();
    assert!(ids.iter().all(|i| *i == ids[0]));
    for r in &seen {
        check_signature(r);
    }
    // Four attempts (the configured maximum) to the broken one; one to the one that says 410.
    assert_eq!(rx.requests("/broken").len(), 4);
    assert_eq!(rx.requests("/refusing").len(), 1);

    let history = a.history(&org.id, None, 10).await.unwrap().entries;
    assert_eq!(history.len(), 1);
    let by_channel = |id: &str| -> Vec<(u32, String, Option<String>)> {
        history[0]
            .deliveries
            .iter()
            .filter(|d| d.channel_id == id)
            .map(|d| (d.attempt, d.status.clone(), d.error.clone()))
            .collect()
    };
    let f = by_channel(&flaky);
    assert_eq!(
        f.iter().map(|d| (d.0, d.1.as_str())).collect::<Vec<_>>(),
        [(1, "failed"), (2, "failed"), (3, "ok")]
    );
    assert!(f[0].2.as_deref().unwrap().starts_with("HTTP 500"), "{f:?}");
    assert!(f[1].2.as_deref().unwrap().starts_with("HTTP 503"), "{f:?}");
    assert_eq!(by_channel(&broken).len(), 4);
    assert!(by_channel(&broken).iter().all(|d| d.1 == "failed"));
    let r = by_channel(&refusing);
    assert_eq!(r.len(), 1);
    assert!(r[0].2.as_deref().unwrap().starts_with("HTTP 410"));

    // The firing is not sent again on the next pass, failed channels included.
    assert!(a.tick().await.unwrap().fired.is_empty());
    assert_eq!(rx.requests("/broken").len(), 4);

    // A test message goes out once, with its attempt in the history.
    clock.advance(Duration::from_secs(60));
    let outcome = a.test_channel(&org.id, &flaky).await.unwrap();
    assert!(outcome.delivered);
    assert_eq!(outcome.attempts.len(), 1);
    let last = rx.requests("/flaky").pop().unwrap();
    assert_eq!(last.json()["type"], "test");
    clock.advance(Duration::from_secs(60));
    let outcome = a.test_channel(&org.id, &broken).await.unwrap();
    assert!(!outcome.delivered);
    assert_eq!(a.history(&org.id, None, 10).await.unwrap().entries.len(), 3);
    // Pages of two: all three entries once, newest first, then no cursor.
    let first = a.history(&org.id, None, 2).await.unwrap();
    let cursor = first.next_cursor.clone().unwrap();
    let second = a.history(&org.id, Some(&cursor), 2).await.unwrap();
    assert_eq!(second.entries.len(), 1);
    assert!(second.next_cursor.is_none());
    assert_eq!(second.entries[0].kind, "alert");
    assert!(first.entries.iter().all(|e| e.kind == "test"));
    assert!(matches!(
        a.history(&org.id, Some("x'; DROP TABLE alert_firings"), 2).await,
        Err(Error::Invalid { field, .. }) if field == "cursor"
    ));
    db.drop_db().await;
}

async fn two_evaluators_send_each_firing_once(db: &TestDb) {
    let org = db.store.create_org("acme").await.unwrap();
    let rx = Receiver::start().await;
    let clock = ManualClock::new(at("2026-11-20T12:00[Asia/Tokyo]"));
    let a = alerts(&db.store, &clock, config());
    let b = alerts(&db.another_store().await, &clock, config());
    let hook = webhook_channel(&a, &org.id, rx.url("/hook")).await;
    for n in 0..5 {
        a.create_rule(
            &org.id,
            rule(
                &format!("cap {n}"),
                "Asia/Tokyo",
                &[&hook],
                json!({"kind": "spend", "period": "day", "amount_usd": format!("{}", n + 1)}),
            ),
        )
        .await
        .unwrap();
    }
    a.set_digest_schedule(
        &org.id,
        serde_json::from_value(
            json!({"time_zone": "Asia/Tokyo", "send_hour": 0, "channel_ids": [hook]}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    insert(
        &db.store,
        &[record(&org.id, None, "gpt-4o", "10", clock.now_micros())],
    )
    .await;

    // Both evaluate at once, several times: each rule fires once, the digest goes out once.
    for _ in 0..3 {
        let (ra, rb) = tokio::join!(a.tick(), b.tick());
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert!(
            ra.errors.is_empty() && rb.errors.is_empty(),
            "{ra:?} {rb:?}"
        );
    }
    let posts = rx.requests("/hook");
    let mut types: Vec<String> = posts
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_owned())
        .collect();
    types.sort();
    assert_eq!(
        types,
        [
            "alert.fired",
            "alert.fired",
            "alert.fired",
            "alert.fired",
            "alert.fired",
            "digest.daily"
        ]
    );
    let mut ids: Vec<&str> = posts
        .iter()
        .map(|r| r.header("x-cognitude-delivery"))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 6);

    // A restarted evaluator (a fresh instance on a fresh pool) sends nothing again.
    let c = alerts(&db.another_store().await, &clock, config());
    let report = c.tick().await.unwrap();
    assert!(
        report.fired.is_empty() && report.digests.is_empty(),
        "{report:?}"
    );
    assert_eq!(rx.requests("/hook").len(), 6);

    // The next day in Tokyo, the same rules fire again, once.
    clock.set(at("2026-11-21T00:30[Asia/Tokyo]"));
    insert(
        &db.store,
        &[record(&org.id, None, "gpt-4o", "2.5", clock.now_micros())],
    )
    .await;
    let (ra, rb) = tokio::join!(a.tick(), b.tick());
    let mut fired: Vec<String> = ra
        .unwrap()
        .fired
        .into_iter()
        .chain(rb.unwrap().fired)
        .map(|f| f.1)
        .collect();
    fired.sort();
    assert_eq!(fired, ["day:2026-11-21", "day:2026-11-21"]);
}

async fn digest_figures_equal_sql_sums(db: &TestDb) {
    let store = &db.store;
    let org = store.create_org("acme").await.unwrap();
    let other = store.create_org("other").await.unwrap();
    let k1 = store.create_key(&org.id, "backend").await.unwrap();
    let k2 = store.create_key(&org.id, "notebook").await.unwrap();
    let rx = Receiver::start().await;
    let zone = "Europe/Paris";
    // Monday 2026-03-30 09:00 in Paris: the daily digest is for Sunday 2026-03-29, the 23-hour
    // spring-forward day, and the weekly one for 2026-03-23..29.
    let clock = ManualClock::new(at("2026-03-30T09:00[Europe/Paris]"));
    let a = alerts(store, &clock, config());
    let hook = webhook_channel(&a, &org.id, rx.url("/digest")).await;
    a.set_digest_schedule(
        &org.id,
        serde_json::from_value(json!({"time_zone": zone, "send_hour": 9, "channel_ids": [hook]}))
            .unwrap(),
    )
    .await
    .unwrap();

    // Deterministic but irregular records over three weeks, with edge times.
    let models = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "o3"];
    let start = at("2026-03-14T00:00[Europe/Paris]");
    let mut records = Vec::new();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..400u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let when = start + i64::try_from(x % (17 * 86_400_000_000)).unwrap();
        let key = match i % 3 {
            0 => Some(k1.key.id.as_str()),
            1 => Some(k2.key.id.as_str()),
            _ => None,
        };
        let cost = format!("0.{:06}", x % 1_000_000);
        let mut r = record(&org.id, key, models[(x % 4) as usize], &cost, when);
        r.prompt_tokens = i64::try_from(x % 5000).unwrap();
        r.completion_tokens = i64::try_from(x % 700).unwrap();
        r.cache_status =
            Some(["hit-redis", "miss", "bypass", "hit-memory"][(i % 4) as usize].into());
        r.cache_saved_pico = if i % 4 == 3 { 1_000_003 } else { 0 };
        r.routed = i % 5 == 0;
        r.route_saving_pico = r.routed.then_some(i64::try_from(x % 10_000_000).unwrap());
        records.push(r);
    }
    for edge in [
        "2026-03-29T00:00[Europe/Paris]",
        "2026-03-29T23:59:59.999999[Europe/Paris]",
        "2026-03-30T00:00[Europe/Paris]",
        "2026-03-28T23:59:59.999999[Europe/Paris]",
        "2026-03-23T00:00[Europe/Paris]",
    ] {
        records.push(record(
            &org.id,
            Some(&k1.key.id),
            "gpt-4o",
            "1.000000000001",
            at(edge),
        ));
    }
    insert(store, &records).await;
    // Another organization's spend never shows.
    insert(
        store,
        &[record(
            &other.id,
            None,
            "gpt-4o",
            "1000",
            at("2026-03-29T12:00[Europe/Paris]"),
        )],
    )
    .await;

    let report = a.tick().await.unwrap();
    assert_eq!(report.digests.len(), 2, "{report:?}");
    let posts = rx.requests("/digest");
    assert_eq!(posts.len(), 2);
    for post in &posts {
        check_signature(post);
        let d = &post.json()["data"];
        let from = d["window"]["from"].as_i64().unwrap();
        let to = d["window"]["to"].as_i64().unwrap();
        let money = |v: &Value| usd(v.as_str().unwrap());
        let sql = sql_sums(db, &org.id, from, to).await;
        assert_eq!(
            money(&d["spend"]),
            usd_pico(&sql.cost),
            "spend {}",
            d["period_key"]
        );
        assert_eq!(d["requests"].as_i64().unwrap(), sql.requests);
        assert_eq!(
            d["prompt_tokens"].as_i64().unwrap() + d["completion_tokens"].as_i64().unwrap(),
            sql.tokens
        );
        assert_eq!(d["cache_hits"].as_i64().unwrap(), sql.hits);
        assert_eq!(money(&d["cache_saved"]), usd_pico(&sql.cache_saved));
        assert_eq!(money(&d["route_saving"]), usd_pico(&sql.route_saving));
        // And the same figures from the records themselves.
        let mine: Vec<&UsageRecord> = records
            .iter()
            .filter(|r| r.created_at >= from && r.created_at < to)
            .collect();
        let exact: i128 = mine.iter().map(|r| i128::from(r.cost_pico)).sum();
        assert_eq!(money(&d["spend"]).pico(), exact);
        assert_eq!(d["requests"].as_i64().unwrap(), mine.len() as i64);
        // The previous period (the 24-hour Saturday, or the week before), and the top models.
        let (pf, pt) = if d["kind"] == "weekly" {
            (
                at("2026-03-16T00:00[Europe/Paris]"),
                at("2026-03-23T00:00[Europe/Paris]"),
            )
        } else {
            (
                at("2026-03-28T00:00[Europe/Paris]"),
                at("2026-03-29T00:00[Europe/Paris]"),
            )
        };
        let prev = sql_sums(db, &org.id, pf, pt).await;
        assert!(usd_pico(&prev.cost) > Money::ZERO);
        assert_eq!(money(&d["previous_spend"]), usd_pico(&prev.cost));
        assert_eq!(
            money(&d["change"]),
            money(&d["spend"]) - usd_pico(&prev.cost)
        );
        let top = store
            .cost_breakdown(&org.id, from, to, CostGroup::Model, 5)
            .await
            .unwrap();
        let listed: Vec<(String, Money)> = d["top_models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["name"].as_str().unwrap().to_owned(), money(&m["cost"])))
            .collect();
        let expected: Vec<(String, Money)> =
            top.into_iter().map(|s| (s.name.unwrap(), s.cost)).collect();
        assert_eq!(listed, expected);
        let mut sorted = listed.clone();
        sorted.sort_by_key(|m| std::cmp::Reverse(m.1));
        assert_eq!(listed, sorted, "costliest first");
    }
    let daily = posts
        .iter()
        .map(Received::json)
        .find(|p| p["type"] == "digest.daily")
        .unwrap();
    // The spring-forward day is 23 hours long, and both edge records inside it count.
    let w = &daily["data"]["window"];
    assert_eq!(
        w["to"].as_i64().unwrap() - w["from"].as_i64().unwrap(),
        23 * 3_600_000_000
    );
    assert_eq!(daily["data"]["period_key"], "day:2026-03-29");
}

fn usd_pico(text: &str) -> Money {
    Money::from_pico(text.parse().unwrap())
}

async fn store_aggregations_and_firing_uniqueness(db: &TestDb) {
    let s = &db.store;
    let org = s.create_org("acme").await.unwrap();
    let t = at("2026-11-25T12:00[UTC]");
    let mut failed = record(&org.id, None, "gpt-4o", "0", t);
    failed.status = 502;
    failed.error_type = Some("upstream_error".into());
    let mut cut = record(&org.id, None, "gpt-4o", "0.5", t + 1);
    cut.error_type = Some("upstream_stream_failed".into());
    let mut client = record(&org.id, None, "gpt-4o", "0", t + 2);
    client.status = 400;
    client.error_type = Some("invalid_request_error".into());
    // Sums past the range of a BIGINT stay exact.
    let big: Vec<UsageRecord> = (0..3)
        .map(|i| {
            let mut r = record(&org.id, None, "o1-pro", "0", t + 10 + i);
            r.cost_pico = i64::MAX;
            r
        })
        .collect();
    insert(s, &[failed, cut, client]).await;
    insert(s, &big).await;
    let sum = s.usage_summary(&org.id, t, t + 100).await.unwrap();
    assert_eq!(sum.requests, 6);
    assert_eq!(
        sum.upstream_errors, 2,
        "5xx and upstream stream failures, not client errors"
    );
    assert_eq!(sum.cost.pico(), 3 * i128::from(i64::MAX) + 500_000_000_000);
    let empty = s.usage_summary(&org.id, 0, 1).await.unwrap();
    assert_eq!((empty.requests, empty.cost), (0, Money::ZERO));
    let by_model = s
        .cost_breakdown(&org.id, t, t + 100, CostGroup::Model, 10)
        .await
        .unwrap();
    assert_eq!(by_model[0].name.as_deref(), Some("o1-pro"));
    assert_eq!(by_model[0].requests, 3);
    assert_eq!(by_model[1].cost, usd("0.5"));

    let firing = |id: &str, key: &str| AlertFiringRow {
        id: id.into(),
        org_id: org.id.clone(),
        rule_id: "rule_x".into(),
        period_key: key.into(),
        kind: "alert".into(),
        fired_at: t,
        payload: "{}".into(),
    };
    assert!(
        s.insert_alert_firing(&firing("f1", "day:2026-11-25"))
            .await
            .unwrap()
    );
    assert!(
        !s.insert_alert_firing(&firing("f2", "day:2026-11-25"))
            .await
            .unwrap()
    );
    assert!(
        s.insert_alert_firing(&firing("f3", "day:2026-11-26"))
            .await
            .unwrap()
    );
    let listed = s.alert_firings(&org.id, None, 10).await.unwrap();
    assert_eq!(listed.len(), 2);
    // Deleting the organization takes its channels, rules and schedule with it (and keeps the
    // history, like the ledger).
    let doomed = s.create_org("doomed").await.unwrap();
    s.insert_alert_channel(&AlertChannelRow {
        id: "chan_1".into(),
        org_id: doomed.id.clone(),
        kind: "webhook".into(),
        name: "w".into(),
        config: "{}".into(),
        created_at: t,
        updated_at: t,
    })
    .await
    .unwrap();
    s.insert_alert_rule(&AlertRuleRow {
        id: "rule_1".into(),
        org_id: doomed.id.clone(),
        name: "r".into(),
        kind: "spend".into(),
        params: "{}".into(),
        channel_ids: "[]".into(),
        enabled: true,
        time_zone: "UTC".into(),
        created_at: t,
        updated_at: t,
    })
    .await
    .unwrap();
    assert!(s.delete_org(&doomed.id).await.unwrap());
    assert!(s.alert_channels(&doomed.id).await.unwrap().is_empty());
    assert!(s.alert_rules(&doomed.id).await.unwrap().is_empty());
    assert!(s.enabled_alert_rules().await.unwrap().is_empty());

    // Newest first, ties by id; a cursor continues after the given firing.
    assert_eq!(listed[0].id, "f3");
    let after_f3 = s.alert_firings(&org.id, Some((t, "f3")), 10).await.unwrap();
    assert_eq!(after_f3.len(), 1);
    assert_eq!(after_f3[0].id, "f1");
    assert!(
        s.alert_firings(&org.id, Some((t, "f1")), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn periods_follow_each_rules_zone_across_day_week_and_month_boundaries() {
    let db = TestDb::sqlite().await;
    let store = &db.store;
    let org = store.create_org("acme").await.unwrap();
    let rx = Receiver::start().await;
    let clock = ManualClock::new(at("2026-12-31T23:50[Asia/Tokyo]"));
    let a = alerts(store, &clock, config());
    let hook = webhook_channel(&a, &org.id, rx.url("/hook")).await;
    let create = |name: &'static str, zone: &'static str, condition: Value| {
        let a = a.clone();
        let org = org.id.clone();
        let hook = hook.clone();
        async move {
            a.create_rule(&org, rule(name, zone, &[&hook], condition))
                .await
                .unwrap()
                .id
        }
    };
    let tokyo_day = create(
        "tokyo day",
        "Asia/Tokyo",
        json!({"kind": "spend", "period": "day", "amount_usd": 10}),
    )
    .await;
    let la_week = create(
        "la week",
        "America/Los_Angeles",
        json!({"kind": "spend", "period": "week", "amount_usd": 30}),
    )
    .await;
    let sydney_month = create(
        "sydney month",
        "Australia/Sydney",
        json!({"kind": "spend", "period": "month", "amount_usd": 50}),
    )
    .await;
    let errors = create(
        "upstream errors",
        "UTC",
        json!({"kind": "error_rate", "threshold_percent": 25, "min_requests": 4, "window_minutes": 10}),
    )
    .await;
    let fired = |r: &cognitude_alerts::TickReport| -> Vec<(String, String)> {
        let mut f = r.fired.clone();
        f.sort();
        f
    };

    // 2026-12-31 23:50 in Tokyo is 06:50 on Thursday 2026-12-31 in Los Angeles and 01:50 on
    // 2027-01-01 in Sydney. $12 now: over Tokyo's daily $10 only (not LA's weekly $30, not
    // Sydney's monthly $50, though it counts toward Sydney's January).
    insert(
        store,
        &[record(&org.id, None, "gpt-4o", "12", clock.now_micros())],
    )
    .await;
    let r = a.tick().await.unwrap();
    assert_eq!(
        fired(&r),
        [(tokyo_day.clone(), "day:2026-12-31".to_owned())]
    );

    // Across Tokyo's midnight: a new day, and $12 of it is yesterday's.
    clock.set(at("2027-01-01T00:10[Asia/Tokyo]"));
    insert(
        store,
        &[record(&org.id, None, "gpt-4o", "9", clock.now_micros())],
    )
    .await;
    assert!(a.tick().await.unwrap().fired.is_empty());
    insert(
        store,
        &[record(&org.id, None, "gpt-4o", "1", clock.now_micros())],
    )
    .await;
    let r = a.tick().await.unwrap();
    assert_eq!(
        fired(&r),
        [(tokyo_day.clone(), "day:2027-01-01".to_owned())]
    );

    // Sunday 20:00 in Los Angeles: its ISO week 2026-W53 (Mon 12-28 .. Sun 01-03) held $22;
    // $9 more crosses $30. (Tokyo's January 4 has $9, Sydney's January $31.)
    clock.set(at("2027-01-03T20:00[America/Los_Angeles]"));
    insert(
        store,
        &[record(&org.id, None, "gpt-4o", "9", clock.now_micros())],
    )
    .await;
    let r = a.tick().await.unwrap();
    assert_eq!(fired(&r), [(la_week.clone(), "week:2026-W53".to_owned())]);

    // Monday 00:30 in Los Angeles starts a new week there ($9 is under $30); in Tokyo it is
    // 17:30 on January 4, whose $18 crosses $10. Sydney's January is at $40.
    clock.set(at("2027-01-04T00:30[America/Los_Angeles]"));
    insert(
        store,
        &[record(&org.id, None, "gpt-4o", "9", clock.now_micros())],
    )
    .await;
    let r = a.tick().await.unwrap();
    assert_eq!(
        fired(&r),
        [(tokyo_day.clone(), "day:2027-01-04".to_owned())]
    );

    // January 31 23:30 in Sydney (12:30 UTC): $14 takes Sydney's January to $54.
    clock.set(at("2027-01-31T23:30[Australia/Sydney]"));
    insert(
        store,
        &[record(&org.id, None, "gpt-4o", "14", clock.now_micros())],
    )
    .await;
    let r = a.tick().await.unwrap();
    assert!(
        fired(&r).contains(&(sydney_month.clone(), "month:2027-01".to_owned())),
        "{r:?}"
    );
    // An hour later it is February in Sydney (still January 31 in UTC, Tokyo and LA): the month
    // starts over there and $3 crosses nothing.
    clock.set(at("2027-02-01T00:30[Australia/Sydney]"));
    insert(
        store,
        &[record(&org.id, None, "gpt-4o", "3", clock.now_micros())],
    )
    .await;
    let r = a.tick().await.unwrap();
    assert!(!r.fired.iter().any(|f| f.0 == sydney_month), "{r:?}");

    // Upstream errors: 2 of 6 in the last ten minutes (a 400 does not count) is 33% ≥ 25%.
    clock.set(at("2027-02-10T10:05[UTC]"));
    let mut rs = Vec::new();
    for (status, error) in [
        (502, Some("upstream_error")),
        (200, Some("upstream_stream_failed")),
        (400, Some("invalid_request_error")),
        (200, None),
        (200, None),
        (200, None),
    ] {
        let mut r = record(
            &org.id,
            None,
            "gpt-4o",
            "0",
            clock.now_micros() - 60_000_000,
        );
        r.status = status;
        r.error_type = error.map(str::to_owned);
        rs.push(r);
    }
    insert(store, &rs).await;
    let r = a.tick().await.unwrap();
    assert_eq!(r.fired.iter().filter(|f| f.0 == errors).count(), 1, "{r:?}");
    let post = rx.requests("/hook").pop().unwrap().json();
    assert_eq!(post["data"]["breach"]["kind"], "error_rate");
    assert_eq!(post["data"]["breach"]["errors"], 2);
    assert_eq!(post["data"]["breach"]["requests"], 6);
    // Ten minutes on, the window is empty: nothing.
    clock.advance(Duration::from_secs(600));
    assert!(!a.tick().await.unwrap().fired.iter().any(|f| f.0 == errors));
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn urls_must_be_https_to_public_addresses_unless_allow_listed() {
    let db = TestDb::sqlite().await;
    let store = &db.store;
    let org = store.create_org("acme").await.unwrap();
    let rx = Receiver::start().await;
    let clock = ManualClock::new(at("2026-11-20T12:00[UTC]"));
    let strict = alerts(
        store,
        &clock,
        AlertsConfig {
            allow_hosts: Vec::new(),
            ..config()
        },
    );
    let field_of = |r: Result<cognitude_alerts::Channel, Error>| match r {
        Err(Error::Invalid { field, message }) => (field, message),
        other => panic!("{other:?}"),
    };
    for url in [
        rx.url("/hook"),                         // http, loopback
        format!("https://{}/hook", rx.addr),     // loopback
        "https://localhost/hook".to_owned(),     // resolves to loopback
        "https://10.1.2.3/hook".into(),          // RFC 1918
        "https://100.64.1.1/hook".into(),        // shared address space
        "https://169.254.169.254/latest".into(), // link-local (cloud metadata)
        "https://[::1]/hook".into(),
        "https://[fd00::1]/hook".into(),
        "https://[::ffff:192.168.1.1]/hook".into(),
        "https://user:pw@example.com/hook".into(),
        "ftp://example.com/hook".into(),
    ] {
        let (field, message) = field_of(
            strict
                .create_channel(
                    &org.id,
                    channel(
                        "x",
                        ChannelKind::Webhook,
                        json!({"url": url, "secret": SECRET}),
                    ),
                )
                .await,
        );
        assert_eq!(field, "config.url", "{url}: {message}");
    }
    let (field, _) = field_of(
        strict
            .create_channel(
                &org.id,
                channel(
                    "x",
                    ChannelKind::Slack,
                    json!({"webhook_url": "https://192.168.1.10/x"}),
                ),
            )
            .await,
    );
    assert_eq!(field, "config.webhook_url");
    let (field, message) = field_of(
        strict
            .create_channel(
                &org.id,
                channel(
                    "x",
                    ChannelKind::Email,
                    json!({"to": ["a@b.test"], "smtp": {"host": "localhost", "port": 2525}}),
                ),
            )
            .await,
    );
    assert_eq!(field, "config.smtp.host", "{message}");
    assert!(message.contains("not a public address"), "{message}");
    assert!(strict.list_channels(&org.id).await.unwrap().is_empty());

    // Allow-listed, loopback over plain http is fine.
    let lenient = alerts(
        store,
        &clock,
        AlertsConfig {
            allow_hosts: vec!["127.0.0.1".into(), "localhost".into()],
            ..config()
        },
    );
    let ok = webhook_channel(&lenient, &org.id, rx.url("/ok")).await;
    assert!(lenient.test_channel(&org.id, &ok).await.unwrap().delivered);
    assert_eq!(rx.requests("/ok").len(), 1);
    // A name that resolves to loopback passes only where allow-listed: the guarded resolver
    // refuses it at delivery time elsewhere, without a retry.
    let by_name = lenient
        .create_channel(
            &org.id,
            channel(
                "by name",
                ChannelKind::Webhook,
                json!({"url": format!("https://localhost:{}/tls", rx.addr.port()), "secret": SECRET}),
            ),
        )
        .await
        .unwrap();
    let refused = strict.test_channel(&org.id, &by_name.id).await.unwrap();
    assert!(!refused.delivered);
    let err = refused.attempts[0].error.as_deref().unwrap();
    assert!(err.contains("not a public address"), "{err}");
    // And an http URL saved under an allow-list is not sent where the host is not allowed.
    let refused = strict.test_channel(&org.id, &ok).await.unwrap();
    assert!(!refused.delivered);
    assert!(
        refused.attempts[0]
            .error
            .as_deref()
            .unwrap()
            .contains("https")
    );
    assert_eq!(rx.requests("/ok").len(), 1);

    // Updating a webhook without its secret keeps it; the secret never comes back.
    let updated = lenient
        .update_channel(
            &org.id,
            &ok,
            ChannelPatch {
                name: Some("renamed".into()),
                config: Some(json!({"url": rx.url("/ok2")})),
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.name, "renamed");
    assert!(!serde_json::to_string(&updated).unwrap().contains(SECRET));
    assert!(lenient.test_channel(&org.id, &ok).await.unwrap().delivered);
    check_signature(&rx.requests("/ok2")[0]);

    // Another organization cannot see or use the channel.
    let other = store.create_org("other").await.unwrap();
    assert!(matches!(
        lenient.test_channel(&other.id, &ok).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        lenient
            .create_rule(
                &other.id,
                rule("x", "UTC", &[&ok], json!({"kind": "spend", "period": "day", "amount_usd": 1})),
            )
            .await,
        Err(Error::Invalid { field, .. }) if field == "channel_ids"
    ));
    db.drop_db().await;
}
