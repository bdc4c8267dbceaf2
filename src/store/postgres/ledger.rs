//! The replay window on PostgreSQL: one statement per batch of pairs, and
//! so one round trip and one synchronous commit however many requests
//! share it.
//!
//! The statement locks the batch's key rows FOR SHARE and reads their
//! revocation, expiry and policy version, and inserts the pairs of usable
//! keys checked against the current policy. The primary key (key_ref,
//! nonce) decides which pairs are new across every instance: a first,
//! plain insert records them all or fails on one already there, and only
//! then does a second statement insert with ON CONFLICT DO NOTHING and
//! return the pairs it inserted. A pair's row names its key by
//! `keys.key_ref`, a small integer (schema version 3), which the key
//! states map back to key ids.
//!
//! FOR SHARE orders each batch against revocations: a revocation's UPDATE
//! waits for batches that hold the row, and a batch that starts after the
//! revocation waits for it, then reads the revoked row. So once a
//! revocation has committed, no instance accepts the key.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use tokio_postgres::error::SqlState;

use super::{PgConnection, Session};
use crate::store::backend::{NonceLedger, PairOutcome, PairToRecord};
use crate::store::{KeyStatus, StoreError};

/// The batch statement: its insert, then what it answers (a macro because
/// both statements must be `&'static str` constants, which
/// `Session::prepared` keys its cache by).
macro_rules! record_batch {
    ($insert_ends:literal, $answer:literal) => {
        concat!(
            "WITH batch AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $6::int8[])
        AS b(key_id, nonce, expires_at, policy_seq)
), key_state AS (
    SELECT key_id, key_ref, expires_at, revoked_at, policy_seq FROM keys
    WHERE key_id = ANY($4::text[]) FOR SHARE
), recorded AS (
    INSERT INTO nonces (key_ref, nonce, expires_at)
    SELECT k.key_ref, b.nonce, b.expires_at
    FROM batch b JOIN key_state k ON k.key_id = b.key_id
    WHERE k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > $5)
        AND k.policy_seq = b.policy_seq
    ",
            $insert_ends,
            "
)
SELECT key_ref, key_id, NULL::text, expires_at, revoked_at, policy_seq FROM key_state",
            $answer
        )
    };
}

/// The statement every batch runs first: a plain insert, answering only
/// the key states. Without ON CONFLICT, the insert skips the
/// speculative-insertion protocol, which cost a sixth of PostgreSQL's CPU
/// per request (BENCHMARKS.md, round 7). A batch holding a pair that is
/// already recorded fails whole with a unique violation, having recorded
/// nothing, and is run again as `RECORD_BATCH`. So when it succeeds, every
/// pair of a usable key was new and is recorded, and PostgreSQL need not
/// send the pairs back (BENCHMARKS.md, round 9). Replays rarely get this
/// far (the in-memory front refuses those it knows): the second statement
/// is the exception.
const RECORD_NEW_BATCH: &str = record_batch!("", "");

/// The same with ON CONFLICT DO NOTHING, answering the inserted pairs too:
/// those are the new ones.
const RECORD_BATCH: &str = record_batch!(
    "ON CONFLICT (key_ref, nonce) DO NOTHING RETURNING key_ref, nonce",
    "
UNION ALL
SELECT key_ref, NULL, nonce, NULL, NULL, NULL FROM recorded"
);

const TOUCH_KEYS: &str = "\
UPDATE keys SET last_used_at = u.used_at
FROM unnest($1::text[], $2::int8[]) AS u(key_id, used_at)
WHERE keys.key_id = u.key_id AND (keys.last_used_at IS NULL OR keys.last_used_at < u.used_at)";

pub(crate) struct PgLedger {
    conn: PgConnection,
}

impl PgLedger {
    pub(super) fn new(conn: PgConnection) -> Self {
        PgLedger { conn }
    }
}

