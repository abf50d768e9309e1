//! Organizations, hashed API keys and the usage ledger, on PostgreSQL or SQLite.
//!
//! One [`Store`] API over two backends: PostgreSQL through pooled `diesel-async` connections
//! (`postgres://…`) for production, and a SQLite file (the embedded default) for one process on a
//! laptop. Both run the same embedded migrations and the same queries: times are Unix
//! microseconds and money integer picodollars, so no type differs between them.
//!
//! - [`Authenticator`] verifies API keys (constant-time hash comparison) behind a short-lived
//!   in-process cache, so the database is off the request path.
//! - [`Ledger`] takes one [`UsageRecord`] per request without ever waiting on the database: a
//!   bounded queue feeds a batch writer; while the database is away records go to an append-only
//!   spill file and are written, exactly once, when it is back.
//!
//! ```
//! use cognitude_store::{Store, keys};
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! let dir = std::env::temp_dir().join(format!("cognitude-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let store = Store::connect(&format!("sqlite://{}/doc.db", dir.display())).await.unwrap();
//! store.migrate().await.unwrap();
//! let org = store.create_org("acme").await.unwrap();
//! let created = store.create_key(&org.id, "ci").await.unwrap();
//! // The secret is returned once; only its hash is stored.
//! assert!(keys::parse(&created.secret).is_some());
//! let listed = store.list_keys(Some(&org.id)).await.unwrap();
//! assert_eq!(listed[0].prefix, created.key.prefix);
//! # std::fs::remove_dir_all(&dir).ok();
//! # });
//! ```

mod auth;
pub mod keys;
mod ledger;
mod models;
mod schema;

use std::time::Duration;

use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

pub use alerting::{
    AlertChannelRow, AlertDeliveryRow, AlertFiringRow, AlertRuleRow, CostGroup, CostShare,
    DigestScheduleRow, UsageSummary,
};
pub use analytics::{
    BreakdownGroup, GroupBy, LATENCY_BOUNDS_MS, LedgerRow, RealisedSavings, UsageScan,
};
pub use auth::{AuthOutcome, AuthedKey, Authenticator};
pub use ledger::{Ledger, LedgerOptions, LedgerStats};
pub use limits::{LimitOverride, LimitValues};
pub use models::{ApiKey, Org, UsagePage, UsageRecord};

use models::KeyRow;
use schema::{api_keys, organizations, usage_records};

const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

type SqliteAsync = SyncConnectionWrapper<SqliteConnection>;

/// A store failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("unsupported database URL '{0}': use postgres://… or sqlite://PATH")]
    Url(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database query failed: {0}")]
    Query(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    #[error("no secure random numbers: {0}")]
    Random(String),
    #[error("spill file: {0}")]
    Spill(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<diesel::result::Error> for Error {
    fn from(e: diesel::result::Error) -> Error {
        use diesel::result::{DatabaseErrorKind, Error as D};
        match e {
            D::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                Error::Conflict(info.message().to_owned())
            }
            D::NotFound => Error::NotFound("row".into()),
            D::DatabaseError(DatabaseErrorKind::ClosedConnection, info) => {
                Error::Unavailable(info.message().to_owned())
            }
            other => Error::Query(other.to_string()),
        }
    }
}

fn pool_err(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(e.to_string())
}

/// Which database a store uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Postgres,
    Sqlite,
}

#[derive(Clone)]
enum Backend {
    Pg(Pool<AsyncPgConnection>),
    Sqlite(Pool<SqliteAsync>),
}

/// The store: a connection pool and the queries on it.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    url: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.kind())
            .field("url", &redact_url(&self.url))
            .finish()
    }
}

/// Runs `$body` with `$conn` bound to a pooled connection of whichever backend the store has.
/// The body is the same diesel DSL for both: it is compiled once per backend.
macro_rules! with_conn {
    ($store:expr, |$conn:ident| $body:expr) => {
        match &$store.backend {
            Backend::Pg(pool) => {
                let mut guard = pool.get().await.map_err(pool_err)?;
                let $conn = &mut *guard;
                $body
            }
            Backend::Sqlite(pool) => {
                let mut guard = pool.get().await.map_err(pool_err)?;
                let $conn = &mut *guard;
                $body
            }
        }
    };
}

mod alerting;
mod analytics;
mod limits;
mod rollup;
mod usage_insert;

/// The password of a URL replaced by `***`, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The current time in Unix microseconds.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// A key just created: the listing form and the secret, which is never retrievable again.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CreatedKey {
    pub key: ApiKey,
    pub secret: String,
}

