//! Messages: an alert, a digest or a test, rendered as plain text, HTML (email), a Slack Block
//! Kit message and the JSON data of a signed webhook. Figures are exact in the JSON and rounded
//! to cents for people.

use std::fmt::Write as _;

use cognitude_catalog::{Money, PICO_PER_USD};
use serde::Serialize;
use serde_json::{Value, json};

use crate::digest::{Digest, DigestKind};
use crate::period::Period;
use crate::rules::{Breach, Condition};

/// One message, in every form a channel may need.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// `alert.fired`, `digest.daily`, `digest.weekly` or `test`.
    pub event: &'static str,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The Slack message body (`text` and `blocks`).
    pub slack: Value,
    /// The `data` of a webhook delivery.
    pub data: Value,
}

/// A model or key behind some spend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Contributor {
    pub name: String,
    pub cost: Money,
    pub requests: i64,
}

/// A rule that fired: what crossed, by how much, and what was behind it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertEvent {
    pub org_id: String,
    pub org_name: String,
    pub rule_id: String,
    pub rule_name: String,
    pub condition: Condition,
    /// The key the firing is recorded under.
    pub period_key: String,
    pub period_label: String,
    pub time_zone: String,
    /// The window judged, in the rule's zone (RFC 3339).
    pub window_from: String,
    pub window_to: String,
    pub breach: Breach,
    pub top_models: Vec<Contributor>,
    pub top_keys: Vec<Contributor>,
    /// Unix microseconds.
    pub fired_at: i64,
}

/// Dollars for people: cents with thousands separators (`$1,234.57`), or the exact amount
/// below one cent (`$0.000123`).
pub fn usd(m: Money) -> String {
    let p = m.pico();
    let cent = PICO_PER_USD / 100;
    if p != 0 && p.abs() < cent {
        return format!("${m}");
    }
    let sign = if p < 0 { "-" } else { "" };
    let abs = p.unsigned_abs();
    let cents = (abs + (cent as u128) / 2) / cent as u128;
    format!("{sign}${}.{:02}", group(cents / 100), cents % 100)
}

/// An integer with thousands separators.
pub fn count(n: i64) -> String {
    let sign = if n < 0 { "-" } else { "" };
    format!("{sign}{}", group(u128::from(n.unsigned_abs())))
}

fn group(n: u128) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A signed amount: `+$1.00` / `-$1.00`.
fn signed_usd(m: Money) -> String {
    if m.pico() >= 0 {
        format!("+{}", usd(m))
    } else {
        usd(m)
    }
}

/// Basis points as a percentage with two decimals.
fn percent_bp(bp: i64) -> String {
    format!("{}.{:02}%", bp / 100, bp % 100)
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Slack's mrkdwn treats `&`, `<` and `>` as control characters.
fn escape_slack(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn period_adjective(p: Period) -> &'static str {
    match p {
        Period::Day => "daily",
        Period::Week => "weekly",
        Period::Month => "monthly",
    }
}

/// One sentence: what crossed and by how much.
pub fn headline(event: &AlertEvent) -> String {
    let label = &event.period_label;
    match (&event.breach, &event.condition) {
        (
            Breach::Spend {
                spent,
                threshold,
                over_by,
                budget: Some(budget),
                percent: Some(pct),
            },
            Condition::Spend { period, .. },
        ) => format!(
            "Spend for {label} reached {pct}% of the {} {} budget: {} spent, {} over the {} line.",
            usd(*budget),
            period_adjective(*period),
            usd(*spent),
            usd(*over_by),
            usd(*threshold),
        ),
        (
            Breach::Spend {
                spent,
                threshold,
                over_by,
                ..
            },
            _,
        ) => format!(
            "Spend for {label} is {}, {} over the {} line.",
            usd(*spent),
            usd(*over_by),
            usd(*threshold),
        ),
        (
            Breach::Forecast {
                spent,
                projected,
                budget,
                over_by,
            },
            _,
        ) => format!(
            "At the current rate {label} ends at {}, {} over the {} budget ({} spent so far).",
            usd(*projected),
            usd(*over_by),
            usd(*budget),
            usd(*spent),
        ),
        (
            Breach::Spike {
                spent,
                average,
                factor,
                threshold,
                over_by,
            },
            _,
        ) => format!(
            "Spend for {label} is {}: over {factor}× the trailing average of {} ({}) by {}.",
            usd(*spent),
            usd(*average),
            usd(*threshold),
            usd(*over_by),
        ),
        (
            Breach::ErrorRate {
                errors,
                requests,
                rate_bp,
                threshold_percent,
            },
            _,
        ) => format!(
            "{} of {} requests ({}) failed upstream in {label}; the threshold is {threshold_percent}%.",
            count(*errors),
            count(*requests),
            percent_bp(*rate_bp),
        ),
    }
}

fn contributor_lines(title: &str, list: &[Contributor], out: &mut String) {
    if list.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{title}:");
    for c in list {
        let _ = writeln!(
            out,
            "  {}  {}  ({} requests)",
            c.name,
            usd(c.cost),
            count(c.requests)
        );
    }
}

fn contributor_html(title: &str, list: &[Contributor], out: &mut String) {
    if list.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "<h3>{}</h3><table cellpadding=\"4\"><tr><th align=\"left\">Name</th>\
         <th align=\"right\">Cost</th><th align=\"right\">Requests</th></tr>",
        escape_html(title)
    );
    for c in list {
        let _ = write!(
            out,
            "<tr><td>{}</td><td align=\"right\">{}</td><td align=\"right\">{}</td></tr>",
            escape_html(&c.name),
            usd(c.cost),
            count(c.requests)
        );
    }
    out.push_str("</table>");
}

