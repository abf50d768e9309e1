//! The shared cold tier: one PostgreSQL table through diesel-async and a bb8 pool.
//!
//! The table lives in a configurable schema (every pooled connection sets `search_path` to it),
//! so the cache keeps its own migration history and tests can isolate in a schema of their own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use diesel::sql_types::{BigInt, Bytea, Double, Text};
use diesel::{OptionalExtension, QueryableByName};
use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::entry::{decode_envelope, encode_envelope, log_rejected, unix_ms};
use crate::{BackendKind, BackendStats, Cache, CacheKey, CachedResponse, Entry, Error, Result};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Any constant shared by every replica: serializes concurrent migrations at start-up.
const MIGRATION_LOCK: i64 = 0x636f_676e_6361_6368; // "cogncach"

/// How to reach PostgreSQL and where the table lives.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PostgresConfig {
    /// `postgres://user[:password]@host[:port]/database`.
    pub url: String,
    /// Schema of the cache table; created if missing. Letters, digits and `_`.
    pub schema: String,
    /// Connections in the pool.
    pub pool_size: u32,
    /// How long to wait for a pooled connection.
    pub connect_timeout: Duration,
    /// Rows deleted per statement by [`Cache::purge_expired`].
    pub purge_batch: i64,
}

impl PostgresConfig {
    pub fn new(url: impl Into<String>) -> PostgresConfig {
        PostgresConfig {
            url: url.into(),
            schema: "cognitude_cache".to_owned(),
            pool_size: 8,
            connect_timeout: Duration::from_secs(2),
            purge_batch: 10_000,
        }
    }
}

type PgPool = Pool<AsyncPgConnection>;

/// The PostgreSQL tier.
pub struct PostgresCache {
    pool: PgPool,
    schema: String,
    purge_batch: i64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for PostgresCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresCache")
            .field("schema", &self.schema)
            .field("pool", &self.pool.state())
            .finish()
    }
}

impl PostgresCache {
    /// Creates the schema if needed, runs the cache's migrations in it, and builds the pool.
    pub async fn connect(config: PostgresConfig) -> Result<PostgresCache> {
        validate(&config)?;
        PostgresCache::migrate(&config).await?;
        PostgresCache::connect_lazy(config).await
    }

    /// Creates the schema if needed and runs the cache's pending migrations in it (what
    /// [`PostgresCache::connect`] does first; for a `migrate` command).
    pub async fn migrate(config: &PostgresConfig) -> Result<()> {
        validate(config)?;
        migrate(&config.url, &config.schema).await
    }

    /// Builds the pool without connecting or migrating: connections are made on first use, so
    /// this succeeds while PostgreSQL is away. The table must exist by the time it is used.
    pub async fn connect_lazy(config: PostgresConfig) -> Result<PostgresCache> {
        validate(&config)?;
        let set_path = format!("SET search_path TO {}", quote_ident(&config.schema));
        let mut manager_config = ManagerConfig::<AsyncPgConnection>::default();
        // A broken connection fails its first query and the breaker counts it; a test query on
        // every checkout would add a round trip to every lookup.
        manager_config.recycling_method = RecyclingMethod::Fast;
        manager_config.custom_setup = Box::new(move |url| {
            let set_path = set_path.clone();
            Box::pin(async move {
                let mut conn = AsyncPgConnection::establish(url).await?;
                conn.batch_execute(&set_path)
                    .await
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                Ok(conn)
            })
        });
        let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
            &config.url,
            manager_config,
        );
        let pool = Pool::builder()
            .max_size(config.pool_size)
            .connection_timeout(config.connect_timeout)
            .retry_connection(false)
            .build_unchecked(manager);
        Ok(PostgresCache {
            pool,
            schema: config.schema,
            purge_batch: config.purge_batch,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// The schema the table lives in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    async fn conn(
        &self,
    ) -> Result<diesel_async::pooled_connection::bb8::PooledConnection<'_, AsyncPgConnection>> {
        self.pool.get().await.map_err(pg_err)
    }
}

#[derive(QueryableByName)]
struct PayloadRow {
    #[diesel(sql_type = Bytea)]
    payload: Vec<u8>,
}

#[derive(QueryableByName)]
struct SizeRow {
    #[diesel(sql_type = BigInt)]
    rows: i64,
    #[diesel(sql_type = BigInt)]
    bytes: i64,
}

