//! The in-memory front of the replay window: the pairs this process knows
//! were recorded, as keyed hashes. A request whose pair is here is refused
//! as a replay at once, without queueing for a commit, so a flood of
//! replays cannot slow fresh requests. On SQLite it is also the log's
//! index (see `sqlite/ledger.rs`); on PostgreSQL the database's unique
//! index decides and this set only answers early.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::fingerprint_table::{FingerprintTable, EXPIRED_TAG_REACH};

/// Hashes a (key_id, nonce) pair with SipHash under a random per-process
/// key. The requests (checking for replays) and the writer (recording)
/// must hash alike, so both hold a clone of the set's one hasher.
#[derive(Clone)]
pub struct PairHasher(RandomState);

impl PairHasher {
    pub fn hash(&self, key_id: &str, nonce: &str) -> u64 {
        self.0.hash_one((key_id, nonce))
    }
}

/// The pairs in the window, as keyed 64-bit fingerprints (SipHash with a
/// random per-process key), in tables that also know when each expires
/// ([`FingerprintTable`]: about 11 bytes a pair).
///
/// A fingerprint collision can only make a fresh pair look used (a spurious
/// `nonce_reused`), never let a used one through. A fresh pair is refused
/// only if one of the window's pairs has its exact 64-bit fingerprint:
/// odds of at most the window's size over 2^64 a request, 2.1e-13 with
/// 3.8 M pairs. The key is random per process, so nobody can aim for one.
///
/// Expiry is kept in buckets of `bucket_secs` (a hundredth of the longest
/// a pair can be ahead, so a one-byte tag covers the window): a pair is
/// kept until its bucket has passed, at most one bucket longer than the
/// contract's minimum, never shorter. A pair whose expiry lies outside
/// what a tag can say (a clock stepped back, another instance's longer
/// skew, a skew changed between restarts) goes to a small exact map.
///
/// Split into shards, each behind its own lock, so that the requests'
/// replay checks and the writer's inserts rarely wait for one another, and
/// so that a table grows a sixty-fourth of the window at a time.
pub struct SeenNonces {
    pub hasher: PairHasher,
    shards: [Mutex<Shard>; SHARDS],
    bucket_secs: i64,
    /// The latest time the window was purged at (at first, when it was
    /// created). Tags are read against it, so they are never read against
    /// a clock that stepped back.
    latest_now: AtomicI64,
    /// The first of the shards the next purge sweeps.
    next_to_sweep: AtomicUsize,
}

const SHARDS: usize = 64;
/// Shards one purge sweeps, in turn: a full sweep of 3.8 M pairs took the
/// writer thread 8 ms (memory-bound: it reads every slot), an eighth of it
/// 1 ms. The writer purges every 200 ms, so an expired pair is dropped
/// within 1.6 s of its bucket's end.
const SHARDS_PER_PURGE: usize = SHARDS / 8;
/// How far ahead of the latest purge, and how far behind, a pair's bucket
/// may be and still go into a table (the tag's reach is 127 ahead and
/// [`EXPIRED_TAG_REACH`] behind; the rest is margin for the clock).
const MOST_BUCKETS_AHEAD: i64 = 100;
const MOST_BUCKETS_BEHIND: i64 = EXPIRED_TAG_REACH / 2;

struct Shard {
    table: FingerprintTable,
    /// Pairs whose expiry a tag cannot say, with their exact expiry.
    /// Usually empty.
    outside_tags: HashMap<u64, i64>,
}

impl SeenNonces {
    /// `skew_secs`: the server's allowed clock skew (a pair expires at most
    /// 2 × skew + 1 seconds after it is accepted); `now`: the time the
    /// window starts at.
    pub fn new(skew_secs: u32, now: i64) -> Self {
        let longest_ahead = 2 * i64::from(skew_secs) + 1;
        SeenNonces {
            hasher: PairHasher(RandomState::new()),
            shards: std::array::from_fn(|number| {
                Mutex::new(Shard {
                    // 860 to 920 thousandths: see `FingerprintTable`.
                    table: FingerprintTable::new(860 + number * 60 / (SHARDS - 1)),
                    outside_tags: HashMap::new(),
                })
            }),
            bucket_secs: (longest_ahead + MOST_BUCKETS_AHEAD - 3) / (MOST_BUCKETS_AHEAD - 2),
            latest_now: AtomicI64::new(now),
            next_to_sweep: AtomicUsize::new(0),
        }
    }

