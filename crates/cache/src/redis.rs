//! The shared hot tier: Redis through a fred connection pool.
//!
//! Layout: one string per entry at `{prefix}:{org}:{sha256 hex}` written with `SET … EX`.
//! Clearing an organization SCANs `{prefix}:{org}:*` and UNLINKs what it finds. A per-org set of
//! keys was the alternative; it costs every store two more commands, and its members outlive the
//! entries they name (a string's TTL does not remove it from a set), so the set grows until
//! something prunes it. SCAN costs nothing on the hot path, never blocks Redis the way KEYS does,
//! and clearing is a rare administrative call, so it may take a walk over the keyspace.
//!
//! Values: one format byte, then the JSON envelope (`0`), or the envelope's length as a
//! little-endian u32 followed by its LZ4 block (`1`) when it is larger than the threshold.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use fred::prelude::{
    Builder, ClientLike, Config, Expiration, KeysInterface, Pool, ReconnectPolicy,
};
use fred::types::InfoKind;

use crate::entry::{decode_envelope, encode_envelope, log_rejected};
use crate::{BackendKind, BackendStats, Cache, CacheKey, CachedResponse, Entry, Error, Result};

const RAW: u8 = 0;
const LZ4: u8 = 1;
/// Keys deleted per UNLINK while clearing.
const CLEAR_BATCH: usize = 500;

/// How to reach Redis and lay out entries.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Prepended to every key (`{prefix}:{org}:{hash}`); lets several deployments or test runs
    /// share one Redis.
    pub key_prefix: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// Values whose JSON is larger than this many bytes are LZ4-compressed.
    pub compress_above: usize,
    /// The largest value accepted on read, after decompression.
    pub max_value_bytes: usize,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// How long fred keeps a command queued while the connection is down. The tiered cache's
    /// own, shorter timeout normally answers first; this bounds the work fred keeps around.
    pub command_timeout: Duration,
    /// Delay between reconnection attempts; reconnection never gives up.
    pub reconnect_delay: Duration,
}

impl RedisConfig {
    pub fn new(url: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            key_prefix: "cognitude:cache".to_owned(),
            pool_size: 4,
            compress_above: 1024,
            max_value_bytes: 16 << 20,
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(1),
            reconnect_delay: Duration::from_millis(200),
        }
    }
}

/// The Redis tier.
pub struct RedisCache {
    pool: Pool,
    prefix: String,
    compress_above: usize,
    max_value_bytes: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("prefix", &self.prefix)
            .field("pool_size", &self.pool.size())
            .finish()
    }
}

impl RedisCache {
    /// Connects the pool; fails if Redis does not answer now. Once connected, lost connections
    /// are re-established in the background for as long as the cache lives.
    pub async fn connect(config: RedisConfig) -> Result<RedisCache> {
        let cache = RedisCache::build(config, true)?;
        cache.pool.init().await.map_err(redis_err)?;
        Ok(cache)
    }

    /// Returns at once and connects in the background, retrying every `reconnect_delay` until
    /// Redis answers: for starting while Redis is away. Until then every call fails or times out,
    /// which a tiered cache treats as a degraded tier.
    pub async fn connect_lazy(config: RedisConfig) -> Result<RedisCache> {
        let cache = RedisCache::build(config, false)?;
        // The handle only reports how the connection task ended; reconnection runs inside it.
        drop(cache.pool.connect());
        Ok(cache)
    }

