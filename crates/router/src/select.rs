//! Model selection: from a classification and a catalog to a chosen model, ranked
//! alternatives with this request's estimated cost and latency, and a one-line reason.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use cognitude_catalog::{Capabilities, Catalog, ModelInfo, Money, TokenUsage};
use smallvec::SmallVec;

use crate::classify::{Classification, Tier};
use crate::error::{Error, Rejections, Result};

/// What selection optimises.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Mode {
    /// The cheapest model whose quality meets the tier's bar.
    #[default]
    Cost,
    /// The fastest model (time to first token plus generation) that meets the bar.
    Latency,
    /// The best model within the constraints, whatever it costs.
    Quality,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Cost, Mode::Latency, Mode::Quality];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Cost => "cost",
            Mode::Latency => "latency",
            Mode::Quality => "quality",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Mode> {
        match s {
            "cost" => Ok(Mode::Cost),
            "latency" => Ok(Mode::Latency),
            "quality" => Ok(Mode::Quality),
            other => Err(Error::UnknownMode(other.to_owned())),
        }
    }
}

/// The lowest catalog quality (0–100) a model needs to serve each tier, in cost and latency
/// modes. Valid when each is at most 100 and `simple ≤ medium ≤ complex`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "RawBars"))]
pub struct QualityBars {
    simple: u32,
    medium: u32,
    complex: u32,
}

#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBars {
    simple: u32,
    medium: u32,
    complex: u32,
}

#[cfg(feature = "serde")]
impl TryFrom<RawBars> for QualityBars {
    type Error = Error;

    fn try_from(r: RawBars) -> Result<QualityBars> {
        QualityBars::new(r.simple, r.medium, r.complex)
    }
}

impl QualityBars {
    /// Simple: any current small model; medium: the better small models (gpt-4.1-mini,
    /// gemini-2.5-flash class); complex: reasoning-capable frontier-adjacent models.
    pub const DEFAULT: QualityBars = QualityBars {
        simple: 55,
        medium: 74,
        complex: 85,
    };

    pub fn new(simple: u32, medium: u32, complex: u32) -> Result<QualityBars> {
        if complex > 100 {
            return Err(Error::InvalidQualityBars(format!(
                "quality is 0–100 (complex bar {complex})"
            )));
        }
        if simple > medium || medium > complex {
            return Err(Error::InvalidQualityBars(format!(
                "need simple ≤ medium ≤ complex (got {simple}, {medium}, {complex})"
            )));
        }
        Ok(QualityBars {
            simple,
            medium,
            complex,
        })
    }

    pub fn bar(&self, tier: Tier) -> u32 {
        match tier {
            Tier::Simple => self.simple,
            Tier::Medium => self.medium,
            Tier::Complex => self.complex,
        }
    }
}

impl Default for QualityBars {
    fn default() -> QualityBars {
        QualityBars::DEFAULT
    }
}

/// Hard limits on which models may serve a request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Constraints {
    /// Model ids allowed; empty allows every model.
    pub allowed_models: Vec<String>,
    /// Providers allowed; empty allows every provider.
    pub allowed_providers: Vec<String>,
    /// Capabilities every candidate must have, on top of what the request itself needs.
    pub required: Capabilities,
    /// The most this request may cost, estimated.
    pub price_ceiling: Option<Money>,
}

impl Constraints {
    fn allows(&self, m: &ModelInfo) -> bool {
        (self.allowed_models.is_empty() || self.allowed_models.contains(&m.id))
            && (self.allowed_providers.is_empty() || self.allowed_providers.contains(&m.provider))
    }
}

/// A model that could serve the request, with this request's estimates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate<'c> {
    pub model: &'c ModelInfo,
    /// Estimated cost: estimated input tokens and expected output tokens at the catalog's
    /// prices (exact arithmetic on the estimates).
    pub cost: Money,
    /// Estimated time to the last token: typical latency plus expected output at typical speed.
    pub latency_ms: u64,
    /// Whether the model's quality reaches the tier's bar.
    pub meets_bar: bool,
}

/// The chosen model and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection<'c> {
    pub model: &'c ModelInfo,
    pub mode: Mode,
    pub tier: Tier,
    /// The quality bar that applied (0 in quality mode).
    pub bar: u32,
    pub cost: Money,
    pub latency_ms: u64,
    /// Output tokens the estimates assume.
    pub output_tokens: u64,
    /// Every model that satisfies the constraints, best first; the chosen model leads.
    pub candidates: Vec<Candidate<'c>>,
    /// One line for a person: what was chosen and why.
    pub reason: String,
}

/// Chooses a model for classified requests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector {
    pub mode: Mode,
    pub constraints: Constraints,
    pub bars: QualityBars,
}