    fn shard(&self, fingerprint: u64) -> MutexGuard<'_, Shard> {
        // The low bits: a table's home slot comes from the high ones.
        lock(&self.shards[fingerprint as usize % SHARDS])
    }

    /// The bucket whose passing lets the pair go: the first one that
    /// starts after `expires_at`.
    fn bucket(&self, expires_at: i64) -> i64 {
        expires_at.div_euclid(self.bucket_secs).saturating_add(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pairs across every shard, each counted under its own lock.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let shard = lock(s);
                shard.table.len() + shard.outside_tags.len()
            })
            .sum()
    }

    pub fn contains(&self, hash: u64) -> bool {
        let fingerprint = fingerprint(hash);
        let shard = self.shard(fingerprint);
        shard.table.contains(fingerprint)
            || (!shard.outside_tags.is_empty() && shard.outside_tags.contains_key(&fingerprint))
    }

    /// False when the pair is already in the window.
    pub fn insert(&self, hash: u64, expires_at: i64) -> bool {
        let fingerprint = fingerprint(hash);
        let bucket = self.bucket(expires_at);
        let latest = self
            .latest_now
            .load(Ordering::Relaxed)
            .div_euclid(self.bucket_secs);
        let mut shard = self.shard(fingerprint);
        if shard.outside_tags.contains_key(&fingerprint) {
            return false;
        }
        if (-MOST_BUCKETS_BEHIND..=MOST_BUCKETS_AHEAD).contains(&bucket.saturating_sub(latest)) {
            shard.table.insert(fingerprint, bucket)
        } else if shard.table.contains(fingerprint) {
            false
        } else {
            shard.outside_tags.insert(fingerprint, expires_at);
            true
        }
    }

    /// Undoes `insert` for a transaction that did not commit.
    pub fn forget(&self, hash: u64) {
        let fingerprint = fingerprint(hash);
        let mut shard = self.shard(fingerprint);
        if !shard.table.remove(fingerprint) {
            shard.outside_tags.remove(&fingerprint);
        }
    }

    /// Drops the pairs expired by `now` from the next
    /// [`SHARDS_PER_PURGE`] shards, one shard at a time, so a request waits
    /// at most for one shard's sweep.
    pub fn purge(&self, now: i64) {
        let latest = self.latest_now.fetch_max(now, Ordering::Relaxed).max(now);
        // A clock stepped back: tags are not read against it (some could
        // look expired that are not); the exact map is safe with any time.
        let read_tags = now >= latest - self.bucket_secs;
        let first = self
            .next_to_sweep
            .fetch_add(SHARDS_PER_PURGE, Ordering::Relaxed)
            % SHARDS;
        for shard in &self.shards[first..first + SHARDS_PER_PURGE] {
            let mut shard = lock(shard);
            if read_tags {
                shard.table.sweep(now.div_euclid(self.bucket_secs));
            }
            if !shard.outside_tags.is_empty() {
                shard
                    .outside_tags
                    .retain(|_, expires_at| *expires_at >= now);
            }
        }
    }
}

