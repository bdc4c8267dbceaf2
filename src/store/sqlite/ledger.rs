//! The replay window on SQLite: an append-only log with an in-memory index.
//!
//! Why a log: with a unique index on (key_id, nonce), every row lands on a
//! random B-tree page and every commit writes one WAL page per row. Instead
//! each commit appends one row to `nonce_batches` holding every pair it
//! accepted, one line each, so a commit costs one insert and a page or two
//! however many requests share it. Lookups go to the in-memory front
//! ([`SeenNonces`]), which is this log's index: rebuilt from the log at
//! start-up and kept up to date inside every write transaction.
//!
//! Why it is safe across processes: SQLite lets one write transaction run
//! at a time across every process on the file. Inside it, the ledger first
//! reads every batch appended since its previous transaction, so its set
//! holds every pair committed by anyone, then checks and appends. That
//! catch-up needs ids that only grow: SQLite gives a new row max(id) + 1,
//! and the purge never deletes the newest batch, so the maximum never goes
//! back. No pair can be accepted twice.
//!
//! Inside the same transaction the ledger re-reads each key's revocation,
//! expiry and policy version, so a key revoked (or given a new policy) by
//! another process is refused (or checked again) even before this
//! process's cache has noticed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use rusqlite::{params, Connection, OptionalExtension};

use super::{retry_while_busy, unavailable};
use crate::store::backend::{NonceLedger, PairOutcome, PairToRecord};
use crate::store::{KeyStatus, SeenNonces, StoreError};

/// Expired batches deleted per statement, so a purge never holds the write
/// lock for long; more chunks follow while the last one was full.
const PURGE_CHUNK: usize = 500;
const PURGE_MAX_CHUNKS: usize = 20;

pub(crate) struct SqliteLedger {
    conn: Connection,
    seen: Arc<SeenNonces>,
    /// The highest log id this ledger has read or written.
    last_seen_id: i64,
}

impl SqliteLedger {
    /// `conn` must have no busy handler: the ledger itself retries while
    /// another process holds the write lock, until each call's deadline.
    /// `now`: the window is loaded as of this time (pairs expired by then
    /// are left out).
    pub(crate) fn new(conn: Connection, seen: Arc<SeenNonces>, now: i64) -> Self {
        let mut ledger = SqliteLedger {
            conn,
            seen,
            last_seen_id: 0,
        };
        // Load the window now rather than inside the first request's
        // transaction (one SELECT reads one consistent snapshot); the first
        // write transaction catches up whatever is appended meanwhile.
        if let Err(e) = catch_up_on(&ledger.conn, &ledger.seen, &mut ledger.last_seen_id, now) {
            tracing::warn!(error = %e, "could not preload the nonce window; the first batch will");
        }
        ledger
    }

