//! Analyses 2 and 4: simple and medium requests on premium models (per model pair), and the
//! saving of cost-mode routing for an organization's whole fixed-model traffic.

use std::collections::HashMap;

use cognitude_catalog::Money;
use cognitude_router::Tier;

use crate::report::{
    Action, Confidence, Details, Kind, ModelShare, RealisedRouting, Recommendation, usd,
};
use crate::{Ctx, Finish, Record, Seen, stable_id};

/// How many example request ids a downgrade recommendation carries.
const EXAMPLES: usize = 3;

#[derive(Debug, Default)]
pub(crate) struct RoutingAnalysis {
    /// (organization, from model, to model).
    pairs: HashMap<(u32, u16, u16), Pair>,
    orgs: HashMap<u32, OrgRouting>,
}

#[derive(Debug, Default)]
struct Pair {
    simple: u64,
    medium: u64,
    actual: i128,
    alternative: i128,
    prompt_tokens: u64,
    completion_tokens: u64,
    examples: Vec<String>,
}

#[derive(Debug, Default)]
struct OrgRouting {
    successful: u64,
    classified: u64,
    moved: u64,
    saving: i128,
    by_model: HashMap<u16, Share>,
    routed: u64,
    routed_saving: i128,
}

#[derive(Debug, Default, Clone, Copy)]
struct Share {
    requests: u64,
    moved: u64,
    saving: i128,
}

impl RoutingAnalysis {
    pub fn observe(&mut self, ctx: &Ctx<'_>, seen: &Seen, r: &Record<'_>) {
        if !r.succeeded() {
            return;
        }
        let o = self.orgs.entry(seen.org).or_default();
        o.successful += 1;
        if r.routed {
            o.routed += 1;
            o.routed_saving += i128::from(r.route_saving_pico.unwrap_or(0));
            return;
        }
        // Cache hits and free answers cost nothing to move.
        if r.cost_pico <= 0 {
            return;
        }
        let (Some(model), Some(tier)) = (seen.model, ctx.tier(r)) else {
            return;
        };
        let used = ctx.model(model);
        let Some(alt) = ctx.choose(tier, r.prompt_tokens(), r.max_tokens(), used) else {
            return;
        };
        let actual = r.cost();
        let alternative = ctx.reprice(alt, r);
        let saving = actual - alternative;
        o.classified += 1;
        let share = o.by_model.entry(model).or_default();
        share.requests += 1;
        share.saving += saving;
        if alt != model {
            o.moved += 1;
            share.moved += 1;
        }
        o.saving += saving;

        let premium = used.is_some_and(|m| m.quality >= ctx.premium);
        if tier == Tier::Complex || !premium || alt == model || saving <= 0 {
            return;
        }
        let key = (seen.org, model, alt);
        if !self.pairs.contains_key(&key) && self.pairs.len() >= ctx.settings.max_groups {
            return;
        }
        let p = self.pairs.entry(key).or_default();
        if tier == Tier::Simple {
            p.simple += 1;
        } else {
            p.medium += 1;
        }
        p.actual += actual;
        p.alternative += alternative;
        p.prompt_tokens += r.prompt_tokens();
        p.completion_tokens += r.completion_tokens();
        if p.examples.len() < EXAMPLES && !r.request_id.is_empty() {
            p.examples.push(r.request_id.to_owned());
        }
    }

    pub fn groups(&self) -> usize {
        self.pairs.len() + self.orgs.len()
    }