/// Output tokens assumed when estimating a request of each tier, unless `max_tokens` is lower.
pub const EXPECTED_OUTPUT_TOKENS: [u64; 3] = [250, 700, 1500];

/// The output tokens the estimates assume for a tier and an optional `max_tokens`.
pub fn expected_output_tokens(tier: Tier, max_tokens: Option<u64>) -> u64 {
    let typical = EXPECTED_OUTPUT_TOKENS[tier as usize];
    max_tokens.map_or(typical, |m| m.min(typical))
}

/// This request's estimated cost and latency on one model.
pub fn estimate(model: &ModelInfo, input_tokens: u64, output_tokens: u64) -> (Money, u64) {
    let usage = TokenUsage {
        input: input_tokens,
        output: output_tokens,
        ..TokenUsage::default()
    };
    (model.cost(&usage), latency_estimate(model, output_tokens))
}

fn latency_estimate(model: &ModelInfo, output_tokens: u64) -> u64 {
    let generation = output_tokens.saturating_mul(1000) / u64::from(model.tokens_per_second.max(1));
    u64::from(model.latency_ms).saturating_add(generation)
}

/// [`estimate`] for the selection loop, equal to it to the picodollar: with no cached or
/// cache-write tokens, `ModelInfo::cost` is the input and output terms at the prices in force.
/// The cost is also returned as a `u64` when it is under 2⁶⁴ picodollars (about 18 million
/// dollars, so always in practice): it is worked out in 64-bit arithmetic then, and the sort keys
/// take it from there. `Money::times` saturates in 128-bit arithmetic, which costs a call per
/// term; a price that fits in 64 bits times a `u64` count cannot overflow 128 bits, so the plain
/// product is exact.
#[inline(always)]
fn fast_estimate(
    model: &ModelInfo,
    input_tokens: u64,
    output_tokens: u64,
) -> (Money, Option<u64>, u64) {
    // Most models have one price; `prices_for` is a call into the catalog crate per model.
    let p = if model.price_tiers.is_empty() {
        &model.prices
    } else {
        model.prices_for(input_tokens)
    };
    let narrow = match (
        u64::try_from(p.input.pico()),
        u64::try_from(p.output.pico()),
    ) {
        (Ok(input), Ok(output)) => input
            .checked_mul(input_tokens)
            .zip(output.checked_mul(output_tokens))
            .and_then(|(a, b)| a.checked_add(b)),
        _ => None,
    };
    let cost = match narrow {
        Some(pico) => Money::from_pico(i128::from(pico)),
        None => times(p.input, input_tokens) + times(p.output, output_tokens),
    };
    (cost, narrow, latency_estimate(model, output_tokens))
}

fn times(price: Money, n: u64) -> Money {
    match i64::try_from(price.pico()) {
        Ok(p) => Money::from_pico(i128::from(p) * i128::from(n)),
        Err(_) => price.times(n),
    }
}

impl Selector {
    pub fn new(mode: Mode) -> Selector {
        Selector {
            mode,
            ..Selector::default()
        }
    }

    /// Chooses a model from `catalog` for a classified request.
    pub fn select<'c>(&self, catalog: &'c Catalog, c: &Classification) -> Result<Selection<'c>> {
        if catalog.is_empty() {
            return Err(Error::EmptyCatalog);
        }
        let bar = match self.mode {
            Mode::Quality => 0,
            Mode::Cost | Mode::Latency => self.bars.bar(c.tier),
        };
        let out = expected_output_tokens(c.tier, c.max_tokens);
        let mut rejected = Rejections {
            considered: catalog.len(),
            ..Rejections::default()
        };
        // What the request needs and what the constraints require, checked as one; most
        // requests need nothing, and then no model is checked.
        let required = c.needs.union(&self.constraints.required);
        let any_required = required != Capabilities::default();
        // Unsorted, on the stack for catalogs of up to PACKED_MAX models: the ranked list is
        // then written once, in order.
        let mut unsorted: SmallVec<[Candidate<'c>; PACKED_MAX]> = SmallVec::new();
        // What the 64-bit keys need to know, gathered as the candidates are: whether every
        // cost is under 2⁶⁴ picodollars, and the bits of each criterion's largest value.
        let mut widths = Widths::NONE;
        for m in catalog.models() {
            if !self.constraints.allows(m) {
                rejected.not_allowed += 1;
                continue;
            }
            if any_required && !m.capabilities.covers(&required) {
                rejected.missing_capability += 1;
                continue;
            }
            let reserved = c.max_tokens.unwrap_or(out);
            if c.input_tokens.saturating_add(reserved) > m.context_window
                || c.max_tokens.is_some_and(|mt| mt > m.max_output)
            {
                rejected.too_small += 1;
                continue;
            }
            let (cost, narrow, latency_ms) = fast_estimate(m, c.input_tokens, out);
            if self
                .constraints
                .price_ceiling
                .is_some_and(|ceil| cost > ceil)
            {
                rejected.over_price += 1;
                continue;
            }
            widths.add(narrow, latency_ms, m.quality);
            unsorted.push(Candidate {
                model: m,
                cost,
                latency_ms,
                meets_bar: m.quality >= bar,
            });
        }
        let mode = self.mode;
        let candidates = match sort_by_u64_keys(mode, &unsorted, &widths)
            .or_else(|| sort_by_packed_keys(mode, &unsorted))
        {
            Some(ranked) => ranked,
            None => {
                let mut all = unsorted.into_vec();
                // `rank` is a total order (it ends on the model id, unique in a catalog), so an
                // unstable sort gives the same order as a stable one, without a scratch buffer.
                all.sort_unstable_by(|a, b| rank(mode, a, b));
                all
            }
        };
        let Some(&best) = candidates.first() else {
            return Err(Error::NoModel(rejected));
        };
        let reason = reason(mode, c, bar, &best, candidates.len());
        Ok(Selection {
            model: best.model,
            mode,
            tier: c.tier,
            bar,
            cost: best.cost,
            latency_ms: best.latency_ms,
            output_tokens: out,
            candidates,
            reason,
        })
    }
}

