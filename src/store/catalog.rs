//! Applications, keys and the audit log: what an admin changes, with the
//! rules that hold on every backend (names, expiry in the future, grace
//! limits, ids, sealing secrets, the master key check).
//!
//! Every change and its audit event are written by the backend in one
//! transaction, so the log cannot miss a change that happened. Key secrets
//! are sealed with the master key before they reach the backend and are
//! returned only once, in the [`NewKey`] that creates them.

use std::sync::Arc;

use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;

use super::backend::{AppRow, AuditRow, CatalogBackend, KeyRow, NewAuditEvent, StoredKey};
use super::{StoreError, VerifyingKey};
use crate::clock::Clock;
use crate::credentials::{self, MasterKey, Sealed, Secret};
use crate::domain::{AppId, AppName, ExpiresAt, GracePeriod, KeyId, KeyName};
use crate::policy::{AccessPolicy, Holder};

/// A fixed plaintext sealed under the master key when a database is first
/// opened; opening it later proves the configured master key is the right
/// one, so a wrong key fails at start-up, not on every partner request.
const MASTER_KEY_CHECK: &[u8] = b"keygate master key check v1";

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct App {
    pub app_id: String,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// The access policy (CONTRACT.md section 8); `{}` when there is none.
    #[schema(value_type = crate::policy::PolicyDocument)]
    pub policy: serde_json::Value,
    /// How many keys, how many live (neither revoked nor expired), and the
    /// latest use of any (a new application has none).
    pub key_count: i64,
    pub live_key_count: i64,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Active,
    /// Active, with an `expires_at` in the future (e.g. during rotation).
    Expiring,
    Expired,
    Revoked,
}

impl KeyStatus {
    pub fn at(now: i64, expires_at: Option<i64>, revoked_at: Option<i64>) -> Self {
        match (revoked_at, expires_at) {
            (Some(_), _) => KeyStatus::Revoked,
            (None, Some(expires)) if now >= expires => KeyStatus::Expired,
            (None, Some(_)) => KeyStatus::Expiring,
            (None, None) => KeyStatus::Active,
        }
    }

    /// Whether a request may be accepted with a key in this status, and if
    /// not, why (revoked before expired).
    pub fn check_usable(self) -> Result<(), KeyUnusable> {
        match self {
            KeyStatus::Revoked => Err(KeyUnusable::Revoked),
            KeyStatus::Expired => Err(KeyUnusable::Expired),
            KeyStatus::Active | KeyStatus::Expiring => Ok(()),
        }
    }
}

/// Why a key cannot sign a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUnusable {
    Revoked,
    Expired,
}

/// The rule for rotating a key, the same on every backend: applied by each
/// backend inside its transaction, to the old key as locked there, so that
/// a concurrent revocation cannot slip between the check and the change.
pub(crate) fn refuse_rotation(old: &KeyRow) -> Option<StoreError> {
    old.revoked_at.is_some().then(|| {
        StoreError::Refused(format!(
            "key {} is revoked; create a new key for the application instead",
            old.key_id
        ))
    })
}

/// A key as listed: never its secret.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeyInfo {
    pub key_id: String,
    pub app_id: String,
    /// For humans: "ERP sync, prod".
    pub name: Option<String>,
    pub status: KeyStatus,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<OffsetDateTime>,
    /// The key's own access policy; `{}` when there is none. Its
    /// application's applies too.
    #[schema(value_type = crate::policy::PolicyDocument)]
    pub policy: serde_json::Value,
}

/// A key just created: the only value that ever carries the secret.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NewKey {
    pub key_id: String,
    /// Shown this once: keygate stores it only sealed.
    #[serde(serialize_with = "serialize_secret")]
    #[schema(value_type = String)]
    pub secret: Secret,
    pub app_id: String,
    pub name: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
}

