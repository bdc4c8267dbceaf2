//! Applications, keys and audit events in SQLite. Writes take the write
//! lock at BEGIN (IMMEDIATE), so a change and its audit event never
//! interleave with another process's.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::{open_connection, unavailable, Settings};
use crate::credentials::Sealed;
use crate::domain::{AppId, KeyId};
use crate::store::backend::{
    AppRow, AuditRow, CatalogBackend, KeyRow, KeyState, KeySummary, NewAuditEvent,
    SealedVerifyingKey, StoredKey, StoredPolicies,
};
use crate::store::catalog::refuse_rotation;
use crate::store::StoreError;

pub(crate) struct SqliteCatalog {
    conn: Mutex<Connection>,
    path: PathBuf,
    settings: Settings,
    /// Opened on the first maintenance tick: only a server checkpoints.
    checkpoint_conn: OnceLock<Mutex<Connection>>,
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        unavailable(err)
    }
}

const KEY_COLUMNS: &str =
    "key_id, app_id, created_at, expires_at, revoked_at, last_used_at, name, policy";

fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRow> {
    Ok(KeyRow {
        key_id: r.get(0)?,
        app_id: r.get(1)?,
        created_at: r.get(2)?,
        expires_at: r.get(3)?,
        revoked_at: r.get(4)?,
        last_used_at: r.get(5)?,
        name: r.get(6)?,
        policy: r.get(7)?,
    })
}

const APP_COLUMNS: &str = "app_id, name, created_at, policy";

fn app_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AppRow> {
    Ok(AppRow {
        app_id: r.get(0)?,
        name: r.get(1)?,
        created_at: r.get(2)?,
        policy: r.get(3)?,
        keys: None,
    })
}

/// The statement the verifier's policies are read with; `k` and `a` are
/// the key's and its application's rows.
const POLICIES: &str = "k.policy, a.policy, k.policy_seq";

fn policies_at(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<StoredPolicies> {
    Ok(StoredPolicies {
        key: r.get(first)?,
        app: r.get(first + 1)?,
        policy_seq: r.get(first + 2)?,
    })
}

fn key_in(conn: &Connection, key_id: &str) -> Result<Option<KeyRow>, StoreError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM keys WHERE key_id = ?1"))?
        .query_row([key_id], key_row)
        .optional()?)
}

fn app_exists(conn: &Connection, app_id: &str) -> Result<bool, StoreError> {
    Ok(conn
        .query_row("SELECT 1 FROM apps WHERE app_id = ?1", [app_id], |_| Ok(()))
        .optional()?
        .is_some())
}

fn write_event(
    tx: &Transaction<'_>,
    event: &NewAuditEvent,
    app_id: Option<&str>,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO audit_events(at, actor, instance, action, app_id, key_id, detail) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            event.at,
            event.actor,
            event.instance,
            event.action,
            app_id.or(event.app_id.as_deref()),
            event.key_id,
            event.detail
        ],
    )?;
    Ok(())
}

fn insert_key_in(
    tx: &Transaction<'_>,
    app_id: &str,
    key: &StoredKey,
    policy: Option<&str>,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO keys(key_id, app_id, secret_nonce, secret_ciphertext, created_at, expires_at, \
         name, policy) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            key.key_id,
            app_id,
            key.sealed.nonce,
            key.sealed.ciphertext,
            key.created_at,
            key.expires_at,
            key.name,
            policy
        ],
    )?;
    Ok(())
}

impl SqliteCatalog {
    pub(super) fn new(conn: Connection, path: &Path, settings: Settings) -> Self {
        SqliteCatalog {
            conn: Mutex::new(conn),
            path: path.to_owned(),
            settings,
            checkpoint_conn: OnceLock::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written
        // (transactions roll back on drop), so a poisoned lock is usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Two passes. A passive checkpoint never blocks the nonce writer, but
    /// under steady load it never finishes either: frames are appended
    /// while it copies, so the WAL was never rewound and grew to the
    /// writer's backstop (20,000 pages, 84 MB, in 2 s of load), whose
    /// checkpoint then ran on the writer. So a RESTART pass follows: it
    /// copies the few frames appended during the first and lets the next
    /// commit rewind the WAL, which now stays at 16-32 MB. RESTART holds
    /// off writers while it waits, so this connection has no busy timeout:
    /// when a commit or a reader is in the way it gives up at once and the
    /// next tick tries again.
    fn checkpoint(&self) -> Result<(), StoreError> {
        let conn = match self.checkpoint_conn.get() {
            Some(conn) => conn,
            None => {
                let conn = open_connection(&self.path, self.settings)?;
                conn.busy_timeout(std::time::Duration::ZERO)?;
                self.checkpoint_conn.get_or_init(|| Mutex::new(conn))
            }
        };
        let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))?;
        Ok(())
    }
}