/// The most candidates the sorts by key handle, and that [`Selector::select`] keeps on the
/// stack: the keys live there too, with the candidate's index in their low bits.
const PACKED_MAX: usize = 128;
const INDEX_BITS: u32 = 7;

/// The candidates in [`rank`] order, sorted through one 128-bit key each, if every
/// candidate's figures fit in it (a cost under 2⁶⁴ picodollars, a latency under 2⁴¹ ms, a
/// quality under 2¹⁵) and there are at most [`PACKED_MAX`]; `None` otherwise. Comparing
/// integers is several times cheaper than [`rank`], which follows each candidate's model and
/// branches on the mode at every comparison.
///
/// Key, most significant first: 1 bit below the bar; then the mode's three criteria
/// (cost: 64 bits, latency: 41, reversed quality: 15) in [`rank`]'s order; then the index.
/// Equal criteria fall back to the model id, as in [`rank`].
fn sort_by_packed_keys<'c>(mode: Mode, candidates: &[Candidate<'c>]) -> Option<Vec<Candidate<'c>>> {
    let n = candidates.len();
    if n > PACKED_MAX {
        return None;
    }
    let mut keys = [0u128; PACKED_MAX];
    for (i, (key, c)) in keys.iter_mut().zip(candidates.iter()).enumerate() {
        let (Ok(cost), true, true) = (
            u64::try_from(c.cost.pico()),
            c.latency_ms < 1 << 41,
            c.model.quality < 1 << 15,
        ) else {
            return None;
        };
        let (cost, latency) = (u128::from(cost), u128::from(c.latency_ms));
        let worse_quality = u128::from((1 << 15) - 1 - c.model.quality);
        let criteria = match (c.meets_bar, mode) {
            (true, Mode::Cost) => cost << 56 | worse_quality << 41 | latency,
            (true, Mode::Latency) => latency << 79 | cost << 15 | worse_quality,
            (false, _) | (true, Mode::Quality) => worse_quality << 105 | cost << 41 | latency,
        };
        let below_bar = u128::from(!c.meets_bar);
        *key = below_bar << 127 | criteria << INDEX_BITS | i as u128;
    }
    let index = |k: u128| (k & ((1 << INDEX_BITS) - 1)) as usize;
    let tied = |a: u128, b: u128| (a ^ b) >> INDEX_BITS == 0;
    Some(in_key_order(&mut keys[..n], candidates, index, tied))
}

/// What [`sort_by_u64_keys`] needs to know of the candidates, gathered as they are estimated.
#[derive(Debug)]
struct Widths {
    /// Every candidate's cost is under 2⁶⁴ picodollars (and not negative).
    costs_fit: bool,
    /// The OR of the candidates' costs, latencies and qualities: it has the bits of the largest.
    costs: u64,
    latencies: u64,
    qualities: u64,
}

impl Widths {
    /// Before any candidate.
    const NONE: Widths = Widths {
        costs_fit: true,
        costs: 0,
        latencies: 0,
        qualities: 0,
    };

    /// Takes in one candidate: its cost if it is under 2⁶⁴ picodollars (`None` otherwise), its
    /// latency and its model's quality.
    #[inline]
    fn add(&mut self, cost: Option<u64>, latency_ms: u64, quality: u32) {
        match cost {
            Some(cost) => self.costs |= cost,
            None => self.costs_fit = false,
        }
        self.latencies |= latency_ms;
        self.qualities |= u64::from(quality);
    }

