//! Verifying keys kept in memory, so a signed request costs no database read
//! and no decryption. A key's id, application and secret never change; only
//! its expiry, revocation and access policy do. Expiry and revocation are
//! atomics, the policy an `ArcSwap`, all refreshed when the database's
//! `keys_version` moves (see `Store::refresh_key_states`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::ArcSwap;

use super::backend::StoredPolicies;
use super::catalog::{KeyStatus, KeyUnusable};
use crate::clock::Clock;
use crate::credentials::Secret;
use crate::policy::{Compiled, Enforced, Holder};
use crate::signature::SigningKey;

/// What the verifier needs of a key, secret decrypted: what the cache is
/// filled from.
pub struct VerifyingKey {
    pub key_id: String,
    pub app_id: String,
    pub app_name: String,
    pub secret: Secret,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub policies: StoredPolicies,
}

/// Stands for "none" in the atomics below.
const NEVER: i64 = i64::MIN;

pub struct CachedKey {
    pub key_id: Arc<str>,
    pub app_id: String,
    pub app_name: String,
    pub signing_key: SigningKey,
    expires_at: AtomicI64,
    revoked_at: AtomicI64,
    /// The key's access policy and its application's, as of a policy
    /// version: swapped whole when either changes.
    policy: ArcSwap<Enforced>,
    /// Last accepted request (Unix seconds), and the value last written to
    /// the database: last-used times are flushed in batches, not per request.
    last_used_at: AtomicI64,
    last_used_flushed: AtomicI64,
}

fn to_atomic(value: Option<i64>) -> i64 {
    value.unwrap_or(NEVER)
}

impl CachedKey {
    /// Contract order, step 2, by the same rule as the catalog and the
    /// nonce writer.
    pub fn check_usable(&self, now: i64) -> Result<(), KeyUnusable> {
        let load = |value: &AtomicI64| Some(value.load(Ordering::Acquire)).filter(|v| *v != NEVER);
        KeyStatus::at(now, load(&self.expires_at), load(&self.revoked_at)).check_usable()
    }

    /// The policy to check a request against now.
    /// A guard, not an `Arc` clone: two workers checking the same key
    /// would otherwise bounce the `Arc`'s counter between their cores.
    pub fn policy(&self) -> arc_swap::Guard<Arc<Enforced>> {
        self.policy.load()
    }

    pub fn mark_used(&self, now: i64) {
        // Read first: the value changes once a second, and a write on every
        // request would bounce this cache line between the workers' cores.
        if self.last_used_at.load(Ordering::Relaxed) < now {
            self.last_used_at.fetch_max(now, Ordering::Relaxed);
        }
    }
}

pub struct KeyCache {
    /// What the keys' rate limiters count time in.
    clock: Clock,
    keys: RwLock<HashMap<Arc<str>, Arc<CachedKey>>>,
    version: AtomicI64,
    /// Each application's compiled policy, shared by its keys, so that an
    /// application's rate limit counts all of its keys' requests together.
    apps: Mutex<HashMap<String, Arc<Compiled>>>,
}

impl KeyCache {
    pub fn new(clock: Clock) -> Self {
        KeyCache {
            clock,
            keys: RwLock::default(),
            version: AtomicI64::default(),
            apps: Mutex::default(),
        }
    }

    pub fn get(&self, key_id: &str) -> Option<Arc<CachedKey>> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key_id)
            .cloned()
    }

    pub fn count(&self) -> usize {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// `previous`: the key's policy now, whose compiled form (and rate
    /// count) is kept when its text did not change.
    fn enforced(
        &self,
        app_id: &str,
        stored: StoredPolicies,
        previous: Option<&Enforced>,
    ) -> Enforced {
        let app = {
            let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
            match apps.get(app_id) {
                Some(app) if app.stored() == stored.app.as_deref() => app.clone(),
                _ => {
                    let app = Arc::new(Compiled::new(stored.app, Holder::App, &self.clock));
                    apps.insert(app_id.to_owned(), app.clone());
                    app
                }
            }
        };
        let key = match previous {
            Some(previous) if previous.key.stored() == stored.key.as_deref() => {
                previous.key.clone()
            }
            _ => Arc::new(Compiled::new(stored.key, Holder::Key, &self.clock)),
        };
        Enforced {
            app,
            key,
            policy_seq: stored.policy_seq,
        }
    }

    /// Replaces a cached key's policies with those just read, unless the
    /// cache already holds a newer version.
    pub(crate) fn set_policies(&self, key: &CachedKey, stored: StoredPolicies) {
        let current = key.policy.load();
        if current.policy_seq > stored.policy_seq {
            return;
        }
        let enforced = self.enforced(&key.app_id, stored, Some(&current));
        key.policy.store(Arc::new(enforced));
    }

    pub(crate) fn insert(&self, loaded: VerifyingKey) -> Arc<CachedKey> {
        let key_id: Arc<str> = Arc::from(loaded.key_id.as_str());
        let policy = self.enforced(&loaded.app_id, loaded.policies, None);
        let key = Arc::new(CachedKey {
            key_id: key_id.clone(),
            app_id: loaded.app_id,
            app_name: loaded.app_name,
            signing_key: SigningKey::new(loaded.secret.expose()),
            expires_at: AtomicI64::new(to_atomic(loaded.expires_at)),
            revoked_at: AtomicI64::new(to_atomic(loaded.revoked_at)),
            policy: ArcSwap::from_pointee(policy),
            last_used_at: AtomicI64::new(NEVER),
            last_used_flushed: AtomicI64::new(NEVER),
        });
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        // Two requests may miss at once; the first insert wins so that both
        // share one set of last-used counters.
        keys.entry(key_id).or_insert(key).clone()
    }

    /// Updates a cached key's expiry and revocation; returns the key when
    /// its policy version moved, for the caller to read the new policies.
    pub(crate) fn update_state(&self, state: &super::backend::KeyState) -> Option<Arc<CachedKey>> {
        let key = self.get(&state.key_id)?;
        key.expires_at
            .store(to_atomic(state.expires_at), Ordering::Release);
        key.revoked_at
            .store(to_atomic(state.revoked_at), Ordering::Release);
        (key.policy.load().policy_seq != state.policy_seq).then_some(key)
    }

    pub(crate) fn version(&self) -> i64 {
        self.version.load(Ordering::Acquire)
    }

    pub(crate) fn set_version(&self, version: i64) {
        self.version.store(version, Ordering::Release);
    }

    /// (key_id, last_used_at) for every key used since the last flush.
    pub(crate) fn take_unflushed_last_used(&self) -> Vec<(Arc<str>, i64)> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.values()
            .filter_map(|key| {
                let used = key.last_used_at.load(Ordering::Relaxed);
                let flushed = key.last_used_flushed.swap(used, Ordering::Relaxed);
                (used != NEVER && used != flushed).then(|| (key.key_id.clone(), used))
            })
            .collect()
    }
}