fn serialize_secret<S: serde::Serializer>(secret: &Secret, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose())
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEvent {
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    pub actor: String,
    /// The keygate process that made the change: `serve@host:pid` for an
    /// admin API call, `cli@host` for the CLI.
    pub instance: Option<String>,
    pub action: String,
    pub app_id: Option<String>,
    pub key_id: Option<String>,
    /// What changed, by action: `{"name": ...}`, `{"policy": ...}`, ...
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

fn datetime(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl From<AppRow> for App {
    fn from(row: AppRow) -> App {
        App {
            app_id: row.app_id,
            name: row.name,
            created_at: datetime(row.created_at),
            policy: AccessPolicy::from_stored(row.policy.as_deref(), Holder::App).to_json(),
            key_count: row.keys.map_or(0, |k| k.total),
            live_key_count: row.keys.map_or(0, |k| k.live),
            last_used_at: row.keys.and_then(|k| k.last_used_at).map(datetime),
        }
    }
}

impl KeyInfo {
    fn from_row(row: KeyRow, now: i64) -> KeyInfo {
        KeyInfo {
            status: KeyStatus::at(now, row.expires_at, row.revoked_at),
            policy: AccessPolicy::from_stored(row.policy.as_deref(), Holder::Key).to_json(),
            key_id: row.key_id,
            app_id: row.app_id,
            name: row.name,
            created_at: datetime(row.created_at),
            expires_at: row.expires_at.map(datetime),
            revoked_at: row.revoked_at.map(datetime),
            last_used_at: row.last_used_at.map(datetime),
        }
    }
}

impl From<AuditRow> for AuditEvent {
    fn from(row: AuditRow) -> AuditEvent {
        AuditEvent {
            id: row.id,
            at: datetime(row.at),
            actor: row.actor,
            instance: row.instance,
            action: row.action,
            app_id: row.app_id,
            key_id: row.key_id,
            detail: row
                .detail
                .and_then(|d| serde_json::from_str(&d).ok())
                .unwrap_or(serde_json::Value::Null),
        }
    }
}

pub struct Catalog {
    backend: Arc<dyn CatalogBackend>,
    master_key: MasterKey,
    /// Written into every audit event this process makes.
    instance: String,
    clock: Clock,
}

impl Catalog {
    /// Checks `master_key` against the database (storing the check value
    /// on first use). `key_file` only names the key in the error.
    pub(crate) fn new(
        backend: Arc<dyn CatalogBackend>,
        master_key: MasterKey,
        key_file: &str,
        instance: String,
        clock: Clock,
    ) -> Result<Catalog, String> {
        let catalog = Catalog {
            backend,
            master_key,
            instance,
            clock,
        };
        catalog.check_master_key(key_file)?;
        Ok(catalog)
    }

    pub(crate) fn backend(&self) -> &Arc<dyn CatalogBackend> {
        &self.backend
    }

    /// The clock every rule here reads (expiry, grace, audit times).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    fn check_master_key(&self, key_file: &str) -> Result<(), String> {
        let stored = self.backend.master_key_check().map_err(|e| e.to_string())?;
        let blob = match stored {
            Some(blob) => blob,
            None => {
                let sealed = self.master_key.seal(MASTER_KEY_CHECK, "meta");
                self.backend
                    .init_master_key_check(&[sealed.nonce, sealed.ciphertext].concat())
                    .map_err(|e| e.to_string())?;
                // Another process may have won the insert with its own key.
                self.backend
                    .master_key_check()
                    .map_err(|e| e.to_string())?
                    .ok_or("the master key check was not stored")?
            }
        };
        let opened = (blob.len() > 24)
            .then(|| {
                self.master_key.open(
                    &Sealed {
                        nonce: blob[..24].to_vec(),
                        ciphertext: blob[24..].to_vec(),
                    },
                    "meta",
                )
            })
            .flatten();
        match opened {
            Some(plain) if plain == MASTER_KEY_CHECK => Ok(()),
            _ => Err(format!(
                "the master key in {key_file} is not the one this database was created with; \
                 set KEYGATE_MASTER_KEY_FILE to the right file"
            )),
        }
    }

    fn event(
        &self,
        actor: &str,
        action: &'static str,
        app_id: Option<&AppId>,
        key_id: Option<&KeyId>,
        detail: serde_json::Value,
    ) -> NewAuditEvent {
        NewAuditEvent {
            at: self.clock.now(),
            actor: actor.to_owned(),
            instance: self.instance.clone(),
            action,
            app_id: app_id.map(|id| id.as_str().to_owned()),
            key_id: key_id.map(|id| id.as_str().to_owned()),
            detail: detail.to_string(),
        }
    }

    pub fn create_app(&self, name: &AppName, actor: &str) -> Result<App, StoreError> {
        let app_id = AppId::new();
        let event = self.event(
            actor,
            "app.create",
            Some(&app_id),
            None,
            json!({ "name": name.as_str() }),
        );
        let row = AppRow {
            app_id: app_id.into_string(),
            name: name.as_str().to_owned(),
            created_at: self.clock.now(),
            policy: None,
            keys: None,
        };
        self.backend.insert_app(&row, &event)?;
        Ok(row.into())
    }

    pub fn list_apps(&self) -> Result<Vec<App>, StoreError> {
        Ok(self
            .backend
            .list_apps(self.clock.now())?
            .into_iter()
            .map(App::from)
            .collect())
    }

    /// A fresh key id and secret, the secret sealed for storage.
    fn new_key(&self, expires_at: Option<i64>, name: Option<String>) -> (StoredKey, Secret) {
        let key_id = KeyId::new().into_string();
        let secret = credentials::new_secret();
        let sealed = self.master_key.seal(secret.expose().as_bytes(), &key_id);
        let stored = StoredKey {
            key_id,
            sealed,
            created_at: self.clock.now(),
            expires_at,
            name,
        };
        (stored, secret)
    }

    fn created(stored: StoredKey, secret: Secret, app_id: String, name: Option<String>) -> NewKey {
        NewKey {
            key_id: stored.key_id,
            secret,
            app_id,
            name,
            created_at: datetime(stored.created_at),
            expires_at: stored.expires_at.map(datetime),
        }
    }

    /// `name` is a label for humans ("ERP sync, prod"), optional.
    /// `expires_at` was checked to be in the future when it was parsed.
    pub fn create_key(
        &self,
        app_id: &AppId,
        expires_at: Option<ExpiresAt>,
        name: Option<&KeyName>,
        actor: &str,
    ) -> Result<NewKey, StoreError> {
        let expires_at = expires_at.map(ExpiresAt::unix);
        let name = name.map(|n| n.as_str().to_owned());
        let (stored, secret) = self.new_key(expires_at, name.clone());
        let event = NewAuditEvent {
            key_id: Some(stored.key_id.clone()),
            ..self.event(
                actor,
                "key.create",
                Some(app_id),
                None,
                json!({ "expires_at": expires_at, "name": name }),
            )
        };
        self.backend.insert_key(app_id, &stored, &event)?;
        Ok(Self::created(
            stored,
            secret,
            app_id.as_str().to_owned(),
            name,
        ))
    }

    pub fn list_keys(&self, app_id: &AppId) -> Result<Vec<KeyInfo>, StoreError> {
        let now = self.clock.now();
        Ok(self
            .backend
            .list_keys(app_id)?
            .into_iter()
            .map(|row| KeyInfo::from_row(row, now))
            .collect())
    }

    pub fn key_info(&self, key_id: &KeyId) -> Result<KeyInfo, StoreError> {
        let row = self
            .backend
            .key(key_id)?
            .ok_or_else(|| StoreError::KeyNotFound(key_id.as_str().to_owned()))?;
        Ok(KeyInfo::from_row(row, self.clock.now()))
    }

    /// A new key for the same application; the old one keeps working for
    /// `grace` so partners can deploy the new secret without an outage.
    /// An old key that already expires sooner keeps its earlier expiry:
    /// rotation never extends a key's life. A revoked key is not rotated
    /// ([`refuse_rotation`]).
    pub fn rotate_key(
        &self,
        key_id: &KeyId,
        grace: GracePeriod,
        actor: &str,
    ) -> Result<NewKey, StoreError> {
        let (stored, secret) = self.new_key(None, None);
        let event = self.event(
            actor,
            "key.rotate",
            None,
            Some(key_id),
            json!({ "new_key_id": stored.key_id, "grace_seconds": grace.seconds() }),
        );
        let old_expires_at = self.clock.now() + grace.seconds();
        let old = self
            .backend
            .rotate_key(key_id, &stored, old_expires_at, &event)?;
        // The new key carries the old one's name and policy (the backend
        // copied them in the same transaction).
        Ok(Self::created(stored, secret, old.app_id, old.name))
    }

    /// Revoking twice is not an error: the key stays revoked from the first
    /// time, and the answer says so.
    pub fn revoke_key(&self, key_id: &KeyId, actor: &str) -> Result<KeyInfo, StoreError> {
        let now = self.clock.now();
        let event = self.event(actor, "key.revoke", None, Some(key_id), json!({}));
        let row = self.backend.revoke_key(key_id, now, &event)?;
        Ok(KeyInfo::from_row(row, now))
    }

    /// An application's access policy, as the admin API shows it.
    pub fn app_policy(&self, app_id: &AppId) -> Result<serde_json::Value, StoreError> {
        let app = self
            .backend
            .app(app_id)?
            .ok_or_else(|| StoreError::AppNotFound(app_id.as_str().to_owned()))?;
        Ok(App::from(app).policy)
    }

    /// Replaces an application's access policy; it applies to each of its
    /// keys from their next request on. Returns the policy as stored.
    pub fn set_app_policy(
        &self,
        app_id: &AppId,
        policy: &AccessPolicy,
        actor: &str,
    ) -> Result<serde_json::Value, StoreError> {
        if policy.source_cidrs.is_some() {
            return Err(StoreError::Refused(
                "source_cidrs belongs on a key's policy, not an application's".into(),
            ));
        }
        let shown = policy.to_json();
        let event = self.event(
            actor,
            "app.policy",
            Some(app_id),
            None,
            json!({ "policy": shown }),
        );
        self.backend
            .set_app_policy(app_id, policy.to_stored().as_deref(), &event)?;
        Ok(shown)
    }

    /// A key's own access policy, as the admin API shows it.
    pub fn key_policy(&self, key_id: &KeyId) -> Result<serde_json::Value, StoreError> {
        Ok(self.key_info(key_id)?.policy)
    }

    /// Replaces a key's own access policy (its application's still
    /// applies too). Returns the policy as stored.
    pub fn set_key_policy(
        &self,
        key_id: &KeyId,
        policy: &AccessPolicy,
        actor: &str,
    ) -> Result<serde_json::Value, StoreError> {
        let shown = policy.to_json();
        let event = self.event(
            actor,
            "key.policy",
            None,
            Some(key_id),
            json!({ "policy": shown }),
        );
        self.backend
            .set_key_policy(key_id, policy.to_stored().as_deref(), &event)?;
        Ok(shown)
    }

    pub fn audit_events(&self, limit: u32) -> Result<Vec<AuditEvent>, StoreError> {
        Ok(self
            .backend
            .audit_events(limit)?
            .into_iter()
            .map(AuditEvent::from)
            .collect())
    }

    /// The key with its secret decrypted, for the verifier's cache.
    pub(crate) fn verifying_key(&self, key_id: &str) -> Result<Option<VerifyingKey>, StoreError> {
        let Some(row) = self.backend.verifying_key(key_id)? else {
            return Ok(None);
        };
        let secret = self
            .master_key
            .open(&row.sealed, key_id)
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| {
                StoreError::Unavailable(format!(
                    "the secret of key {key_id} does not decrypt with the master key"
                ))
            })?;
        Ok(Some(VerifyingKey {
            key_id: key_id.to_owned(),
            app_id: row.app_id,
            app_name: row.app_name,
            secret: Secret::new(secret),
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
            policies: row.policies,
        }))
    }
}
