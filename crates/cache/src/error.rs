//! The crate's error type.

use std::time::Duration;

use crate::BackendKind;

/// A boxed error from a backend's client library, kept as the source of [`Error::Backend`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in a cache backend.
///
/// The tiered cache never returns these from a lookup or a store (a fault there is a miss); they
/// reach callers of a single backend, of the constructors, and of the administrative operations
/// (delete, clear, stats, health).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend's client or server failed (connection refused, command error, SQL error…).
    #[error("{backend} cache: {source}")]
    Backend {
        backend: BackendKind,
        #[source]
        source: BoxError,
    },
    /// The backend did not answer within the tier's timeout.
    #[error("{backend} cache: no answer within {after:?}")]
    Timeout {
        backend: BackendKind,
        after: Duration,
    },
    /// The tier is skipped because its circuit breaker is open.
    #[error("{backend} cache: skipped while the tier recovers from errors")]
    CircuitOpen { backend: BackendKind },
    /// The PostgreSQL backend's migration failed.
    #[error("cache migration: {0}")]
    Migration(String),
    /// A configuration value is out of range; `field` names it.
    #[error("cache configuration `{field}`: {message}")]
    Config {
        field: &'static str,
        message: String,
    },
    /// A response could not be encoded for storage.
    #[error("cache entry could not be encoded: {0}")]
    Encode(#[source] serde_json::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn backend(backend: BackendKind, source: impl Into<BoxError>) -> Error {
        Error::Backend {
            backend,
            source: source.into(),
        }
    }
}