    /// One transaction for the whole batch. `added` collects what went
    /// into the set, so a failed commit can take it out again.
    fn record_once(
        &mut self,
        pairs: &[PairToRecord],
        now: i64,
        added: &mut Vec<u64>,
    ) -> rusqlite::Result<Vec<PairOutcome>> {
        let tx = WriteTransaction::begin(&self.conn)?;
        catch_up_on(&tx, &self.seen, &mut self.last_seen_id, now)?;
        let mut outcomes = Vec::with_capacity(pairs.len());
        let mut entries = String::new();
        let mut latest_expiry = i64::MIN;
        {
            // A batch is usually one or a few keys: read each key's state
            // once per transaction, not once per row.
            let mut key_states: HashMap<&str, Option<(KeyStatus, i64)>> = HashMap::new();
            let mut key_state = tx.prepare_cached(
                "SELECT expires_at, revoked_at, policy_seq FROM keys WHERE key_id = ?1",
            )?;
            for pair in pairs {
                if !key_states.contains_key(&*pair.key_id) {
                    let state = key_state
                        .query_row([&*pair.key_id], |r| {
                            Ok((KeyStatus::at(now, r.get(0)?, r.get(1)?), r.get(2)?))
                        })
                        .optional()?;
                    key_states.insert(&pair.key_id, state);
                }
                let outcome = PairOutcome::refused_by_key(key_states[&*pair.key_id], pair)
                    .unwrap_or_else(|| {
                        if self.seen.insert(pair.hash, pair.expires_at) {
                            added.push(pair.hash);
                            encode_entry(&mut entries, &pair.key_id, &pair.nonce, pair.expires_at);
                            latest_expiry = latest_expiry.max(pair.expires_at);
                            PairOutcome::Recorded
                        } else {
                            PairOutcome::Replayed
                        }
                    });
                outcomes.push(outcome);
            }
            if !entries.is_empty() {
                tx.prepare_cached(
                    "INSERT INTO nonce_batches(expires_at, entries) VALUES (?1, ?2)",
                )?
                .execute(params![latest_expiry, entries])?;
            }
        }
        let last_id = tx.last_insert_rowid();
        tx.commit()?;
        if !entries.is_empty() {
            self.last_seen_id = self.last_seen_id.max(last_id);
        }
        Ok(outcomes)
    }

    /// Deletes expired batches from the oldest end of the log, a chunk at a
    /// time so the write lock is never held for long. The newest batch is
    /// never deleted (it keeps ids growing: see the module comment); once
    /// expired, its pairs are blanked instead. A batch signed ahead of the
    /// clock may outlive younger ones; it stays until it expires, and the
    /// chunk moves on past it next time.
    fn purge_once(&mut self, now: i64) -> rusqlite::Result<()> {
        let mut delete = self.conn.prepare_cached(
            "DELETE FROM nonce_batches WHERE expires_at < ?1 AND id IN \
             (SELECT id FROM nonce_batches ORDER BY id LIMIT ?2) \
             AND id < (SELECT max(id) FROM nonce_batches)",
        )?;
        for _ in 0..PURGE_MAX_CHUNKS {
            if delete.execute(params![now, PURGE_CHUNK as i64])? == 0 {
                break;
            }
        }
        self.conn
            .prepare_cached(
                "UPDATE nonce_batches SET entries = '' WHERE expires_at < ?1 AND entries != '' \
                 AND id = (SELECT max(id) FROM nonce_batches)",
            )?
            .execute([now])?;
        Ok(())
    }
}

impl NonceLedger for SqliteLedger {
    fn record(
        &mut self,
        pairs: &[PairToRecord],
        now: i64,
        deadline: Instant,
    ) -> Result<Vec<PairOutcome>, StoreError> {
        retry_while_busy(deadline, || {
            let mut added = Vec::new();
            let result = self.record_once(pairs, now, &mut added);
            if result.is_err() {
                // Nothing was committed: the set must not remember it.
                for hash in added {
                    self.seen.forget(hash);
                }
            }
            result
        })
        .map_err(unavailable)
    }

    fn touch_keys(
        &mut self,
        used: &[(Arc<str>, i64)],
        deadline: Instant,
    ) -> Result<(), StoreError> {
        retry_while_busy(deadline, || {
            let tx = WriteTransaction::begin(&self.conn)?;
            {
                let mut touch = tx.prepare_cached(
                    "UPDATE keys SET last_used_at = ?2 WHERE key_id = ?1 \
                     AND (last_used_at IS NULL OR last_used_at < ?2)",
                )?;
                for (key_id, used_at) in used {
                    touch.execute(params![&**key_id, used_at])?;
                }
            }
            tx.commit()
        })
        .map_err(unavailable)
    }

    fn purge(&mut self, now: i64, deadline: Instant) -> Result<(), StoreError> {
        retry_while_busy(deadline, || self.purge_once(now)).map_err(unavailable)
    }
}

