//! Analysis 1: identical requests repeated while the response cache was off, bypassed or
//! missed, and the TTL that would have caught them.

use cognitude_catalog::Money;

use crate::report::{Action, Confidence, Details, Kind, MapStats, Recommendation, usd};
use crate::sketch::{MAX_LEVEL, SampledMap, hash64, level};
use crate::{Finish, Record, Settings, stable_id};

/// The TTLs simulated, in seconds: a minute to a week.
pub(crate) const TTLS: [i64; 7] = [60, 300, 900, 3600, 6 * 3600, 86_400, 7 * 86_400];
/// The index of the one-day TTL: repeats within it are left to this analysis by the others.
const DAY: usize = 5;
const NOTHING: i64 = i64::MIN;

#[derive(Debug)]
pub(crate) struct CacheAnalysis {
    fingerprints: SampledMap<Entry>,
    /// Per organization, per sampling level, per TTL: what the simulated cache caught.
    orgs: Vec<Vec<[Tally; TTLS.len()]>>,
}

/// One fingerprint: when each simulated cache stored it, and when it was last seen.
#[derive(Debug, Clone, Copy)]
struct Entry {
    stored: [i64; TTLS.len()],
    last: i64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    hits: u64,
    saving: i128,
    /// Caught repeats by the real cache's status: off, bypass, miss.
    reasons: [u64; 3],
}

impl CacheAnalysis {
    pub fn new(settings: &Settings) -> CacheAnalysis {
        CacheAnalysis {
            fingerprints: SampledMap::new(settings.fingerprint_cap),
            orgs: Vec::new(),
        }
    }

    /// Replays the record through the simulated caches; true when it repeats a stored answer
    /// less than a day old (as far as the sample tells).
    pub fn observe(&mut self, _ctx: &crate::Ctx<'_>, org: u32, r: &Record<'_>) -> bool {
        let Some(status) = r.cache_status else {
            return false;
        };
        if !r.succeeded() || r.request_hash.is_empty() {
            return false;
        }
        let reason = match status {
            "off" => Some(0),
            "bypass" => Some(1),
            "miss" => Some(2),
            s if s.starts_with("hit-") || s == "coalesced" => None,
            _ => return false,
        };
        // The cache key includes the organization; the ledger's request hash does not.
        let key = hash64(&[r.org_id.as_bytes(), r.request_hash.as_bytes()]);
        let t = r.created_at;
        let longest = TTLS[TTLS.len() - 1] * 1_000_000;
        let Some(e) = self.fingerprints.entry(
            key,
            || Entry {
                stored: [NOTHING; TTLS.len()],
                last: t,
            },
            |e| t.saturating_sub(e.last) > longest,
        ) else {
            return false;
        };
        e.last = e.last.max(t);
        let cost = r.cost();
        let lvl = level(key);
        let mut repeat = false;
        let mut caught = [false; TTLS.len()];
        for (k, ttl) in TTLS.iter().enumerate() {
            let s = e.stored[k];
            if s != NOTHING && t.abs_diff(s) <= (ttl * 1_000_000).unsigned_abs() {
                caught[k] = true;
                repeat |= k == DAY;
            } else {
                e.stored[k] = t;
            }
        }
        if let Some(reason) = reason.filter(|_| cost > 0 && caught.iter().any(|c| *c)) {
            let org = org as usize;
            if self.orgs.len() <= org {
                self.orgs.resize_with(org + 1, Vec::new);
            }
            let levels = &mut self.orgs[org];
            if levels.len() <= lvl {
                levels.resize(lvl + 1, [Tally::default(); TTLS.len()]);
            }
            for (tally, _) in levels[lvl].iter_mut().zip(caught).filter(|(_, c)| *c) {
                tally.hits += 1;
                tally.saving += cost;
                tally.reasons[reason] += 1;
            }
        }
        repeat
    }

    pub fn map_stats(&self) -> MapStats {
        MapStats {
            len: self.fingerprints.len(),
            peak: self.fingerprints.peak(),
            cap: self.fingerprints.cap(),
            sample_shift: self.fingerprints.shift(),
            evicted: 0,
        }
    }

