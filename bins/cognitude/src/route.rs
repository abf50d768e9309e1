//! `cognitude route`: routes JSON lines read from standard input, printing one decision each.
//!
//! Each input line is `{"id": …, "messages": [{"role": …, "content": …}, …]}` (content a string
//! or OpenAI-style parts), or a bare JSON string taken as one user message. Optional fields:
//! `system`, `max_tokens`, `tools` (a non-empty array), `response_format` (`json_object` or
//! `json_schema`), `model` (the requested model, for policy rules) and `metadata` (an object of
//! strings). Each output line holds `id`, `score`, `tier`, `signals`, `model` and `reason`,
//! then the token and cost estimates. A line that can't be used gets `id` (when it had one) and
//! `error` instead; it never stops the run. Blank lines are skipped.

use std::io::{BufRead, Write};

use anyhow::{Context, Result};
use cognitude_catalog::Catalog;
use cognitude_router::{
    Content, Decision, Message, Mode, Policy, Request, Role, RouteRequest, Router,
};
use serde_json::{Map, Value, json};

/// Reads JSON lines from `input` and writes one JSON line per non-blank input line to `output`.
pub fn run(
    mode: Option<&str>,
    catalog: &Catalog,
    mut input: impl BufRead,
    mut output: impl Write,
) -> Result<()> {
    let mode = mode
        .map(str::parse::<Mode>)
        .transpose()
        .context("invalid --mode")?;
    let router = Router::new(Policy {
        mode: mode.unwrap_or_default(),
        ..Policy::default()
    });
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .context("could not read the input")?;
        if n == 0 {
            break;
        }
        let Some(answer) = route_line(&router, catalog, &line) else {
            continue;
        };
        writeln!(output, "{answer}").context("could not write the output")?;
        output.flush().context("could not write the output")?;
    }
    Ok(())
}

/// The output line for one input line; `None` for a blank line.
fn route_line(router: &Router, catalog: &Catalog, line: &[u8]) -> Option<Value> {
    let Ok(text) = std::str::from_utf8(line) else {
        return Some(json!({ "error": "the line is not valid UTF-8" }));
    };
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Some(json!({ "error": format!("invalid JSON: {e}") })),
    };
    let id = match &value {
        Value::Object(o) => o.get("id").cloned(),
        _ => None,
    };
    Some(match decide(router, catalog, &value) {
        Ok(out) => out,
        Err(message) => {
            let mut o = Map::new();
            if let Some(id) = id {
                o.insert("id".into(), id);
            }
            o.insert("error".into(), Value::String(message));
            Value::Object(o)
        }
    })
}

/// One message's role and text parts, borrowed from the parsed line.
struct Turn<'a> {
    role: Role,
    parts: Vec<&'a str>,
}