    /// The widths of a list of candidates.
    #[cfg(test)]
    fn of(candidates: &[Candidate<'_>]) -> Widths {
        let mut w = Widths::NONE;
        for c in candidates {
            w.add(
                u64::try_from(c.cost.pico()).ok(),
                c.latency_ms,
                c.model.quality,
            );
        }
        w
    }
}

/// [`sort_by_packed_keys`] with 64-bit keys, which sort about twice as fast as 128-bit ones:
/// each criterion takes only the bits that the largest value among these candidates needs.
/// `None` if the three criteria need more than 56 bits together (or a cost is negative or 2⁶⁴
/// picodollars or more).
fn sort_by_u64_keys<'c>(
    mode: Mode,
    candidates: &[Candidate<'c>],
    widths: &Widths,
) -> Option<Vec<Candidate<'c>>> {
    let n = candidates.len();
    if n > PACKED_MAX || !widths.costs_fit {
        return None;
    }
    let bits = |x: u64| 64 - x.leading_zeros();
    let (wc, wl, wq) = (
        bits(widths.costs),
        bits(widths.latencies),
        bits(widths.qualities),
    );
    if wc + wl + wq > 63 - INDEX_BITS {
        return None;
    }
    let most_quality = (1u64 << wq) - 1;
    let mut keys = [0u64; PACKED_MAX];
    for (i, (key, c)) in keys.iter_mut().zip(candidates.iter()).enumerate() {
        // Every cost is under 2⁶⁴, as `costs_fit` says: the cast keeps its value.
        let cost = c.cost.pico() as u64;
        let latency = c.latency_ms;
        let worse_quality = most_quality - u64::from(c.model.quality);
        let criteria = match (c.meets_bar, mode) {
            (true, Mode::Cost) => cost << (wq + wl) | worse_quality << wl | latency,
            (true, Mode::Latency) => latency << (wc + wq) | cost << wq | worse_quality,
            (false, _) | (true, Mode::Quality) => worse_quality << (wc + wl) | cost << wl | latency,
        };
        *key = u64::from(!c.meets_bar) << 63 | criteria << INDEX_BITS | i as u64;
    }
    let index = |k: u64| (k & ((1 << INDEX_BITS) - 1)) as usize;
    let tied = |a: u64, b: u64| (a ^ b) >> INDEX_BITS == 0;
    Some(in_key_order(&mut keys[..n], candidates, index, tied))
}

/// Sorts the keys and lists the candidates in their order; candidates equal on every criterion
/// are ordered by model id, as in [`rank`].
fn in_key_order<'c, K: Copy + Ord>(
    keys: &mut [K],
    candidates: &[Candidate<'c>],
    index: impl Fn(K) -> usize,
    tied: impl Fn(K, K) -> bool,
) -> Vec<Candidate<'c>> {
    keys.sort_unstable();
    let n = keys.len();
    // A run of equal keys is rare.
    let mut start = if keys.windows(2).any(|w| tied(w[0], w[1])) {
        0
    } else {
        n
    };
    while start < n {
        let mut end = start + 1;
        while end < n && tied(keys[end], keys[start]) {
            end += 1;
        }
        if end - start > 1 {
            keys[start..end].sort_unstable_by(|&a, &b| {
                candidates[index(a)]
                    .model
                    .id
                    .cmp(&candidates[index(b)].model.id)
            });
        }
        start = end;
    }
    // Copied in key order: independent loads, where putting a list in order in place follows
    // the permutation's cycles one dependent load at a time.
    keys.iter().map(|&k| candidates[index(k)]).collect()
}

/// Best first. Models that meet the bar come first, ordered by the mode; those below it after,
/// best quality first. Ties fall to the next criterion and finally to the model id, so the
/// order never depends on the catalog's order.
fn rank(mode: Mode, a: &Candidate<'_>, b: &Candidate<'_>) -> Ordering {
    let quality = |x: &Candidate<'_>| std::cmp::Reverse(x.model.quality);
    b.meets_bar
        .cmp(&a.meets_bar)
        .then_with(|| {
            if !a.meets_bar {
                return quality(a)
                    .cmp(&quality(b))
                    .then(a.cost.cmp(&b.cost))
                    .then(a.latency_ms.cmp(&b.latency_ms));
            }
            match mode {
                Mode::Cost => a
                    .cost
                    .cmp(&b.cost)
                    .then(quality(a).cmp(&quality(b)))
                    .then(a.latency_ms.cmp(&b.latency_ms)),
                Mode::Latency => a
                    .latency_ms
                    .cmp(&b.latency_ms)
                    .then(a.cost.cmp(&b.cost))
                    .then(quality(a).cmp(&quality(b))),
                Mode::Quality => quality(a)
                    .cmp(&quality(b))
                    .then(a.cost.cmp(&b.cost))
                    .then(a.latency_ms.cmp(&b.latency_ms)),
            }
        })
        .then_with(|| a.model.id.cmp(&b.model.id))
}

