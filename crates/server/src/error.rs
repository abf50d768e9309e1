//! Every error the HTTP layer returns, mapped to a status and the OpenAI error body in one
//! exhaustive match: a new variant cannot silently become a 500.

use cognitude_protocol::ErrorBody;
use cognitude_providers::Error as UpstreamError;
use http::StatusCode;

/// An error answered to the client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    #[error("The model '{0}' does not exist or you do not have access to it.")]
    ModelNotFound(String),
    #[error("Unknown request URL: {0}. Please check the URL for typos.")]
    NotFound(String),
    #[error("Method {method} is not allowed on {path}.")]
    MethodNotAllowed { method: String, path: String },
    #[error("Request body is larger than the limit of {limit} bytes.")]
    PayloadTooLarge { limit: u64 },
    #[error("Content-Type must be application/json (got '{0}').")]
    UnsupportedMediaType(String),
    /// The upstream rejected the request as invalid (a 4xx other than 401/403/429).
    #[error("{message}")]
    UpstreamRejected { status: u16, message: String },
    /// The upstream failed, was unreachable, or answered something that is not its protocol.
    #[error("{0}")]
    Upstream(String),
    /// Every attempt was rate limited by the upstream.
    #[error("{0}")]
    UpstreamRateLimited(String),
    #[error("{0}")]
    UpstreamTimeout(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("Too many failed authentication attempts from this address; retry later.")]
    TooManyAuthFailures { retry_after: std::time::Duration },
    /// The organization (or key) is over one of its rate limits. `kind` is OpenAI's error type
    /// for it: `requests` or `tokens`.
    #[error("{message}")]
    RateLimited {
        message: String,
        kind: &'static str,
        retry_after: std::time::Duration,
    },
    #[error("{0} not found.")]
    ResourceNotFound(String),
    #[error("{0} already exists.")]
    Conflict(String),
    /// A component the request needs (the database) is unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// The server is shutting down and takes no new work.
    #[error("The server is shutting down.")]
    ShuttingDown,
    /// A bug or an unexpected state on our side.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(message: impl Into<String>, param: Option<String>) -> ApiError {
        ApiError::InvalidRequest {
            message: message.into(),
            param,
        }
    }

    /// The HTTP status, the OpenAI `type`, and the `code` of this error.
    pub fn parts(&self) -> (StatusCode, &'static str, Option<&'static str>) {
        match self {
            ApiError::InvalidRequest { .. } => {
                (StatusCode::BAD_REQUEST, "invalid_request_error", None)
            }
            ApiError::ModelNotFound(_) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("model_not_found"),
            ),
            ApiError::NotFound(_) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("unknown_url"),
            ),
            ApiError::MethodNotAllowed { .. } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                Some("method_not_allowed"),
            ),
            ApiError::PayloadTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                Some("request_too_large"),
            ),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request_error",
                Some("unsupported_media_type"),
            ),
            ApiError::UpstreamRejected { status, .. } => (
                StatusCode::from_u16(*status)
                    .ok()
                    .filter(StatusCode::is_client_error)
                    .unwrap_or(StatusCode::BAD_REQUEST),
                "invalid_request_error",
                Some("upstream_rejected"),
            ),
            ApiError::Upstream(_) => (
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                Some("bad_gateway"),
            ),
            ApiError::UpstreamRateLimited(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                Some("upstream_rate_limited"),
            ),
            ApiError::UpstreamTimeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "timeout_error",
                Some("upstream_timeout"),
            ),
            ApiError::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                Some("invalid_api_key"),
            ),
            ApiError::Forbidden(_) => {
                (StatusCode::FORBIDDEN, "permission_error", Some("forbidden"))
            }
            ApiError::TooManyAuthFailures { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                Some("too_many_auth_failures"),
            ),
            ApiError::RateLimited { kind, .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                kind,
                Some("rate_limit_exceeded"),
            ),
            ApiError::ResourceNotFound(_) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("not_found"),
            ),
            ApiError::Conflict(_) => (
                StatusCode::CONFLICT,
                "invalid_request_error",
                Some("conflict"),
            ),
            ApiError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                Some("unavailable"),
            ),
            ApiError::ShuttingDown => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                Some("shutting_down"),
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                Some("internal_error"),
            ),
        }
    }

    /// How long the client should wait before retrying, for a `Retry-After` header.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ApiError::TooManyAuthFailures { retry_after }
            | ApiError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The OpenAI error body for this error.
    pub fn body(&self) -> ErrorBody {
        let (_, kind, code) = self.parts();
        let mut body = ErrorBody::new(kind, self.to_string());
        if let Some(c) = code {
            body = body.with_code(c);
        }
        match self {
            ApiError::InvalidRequest { param: Some(p), .. } => body.with_param(p.clone()),
            ApiError::ModelNotFound(_) => body.with_param("model"),
            _ => body,
        }
    }
}

impl From<UpstreamError> for ApiError {
    fn from(e: UpstreamError) -> ApiError {
        match &e {
            UpstreamError::Status {
                status: 429,
                message,
                ..
            } => ApiError::UpstreamRateLimited(format!("upstream rate limited: {message}")),
            // The provider's key or permissions are wrong: the client cannot fix that.
            UpstreamError::Status {
                status: 401 | 403, ..
            } => ApiError::Upstream(format!("upstream refused the proxy's credentials: {e}")),
            UpstreamError::Status {
                status, message, ..
            } if (400..500).contains(status) => ApiError::UpstreamRejected {
                status: *status,
                message: message.clone(),
            },
            UpstreamError::Timeout(_) => ApiError::UpstreamTimeout(e.to_string()),
            // Anything else the upstream or the network did wrong is a bad gateway.
            _ => ApiError::Upstream(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cognitude_providers::TimeoutPhase;

    fn check(e: ApiError, status: u16) {
        assert_eq!(e.parts().0.as_u16(), status, "{e:?}");
        let v = serde_json::to_value(e.body()).unwrap();
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert!(v["error"]["type"].as_str().is_some());
    }

    #[test]
    fn statuses() {
        check(ApiError::invalid("bad", Some("x".into())), 400);
        check(ApiError::ModelNotFound("m".into()), 404);
        check(ApiError::PayloadTooLarge { limit: 1 }, 413);
        check(ApiError::UnsupportedMediaType("text/plain".into()), 415);
        check(ApiError::Unauthorized("no".into()), 401);
        check(ApiError::Forbidden("no".into()), 403);
        check(
            ApiError::TooManyAuthFailures {
                retry_after: std::time::Duration::from_secs(3),
            },
            429,
        );
        check(ApiError::Conflict("org".into()), 409);
        check(
            ApiError::RateLimited {
                message: "slow down".into(),
                kind: "tokens",
                retry_after: std::time::Duration::from_secs(2),
            },
            429,
        );
        let up = |status| UpstreamError::Status {
            status,
            message: "m".into(),
            retry_after: None,
        };
        check(up(500).into(), 502);
        check(up(401).into(), 502);
        check(up(429).into(), 429);
        check(up(400).into(), 400);
        check(up(422).into(), 422);
        check(UpstreamError::Timeout(TimeoutPhase::FirstByte).into(), 504);
        check(UpstreamError::Connect("refused".into()).into(), 502);
        check(UpstreamError::Protocol("junk".into()).into(), 502);
    }
}
