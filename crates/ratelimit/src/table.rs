//! A sharded map with a hard cap on entries, for the in-process limiters.
//!
//! GCRA makes eviction cheap to reason about: an entry whose bucket is full again (its TAT is in
//! the past) answers exactly like an absent one, so such "idle" entries are dropped freely, and
//! they are dropped first. Only when a shard is full of live entries is an answer changed: then the
//! eighth of the shard that would become idle soonest goes, so a flood of one-off keys evicts its
//! own kind before the heavy users whose buckets are far from full.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A value stored in a [`Table`].
pub(crate) trait Slot: Copy + Default + PartialEq {
    /// The entry answers like an absent one at `now`, so it may be dropped.
    fn is_idle(&self, now: u64) -> bool;
    /// When the entry becomes idle (ignoring pins).
    fn idle_at(&self) -> u64;
    /// The entry must never be evicted (it counts permits still held).
    fn is_pinned(&self) -> bool;
}

const SHARDS: usize = 16;
/// Sweeps for idle entries run at least this many inserts apart.
const MIN_SWEEP_INTERVAL: usize = 64;

pub(crate) struct Table<K, V> {
    shards: Box<[Mutex<Shard<K, V>>]>,
    /// Random per table, so which keys share a shard cannot be predicted from outside.
    seed: u64,
    shard_cap: usize,
}

struct Shard<K, V> {
    map: HashMap<K, V>,
    inserts_since_sweep: usize,
    /// Entries left by the last sweep; the next one runs after as many inserts (amortised O(1)).
    kept_by_last_sweep: usize,
}

impl<K: Hash + Eq, V: Slot> Table<K, V> {
    /// A table holding about `max_entries` (rounded up to a multiple of the shard count), plus any
    /// pinned entries beyond that.
    pub(crate) fn new(max_entries: usize) -> Self {
        let shard_cap = max_entries.div_ceil(SHARDS).max(1);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    map: HashMap::new(),
                    inserts_since_sweep: 0,
                    kept_by_last_sweep: 0,
                })
            })
            .collect();
        Table {
            shards,
            seed: RandomState::new().hash_one(0u8),
            shard_cap,
        }
    }

    /// The most entries the table keeps (pinned ones aside).
    pub(crate) fn capacity(&self) -> usize {
        self.shard_cap * SHARDS
    }

    /// Entries currently stored.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }

    /// Runs `f` on the values of `a` and, when given, `b` (defaults when absent) under their shards'
    /// locks, so the two are read and written as one step; then stores what `f` left.
    pub(crate) fn update<Q, R>(
        &self,
        now: u64,
        a: &Q,
        b: Option<&Q>,
        f: impl FnOnce(&mut V, Option<&mut V>) -> R,
    ) -> R
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let ia = self.shard_of(a);
        let Some(b) = b else {
            let mut shard = lock(&self.shards[ia]);
            // The hot path: one lookup, updated in place.
            if let Some(slot) = shard.map.get_mut(a) {
                let r = f(slot, None);
                if slot.is_idle(now) {
                    shard.map.remove(a);
                }
                return r;
            }
            let mut va = V::default();
            let r = f(&mut va, None);
            shard.store(a, V::default(), va, now, self.shard_cap);
            return r;
        };
        let ib = self.shard_of(b);
        if ia == ib {
            let mut shard = lock(&self.shards[ia]);
            let (old_a, old_b) = (shard.get(a), shard.get(b));
            let (mut va, mut vb) = (old_a, old_b);
            let r = f(&mut va, Some(&mut vb));
            shard.store(a, old_a, va, now, self.shard_cap);
            shard.store(b, old_b, vb, now, self.shard_cap);
            return r;
        }
        // Always lock the lower shard first so two updates can never wait on each other.
        let (first, second) = (ia.min(ib), ia.max(ib));
        let mut g1 = lock(&self.shards[first]);
        let mut g2 = lock(&self.shards[second]);
        let (sa, sb) = if ia == first {
            (&mut *g1, &mut *g2)
        } else {
            (&mut *g2, &mut *g1)
        };
        let (old_a, old_b) = (sa.get(a), sb.get(b));
        let (mut va, mut vb) = (old_a, old_b);
        let r = f(&mut va, Some(&mut vb));
        sa.store(a, old_a, va, now, self.shard_cap);
        sb.store(b, old_b, vb, now, self.shard_cap);
        r
    }

    fn shard_of<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        let mut h = ShardHasher(self.seed);
        key.hash(&mut h);
        // The top bits of a multiplicative hash are the well-mixed ones.
        (h.0.wrapping_mul(MIX) >> 60) as usize % SHARDS
    }
}

