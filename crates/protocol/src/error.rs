//! The OpenAI error body and JSON parsing that names the offending field.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// `{"error": {...}}`, the body of every error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

/// The object inside an error body. `param` and `code` are always present (possibly null),
/// as OpenAI sends them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub param: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
}

impl ErrorBody {
    pub fn new(kind: &str, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorObject {
                message: message.into(),
                kind: kind.to_owned(),
                param: None,
                code: None,
            },
        }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.error.param = Some(param.into());
        self
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.error.code = Some(code.into());
        self
    }
}

/// A field that parsed but holds a value the API does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for '{field}': {message}")]
pub struct InvalidField {
    pub field: String,
    pub message: String,
}

/// A body that is not valid JSON for the expected type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JsonError {
    /// The path of the field that failed (`messages[0].role`), when the JSON itself was well formed.
    pub field: Option<String>,
    pub message: String,
}

/// Parses JSON into `T`; a type error names the path of the field that caused it.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, JsonError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(v) => Ok(v),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let field = match inner.classify() {
                serde_json::error::Category::Data if path != "." => Some(path),
                _ => None,
            };
            let message = match &field {
                Some(f) => format!("invalid value for '{f}': {inner}"),
                None => match inner.classify() {
                    serde_json::error::Category::Data => format!("invalid request body: {inner}"),
                    _ => format!("request body is not valid JSON: {inner}"),
                },
            };
            Err(JsonError { field, message })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChatRequest;

    fn check(body: &str, field: Option<&str>) {
        let err = parse_json::<ChatRequest>(body.as_bytes()).unwrap_err();
        assert_eq!(err.field.as_deref(), field, "{body}: {}", err.message);
    }

    #[test]
    fn errors_name_the_field() {
        check(r#"{"model":1,"messages":[]}"#, Some("model"));
        check(
            r#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#,
            Some("messages[0].role"),
        );
        check(
            r#"{"model":"m","messages":[],"max_tokens":-5}"#,
            Some("max_tokens"),
        );
        check(
            r#"{"model":"m","messages":[],"stream":"yes"}"#,
            Some("stream"),
        );
        check(r#"{"model":"m""#, None);
        check("not json", None);
    }

    #[test]
    fn missing_field_is_reported() {
        let err = parse_json::<ChatRequest>(br#"{"model":"m"}"#).unwrap_err();
        assert!(err.message.contains("messages"), "{}", err.message);
    }

    #[test]
    fn error_body_has_openai_shape() {
        let v =
            serde_json::to_value(ErrorBody::new("invalid_request_error", "bad").with_param("x"))
                .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error":{"message":"bad","type":"invalid_request_error","param":"x","code":null}})
        );
    }
}
