//! Analysis 3: `max_tokens` requested against the completion tokens actually used.

use std::collections::HashMap;

use cognitude_catalog::Money;

use crate::report::{Action, Confidence, Details, Kind, Recommendation, per_million, usd};
use crate::sketch::Histogram;
use crate::{Ctx, Finish, Record, Seen, stable_id};

#[derive(Debug, Default)]
pub(crate) struct MaxTokensAnalysis {
    /// (organization, model).
    groups: HashMap<(u32, u16), Group>,
}

#[derive(Debug, Default)]
struct Group {
    completions: Histogram,
    requested: Histogram,
    /// Completions that reached the limit.
    limit_hits: u64,
}

impl MaxTokensAnalysis {
    pub fn observe(&mut self, ctx: &Ctx<'_>, seen: &Seen, r: &Record<'_>) {
        let (Some(model), Some(limit)) = (seen.model, r.max_tokens().filter(|m| *m > 0)) else {
            return;
        };
        if !r.succeeded() {
            return;
        }
        let key = (seen.org, model);
        if !self.groups.contains_key(&key) && self.groups.len() >= ctx.settings.max_groups {
            return;
        }
        let g = self.groups.entry(key).or_default();
        let used = r.completion_tokens();
        g.completions.add(used);
        g.requested.add(limit);
        if used >= limit {
            g.limit_hits += 1;
        }
    }

    pub fn groups(&self) -> usize {
        self.groups.len()
    }

    pub fn finish(&self, fin: &Finish<'_, '_>, below: &mut u64) -> Vec<Recommendation> {
        let settings = &fin.ctx.settings;
        let mut out = Vec::new();
        for (&(org, model), g) in &self.groups {
            let requests = g.completions.total();
            if requests < settings.min_max_tokens_requests {
                *below += 1;
                continue;
            }
            let Some(m) = fin.ctx.model(model) else {
                continue;
            };
            let (p50, p95, p99) = (
                g.completions.quantile(0.50),
                g.completions.quantile(0.95),
                g.completions.quantile(0.99),
            );
            // Rounded down, so the limit asked for is never overstated.
            let requested_median = g.requested.quantile_floor(0.5);
            let hit_rate = g.limit_hits as f64 / requests as f64;
            let suggested = suggest(p99);
            if suggested.saturating_mul(2) > requested_median || g.limit_hits * 100 >= requests {
                *below += 1;
                continue;
            }
            // Tokens of limit above the suggestion, summed over requests.
            let excess = g.requested.excess_over(suggested);
            let worst_case = m.prices.output.times(excess).pico();
            let worst_monthly = fin.monthly(worst_case);
            if worst_monthly < settings.min_monthly_saving {
                *below += 1;
                continue;
            }
            let affected = g.requested.count_at_least(suggested + 1);
            let tpm = excess as f64 / fin.minutes();
            let org_id = fin.org(org);
            let model_id = m.id.as_str();
            let formula = format!(
                "{requests} requests with max_tokens (median {requested_median}); completions p50 {p50}, p95 {p95}, p99 {p99}; suggested ⌈p99 × 1.25⌉ to a multiple of 64 = {suggested}; limit above it summed over requests = {excess} tokens × {} per million output = {} of worst case; billed saving 0 (tokens are billed as used)",
                usd(per_million(m.prices.output)),
                usd(Money::from_pico(worst_case)),
            );
            let mut basis = fin.basis(
                requests,
                0,
                1.0,
                fin.prices(model).into_iter().collect(),
                &[
                    ("requests", requests as f64),
                    ("requests_above_suggestion", affected as f64),
                    ("requested_median", requested_median as f64),
                    ("completion_p50", p50 as f64),
                    ("completion_p95", p95 as f64),
                    ("completion_p99", p99 as f64),
                    ("limit_hit_rate", hit_rate),
                    ("suggested_max_tokens", suggested as f64),
                    ("excess_tokens", excess as f64),
                    (
                        "worst_case_observed_usd",
                        Money::from_pico(worst_case).as_usd_f64(),
                    ),
                    ("tpm_headroom_freed", tpm),
                ],
                formula,
            );
            basis.formula.push_str(&format!(
                "; worst case {} × 30 / {:.2} = {} a month",
                usd(Money::from_pico(worst_case)),
                fin.days(),
                usd(worst_monthly)
            ));
            out.push(Recommendation {
                id: stable_id(Kind::MaxTokens, &[org_id, model_id]),
                kind: Kind::MaxTokens,
                org_id: org_id.to_owned(),
                title: format!(
                    "Lower max_tokens for {model_id} from about {requested_median} to {suggested}"
                ),
                explanation: format!(
                    "Requests to {model_id} ask for up to {requested_median} completion tokens but 99% of completions use at most {p99} (median {p50}); {:.2}% reached the limit. A limit of {suggested} still leaves a quarter to spare. Billing does not change, but every request reserves {} fewer tokens of rate-limit headroom (about {tpm:.0} tokens a minute on average) and the worst case a runaway completion can cost drops by {} a month.",
                    hit_rate * 100.0,
                    requested_median.saturating_sub(suggested),
                    usd(worst_monthly),
                ),
                monthly_saving: Money::ZERO,
                confidence: fin.confidence(
                    requests,
                    settings.min_max_tokens_requests,
                    Confidence::High,
                ),
                basis,
                action: Action {
                    summary: format!("Send max_tokens = {suggested} on {model_id} requests."),
                    config: None,
                    code: Some(format!("\"max_tokens\": {suggested}")),
                },
                details: Details::MaxTokens {
                    model: model_id.to_owned(),
                    requested_median,
                    completion_p50: p50,
                    completion_p95: p95,
                    completion_p99: p99,
                    limit_hit_rate: hit_rate,
                    suggested_max_tokens: suggested,
                    tpm_headroom_freed: tpm,
                    worst_case_monthly_reduction: worst_monthly,
                },
            });
        }
        out
    }
}

/// p99 × 1.25, rounded up to a multiple of 64 (at least 64).
fn suggest(p99: u64) -> u64 {
    let padded = p99.saturating_mul(5).div_ceil(4);
    padded.div_ceil(64).max(1) * 64
}

#[cfg(test)]
mod tests {
    #[test]
    fn suggestions_round_up() {
        for (p99, expected) in [
            (0, 64),
            (1, 64),
            (51, 64),
            (52, 128),
            (200, 256),
            (1000, 1280),
        ] {
            assert_eq!(super::suggest(p99), expected, "{p99}");
        }
    }
}
