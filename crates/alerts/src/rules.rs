//! Alert conditions and their evaluation, pure given the ledger figures and the time.
//!
//! Evaluating a rule is two steps around one store read: [`plan`] says which windows of the
//! ledger the condition needs at a moment (and the key of the period it would fire for), the
//! caller sums the ledger over them into [`Figures`], and [`evaluate`] decides. Neither step
//! reads a clock or does I/O, so tests drive them with any time and any figures.

use cognitude_catalog::Money;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::error::{Result, invalid};
use crate::period::{self, Period, Window};

/// What a rule watches. Amounts are US dollars (a decimal string or number, kept exact).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// Spend over a calendar period crossing an amount, or shares of a budget (each share
    /// fires once per period).
    Spend {
        period: Period,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        amount_usd: Option<Money>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        budget_usd: Option<Money>,
        /// Shares of `budget_usd`, in percent; `[50, 80, 100]` when a budget is given alone.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        percents: Vec<u32>,
    },
    /// At the month-to-date rate, the calendar month ends over `budget_usd`.
    Forecast {
        budget_usd: Money,
        /// No forecast before this much of the month has passed (an hour of traffic says
        /// little about a month).
        #[serde(default = "default_min_elapsed_hours")]
        min_elapsed_hours: u32,
    },
    /// The current hour's (or day's) spend is over `factor` × the average of the `trailing`
    /// hours (days) before it.
    Spike {
        window: SpikeWindow,
        factor: f64,
        /// How many earlier windows make the average: 24 hours or 7 days by default.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trailing: Option<u32>,
        /// Spend below this never counts as a spike (a cent over an average of zero).
        #[serde(default = "default_min_spike_usd")]
        min_spend_usd: Money,
    },
    /// The share of requests that failed upstream (status ≥ 500, or a stream the upstream broke
    /// off) over the last `window_minutes`, once at least `min_requests` were made.
    ErrorRate {
        #[serde(default = "default_error_window")]
        window_minutes: u32,
        threshold_percent: f64,
        #[serde(default = "default_min_requests")]
        min_requests: u64,
    },
}

/// The window a spike rule compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpikeWindow {
    Hour,
    Day,
}

fn default_min_elapsed_hours() -> u32 {
    72
}
fn default_min_spike_usd() -> Money {
    Money::from_pico(cognitude_catalog::PICO_PER_USD)
}
fn default_error_window() -> u32 {
    15
}
fn default_min_requests() -> u64 {
    20
}

