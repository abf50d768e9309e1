//! `/admin/*` (organizations and keys, behind the admin key) and `GET /v1/usage`.

use std::sync::Arc;

use bytes::Bytes;
use cognitude_store::{Error as StoreError, LimitValues};
use http::{Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::body::ResponseBody;
use crate::error::ApiError;
use crate::json_response;
use crate::state::AppState;

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Conflict(what) => ApiError::Conflict(what),
            StoreError::NotFound(what) => ApiError::ResourceNotFound(what),
            StoreError::Invalid { field, message } => {
                ApiError::invalid(format!("invalid '{field}': {message}"), Some(field))
            }
            other => {
                tracing::warn!(error = %other, "store request failed");
                ApiError::Unavailable("The database is unavailable; retry shortly.".into())
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameBody {
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    #[serde(default)]
    name: Option<String>,
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    cognitude_protocol::parse_json(body).map_err(|e| ApiError::invalid(e.message, e.field))
}

/// Routes `/admin/...` for a caller already checked to be the admin.
pub(crate) async fn handle(
    state: &Arc<AppState>,
    method: &Method,
    path: &str,
    body: Bytes,
) -> Result<Response<ResponseBody>, ApiError> {
    let segments: Vec<&str> = path
        .trim_start_matches("/admin/")
        .trim_end_matches('/')
        .split('/')
        .collect();
    let store = state.store();
    let not_allowed = || ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: path.to_owned(),
    };
    match segments.as_slice() {
        ["orgs"] => match *method {
            Method::GET => {
                let orgs = store.list_orgs().await?;
                Ok(json_response(
                    StatusCode::OK,
                    &json!({"object": "list", "data": orgs}),
                ))
            }
            Method::POST => {
                let b: NameBody = parse(&body)?;
                let org = store.create_org(&b.name).await?;
                Ok(json_response(StatusCode::CREATED, &org))
            }
            _ => Err(not_allowed()),
        },
        ["orgs", id] => match *method {
            Method::GET => match store.org(id).await? {
                Some(org) => Ok(json_response(StatusCode::OK, &org)),
                None => Err(ApiError::ResourceNotFound(format!("organization '{id}'"))),
            },
            Method::DELETE => {
                if store.delete_org(id).await? {
                    state.authenticator().invalidate_org(id);
                    Ok(json_response(
                        StatusCode::OK,
                        &json!({"id": id, "deleted": true}),
                    ))
                } else {
                    Err(ApiError::ResourceNotFound(format!("organization '{id}'")))
                }
            }
            _ => Err(not_allowed()),
        },
        ["orgs", id, "keys"] => match *method {
            Method::GET => {
                if store.org(id).await?.is_none() {
                    return Err(ApiError::ResourceNotFound(format!("organization '{id}'")));
                }
                let keys = store.list_keys(Some(id)).await?;
                Ok(json_response(
                    StatusCode::OK,
                    &json!({"object": "list", "data": keys}),
                ))
            }
            Method::POST => {
                let b: KeyBody = if body.iter().all(u8::is_ascii_whitespace) {
                    KeyBody::default()
                } else {
                    parse(&body)?
                };
                let created = store
                    .create_key(id, b.name.as_deref().unwrap_or("default"))
                    .await?;
                Ok(json_response(StatusCode::CREATED, &created))
            }
            _ => Err(not_allowed()),
        },
        ["keys"] => match *method {
            Method::GET => {
                let keys = store.list_keys(None).await?;
                Ok(json_response(
                    StatusCode::OK,
                    &json!({"object": "list", "data": keys}),
                ))
            }
            _ => Err(not_allowed()),
        },
        ["keys", prefix] => match *method {
            Method::DELETE => match store.revoke_key(prefix).await? {
                Some(k) => {
                    state.authenticator().invalidate_prefix(prefix);
                    Ok(json_response(StatusCode::OK, &k))
                }
                None => Err(ApiError::ResourceNotFound(format!("key '{prefix}'"))),
            },
            _ => Err(not_allowed()),
        },
        ["orgs", id, "limits"] => {
            if store.org(id).await?.is_none() {
                return Err(ApiError::ResourceNotFound(format!("organization '{id}'")));
            }
            limits(state, method, id, None, &body).await
        }
        ["keys", prefix, "limits"] => {
            let key = store
                .key(prefix)
                .await?
                .ok_or_else(|| ApiError::ResourceNotFound(format!("key '{prefix}'")))?;
            limits(state, method, &key.org_id, Some(&key.id), &body).await
        }
        _ => Err(ApiError::NotFound(path.to_owned())),
    }
}

/// `GET`, `PUT` (replace) and `DELETE` (back to the defaults) of an organization's or a key's
/// rate-limit override. Other replicas apply a change within `ratelimit.refresh_ms`.
async fn limits(
    state: &Arc<AppState>,
    method: &Method,
    org_id: &str,
    key_id: Option<&str>,
    body: &[u8],
) -> Result<Response<ResponseBody>, ApiError> {
    let subject = key_id.unwrap_or(org_id);
    let row = match *method {
        Method::GET => state.store().limits(subject).await?,
        Method::PUT | Method::DELETE => {
            let values: LimitValues = if *method == Method::DELETE {
                LimitValues::default()
            } else {
                parse(body)?
            };
            let row = state.store().set_limits(org_id, key_id, &values).await?;
            if let Some(l) = state.limits() {
                l.apply(&row);
            }
            Some(row)
        }
        _ => {
            return Err(ApiError::MethodNotAllowed {
                method: method.to_string(),
                path: format!("/admin/{}/limits", key_id.map_or("orgs", |_| "keys")),
            });
        }
    };
    let values = row.as_ref().map(|r| r.values()).unwrap_or_default();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "object": "rate_limits",
            "org_id": org_id,
            "key_id": key_id,
            "enabled": state.limits().is_some(),
            "override": values,
            // A key's own limits apply on top of its organization's.
            "effective": state.limits().map(|l| l.effective(subject, key_id.is_some())),
            "updated_at": row.map(|r| r.updated_at),
        }),
    ))
}

