//! Per-request directives: a JSON object written as `@mock{…}` in the last user message, or sent
//! in the `x-mock` header. They choose the answer and inject faults one request at a time, so a
//! test drives the mock through the same requests it sends to the proxy.

use std::time::Duration;

use http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Number, Value};

/// The request header that carries a directive.
pub(crate) const HEADER: &str = "x-mock";

const MARKER: &str = "@mock";

/// What one request asks of the mock. Every field is optional; unknown fields are rejected so a
/// misspelt fault fails loudly instead of silently doing nothing.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Directive {
    /// Answer with this HTTP status and an error body.
    pub status: Option<u16>,
    /// With `status`: the `retry-after` header, in seconds.
    pub retry_after: Option<Number>,
    /// Apply the fault only to the first `times` matching requests (counted per `key`).
    pub times: Option<u32>,
    /// Names the directive: counted in `Stats::requests_for_key`, and scopes `times`.
    pub key: Option<String>,
    /// Apply the fault only when the request's model is one of these.
    pub models: Option<Vec<String>>,
    /// Sleep this long before the response headers.
    pub delay_ms: Option<u64>,
    /// Sleep this long between stream chunks (overrides the configured per-token delay).
    pub chunk_delay_ms: Option<u64>,
    /// End a stream abruptly after this many content chunks.
    pub cut_after: Option<u32>,
    /// Replace the content chunk with this index by an event that is not JSON.
    pub malformed_at: Option<u32>,
    /// The answer text.
    pub answer: Option<String>,
    /// Answer with this many words, `w1 w2 … wN`.
    pub words: Option<u32>,
    /// Call the request's first tool instead of answering with text.
    pub tool_call: Option<bool>,
    /// The directive's JSON, the `times` counter's name when no `key` is given.
    #[serde(skip)]
    pub source: String,
}

/// The faults of a directive that apply to one request, after the `models` and `times` gates.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Faults {
    pub status: Option<StatusCode>,
    pub retry_after: Option<Number>,
    pub delay: Duration,
    pub chunk_delay: Option<Duration>,
    pub cut_after: Option<u32>,
    pub malformed_at: Option<u32>,
}

impl Directive {
    /// Builds the directive from the one found in the message text and the one in the header;
    /// the header's fields win where both set one.
    pub(crate) fn merge(
        in_text: Option<Map<String, Value>>,
        header: Option<&[u8]>,
    ) -> Result<Directive, String> {
        let mut fields = in_text.unwrap_or_default();
        if let Some(raw) = header {
            let from_header: Map<String, Value> = serde_json::from_slice(raw)
                .map_err(|e| format!("the {HEADER} header is not a JSON object: {e}"))?;
            fields.extend(from_header);
        }
        let source = Value::Object(fields.clone()).to_string();
        let mut directive: Directive = serde_json::from_value(Value::Object(fields))
            .map_err(|e| format!("invalid mock directive: {e}"))?;
        if let Some(code) = directive.status
            && StatusCode::from_u16(code).is_err()
        {
            return Err(format!(
                "invalid mock directive: status {code} is not an HTTP status"
            ));
        }
        directive.source = source;
        Ok(directive)
    }

    /// Whether the directive asks for any fault (as opposed to only choosing the answer).
    pub(crate) fn has_fault(&self) -> bool {
        self.status.is_some()
            || self.delay_ms.is_some()
            || self.chunk_delay_ms.is_some()
            || self.cut_after.is_some()
            || self.malformed_at.is_some()
    }

    /// Whether the fault applies to a request for `model` (the `models` gate only).
    pub(crate) fn targets(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|models| models.iter().any(|m| m == model))
    }

    /// The name of the counter that `times` is checked against.
    pub(crate) fn counter_name(&self) -> &str {
        self.key.as_deref().unwrap_or(&self.source)
    }

    /// The faults to apply, given that the gates let them through.
    pub(crate) fn faults(&self) -> Faults {
        Faults {
            status: self.status.and_then(|s| StatusCode::from_u16(s).ok()),
            retry_after: self.retry_after.clone(),
            delay: Duration::from_millis(self.delay_ms.unwrap_or(0)),
            chunk_delay: self.chunk_delay_ms.map(Duration::from_millis),
            cut_after: self.cut_after,
            malformed_at: self.malformed_at,
        }
    }
}

