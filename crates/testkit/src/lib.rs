//! Test support shared by the workspace's test suites. Not part of the product.
//!
//! - [`Relay`]: a TCP relay in front of a real service that a test can cut (every connection
//!   dropped, new ones refused), slow down, and restore: the way to take a shared service away
//!   from one test without touching it.
//! - [`TestDatabase`]: a PostgreSQL database of the test's own on the machine's server, dropped
//!   at the end.
//! - [`RedisServer`]: a private `redis-server` on an ephemeral port that a test may kill and
//!   restart.
//! - [`fifty_models`]: a synthetic 50-model catalog, the one the router's tests and its
//!   selection benchmarks choose from.
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let relay = cognitude_testkit::Relay::start(upstream.local_addr().unwrap()).await;
//! relay.cut();
//! assert!(!relay.is_up());
//! relay.restore();
//! # });
//! ```

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A random hex suffix for names that must not collide across runs.
pub fn unique(tag: &str) -> String {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    format!("{tag}_{}_{:08x}", std::process::id(), u32::from_le_bytes(b))
}

/// A TCP relay the test owns.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Relay {
    /// Starts relaying 127.0.0.1:ephemeral → `target`.
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = match TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => unreachable_bind(e),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => unreachable_bind(e),
        };
        let up = Arc::new(AtomicBool::new(true));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (up2, delay2, conns2) = (up.clone(), delay_ms.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let delay = delay2.clone();
                let task = tokio::spawn(async move {
                    if let Ok(outbound) = TcpStream::connect(target).await {
                        pipe(inbound, outbound, delay).await;
                    }
                });
                if let Ok(mut c) = conns2.lock() {
                    c.retain(|t| !t.is_finished());
                    c.push(task);
                }
            }
        });
        Relay {
            addr,
            up,
            delay_ms,
            conns,
            accept,
        }
    }

    /// The relay's own address: point the client here.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        if let Ok(mut c) = self.conns.lock() {
            for t in c.drain(..) {
                t.abort();
            }
        }
    }

    /// Accepts and relays again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    /// Holds every relayed chunk (both ways) for `delay` before passing it on.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

fn unreachable_bind(e: std::io::Error) -> ! {
    // Binding 127.0.0.1:0 fails only when the machine has no loopback: nothing to test then.
    #[expect(
        clippy::panic,
        reason = "test support: a machine without loopback cannot test"
    )]
    {
        panic!("cannot bind a loopback port: {e}")
    }
}

async fn pipe(a: TcpStream, b: TcpStream, delay: Arc<AtomicU64>) {
    let (mut ar, mut aw) = a.into_split();
    let (mut br, mut bw) = b.into_split();
    let d1 = delay.clone();
    let one = async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = ar.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let ms = d1.load(Ordering::SeqCst);
            if ms > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if bw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = bw.shutdown().await;
    };
    let two = async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = br.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let ms = delay.load(Ordering::SeqCst);
            if ms > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if aw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = aw.shutdown().await;
    };
    tokio::join!(one, two);
}

/// The machine's PostgreSQL (DATABASE_URL, or the local default).
pub fn postgres_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `url` with its database name replaced by `db` and, if given, its host:port by `host`.
pub fn postgres_url_for(url: &str, db: &str, host: Option<SocketAddr>) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (authority, _) = rest.split_once('/').unwrap_or((rest, ""));
    let (creds, hostport) = match authority.rsplit_once('@') {
        Some((c, h)) => (format!("{c}@"), h.to_owned()),
        None => (String::new(), authority.to_owned()),
    };
    let hostport = host.map_or(hostport, |h| h.to_string());
    format!("{scheme}://{creds}{hostport}/{db}")
}

