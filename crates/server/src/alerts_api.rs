//! `/alerts/*` for the caller's organization: rules, channels, the digest schedule, test sends
//! and the history. Secrets in channel configurations are write-only: no response carries them.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /alerts/rules` | | `{"object": "list", "data": [rule…]}` |
//! | `POST /alerts/rules` | `{"name", "condition", "time_zone"?, "channel_ids"?, "enabled"?}` | 201, the rule |
//! | `GET /alerts/rules/{id}` | | the rule |
//! | `PATCH /alerts/rules/{id}` | any of the fields above | the rule |
//! | `DELETE /alerts/rules/{id}` | | `{"id", "deleted": true}` |
//! | `GET /alerts/channels` | | `{"object": "list", "data": [channel…]}` |
//! | `POST /alerts/channels` | `{"name", "kind": "slack"/"email"/"webhook", "config"}` | 201, the channel |
//! | `GET /alerts/channels/{id}` | | the channel |
//! | `PATCH /alerts/channels/{id}` | `{"name"?, "config"?}` (secrets left out are kept) | the channel |
//! | `DELETE /alerts/channels/{id}` | | `{"id", "deleted": true}` |
//! | `POST /alerts/channels/{id}/test` | | `{"delivered", "firing_id", "attempts"}` |
//! | `GET /alerts/history?limit=&cursor=` | | `{"object": "list", "data": [entry…], "has_more", "next_cursor"}` |
//! | `GET /alerts/digest` | | the schedule (404 if none) |
//! | `PUT /alerts/digest` | `{"time_zone"?, "send_hour"?, "daily"?, "weekly_weekday"?, "channel_ids"?}` | the schedule |
//! | `DELETE /alerts/digest` | | `{"deleted": true}` |

use std::sync::Arc;

use bytes::Bytes;
use cognitude_alerts::{
    ChannelInput, ChannelPatch, DigestScheduleInput, Error as AlertsError, RuleInput, RulePatch,
};
use http::{Method, Response, StatusCode};
use serde_json::json;

use crate::body::ResponseBody;
use crate::error::ApiError;
use crate::json_response;
use crate::state::AppState;