    pub fn finish_downgrades(&self, fin: &Finish<'_, '_>, below: &mut u64) -> Vec<Recommendation> {
        let settings = &fin.ctx.settings;
        let mut out = Vec::new();
        for (&(org, from, to), p) in &self.pairs {
            let requests = p.simple + p.medium;
            let observed = p.actual - p.alternative;
            let monthly = fin.monthly(observed);
            if requests < settings.min_downgrade_requests || monthly < settings.min_monthly_saving {
                *below += 1;
                continue;
            }
            let (Some(from_m), Some(to_m)) = (fin.ctx.model(from), fin.ctx.model(to)) else {
                continue;
            };
            let org_id = fin.org(org);
            let (from_id, to_id) = (from_m.id.as_str(), to_m.id.as_str());
            let tiers = match (p.simple, p.medium) {
                (_, 0) => "simple",
                (0, _) => "medium",
                _ => "simple and medium",
            };
            let prices = [from, to].iter().filter_map(|&i| fin.prices(i)).collect();
            let formula = format!(
                "{requests} requests paid {} on {from_id} (sum of cost_pico) − the same {} prompt + {} completion tokens on {to_id} at {} and {} per million = {}",
                usd(Money::from_pico(p.actual)),
                p.prompt_tokens,
                p.completion_tokens,
                usd(crate::report::per_million(to_m.prices.input)),
                usd(crate::report::per_million(to_m.prices.output)),
                usd(Money::from_pico(p.alternative)),
            );
            out.push(Recommendation {
                id: stable_id(Kind::ModelDowngrade, &[org_id, from_id, to_id]),
                kind: Kind::ModelDowngrade,
                org_id: org_id.to_owned(),
                title: format!(
                    "Send {tiers} requests from {from_id} to {to_id}: save {} a month",
                    usd(monthly)
                ),
                explanation: format!(
                    "{requests} requests to {from_id} (quality {}) were scored {tiers} by the router. The cheapest model that meets the router's quality bar for that tier is {to_id} (quality {}); the same tokens would have cost {} instead of {}.",
                    from_m.quality,
                    to_m.quality,
                    usd(Money::from_pico(p.alternative)),
                    usd(Money::from_pico(p.actual)),
                ),
                monthly_saving: monthly,
                confidence: fin.confidence(
                    requests,
                    settings.min_downgrade_requests,
                    Confidence::Medium,
                ),
                basis: fin.basis(
                    requests,
                    observed,
                    1.0,
                    prices,
                    &[
                        ("requests", requests as f64),
                        ("prompt_tokens", p.prompt_tokens as f64),
                        ("completion_tokens", p.completion_tokens as f64),
                        ("actual_cost_usd", Money::from_pico(p.actual).as_usd_f64()),
                        (
                            "alternative_cost_usd",
                            Money::from_pico(p.alternative).as_usd_f64(),
                        ),
                    ],
                    formula,
                ),
                action: Action {
                    summary: format!(
                        "Call {to_id} instead of {from_id} for these {tiers} requests (see the example request ids), or let the router choose in cost mode."
                    ),
                    config: None,
                    code: Some(format!("- \"model\": \"{from_id}\"\n+ \"model\": \"{to_id}\"")),
                },
                details: Details::ModelDowngrade {
                    from_model: from_id.to_owned(),
                    to_model: to_id.to_owned(),
                    simple: p.simple,
                    medium: p.medium,
                    example_request_ids: p.examples.clone(),
                },
            });
        }
        out
    }