impl Condition {
    /// The kind, as stored and shown: `spend`, `forecast`, `spike`, `error_rate`.
    pub fn kind(&self) -> &'static str {
        match self {
            Condition::Spend { .. } => "spend",
            Condition::Forecast { .. } => "forecast",
            Condition::Spike { .. } => "spike",
            Condition::ErrorRate { .. } => "error_rate",
        }
    }

    /// Checks the values and fills in defaults that depend on other fields.
    pub fn validated(mut self) -> Result<Condition> {
        let positive = |field: &str, m: Money| {
            if m.pico() <= 0 {
                Err(invalid(field, "must be a positive amount of US dollars"))
            } else {
                Ok(())
            }
        };
        match &mut self {
            Condition::Spend {
                amount_usd,
                budget_usd,
                percents,
                ..
            } => match (amount_usd, budget_usd) {
                (Some(a), None) => {
                    positive("condition.amount_usd", *a)?;
                    if !percents.is_empty() {
                        return Err(invalid(
                            "condition.percents",
                            "applies to budget_usd, not amount_usd",
                        ));
                    }
                }
                (None, Some(b)) => {
                    positive("condition.budget_usd", *b)?;
                    if percents.is_empty() {
                        *percents = vec![50, 80, 100];
                    }
                    if percents.len() > 10 || percents.iter().any(|p| !(1..=1000).contains(p)) {
                        return Err(invalid(
                            "condition.percents",
                            "must be at most 10 shares between 1 and 1000 percent",
                        ));
                    }
                    percents.sort_unstable();
                    percents.dedup();
                }
                _ => {
                    return Err(invalid(
                        "condition",
                        "a spend rule needs exactly one of amount_usd and budget_usd",
                    ));
                }
            },
            Condition::Forecast {
                budget_usd,
                min_elapsed_hours,
            } => {
                positive("condition.budget_usd", *budget_usd)?;
                if *min_elapsed_hours > 24 * 27 {
                    return Err(invalid(
                        "condition.min_elapsed_hours",
                        "must be at most 648 (27 days)",
                    ));
                }
            }
            Condition::Spike {
                window,
                factor,
                trailing,
                min_spend_usd,
            } => {
                if !factor.is_finite() || *factor <= 1.0 || *factor > 1000.0 {
                    return Err(invalid(
                        "condition.factor",
                        "must be a number above 1 and at most 1000",
                    ));
                }
                let n = trailing.unwrap_or(match window {
                    SpikeWindow::Hour => 24,
                    SpikeWindow::Day => 7,
                });
                if !(1..=366).contains(&n) {
                    return Err(invalid("condition.trailing", "must be between 1 and 366"));
                }
                *trailing = Some(n);
                if min_spend_usd.pico() < 0 {
                    return Err(invalid("condition.min_spend_usd", "must not be negative"));
                }
            }
            Condition::ErrorRate {
                window_minutes,
                threshold_percent,
                min_requests,
            } => {
                if !(1..=24 * 60).contains(window_minutes) {
                    return Err(invalid(
                        "condition.window_minutes",
                        "must be between 1 and 1440",
                    ));
                }
                if !threshold_percent.is_finite()
                    || *threshold_percent <= 0.0
                    || *threshold_percent > 100.0
                {
                    return Err(invalid(
                        "condition.threshold_percent",
                        "must be above 0 and at most 100",
                    ));
                }
                if *min_requests == 0 {
                    return Err(invalid("condition.min_requests", "must be at least 1"));
                }
            }
        }
        Ok(self)
    }
}

/// What a condition needs from the ledger at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The key of the period the rule would fire for (before any budget-share suffix).
    pub key: String,
    /// For people: `2026-11`, `the last 15 minutes`.
    pub label: String,
    /// The window whose spend (or requests) is judged.
    pub current: Window,
    /// The earlier windows a spike is compared with.
    pub baseline: Option<Window>,
}

/// Ledger sums over a [`Plan`]'s windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    pub spend: Money,
    pub baseline_spend: Money,
    pub requests: i64,
    pub upstream_errors: i64,
}

/// A condition that holds: what crossed, and the key to record it under.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trigger {
    /// `(rule, key)` fires once.
    pub key: String,
    /// Lower budget shares crossed at the same time: recorded as superseded, not sent.
    pub superseded_keys: Vec<String>,
    pub breach: Breach,
}

/// What crossed, and by how much. Money is exact.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Breach {
    Spend {
        spent: Money,
        threshold: Money,
        over_by: Money,
        #[serde(skip_serializing_if = "Option::is_none")]
        budget: Option<Money>,
        #[serde(skip_serializing_if = "Option::is_none")]
        percent: Option<u32>,
    },
    Forecast {
        spent: Money,
        projected: Money,
        budget: Money,
        over_by: Money,
    },
    Spike {
        spent: Money,
        average: Money,
        factor: f64,
        threshold: Money,
        over_by: Money,
    },
    ErrorRate {
        errors: i64,
        requests: i64,
        /// Basis points (1/100 of a percent), rounded down.
        rate_bp: i64,
        threshold_percent: f64,
    },
}

