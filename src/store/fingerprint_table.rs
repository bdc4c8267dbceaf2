//! One shard of the replay window's in-memory front: 64-bit fingerprints in
//! an open-addressing table, each with a one-byte expiry tag beside it.
//!
//! Why not a hash set with an index by expiry (what this replaced): at
//! 3.8 M pairs that took 122 MB of peak RSS, about 32 bytes a pair (the
//! set's control bytes and empty half after a doubling, and the index's
//! own copy of every hash). Here a pair costs 9 bytes a slot (fingerprint
//! and tag), and the table grows by a sixth to a fifth at a time, staying
//! 75–92% full: 10 to 12 bytes a pair. The tag says which expiry bucket
//! the pair belongs to, so no index is needed: a sweep drops every pair
//! whose bucket has passed.
//!
//! Robin Hood probing (Celis, 1986), with each fingerprint's home slot
//! derived from its own high bits: a pair that is not in the table (every
//! fresh request) is known absent after a few slots even when the table
//! is 92% full, because entries along a probe sequence are ordered by how
//! far they sit from home; and any entry can be moved (to grow, or to
//! close the gap a deleted one leaves) because its home is computable.
//!
//! Tags are the bucket number modulo 256, read relative to the current
//! bucket: a tag 1 to 127 buckets ahead is alive, one 0 to 64 buckets
//! behind has expired. Callers keep what they insert within that range
//! (see `SeenNonces`); what lies outside is kept, never dropped early.

/// Marks an empty slot; a fingerprint of 0 is stored as 1 (`SeenNonces`).
const EMPTY: u64 = 0;
/// A new or shrunken table's fill, and the smallest table.
const TARGET_LOAD_PERMILLE: usize = 750;
const MIN_SLOTS: usize = 32;
/// Tags at most this many buckets behind the current one have expired;
/// further behind, a tag might be one that wrapped around from far ahead.
pub(super) const EXPIRED_TAG_REACH: i64 = 64;

pub(super) struct FingerprintTable {
    fingerprints: Box<[u64]>,
    tags: Box<[u8]>,
    len: usize,
    /// How full the table may get before it grows, in thousandths. Shards
    /// get different values (860 to 920) so that, as the window fills,
    /// they do not all grow at the same moment and leave every table at
    /// its emptiest together.
    max_load_permille: usize,
    /// Entries per tag: a sweep knows which tags have expired entries and
    /// how many, so it skips a table with none and stops once it has
    /// found them all, reading only the tags on its way (a ninth of the
    /// table's bytes). Scanning every slot instead took 9 ms of the
    /// writer's time at 3.8 M pairs at each bucket's end.
    per_tag: Box<[u32; 256]>,
}

