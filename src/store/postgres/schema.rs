//! Applies `schema-postgres.sql` at start-up: under a transaction-scoped
//! advisory lock, so that instances starting at once on a new database
//! neither race nor apply a version twice; all pending versions in one
//! transaction.

use super::{PgConnection, Session};
use crate::store::migrations;

const SCHEMA: &str = include_str!("../../../schema-postgres.sql");

/// The advisory lock's key: any fixed number; this one spells "keygate".
const MIGRATION_LOCK: i64 = 0x006b_6579_6761_7465;

pub(super) fn migrate(conn: &PgConnection) -> Result<(), String> {
    let outcome = conn
        .run(Box::new(|session: &mut Session| {
            Box::pin(async move {
                let tx = session.client.transaction().await?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                    .await?;
                tx.batch_execute(
                    "CREATE TABLE IF NOT EXISTS keygate_schema_version (version bigint NOT NULL)",
                )
                .await?;
                let current: i64 = tx
                    .query_opt("SELECT version FROM keygate_schema_version", &[])
                    .await?
                    .map(|row| row.get(0))
                    .unwrap_or(0);
                let mut reached = current;
                for (version, sql) in migrations::versions(SCHEMA) {
                    if version > reached {
                        tx.batch_execute(&sql).await?;
                        reached = version;
                    }
                }
                if reached != current {
                    tx.execute("DELETE FROM keygate_schema_version", &[])
                        .await?;
                    tx.execute(
                        "INSERT INTO keygate_schema_version(version) VALUES ($1)",
                        &[&reached],
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok(current)
            })
        }))
        .map_err(|e| format!("schema migration: {e}"))?;
    migrations::check_not_newer(outcome, SCHEMA)
}