/// The windows `condition` needs at `now` (Unix microseconds) in zone `tz`.
pub fn plan(condition: &Condition, now: i64, tz: &TimeZone) -> Result<Plan> {
    match condition {
        Condition::Spend { period, .. } => {
            let pw = period::period_window(*period, now, tz)?;
            Ok(Plan {
                key: pw.key,
                label: pw.label,
                current: pw.window,
                baseline: None,
            })
        }
        Condition::Forecast { .. } => {
            let pw = period::period_window(Period::Month, now, tz)?;
            Ok(Plan {
                key: pw.key,
                label: pw.label,
                current: pw.window,
                baseline: None,
            })
        }
        Condition::Spike {
            window, trailing, ..
        } => {
            let n = i64::from(trailing.unwrap_or(1).max(1));
            let (pw, baseline) = match window {
                SpikeWindow::Hour => {
                    let pw = period::hour_window(now, tz)?;
                    let from = pw.window.from - n * 3_600_000_000;
                    let base = Window {
                        from,
                        to: pw.window.from,
                    };
                    (pw, base)
                }
                SpikeWindow::Day => {
                    let pw = period::period_window(Period::Day, now, tz)?;
                    let base = period::days_before(pw.window.from, n, tz)?;
                    (pw, base)
                }
            };
            Ok(Plan {
                key: pw.key,
                label: pw.label,
                current: pw.window,
                baseline: Some(baseline),
            })
        }
        Condition::ErrorRate { window_minutes, .. } => {
            let len = i64::from((*window_minutes).max(1)) * 60_000_000;
            // One firing per aligned stretch of the window's length.
            let slot = now.div_euclid(len);
            Ok(Plan {
                key: format!("errors:{window_minutes}m:{slot}"),
                label: format!("the last {window_minutes} minutes"),
                current: Window {
                    from: now - len,
                    to: now,
                },
                baseline: None,
            })
        }
    }
}

