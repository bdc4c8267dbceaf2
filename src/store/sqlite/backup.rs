//! `keygate backup` and `keygate restore` (CONTRACT.md section 7), for the
//! SQLite database.
//!
//! A backup is `VACUUM INTO`: one consistent snapshot of the whole file
//! (applications, keys, the nonce log, the audit log), taken in a read
//! transaction while keygate keeps serving, written to a new file with
//! mode 0600. Secrets in it are sealed like in the database: keep the
//! master key file with it, but not next to it.
//!
//! A restore puts such a copy in place of the database, and records the
//! time it happened (`meta.signed_not_before`). The copy's replay window
//! is older than the requests accepted since the backup, so from then on
//! keygate refuses every signature made before the restore
//! (`timestamp_out_of_range`): nothing signed before it can be replayed.
//! A restore needs keygate stopped: it refuses a database another process
//! has open.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::{schema, Settings};
use crate::store::Durability;

/// Copies the database at `db` to `to`, which must not exist yet.
pub fn backup(db: &Path, to: &Path) -> Result<(), String> {
    if !db.exists() {
        return Err(format!("{} does not exist", db.display()));
    }
    if to.exists() {
        return Err(format!(
            "{} exists already: back up to a new file",
            to.display()
        ));
    }
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("cannot open {}: {e}", db.display()))?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    // Created empty with mode 0600 first, so the copy is never readable by
    // others, not even for a moment.
    create_private(to)?;
    std::fs::remove_file(to).map_err(|e| e.to_string())?;
    let target = to.to_str().ok_or("the backup path is not UTF-8")?;
    conn.execute("VACUUM INTO ?1", [target])
        .map_err(|e| format!("cannot copy {} to {}: {e}", db.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn create_private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(drop)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

/// Puts the backup `from` in place of the database `db` and records `now`
/// as the earliest signing time accepted from then on.
pub fn restore(db: &Path, from: &Path, now: i64) -> Result<(), String> {
    check_backup(from)?;
    if db.exists() {
        refuse_if_in_use(db)?;
    }
    let staged = sibling(db, "restoring");
    let _ = std::fs::remove_file(&staged);
    backup(from, &staged)?;
    {
        let mut conn = super::open_connection(
            &staged,
            Settings {
                durability: Durability::Full,
                busy_timeout: Duration::from_secs(5),
            },
        )
        .map_err(|e| e.to_string())?;
        schema::migrate(&mut conn)?;
        set_signed_not_before(&conn, now).map_err(|e| e.to_string())?;
        conn.pragma_update(None, "journal_mode", "DELETE")
            .map_err(|e| e.to_string())?;
    }
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(PathBuf::from(format!("{}{suffix}", db.display())));
    }
    std::fs::rename(&staged, db).map_err(|e| format!("cannot replace {}: {e}", db.display()))?;
    Ok(())
}

/// A backup must be a keygate database this release can read.
fn check_backup(from: &Path) -> Result<(), String> {
    let conn = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("cannot open {}: {e}", from.display()))?;
    let not_keygate =
        |e: rusqlite::Error| format!("{} is not a keygate database: {e}", from.display());
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(not_keygate)?;
    if ok != "ok" {
        return Err(format!("{} is damaged: {ok}", from.display()));
    }
    conn.query_row("SELECT count(*) FROM keys", [], |r| r.get::<_, i64>(0))
        .map_err(not_keygate)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(not_keygate)?;
    crate::store::migrations::check_not_newer(version, schema::SCHEMA)
}

/// A database another process has open (a running keygate) must not be
/// replaced under it: its connections would go on writing to the old file.
/// An exclusive lock on the database and its WAL index can be had only
/// when no other connection is open.
fn refuse_if_in_use(db: &Path) -> Result<(), String> {
    let conn = Connection::open(db).map_err(|e| e.to_string())?;
    let busy = |_| {
        format!(
            "{} is in use (is keygate running on it?): stop it before restoring",
            db.display()
        )
    };
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
        .map_err(|e| e.to_string())?;
    conn.execute_batch("BEGIN EXCLUSIVE; COMMIT;")
        .map_err(busy)?;
    Ok(())
}

fn sibling(db: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}.{suffix}", db.display()))
}

/// Refuses every signature made before `at` (see the module comment).
pub fn set_signed_not_before(conn: &Connection, at: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta(name, value) VALUES ('signed_not_before', ?1) \
         ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        [at],
    )
    .map(drop)
}

/// The earliest signing time accepted, after a restore.
pub fn signed_not_before(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    use rusqlite::OptionalExtension;
    conn.query_row(
        "SELECT value FROM meta WHERE name = 'signed_not_before'",
        [],
        |r| r.get(0),
    )
    .optional()
}
