//! Applications, keys and audit events in PostgreSQL. Each call is one
//! transaction on the catalog's connection; a key row that a change
//! depends on is locked (FOR UPDATE) so concurrent instances cannot
//! interleave a rotation and a revocation of the same key.

use tokio_postgres::{GenericClient, Row};

use super::purge::ExpiredPairSweep;
use super::{PgConnection, Session, Work};
use crate::credentials::Sealed;
use crate::domain::{AppId, KeyId};
use crate::store::backend::{
    AppRow, AuditRow, CatalogBackend, KeyRow, KeyState, KeySummary, NewAuditEvent,
    SealedVerifyingKey, StoredKey, StoredPolicies,
};
use crate::store::catalog::refuse_rotation;
use crate::store::StoreError;

/// Prepared once per session (`Session::prepared` keys by `&'static str`).
const VERIFYING_KEY: &str = "SELECT k.app_id, a.name, k.secret_nonce, k.secret_ciphertext, \
     k.expires_at, k.revoked_at, k.policy, a.policy, k.policy_seq \
     FROM keys k JOIN apps a ON a.app_id = k.app_id WHERE k.key_id = $1";
const POLICIES_OF_KEY: &str = "SELECT k.policy, a.policy, k.policy_seq \
     FROM keys k JOIN apps a ON a.app_id = k.app_id WHERE k.key_id = $1";

pub(crate) struct PgCatalog {
    conn: PgConnection,
    /// Deletes expired pairs, on a connection of its own.
    purge: ExpiredPairSweep,
}

/// What a call that may find "not found" returns from inside the
/// transaction: database errors travel separately.
enum Found<T> {
    Yes(T),
    NoApp,
    NoKey,
    /// A rule above the backend refused the change.
    Refused(StoreError),
}

const KEY_COLUMNS: &str =
    "key_id, app_id, created_at, expires_at, revoked_at, last_used_at, name, policy";

fn key_row(row: &Row) -> KeyRow {
    KeyRow {
        key_id: row.get(0),
        app_id: row.get(1),
        created_at: row.get(2),
        expires_at: row.get(3),
        revoked_at: row.get(4),
        last_used_at: row.get(5),
        name: row.get(6),
        policy: row.get(7),
    }
}

const APP_COLUMNS: &str = "app_id, name, created_at, policy";

fn app_row(row: &Row) -> AppRow {
    AppRow {
        app_id: row.get(0),
        name: row.get(1),
        created_at: row.get(2),
        policy: row.get(3),
        keys: None,
    }
}

fn policies_at(row: &Row, first: usize) -> StoredPolicies {
    StoredPolicies {
        key: row.get(first),
        app: row.get(first + 1),
        policy_seq: row.get(first + 2),
    }
}

async fn key_in<C: GenericClient>(
    client: &C,
    key_id: &str,
    lock: bool,
) -> Result<Option<KeyRow>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT {KEY_COLUMNS} FROM keys WHERE key_id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    Ok(client
        .query_opt(&sql, &[&key_id])
        .await?
        .map(|row| key_row(&row)))
}

async fn write_event<C: GenericClient>(
    client: &C,
    event: &NewAuditEvent,
    app_id: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO audit_events(at, actor, instance, action, app_id, key_id, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &event.at,
                &event.actor,
                &event.instance,
                &event.action,
                &app_id.or(event.app_id.as_deref()),
                &event.key_id,
                &event.detail,
            ],
        )
        .await?;
    Ok(())
}

async fn insert_key_in<C: GenericClient>(
    client: &C,
    app_id: &str,
    key: &OwnedKey,
    name: Option<&str>,
    policy: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO keys(key_id, app_id, secret_nonce, secret_ciphertext, created_at, \
             expires_at, name, policy) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &key.key_id,
                &app_id,
                &key.nonce,
                &key.ciphertext,
                &key.created_at,
                &key.expires_at,
                &name,
                &policy,
            ],
        )
        .await?;
    Ok(())
}

