//! The replay window: one writer thread owns the write connection and
//! records (key_id, nonce) pairs in shared transactions.
//!
//! Why one thread and shared commits: a commit is the expensive part
//! (SQLite in WAL mode does ~24k single-row commits/s here, ~60k rows/s
//! when a thousand rows share one). Requests queue their pair with a reply
//! channel; the writer takes everything queued (up to `MAX_BATCH`), inserts
//! it in one transaction and answers each request only after the commit.
//! A request is therefore never accepted before its nonce is durable.
//!
//! Why it is safe across processes: the primary key (key_id, nonce) makes
//! the insert-if-absent atomic in SQLite itself, so two keygate processes on
//! one file can never both record the same pair.
//!
//! Inside the same transaction the writer re-reads the key's revocation and
//! expiry, so a key revoked by another process is refused even before this
//! process's cache has noticed.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use crate::clock;
use crate::error::Error;

/// Most pairs recorded in one transaction: large enough to share commits
/// under load, small enough that one transaction holds the lock briefly.
const MAX_BATCH: usize = 1024;
/// Requests that may wait for the writer; beyond it they wait up to
/// `QUEUE_WAIT`, then are refused with 503 rather than queued without bound.
const QUEUE_CAPACITY: usize = 8192;
const QUEUE_WAIT: Duration = Duration::from_secs(2);
/// Expired rows deleted per statement, so a purge never holds the write lock
/// for long; more chunks follow while the last one was full.
const PURGE_CHUNK: usize = 5000;
const PURGE_MAX_CHUNKS: usize = 20;

type Reply = oneshot::Sender<Result<(), Error>>;

enum Job {
    Record {
        key_id: Arc<str>,
        nonce: Box<str>,
        expires_at: i64,
        reply: Reply,
    },
    Purge {
        now: i64,
    },
    TouchKeys(Vec<(Arc<str>, i64)>),
}

pub struct NonceWindow {
    jobs: mpsc::Sender<Job>,
}

impl NonceWindow {
    pub(crate) fn start(conn: Connection) -> NonceWindow {
        let (jobs, queue) = mpsc::channel(QUEUE_CAPACITY);
        std::thread::Builder::new()
            .name("keygate-nonce-writer".into())
            .spawn(move || Writer { conn }.run(queue))
            .expect("spawn nonce writer thread");
        NonceWindow { jobs }
    }

    /// Resolves once the pair is committed (`Ok`), or with the reason it
    /// was not: `NonceReused`, `KeyRevoked`, `KeyExpired` or `Unavailable`.
    pub async fn record(
        &self,
        key_id: Arc<str>,
        nonce: &str,
        expires_at: i64,
    ) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Record {
            key_id,
            nonce: nonce.into(),
            expires_at,
            reply,
        };
        self.jobs.send_timeout(job, QUEUE_WAIT).await.map_err(|e| {
            Error::Unavailable(match e {
                mpsc::error::SendTimeoutError::Timeout(_) => "nonce writer queue full".into(),
                mpsc::error::SendTimeoutError::Closed(_) => "nonce writer stopped".into(),
            })
        })?;
        answer
            .await
            .unwrap_or_else(|_| Err(Error::Unavailable("nonce writer stopped".into())))
    }

    pub(crate) fn purge_expired(&self, now: i64) {
        // try_send: housekeeping must never wait behind a full queue; the
        // next tick purges instead.
        let _ = self.jobs.try_send(Job::Purge { now });
    }

    pub(crate) fn touch_keys(&self, used: Vec<(Arc<str>, i64)>) {
        let _ = self.jobs.try_send(Job::TouchKeys(used));
    }
}

struct Writer {
    conn: Connection,
}

impl Writer {
    fn run(mut self, mut queue: mpsc::Receiver<Job>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = queue.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.process(&mut batch);
        }
    }

    fn process(&mut self, batch: &mut Vec<Job>) {
        let mut records = Vec::with_capacity(batch.len());
        let mut purge_at = None;
        let mut touches = Vec::new();
        for job in batch.drain(..) {
            match job {
                Job::Record {
                    key_id,
                    nonce,
                    expires_at,
                    reply,
                } => records.push((key_id, nonce, expires_at, reply)),
                Job::Purge { now } => purge_at = Some(now),
                Job::TouchKeys(used) => touches.extend(used),
            }
        }

        if !records.is_empty() || !touches.is_empty() {
            match self.record_batch(&records, &touches) {
                Ok(outcomes) => {
                    for ((.., reply), outcome) in records.into_iter().zip(outcomes) {
                        let _ = reply.send(outcome);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, rows = records.len(), "nonce window cannot record; refusing these requests (fail closed)");
                    for (.., reply) in records {
                        let _ = reply.send(Err(Error::Unavailable(e.to_string())));
                    }
                }
            }
        }
        if let Some(now) = purge_at {
            if let Err(e) = self.purge(now) {
                tracing::warn!(error = %e, "nonce purge failed; will retry");
            }
        }
    }

    /// One transaction for the whole batch. The outcome of each record is
    /// only meaningful if the commit succeeds, which is why it is returned
    /// rather than sent from inside the transaction.
    fn record_batch(
        &mut self,
        records: &[(Arc<str>, Box<str>, i64, Reply)],
        touches: &[(Arc<str>, i64)],
    ) -> rusqlite::Result<Vec<Result<(), Error>>> {
        let now = clock::now();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut outcomes = Vec::with_capacity(records.len());
        {
            let mut key_state =
                tx.prepare_cached("SELECT expires_at, revoked_at FROM keys WHERE key_id = ?1")?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO nonces(key_id, nonce, expires_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            )?;
            for (key_id, nonce, expires_at, _) in records {
                let state: Option<(Option<i64>, Option<i64>)> = key_state
                    .query_row([&**key_id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                let outcome = match state {
                    None => Err(Error::UnknownKey),
                    Some((_, Some(_))) => Err(Error::KeyRevoked),
                    Some((Some(expires), None)) if now >= expires => Err(Error::KeyExpired),
                    Some(_) => {
                        if insert.execute(params![&**key_id, &**nonce, expires_at])? == 1 {
                            Ok(())
                        } else {
                            Err(Error::NonceReused)
                        }
                    }
                };
                outcomes.push(outcome);
            }
            let mut touch = tx.prepare_cached(
                "UPDATE keys SET last_used_at = ?2 WHERE key_id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
            )?;
            for (key_id, used_at) in touches {
                touch.execute(params![&**key_id, used_at])?;
            }
        }
        tx.commit()?;
        Ok(outcomes)
    }

    fn purge(&mut self, now: i64) -> rusqlite::Result<()> {
        let mut stmt = self.conn.prepare_cached(
            "DELETE FROM nonces WHERE (key_id, nonce) IN \
             (SELECT key_id, nonce FROM nonces WHERE expires_at < ?1 LIMIT ?2)",
        )?;
        for _ in 0..PURGE_MAX_CHUNKS {
            if stmt.execute(params![now, PURGE_CHUNK as i64])? < PURGE_CHUNK {
                break;
            }
        }
        Ok(())
    }
}