/// Finds the first `@mock{…}` in `text`. Returns the directive's fields and the text without it.
pub(crate) fn extract(text: &str) -> Result<(Option<Map<String, Value>>, String), String> {
    let Some(at) = text.find("@mock{") else {
        return Ok((None, text.to_owned()));
    };
    let open = at + MARKER.len();
    let len = object_len(&text[open..])
        .ok_or_else(|| "unterminated @mock{…} directive: braces do not balance".to_owned())?;
    let end = open + len;
    let fields: Map<String, Value> = serde_json::from_str(&text[open..end])
        .map_err(|e| format!("the @mock directive is not a JSON object: {e}"))?;
    let mut rest = String::with_capacity(text.len() - (end - at));
    rest.push_str(&text[..at]);
    rest.push_str(&text[end..]);
    Ok((Some(fields), rest))
}

/// The byte length of the JSON object that `s` starts with: up to the brace that balances the
/// first one, ignoring braces inside strings.
fn object_len(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, b) in s.bytes().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' => depth += 1,
            b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, fields: Option<Value>, rest: &str) {
        let (found, left) = extract(text).unwrap();
        assert_eq!(found.map(Value::Object), fields, "{text}");
        assert_eq!(left, rest, "{text}");
    }

    #[test]
    fn directives_are_found_anywhere_in_the_text() {
        check("no directive", None, "no directive");
        check(
            r#"@mock{"status":500} hello"#,
            Some(serde_json::json!({"status":500})),
            " hello",
        );
        check(
            r#"hello @mock{"answer":"a } in a string","x":{"y":{}}} bye"#,
            Some(serde_json::json!({"answer":"a } in a string","x":{"y":{}}})),
            "hello  bye",
        );
        check(
            r#"say @mock{"answer":"quote \" and \\"}"#,
            Some(serde_json::json!({"answer":"quote \" and \\"})),
            "say ",
        );
        // An email-like "@mock" without a brace is plain text.
        check("ask @mock team", None, "ask @mock team");
    }

    #[test]
    fn broken_directives_are_errors() {
        assert!(extract(r#"@mock{"status":500"#).is_err());
        assert!(extract("@mock{status:500}").is_err());
    }

    #[test]
    fn header_fields_override_text_fields() {
        let (text, _) = extract(r#"@mock{"status":500,"key":"a"}"#).unwrap();
        let d = Directive::merge(text, Some(br#"{"status":429,"retry_after":2}"#)).unwrap();
        assert_eq!(d.status, Some(429));
        assert_eq!(d.key.as_deref(), Some("a"));
        assert_eq!(
            d.faults().retry_after.map(|n| n.to_string()).as_deref(),
            Some("2")
        );
    }

    #[test]
    fn unknown_fields_and_bad_statuses_are_rejected() {
        let err = Directive::merge(None, Some(br#"{"stauts":500}"#)).unwrap_err();
        assert!(err.contains("stauts"), "{err}");
        assert!(Directive::merge(None, Some(br#"{"status":42}"#)).is_err());
        assert!(Directive::merge(None, Some(b"not json")).is_err());
    }

    #[test]
    fn gates_and_counter_names() {
        let d = Directive::merge(None, Some(br#"{"status":503,"models":["a","b"]}"#)).unwrap();
        assert!(d.targets("b"));
        assert!(!d.targets("c"));
        assert!(d.has_fault());
        assert_eq!(d.counter_name(), r#"{"status":503,"models":["a","b"]}"#);
        let keyed = Directive::merge(None, Some(br#"{"answer":"x","key":"k"}"#)).unwrap();
        assert!(!keyed.has_fault());
        assert!(keyed.targets("anything"));
        assert_eq!(keyed.counter_name(), "k");
    }
}