fn decide(router: &Router, catalog: &Catalog, value: &Value) -> Result<Value, String> {
    let (id, turns, obj) = match value {
        Value::String(s) => (
            Value::Null,
            vec![Turn {
                role: Role::User,
                parts: vec![s.as_str()],
            }],
            None,
        ),
        Value::Object(o) => (
            o.get("id").cloned().unwrap_or(Value::Null),
            turns(o.get("messages"))?,
            Some(o),
        ),
        _ => return Err("expected an object with \"messages\", or a string".into()),
    };
    let messages: Vec<Message<'_>> = turns
        .iter()
        .map(|t| Message {
            role: t.role,
            content: Content::Parts(&t.parts),
        })
        .collect();
    let mut request = Request::new(&messages);
    let mut requested_model = None;
    let mut metadata: Vec<(&str, &str)> = Vec::new();
    if let Some(o) = obj {
        request.images = has_images(o.get("messages"));
        if let Some(system) = o.get("system") {
            request.system = Some(system.as_str().ok_or("\"system\" must be a string")?);
        }
        if let Some(max) = o
            .get("max_tokens")
            .or_else(|| o.get("max_completion_tokens"))
        {
            request.max_tokens = Some(
                max.as_u64()
                    .ok_or("\"max_tokens\" must be a positive integer")?,
            );
        }
        request.tools = o
            .get("tools")
            .and_then(Value::as_array)
            .is_some_and(|t| !t.is_empty());
        request.json_output = o
            .get("response_format")
            .and_then(|f| f.get("type"))
            .and_then(Value::as_str)
            .is_some_and(|t| t == "json_object" || t == "json_schema");
        if let Some(m) = o.get("model") {
            requested_model = Some(m.as_str().ok_or("\"model\" must be a string")?);
        }
        if let Some(meta) = o.get("metadata") {
            let meta = meta.as_object().ok_or("\"metadata\" must be an object")?;
            for (k, v) in meta {
                let v = v.as_str().ok_or("\"metadata\" values must be strings")?;
                metadata.push((k.as_str(), v));
            }
        }
    }
    let mut input = RouteRequest::new(request).with_metadata(&metadata);
    if let Some(m) = requested_model {
        input = input.with_requested_model(m);
    }
    match router.route(catalog, &input) {
        Ok(decision) => Ok(render(id, &decision)),
        Err(e) => {
            // Selection failed (no model fits): still explain the classification.
            let c = router.classify(&input.request);
            let mut out = classification_json(id, &c);
            out.insert("model".into(), Value::Null);
            out.insert("error".into(), Value::String(e.to_string()));
            Ok(Value::Object(out))
        }
    }
}

fn turns(messages: Option<&Value>) -> Result<Vec<Turn<'_>>, String> {
    let list = messages
        .ok_or("missing \"messages\"")?
        .as_array()
        .ok_or("\"messages\" must be an array")?;
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let role = match m.get("role").and_then(Value::as_str) {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some("system" | "developer") => Role::System,
            Some("tool" | "function") => Role::Tool,
            Some(other) => return Err(format!("messages[{i}]: unknown role \"{other}\"")),
            None => return Err(format!("messages[{i}]: missing \"role\"")),
        };
        let mut parts = Vec::new();
        match m.get("content") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => parts.push(s.as_str()),
            Some(Value::Array(items)) => {
                for item in items {
                    match item {
                        Value::String(s) => parts.push(s.as_str()),
                        Value::Object(p) => {
                            if let Some(t) = p.get("text").and_then(Value::as_str) {
                                parts.push(t);
                            }
                        }
                        _ => {
                            return Err(format!(
                                "messages[{i}]: a content part must be an object or a string"
                            ));
                        }
                    }
                }
            }
            Some(_) => {
                return Err(format!(
                    "messages[{i}]: \"content\" must be a string or an array of parts"
                ));
            }
        }
        out.push(Turn { role, parts });
    }
    Ok(out)
}

fn has_images(messages: Option<&Value>) -> bool {
    messages
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("content").and_then(Value::as_array))
        .flatten()
        .any(|p| {
            p.get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t == "image_url" || t == "image" || t == "input_image")
        })
}

fn classification_json(id: Value, c: &cognitude_router::Classification) -> Map<String, Value> {
    let signals: Vec<Value> = c
        .top_signals()
        .map(|s| {
            json!({
                "signal": s.kind.as_str(),
                "value": round(s.value),
                "contribution": round(s.contribution),
            })
        })
        .collect();
    let mut o = Map::new();
    o.insert("id".into(), id);
    o.insert("score".into(), json!(round(c.score)));
    o.insert("tier".into(), json!(c.tier.as_str()));
    o.insert("signals".into(), Value::Array(signals));
    o.insert("input_tokens".into(), json!(c.input_tokens));
    o
}