/// Adds every pair appended since `last_seen_id` (by this or another
/// process) to the set.
fn catch_up_on(
    conn: &Connection,
    seen: &SeenNonces,
    last_seen_id: &mut i64,
    now: i64,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, expires_at, entries FROM nonce_batches WHERE id > ?1 ORDER BY id",
    )?;
    let mut rows = stmt.query([*last_seen_id])?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let latest_expiry: i64 = row.get(1)?;
        if latest_expiry >= now {
            for (key_id, nonce, expires_at) in decode_entries(row.get_ref(2)?.as_str()?) {
                if expires_at >= now {
                    let hash = seen.hasher.hash(key_id, nonce);
                    seen.insert(hash, expires_at);
                }
            }
        }
        *last_seen_id = id;
    }
    Ok(())
}

/// `BEGIN IMMEDIATE` ... `COMMIT` with both statements from the connection's
/// statement cache. rusqlite's `Transaction` parses them again for every
/// transaction, which was a twentieth of the writer's time under load
/// (perf, benches/wrk). Dropped without `commit`, it rolls back.
struct WriteTransaction<'c> {
    conn: &'c Connection,
    committed: bool,
}

impl<'c> WriteTransaction<'c> {
    fn begin(conn: &'c Connection) -> rusqlite::Result<Self> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(WriteTransaction {
            conn,
            committed: false,
        })
    }

    fn commit(mut self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        self.committed = true;
        Ok(())
    }
}

impl std::ops::Deref for WriteTransaction<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for WriteTransaction<'_> {
    fn drop(&mut self) {
        // A failed statement or COMMIT (e.g. SQLITE_BUSY) leaves the
        // transaction open; nothing of it may stay.
        if !self.committed && !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::error!(error = %e, "nonce writer could not roll back");
            }
        }
    }
}

/// One line per pair: `key_id TAB nonce TAB expires_at LF`. Neither a key
/// id nor a nonce can hold a tab or a line feed (KG1 nonces are
/// `[A-Za-z0-9_-]`, RFC 9421 nonces are structured-field strings, which
/// allow printable ASCII only), and the text stays readable in the sqlite3
/// shell.
fn encode_entry(entries: &mut String, key_id: &str, nonce: &str, expires_at: i64) {
    use std::fmt::Write;
    debug_assert!(!key_id.contains(['\t', '\n']) && !nonce.contains(['\t', '\n']));
    entries.push_str(key_id);
    entries.push('\t');
    entries.push_str(nonce);
    entries.push('\t');
    let _ = write!(entries, "{expires_at}");
    entries.push('\n');
}