/// A table's fingerprint for a pair's hash: 0 marks an empty slot, so it
/// is stored as 1 (which makes those two hashes collide; the odds above
/// do not move).
fn fingerprint(hash: u64) -> u64 {
    hash.max(1)
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // Every call leaves its shard consistent, so a panic elsewhere leaves
    // nothing half-done.
    shard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
impl SeenNonces {
    /// Purges until every shard has been swept once.
    pub(super) fn purge_all(&self, now: i64) {
        for _ in 0..SHARDS / SHARDS_PER_PURGE {
            self.purge(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a plain model: inserts, replays, rollbacks and purges give
    /// the same answers however the pairs fall into shards, and every shard
    /// gets its share. A 10 s skew makes buckets one second long, so the
    /// purge is exact.
    #[test]
    fn the_sharded_set_behaves_like_one_set() {
        let seen = SeenNonces::new(10, 0);
        assert_eq!(seen.bucket_secs, 1);
        let mut model: HashMap<u64, i64> = HashMap::new();
        for i in 0..20_000u32 {
            let hash = seen.hasher.hash("pk_a", &i.to_string());
            let expires_at = i64::from(i % 50);
            assert_eq!(
                seen.insert(hash, expires_at),
                model.insert(hash, expires_at).is_none()
            );
            assert!(!seen.insert(hash, expires_at + 1), "a replay is refused");
        }
        for shard in &seen.shards {
            let len = lock(shard).table.len();
            assert!((200..450).contains(&len), "a shard holds {len} of 20000");
        }
        let forgotten: Vec<_> = model.keys().take(100).copied().collect();
        for hash in &forgotten {
            seen.forget(*hash);
            model.remove(hash);
        }
        seen.purge_all(25);
        model.retain(|_, expires_at| *expires_at >= 25);
        for i in 0..20_000u32 {
            let hash = seen.hasher.hash("pk_a", &i.to_string());
            assert_eq!(seen.contains(hash), model.contains_key(&hash), "pair {i}");
        }
        assert_eq!(seen.len(), model.len());
    }

    /// At the default skew a bucket is 7 s: a pair stays at least until its
    /// expiry and is gone within a bucket after it.
    #[test]
    fn a_pair_is_kept_until_its_expiry_and_at_most_a_bucket_longer() {
        let start = 1_700_000_000;
        let seen = SeenNonces::new(300, start);
        assert_eq!(seen.bucket_secs, 7);
        let expiries: Vec<i64> = (0..=601).map(|ahead| start + ahead).collect();
        for expires_at in &expiries {
            assert!(seen.insert(*expires_at as u64 * 7919, *expires_at));
        }
        for now in (start..start + 620).step_by(3) {
            seen.purge_all(now);
            for expires_at in &expiries {
                let kept = seen.contains(*expires_at as u64 * 7919);
                if *expires_at >= now {
                    assert!(kept, "{expires_at} dropped at {now}");
                } else if *expires_at < now - seen.bucket_secs {
                    assert!(!kept, "{expires_at} kept at {now}");
                }
            }
        }
    }

    /// Expiries a tag cannot say, far ahead or behind: kept exactly, and
    /// still one window with the tagged pairs (a pair is in one or the other).
    #[test]
    fn pairs_outside_the_tags_reach_are_kept_exactly() {
        let now = 1_700_000_000;
        let seen = SeenNonces::new(300, now);
        let far_ahead = now + 86_400;
        assert!(seen.insert(1, far_ahead));
        assert!(seen.insert(2, now - 86_400));
        assert!(seen.insert(5, i64::MAX));
        assert!(seen.insert(6, i64::MIN));
        assert!(!seen.insert(5, 0) && !seen.insert(6, 0));
        seen.forget(5);
        seen.forget(6);
        assert!(seen.insert(3, now + 60));
        assert!(!seen.insert(1, now + 60), "a replay, whatever its expiry");
        assert!(!seen.insert(3, far_ahead), "a replay, whatever its expiry");
        assert_eq!(seen.len(), 3);
        seen.purge_all(now + 1);
        assert!(seen.contains(1) && !seen.contains(2) && seen.contains(3));
        seen.forget(1);
        assert!(!seen.contains(1));
        assert!(seen.insert(4, far_ahead));
        seen.purge_all(far_ahead);
        assert!(seen.contains(4) && !seen.contains(3));
        seen.purge_all(far_ahead + 1);
        assert!(seen.is_empty());
    }

    /// A clock stepped back an hour: nothing is dropped early, neither the
    /// pairs from before the step nor those accepted after it.
    #[test]
    fn a_clock_stepped_back_drops_nothing_early() {
        let now = 1_700_000_000;
        let seen = SeenNonces::new(300, now);
        let hash = |n: i64| (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for ahead in 0..=601 {
            seen.insert(hash(now + ahead), now + ahead);
        }
        let back = now - 3600;
        for ahead in 0..=601 {
            seen.insert(hash(back + ahead), back + ahead);
        }
        for tick in 0..700 {
            seen.purge_all(back + tick);
            for ahead in tick..=601 {
                assert!(seen.contains(hash(back + ahead)), "{ahead} at {tick}");
                assert!(seen.contains(hash(now + ahead)), "{ahead} at {tick}");
            }
        }
        // Once the clock is back where it was, purges every few seconds
        // (as the writer's, every 200 ms) empty the window.
        for tick in (0..700).step_by(5) {
            seen.purge_all(now + tick);
        }
        assert!(seen.is_empty(), "{} left", seen.len());
    }

    proptest::proptest! {
        /// The safety property, under any skew, any expiries (within the
        /// window, far ahead, long past) and a clock that jumps both ways:
        /// a pair is never dropped while `expires_at >= now` at a purge,
        /// nor forgotten unless asked. And the purge does its job: while
        /// the clock only moves forward, in steps of less than the tags'
        /// reach, a pair that expired during a step is gone a bucket later.
        #[test]
        fn no_pair_leaves_before_its_expiry(
            skew in 0u32..4000,
            ops in proptest::collection::vec(
                (0u8..4, 0u64..300, -3_000i64..9_000),
                1..400,
            ),
        ) {
            let start = 1_700_000_000i64;
            let seen = SeenNonces::new(skew, start);
            let bucket = seen.bucket_secs;
            let mut now = start;
            let mut stepped_back = false;
            let mut model: HashMap<u64, i64> = HashMap::new();
            for (kind, pair, offset) in ops {
                let hash = pair.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                match kind {
                    0 | 1 => {
                        let expires_at = now + offset;
                        let fresh = seen.insert(hash, expires_at);
                        proptest::prop_assert_eq!(fresh, !model.contains_key(&hash));
                        model.entry(hash).or_insert(expires_at);
                    }
                    2 => {
                        seen.forget(hash);
                        model.remove(&hash);
                    }
                    _ => {
                        // Mostly forward, sometimes back; in buckets of any size.
                        let before = now;
                        now += offset * bucket / 200;
                        stepped_back |= now < before;
                        seen.purge_all(now);
                        let small_step = now - before < 30 * bucket;
                        for (h, expires_at) in &model {
                            if *expires_at >= now {
                                proptest::prop_assert!(seen.contains(*h), "dropped before {}", expires_at);
                            } else if !stepped_back
                                && small_step
                                && *expires_at >= before
                                && *expires_at < now - bucket
                            {
                                proptest::prop_assert!(!seen.contains(*h), "kept past {}", expires_at);
                            }
                        }
                        model.retain(|h, _| seen.contains(*h));
                    }
                }
                for h in model.keys() {
                    proptest::prop_assert!(seen.contains(*h));
                }
            }
        }
    }
}