impl Store {
    /// Connects to `postgres://…` / `postgresql://…`, or to a SQLite file given as
    /// `sqlite://PATH`, `sqlite:PATH` or a bare path. Does not run migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        Store::connect_with(url, 16, Duration::from_secs(5)).await
    }

    /// [`Store::connect`] with a pool size and the time to wait for a connection.
    pub async fn connect_with(url: &str, pool_size: u32, timeout: Duration) -> Result<Store> {
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
            let pool = Pool::builder()
                .max_size(pool_size)
                .connection_timeout(timeout)
                .retry_connection(false)
                .build_unchecked(manager);
            Backend::Pg(pool)
        } else {
            let path = sqlite_path(url)?;
            if let Some(parent) = std::path::Path::new(&path).parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent).map_err(|e| {
                    Error::Unavailable(format!("cannot create {}: {e}", parent.display()))
                })?;
            }
            let mut config = ManagerConfig::<SqliteAsync>::default();
            config.custom_setup = Box::new(|url| {
                Box::pin(async move {
                    let mut conn = SqliteAsync::establish(url).await?;
                    // WAL lets readers run beside the ledger writer; the busy timeout makes
                    // writers queue instead of failing.
                    conn.batch_execute(
                        "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; \
                         PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;",
                    )
                    .await
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                    Ok(conn)
                })
            });
            let manager =
                AsyncDieselConnectionManager::<SqliteAsync>::new_with_config(path, config);
            let pool = Pool::builder()
                .max_size(pool_size.clamp(1, 4))
                .connection_timeout(timeout)
                .build_unchecked(manager);
            Backend::Sqlite(pool)
        };
        Ok(Store {
            backend,
            url: url.to_owned(),
        })
    }

    pub fn kind(&self) -> BackendKind {
        match self.backend {
            Backend::Pg(_) => BackendKind::Postgres,
            Backend::Sqlite(_) => BackendKind::Sqlite,
        }
    }

    /// Runs the embedded migrations that have not run yet.
    pub async fn migrate(&self) -> Result<()> {
        let url = self.url.clone();
        let kind = self.kind();
        tokio::task::spawn_blocking(move || -> Result<()> {
            match kind {
                BackendKind::Postgres => {
                    use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
                    let mut conn =
                        <AsyncConnectionWrapper<AsyncPgConnection> as diesel::Connection>::establish(
                            &url,
                        )
                        .map_err(pool_err)?;
                    conn.run_pending_migrations(PG_MIGRATIONS)
                        .map_err(|e| Error::Migration(e.to_string()))?;
                }
                BackendKind::Sqlite => {
                    let mut conn = <SqliteConnection as diesel::Connection>::establish(
                        &sqlite_path(&url)?,
                    )
                    .map_err(pool_err)?;
                    conn.run_pending_migrations(SQLITE_MIGRATIONS)
                        .map_err(|e| Error::Migration(e.to_string()))?;
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::Migration(e.to_string()))?
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> Result<()> {
        with_conn!(self, |conn| {
            diesel::sql_query("SELECT 1").execute(conn).await?;
            Ok(())
        })
    }

    // ---- organizations -------------------------------------------------------------------

    pub async fn create_org(&self, name: &str) -> Result<Org> {
        let name = validate_name("name", name)?;
        let org = Org {
            id: keys::new_id("org")?,
            name: name.to_owned(),
            created_at: now_micros(),
        };
        with_conn!(self, |conn| {
            diesel::insert_into(organizations::table)
                .values(&org)
                .execute(conn)
                .await
                .map_err(|e| match Error::from(e) {
                    Error::Conflict(_) => Error::Conflict(format!("organization '{name}'")),
                    other => other,
                })?;
        });
        Ok(org)
    }

    pub async fn list_orgs(&self) -> Result<Vec<Org>> {
        with_conn!(self, |conn| {
            Ok(organizations::table
                .order(organizations::created_at.asc())
                .select(Org::as_select())
                .load(conn)
                .await?)
        })
    }

    pub async fn org(&self, id: &str) -> Result<Option<Org>> {
        with_conn!(self, |conn| {
            Ok(organizations::table
                .find(id)
                .select(Org::as_select())
                .first(conn)
                .await
                .optional()?)
        })
    }

    pub async fn org_by_name(&self, name: &str) -> Result<Option<Org>> {
        with_conn!(self, |conn| {
            Ok(organizations::table
                .filter(organizations::name.eq(name))
                .select(Org::as_select())
                .first(conn)
                .await
                .optional()?)
        })
    }

    /// Deletes an organization and its keys. Its ledger records stay (they are history).
    pub async fn delete_org(&self, id: &str) -> Result<bool> {
        with_conn!(self, |conn| {
            diesel::delete(api_keys::table.filter(api_keys::org_id.eq(id)))
                .execute(conn)
                .await?;
            let n = diesel::delete(organizations::table.find(id))
                .execute(conn)
                .await?;
            Ok(n > 0)
        })
    }

    pub async fn count_orgs(&self) -> Result<i64> {
        with_conn!(self, |conn| {
            Ok(organizations::table.count().get_result(conn).await?)
        })
    }

    // ---- API keys ------------------------------------------------------------------------

    /// Creates a key for an organization. The secret is in the result and nowhere else.
    pub async fn create_key(&self, org_id: &str, name: &str) -> Result<CreatedKey> {
        let name = validate_name("name", name)?;
        if self.org(org_id).await?.is_none() {
            return Err(Error::NotFound(format!("organization '{org_id}'")));
        }
        let (secret, prefix) = keys::generate()?;
        let row = KeyRow {
            id: keys::new_id("key")?,
            org_id: org_id.to_owned(),
            name: name.to_owned(),
            prefix,
            secret_hash: keys::hash(&secret),
            created_at: now_micros(),
            last_used_at: None,
            revoked_at: None,
        };
        with_conn!(self, |conn| {
            diesel::insert_into(api_keys::table)
                .values(&row)
                .execute(conn)
                .await?;
        });
        Ok(CreatedKey {
            key: row.into(),
            secret,
        })
    }

    /// Keys (never secrets), of one organization or of all.
    pub async fn list_keys(&self, org_id: Option<&str>) -> Result<Vec<ApiKey>> {
        with_conn!(self, |conn| {
            let mut q = api_keys::table
                .order(api_keys::created_at.asc())
                .select(KeyRow::as_select())
                .into_boxed();
            if let Some(o) = org_id {
                q = q.filter(api_keys::org_id.eq(o.to_owned()));
            }
            let rows: Vec<KeyRow> = q.load(conn).await?;
            Ok(rows.into_iter().map(ApiKey::from).collect())
        })
    }

    /// Revokes the key with this prefix. `Ok(None)` if there is none; the key otherwise.
    pub async fn revoke_key(&self, prefix: &str) -> Result<Option<ApiKey>> {
        let now = now_micros();
        with_conn!(self, |conn| {
            diesel::update(
                api_keys::table
                    .filter(api_keys::prefix.eq(prefix))
                    .filter(api_keys::revoked_at.is_null()),
            )
            .set(api_keys::revoked_at.eq(Some(now)))
            .execute(conn)
            .await?;
            let row: Option<KeyRow> = api_keys::table
                .filter(api_keys::prefix.eq(prefix))
                .select(KeyRow::as_select())
                .first(conn)
                .await
                .optional()?;
            Ok(row.map(ApiKey::from))
        })
    }

    /// The key with this public prefix (`cgk_…`), revoked or not.
    pub async fn key(&self, prefix: &str) -> Result<Option<ApiKey>> {
        Ok(self.key_by_prefix(prefix).await?.map(ApiKey::from))
    }

    pub(crate) async fn key_by_prefix(&self, prefix: &str) -> Result<Option<KeyRow>> {
        with_conn!(self, |conn| {
            Ok(api_keys::table
                .filter(api_keys::prefix.eq(prefix))
                .select(KeyRow::as_select())
                .first(conn)
                .await
                .optional()?)
        })
    }

    pub(crate) async fn touch_key(&self, id: &str, at: i64) -> Result<()> {
        with_conn!(self, |conn| {
            diesel::update(api_keys::table.find(id))
                .set(api_keys::last_used_at.eq(Some(at)))
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    // ---- the ledger ----------------------------------------------------------------------

    /// Inserts records; a record whose `id` is already there is skipped, so a batch can be
    /// written again after a failure without duplicates. Returns how many were new.
    ///
    /// In the same transaction, the hourly rollups the breakdown reads
    /// (`usage_dimension_rollups`, one row per dimension value) are incremented by exactly the
    /// records inserted, never by skipped ones, so a replayed batch changes nothing there
    /// either.
    pub async fn insert_usage(&self, records: &[UsageRecord]) -> Result<usize> {
        use diesel::sql_types::Text;
        if records.is_empty() {
            return Ok(0);
        }
        let kind = self.kind();
        let mut inserted = 0;
        // One transaction per 500 records keeps each short.
        for chunk in records.chunks(500) {
            inserted += match &self.backend {
                Backend::Pg(pool) => {
                    let mut conn = pool.get().await.map_err(pool_err)?;
                    // Fresh records, the ledger's normal case, go in with a plain insert. Only a
                    // batch holding a record already written (a replay after a lost commit
                    // acknowledgement) fails it, and is written again skipping those.
                    match pg_insert_usage(&mut conn, chunk, false).await {
                        Err(diesel::result::Error::DatabaseError(
                            diesel::result::DatabaseErrorKind::UniqueViolation,
                            _,
                        )) => pg_insert_usage(&mut conn, chunk, true).await?,
                        other => other?,
                    }
                }
                // SQLite has no multi-row insert with ON CONFLICT in diesel; one transaction
                // of single-row inserts is as fast there (no network round trips), and each
                // says whether its record was new.
                Backend::Sqlite(pool) => {
                    let mut conn = pool.get().await.map_err(pool_err)?;
                    conn.transaction::<usize, diesel::result::Error, _>(async |conn| {
                        let mut new = Vec::with_capacity(chunk.len());
                        for r in chunk {
                            let n = diesel::insert_into(usage_records::table)
                                .values(r)
                                .on_conflict(usage_records::id)
                                .do_nothing()
                                .execute(conn)
                                .await?;
                            if n > 0 {
                                new.push(r);
                            }
                        }
                        let n = new.len();
                        for (sql, binds) in rollup::upserts(&rollup::aggregate(new, kind), kind) {
                            let mut q =
                                diesel::sql_query(sql).into_boxed::<diesel::sqlite::Sqlite>();
                            for b in binds {
                                q = q.bind::<Text, _>(b);
                            }
                            q.execute(conn).await?;
                        }
                        Ok(n)
                    })
                    .await?
                }
            };
        }
        Ok(inserted)
    }

    /// A page of an organization's records in `[from, to)` (Unix microseconds), newest first.
    pub async fn list_usage(
        &self,
        org_id: &str,
        from: Option<i64>,
        to: Option<i64>,
        limit: i64,
        cursor: Option<&str>,
    ) -> Result<UsagePage> {
        let limit = limit.clamp(1, 1000);
        let after = match cursor {
            Some(c) => Some(parse_cursor(c)?),
            None => None,
        };
        let mut records: Vec<UsageRecord> = with_conn!(self, |conn| {
            let mut q = usage_records::table
                .filter(usage_records::org_id.eq(org_id.to_owned()))
                .select(UsageRecord::as_select())
                .order((usage_records::created_at.desc(), usage_records::id.desc()))
                .limit(limit + 1)
                .into_boxed();
            if let Some(f) = from {
                q = q.filter(usage_records::created_at.ge(f));
            }
            if let Some(t) = to {
                q = q.filter(usage_records::created_at.lt(t));
            }
            if let Some((ts, id)) = after {
                q = q.filter(
                    usage_records::created_at
                        .lt(ts)
                        .or(usage_records::created_at
                            .eq(ts)
                            .and(usage_records::id.lt(id))),
                );
            }
            q.load(conn).await?
        });
        let next_cursor = if records.len() as i64 > limit {
            records.truncate(limit as usize);
            records.last().map(|r| format!("{}.{}", r.created_at, r.id))
        } else {
            None
        };
        Ok(UsagePage {
            records,
            next_cursor,
        })
    }

    /// How many records an organization has and their total cost in picodollars (exact).
    pub async fn usage_totals(&self, org_id: &str) -> Result<(i64, i128)> {
        let costs: Vec<i64> = with_conn!(self, |conn| {
            usage_records::table
                .filter(usage_records::org_id.eq(org_id.to_owned()))
                .select(usage_records::cost_pico)
                .load(conn)
                .await?
        });
        Ok((
            costs.len() as i64,
            costs.iter().map(|&c| i128::from(c)).sum(),
        ))
    }

    /// Every record id of an organization (for reconciliation and tests).
    pub async fn usage_ids(&self, org_id: &str) -> Result<Vec<String>> {
        with_conn!(self, |conn| {
            Ok(usage_records::table
                .filter(usage_records::org_id.eq(org_id.to_owned()))
                .select(usage_records::id)
                .load(conn)
                .await?)
        })
    }
}

/// Requests, savings and tokens of one cache status, from the ledger.
#[derive(Debug, Clone, PartialEq, Eq, diesel::QueryableByName)]
pub struct CacheSummaryRow {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub cache_status: Option<String>,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub requests: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub saved_pico: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub tokens: i64,
}

impl Store {
    /// An organization's requests per cache status since `since` (Unix microseconds), summed in
    /// SQL on either backend.
    pub async fn cache_summary(&self, org_id: &str, since: i64) -> Result<Vec<CacheSummaryRow>> {
        use diesel::sql_types::{BigInt, Text};
        let (p1, p2) = match self.kind() {
            BackendKind::Postgres => ("$1", "$2"),
            BackendKind::Sqlite => ("?", "?"),
        };
        let sql = format!(
            "SELECT cache_status, CAST(COUNT(*) AS BIGINT) AS requests, \
             CAST(COALESCE(SUM(cache_saved_pico), 0) AS BIGINT) AS saved_pico, \
             CAST(COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS BIGINT) AS tokens \
             FROM usage_records WHERE org_id = {p1} AND created_at >= {p2} \
             GROUP BY cache_status ORDER BY cache_status"
        );
        with_conn!(self, |conn| {
            Ok(diesel::sql_query(sql.clone())
                .bind::<Text, _>(org_id)
                .bind::<BigInt, _>(since)
                .load::<CacheSummaryRow>(conn)
                .await?)
        })
    }
}

fn parse_cursor(c: &str) -> Result<(i64, String)> {
    let invalid = || Error::Invalid {
        field: "cursor".into(),
        message: "is not a cursor returned by this endpoint".into(),
    };
    let (ts, id) = c.split_once('.').ok_or_else(invalid)?;
    let ts: i64 = ts.parse().map_err(|_| invalid())?;
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(invalid());
    }
    Ok((ts, id.to_owned()))
}

/// Names are free text (quotes, emoji, any script) but not empty, not control characters, and
/// not longer than 200 characters.
fn validate_name<'a>(field: &str, name: &'a str) -> Result<&'a str> {
    let t = name.trim();
    let invalid = |message: &str| Error::Invalid {
        field: field.to_owned(),
        message: message.to_owned(),
    };
    if t.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if t.chars().count() > 200 {
        return Err(invalid("must be at most 200 characters"));
    }
    if t.chars().any(char::is_control) {
        return Err(invalid("must not contain control characters"));
    }
    Ok(t)
}

fn sqlite_path(url: &str) -> Result<String> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    if path.is_empty() || path.contains("://") {
        return Err(Error::Url(url.to_owned()));
    }
    Ok(path.to_owned())
}

/// One transaction: the records (see [`usage_insert::insert`]) and the rollups of those
/// inserted.
async fn pg_insert_usage(
    conn: &mut diesel_async::AsyncPgConnection,
    chunk: &[UsageRecord],
    skip_existing: bool,
) -> diesel::QueryResult<usize> {
    use diesel::sql_types::Text;
    use diesel_async::AsyncConnection;
    conn.transaction::<usize, diesel::result::Error, _>(async |conn| {
        let ids = usage_insert::insert(conn, chunk, skip_existing).await?;
        let new = rollup::inserted(chunk, &ids);
        for (sql, binds) in rollup::upserts(
            &rollup::aggregate(new, BackendKind::Postgres),
            BackendKind::Postgres,
        ) {
            let mut q = diesel::sql_query(sql).into_boxed::<diesel::pg::Pg>();
            for b in binds {
                q = q.bind::<Text, _>(b);
            }
            q.execute(conn).await?;
        }
        Ok(ids.len())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(sqlite_path("sqlite://./x.db").unwrap(), "./x.db");
        assert_eq!(sqlite_path("x.db").unwrap(), "x.db");
        assert!(sqlite_path("mysql://h/db").is_err());
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn names() {
        assert!(validate_name("name", "  ").is_err());
        assert!(validate_name("name", "a\u{0}b").is_err());
        assert_eq!(
            validate_name("name", " O'Brien; DROP TABLE x;-- ").unwrap(),
            "O'Brien; DROP TABLE x;--"
        );
        assert!(validate_name("name", "שלום 🚀").is_ok());
    }

    #[test]
    fn cursors() {
        assert_eq!(parse_cursor("12.rec_ab").unwrap(), (12, "rec_ab".into()));
        assert!(parse_cursor("x.y").is_err());
        assert!(parse_cursor("12.a'b").is_err());
    }
}