#[async_trait]
impl Cache for PostgresCache {
    fn kind(&self) -> BackendKind {
        BackendKind::Postgres
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<Entry>> {
        let mut conn = self.conn().await?;
        // Reading counts the hit in the same statement.
        let row: Option<PayloadRow> = diesel::sql_query(
            "UPDATE cache_entries SET hit_count = hit_count + 1, last_hit = now() \
             WHERE key_hash = $1 AND org = $2 AND expires > now() RETURNING payload",
        )
        .bind::<Bytea, _>(key.digest().as_slice())
        .bind::<Text, _>(key.org())
        .get_result(&mut conn)
        .await
        .optional()
        .map_err(pg_err)?;
        let entry = row.and_then(|r| match decode_envelope(key, &r.payload) {
            Ok(e) => Some(e),
            Err(why) => {
                log_rejected(BackendKind::Postgres, key, &why);
                None
            }
        });
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
        let expires_at = SystemTime::now() + ttl;
        let payload = encode_envelope(key, &response, expires_at)?;
        let expires_secs = unix_ms(expires_at) as f64 / 1000.0;
        let mut conn = self.conn().await?;
        // The WHERE keeps a row of another organization untouched (the digest covers the org,
        // so this only matters if that guarantee were ever broken).
        diesel::sql_query(
            "INSERT INTO cache_entries (key_hash, org, payload, created, expires, hit_count, last_hit) \
             VALUES ($1, $2, $3, now(), to_timestamp($4), 0, NULL) \
             ON CONFLICT (key_hash) DO UPDATE SET payload = EXCLUDED.payload, \
               created = EXCLUDED.created, expires = EXCLUDED.expires, hit_count = 0, last_hit = NULL \
             WHERE cache_entries.org = EXCLUDED.org",
        )
        .bind::<Bytea, _>(key.digest().as_slice())
        .bind::<Text, _>(key.org())
        .bind::<Bytea, _>(payload)
        .bind::<Double, _>(expires_secs)
        .execute(&mut conn)
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    async fn delete(&self, key: &CacheKey) -> Result<bool> {
        let mut conn = self.conn().await?;
        let n = diesel::sql_query("DELETE FROM cache_entries WHERE key_hash = $1 AND org = $2")
            .bind::<Bytea, _>(key.digest().as_slice())
            .bind::<Text, _>(key.org())
            .execute(&mut conn)
            .await
            .map_err(pg_err)?;
        Ok(n > 0)
    }

    async fn clear_org(&self, org: &str) -> Result<u64> {
        let mut conn = self.conn().await?;
        let n = diesel::sql_query("DELETE FROM cache_entries WHERE org = $1")
            .bind::<Text, _>(org)
            .execute(&mut conn)
            .await
            .map_err(pg_err)?;
        Ok(n as u64)
    }

    async fn clear_all(&self) -> Result<u64> {
        let mut conn = self.conn().await?;
        let n = diesel::sql_query("DELETE FROM cache_entries")
            .execute(&mut conn)
            .await
            .map_err(pg_err)?;
        Ok(n as u64)
    }

    async fn stats(&self) -> Result<BackendStats> {
        let mut conn = self.conn().await?;
        let row: SizeRow = diesel::sql_query(
            "SELECT count(*)::bigint AS rows, \
             pg_total_relation_size('cache_entries')::bigint AS bytes FROM cache_entries",
        )
        .get_result(&mut conn)
        .await
        .map_err(pg_err)?;
        Ok(BackendStats {
            entries: u64::try_from(row.rows).ok(),
            bytes: u64::try_from(row.bytes).ok(),
            evictions: None,
            // Spelled out: diesel's `RunQueryDsl::load` is in scope for every type.
            hits: AtomicU64::load(&self.hits, Ordering::Relaxed),
            misses: AtomicU64::load(&self.misses, Ordering::Relaxed),
            server_hits: None,
            server_misses: None,
        })
    }

    async fn health(&self) -> Result<()> {
        let mut conn = self.conn().await?;
        diesel::sql_query("SELECT 1")
            .execute(&mut conn)
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    /// Deletes expired rows in batches of `purge_batch`, so no statement holds locks for long.
    async fn purge_expired(&self) -> Result<u64> {
        let mut total = 0u64;
        loop {
            let mut conn = self.conn().await?;
            let n = diesel::sql_query(
                "DELETE FROM cache_entries WHERE key_hash IN \
                 (SELECT key_hash FROM cache_entries WHERE expires <= now() LIMIT $1)",
            )
            .bind::<BigInt, _>(self.purge_batch)
            .execute(&mut conn)
            .await
            .map_err(pg_err)?;
            total += n as u64;
            if (n as i64) < self.purge_batch {
                return Ok(total);
            }
        }
    }
}

/// Runs the embedded migrations in `schema`. diesel_migrations is synchronous and diesel-async's
/// async harness panics on a current-thread runtime, so this runs on a blocking thread through
/// `AsyncConnectionWrapper`.
async fn migrate(url: &str, schema: &str) -> Result<()> {
    let url = url.to_owned();
    let setup = format!(
        "SELECT pg_advisory_lock({MIGRATION_LOCK}); \
         CREATE SCHEMA IF NOT EXISTS {schema}; SET search_path TO {schema};",
        schema = quote_ident(schema)
    );
    tokio::task::spawn_blocking(move || -> Result<()> {
        use diesel::connection::SimpleConnection;
        use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
        let mut conn =
            <AsyncConnectionWrapper<AsyncPgConnection> as diesel::Connection>::establish(&url)
                .map_err(pg_err)?;
        SimpleConnection::batch_execute(&mut conn, &setup).map_err(pg_err)?;
        let ran = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|_| ())
            .map_err(|e| Error::Migration(e.to_string()));
        // The lock also ends with the session; unlocking early lets the next replica go on.
        let _ = SimpleConnection::batch_execute(
            &mut conn,
            &format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"),
        );
        ran
    })
    .await
    .map_err(|e| Error::Migration(e.to_string()))?
}

fn validate(config: &PostgresConfig) -> Result<()> {
    validate_schema(&config.schema)?;
    if config.pool_size == 0 {
        return Err(Error::Config {
            field: "pool_size",
            message: "must be at least 1".into(),
        });
    }
    if config.purge_batch < 1 {
        return Err(Error::Config {
            field: "purge_batch",
            message: "must be at least 1".into(),
        });
    }
    Ok(())
}

fn validate_schema(schema: &str) -> Result<()> {
    let mut chars = schema.chars();
    let valid_start = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if valid_start && schema.len() <= 63 && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(Error::Config {
            field: "schema",
            message: format!(
                "{schema:?} must be 1 to 63 letters, digits or _, not starting with a digit"
            ),
        })
    }
}

fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn pg_err(e: impl Into<crate::error::BoxError>) -> Error {
    Error::backend(BackendKind::Postgres, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_validated() {
        for ok in ["cognitude_cache", "_x", "Cache1"] {
            assert!(validate_schema(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1abc", "a-b", "a;drop", "a\"b", &"x".repeat(64)] {
            assert!(
                matches!(
                    validate_schema(bad),
                    Err(Error::Config {
                        field: "schema",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
