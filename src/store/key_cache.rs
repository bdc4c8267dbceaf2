//! Verifying keys kept in memory, so a signed request costs no database read
//! and no decryption. A key's id, application and secret never change; only
//! its expiry and revocation do, and those are atomics refreshed when the
//! database's `keys_version` moves (see `Store::refresh_key_states`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use super::catalog::KeyStatus;
use crate::credentials::Secret;
use crate::error::Error;
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
    pub fn check_usable(&self, now: i64) -> Result<(), Error> {
        let load = |value: &AtomicI64| Some(value.load(Ordering::Acquire)).filter(|v| *v != NEVER);
        KeyStatus::at(now, load(&self.expires_at), load(&self.revoked_at)).check_usable()
    }

    pub fn mark_used(&self, now: i64) {
        // Read first: the value changes once a second, and a write on every
        // request would bounce this cache line between the workers' cores.
        if self.last_used_at.load(Ordering::Relaxed) < now {
            self.last_used_at.fetch_max(now, Ordering::Relaxed);
        }
    }
}

#[derive(Default)]
pub struct KeyCache {
    keys: RwLock<HashMap<Arc<str>, Arc<CachedKey>>>,
    version: AtomicI64,
}

impl KeyCache {
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

    pub(crate) fn insert(&self, loaded: VerifyingKey) -> Arc<CachedKey> {
        let key_id: Arc<str> = Arc::from(loaded.key_id.as_str());
        let key = Arc::new(CachedKey {
            key_id: key_id.clone(),
            app_id: loaded.app_id,
            app_name: loaded.app_name,
            signing_key: SigningKey::new(loaded.secret.expose()),
            expires_at: AtomicI64::new(to_atomic(loaded.expires_at)),
            revoked_at: AtomicI64::new(to_atomic(loaded.revoked_at)),
            last_used_at: AtomicI64::new(NEVER),
            last_used_flushed: AtomicI64::new(NEVER),
        });
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        // Two requests may miss at once; the first insert wins so that both
        // share one set of last-used counters.
        keys.entry(key_id).or_insert(key).clone()
    }

    pub(crate) fn update_state(
        &self,
        key_id: &str,
        expires_at: Option<i64>,
        revoked_at: Option<i64>,
    ) {
        if let Some(key) = self.get(key_id) {
            key.expires_at
                .store(to_atomic(expires_at), Ordering::Release);
            key.revoked_at
                .store(to_atomic(revoked_at), Ordering::Release);
        }
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