impl From<AlertsError> for ApiError {
    fn from(e: AlertsError) -> ApiError {
        match e {
            AlertsError::Store(s) => ApiError::from(s),
            AlertsError::Invalid { field, message } => {
                ApiError::invalid(format!("invalid '{field}': {message}"), Some(field))
            }
            AlertsError::NotFound(what) => ApiError::ResourceNotFound(what),
            AlertsError::Delivery(m) => ApiError::Upstream(m),
            AlertsError::Time(m) => ApiError::invalid(m, None),
            other => {
                tracing::warn!(error = %other, "alerts request failed");
                ApiError::Internal("The alerts service failed.".into())
            }
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    cognitude_protocol::parse_json(body).map_err(|e| ApiError::invalid(e.message, e.field))
}

fn list(data: &impl serde::Serialize) -> Response<ResponseBody> {
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}

fn deleted(id: &str) -> Response<ResponseBody> {
    json_response(StatusCode::OK, &json!({"id": id, "deleted": true}))
}

/// Routes `/alerts/...` for a caller already authenticated as `org_id`. `query` is the URL's
/// query string (used by the history).
pub(crate) async fn handle(
    state: &Arc<AppState>,
    org_id: &str,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: Bytes,
) -> Result<Response<ResponseBody>, ApiError> {
    let segments: Vec<&str> = path
        .trim_start_matches("/alerts")
        .trim_matches('/')
        .split('/')
        .collect();
    let alerts = state.alerts();
    let not_allowed = || ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: path.to_owned(),
    };
    match segments.as_slice() {
        ["rules"] => match *method {
            Method::GET => Ok(list(&alerts.list_rules(org_id).await?)),
            Method::POST => {
                let input: RuleInput = parse(&body)?;
                let rule = alerts.create_rule(org_id, input).await?;
                Ok(json_response(StatusCode::CREATED, &rule))
            }
            _ => Err(not_allowed()),
        },
        ["rules", id] => match *method {
            Method::GET => Ok(json_response(
                StatusCode::OK,
                &alerts.rule(org_id, id).await?,
            )),
            Method::PATCH => {
                let patch: RulePatch = parse(&body)?;
                let rule = alerts.update_rule(org_id, id, patch).await?;
                Ok(json_response(StatusCode::OK, &rule))
            }
            Method::DELETE => {
                alerts.delete_rule(org_id, id).await?;
                Ok(deleted(id))
            }
            _ => Err(not_allowed()),
        },
        ["channels"] => match *method {
            Method::GET => Ok(list(&alerts.list_channels(org_id).await?)),
            Method::POST => {
                let input: ChannelInput = parse(&body)?;
                let channel = alerts.create_channel(org_id, input).await?;
                Ok(json_response(StatusCode::CREATED, &channel))
            }
            _ => Err(not_allowed()),
        },
        ["channels", id] => match *method {
            Method::GET => Ok(json_response(
                StatusCode::OK,
                &alerts.channel(org_id, id).await?,
            )),
            Method::PATCH => {
                let patch: ChannelPatch = parse(&body)?;
                let channel = alerts.update_channel(org_id, id, patch).await?;
                Ok(json_response(StatusCode::OK, &channel))
            }
            Method::DELETE => {
                alerts.delete_channel(org_id, id).await?;
                Ok(deleted(id))
            }
            _ => Err(not_allowed()),
        },
        ["channels", id, "test"] => match *method {
            Method::POST => {
                let outcome = alerts.test_channel(org_id, id).await?;
                Ok(json_response(StatusCode::OK, &outcome))
            }
            _ => Err(not_allowed()),
        },
        ["history"] => match *method {
            Method::GET => {
                let q = HistoryQuery::parse(query)?;
                let page = alerts.history(org_id, q.cursor.as_deref(), q.limit).await?;
                Ok(json_response(
                    StatusCode::OK,
                    &json!({
                        "object": "list",
                        "data": page.entries,
                        "has_more": page.next_cursor.is_some(),
                        "next_cursor": page.next_cursor,
                    }),
                ))
            }
            _ => Err(not_allowed()),
        },
        ["digest"] => match *method {
            Method::GET => match alerts.digest_schedule(org_id).await? {
                Some(s) => Ok(json_response(StatusCode::OK, &s)),
                None => Err(ApiError::ResourceNotFound("digest schedule".into())),
            },
            Method::PUT => {
                let input: DigestScheduleInput = parse(&body)?;
                let s = alerts.set_digest_schedule(org_id, input).await?;
                Ok(json_response(StatusCode::OK, &s))
            }
            Method::DELETE => {
                alerts.delete_digest_schedule(org_id).await?;
                Ok(json_response(StatusCode::OK, &json!({"deleted": true})))
            }
            _ => Err(not_allowed()),
        },
        _ => Err(ApiError::NotFound(path.to_owned())),
    }
}

/// `GET /alerts/history?limit=50&cursor=<next_cursor of the previous page>`.
#[derive(Debug, PartialEq, Eq)]
struct HistoryQuery {
    limit: i64,
    cursor: Option<String>,
}

impl HistoryQuery {
    fn parse(query: Option<&str>) -> Result<HistoryQuery, ApiError> {
        let mut q = HistoryQuery {
            limit: 50,
            cursor: None,
        };
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "limit" => {
                    let l = v.parse::<i64>().ok().filter(|l| (1..=200).contains(l));
                    q.limit = l.ok_or_else(|| {
                        ApiError::invalid(
                            "'limit' must be an integer between 1 and 200",
                            Some("limit".into()),
                        )
                    })?;
                }
                // Cursors are `<digits>.<id>`: nothing in them is percent-encoded.
                "cursor" => q.cursor = Some(v.to_owned()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_query_parses_and_rejects() {
        assert_eq!(
            HistoryQuery::parse(Some("limit=5&cursor=123.fir_ab")).unwrap(),
            HistoryQuery {
                limit: 5,
                cursor: Some("123.fir_ab".into())
            }
        );
        assert_eq!(HistoryQuery::parse(None).unwrap().limit, 50);
        assert!(HistoryQuery::parse(Some("limit=0")).is_err());
        assert!(HistoryQuery::parse(Some("limit=ten")).is_err());
        assert!(HistoryQuery::parse(Some("colour=red")).is_err());
    }

    #[test]
    fn alert_errors_map_to_statuses() {
        let status = |e: AlertsError| ApiError::from(e).parts().0.as_u16();
        assert_eq!(
            status(AlertsError::Invalid {
                field: "config.url".into(),
                message: "must use https".into()
            }),
            400
        );
        assert_eq!(status(AlertsError::NotFound("rule 'x'".into())), 404);
        assert_eq!(
            status(AlertsError::Store(cognitude_store::Error::Unavailable(
                "down".into()
            ))),
            503
        );
        assert_eq!(status(AlertsError::Config("bad".into())), 500);
    }
}
