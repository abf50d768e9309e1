//! Rate-limit overrides: per organization, or per API key inside one. The proxy's replicas poll
//! [`Store::limits_changed_since`] and so pick up a change within their refresh interval.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};

use crate::{Backend, Error, Result, Store, now_micros, pool_err};

diesel::table! {
    rate_limits (subject) {
        subject -> Text,
        org_id -> Text,
        key_id -> Nullable<Text>,
        requests_per_minute -> Nullable<BigInt>,
        request_burst -> Nullable<BigInt>,
        tokens_per_minute -> Nullable<BigInt>,
        token_burst -> Nullable<BigInt>,
        max_concurrent -> Nullable<BigInt>,
        updated_at -> BigInt,
    }
}

/// The limits an override sets. `None` keeps the configured default; `Some(0)` lifts the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitValues {
    #[serde(default)]
    pub requests_per_minute: Option<i64>,
    /// Requests that may arrive at once; defaults to `requests_per_minute`.
    #[serde(default)]
    pub request_burst: Option<i64>,
    #[serde(default)]
    pub tokens_per_minute: Option<i64>,
    /// Tokens one burst may use; defaults to `tokens_per_minute`.
    #[serde(default)]
    pub token_burst: Option<i64>,
    /// Requests in flight at once.
    #[serde(default)]
    pub max_concurrent: Option<i64>,
}

impl LimitValues {
    /// Checks every value is non-negative and a burst is not set on a lifted limit.
    pub fn validate(&self) -> Result<()> {
        let fields = [
            ("requests_per_minute", self.requests_per_minute),
            ("request_burst", self.request_burst),
            ("tokens_per_minute", self.tokens_per_minute),
            ("token_burst", self.token_burst),
            ("max_concurrent", self.max_concurrent),
        ];
        for (field, v) in fields {
            if let Some(v) = v
                && v < 0
            {
                return Err(Error::Invalid {
                    field: field.into(),
                    message: "must be 0 (no limit) or positive".into(),
                });
            }
        }
        if self.max_concurrent.is_some_and(|v| v > i64::from(u32::MAX)) {
            return Err(Error::Invalid {
                field: "max_concurrent".into(),
                message: "is too large".into(),
            });
        }
        Ok(())
    }

    /// Whether no value is set (the override is empty).
    pub fn is_empty(&self) -> bool {
        *self == LimitValues::default()
    }
}

/// One stored override.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Queryable, Selectable, Insertable)]
#[diesel(table_name = rate_limits)]
pub struct LimitOverride {
    /// The organization id, or the key id for a key's override.
    pub subject: String,
    pub org_id: String,
    pub key_id: Option<String>,
    pub requests_per_minute: Option<i64>,
    pub request_burst: Option<i64>,
    pub tokens_per_minute: Option<i64>,
    pub token_burst: Option<i64>,
    pub max_concurrent: Option<i64>,
    /// Unix microseconds of the last change.
    pub updated_at: i64,
}

impl LimitOverride {
    pub fn values(&self) -> LimitValues {
        LimitValues {
            requests_per_minute: self.requests_per_minute,
            request_burst: self.request_burst,
            tokens_per_minute: self.tokens_per_minute,
            token_burst: self.token_burst,
            max_concurrent: self.max_concurrent,
        }
    }
}

impl Store {
    /// Sets (replaces) the override of an organization, or of one of its keys when `key_id` is
    /// given. Empty `values` reset it to the configured defaults.
    pub async fn set_limits(
        &self,
        org_id: &str,
        key_id: Option<&str>,
        values: &LimitValues,
    ) -> Result<LimitOverride> {
        values.validate()?;
        let row = LimitOverride {
            subject: key_id.unwrap_or(org_id).to_owned(),
            org_id: org_id.to_owned(),
            key_id: key_id.map(str::to_owned),
            requests_per_minute: values.requests_per_minute,
            request_burst: values.request_burst,
            tokens_per_minute: values.tokens_per_minute,
            token_burst: values.token_burst,
            max_concurrent: values.max_concurrent,
            updated_at: now_micros(),
        };
        with_conn!(self, |conn| {
            diesel::insert_into(rate_limits::table)
                .values(&row)
                .on_conflict(rate_limits::subject)
                .do_update()
                .set((
                    rate_limits::requests_per_minute.eq(row.requests_per_minute),
                    rate_limits::request_burst.eq(row.request_burst),
                    rate_limits::tokens_per_minute.eq(row.tokens_per_minute),
                    rate_limits::token_burst.eq(row.token_burst),
                    rate_limits::max_concurrent.eq(row.max_concurrent),
                    rate_limits::updated_at.eq(row.updated_at),
                ))
                .execute(conn)
                .await?;
            Ok::<(), Error>(())
        })?;
        Ok(row)
    }

    /// The override of an organization or key id, if one was ever set.
    pub async fn limits(&self, subject: &str) -> Result<Option<LimitOverride>> {
        with_conn!(self, |conn| {
            Ok(rate_limits::table
                .find(subject)
                .select(LimitOverride::as_select())
                .first(conn)
                .await
                .optional()?)
        })
    }

    /// Overrides changed at or after `since` (Unix microseconds), oldest first.
    pub async fn limits_changed_since(&self, since: i64) -> Result<Vec<LimitOverride>> {
        with_conn!(self, |conn| {
            Ok(rate_limits::table
                .filter(rate_limits::updated_at.ge(since))
                .order(rate_limits::updated_at.asc())
                .select(LimitOverride::as_select())
                .load(conn)
                .await?)
        })
    }
}
