//! Applications, keys and the audit log: what an admin changes.
//!
//! Every change and its audit event are written in one transaction, so the
//! log cannot miss a change that happened. Key secrets are sealed with the
//! master key before they reach SQL and are returned only once, in the
//! [`NewKey`] that creates them.

use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;

use super::{open_connection, StoreConfig};
use crate::clock;
use crate::credentials::{self, MasterKey, Sealed, Secret};
use crate::error::Error;

/// A fixed plaintext sealed under the master key when a database is first
/// opened; opening it later proves the configured master key is the right
/// one, so a wrong key fails at start-up, not on every partner request.
const MASTER_KEY_CHECK: &[u8] = b"keygate master key check v1";

#[derive(Debug, Clone, Serialize)]
pub struct App {
    pub app_id: String,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
    /// not, the contract's refusal (revoked before expired).
    pub fn check_usable(self) -> Result<(), Error> {
        match self {
            KeyStatus::Revoked => Err(Error::KeyRevoked),
            KeyStatus::Expired => Err(Error::KeyExpired),
            KeyStatus::Active | KeyStatus::Expiring => Ok(()),
        }
    }
}

/// A key as listed: never its secret.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub key_id: String,
    pub app_id: String,
    pub status: KeyStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
}

/// A key just created: the only value that ever carries the secret.
#[derive(Debug, Clone, Serialize)]
pub struct NewKey {
    pub key_id: String,
    #[serde(serialize_with = "serialize_secret")]
    pub secret: Secret,
    pub app_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

fn serialize_secret<S: serde::Serializer>(secret: &Secret, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose())
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub actor: String,
    pub action: String,
    pub app_id: Option<String>,
    pub key_id: Option<String>,
    pub detail: serde_json::Value,
}

/// What the verifier needs of a key, secret decrypted.
pub struct VerifyingKey {
    pub key_id: String,
    pub app_id: String,
    pub app_name: String,
    pub secret: Secret,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

pub struct Catalog {
    conn: Mutex<Connection>,
    master_key: MasterKey,
}

fn datetime(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl Catalog {
    /// Opens (creating if needed) the database, applies the schema and
    /// checks the master key against it.
    pub fn open(config: &StoreConfig) -> Result<Catalog, String> {
        let db = config.db_path.display();
        let mut conn =
            open_connection(config).map_err(|e| format!("cannot open database {db}: {e}"))?;
        super::schema::migrate(&mut conn).map_err(|e| format!("database {db}: {e}"))?;

        let key_path = config.master_key_path();
        let (master_key, created) = MasterKey::load_or_create(&key_path)?;
        if created {
            tracing::info!(path = %key_path.display(), "generated a new master key (mode 0600); back it up: without it no key secret can be read");
        }
        let catalog = Catalog {
            conn: Mutex::new(conn),
            master_key,
        };
        catalog.check_master_key(&key_path.display().to_string())?;
        Ok(catalog)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written
        // (transactions roll back on drop), so a poisoned lock is usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_master_key(&self, key_path: &str) -> Result<(), String> {
        let conn = self.lock();
        let stored: Option<Vec<u8>> = conn
            .query_row(
                "SELECT value FROM meta WHERE name = 'master_key_check'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| e.to_string())?;
        match stored {
            Some(blob) if blob.len() > 24 => {
                let sealed = Sealed {
                    nonce: blob[..24].to_vec(),
                    ciphertext: blob[24..].to_vec(),
                };
                match self.master_key.open(&sealed, "meta") {
                    Some(plain) if plain == MASTER_KEY_CHECK => Ok(()),
                    _ => Err(format!(
                        "the master key in {key_path} is not the one this database was created with; \
                         set KEYGATE_MASTER_KEY_FILE to the right file"
                    )),
                }
            }
            _ => {
                let sealed = self.master_key.seal(MASTER_KEY_CHECK, "meta");
                let blob = [sealed.nonce, sealed.ciphertext].concat();
                conn.execute(
                    "INSERT OR IGNORE INTO meta(name, value) VALUES ('master_key_check', ?1)",
                    [blob],
                )
                .map_err(|e| e.to_string())?;
                drop(conn);
                // Another process may have won the insert with its own key.
                self.check_master_key(key_path)
            }
        }
    }

    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T, Error>) -> Result<T, Error> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    fn audit(
        tx: &Transaction<'_>,
        actor: &str,
        action: &str,
        app_id: Option<&str>,
        key_id: Option<&str>,
        detail: serde_json::Value,
    ) -> Result<(), Error> {
        tx.execute(
            "INSERT INTO audit_events(at, actor, action, app_id, key_id, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![clock::now(), actor, action, app_id, key_id, detail.to_string()],
        )?;
        Ok(())
    }

    pub fn create_app(&self, name: &str, actor: &str) -> Result<App, Error> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
            return Err(Error::InvalidRequest(
                "name must be 1 to 200 characters with no control characters".into(),
            ));
        }
        let app = App {
            app_id: credentials::new_app_id(),
            name: name.to_owned(),
            created_at: datetime(clock::now()),
        };
        self.write(|tx| {
            tx.execute(
                "INSERT INTO apps(app_id, name, created_at) VALUES (?1, ?2, ?3)",
                params![app.app_id, app.name, app.created_at.unix_timestamp()],
            )?;
            Self::audit(
                tx,
                actor,
                "app.create",
                Some(&app.app_id),
                None,
                json!({ "name": app.name }),
            )
        })?;
        Ok(app)
    }