    pub fn finish(&self, fin: &Finish<'_, '_>, below: &mut u64) -> Vec<Recommendation> {
        let settings = &fin.ctx.settings;
        let shift = self.fingerprints.shift().min(MAX_LEVEL);
        let scale = 1i128 << shift;
        let mut out = Vec::new();
        for (org, levels) in self.orgs.iter().enumerate() {
            let mut totals = [Tally::default(); TTLS.len()];
            for per_ttl in levels.iter().skip(shift as usize) {
                for (t, l) in totals.iter_mut().zip(per_ttl) {
                    t.hits += l.hits;
                    t.saving += l.saving;
                    for (a, b) in t.reasons.iter_mut().zip(l.reasons) {
                        *a += b;
                    }
                }
            }
            let best = totals.iter().map(|t| t.saving).max().unwrap_or(0);
            if best <= 0 {
                continue;
            }
            let Some(k) = totals.iter().position(|t| t.saving * 10 >= best * 9) else {
                continue;
            };
            let chosen = totals[k];
            let observed = chosen.saving * scale;
            let monthly = fin.monthly(observed);
            if chosen.hits < settings.min_cache_repeats || monthly < settings.min_monthly_saving {
                *below += 1;
                continue;
            }
            out.push(recommend(
                fin, org as u32, k, &totals, scale, observed, monthly,
            ));
        }
        out
    }
}

fn recommend(
    fin: &Finish<'_, '_>,
    org: u32,
    k: usize,
    totals: &[Tally; TTLS.len()],
    scale: i128,
    observed: i128,
    monthly: Money,
) -> Recommendation {
    let org_id = fin.org(org);
    let chosen = totals[k];
    let ttl = TTLS[k] as u64;
    let [off, bypass, miss] = chosen.reasons.map(|n| n * scale as u64);
    let repeats = chosen.hits * scale as u64;
    let ttl_text = human_secs(ttl);
    let (summary, config, code) = if off >= bypass && off >= miss {
        (
            format!("Turn the response cache on with a TTL of {ttl_text}."),
            Some(format!("[cache]\nenabled = true\ndefault_ttl_secs = {ttl}")),
            None,
        )
    } else if miss >= bypass {
        (
            format!(
                "Keep cached answers for {ttl_text}: entries expired or were evicted before the repeats came."
            ),
            Some(format!(
                "[cache]\ndefault_ttl_secs = {ttl}\n# and check memory_max_bytes / max entry size if entries are evicted"
            )),
            None,
        )
    } else {
        (
            "Stop bypassing the cache for these repeated requests.".to_owned(),
            None,
            Some(format!(
                "Drop `Cache-Control: no-cache` / `no-store` from these calls, or send `x-cognitude-cache-ttl: {ttl}`."
            )),
        )
    };
    let sample_rate = 1.0 / scale as f64;
    let formula = format!(
        "{repeats} repeats of an answer stored less than {ttl_text} earlier, each paid in full (sum of their cost_pico){}",
        if scale > 1 {
            format!(", from 1 in {scale} fingerprints × {scale}")
        } else {
            String::new()
        }
    );
    Recommendation {
        id: stable_id(Kind::Cache, &[org_id]),
        kind: Kind::Cache,
        org_id: org_id.to_owned(),
        title: format!(
            "Cache repeated requests ({ttl_text} TTL): save {} a month",
            usd(monthly)
        ),
        explanation: format!(
            "{repeats} requests were exact repeats of an earlier successful request, made while the response cache was off ({off}), bypassed ({bypass}) or missed ({miss}). A response cache keeping answers for {ttl_text} would have served them without calling the model."
        ),
        monthly_saving: monthly,
        confidence: fin.confidence(
            chosen.hits,
            fin.ctx.settings.min_cache_repeats,
            Confidence::High,
        ),
        basis: fin.basis(
            repeats,
            observed,
            sample_rate,
            Vec::new(),
            &[
                ("repeats", repeats as f64),
                ("ttl_secs", ttl as f64),
                ("repeats_cache_off", off as f64),
                ("repeats_bypassed", bypass as f64),
                ("repeats_missed", miss as f64),
            ],
            formula,
        ),
        action: Action {
            summary,
            config,
            code,
        },
        details: Details::Cache {
            suggested_ttl_secs: ttl,
            repeats_cache_off: off,
            repeats_bypassed: bypass,
            repeats_missed: miss,
            saving_by_ttl: TTLS
                .iter()
                .zip(totals)
                .map(|(t, tally)| (*t as u64, Money::from_pico(tally.saving * scale)))
                .collect(),
        },
    }
}

fn human_secs(s: u64) -> String {
    match s {
        s if s % 86_400 == 0 => plural(s / 86_400, "day"),
        s if s % 3600 == 0 => plural(s / 3600, "hour"),
        s if s % 60 == 0 => plural(s / 60, "minute"),
        s => plural(s, "second"),
    }
}

fn plural(n: u64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}