impl CatalogBackend for SqliteCatalog {
    fn master_key_check(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT value FROM meta WHERE name = 'master_key_check'",
                [],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn init_master_key_check(&self, value: &[u8]) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT OR IGNORE INTO meta(name, value) VALUES ('master_key_check', ?1)",
            [value],
        )?;
        Ok(())
    }

    fn insert_app(&self, app: &AppRow, event: &NewAuditEvent) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO apps(app_id, name, created_at, policy) VALUES (?1, ?2, ?3, ?4)",
                params![app.app_id, app.name, app.created_at, app.policy],
            )?;
            write_event(tx, event, None)
        })
    }

    fn list_apps(&self, now: i64) -> Result<Vec<AppRow>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT a.app_id, a.name, a.created_at, a.policy, count(k.key_id), \
             count(CASE WHEN k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > ?1) THEN k.key_id END), \
             max(k.last_used_at) \
             FROM apps a LEFT JOIN keys k ON k.app_id = a.app_id \
             GROUP BY a.app_id ORDER BY a.created_at, a.app_id",
        )?;
        let apps = stmt
            .query_map([now], |r| {
                Ok(AppRow {
                    keys: Some(KeySummary {
                        total: r.get(4)?,
                        live: r.get(5)?,
                        last_used_at: r.get(6)?,
                    }),
                    ..app_row(r)?
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(apps)
    }

    fn app(&self, app_id: &AppId) -> Result<Option<AppRow>, StoreError> {
        let app_id = app_id.as_str();
        Ok(self
            .lock()
            .prepare_cached(&format!("SELECT {APP_COLUMNS} FROM apps WHERE app_id = ?1"))?
            .query_row([app_id], app_row)
            .optional()?)
    }

    fn set_app_policy(
        &self,
        app_id: &AppId,
        policy: Option<&str>,
        event: &NewAuditEvent,
    ) -> Result<(), StoreError> {
        let app_id = app_id.as_str();
        self.write(|tx| {
            let changed = tx.execute(
                "UPDATE apps SET policy = ?2 WHERE app_id = ?1",
                params![app_id, policy],
            )?;
            if changed == 0 {
                return Err(StoreError::AppNotFound(app_id.to_owned()));
            }
            tx.execute(
                "UPDATE keys SET policy_seq = policy_seq + 1 WHERE app_id = ?1",
                [app_id],
            )?;
            write_event(tx, event, None)
        })
    }

    fn set_key_policy(
        &self,
        key_id: &KeyId,
        policy: Option<&str>,
        event: &NewAuditEvent,
    ) -> Result<KeyRow, StoreError> {
        let key_id = key_id.as_str();
        self.write(|tx| {
            let changed = tx.execute(
                "UPDATE keys SET policy = ?2, policy_seq = policy_seq + 1 WHERE key_id = ?1",
                params![key_id, policy],
            )?;
            if changed == 0 {
                return Err(StoreError::KeyNotFound(key_id.to_owned()));
            }
            let key =
                key_in(tx, key_id)?.ok_or_else(|| StoreError::KeyNotFound(key_id.to_owned()))?;
            write_event(tx, event, Some(&key.app_id))?;
            Ok(key)
        })
    }

    fn insert_key(
        &self,
        app_id: &AppId,
        key: &StoredKey,
        event: &NewAuditEvent,
    ) -> Result<(), StoreError> {
        let app_id = app_id.as_str();
        self.write(|tx| {
            if !app_exists(tx, app_id)? {
                return Err(StoreError::AppNotFound(app_id.to_owned()));
            }
            insert_key_in(tx, app_id, key, None)?;
            write_event(tx, event, None)
        })
    }

    fn list_keys(&self, app_id: &AppId) -> Result<Vec<KeyRow>, StoreError> {
        let app_id = app_id.as_str();
        let conn = self.lock();
        if !app_exists(&conn, app_id)? {
            return Err(StoreError::AppNotFound(app_id.to_owned()));
        }
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE app_id = ?1 ORDER BY created_at, key_id"
        ))?;
        let keys = stmt
            .query_map([app_id], key_row)?
            .collect::<Result<_, _>>()?;
        Ok(keys)
    }

    fn key(&self, key_id: &KeyId) -> Result<Option<KeyRow>, StoreError> {
        let key_id = key_id.as_str();
        key_in(&self.lock(), key_id)
    }

    fn rotate_key(
        &self,
        old_key_id: &KeyId,
        new_key: &StoredKey,
        old_expires_at: i64,
        event: &NewAuditEvent,
    ) -> Result<KeyRow, StoreError> {
        let old_key_id = old_key_id.as_str();
        self.write(|tx| {
            let old = key_in(tx, old_key_id)?
                .ok_or_else(|| StoreError::KeyNotFound(old_key_id.to_owned()))?;
            if let Some(refusal) = refuse_rotation(&old) {
                return Err(refusal);
            }
            let inherited = StoredKey {
                name: new_key.name.clone().or_else(|| old.name.clone()),
                ..new_key.clone()
            };
            insert_key_in(tx, &old.app_id, &inherited, old.policy.as_deref())?;
            tx.execute(
                "UPDATE keys SET expires_at = ?2 WHERE key_id = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
                params![old_key_id, old_expires_at],
            )?;
            write_event(tx, event, Some(&old.app_id))?;
            Ok(old)
        })
    }

    fn revoke_key(
        &self,
        key_id: &KeyId,
        revoked_at: i64,
        event: &NewAuditEvent,
    ) -> Result<KeyRow, StoreError> {
        let key_id = key_id.as_str();
        self.write(|tx| {
            let key =
                key_in(tx, key_id)?.ok_or_else(|| StoreError::KeyNotFound(key_id.to_owned()))?;
            if key.revoked_at.is_none() {
                tx.execute(
                    "UPDATE keys SET revoked_at = ?2 WHERE key_id = ?1",
                    params![key_id, revoked_at],
                )?;
                write_event(tx, event, Some(&key.app_id))?;
            }
            key_in(tx, key_id)?.ok_or_else(|| StoreError::KeyNotFound(key_id.to_owned()))
        })
    }

    fn audit_events(&self, limit: u32) -> Result<Vec<AuditRow>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, at, actor, instance, action, app_id, key_id, detail \
             FROM audit_events ORDER BY id DESC LIMIT ?1",
        )?;
        let events = stmt
            .query_map([limit], |r| {
                Ok(AuditRow {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    instance: r.get(3)?,
                    action: r.get(4)?,
                    app_id: r.get(5)?,
                    key_id: r.get(6)?,
                    detail: r.get(7)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(events)
    }

    fn verifying_key(&self, key_id: &str) -> Result<Option<SealedVerifyingKey>, StoreError> {
        Ok(self
            .lock()
            .prepare_cached(&format!(
                "SELECT k.app_id, a.name, k.secret_nonce, k.secret_ciphertext, k.expires_at, \
                 k.revoked_at, {POLICIES} FROM keys k JOIN apps a ON a.app_id = k.app_id \
                 WHERE k.key_id = ?1"
            ))?
            .query_row([key_id], |r| {
                Ok(SealedVerifyingKey {
                    app_id: r.get(0)?,
                    app_name: r.get(1)?,
                    sealed: Sealed {
                        nonce: r.get(2)?,
                        ciphertext: r.get(3)?,
                    },
                    expires_at: r.get(4)?,
                    revoked_at: r.get(5)?,
                    policies: policies_at(r, 6)?,
                })
            })
            .optional()?)
    }

    fn policies(&self, key_id: &str) -> Result<Option<StoredPolicies>, StoreError> {
        Ok(self
            .lock()
            .prepare_cached(&format!(
                "SELECT {POLICIES} FROM keys k JOIN apps a ON a.app_id = k.app_id \
                 WHERE k.key_id = ?1"
            ))?
            .query_row([key_id], |r| policies_at(r, 0))
            .optional()?)
    }

    /// Bumped by a trigger on every key insert, revocation, expiry change or
    /// policy change.
    fn keys_version(&self) -> Result<i64, StoreError> {
        Ok(self.lock().query_row(
            "SELECT value FROM meta WHERE name = 'keys_version'",
            [],
            |r| r.get(0),
        )?)
    }

    fn key_states(&self) -> Result<Vec<KeyState>, StoreError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare_cached("SELECT key_id, expires_at, revoked_at, policy_seq FROM keys")?;
        let states = stmt
            .query_map([], |r| {
                Ok(KeyState {
                    key_id: r.get(0)?,
                    expires_at: r.get(1)?,
                    revoked_at: r.get(2)?,
                    policy_seq: r.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(states)
    }

    fn housekeeping(&self, _now: i64, _skew_secs: u32) -> Result<(), StoreError> {
        // The log's purge runs on the nonce writer (it shares the log's
        // catch-up); here only the WAL.
        self.checkpoint()
    }

    /// One file on this machine, read and written by processes that share
    /// its clock: nothing to agree on.
    fn database_time(&self) -> Result<Option<f64>, StoreError> {
        Ok(None)
    }

    fn signed_not_before(&self) -> Result<Option<i64>, StoreError> {
        Ok(super::backup::signed_not_before(&self.lock())?)
    }

    fn set_signed_not_before(&self, at: i64) -> Result<(), StoreError> {
        Ok(super::backup::set_signed_not_before(&self.lock(), at)?)
    }
}