/// The pairs of one batch; a malformed line (never written by keygate) is
/// skipped rather than trusted.
fn decode_entries(entries: &str) -> impl Iterator<Item = (&str, &str, i64)> {
    entries.lines().filter_map(|line| {
        let mut fields = line.split('\t');
        let key_id = fields.next()?;
        let nonce = fields.next()?;
        let expires_at = fields.next()?.parse().ok()?;
        fields
            .next()
            .is_none()
            .then_some((key_id, nonce, expires_at))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> i64 {
        crate::clock::Clock::system().now()
    }

    #[test]
    fn a_write_transaction_rolls_back_unless_committed() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t(x)").unwrap();
        let count = || -> i64 {
            conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap()
        };
        {
            let tx = WriteTransaction::begin(&conn).unwrap();
            tx.execute("INSERT INTO t VALUES (1)", []).unwrap();
        }
        assert_eq!(count(), 0);
        assert!(conn.is_autocommit(), "the dropped transaction is closed");
        let tx = WriteTransaction::begin(&conn).unwrap();
        tx.execute("INSERT INTO t VALUES (1)", []).unwrap();
        tx.commit().unwrap();
        assert_eq!(count(), 1);
        // The cached statements serve the next transaction too.
        let tx = WriteTransaction::begin(&conn).unwrap();
        tx.execute("INSERT INTO t VALUES (2)", []).unwrap();
        tx.commit().unwrap();
        assert_eq!(count(), 2);
    }

    #[test]
    fn entries_round_trip_and_malformed_lines_are_skipped() {
        let mut text = String::new();
        encode_entry(&mut text, "pk_a", "nonce-0123456789abcdef", 1_700_000_301);
        encode_entry(&mut text, "pk_b", "a nonce with \"quotes\" and spaces", -5);
        assert_eq!(
            decode_entries(&text).collect::<Vec<_>>(),
            [
                ("pk_a", "nonce-0123456789abcdef", 1_700_000_301),
                ("pk_b", "a nonce with \"quotes\" and spaces", -5),
            ]
        );
        let damaged = "pk_a\tn1\n\npk_a\tn2\tsoon\npk_a\tn3\t7\textra\npk_a\tn4\t9\n";
        assert_eq!(
            decode_entries(damaged).collect::<Vec<_>>(),
            [("pk_a", "n4", 9)]
        );
    }

    fn in_two_seconds() -> Instant {
        Instant::now() + std::time::Duration::from_secs(2)
    }

    fn ledger_on(path: &std::path::Path) -> SqliteLedger {
        let mut conn = Connection::open(path).unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        conn.execute_batch(
            "INSERT INTO apps(app_id, name, created_at) VALUES ('app', 'test', 0);
             INSERT INTO keys(key_id, app_id, secret_nonce, secret_ciphertext, created_at)
                 VALUES ('pk_a', 'app', x'00', x'00', 0);",
        )
        .unwrap();
        SqliteLedger::new(conn, Arc::new(SeenNonces::new(300, now())), now())
    }

    fn record(ledger: &mut SqliteLedger, nonces: &[&str], expires_at: i64) -> Vec<PairOutcome> {
        let pairs: Vec<_> = nonces
            .iter()
            .map(|n| PairToRecord {
                key_id: Arc::from("pk_a"),
                nonce: Box::from(*n),
                expires_at,
                hash: ledger.seen.hasher.hash("pk_a", n),
                deadline: in_two_seconds(),
                policy_seq: 0,
            })
            .collect();
        ledger.record(&pairs, now(), in_two_seconds()).unwrap()
    }

    /// The catch-up relies on ids that never go back, even when a purge
    /// expires everything: the newest batch stays (blanked), so the next
    /// batch gets a higher id and another process's ledger still reads it.
    #[test]
    fn purge_keeps_ids_growing_and_blanks_the_newest_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("window.db");
        let mut ours = ledger_on(&path);
        let mut theirs = SqliteLedger::new(
            Connection::open(&path).unwrap(),
            Arc::new(SeenNonces::new(300, now())),
            now(),
        );
        let soon = now() + 60;
        let recorded = [PairOutcome::Recorded];
        assert_eq!(record(&mut ours, &["n1", "n2"], soon), [recorded[0]; 2]);
        assert_eq!(record(&mut ours, &["n3"], soon), recorded);
        let last_before: i64 = ours
            .conn
            .query_row("SELECT max(id) FROM nonce_batches", [], |r| r.get(0))
            .unwrap();

        ours.purge(soon + 1, in_two_seconds()).unwrap();
        let rows: Vec<(i64, String)> = ours
            .conn
            .prepare("SELECT id, entries FROM nonce_batches")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows, [(last_before, String::new())]);

        assert_eq!(record(&mut ours, &["n4"], soon), recorded);
        // The other ledger has read nothing yet: it must catch up n4, which
        // came after the purge, before it decides.
        assert_eq!(
            record(&mut theirs, &["n4", "n5"], soon),
            [PairOutcome::Replayed, PairOutcome::Recorded]
        );
        let last_after: i64 = ours
            .conn
            .query_row("SELECT max(id) FROM nonce_batches", [], |r| r.get(0))
            .unwrap();
        assert!(last_after > last_before);
    }
}