impl FingerprintTable {
    pub(super) fn new(max_load_permille: usize) -> Self {
        assert!((500..=950).contains(&max_load_permille));
        FingerprintTable {
            fingerprints: vec![EMPTY; MIN_SLOTS].into_boxed_slice(),
            tags: vec![0; MIN_SLOTS].into_boxed_slice(),
            len: 0,
            max_load_permille,
            per_tag: Box::new([0; 256]),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Slots allocated (for tests and the memory arithmetic).
    #[cfg(test)]
    pub(super) fn slots(&self) -> usize {
        self.fingerprints.len()
    }

    /// Where a fingerprint's probe sequence starts: its high bits scaled to
    /// the table's size (Lemire's multiply-shift), so any size works.
    fn home(&self, fingerprint: u64) -> usize {
        ((u128::from(fingerprint) * self.fingerprints.len() as u128) >> 64) as usize
    }

    /// How far slot `at` is from `home`, going forward around the table.
    fn distance(&self, at: usize, home: usize) -> usize {
        if at >= home {
            at - home
        } else {
            at + self.fingerprints.len() - home
        }
    }

    /// The slot `steps` after `from`, going forward around the table.
    fn slot_after(&self, from: usize, steps: usize) -> usize {
        let slots = self.fingerprints.len();
        if from + steps >= slots {
            from + steps - slots
        } else {
            from + steps
        }
    }

    fn next(&self, at: usize) -> usize {
        if at + 1 == self.fingerprints.len() {
            0
        } else {
            at + 1
        }
    }

    /// The slot holding `fingerprint`, if any.
    fn find(&self, fingerprint: u64) -> Option<usize> {
        debug_assert_ne!(fingerprint, EMPTY);
        let mut at = self.home(fingerprint);
        let mut probed = 0;
        loop {
            let here = self.fingerprints[at];
            if here == fingerprint {
                return Some(at);
            }
            // An entry nearer its home than we are to ours: ours would
            // have displaced it, so it is not in the table.
            if here == EMPTY || self.distance(at, self.home(here)) < probed {
                return None;
            }
            at = self.next(at);
            probed += 1;
        }
    }

    pub(super) fn contains(&self, fingerprint: u64) -> bool {
        self.find(fingerprint).is_some()
    }

    /// False when the fingerprint is already in the table.
    pub(super) fn insert(&mut self, fingerprint: u64, bucket: i64) -> bool {
        if self.contains(fingerprint) {
            return false;
        }
        if (self.len + 1) * 1000 > self.fingerprints.len() * self.max_load_permille {
            self.resize(self.len + 1);
        }
        self.place(fingerprint, bucket as u8);
        self.len += 1;
        self.per_tag[usize::from(bucket as u8)] += 1;
        true
    }

    /// Puts an entry known to be absent where Robin Hood order wants it,
    /// carrying forward whatever it displaces.
    fn place(&mut self, mut fingerprint: u64, mut tag: u8) {
        let mut at = self.home(fingerprint);
        let mut probed = 0;
        loop {
            let here = self.fingerprints[at];
            if here == EMPTY {
                self.fingerprints[at] = fingerprint;
                self.tags[at] = tag;
                return;
            }
            let theirs = self.distance(at, self.home(here));
            if theirs < probed {
                std::mem::swap(&mut self.fingerprints[at], &mut fingerprint);
                std::mem::swap(&mut self.tags[at], &mut tag);
                probed = theirs;
            }
            at = self.next(at);
            probed += 1;
        }
    }

    /// Takes a fingerprint out (a transaction that did not commit). False
    /// when it was not there.
    pub(super) fn remove(&mut self, fingerprint: u64) -> bool {
        match self.find(fingerprint) {
            Some(at) => {
                self.remove_at(at);
                true
            }
            None => false,
        }
    }

    /// Empties slot `at` and shifts the entries after it back by one, up
    /// to the first that is home already: no tombstones, so probe lengths
    /// never grow with deletions.
    fn remove_at(&mut self, mut at: usize) {
        self.per_tag[usize::from(self.tags[at])] -= 1;
        loop {
            let next = self.next(at);
            let here = self.fingerprints[next];
            if here == EMPTY || self.home(here) == next {
                self.fingerprints[at] = EMPTY;
                self.tags[at] = 0;
                break;
            }
            self.fingerprints[at] = here;
            self.tags[at] = self.tags[next];
            at = next;
        }
        self.len -= 1;
    }

    /// Drops every entry whose bucket is `current_bucket` or earlier (see
    /// the module comment for how a tag is read), then shrinks a table
    /// left mostly empty.
    pub(super) fn sweep(&mut self, current_bucket: i64) {
        let current_tag = current_bucket as u8;
        let expired = |tag: u8| {
            (-EXPIRED_TAG_REACH..=0).contains(&i64::from(tag.wrapping_sub(current_tag) as i8))
        };
        let mut left_to_drop: usize = (0..=255u8)
            .filter(|tag| expired(*tag))
            .map(|tag| self.per_tag[usize::from(tag)] as usize)
            .sum();
        if left_to_drop == 0 {
            return;
        }
        // One pass, starting just after an empty slot (there is always one:
        // the table is never full) so that no cluster is cut in two:
        // expired entries are emptied, and each kept entry moves back to
        // the first free slot at or after its home. Entries keep their
        // order, so Robin Hood order holds, and no gap is left between an
        // entry and its home.
        let Some(empty) = self.fingerprints.iter().position(|f| *f == EMPTY) else {
            unreachable!("a table is never full");
        };
        let slots = self.fingerprints.len();
        let start = self.next(empty);
        // Positions count from `start`, so that they only grow; `at` is the
        // slot at `position`.
        let position_of = |slot: usize| {
            if slot >= start {
                slot - start
            } else {
                slot + slots - start
            }
        };
        let mut at = start;
        let mut free_from = 0;
        for position in 0..slots {
            let fingerprint = self.fingerprints[at];
            if fingerprint == EMPTY {
                if left_to_drop == 0 {
                    // A cluster's end, with nothing left to drop.
                    break;
                }
                free_from = position + 1;
            } else if left_to_drop > 0 && expired(self.tags[at]) {
                self.per_tag[usize::from(self.tags[at])] -= 1;
                self.fingerprints[at] = EMPTY;
                self.tags[at] = 0;
                self.len -= 1;
                left_to_drop -= 1;
            } else if free_from < position {
                // A slot before this entry was freed: move back, but never
                // before its home.
                let target = position_of(self.home(fingerprint)).max(free_from);
                if target < position {
                    let to = self.slot_after(start, target);
                    self.fingerprints[to] = fingerprint;
                    self.tags[to] = self.tags[at];
                    self.fingerprints[at] = EMPTY;
                    self.tags[at] = 0;
                }
                free_from = target + 1;
            } else {
                free_from = position + 1;
                if left_to_drop == 0 {
                    // Nothing left to drop and nothing to move back.
                    break;
                }
            }
            at = self.next(at);
        }
        debug_assert_eq!(left_to_drop, 0);
        if self.len * 1000 < slots * TARGET_LOAD_PERMILLE / 3 && slots > MIN_SLOTS {
            self.resize(self.len);
        }
    }

    /// Moves every entry into a table sized for `len` entries at the
    /// target load.
    fn resize(&mut self, len: usize) {
        let slots = (len * 1000 / TARGET_LOAD_PERMILLE + 1).max(MIN_SLOTS);
        let fingerprints = std::mem::replace(
            &mut self.fingerprints,
            vec![EMPTY; slots].into_boxed_slice(),
        );
        let tags = std::mem::replace(&mut self.tags, vec![0; slots].into_boxed_slice());
        for (fingerprint, tag) in fingerprints.iter().zip(tags.iter()) {
            if *fingerprint != EMPTY {
                self.place(*fingerprint, *tag);
            }
        }
    }

    /// Every entry is reachable from its home, in Robin Hood order, and
    /// `len` counts them.
    #[cfg(test)]
    pub(super) fn check_invariants(&self) {
        let mut count = 0;
        for (at, fingerprint) in self.fingerprints.iter().enumerate() {
            if *fingerprint == EMPTY {
                continue;
            }
            count += 1;
            assert_eq!(self.find(*fingerprint), Some(at));
            let previous = if at == 0 {
                self.fingerprints.len() - 1
            } else {
                at - 1
            };
            let theirs = self.distance(at, self.home(*fingerprint));
            if theirs > 0 {
                let before = self.fingerprints[previous];
                assert_ne!(before, EMPTY, "a gap before a displaced entry");
                assert!(self.distance(previous, self.home(before)) + 1 >= theirs);
            }
        }
        assert_eq!(count, self.len);
        let mut per_tag = [0u32; 256];
        for (fingerprint, tag) in self.fingerprints.iter().zip(self.tags.iter()) {
            if *fingerprint != EMPTY {
                per_tag[usize::from(*tag)] += 1;
            }
        }
        assert_eq!(per_tag, *self.per_tag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64, i64),
        Remove(u64),
        Sweep(i64),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        // Few distinct fingerprints (repeats and removals of present ones)
        // and a narrow range of high bits (long clusters, wrap-around).
        let fingerprint = prop_oneof![
            1u64..64,
            any::<u64>().prop_map(|f| f | 1 | (u64::MAX << 60))
        ];
        let op = prop_oneof![
            6 => (fingerprint.clone(), 0i64..40).prop_map(|(f, b)| Op::Insert(f, b)),
            1 => fingerprint.prop_map(Op::Remove),
            1 => (0i64..40).prop_map(Op::Sweep),
        ];
        prop::collection::vec(op, 0..600)
    }

    proptest! {
        /// Against a plain map from fingerprint to bucket: the same answers
        /// to inserts, removals and lookups, sweeps drop exactly the
        /// buckets that have passed, and the table stays in Robin Hood order.
        #[test]
        fn behaves_like_a_map_with_expiry(ops in ops()) {
            let mut table = FingerprintTable::new(900);
            let mut model: HashMap<u64, i64> = HashMap::new();
            let mut swept_to = i64::MIN;
            for op in ops {
                match op {
                    Op::Insert(f, b) => {
                        // Callers never insert into a bucket already swept.
                        let b = b.max(swept_to + 1);
                        prop_assert_eq!(table.insert(f, b), !model.contains_key(&f));
                        model.entry(f).or_insert(b);
                    }
                    Op::Remove(f) => prop_assert_eq!(table.remove(f), model.remove(&f).is_some()),
                    Op::Sweep(now) => {
                        let now = now.max(swept_to);
                        table.sweep(now);
                        model.retain(|_, b| *b > now);
                        swept_to = now;
                    }
                }
                table.check_invariants();
            }
            prop_assert_eq!(table.len(), model.len());
            for f in model.keys() {
                prop_assert!(table.contains(*f));
            }
        }
    }

    /// A window's worth of pairs: the table stays between the target and
    /// the maximum load as it grows, and shrinks once most have expired.
    #[test]
    fn grows_a_quarter_at_a_time_and_shrinks_after_a_sweep() {
        let mut table = FingerprintTable::new(900);
        let mut lowest_load = 1.0f64;
        for i in 1..=200_000u64 {
            let fingerprint = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            assert!(table.insert(fingerprint, (i % 10) as i64));
            let load = table.len() as f64 / table.slots() as f64;
            assert!(load <= 0.9, "{load} at {i}");
            if i > 1000 {
                lowest_load = lowest_load.min(load);
            }
        }
        assert!(lowest_load >= 0.74, "fell to {lowest_load}");
        table.sweep(8);
        assert_eq!(table.len(), 20_000);
        assert!(table.slots() < 30_000, "{} slots for 20000", table.slots());
        table.check_invariants();
    }

    /// Tags far behind (more than `EXPIRED_TAG_REACH` buckets) are kept,
    /// since they may be pairs from far ahead whose tag wrapped around.
    #[test]
    fn a_tag_out_of_reach_is_kept_not_dropped() {
        let mut table = FingerprintTable::new(900);
        table.insert(11, 1200); // swept at 1256: 56 behind, expired
        table.insert(13, 900); // 356 behind reads as 100 behind: kept
        table.insert(17, 1253); // 3 behind: expired
        table.insert(19, 1300); // ahead: kept
        table.sweep(1256);
        assert!(!table.contains(11));
        assert!(table.contains(13));
        assert!(!table.contains(17));
        assert!(table.contains(19));
    }
}
