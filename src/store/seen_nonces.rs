//! The in-memory front of the replay window: the pairs this process knows
//! were recorded, as keyed hashes. A request whose pair is here is refused
//! as a replay at once, without queueing for a commit, so a flood of
//! replays cannot slow fresh requests. On SQLite it is also the log's
//! index (see `sqlite/ledger.rs`); on PostgreSQL the database's unique
//! index decides and this set only answers early.

use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};

use nohash_hasher::IntSet;

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

/// The pairs in the window, as keyed 64-bit hashes (SipHash with a random
/// per-process key), indexed by expiry for purging. A hash collision can
/// only make a fresh pair look used (a spurious `nonce_reused`, odds about
/// window_size / 2^64 per request), never let a used one through.
///
/// Split into shards, each behind its own lock, for two reasons:
/// - a hash table doubles by building the new table beside the old one. In
///   one piece, the whole set's two copies were alive at once: 38 MB of a
///   152.7 MB peak with 3.78 M pairs (BENCHMARKS.md). A shard doubles
///   alone, so only a sixteenth of it is ever copied at a time;
/// - the requests' replay check and the writer's inserts rarely wait for
///   one another.
pub struct SeenNonces {
    pub hasher: PairHasher,
    shards: [Mutex<Shard>; SHARDS],
}

const SHARDS: usize = 16;

#[derive(Default)]
struct Shard {
    set: IntSet<u64>,
    by_expiry: BTreeMap<i64, Vec<u64>>,
}

impl Default for SeenNonces {
    fn default() -> Self {
        Self::new()
    }
}

impl SeenNonces {
    pub fn new() -> Self {
        SeenNonces {
            hasher: PairHasher(RandomState::new()),
            shards: std::array::from_fn(|_| Mutex::default()),
        }
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        // Bits no table index uses: the low bits pick a bucket and the top
        // seven are hashbrown's tag within a group, so a shard must not fix
        // either (the set hashes a pair's hash by itself, see `IntSet`).
        lock(&self.shards[(hash >> 32) as usize % SHARDS])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pairs across every shard, each counted under its own lock.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).set.len()).sum()
    }

    pub fn contains(&self, hash: u64) -> bool {
        self.shard(hash).set.contains(&hash)
    }

    /// False when the pair is already in the window.
    pub fn insert(&self, hash: u64, expires_at: i64) -> bool {
        self.shard(hash).insert(hash, expires_at)
    }

    /// Undoes `insert` for a transaction that did not commit.
    pub fn forget(&self, hash: u64, expires_at: i64) {
        self.shard(hash).forget(hash, expires_at);
    }

    /// One shard at a time, so a request waits at most for one shard's
    /// purge.
    pub fn purge(&self, now: i64) {
        for shard in &self.shards {
            lock(shard).purge(now);
        }
    }
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // Every call leaves its shard consistent, so a panic elsewhere leaves
    // nothing half-done.
    shard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shard {
    fn insert(&mut self, hash: u64, expires_at: i64) -> bool {
        if !self.set.insert(hash) {
            return false;
        }
        self.by_expiry.entry(expires_at).or_default().push(hash);
        true
    }

    fn forget(&mut self, hash: u64, expires_at: i64) {
        self.set.remove(&hash);
        if let Some(bucket) = self.by_expiry.get_mut(&expires_at) {
            bucket.retain(|h| *h != hash);
        }
    }

    fn purge(&mut self, now: i64) {
        while let Some(entry) = self.by_expiry.first_entry() {
            if *entry.key() >= now {
                break;
            }
            for hash in entry.remove() {
                self.set.remove(&hash);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a plain model: inserts, replays, rollbacks and purges give
    /// the same answers however the pairs fall into shards, and every shard
    /// gets its share.
    #[test]
    fn the_sharded_set_behaves_like_one_set() {
        use std::collections::HashMap;
        let seen = SeenNonces::new();
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
            let len = lock(shard).set.len();
            assert!((1000..1500).contains(&len), "a shard holds {len} of 20000");
        }
        let forgotten: Vec<_> = model.iter().take(100).map(|(h, e)| (*h, *e)).collect();
        for (hash, expires_at) in &forgotten {
            seen.forget(*hash, *expires_at);
            model.remove(hash);
        }
        seen.purge(25);
        model.retain(|_, expires_at| *expires_at >= 25);
        for i in 0..20_000u32 {
            let hash = seen.hasher.hash("pk_a", &i.to_string());
            assert_eq!(seen.contains(hash), model.contains_key(&hash), "pair {i}");
        }
        assert_eq!(seen.len(), model.len());
    }
}
