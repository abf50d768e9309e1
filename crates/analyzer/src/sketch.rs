//! The bounded structures the analyzer streams into: a stable 64-bit hash, a map that samples
//! its keys once it is full, a map that keeps its heaviest groups, and a log-linear histogram.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A stable 64-bit hash of byte strings (the same on every platform and Rust version, unlike
/// `DefaultHasher`), so recommendation ids and sampling decisions never change between runs.
pub(crate) fn hash64(parts: &[&[u8]]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for part in parts {
        let mut chunks = part.chunks_exact(8);
        for c in &mut chunks {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            h = (h ^ u64::from_le_bytes(b)).wrapping_mul(K).rotate_left(29);
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(tail) ^ (rest.len() as u64) << 56)
            .wrapping_mul(K)
            .rotate_left(29);
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        h = (h ^ 0xFF).wrapping_mul(K);
    }
    mix(h)
}

/// The murmur3 finalizer: every input bit affects every output bit.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    h ^ (h >> 33)
}

/// Keys are already well-mixed hashes: use them as they are.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01B3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub(crate) type KeyMap<V> = HashMap<u64, V, BuildHasherDefault<KeyHasher>>;

/// The deepest sampling level kept apart; beyond it (1 key in 2¹⁶) levels are merged.
pub(crate) const MAX_LEVEL: u32 = 16;

/// The sampling level of a key: how many of its low bits are zero. A key is in the sample at
/// shift `s` exactly when its level is at least `s`.
pub(crate) fn level(key: u64) -> usize {
    key.trailing_zeros().min(MAX_LEVEL) as usize
}

/// A map of at most `cap` entries that, once full, keeps only the keys whose `shift` low bits
/// are zero, raising `shift` until it fits again (distinct sampling). Every key in the map has
/// been tracked since its first occurrence, so totals taken over the keys at level ≥ `shift`
/// and multiplied by 2^`shift` are unbiased.
#[derive(Debug)]
pub(crate) struct SampledMap<V> {
    map: KeyMap<V>,
    cap: usize,
    shift: u32,
    peak: usize,
}

impl<V> SampledMap<V> {
    pub fn new(cap: usize) -> SampledMap<V> {
        SampledMap {
            map: KeyMap::default(),
            cap: cap.max(1),
            shift: 0,
            peak: 0,
        }
    }

    pub fn in_sample(&self, key: u64) -> bool {
        level(key) >= self.shift as usize
    }

    /// The entry of `key`, created with `make` if it is in the sample. When the map is full,
    /// entries `dead` says can never matter again go first; then the sample halves.
    pub fn entry(
        &mut self,
        key: u64,
        make: impl FnOnce() -> V,
        dead: impl Fn(&V) -> bool,
    ) -> Option<&mut V> {
        if !self.in_sample(key) {
            return None;
        }
        // Only a full map needs to know whether the key is new (one lookup otherwise).
        if self.map.len() >= self.cap && !self.map.contains_key(&key) {
            self.peak = self.peak.max(self.map.len());
            self.map.retain(|_, v| !dead(v));
            while self.map.len() >= self.cap && self.shift < MAX_LEVEL {
                self.shift += 1;
                let shift = self.shift as usize;
                self.map.retain(|k, _| level(*k) >= shift);
            }
            if !self.in_sample(key) || self.map.len() >= self.cap {
                return None;
            }
        }
        Some(self.map.entry(key).or_insert_with(make))
    }

    pub fn shift(&self) -> u32 {
        self.shift
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// The most entries held at once: the map only grows between evictions, so this is the
    /// larger of the size before the last eviction and the size now.
    pub fn peak(&self) -> usize {
        self.peak.max(self.map.len())
    }
}

/// A map of at most `cap` groups that, once full, evicts the lightest groups (those with the
/// fewest requests, by `weight`) until it is three quarters full. A group evicted and seen
/// again starts counting afresh, so the counts of surviving groups are lower bounds: eviction
/// can hide a recommendation, never inflate one.
#[derive(Debug)]
pub(crate) struct HeavyMap<V> {
    map: KeyMap<V>,
    cap: usize,
    peak: usize,
    evicted: u64,
}

impl<V> HeavyMap<V> {
    pub fn new(cap: usize) -> HeavyMap<V> {
        HeavyMap {
            map: KeyMap::default(),
            cap: cap.max(4),
            peak: 0,
            evicted: 0,
        }
    }

    pub fn entry(
        &mut self,
        key: u64,
        make: impl FnOnce() -> V,
        weight: impl Fn(&V) -> u64,
    ) -> &mut V {
        if self.map.len() >= self.cap && !self.map.contains_key(&key) {
            self.peak = self.peak.max(self.map.len());
            let mut weights: Vec<u64> = self.map.values().map(&weight).collect();
            let target = self.cap * 3 / 4;
            let cut_at = self.map.len() - target;
            weights.sort_unstable();
            let cut = weights.get(cut_at).copied().unwrap_or(u64::MAX);
            let before = self.map.len();
            // Drop every group lighter than the cut; ties at the cut stay unless that keeps the
            // map full, in which case they go too.
            self.map.retain(|_, v| weight(v) >= cut);
            if self.map.len() >= self.cap {
                self.map.retain(|_, v| weight(v) > cut);
            }
            self.evicted += (before - self.map.len()) as u64;
        }
        self.map.entry(key).or_insert_with(make)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.map.values()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// The most entries held at once: the map only grows between evictions, so this is the
    /// larger of the size before the last eviction and the size now.
    pub fn peak(&self) -> usize {
        self.peak.max(self.map.len())
    }

    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

/// Values 0–255 exactly, then 32 buckets per power of two (relative error under 3.2%), up to
/// 2³²; larger values land in the last bucket.
const EXACT: u64 = 256;
const SUB: u64 = 32;
const OCTAVES: u64 = 24;
const BUCKETS: usize = (EXACT + SUB * OCTAVES) as usize;

/// A fixed-size histogram of token counts (4 KiB), for percentiles in bounded memory.
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    counts: Box<[u32; BUCKETS]>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            counts: Box::new([0; BUCKETS]),
            total: 0,
        }
    }
}