/// What the statement answered: each key's state, and the pairs inserted.
#[derive(Default)]
struct Answer {
    /// Each key's state, policy version and key_ref, by key id.
    keys: HashMap<String, (KeyStatus, i64, i64)>,
    /// Every pair of a usable key was inserted (the first statement).
    all_new: bool,
    /// Otherwise, the nonces inserted, by key_ref.
    recorded: HashMap<i64, HashSet<String>>,
}

impl NonceLedger for PgLedger {
    fn record(
        &mut self,
        pairs: &[PairToRecord],
        now: i64,
        deadline: Instant,
    ) -> Result<Vec<PairOutcome>, StoreError> {
        let key_ids: Vec<String> = pairs.iter().map(|p| p.key_id.to_string()).collect();
        let nonces: Vec<String> = pairs.iter().map(|p| p.nonce.to_string()).collect();
        let expiries: Vec<i64> = pairs.iter().map(|p| p.expires_at).collect();
        let policy_seqs: Vec<i64> = pairs.iter().map(|p| p.policy_seq).collect();
        let mut distinct: Vec<String> = key_ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let answer = self.conn.run_until(
            Box::new(move |s: &mut Session| {
                Box::pin(async move {
                    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
                        [&key_ids, &nonces, &expiries, &distinct, &now, &policy_seqs];
                    let fast = s.prepared(RECORD_NEW_BATCH).await?;
                    let (rows, all_new) = match s.client.query(&fast, &params).await {
                        Ok(rows) => (rows, true),
                        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                            let careful = s.prepared(RECORD_BATCH).await?;
                            (s.client.query(&careful, &params).await?, false)
                        }
                        Err(e) => return Err(e),
                    };
                    let mut answer = Answer {
                        all_new,
                        ..Answer::default()
                    };
                    for row in rows {
                        let key_ref: i64 = row.get(0);
                        match row.get::<_, Option<String>>(1) {
                            Some(key_id) => {
                                let status = KeyStatus::at(now, row.get(3), row.get(4));
                                answer.keys.insert(key_id, (status, row.get(5), key_ref));
                            }
                            None => {
                                answer
                                    .recorded
                                    .entry(key_ref)
                                    .or_default()
                                    .insert(row.get(2));
                            }
                        }
                    }
                    Ok(answer)
                })
            }),
            deadline,
        )?;
        Ok(pairs
            .iter()
            .map(|pair| {
                let key = answer.keys.get(&*pair.key_id);
                let state = key.map(|&(status, policy_seq, _)| (status, policy_seq));
                PairOutcome::refused_by_key(state, pair).unwrap_or_else(|| {
                    let inserted = key.and_then(|(_, _, key_ref)| answer.recorded.get(key_ref));
                    if answer.all_new
                        || inserted.is_some_and(|nonces| nonces.contains(&*pair.nonce))
                    {
                        PairOutcome::Recorded
                    } else {
                        PairOutcome::Replayed
                    }
                })
            })
            .collect())
    }

    fn touch_keys(
        &mut self,
        used: &[(Arc<str>, i64)],
        deadline: Instant,
    ) -> Result<(), StoreError> {
        let key_ids: Vec<String> = used.iter().map(|(k, _)| k.to_string()).collect();
        let times: Vec<i64> = used.iter().map(|(_, t)| *t).collect();
        self.conn.run_until(
            Box::new(move |s: &mut Session| {
                Box::pin(async move {
                    let statement = s.prepared(TOUCH_KEYS).await?;
                    s.client.execute(&statement, &[&key_ids, &times]).await?;
                    Ok(())
                })
            }),
            deadline,
        )
    }

    /// Expired pairs are deleted by the maintenance thread on a connection
    /// of its own (`PgCatalog::housekeeping`), so a purge never delays a
    /// batch on this one.
    fn purge(&mut self, _now: i64, _deadline: Instant) -> Result<(), StoreError> {
        Ok(())
    }
}