    pub fn list_apps(&self) -> Result<Vec<App>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT app_id, name, created_at FROM apps ORDER BY created_at, app_id",
        )?;
        let apps = stmt
            .query_map([], |r| {
                Ok(App {
                    app_id: r.get(0)?,
                    name: r.get(1)?,
                    created_at: datetime(r.get(2)?),
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(apps)
    }

    fn insert_key(
        &self,
        tx: &Transaction<'_>,
        app_id: &str,
        expires_at: Option<i64>,
    ) -> Result<NewKey, Error> {
        let key_id = credentials::new_key_id();
        let secret = credentials::new_secret();
        let sealed = self.master_key.seal(secret.expose().as_bytes(), &key_id);
        let now = clock::now();
        tx.execute(
            "INSERT INTO keys(key_id, app_id, secret_nonce, secret_ciphertext, created_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![key_id, app_id, sealed.nonce, sealed.ciphertext, now, expires_at],
        )?;
        Ok(NewKey {
            key_id,
            secret,
            app_id: app_id.to_owned(),
            created_at: datetime(now),
            expires_at: expires_at.map(datetime),
        })
    }

    fn app_exists(tx: &Transaction<'_>, app_id: &str) -> Result<bool, Error> {
        Ok(tx
            .query_row("SELECT 1 FROM apps WHERE app_id = ?1", [app_id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    pub fn create_key(
        &self,
        app_id: &str,
        expires_at: Option<i64>,
        actor: &str,
    ) -> Result<NewKey, Error> {
        if let Some(at) = expires_at {
            if at <= clock::now() {
                return Err(Error::InvalidRequest(
                    "expires_at must be in the future".into(),
                ));
            }
        }
        self.write(|tx| {
            if !Self::app_exists(tx, app_id)? {
                return Err(Error::AppNotFound(app_id.to_owned()));
            }
            let key = self.insert_key(tx, app_id, expires_at)?;
            Self::audit(
                tx,
                actor,
                "key.create",
                Some(app_id),
                Some(&key.key_id),
                json!({ "expires_at": expires_at }),
            )?;
            Ok(key)
        })
    }

    fn key_info_row(r: &rusqlite::Row<'_>, now: i64) -> rusqlite::Result<KeyInfo> {
        let expires_at: Option<i64> = r.get(3)?;
        let revoked_at: Option<i64> = r.get(4)?;
        Ok(KeyInfo {
            key_id: r.get(0)?,
            app_id: r.get(1)?,
            status: KeyStatus::at(now, expires_at, revoked_at),
            created_at: datetime(r.get(2)?),
            expires_at: expires_at.map(datetime),
            revoked_at: revoked_at.map(datetime),
            last_used_at: r.get::<_, Option<i64>>(5)?.map(datetime),
        })
    }

    const KEY_INFO_COLUMNS: &'static str =
        "key_id, app_id, created_at, expires_at, revoked_at, last_used_at";

    pub fn list_keys(&self, app_id: &str) -> Result<Vec<KeyInfo>, Error> {
        let conn = self.lock();
        let exists = conn
            .query_row("SELECT 1 FROM apps WHERE app_id = ?1", [app_id], |_| Ok(()))
            .optional()?
            .is_some();
        if !exists {
            return Err(Error::AppNotFound(app_id.to_owned()));
        }
        let now = clock::now();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {} FROM keys WHERE app_id = ?1 ORDER BY created_at, key_id",
            Self::KEY_INFO_COLUMNS
        ))?;
        let keys = stmt
            .query_map([app_id], |r| Self::key_info_row(r, now))?
            .collect::<Result<_, _>>()?;
        Ok(keys)
    }

    pub fn key_info(&self, key_id: &str) -> Result<KeyInfo, Error> {
        let conn = self.lock();
        Self::key_info_in(&conn, key_id)
    }

    fn key_info_in(conn: &Connection, key_id: &str) -> Result<KeyInfo, Error> {
        let now = clock::now();
        conn.query_row(
            &format!(
                "SELECT {} FROM keys WHERE key_id = ?1",
                Self::KEY_INFO_COLUMNS
            ),
            [key_id],
            |r| Self::key_info_row(r, now),
        )
        .optional()?
        .ok_or_else(|| Error::KeyNotFound(key_id.to_owned()))
    }

    /// A new key for the same application; the old one keeps working for
    /// `grace_seconds` so partners can deploy the new secret without an
    /// outage. An old key that already expires sooner keeps its earlier
    /// expiry: rotation never extends a key's life.
    pub fn rotate_key(
        &self,
        key_id: &str,
        grace_seconds: i64,
        actor: &str,
    ) -> Result<NewKey, Error> {
        if !(0..=MAX_GRACE_SECONDS).contains(&grace_seconds) {
            return Err(Error::InvalidRequest(format!(
                "grace_seconds must be between 0 and {MAX_GRACE_SECONDS}"
            )));
        }
        self.write(|tx| {
            let old = Self::key_info_in(tx, key_id)?;
            if old.status == KeyStatus::Revoked {
                return Err(Error::InvalidRequest(format!(
                    "key {key_id} is revoked; create a new key for the application instead"
                )));
            }
            let new_key = self.insert_key(tx, &old.app_id, None)?;
            let old_expires_at = clock::now() + grace_seconds;
            tx.execute(
                "UPDATE keys SET expires_at = ?2 WHERE key_id = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
                params![key_id, old_expires_at],
            )?;
            Self::audit(
                tx,
                actor,
                "key.rotate",
                Some(&old.app_id),
                Some(key_id),
                json!({ "new_key_id": new_key.key_id, "grace_seconds": grace_seconds }),
            )?;
            Ok(new_key)
        })
    }

    /// Revoking twice is not an error: the key stays revoked from the first
    /// time, and the answer says so.
    pub fn revoke_key(&self, key_id: &str, actor: &str) -> Result<KeyInfo, Error> {
        self.write(|tx| {
            let key = Self::key_info_in(tx, key_id)?;
            if key.status != KeyStatus::Revoked {
                tx.execute(
                    "UPDATE keys SET revoked_at = ?2 WHERE key_id = ?1",
                    params![key_id, clock::now()],
                )?;
                Self::audit(
                    tx,
                    actor,
                    "key.revoke",
                    Some(&key.app_id),
                    Some(key_id),
                    json!({}),
                )?;
            }
            Self::key_info_in(tx, key_id)
        })
    }

    pub fn audit_events(&self, limit: u32) -> Result<Vec<AuditEvent>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, at, actor, action, app_id, key_id, detail FROM audit_events ORDER BY id DESC LIMIT ?1",
        )?;
        let events = stmt
            .query_map([limit], |r| {
                let detail: Option<String> = r.get(6)?;
                Ok(AuditEvent {
                    id: r.get(0)?,
                    at: datetime(r.get(1)?),
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    app_id: r.get(4)?,
                    key_id: r.get(5)?,
                    detail: detail
                        .and_then(|d| serde_json::from_str(&d).ok())
                        .unwrap_or(serde_json::Value::Null),
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(events)
    }

    /// The key with its secret decrypted, for the verifier's cache.
    pub(crate) fn verifying_key(&self, key_id: &str) -> Result<Option<VerifyingKey>, Error> {
        let conn = self.lock();
        let row = conn
            .prepare_cached(
                "SELECT k.app_id, a.name, k.secret_nonce, k.secret_ciphertext, k.expires_at, k.revoked_at \
                 FROM keys k JOIN apps a ON a.app_id = k.app_id WHERE k.key_id = ?1",
            )?
            .query_row([key_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    Sealed {
                        nonce: r.get(2)?,
                        ciphertext: r.get(3)?,
                    },
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                ))
            })
            .optional()?;
        let Some((app_id, app_name, sealed, expires_at, revoked_at)) = row else {
            return Ok(None);
        };
        let secret = self
            .master_key
            .open(&sealed, key_id)
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| {
                Error::Unavailable(format!(
                    "the secret of key {key_id} does not decrypt with the master key"
                ))
            })?;
        Ok(Some(VerifyingKey {
            key_id: key_id.to_owned(),
            app_id,
            app_name,
            secret: Secret::new(secret),
            expires_at,
            revoked_at,
        }))
    }

    /// Bumped by a trigger on every key insert, revocation or expiry change.
    pub(crate) fn keys_version(&self) -> Result<i64, Error> {
        Ok(self.lock().query_row(
            "SELECT value FROM meta WHERE name = 'keys_version'",
            [],
            |r| r.get(0),
        )?)
    }

    /// (key_id, expires_at, revoked_at) of every key.
    pub(crate) fn key_states(&self) -> Result<Vec<KeyState>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached("SELECT key_id, expires_at, revoked_at FROM keys")?;
        let states = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        Ok(states)
    }
}

/// A key's id, expiry and revocation time, as the verifier's cache needs them.
pub(crate) type KeyState = (String, Option<i64>, Option<i64>);

/// A year: a longer overlap is a second key, not a rotation.
pub const MAX_GRACE_SECONDS: i64 = 365 * 24 * 3600;