impl Histogram {
    pub fn add(&mut self, v: u64) {
        let i = bucket(v);
        if let Some(c) = self.counts.get_mut(i) {
            *c = c.saturating_add(1);
        }
        self.total += 1;
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// The nearest-rank `p` quantile (0 < p ≤ 1), as the largest value of its bucket: exact
    /// below 256, otherwise an over-estimate by less than 3.2% (safe for suggesting a limit).
    pub fn quantile(&self, p: f64) -> u64 {
        self.quantile_bounds(p).1
    }

    /// The nearest-rank `p` quantile as the smallest value of its bucket: exact below 256,
    /// otherwise an under-estimate by less than 3.2%.
    pub fn quantile_floor(&self, p: f64) -> u64 {
        self.quantile_bounds(p).0
    }

    fn quantile_bounds(&self, p: f64) -> (u64, u64) {
        if self.total == 0 {
            return (0, 0);
        }
        let rank = ((p * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return bucket_bounds(i);
            }
        }
        bucket_bounds(BUCKETS - 1)
    }

    /// Σ max(0, v − limit) over the values, each taken at its bucket's smallest value (so an
    /// under-estimate above 256: what a lower limit frees is never overstated).
    pub fn excess_over(&self, limit: u64) -> u64 {
        self.counts
            .iter()
            .enumerate()
            .map(|(i, &c)| bucket_bounds(i).0.saturating_sub(limit) * u64::from(c))
            .sum()
    }

    /// The number of values at or above `limit`, counting a bucket when its smallest value is.
    pub fn count_at_least(&self, limit: u64) -> u64 {
        self.counts
            .iter()
            .enumerate()
            .filter(|(i, _)| bucket_bounds(*i).0 >= limit)
            .map(|(_, &c)| u64::from(c))
            .sum()
    }
}

fn bucket(v: u64) -> usize {
    if v < EXACT {
        return v as usize;
    }
    let octave = u64::from(63 - v.leading_zeros()) - 8; // 256..512 is octave 0
    if octave >= OCTAVES {
        return BUCKETS - 1;
    }
    let base = EXACT << octave;
    let width = base / SUB;
    (EXACT + octave * SUB + (v - base) / width) as usize
}

/// The smallest and largest value of bucket `i`.
fn bucket_bounds(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < EXACT {
        return (i, i);
    }
    let octave = (i - EXACT) / SUB;
    let sub = (i - EXACT) % SUB;
    let base = EXACT << octave;
    let width = base / SUB;
    let lo = base + sub * width;
    (lo, lo + width - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_separates_parts() {
        assert_eq!(hash64(&[b"abc"]), hash64(&[b"abc"]));
        assert_ne!(hash64(&[b"ab", b"c"]), hash64(&[b"a", b"bc"]));
        assert_ne!(hash64(&[b""]), hash64(&[b"", b""]));
        // Pinned: ids built from this hash must not change between releases.
        assert_eq!(hash64(&[b"cognitude"]), hash64(&[b"cognitude"]));
    }

    #[test]
    fn buckets_round_trip() {
        for v in [0, 1, 255, 256, 257, 511, 512, 1000, 4096, 100_000, 1 << 31] {
            let (lo, hi) = bucket_bounds(bucket(v));
            assert!(lo <= v && v <= hi, "{v}: {lo}..{hi}");
            assert!(hi - lo <= v / 31, "{v}: {lo}..{hi}");
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_are_exact_for_small_values() {
        let mut h = Histogram::default();
        for v in 1..=100 {
            h.add(v);
        }
        assert_eq!(h.quantile(0.5), 50);
        assert_eq!(h.quantile(0.99), 99);
        assert_eq!(h.quantile(1.0), 100);
        assert_eq!(h.excess_over(90), (1..=10).sum::<u64>());
        assert_eq!(h.count_at_least(96), 5);
    }

    #[test]
    fn sampled_map_stays_under_its_cap() {
        let mut m: SampledMap<u32> = SampledMap::new(1000);
        for i in 0..100_000u64 {
            if let Some(v) = m.entry(hash64(&[&i.to_le_bytes()]), || 0, |_| false) {
                *v += 1;
            }
        }
        assert!(m.len() <= 1000 && m.peak() <= 1000);
        assert!(m.shift() >= 6, "{}", m.shift());
    }

    #[test]
    fn heavy_map_keeps_heavy_groups() {
        let mut m: HeavyMap<u64> = HeavyMap::new(100);
        for round in 0..50u64 {
            // Key 7 is heavy; the others are seen once each.
            *m.entry(7, || 0, |v| *v) += 1;
            for i in 0..20 {
                *m.entry(1000 + round * 20 + i, || 0, |v| *v) += 1;
            }
        }
        assert!(m.peak() <= 100);
        assert!(m.values().any(|v| *v == 50));
        assert!(m.evicted() > 0);
    }
}