fn reason(mode: Mode, c: &Classification, bar: u32, best: &Candidate<'_>, n: usize) -> String {
    // One buffer, sized for the usual line, written in place: the reason is built on every
    // selection, and intermediate strings would cost an allocation each. Numbers are written
    // by the helpers below rather than through `format_args!`, whose machinery costs more than
    // the rest of the line.
    let mut out = String::with_capacity(128);
    let id = best.model.id.as_str();
    out.push_str(c.tier.as_str());
    out.push_str(" request (score ");
    write_fixed(&mut out, c.score, 2);
    out.push_str("): ");
    if !best.meets_bar {
        out.push_str("no allowed model reaches quality ");
        write_u64(&mut out, u64::from(bar));
        out.push_str("; ");
        out.push_str(id);
        out.push_str(" is the best available (quality ");
        write_u64(&mut out, u64::from(best.model.quality));
        out.push(')');
        return out;
    }
    out.push_str(id);
    match mode {
        Mode::Cost | Mode::Latency => {
            out.push_str(match mode {
                Mode::Cost => " is the cheapest of ",
                _ => " is the fastest of ",
            });
            write_u64(&mut out, n as u64);
            out.push_str(" eligible models with quality ≥ ");
            write_u64(&mut out, u64::from(bar));
            if mode == Mode::Cost {
                out.push_str(" (~$");
                write_money(&mut out, best.cost);
            } else {
                out.push_str(" (~");
                write_fixed(&mut out, best.latency_ms as f64 / 1000.0, 1);
                out.push_str(" s");
            }
            out.push_str(" est.)");
        }
        Mode::Quality => {
            out.push_str(" has the highest quality (");
            write_u64(&mut out, u64::from(best.model.quality));
            out.push_str(") of ");
            write_u64(&mut out, n as u64);
            out.push_str(" eligible models");
        }
    }
    out
}

/// Writes `n` in decimal, as `Display` does.
fn write_u64(out: &mut String, n: u64) {
    write_digits(out, n, 1);
}

/// Writes `n` in decimal with at least `width` digits (zeros in front).
fn write_digits(out: &mut String, n: u64, width: usize) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(n);
    for _ in digits.len()..width {
        out.push('0');
    }
    out.push_str(digits);
}

/// Writes `x` with `decimals` (1 or 2) digits after the point, exactly as `{:.N}` does.
///
/// `{:.N}` rounds the exact binary value, half to even. The product `x · 10ᴺ` is off from the
/// exact one by far less than 10⁻⁶ in the range taken here, so unless its fraction is that close
/// to one half, rounding it gives the same digits; the rare other values, and values out of
/// range, are formatted by the standard library. Inlined, so that the divisions by `10ᴺ` are
/// by a constant (multiplications).
#[inline(always)]
fn write_fixed(out: &mut String, x: f64, decimals: u32) {
    use std::fmt::Write as _;
    let scale = 10u64.pow(decimals);
    let t = x * scale as f64;
    if x.is_sign_positive() && (0.0..1e12).contains(&t) {
        // Truncation is the floor here (t ≥ 0), without the library call that `floor` is on
        // processors without SSE4.1.
        let whole = t as u64;
        let frac = t - whole as f64;
        if (frac - 0.5).abs() > 1e-6 {
            let k = whole + u64::from(frac > 0.5);
            write_u64(out, k / scale);
            out.push('.');
            write_digits(out, k % scale, decimals as usize);
            return;
        }
    }
    // Writing to a String cannot fail.
    let _ = write!(out, "{x:.*}", decimals as usize);
}

