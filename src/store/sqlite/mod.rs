//! The embedded backend: one SQLite file, no setup. Several keygate
//! processes on one machine may share the file (WAL, one writer at a time
//! across processes); it must never sit on a network filesystem.

pub mod backup;
mod catalog;
mod ledger;
pub mod schema;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;

pub(crate) use catalog::SqliteCatalog;
pub(crate) use ledger::SqliteLedger;

use super::{Durability, SeenNonces, StoreError};

/// The nonce writer leaves WAL checkpoints to the maintenance thread, which
/// runs one every tick on its own connection (see `SqliteCatalog::
/// housekeeping`). A checkpoint copies pages into the database file and
/// syncs it; run by the writer (SQLite's default, every 1000 pages) it
/// stalled every signed request waiting on that commit, which showed in
/// the p99. The writer still checkpoints past this many pages, as a
/// backstop should the maintenance thread fall behind.
const WRITER_AUTOCHECKPOINT_PAGES: i64 = 20_000;

pub(crate) fn unavailable(err: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(err.to_string())
}

/// The settings every connection to the file gets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub durability: Durability,
    pub busy_timeout: Duration,
}

pub(crate) fn open_connection(path: &Path, settings: Settings) -> rusqlite::Result<Connection> {
    let is_new = !path.exists();
    let conn = Connection::open(path)?;
    if is_new {
        // Key ciphertexts and partners' traffic patterns are nobody else's
        // business; SQLite gives the -wal and -shm files the same mode.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    conn.busy_timeout(settings.busy_timeout)?;
    // WAL lets verifiers read while the nonce writer commits, and lets
    // several keygate processes share the file.
    enable_wal(&conn, settings.busy_timeout)?;
    let synchronous = match settings.durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// The catalog, schema applied. Used by the CLI and by the server.
pub(crate) fn open_catalog(path: &Path, settings: Settings) -> Result<Arc<SqliteCatalog>, String> {
    let db = path.display();
    let mut conn =
        open_connection(path, settings).map_err(|e| format!("cannot open database {db}: {e}"))?;
    schema::migrate(&mut conn).map_err(|e| format!("database {db}: {e}"))?;
    Ok(Arc::new(SqliteCatalog::new(conn, path, settings)))
}

/// The nonce ledger on a connection of its own, for the writer thread.
pub(crate) fn open_ledger(
    path: &Path,
    settings: Settings,
    seen: Arc<SeenNonces>,
    now: i64,
) -> Result<SqliteLedger, String> {
    let configure = |e: rusqlite::Error| format!("cannot configure {}: {e}", path.display());
    let conn = open_connection(path, settings)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    conn.pragma_update(None, "wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES)
        .map_err(configure)?;
    // The ledger waits for the write lock its own way (see
    // `retry_while_busy`), not with SQLite's handler.
    conn.busy_timeout(Duration::ZERO).map_err(configure)?;
    Ok(SqliteLedger::new(conn, seen, now))
}

/// Switching a new file to WAL does not wait on the busy timeout: when
/// several processes (two servers, a server and the CLI) open the same new
/// file at once, the switch fails at once with "database is locked". The
/// mode belongs to the file, so retry until one of them has switched it.
fn enable_wal(conn: &Connection, timeout: Duration) -> rusqlite::Result<()> {
    retry_while_busy(Instant::now() + timeout, || {
        conn.pragma_update(None, "journal_mode", "WAL")
    })
}

/// Runs `attempt` again while SQLite answers "database is locked" (another
/// process holds the write lock), until `deadline`, pausing 50 µs and
/// doubling up to 1 ms. SQLite's own busy handler sleeps 1, 2, 5, 10, ...
/// ms, ages next to a commit that holds the lock for tens of microseconds:
/// with two keygate processes on one file it cost a fifth of their
/// throughput and put their p90 at 2–6 ms (BENCHMARKS.md). Pausing 50 µs
/// every time, without doubling, was worse still.
pub(crate) fn retry_while_busy<T>(
    deadline: Instant,
    mut attempt: impl FnMut() -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    const FIRST_PAUSE: Duration = Duration::from_micros(50);
    const LONGEST_PAUSE: Duration = Duration::from_millis(1);
    let mut pause = FIRST_PAUSE;
    loop {
        match attempt() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && Instant::now() + pause < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(LONGEST_PAUSE);
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_is_retried_until_the_timeout_other_errors_are_not() {
        fn busy<T>() -> rusqlite::Result<T> {
            Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                None,
            ))
        }
        let mut attempts = 0;
        let in_five_seconds = || Instant::now() + Duration::from_secs(5);
        let result = retry_while_busy(in_five_seconds(), || {
            attempts += 1;
            if attempts < 4 {
                busy()
            } else {
                Ok(attempts)
            }
        });
        assert_eq!(result.unwrap(), 4);

        let mut attempts = 0;
        let result = retry_while_busy(in_five_seconds(), || {
            attempts += 1;
            Err::<(), _>(rusqlite::Error::InvalidQuery)
        });
        assert!(matches!(result, Err(rusqlite::Error::InvalidQuery)));
        assert_eq!(attempts, 1, "only busy is worth waiting for");

        let mut attempts = 0;
        let result = retry_while_busy(Instant::now() + Duration::from_millis(200), || {
            attempts += 1;
            busy::<()>()
        });
        assert!(matches!(
            result,
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DatabaseBusy
        ));
        assert!(attempts > 3, "{attempts} attempts in 200 ms");
    }

    /// Two servers and a CLI started together on a new file all open it,
    /// rather than one failing with "database is locked".
    #[test]
    fn concurrent_opens_of_a_new_file_all_succeed() {
        let settings = Settings {
            durability: Durability::Normal,
            busy_timeout: Duration::from_secs(2),
        };
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("new.db");
            let start = std::sync::Barrier::new(6);
            std::thread::scope(|s| {
                for _ in 0..6 {
                    s.spawn(|| {
                        start.wait();
                        let mut conn = open_connection(&path, settings)
                            .unwrap_or_else(|e| panic!("round {round}: {e}"));
                        schema::migrate(&mut conn).unwrap_or_else(|e| panic!("round {round}: {e}"));
                    });
                }
            });
        }
    }
}