    fn build(config: RedisConfig, fail_fast: bool) -> Result<RedisCache> {
        if config.pool_size == 0 {
            return Err(Error::Config {
                field: "pool_size",
                message: "must be at least 1".into(),
            });
        }
        if config.key_prefix.is_empty() {
            return Err(Error::Config {
                field: "key_prefix",
                message: "must not be empty".into(),
            });
        }
        let mut fred_config = Config::from_url(&config.url).map_err(redis_err)?;
        fred_config.fail_fast = fail_fast;
        let reconnect_ms = u32::try_from(config.reconnect_delay.as_millis()).unwrap_or(u32::MAX);
        let pool = Builder::from_config(fred_config)
            .with_connection_config(|c| {
                c.connection_timeout = config.connect_timeout;
                c.internal_command_timeout = config.command_timeout;
                // A command is not retried on another connection: the caller's timeout decides.
                c.max_command_attempts = 1;
            })
            .with_performance_config(|p| {
                p.default_command_timeout = config.command_timeout;
            })
            .set_policy(ReconnectPolicy::new_constant(0, reconnect_ms.max(1)))
            .build_pool(config.pool_size)
            .map_err(redis_err)?;
        Ok(RedisCache {
            pool,
            prefix: config.key_prefix,
            compress_above: config.compress_above,
            max_value_bytes: config.max_value_bytes,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// The Redis key of `key`: `{prefix}:{org}:{hash}`, the org escaped so it holds no `:`.
    pub fn redis_key(&self, key: &CacheKey) -> String {
        format!("{}:{}:{}", self.prefix, escape_org(key.org()), key.hex())
    }

    /// Closes the pool's connections.
    pub async fn close(&self) {
        let _ = self.pool.quit().await;
    }

    fn encode(&self, key: &CacheKey, response: &CachedResponse, ttl: Duration) -> Result<Bytes> {
        let json = encode_envelope(key, response, SystemTime::now() + ttl)?;
        Ok(frame(json, self.compress_above))
    }

    /// SCANs `pattern` and UNLINKs every match, a batch at a time.
    async fn unlink_matching(&self, pattern: &str) -> Result<u64> {
        let mut cursor = "0".to_owned();
        let mut removed = 0u64;
        let mut batch: Vec<String> = Vec::new();
        loop {
            let (next, keys): (String, Vec<String>) = self
                .pool
                .scan_page(cursor, pattern.to_owned(), Some(1000), None)
                .await
                .map_err(redis_err)?;
            batch.extend(keys);
            if batch.len() >= CLEAR_BATCH || (next == "0" && !batch.is_empty()) {
                let n: u64 = self
                    .pool
                    .unlink(std::mem::take(&mut batch))
                    .await
                    .map_err(redis_err)?;
                removed += n;
            }
            if next == "0" {
                return Ok(removed);
            }
            cursor = next;
        }
    }
}

#[async_trait]
impl Cache for RedisCache {
    fn kind(&self) -> BackendKind {
        BackendKind::Redis
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<Entry>> {
        let raw: Option<Bytes> = self
            .pool
            .get(self.redis_key(key))
            .await
            .map_err(redis_err)?;
        let entry = match raw {
            None => None,
            Some(raw) => match unframe(&raw, self.max_value_bytes) {
                Err(reason) => {
                    log_rejected(
                        BackendKind::Redis,
                        key,
                        &crate::entry::Rejected::Corrupt(reason),
                    );
                    None
                }
                Ok(json) => match decode_envelope(key, &json) {
                    Ok(e) => Some(e),
                    Err(why) => {
                        log_rejected(BackendKind::Redis, key, &why);
                        None
                    }
                },
            },
        };
        let counter = if entry.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(entry)
    }

    async fn put(
        &self,
        key: &CacheKey,
        response: Arc<CachedResponse>,
        ttl: Duration,
    ) -> Result<()> {
        if ttl.is_zero() {
            self.delete(key).await?;
            return Ok(());
        }
        let value = self.encode(key, &response, ttl)?;
        // EX takes whole seconds; round up so an entry never expires before its TTL.
        let secs =
            i64::try_from(ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).unwrap_or(i64::MAX);
        let () = self
            .pool
            .set(
                self.redis_key(key),
                value,
                Some(Expiration::EX(secs)),
                None,
                false,
            )
            .await
            .map_err(redis_err)?;
        Ok(())
    }

    async fn delete(&self, key: &CacheKey) -> Result<bool> {
        let n: u64 = self
            .pool
            .del(self.redis_key(key))
            .await
            .map_err(redis_err)?;
        Ok(n > 0)
    }

    async fn clear_org(&self, org: &str) -> Result<u64> {
        let pattern = format!("{}:{}:*", escape_glob(&self.prefix), escape_org(org));
        self.unlink_matching(&pattern).await
    }

    async fn clear_all(&self) -> Result<u64> {
        let pattern = format!("{}:*", escape_glob(&self.prefix));
        self.unlink_matching(&pattern).await
    }

    async fn stats(&self) -> Result<BackendStats> {
        let text: String = self.pool.info(None::<InfoKind>).await.map_err(redis_err)?;
        let info = parse_info(&text);
        Ok(BackendStats {
            entries: Some(info.keys),
            bytes: info.used_memory,
            evictions: info.evicted_keys,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            server_hits: info.keyspace_hits,
            server_misses: info.keyspace_misses,
        })
    }

    async fn health(&self) -> Result<()> {
        let _: String = self.pool.ping(None).await.map_err(redis_err)?;
        Ok(())
    }
}

fn redis_err(e: fred::error::Error) -> Error {
    Error::backend(BackendKind::Redis, e)
}

/// Keeps `[A-Za-z0-9_.-]`, percent-encodes the rest, so the org segment never holds `:` or a
/// glob character and `{prefix}:{org}:*` matches exactly one organization's keys.
fn escape_org(org: &str) -> String {
    let mut out = String::with_capacity(org.len());
    for b in org.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Escapes the characters SCAN's MATCH treats as a pattern.
fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn frame(json: Vec<u8>, compress_above: usize) -> Bytes {
    if json.len() <= compress_above {
        let mut out = Vec::with_capacity(json.len() + 1);
        out.push(RAW);
        out.extend_from_slice(&json);
        return Bytes::from(out);
    }
    let compressed = lz4_flex::compress(&json);
    let mut out = Vec::with_capacity(compressed.len() + 5);
    out.push(LZ4);
    out.extend_from_slice(&u32::try_from(json.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&compressed);
    Bytes::from(out)
}

fn unframe(raw: &[u8], max_len: usize) -> std::result::Result<Vec<u8>, String> {
    match raw.split_first() {
        Some((&RAW, rest)) => Ok(rest.to_vec()),
        Some((&LZ4, rest)) => {
            let (len, body) = rest
                .split_first_chunk::<4>()
                .ok_or_else(|| "truncated length".to_owned())?;
            let len = u32::from_le_bytes(*len) as usize;
            // The length is read from Redis: check it before allocating.
            if len > max_len {
                return Err(format!(
                    "{len} bytes decompressed exceeds the {max_len} limit"
                ));
            }
            let out = lz4_flex::decompress(body, len).map_err(|e| e.to_string())?;
            if out.len() != len {
                return Err("decompressed length differs from the stored one".to_owned());
            }
            Ok(out)
        }
        Some((other, _)) => Err(format!("unknown value format {other}")),
        None => Err("empty value".to_owned()),
    }
}

/// The `INFO` figures the stats report.
#[derive(Debug, Default, PartialEq, Eq)]
struct RedisInfo {
    used_memory: Option<u64>,
    /// Sum of `keys=` over every `dbN` line.
    keys: u64,
    evicted_keys: Option<u64>,
    keyspace_hits: Option<u64>,
    keyspace_misses: Option<u64>,
}

/// Parses the `key:value` lines of `INFO`; unknown lines and section headers are skipped.
fn parse_info(text: &str) -> RedisInfo {
    let mut info = RedisInfo::default();
    for line in text.lines() {
        let Some((name, value)) = line.trim_end_matches('\r').split_once(':') else {
            continue;
        };
        let number = || value.trim().parse::<u64>().ok();
        match name {
            "used_memory" => info.used_memory = number(),
            "evicted_keys" => info.evicted_keys = number(),
            "keyspace_hits" => info.keyspace_hits = number(),
            "keyspace_misses" => info.keyspace_misses = number(),
            db if db.starts_with("db") && db[2..].bytes().all(|b| b.is_ascii_digit()) => {
                let keys = value
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("keys="))
                    .and_then(|n| n.parse::<u64>().ok());
                info.keys += keys.unwrap_or(0);
            }
            _ => {}
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_lines_parse() {
        let text = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n\r\n# Stats\r\n\
                    evicted_keys:3\r\nkeyspace_hits:10\r\nkeyspace_misses:4\r\n\r\n# Keyspace\r\n\
                    db0:keys=5,expires=5,avg_ttl=1000\r\ndb2:keys=7,expires=0,avg_ttl=0\r\n";
        assert_eq!(
            parse_info(text),
            RedisInfo {
                used_memory: Some(1_048_576),
                keys: 12,
                evicted_keys: Some(3),
                keyspace_hits: Some(10),
                keyspace_misses: Some(4),
            }
        );
        assert_eq!(parse_info("garbage\nno_colon_here"), RedisInfo::default());
    }

    #[test]
    fn org_escaping_keeps_orgs_apart_and_patterns_literal() {
        assert_eq!(escape_org("org_AZ-9.x"), "org_AZ-9.x");
        assert_eq!(escape_org("a:b"), "a%3Ab");
        assert_eq!(escape_org("a*"), "a%2A");
        // "a:b" must not be matched by org "a"'s pattern "{prefix}:a:*".
        assert!(!escape_org("a:b").contains(':'));
        assert_eq!(escape_glob("p*x?[y]\\"), "p\\*x\\?\\[y\\]\\\\");
    }

    #[test]
    fn frames_round_trip_and_large_values_shrink() {
        let small = b"{\"a\":1}".to_vec();
        let framed = frame(small.clone(), 1024);
        assert_eq!(framed[0], RAW);
        assert_eq!(unframe(&framed, 1 << 20).unwrap(), small);

        let large = format!("{{\"text\":\"{}\"}}", "abc ".repeat(2000)).into_bytes();
        let framed = frame(large.clone(), 1024);
        assert_eq!(framed[0], LZ4);
        assert!(framed.len() < large.len() / 4);
        assert_eq!(unframe(&framed, 1 << 20).unwrap(), large);
    }

    #[test]
    fn a_decompression_bomb_is_refused_before_allocating() {
        let mut framed = vec![LZ4];
        framed.extend_from_slice(&u32::MAX.to_le_bytes());
        framed.extend_from_slice(&[0; 8]);
        assert!(unframe(&framed, 1 << 20).unwrap_err().contains("limit"));
        assert!(unframe(&[9, 1, 2], 1 << 20).is_err());
        assert!(unframe(&[], 1 << 20).is_err());
    }
}