/// Writes an amount as `Money`'s `Display` does (dollars, then the picodollar fraction without
/// trailing zeros), without the temporary string that `Display` formats the fraction into.
fn write_money(out: &mut String, m: Money) {
    use std::fmt::Write as _;
    const PICO_PER_USD: u64 = 1_000_000_000_000;
    let pico = m.pico();
    let abs = pico.unsigned_abs();
    if pico < 0 {
        out.push('-');
    }
    // Amounts under 2⁶⁴ picodollars (about 18 million dollars) are divided in 64 bits: a
    // division of a 128-bit value is a library call, and not turned into a multiplication.
    let frac = match u64::try_from(abs) {
        Ok(abs) => {
            write_u64(out, abs / PICO_PER_USD);
            abs % PICO_PER_USD
        }
        Err(_) => {
            let per_usd = u128::from(PICO_PER_USD);
            // Writing to a String cannot fail.
            let _ = write!(out, "{}", abs / per_usd);
            (abs % per_usd) as u64
        }
    };
    if frac != 0 {
        let (mut frac, mut digits) = (frac, 12);
        // Trailing decimal zeros are dropped.
        while frac % 10 == 0 {
            frac /= 10;
            digits -= 1;
        }
        out.push('.');
        write_digits(out, frac, digits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Classifier;
    use crate::request::{Message, Request};

    const CATALOG: &str = r#"
        [[model]]
        id = "small"
        provider = "a"
        input = 0.1
        output = 0.4
        context_window = 16000
        max_output = 4000
        capabilities = ["json"]
        quality = 60
        latency_ms = 300
        tokens_per_second = 200

        [[model]]
        id = "mid"
        provider = "b"
        input = 0.5
        output = 2
        context_window = 128000
        max_output = 16000
        capabilities = ["json", "tools"]
        quality = 78
        latency_ms = 500
        tokens_per_second = 100

        [[model]]
        id = "big"
        provider = "a"
        input = 3
        output = 15
        context_window = 200000
        max_output = 64000
        capabilities = ["json", "tools", "vision", "reasoning"]
        quality = 94
        latency_ms = 1500
        tokens_per_second = 60
    "#;

    fn catalog() -> Catalog {
        Catalog::from_toml(CATALOG).unwrap()
    }

    fn classification(text: &str) -> Classification {
        Classifier::default().classify(&Request::new(&[Message::user(text)]))
    }

    fn with_tier(tier: Tier) -> Classification {
        let mut c = classification("hello there");
        c.tier = tier;
        c
    }

    fn check(selector: &Selector, c: &Classification, expected: &str) {
        let cat = catalog();
        let s = selector.select(&cat, c).unwrap();
        assert_eq!(s.model.id, expected, "{}", s.reason);
        assert_eq!(s.candidates[0].model.id, expected);
    }

    #[test]
    fn cost_mode_takes_the_cheapest_model_meeting_the_bar() {
        let s = Selector::new(Mode::Cost);
        check(&s, &with_tier(Tier::Simple), "small");
        check(&s, &with_tier(Tier::Medium), "mid");
        check(&s, &with_tier(Tier::Complex), "big");
    }

    #[test]
    fn latency_and_quality_modes() {
        check(
            &Selector::new(Mode::Latency),
            &with_tier(Tier::Simple),
            "small",
        );
        check(
            &Selector::new(Mode::Latency),
            &with_tier(Tier::Medium),
            "mid",
        );
        check(
            &Selector::new(Mode::Quality),
            &with_tier(Tier::Simple),
            "big",
        );
    }

    #[test]
    fn constraints_rule_models_out() {
        let mut s = Selector::new(Mode::Quality);
        s.constraints.allowed_providers = vec!["b".into()];
        check(&s, &with_tier(Tier::Simple), "mid");
        let mut s = Selector::new(Mode::Cost);
        s.constraints.required.tools = true;
        check(&s, &with_tier(Tier::Simple), "mid");
        let mut c = with_tier(Tier::Simple);
        c.needs.vision = true;
        check(&Selector::new(Mode::Cost), &c, "big");
        // What the request needs and what the constraints require add up.
        let mut s = Selector::new(Mode::Cost);
        s.constraints.required.tools = true;
        let mut c = with_tier(Tier::Simple);
        c.needs.vision = true;
        check(&s, &c, "big");
        let mut c = with_tier(Tier::Simple);
        c.max_tokens = Some(8000);
        check(&Selector::new(Mode::Cost), &c, "mid");
        let mut c = with_tier(Tier::Simple);
        c.input_tokens = 150_000;
        check(&Selector::new(Mode::Cost), &c, "big");
    }

    #[test]
    fn below_the_bar_the_best_available_model_is_chosen_and_said() {
        let mut s = Selector::new(Mode::Cost);
        s.constraints.allowed_models = vec!["small".into(), "mid".into()];
        let cat = catalog();
        let c = with_tier(Tier::Complex);
        let sel = s.select(&cat, &c).unwrap();
        assert_eq!(sel.model.id, "mid");
        assert!(!sel.candidates[0].meets_bar);
        assert_eq!(
            sel.reason,
            format!(
                "complex request (score {:.2}): no allowed model reaches quality 85; \
                 mid is the best available (quality 78)",
                c.score
            )
        );
    }

    #[test]
    fn typed_errors() {
        let empty = Catalog::default();
        let c = with_tier(Tier::Simple);
        assert_eq!(
            Selector::default().select(&empty, &c),
            Err(Error::EmptyCatalog)
        );
        let mut s = Selector::default();
        s.constraints.price_ceiling = Some(Money::from_pico(1));
        let cat = catalog();
        match s.select(&cat, &c) {
            Err(Error::NoModel(r)) => {
                assert_eq!(r.considered, 3);
                assert_eq!(r.over_price, 3);
            }
            other => panic!("{other:?}"),
        }
        assert!(QualityBars::new(80, 70, 90).is_err());
        assert!(QualityBars::new(10, 20, 101).is_err());
        assert_eq!(
            "fast".parse::<Mode>(),
            Err(Error::UnknownMode("fast".into()))
        );
    }

    #[test]
    fn estimates_use_exact_catalog_prices() {
        let cat = catalog();
        let m = cat.get("mid").unwrap();
        // 1000 in × $0.5/M + 700 out × $2/M = $0.0005 + $0.0014
        let (cost, latency) = estimate(m, 1000, 700);
        assert_eq!(cost.to_string(), "0.0019");
        assert_eq!(latency, 500 + 7000);
        assert_eq!(expected_output_tokens(Tier::Complex, Some(100)), 100);
        assert_eq!(expected_output_tokens(Tier::Simple, None), 250);
    }

    #[test]
    fn packed_keys_sort_as_rank_does() {
        let cat = catalog();
        let builtin = Catalog::builtin();
        let models: Vec<&ModelInfo> = cat.models().iter().chain(builtin.models()).collect();
        // Spread and tied figures, above and below the bar, in every mode.
        let mut list = Vec::new();
        for (i, m) in models.iter().enumerate() {
            for j in 0..3u64 {
                list.push(Candidate {
                    model: m,
                    cost: Money::from_pico(i128::from((i as u64 * 7 + j) % 5) * 1000),
                    latency_ms: (i as u64 + j) % 4,
                    meets_bar: !(i + j as usize).is_multiple_of(3),
                });
            }
        }
        list.truncate(PACKED_MAX);
        for mode in Mode::ALL {
            for len in [0, 1, 2, 5, 40, list.len()] {
                let packed = sort_by_packed_keys(mode, &list[..len]).unwrap();
                let short =
                    sort_by_u64_keys(mode, &list[..len], &Widths::of(&list[..len])).unwrap();
                let mut reference = list[..len].to_vec();
                reference.sort_by(|a, b| rank(mode, a, b));
                // Candidates of the same model may tie completely; compare what rank sees.
                let view = |v: &[Candidate<'_>]| {
                    v.iter()
                        .map(|c| (c.model.id.clone(), c.cost, c.latency_ms, c.meets_bar))
                        .collect::<Vec<_>>()
                };
                assert_eq!(view(&packed), view(&reference), "{mode} {len}");
                assert_eq!(view(&short), view(&reference), "{mode} {len}");
            }
        }
        // Figures too wide for 64-bit keys together, but not for 128-bit ones.
        let mut wide = list.clone();
        for (k, c) in wide.iter_mut().enumerate() {
            c.cost = Money::from_pico(i128::from((k as u64 % 7) << 40));
            c.latency_ms = (k as u64 % 5) << 30;
        }
        for mode in Mode::ALL {
            assert_eq!(sort_by_u64_keys(mode, &wide, &Widths::of(&wide)), None);
            let packed = sort_by_packed_keys(mode, &wide).unwrap();
            let mut reference = wide.clone();
            reference.sort_by(|a, b| rank(mode, a, b));
            let view = |v: &[Candidate<'_>]| {
                v.iter()
                    .map(|c| (c.model.id.clone(), c.cost, c.latency_ms, c.meets_bar))
                    .collect::<Vec<_>>()
            };
            assert_eq!(view(&packed), view(&reference), "{mode}");
        }
        let mut too_dear = list[..3].to_vec();
        too_dear[1].cost = Money::from_pico(1 << 70);
        assert_eq!(sort_by_packed_keys(Mode::Cost, &too_dear), None);
        assert_eq!(
            sort_by_u64_keys(Mode::Cost, &too_dear, &Widths::of(&too_dear)),
            None
        );
    }

    /// Catalogs that the sorts by key cannot take (more than `PACKED_MAX` models, a cost of
    /// 2⁶⁴ picodollars or more) are ranked by `rank` itself.
    #[test]
    fn selection_ranks_catalogs_the_keys_cannot_hold() {
        let model = |i: u32, input: &str| {
            format!(
                "[[model]]\nid = \"m{i:03}\"\nprovider = \"p{}\"\ninput = {input}\noutput = {}\n\
                 context_window = 128000\nmax_output = 16000\nquality = {}\nlatency_ms = {}\n\
                 tokens_per_second = {}\n\n",
                i % 5,
                i % 9 + 1,
                50 + i * 7 % 50,
                100 + i * 31 % 900,
                20 + i * 13 % 200,
            )
        };
        let many: String = (0..200)
            .map(|i| model(i, &format!("{}", i % 11 + 1)))
            .collect();
        // 10¹⁴ dollars a million tokens: 10²⁰ picodollars a token, over 2⁶⁴.
        let dear = model(0, "1e14") + &model(1, "2") + &model(2, "0.5");
        for toml in [many, dear] {
            let cat = Catalog::from_toml(&toml).unwrap();
            for mode in Mode::ALL {
                let s = Selector::new(mode)
                    .select(&cat, &with_tier(Tier::Medium))
                    .unwrap();
                assert_eq!(s.candidates.len(), cat.len(), "{mode}");
                assert!(
                    s.candidates
                        .windows(2)
                        .all(|w| rank(mode, &w[0], &w[1]) == Ordering::Less),
                    "{mode}"
                );
                assert_eq!(s.model.id, s.candidates[0].model.id);
                assert_eq!(sort_by_packed_keys(mode, &s.candidates), None, "{mode}");
            }
        }
    }

    #[test]
    fn fast_estimates_and_money_text_match_the_catalog() {
        let cat = Catalog::builtin();
        for m in cat.models() {
            for (input, output) in [
                (0, 0),
                (1, 250),
                (1234, 700),
                (250_000, 1500),
                (u64::MAX, 9),
            ] {
                let (cost, narrow, latency) = fast_estimate(m, input, output);
                assert_eq!((cost, latency), estimate(m, input, output), "{}", m.id);
                assert_eq!(narrow, u64::try_from(cost.pico()).ok(), "{}", m.id);
            }
        }
        for pico in [
            0,
            1,
            -1,
            10,
            1_000_000_000_000,
            -2_500_000_000_000,
            1_130_800_000,
            // Either side of the 64-bit fast path.
            i128::from(u64::MAX),
            i128::from(u64::MAX) + 1,
            -i128::from(u64::MAX),
            i128::MAX,
            i128::MIN + 1,
        ] {
            let m = Money::from_pico(pico);
            let mut s = String::new();
            write_money(&mut s, m);
            assert_eq!(s, m.to_string());
        }
        assert_eq!(
            times(Money::from_pico(i128::MAX), 2),
            Money::from_pico(i128::MAX)
        );
    }

    #[test]
    fn numbers_in_reasons_are_written_as_format_writes_them() {
        let fixed = |x: f64, d: u32| {
            let mut s = String::new();
            write_fixed(&mut s, x, d);
            s
        };
        // Ties in binary (0.125, 1.25) round to even; values a hair off a tie round by it.
        for x in [
            0.0, 0.005, 0.015, 0.125, 0.375, 0.5, 0.995, 0.9951, 1.0, 1.25, 1.35, 2.5, 1e11, 1e13,
            -0.5, -0.0,
        ] {
            assert_eq!(fixed(x, 2), format!("{x:.2}"), "{x}");
            assert_eq!(fixed(x, 1), format!("{x:.1}"), "{x}");
        }
        assert_eq!(fixed(f64::NAN, 2), "NaN");
        // Every score of the form k/N for several N, and every latency up to 200 s.
        for n in [7u32, 1000, 4096, 65_537] {
            for k in 0..=n {
                let x = f64::from(k) / f64::from(n);
                assert_eq!(fixed(x, 2), format!("{x:.2}"), "{k}/{n}");
            }
        }
        for ms in 0..200_000u64 {
            let x = ms as f64 / 1000.0;
            assert_eq!(fixed(x, 1), format!("{x:.1}"), "{ms} ms");
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..100_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let x = (state >> 11) as f64 / (1u64 << 53) as f64;
            assert_eq!(fixed(x, 2), format!("{x:.2}"), "{x}");
        }
        for n in [0u64, 7, 10, 99, 100, 12_345, u64::MAX] {
            let mut s = String::new();
            write_u64(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }

    #[test]
    fn ranking_is_independent_of_catalog_order() {
        let reversed: String = {
            let blocks: Vec<&str> = CATALOG.split("[[model]]").skip(1).collect();
            blocks
                .iter()
                .rev()
                .map(|b| format!("[[model]]{b}"))
                .collect()
        };
        let a = catalog();
        let b = Catalog::from_toml(&reversed).unwrap();
        for mode in Mode::ALL {
            let s = Selector::new(mode);
            let c = with_tier(Tier::Medium);
            let ids = |cat: &Catalog| {
                s.select(cat, &c)
                    .unwrap()
                    .candidates
                    .iter()
                    .map(|x| x.model.id.clone())
                    .collect::<Vec<_>>()
            };
            assert_eq!(ids(&a), ids(&b), "{mode}");
        }
    }
}
