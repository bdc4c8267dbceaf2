//! Applies `schema.sql` at start-up (its `-- version N` blocks: see
//! `store::migrations`). The database's `PRAGMA user_version` says which
//! version it has, and each newer block runs in its own transaction, so a
//! crash mid-upgrade leaves the database at a whole version.

use rusqlite::{Connection, TransactionBehavior};

pub(crate) const SCHEMA: &str = include_str!("../../../schema.sql");

fn versions() -> Vec<(i64, String)> {
    crate::store::migrations::versions(SCHEMA)
}

/// The newest schema version this build knows.
pub fn latest_version() -> i64 {
    crate::store::migrations::latest_version(SCHEMA)
}

pub fn migrate(conn: &mut Connection) -> Result<(), String> {
    for (version, sql) in versions() {
        // IMMEDIATE: two processes starting on a new file at once must not
        // both apply the same version; the second waits, then sees it done.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| format!("cannot start schema migration: {e}"))?;
        let current: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| format!("cannot read schema version: {e}"))?;
        if current >= version {
            continue;
        }
        tx.execute_batch(&sql)
            .map_err(|e| format!("schema version {version} failed: {e}"))?;
        tx.pragma_update(None, "user_version", version)
            .map_err(|e| format!("cannot record schema version {version}: {e}"))?;
        tx.commit()
            .map_err(|e| format!("cannot commit schema version {version}: {e}"))?;
    }
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    crate::store::migrations::check_not_newer(current, SCHEMA)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_once_and_is_idempotent() {
        assert!(latest_version() >= 1);
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, latest_version());
    }

    /// A version-1 database keeps its replay window across the upgrade.
    #[test]
    fn version_2_carries_the_version_1_nonce_log_over() {
        let mut conn = Connection::open_in_memory().unwrap();
        let (version, sql) = versions().remove(0);
        assert_eq!(version, 1);
        conn.execute_batch(&sql).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(
            "INSERT INTO nonce_log(key_id, nonce, expires_at) VALUES
                 ('pk_a', 'nonce-one-0123456789', 1700000301),
                 ('pk_b', 'nonce-two-0123456789', 1700000302);",
        )
        .unwrap();

        migrate(&mut conn).unwrap();
        let entries: Vec<String> = conn
            .prepare("SELECT entries FROM nonce_batches ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            entries,
            [
                "pk_a\tnonce-one-0123456789\t1700000301\n",
                "pk_b\tnonce-two-0123456789\t1700000302\n"
            ]
        );
        let old_table: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'nonce_log'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(old_table, 0);
    }
}