impl<K: Hash + Eq, V: Slot> Shard<K, V> {
    fn get<Q>(&self, key: &Q) -> V
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(key).copied().unwrap_or_default()
    }

    fn store<Q>(&mut self, key: &Q, old: V, new: V, now: u64, cap: usize)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if new == old {
            return;
        }
        if let Some(slot) = self.map.get_mut(key) {
            if new.is_idle(now) {
                self.map.remove(key);
            } else {
                *slot = new;
            }
        } else if !new.is_idle(now) {
            self.make_room(now, cap);
            self.map.insert(key.to_owned(), new);
        }
    }

    fn make_room(&mut self, now: u64, cap: usize) {
        self.inserts_since_sweep += 1;
        let due = self.inserts_since_sweep >= self.kept_by_last_sweep.max(MIN_SWEEP_INTERVAL);
        if due || self.map.len() >= cap {
            self.map.retain(|_, v| !v.is_idle(now));
            self.inserts_since_sweep = 0;
            self.kept_by_last_sweep = self.map.len();
            let floor = self.map.len().max(MIN_SWEEP_INTERVAL);
            if self.map.capacity() > 4 * floor {
                self.map.shrink_to(2 * floor);
            }
        }
        if self.map.len() >= cap {
            self.evict_soonest_idle(cap);
        }
    }

    /// Drops about an eighth of the shard: the unpinned entries that would become idle soonest.
    fn evict_soonest_idle(&mut self, cap: usize) {
        let mut idle_at: Vec<u64> = self
            .map
            .values()
            .filter(|v| !v.is_pinned())
            .map(Slot::idle_at)
            .collect();
        let n = (cap / 8).max(1).min(idle_at.len());
        if n == 0 {
            return; // every entry holds permits: they are bounded by the requests in flight
        }
        let (_, cut, _) = idle_at.select_nth_unstable(n - 1);
        let cut = *cut;
        let mut left = n;
        self.map.retain(|_, v| {
            let evict = left > 0 && !v.is_pinned() && v.idle_at() <= cut;
            left -= usize::from(evict);
            !evict
        });
    }
}

const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// Picks shards only: a multiply-rotate hash (as in rustc's FxHash), several times cheaper than
/// the maps' SipHash. The maps keep SipHash with a random key, which is what resists collision
/// floods; a skewed shard choice can only move entries between shards, each of which stays capped.
struct ShardHasher(u64);

impl Hasher for ShardHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(c);
            self.add(u64::from_le_bytes(word));
        }
        let mut tail = [0; 8];
        tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.add(u64::from_le_bytes(tail));
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
}

impl ShardHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(MIX);
    }
}

/// The maps hold plain values updated in one step, so a panic elsewhere cannot leave them torn.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slot that is a bare TAT; `u64::MAX` marks a pinned entry.
    #[derive(Clone, Copy, Default, PartialEq, Debug)]
    struct Tat(u64);

    impl Slot for Tat {
        fn is_idle(&self, now: u64) -> bool {
            self.0 <= now
        }
        fn idle_at(&self) -> u64 {
            self.0
        }
        fn is_pinned(&self) -> bool {
            self.0 == u64::MAX
        }
    }

    fn set(t: &Table<String, Tat>, now: u64, key: &str, tat: u64) {
        t.update(now, key, None, |v, _| v.0 = tat);
    }

    fn get(t: &Table<String, Tat>, key: &str) -> u64 {
        t.update(0, key, None, |v, _| v.0)
    }

    #[test]
    fn idle_values_are_never_stored() {
        let t = Table::new(100);
        set(&t, 10, "a", 5);
        assert_eq!(t.len(), 0);
        set(&t, 10, "a", 50);
        assert_eq!((t.len(), get(&t, "a")), (1, 50));
        set(&t, 10, "a", 10);
        assert_eq!(t.len(), 0, "an entry that becomes idle is removed");
    }

    #[test]
    fn the_cap_holds_and_long_lived_entries_outlast_a_flood() {
        let t = Table::new(160);
        set(&t, 0, "heavy", 1_000_000);
        for i in 0..20_000 {
            set(&t, 0, &format!("flood-{i}"), 10);
        }
        assert!(t.len() <= t.capacity(), "{} > {}", t.len(), t.capacity());
        assert_eq!(
            get(&t, "heavy"),
            1_000_000,
            "the entry furthest from idle survives"
        );
    }

    #[test]
    fn pinned_entries_are_never_evicted() {
        let t = Table::new(16);
        for i in 0..16 {
            set(&t, 0, &format!("pinned-{i}"), u64::MAX);
        }
        for i in 0..1_000 {
            set(&t, 0, &format!("flood-{i}"), 10);
        }
        for i in 0..16 {
            assert_eq!(get(&t, &format!("pinned-{i}")), u64::MAX);
        }
    }

    #[test]
    fn idle_entries_are_swept_as_new_ones_arrive() {
        let t = Table::new(100_000);
        for i in 0..5_000 {
            set(&t, 0, &format!("old-{i}"), 10);
        }
        assert_eq!(t.len(), 5_000);
        for i in 0..10_000 {
            set(&t, 100, &format!("new-{i}"), 200);
        }
        assert!(t.len() < 15_000, "old idle entries were swept: {}", t.len());
        assert_eq!(get(&t, "new-9999"), 200);
    }

    #[test]
    fn two_keys_update_together_in_any_shard() {
        let t: Table<String, Tat> = Table::new(1_000);
        for i in 0..64 {
            let (a, b) = (format!("a{i}"), format!("b{i}"));
            t.update(0, a.as_str(), Some(b.as_str()), |va, vb| {
                va.0 = 7;
                if let Some(vb) = vb {
                    vb.0 = 9;
                }
            });
            assert_eq!((get(&t, &a), get(&t, &b)), (7, 9));
        }
    }
}