fn contributor_mrkdwn(title: &str, list: &[Contributor]) -> Option<Value> {
    if list.is_empty() {
        return None;
    }
    let mut s = format!("*{}*", escape_slack(title));
    for c in list {
        let _ = write!(
            s,
            "\n• {}: {} ({} requests)",
            escape_slack(&c.name),
            usd(c.cost),
            count(c.requests)
        );
    }
    Some(json!({"type": "section", "text": {"type": "mrkdwn", "text": s}}))
}

fn html_page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body style=\"font-family: sans-serif\"><h2>{t}</h2>{body}</body></html>",
        t = escape_html(title)
    )
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// The message for a rule that fired.
pub fn alert(event: &AlertEvent) -> Notification {
    let head = headline(event);
    let subject = format!("[Cognitude] {}: {}", event.org_name, event.rule_name);
    let mut text = format!(
        "Alert \"{}\" for {}\n\n{head}\n\nWindow: {} to {} ({})\n",
        event.rule_name, event.org_name, event.window_from, event.window_to, event.time_zone
    );
    contributor_lines("Top models by cost", &event.top_models, &mut text);
    contributor_lines("Top keys by cost", &event.top_keys, &mut text);
    let _ = write!(
        text,
        "\nRule {} · period {}\n",
        event.rule_id, event.period_key
    );

    let mut body = format!(
        "<p><strong>{}</strong></p><p>Window: {} to {} ({})</p>",
        escape_html(&head),
        escape_html(&event.window_from),
        escape_html(&event.window_to),
        escape_html(&event.time_zone)
    );
    contributor_html("Top models by cost", &event.top_models, &mut body);
    contributor_html("Top keys by cost", &event.top_keys, &mut body);
    let _ = write!(
        body,
        "<p style=\"color:#666\">Rule {} · period {}</p>",
        escape_html(&event.rule_id),
        escape_html(&event.period_key)
    );
    let title = format!("Alert \"{}\" for {}", event.rule_name, event.org_name);

    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&title, 150)}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": escape_slack(&head)}}),
    ];
    blocks.extend(contributor_mrkdwn("Top models by cost", &event.top_models));
    blocks.extend(contributor_mrkdwn("Top keys by cost", &event.top_keys));
    blocks.push(
        json!({"type": "context", "elements": [{"type": "mrkdwn", "text": escape_slack(&format!(
            "{} to {} ({}) · rule {} · period {}",
            event.window_from, event.window_to, event.time_zone, event.rule_id, event.period_key
        ))}]}),
    );

    Notification {
        event: "alert.fired",
        subject,
        text,
        html: html_page(&title, &body),
        slack: json!({"text": head, "blocks": blocks}),
        data: serde_json::to_value(event).unwrap_or(Value::Null),
    }
}

/// The lines of a digest's figures, shared by the text, HTML and Slack forms.
fn digest_figures(d: &Digest) -> Vec<(&'static str, String)> {
    let change = match d.change_permille {
        Some(pm) => format!(
            "{} ({}{}.{}%) vs {} for {}",
            signed_usd(d.change),
            if pm < 0 { "-" } else { "+" },
            pm.abs() / 10,
            pm.abs() % 10,
            usd(d.previous_spend),
            d.previous_label
        ),
        None => format!(
            "{} vs {} for {}",
            signed_usd(d.change),
            usd(d.previous_spend),
            d.previous_label
        ),
    };
    let cache = match d.cache_hit_rate_bp {
        Some(bp) => format!(
            "{} hit rate ({} of {} lookups), {} saved",
            percent_bp(bp),
            count(d.cache_hits),
            count(d.cache_lookups),
            usd(d.cache_saved)
        ),
        None => format!("no lookups, {} saved", usd(d.cache_saved)),
    };
    vec![
        ("Spend", format!("{}, {change}", usd(d.spend))),
        ("Requests", count(d.requests)),
        (
            "Tokens",
            format!(
                "{} ({} prompt, {} completion)",
                count(d.prompt_tokens + d.completion_tokens),
                count(d.prompt_tokens),
                count(d.completion_tokens)
            ),
        ),
        ("Cache", cache),
        (
            "Routing",
            format!(
                "{} requests routed, {} saved",
                count(d.routed),
                usd(d.route_saving)
            ),
        ),
    ]
}