/// A `StoredKey` that can move into a call's future.
struct OwnedKey {
    key_id: String,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
    created_at: i64,
    expires_at: Option<i64>,
    name: Option<String>,
}

impl From<&StoredKey> for OwnedKey {
    fn from(key: &StoredKey) -> Self {
        OwnedKey {
            key_id: key.key_id.clone(),
            nonce: key.sealed.nonce.clone(),
            ciphertext: key.sealed.ciphertext.clone(),
            created_at: key.created_at,
            expires_at: key.expires_at,
            name: key.name.clone(),
        }
    }
}

impl PgCatalog {
    pub(super) fn new(conn: PgConnection, maintenance: PgConnection) -> Self {
        PgCatalog {
            conn,
            purge: ExpiredPairSweep::new(maintenance),
        }
    }

    fn run<T: Send + 'static>(&self, work: Work<T>) -> Result<T, StoreError> {
        self.conn.run(work)
    }
}

fn found<T>(outcome: Found<T>, app_id: &str, key_id: &str) -> Result<T, StoreError> {
    match outcome {
        Found::Yes(value) => Ok(value),
        Found::NoApp => Err(StoreError::AppNotFound(app_id.to_owned())),
        Found::NoKey => Err(StoreError::KeyNotFound(key_id.to_owned())),
        Found::Refused(refusal) => Err(refusal),
    }
}

impl CatalogBackend for PgCatalog {
    fn master_key_check(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.run(Box::new(|s: &mut Session| {
            Box::pin(async move {
                Ok(s.client
                    .query_opt(
                        "SELECT value FROM meta WHERE name = 'master_key_check'",
                        &[],
                    )
                    .await?
                    .map(|row| row.get(0)))
            })
        }))
    }

    fn init_master_key_check(&self, value: &[u8]) -> Result<(), StoreError> {
        let value = value.to_vec();
        self.run(Box::new(move |s: &mut Session| {
            Box::pin(async move {
                s.client
                    .execute(
                        "INSERT INTO meta(name, value) VALUES ('master_key_check', $1) \
                         ON CONFLICT (name) DO NOTHING",
                        &[&value],
                    )
                    .await?;
                Ok(())
            })
        }))
    }

    fn insert_app(&self, app: &AppRow, event: &NewAuditEvent) -> Result<(), StoreError> {
        let (app, event) = (app.clone(), event.clone());
        self.run(Box::new(move |s: &mut Session| {
            Box::pin(async move {
                let tx = s.client.transaction().await?;
                tx.execute(
                    "INSERT INTO apps(app_id, name, created_at, policy) VALUES ($1, $2, $3, $4)",
                    &[&app.app_id, &app.name, &app.created_at, &app.policy],
                )
                .await?;
                write_event(&tx, &event, None).await?;
                tx.commit().await
            })
        }))
    }

    fn list_apps(&self, now: i64) -> Result<Vec<AppRow>, StoreError> {
        self.run(Box::new(move |s: &mut Session| {
            Box::pin(async move {
                let rows = s
                    .client
                    .query(
                        "SELECT a.app_id, a.name, a.created_at, a.policy, count(k.key_id), \
                         count(k.key_id) FILTER (WHERE k.revoked_at IS NULL \
                             AND (k.expires_at IS NULL OR k.expires_at > $1)), \
                         max(k.last_used_at) \
                         FROM apps a LEFT JOIN keys k ON k.app_id = a.app_id \
                         GROUP BY a.app_id ORDER BY a.created_at, a.app_id",
                        &[&now],
                    )
                    .await?;
                Ok(rows
                    .iter()
                    .map(|r| AppRow {
                        keys: Some(KeySummary {
                            total: r.get(4),
                            live: r.get(5),
                            last_used_at: r.get(6),
                        }),
                        ..app_row(r)
                    })
                    .collect())
            })
        }))
    }