/// A PostgreSQL database created for one test, dropped by [`TestDatabase::drop_db`].
#[derive(Debug)]
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Result<TestDatabase, String> {
        let name = unique("cognitude_test");
        let mut admin = AsyncPgConnection::establish(&postgres_url())
            .await
            .map_err(|e| format!("PostgreSQL at {} is not reachable: {e}", postgres_url()))?;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .map_err(|e| e.to_string())?;
        let url = postgres_url_for(&postgres_url(), &name, None);
        Ok(TestDatabase { name, url })
    }

    /// The database's URL through `relay`.
    pub fn url_via(&self, relay: &Relay) -> String {
        postgres_url_for(&postgres_url(), &self.name, Some(relay.addr()))
    }

    /// The address of the PostgreSQL server itself (for a relay in front of it).
    pub fn server_addr() -> SocketAddr {
        let url = postgres_url();
        let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let hostport = if hostport.contains(':') {
            hostport.to_owned()
        } else {
            format!("{hostport}:5432")
        };
        let hostport = hostport.replace("localhost", "127.0.0.1");
        hostport
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 5432)))
    }

    pub async fn drop_db(self) {
        if let Ok(mut admin) = AsyncPgConnection::establish(&postgres_url()).await {
            let _ = admin
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
                .await;
        }
    }
}

/// A private redis-server on an ephemeral port, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers.
    pub async fn start() -> Result<RedisServer, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let mut s = RedisServer { port, child: None };
        s.restart().await?;
        Ok(s)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its data is gone: it keeps nothing on disk).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub async fn restart(&mut self) -> Result<(), String> {
        self.kill();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server (is it installed?): {e}"))?;
        self.child = Some(child);
        for _ in 0..200 {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)).await {
                let _ = s.write_all(b"PING\r\n").await;
                let mut buf = [0u8; 7];
                if s.read_exact(&mut buf).await.is_ok() && &buf == b"+PONG\r\n" {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(format!("redis-server on port {} did not answer", self.port))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// 50 synthetic models (`model-0` … `model-49` from `provider-0` … `provider-6`) with spread
/// prices, context windows, quality and speeds, each with tools and JSON output: the catalog the
/// router's tests and its selection benchmarks choose from.
pub fn fifty_models() -> cognitude_catalog::Catalog {
    let mut toml = String::new();
    for i in 0..50u32 {
        toml += &format!(
            "[[model]]\nid = \"model-{i}\"\nprovider = \"provider-{}\"\ninput = {:.2}\noutput = {:.2}\n\
             context_window = {}\nmax_output = 16000\ncapabilities = [\"tools\", \"json\"]\n\
             quality = {}\nlatency_ms = {}\ntokens_per_second = {}\n\n",
            i % 7,
            f64::from(i % 13 + 1) * 0.1,
            f64::from(i % 11 + 1) * 0.4,
            32_000 * (i % 4 + 1),
            40 + (i * 37) % 60,
            200 + (i * 53) % 3000,
            30 + (i * 17) % 300,
        );
    }
    #[expect(
        clippy::expect_used,
        reason = "test support: the TOML above is fixed, and a test of it checks that it parses"
    )]
    cognitude_catalog::Catalog::from_toml(&toml).expect("the synthetic catalog is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifty_models_are_distinct_and_spread() {
        let cat = fifty_models();
        assert_eq!(cat.len(), 50);
        let ids: std::collections::BTreeSet<_> =
            cat.models().iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids.len(), 50);
        let providers: std::collections::BTreeSet<_> =
            cat.models().iter().map(|m| m.provider.as_str()).collect();
        assert_eq!(providers.len(), 7);
    }

    #[test]
    fn urls() {
        let relay: SocketAddr = "127.0.0.1:7777".parse().unwrap();
        assert_eq!(
            postgres_url_for("postgres://u:p@h:5432/postgres", "x", Some(relay)),
            "postgres://u:p@127.0.0.1:7777/x"
        );
        assert_eq!(
            postgres_url_for("postgres://h/postgres", "x", None),
            "postgres://h/x"
        );
    }
}