/// `GET /v1/usage?from=&to=&limit=&cursor=` (`org=` for the admin). `from` and `to` are Unix
/// seconds.
pub(crate) async fn usage(
    state: &Arc<AppState>,
    org_id: &str,
    query: &UsageQuery,
) -> Result<Response<ResponseBody>, ApiError> {
    let to_micros = |s: i64| s.saturating_mul(1_000_000);
    let page = state
        .store()
        .list_usage(
            org_id,
            query.from.map(to_micros),
            query.to.map(to_micros),
            query.limit.unwrap_or(100),
            query.cursor.as_deref(),
        )
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "object": "list",
            "data": page.records,
            "has_more": page.next_cursor.is_some(),
            "next_cursor": page.next_cursor,
        }),
    ))
}

/// The query of `GET /v1/usage`.
#[derive(Debug, Default)]
pub(crate) struct UsageQuery {
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    pub org: Option<String>,
}

impl UsageQuery {
    pub fn parse(query: Option<&str>) -> Result<UsageQuery, ApiError> {
        let mut q = UsageQuery::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v);
            let int = |name: &str| {
                v.parse::<i64>().map_err(|_| {
                    ApiError::invalid(
                        format!("'{name}' must be an integer"),
                        Some(name.to_owned()),
                    )
                })
            };
            match k {
                "from" => q.from = Some(int("from")?),
                "to" => q.to = Some(int("to")?),
                "limit" => {
                    let l = int("limit")?;
                    if !(1..=1000).contains(&l) {
                        return Err(ApiError::invalid(
                            "'limit' must be between 1 and 1000",
                            Some("limit".into()),
                        ));
                    }
                    q.limit = Some(l);
                }
                "cursor" => q.cursor = Some(v),
                "org" => q.org = Some(v),
                other => {
                    return Err(ApiError::invalid(
                        format!("unknown query parameter '{other}'"),
                        Some(other.to_owned()),
                    ));
                }
            }
        }
        Ok(q)
    }
}

/// Decodes `%XX` escapes and `+`; invalid escapes are kept as they are.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_query_parses_and_rejects() {
        let q = UsageQuery::parse(Some("from=10&to=20&limit=5&cursor=1.rec_a%5F")).unwrap();
        assert_eq!((q.from, q.to, q.limit), (Some(10), Some(20), Some(5)));
        assert_eq!(q.cursor.as_deref(), Some("1.rec_a_"));
        assert!(UsageQuery::parse(Some("limit=0")).is_err());
        assert!(UsageQuery::parse(Some("from=yesterday")).is_err());
        assert!(UsageQuery::parse(Some("colour=red")).is_err());
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%é%41"), "%éA");
    }
}