    fn app(&self, app_id: &AppId) -> Result<Option<AppRow>, StoreError> {
        let app_id = app_id.as_str();
        let app_id = app_id.to_owned();
        self.run(Box::new(move |s: &mut Session| {
            Box::pin(async move {
                Ok(s.client
                    .query_opt(
                        &format!("SELECT {APP_COLUMNS} FROM apps WHERE app_id = $1"),
                        &[&app_id],
                    )
                    .await?
                    .map(|row| app_row(&row)))
            })
        }))
    }

    fn set_app_policy(
        &self,
        app_id: &AppId,
        policy: Option<&str>,
        event: &NewAuditEvent,
    ) -> Result<(), StoreError> {
        let app_id = app_id.as_str();
        let (owned_app, policy, event) =
            (app_id.to_owned(), policy.map(str::to_owned), event.clone());
        let outcome = self.run(Box::new(move |s: &mut Session| {
            Box::pin(async move {
                let tx = s.client.transaction().await?;
                let changed = tx
                    .execute(
                        "UPDATE apps SET policy = $2 WHERE app_id = $1",
                        &[&owned_app, &policy],
                    )
                    .await?;
                if changed == 0 {
                    return Ok(Found::NoApp);
                }
                // Like a revocation, this waits for nonce batches holding
                // the keys' rows, and every later batch sees the new
                // policy_seq (see ledger.rs).
                tx.execute(
                    "UPDATE keys SET policy_seq = policy_seq + 1 WHERE app_id = $1",
                    &[&owned_app],
                )
                .await?;
                write_event(&tx, &event, None).await?;
                tx.commit().await?;
                Ok(Found::Yes(()))
            })
        }))?;
        found(outcome, app_id, "")
    }

    fn set_key_policy(
        &self,
        key_id: &KeyId,
        policy: Option<&str>,
        event: &NewAuditEvent,
    ) -> Result<KeyRow, StoreError> {
        let key_id = key_id.as_str();
        let (owned_key, policy, event) =
            (key_id.to_owned(), policy.map(str::to_owned), event.clone());
        let outcome = self.run(Box::new(move |s: &mut Session| {
            Box::pin(async move {
                let tx = s.client.transaction().await?;
                let changed = tx
                    .execute(
                        "UPDATE keys SET policy = $2, policy_seq = policy_seq + 1 \
                         WHERE key_id = $1",
                        &[&owned_key, &policy],
                    )
                    .await?;
                if changed == 0 {
                    return Ok(Found::NoKey);
                }
                let Some(key) = key_in(&tx, &owned_key, false).await? else {
                    return Ok(Found::NoKey);
                };
                write_event(&tx, &event, Some(&key.app_id)).await?;
                tx.commit().await?;
                Ok(Found::Yes(key))
            })
        }))?;
        found(outcome, "", key_id)
    }

    fn insert_key(
        &self,
        app_id: &AppId,
        key: &StoredKey,
        event: &NewAuditEvent,
    ) -> Result<(), StoreError> {
        let app_id = app_id.as_str();
        let (owned_app, key, event) = (app_id.to_owned(), OwnedKey::from(key), event.clone());
        let outcome = self.run(Box::new(move |s: &mut Session| {
            Box::pin(async move {
                let tx = s.client.transaction().await?;
                // FOR SHARE: the application cannot vanish under the insert.
                let exists = tx
                    .query_opt(
                        "SELECT 1 FROM apps WHERE app_id = $1 FOR SHARE",
                        &[&owned_app],
                    )
                    .await?
                    .is_some();
                if !exists {
                    return Ok(Found::NoApp);
                }
                insert_key_in(&tx, &owned_app, &key, key.name.as_deref(), None).await?;
                write_event(&tx, &event, None).await?;
                tx.commit().await?;
                Ok(Found::Yes(()))
            })
        }))?;
        found(outcome, app_id, "")
    }