/// Whether `condition` holds given the ledger `figures` over `plan`'s windows at `now`.
pub fn evaluate(
    condition: &Condition,
    plan: &Plan,
    figures: &Figures,
    now: i64,
) -> Option<Trigger> {
    let spent = figures.spend;
    match condition {
        Condition::Spend {
            amount_usd: Some(amount),
            ..
        } => (spent >= *amount).then(|| Trigger {
            key: plan.key.clone(),
            superseded_keys: Vec::new(),
            breach: Breach::Spend {
                spent,
                threshold: *amount,
                over_by: spent - *amount,
                budget: None,
                percent: None,
            },
        }),
        Condition::Spend {
            budget_usd: Some(budget),
            percents,
            ..
        } => {
            let crossed: Vec<u32> = percents
                .iter()
                .copied()
                .filter(|p| spent.pico() * 100 >= budget.pico() * i128::from(*p))
                .collect();
            let top = *crossed.last()?;
            let threshold = Money::from_pico(budget.pico() * i128::from(top) / 100);
            Some(Trigger {
                key: format!("{}@{top}%", plan.key),
                superseded_keys: crossed[..crossed.len() - 1]
                    .iter()
                    .map(|p| format!("{}@{p}%", plan.key))
                    .collect(),
                breach: Breach::Spend {
                    spent,
                    threshold,
                    over_by: spent - threshold,
                    budget: Some(*budget),
                    percent: Some(top),
                },
            })
        }
        Condition::Spend { .. } => None,
        Condition::Forecast {
            budget_usd,
            min_elapsed_hours,
        } => {
            let elapsed = i128::from(now - plan.current.from);
            let total = i128::from(plan.current.len_micros());
            if elapsed < i128::from(*min_elapsed_hours) * 3_600_000_000 || elapsed <= 0 {
                return None;
            }
            let projected = Money::from_pico(spent.pico() * total / elapsed);
            (projected > *budget_usd).then(|| Trigger {
                key: plan.key.clone(),
                superseded_keys: Vec::new(),
                breach: Breach::Forecast {
                    spent,
                    projected,
                    budget: *budget_usd,
                    over_by: projected - *budget_usd,
                },
            })
        }
        Condition::Spike {
            factor,
            trailing,
            min_spend_usd,
            ..
        } => {
            let n = i128::from(trailing.unwrap_or(1).max(1));
            let average = Money::from_pico(figures.baseline_spend.pico() / n);
            // The factor in thousandths keeps the comparison in integers.
            let milli = (factor * 1000.0).round() as i128;
            let threshold = Money::from_pico(figures.baseline_spend.pico() * milli / (1000 * n));
            (spent > threshold && spent >= *min_spend_usd).then(|| Trigger {
                key: plan.key.clone(),
                superseded_keys: Vec::new(),
                breach: Breach::Spike {
                    spent,
                    average,
                    factor: *factor,
                    threshold,
                    over_by: spent - threshold,
                },
            })
        }
        Condition::ErrorRate {
            threshold_percent,
            min_requests,
            ..
        } => {
            let requests = figures.requests;
            let errors = figures.upstream_errors;
            if requests <= 0 || (requests as u64) < *min_requests {
                return None;
            }
            let threshold_bp = (threshold_percent * 100.0).round() as i64;
            (errors * 10_000 >= threshold_bp * requests).then(|| Trigger {
                key: plan.key.clone(),
                superseded_keys: Vec::new(),
                breach: Breach::ErrorRate {
                    errors,
                    requests,
                    rate_bp: errors * 10_000 / requests,
                    threshold_percent: *threshold_percent,
                },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::period::time_zone;

    fn usd(s: &str) -> Money {
        s.parse().unwrap()
    }

    fn at(s: &str) -> i64 {
        s.parse::<jiff::ZonedDateTime>()
            .unwrap()
            .timestamp()
            .as_microsecond()
    }

    fn cond(json: &str) -> Condition {
        serde_json::from_str::<Condition>(json)
            .unwrap()
            .validated()
            .unwrap()
    }

    /// Evaluates `c` at `now` in `zone` with `figures`; returns the key and breach, if any.
    fn check(c: &Condition, now: &str, zone: &str, figures: Figures) -> Option<Trigger> {
        let tz = time_zone(zone).unwrap();
        let now = at(now);
        let p = plan(c, now, &tz).unwrap();
        evaluate(c, &p, &figures, now)
    }

    fn spend(s: &str) -> Figures {
        Figures {
            spend: usd(s),
            ..Figures::default()
        }
    }

    #[test]
    fn budget_shares_fire_the_highest_crossed() {
        let c = cond(r#"{"kind":"spend","period":"month","budget_usd":"1000"}"#);
        let now = "2026-11-20T12:00[Europe/Paris]";
        assert!(check(&c, now, "Europe/Paris", spend("499.99")).is_none());
        let t = check(&c, now, "Europe/Paris", spend("500")).unwrap();
        assert_eq!(t.key, "month:2026-11@50%");
        let t = check(&c, now, "Europe/Paris", spend("850")).unwrap();
        assert_eq!(t.key, "month:2026-11@80%");
        assert_eq!(t.superseded_keys, vec!["month:2026-11@50%".to_owned()]);
        match t.breach {
            Breach::Spend {
                threshold, over_by, ..
            } => {
                assert_eq!(threshold, usd("800"));
                assert_eq!(over_by, usd("50"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn absolute_amount_per_day_in_the_orgs_zone() {
        let c = cond(r#"{"kind":"spend","period":"day","amount_usd":25}"#);
        // 23:30 on the 25th in Los Angeles is already the 26th in UTC.
        let t = check(
            &c,
            "2026-11-25T23:30[America/Los_Angeles]",
            "America/Los_Angeles",
            spend("25.000000000001"),
        )
        .unwrap();
        assert_eq!(t.key, "day:2026-11-25");
        let t = check(
            &c,
            "2026-11-25T23:30[America/Los_Angeles]",
            "UTC",
            spend("30"),
        )
        .unwrap();
        assert_eq!(t.key, "day:2026-11-26");
    }

    #[test]
    fn forecast_projects_the_month() {
        let c = cond(r#"{"kind":"forecast","budget_usd":"300","min_elapsed_hours":24}"#);
        // Ten of thirty days gone (November), $101 spent: $303 projected.
        let now = "2026-11-11T00:00[UTC]";
        let t = check(&c, now, "UTC", spend("101")).unwrap();
        match t.breach {
            Breach::Forecast { projected, .. } => assert_eq!(projected, usd("303")),
            other => panic!("{other:?}"),
        }
        assert!(check(&c, now, "UTC", spend("100")).is_none());
        // Too early in the month to say.
        assert!(check(&c, "2026-11-01T12:00[UTC]", "UTC", spend("50")).is_none());
    }

    #[test]
    fn spike_against_trailing_average() {
        let c = cond(r#"{"kind":"spike","window":"hour","factor":3,"trailing":24}"#);
        let base = Figures {
            spend: usd("7.21"),
            baseline_spend: usd("57.6"), // 2.40 an hour
            ..Figures::default()
        };
        let t = check(&c, "2026-11-25T14:20[UTC]", "UTC", base).unwrap();
        assert_eq!(t.key, "hour:2026-11-25T14:00+00:00");
        match t.breach {
            Breach::Spike {
                average, threshold, ..
            } => {
                assert_eq!(average, usd("2.4"));
                assert_eq!(threshold, usd("7.2"));
            }
            other => panic!("{other:?}"),
        }
        let calm = Figures {
            spend: usd("7.2"),
            ..base
        };
        assert!(check(&c, "2026-11-25T14:20[UTC]", "UTC", calm).is_none());
        // Below the floor, even over an average of zero.
        let tiny = Figures {
            spend: usd("0.5"),
            baseline_spend: Money::ZERO,
            ..base
        };
        assert!(check(&c, "2026-11-25T14:20[UTC]", "UTC", tiny).is_none());
    }

    #[test]
    fn error_rate_needs_enough_requests() {
        let c = cond(r#"{"kind":"error_rate","threshold_percent":10,"min_requests":50}"#);
        let f = |requests, upstream_errors| Figures {
            requests,
            upstream_errors,
            ..Figures::default()
        };
        assert!(check(&c, "2026-11-25T14:20[UTC]", "UTC", f(40, 40)).is_none());
        assert!(check(&c, "2026-11-25T14:20[UTC]", "UTC", f(100, 9)).is_none());
        let t = check(&c, "2026-11-25T14:20[UTC]", "UTC", f(100, 10)).unwrap();
        assert!(t.key.starts_with("errors:15m:"));
        // The same 15-minute slot has the same key; the next slot does not.
        let later = check(&c, "2026-11-25T14:29[UTC]", "UTC", f(100, 10)).unwrap();
        assert_eq!(t.key, later.key);
        let next = check(&c, "2026-11-25T14:31[UTC]", "UTC", f(100, 10)).unwrap();
        assert_ne!(t.key, next.key);
    }

    #[test]
    fn invalid_conditions_name_the_field() {
        let bad = |json: &str, field: &str| {
            let e = serde_json::from_str::<Condition>(json)
                .unwrap()
                .validated()
                .unwrap_err();
            assert!(
                matches!(&e, crate::Error::Invalid { field: f, .. } if f == field),
                "{json}: {e:?}"
            );
        };
        bad(
            r#"{"kind":"spend","period":"day","amount_usd":1,"budget_usd":2}"#,
            "condition",
        );
        bad(
            r#"{"kind":"spend","period":"day","amount_usd":"-1"}"#,
            "condition.amount_usd",
        );
        bad(
            r#"{"kind":"spike","window":"day","factor":0.5}"#,
            "condition.factor",
        );
        bad(
            r#"{"kind":"error_rate","threshold_percent":150}"#,
            "condition.threshold_percent",
        );
        assert!(
            serde_json::from_str::<Condition>(r#"{"kind":"spend","period":"day","colour":1}"#)
                .is_err()
        );
    }
}