/// The message for a daily or weekly digest.
pub fn digest(d: &Digest) -> Notification {
    let kind = match d.kind {
        DigestKind::Daily => "Daily",
        DigestKind::Weekly => "Weekly",
    };
    let title = format!("{kind} digest for {}: {}", d.org_name, d.period_label);
    let subject = format!("[Cognitude] {title}");
    let figures = digest_figures(d);
    let recs: Vec<Contributor> = d
        .recommendations
        .iter()
        .map(|r| Contributor {
            name: r.title.clone(),
            cost: r.monthly_saving,
            requests: 0,
        })
        .collect();

    let mut text = format!("{title} ({})\n\n", d.time_zone);
    for (k, v) in &figures {
        let _ = writeln!(text, "{k}: {v}");
    }
    contributor_lines("Top models by cost", &d.top_models, &mut text);
    contributor_lines("Top keys by cost", &d.top_keys, &mut text);
    if !recs.is_empty() {
        text.push_str("\nTop recommendations:\n");
        for r in &d.recommendations {
            let _ = writeln!(
                text,
                "  {}: saves {} a month",
                r.title,
                usd(r.monthly_saving)
            );
        }
    }

    let mut body = String::from("<table cellpadding=\"4\">");
    for (k, v) in &figures {
        let _ = write!(
            body,
            "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
            escape_html(k),
            escape_html(v)
        );
    }
    body.push_str("</table>");
    contributor_html("Top models by cost", &d.top_models, &mut body);
    contributor_html("Top keys by cost", &d.top_keys, &mut body);
    if !recs.is_empty() {
        body.push_str("<h3>Top recommendations</h3><ul>");
        for r in &d.recommendations {
            let _ = write!(
                body,
                "<li>{}: saves {} a month</li>",
                escape_html(&r.title),
                usd(r.monthly_saving)
            );
        }
        body.push_str("</ul>");
    }

    let mut fields_text = String::new();
    for (k, v) in &figures {
        let _ = writeln!(fields_text, "*{k}:* {}", escape_slack(v));
    }
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&title, 150)}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": fields_text.trim_end()}}),
    ];
    blocks.extend(contributor_mrkdwn("Top models by cost", &d.top_models));
    blocks.extend(contributor_mrkdwn("Top keys by cost", &d.top_keys));
    if !recs.is_empty() {
        let mut s = String::from("*Top recommendations*");
        for r in &d.recommendations {
            let _ = write!(
                s,
                "\n• {}: saves {} a month",
                escape_slack(&r.title),
                usd(r.monthly_saving)
            );
        }
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": s}}));
    }
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn",
        "text": escape_slack(&format!("{} to {} ({})", d.from, d.to, d.time_zone))}]}));

    Notification {
        event: match d.kind {
            DigestKind::Daily => "digest.daily",
            DigestKind::Weekly => "digest.weekly",
        },
        subject,
        text,
        html: html_page(&title, &body),
        slack: json!({"text": title, "blocks": blocks}),
        data: serde_json::to_value(d).unwrap_or(Value::Null),
    }
}

/// A message that says only that the channel works.
pub fn test_message(org_name: &str, channel_name: &str) -> Notification {
    let title = format!("Test message for {org_name}");
    let line = format!(
        "This is a test from Cognitude: channel \"{channel_name}\" receives alerts and digests."
    );
    Notification {
        event: "test",
        subject: format!("[Cognitude] {title}"),
        text: format!("{title}\n\n{line}\n"),
        html: html_page(&title, &format!("<p>{}</p>", escape_html(&line))),
        slack: json!({"text": line, "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": truncate(&title, 150)}},
            {"type": "section", "text": {"type": "mrkdwn", "text": escape_slack(&line)}},
        ]}),
        data: json!({"org_name": org_name, "channel_name": channel_name}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pico: i128, shown: &str) {
        assert_eq!(usd(Money::from_pico(pico)), shown);
    }

    #[test]
    fn dollars_for_people() {
        check(0, "$0.00");
        check(1_234_565_000_000_000, "$1,234.57");
        check(1_234_564_999_999_999, "$1,234.56");
        check(123_000_000, "$0.000123");
        check(10_000_000_000, "$0.01");
        check(-2_500_000_000_000, "-$2.50");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(12), "12");
        assert_eq!(percent_bp(1234), "12.34%");
    }

    #[test]
    fn markup_is_escaped() {
        assert_eq!(escape_html("<b>&\"'"), "&lt;b&gt;&amp;&quot;&#39;");
        assert_eq!(escape_slack("<!channel> & co"), "&lt;!channel&gt; &amp; co");
        let n = test_message("<script>", "ops & finance");
        assert!(n.html.contains("&lt;script&gt;"));
        assert!(!n.html.contains("<script>"));
        assert!(n.slack.to_string().contains("ops &amp; finance"));
    }
}