    fn list_keys(&self, app_id: &AppId) -> Result<Vec<KeyRow>, StoreError> {
        let app_id = app_id.as_str();
        let owned_app = app_id.to_owned();
        let outcome = self.run(Box::new(move |s: &mut Session| {
            Box::pin(async move {
                let tx = s.client.transaction().await?;
                let exists = tx
                    .query_opt("SELECT 1 FROM apps WHERE app_id = $1", &[&owned_app])
                    .await?
                    .is_some();
                if !exists {
                    return Ok(Found::NoApp);
                }
                let rows = tx
                    .query(
                        &format!(
                            "SELECT {KEY_COLUMNS} FROM keys WHERE app_id = $1 ORDER BY created_at, key_id"
                        ),
                        &[&owned_app],
                    )
                    .await?;
                tx.commit().await?;
                Ok(Found::Yes(rows.iter().map(key_row).collect()))
            })
        }))?;
        found(outcome, app_id, "")
    }

    fn key(&self, key_id: &KeyId) -> Result<Option<KeyRow>, StoreError> {
        let key_id = key_id.as_str();
        let key_id = key_id.to_owned();
        self.run(Box::new(move |s: &mut Session| {
            Box::pin(async move { key_in(&s.client, &key_id, false).await })
        }))
    }

    fn rotate_key(
        &self,
        old_key_id: &KeyId,
        new_key: &StoredKey,
        old_expires_at: i64,
        event: &NewAuditEvent,
    ) -> Result<KeyRow, StoreError> {
        let old_key_id = old_key_id.as_str();
        let (old_id, new_key, event) = (
            old_key_id.to_owned(),
            OwnedKey::from(new_key),
            event.clone(),
        );
        let outcome = self.run(Box::new(move |s: &mut Session| {
            Box::pin(async move {
                let tx = s.client.transaction().await?;
                let Some(old) = key_in(&tx, &old_id, true).await? else {
                    return Ok(Found::NoKey);
                };
                if let Some(refusal) = refuse_rotation(&old) {
                    return Ok(Found::Refused(refusal));
                }
                let name = new_key.name.as_deref().or(old.name.as_deref());
                insert_key_in(&tx, &old.app_id, &new_key, name, old.policy.as_deref()).await?;
                tx.execute(
                    "UPDATE keys SET expires_at = $2 WHERE key_id = $1 \
                     AND (expires_at IS NULL OR expires_at > $2)",
                    &[&old_id, &old_expires_at],
                )
                .await?;
                write_event(&tx, &event, Some(&old.app_id)).await?;
                tx.commit().await?;
                Ok(Found::Yes(old))
            })
        }))?;
        found(outcome, "", old_key_id)
    }

    fn revoke_key(
        &self,
        key_id: &KeyId,
        revoked_at: i64,
        event: &NewAuditEvent,
    ) -> Result<KeyRow, StoreError> {
        let key_id = key_id.as_str();
        let (owned_key, event) = (key_id.to_owned(), event.clone());
        let outcome = self.run(Box::new(move |s: &mut Session| {
            Box::pin(async move {
                let tx = s.client.transaction().await?;
                let Some(key) = key_in(&tx, &owned_key, true).await? else {
                    return Ok(Found::NoKey);
                };
                if key.revoked_at.is_some() {
                    return Ok(Found::Yes(key));
                }
                // This UPDATE waits for any nonce batch holding the key's
                // row FOR SHARE (see ledger.rs), and every batch after it
                // sees the revocation: nothing is accepted with the key once
                // this commits.
                tx.execute(
                    "UPDATE keys SET revoked_at = $2 WHERE key_id = $1",
                    &[&owned_key, &revoked_at],
                )
                .await?;
                write_event(&tx, &event, Some(&key.app_id)).await?;
                let after = key_in(&tx, &owned_key, false).await?;
                tx.commit().await?;
                Ok(after.map_or(Found::NoKey, Found::Yes))
            })
        }))?;
        found(outcome, "", key_id)
    }