fn render(id: Value, d: &Decision<'_>) -> Value {
    let c = &d.classification;
    let s = &d.selection;
    let mut o = classification_json(id, c);
    // Keep the documented field order: id, score, tier, signals, model, reason, then details.
    let input_tokens = o.remove("input_tokens").unwrap_or(Value::Null);
    o.insert("model".into(), json!(s.model.id));
    o.insert("reason".into(), json!(s.reason));
    o.insert("mode".into(), json!(s.mode.as_str()));
    o.insert("input_tokens".into(), input_tokens);
    o.insert("output_tokens".into(), json!(s.output_tokens));
    o.insert("estimated_cost".into(), json!(s.cost.to_string()));
    o.insert("estimated_latency_ms".into(), json!(s.latency_ms));
    let alternatives: Vec<Value> = s
        .candidates
        .iter()
        .skip(1)
        .take(3)
        .map(|a| json!({ "model": a.model.id, "estimated_cost": a.cost.to_string(), "estimated_latency_ms": a.latency_ms }))
        .collect();
    o.insert("alternatives".into(), Value::Array(alternatives));
    if let Some(b) = &d.baseline {
        o.insert("baseline".into(), json!(b.model.id));
        o.insert("saving".into(), json!(b.saving.to_string()));
    }
    Value::Object(o)
}

/// Six decimals are plenty for a person and keep the lines short.
fn round(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_lines(mode: Option<&str>, input: &str) -> Vec<Value> {
        let mut out = Vec::new();
        run(mode, &Catalog::builtin(), input.as_bytes(), &mut out).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn one_line_out_per_line_in_with_the_documented_fields() {
        let input = concat!(
            r#"{"id": 7, "messages": [{"role": "user", "content": "What is 2 + 2?"}]}"#,
            "\n\n",
            r#""Write a haiku about rain""#,
            "\n",
            r#"{"id": "x", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Describe this"}, {"type": "image_url", "image_url": {"url": "data:"}}]}]}"#,
            "\n"
        );
        let out = run_lines(None, input);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0]["id"], json!(7));
        assert_eq!(out[1]["id"], Value::Null);
        assert_eq!(out[2]["id"], json!("x"));
        for o in &out {
            let keys: Vec<&str> = o
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .take(6)
                .collect();
            assert_eq!(
                keys,
                ["id", "score", "tier", "signals", "model", "reason"],
                "{o}"
            );
            let score = o["score"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&score));
        }
        // The image part requires a vision model.
        let model = out[2]["model"].as_str().unwrap();
        let cat = Catalog::builtin();
        assert!(cat.get(model).unwrap().capabilities.vision, "{model}");
    }

    #[test]
    fn bad_lines_get_an_error_and_the_run_goes_on() {
        let input = b"{not json\n{\"id\": 3, \"messages\": \"hi\"}\n42\n\xff\xfe\n{\"id\": 4, \"messages\": [{\"role\": \"wizard\", \"content\": \"x\"}]}\n\"ok\"\n";
        let mut out = Vec::new();
        run(None, &Catalog::builtin(), &input[..], &mut out).unwrap();
        let lines: Vec<Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 6);
        for l in &lines[..5] {
            assert!(l["error"].is_string(), "{l}");
        }
        assert_eq!(lines[1]["id"], json!(3));
        assert_eq!(lines[4]["id"], json!(4));
        assert!(lines[0].get("id").is_none());
        assert!(lines[5].get("error").is_none());
    }

    #[test]
    fn mode_changes_the_choice_and_a_bad_mode_is_refused() {
        let line = r#"{"id": 1, "messages": [{"role": "user", "content": "Say hello"}]}"#;
        let cost = run_lines(Some("cost"), line);
        let quality = run_lines(Some("quality"), line);
        assert_eq!(cost[0]["mode"], json!("cost"));
        assert_eq!(quality[0]["mode"], json!("quality"));
        assert_ne!(cost[0]["model"], quality[0]["model"]);
        let mut out = Vec::new();
        assert!(run(Some("fastest"), &Catalog::builtin(), &b""[..], &mut out).is_err());
    }

    #[test]
    fn no_model_fits_still_explains_the_classification() {
        let line = r#"{"id": 9, "max_tokens": 999999999, "messages": [{"role": "user", "content": "hi"}]}"#;
        let out = run_lines(None, line);
        assert_eq!(out[0]["id"], json!(9));
        assert!(
            out[0]["error"].as_str().unwrap().contains("no model"),
            "{}",
            out[0]
        );
        assert!(out[0]["score"].is_number());
        assert_eq!(out[0]["model"], Value::Null);
    }
}