    /// One recommendation per organization not routing yet, net of its listed downgrades.
    pub fn finish_routing(
        &self,
        fin: &Finish<'_, '_>,
        downgrades: &[Recommendation],
        below: &mut u64,
    ) -> Vec<Recommendation> {
        let settings = &fin.ctx.settings;
        let mut out = Vec::new();
        for (&org, o) in &self.orgs {
            if o.classified == 0 {
                continue;
            }
            let org_id = fin.org(org);
            let mut overlapping: Vec<&Recommendation> =
                downgrades.iter().filter(|d| d.org_id == org_id).collect();
            overlapping.sort_by(|a, b| a.id.cmp(&b.id));
            let listed: i128 = overlapping
                .iter()
                .map(|d| d.basis.observed_saving.pico())
                .sum();
            let observed = o.saving - listed;
            let monthly = fin.monthly(observed);
            if o.classified < settings.min_routing_requests || monthly < settings.min_monthly_saving
            {
                *below += 1;
                continue;
            }
            let mut by_model: Vec<ModelShare> = o
                .by_model
                .iter()
                .filter_map(|(&m, s)| {
                    Some(ModelShare {
                        model: fin.ctx.model(m)?.id.clone(),
                        requests: s.requests,
                        moved: s.moved,
                        observed_saving: Money::from_pico(s.saving),
                    })
                })
                .collect();
            by_model.sort_by(|a, b| {
                b.observed_saving
                    .cmp(&a.observed_saving)
                    .then_with(|| a.model.cmp(&b.model))
            });
            let share = o.classified as f64 / o.successful.max(1) as f64;
            let mut prices: Vec<_> = o.by_model.keys().filter_map(|&m| fin.prices(m)).collect();
            prices.sort_by(|a, b| a.model.cmp(&b.model));
            let formula = format!(
                "{} classified requests on fixed models: actual cost − cost on the cost-mode choice for each one's tier = {} (moved {}, {:.0}% of successful traffic classified), minus {} already counted in {} model-downgrade recommendation(s)",
                o.classified,
                usd(Money::from_pico(o.saving)),
                o.moved,
                share * 100.0,
                usd(Money::from_pico(listed)),
                overlapping.len(),
            );
            out.push(Recommendation {
                id: stable_id(Kind::SmartRouting, &[org_id]),
                kind: Kind::SmartRouting,
                org_id: org_id.to_owned(),
                title: format!(
                    "Turn on cost-mode smart routing: save {} a month",
                    usd(monthly)
                ),
                explanation: format!(
                    "Of {} classified requests sent to fixed models, cost-mode routing would have sent {} to a cheaper model that still meets the router's quality bar for their tier (and some to a stronger one where needed). Net of the model downgrades listed separately, that saves {} a month ({} in all).",
                    o.classified,
                    o.moved,
                    usd(monthly),
                    usd(fin.monthly(o.saving)),
                ),
                monthly_saving: monthly,
                confidence: fin.confidence(
                    o.classified,
                    settings.min_routing_requests,
                    Confidence::Medium,
                ),
                basis: fin.basis(
                    o.classified,
                    observed,
                    1.0,
                    prices,
                    &[
                        ("classified_requests", o.classified as f64),
                        ("moved_requests", o.moved as f64),
                        ("classified_share", share),
                        (
                            "total_observed_saving_usd",
                            Money::from_pico(o.saving).as_usd_f64(),
                        ),
                        (
                            "listed_downgrades_usd",
                            Money::from_pico(listed).as_usd_f64(),
                        ),
                    ],
                    formula,
                ),
                action: Action {
                    summary: format!(
                        "Route {org_id}'s requests with the router in cost mode instead of fixed models."
                    ),
                    config: Some("# the organization's routing policy\nmode = \"cost\"".to_owned()),
                    code: None,
                },
                details: Details::SmartRouting {
                    classified_requests: o.classified,
                    moved_requests: o.moved,
                    classified_share: share,
                    total_monthly_saving: fin.monthly(o.saving),
                    overlapping: overlapping.iter().map(|d| d.id.clone()).collect(),
                    by_model,
                },
            });
        }
        out
    }

    pub fn realised(&self, fin: &Finish<'_, '_>) -> Vec<RealisedRouting> {
        let mut out: Vec<RealisedRouting> = self
            .orgs
            .iter()
            .filter(|(_, o)| o.routed > 0)
            .map(|(&org, o)| RealisedRouting {
                org_id: fin.org(org).to_owned(),
                routed_requests: o.routed,
                observed_saving: Money::from_pico(o.routed_saving),
                monthly_saving: fin.monthly(o.routed_saving),
            })
            .collect();
        out.sort_by(|a, b| {
            b.monthly_saving
                .cmp(&a.monthly_saving)
                .then_with(|| a.org_id.cmp(&b.org_id))
        });
        out
    }
}