    fn audit_events(&self, limit: u32) -> Result<Vec<AuditRow>, StoreError> {
        let limit = i64::from(limit);
        self.run(Box::new(move |s: &mut Session| {
            Box::pin(async move {
                let rows = s
                    .client
                    .query(
                        "SELECT id, at, actor, instance, action, app_id, key_id, detail \
                         FROM audit_events ORDER BY id DESC LIMIT $1",
                        &[&limit],
                    )
                    .await?;
                Ok(rows
                    .iter()
                    .map(|r| AuditRow {
                        id: r.get(0),
                        at: r.get(1),
                        actor: r.get(2),
                        instance: r.get(3),
                        action: r.get(4),
                        app_id: r.get(5),
                        key_id: r.get(6),
                        detail: r.get(7),
                    })
                    .collect())
            })
        }))
    }

    fn verifying_key(&self, key_id: &str) -> Result<Option<SealedVerifyingKey>, StoreError> {
        let key_id = key_id.to_owned();
        self.run(Box::new(move |s: &mut Session| {
            Box::pin(async move {
                let statement = s.prepared(VERIFYING_KEY).await?;
                Ok(s.client
                    .query_opt(&statement, &[&key_id])
                    .await?
                    .map(|r| SealedVerifyingKey {
                        app_id: r.get(0),
                        app_name: r.get(1),
                        sealed: Sealed {
                            nonce: r.get(2),
                            ciphertext: r.get(3),
                        },
                        expires_at: r.get(4),
                        revoked_at: r.get(5),
                        policies: policies_at(&r, 6),
                    }))
            })
        }))
    }

    fn policies(&self, key_id: &str) -> Result<Option<StoredPolicies>, StoreError> {
        let key_id = key_id.to_owned();
        self.run(Box::new(move |s: &mut Session| {
            Box::pin(async move {
                let statement = s.prepared(POLICIES_OF_KEY).await?;
                Ok(s.client
                    .query_opt(&statement, &[&key_id])
                    .await?
                    .map(|r| policies_at(&r, 0)))
            })
        }))
    }

    fn keys_version(&self) -> Result<i64, StoreError> {
        self.run(Box::new(|s: &mut Session| {
            Box::pin(async move {
                let statement = s.prepared("SELECT value FROM keys_version").await?;
                Ok(s.client.query_one(&statement, &[]).await?.get(0))
            })
        }))
    }

    fn key_states(&self) -> Result<Vec<KeyState>, StoreError> {
        self.run(Box::new(|s: &mut Session| {
            Box::pin(async move {
                let rows = s
                    .client
                    .query(
                        "SELECT key_id, expires_at, revoked_at, policy_seq FROM keys",
                        &[],
                    )
                    .await?;
                Ok(rows
                    .iter()
                    .map(|r| KeyState {
                        key_id: r.get(0),
                        expires_at: r.get(1),
                        revoked_at: r.get(2),
                        policy_seq: r.get(3),
                    })
                    .collect())
            })
        }))
    }

    /// Purges by the database's clock, not this instance's: see
    /// `purge.rs` for why, and for the margin.
    fn housekeeping(&self, _now: i64, skew_secs: u32) -> Result<(), StoreError> {
        self.purge.tick(skew_secs)
    }

    fn database_time(&self) -> Result<Option<f64>, StoreError> {
        self.purge.database_time().map(Some)
    }

    /// Kept in `meta` as decimal text, like SQLite's.
    fn signed_not_before(&self) -> Result<Option<i64>, StoreError> {
        self.run(Box::new(|s: &mut Session| {
            Box::pin(async move {
                let row = s
                    .client
                    .query_opt(
                        "SELECT value FROM meta WHERE name = 'signed_not_before'",
                        &[],
                    )
                    .await?;
                Ok(row.and_then(|r| {
                    let value: Vec<u8> = r.get(0);
                    std::str::from_utf8(&value).ok()?.parse().ok()
                }))
            })
        }))
    }

    fn set_signed_not_before(&self, at: i64) -> Result<(), StoreError> {
        let value = at.to_string().into_bytes();
        self.run(Box::new(move |s: &mut Session| {
            Box::pin(async move {
                s.client
                    .execute(
                        "INSERT INTO meta(name, value) VALUES ('signed_not_before', $1) \
                         ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                        &[&value],
                    )
                    .await?;
                Ok(())
            })
        }))
    }
}
