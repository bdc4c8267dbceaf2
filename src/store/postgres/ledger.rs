//! The replay window on PostgreSQL: one statement per batch of pairs, and
//! so one round trip and one synchronous commit however many requests
//! share it.
//!
//! The statement locks the batch's key rows FOR SHARE and reads their
//! revocation, expiry and policy version, inserts the pairs of usable keys
//! checked against the current policy with ON
//! CONFLICT DO NOTHING, and returns both the key states and the pairs it
//! inserted. A pair it returns is new across every instance (the primary
//! key decides); one it does not return was there already, or its key is
//! not usable. FOR SHARE orders each batch against revocations: a
//! revocation's UPDATE waits for batches that hold the row, and a batch
//! that starts after the revocation waits for it, then reads the revoked
//! row. So once a revocation has committed, no instance accepts the key.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use tokio_postgres::error::SqlState;

use super::{PgConnection, Session};
use crate::store::backend::{NonceLedger, PairOutcome, PairToRecord};
use crate::store::{KeyStatus, StoreError};

/// The batch statement, with or without an ON CONFLICT clause before its
/// RETURNING (a macro because both must be `&'static str` constants, which
/// `Session::prepared` keys its cache by).
macro_rules! record_batch {
    ($on_conflict:literal) => {
        concat!(
            "WITH batch AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $6::int8[])
        AS b(key_id, nonce, expires_at, policy_seq)
), key_state AS (
    SELECT key_id, expires_at, revoked_at, policy_seq FROM keys
    WHERE key_id = ANY($4::text[]) FOR SHARE
), recorded AS (
    INSERT INTO nonces (key_id, nonce, expires_at)
    SELECT b.key_id, b.nonce, b.expires_at
    FROM batch b JOIN key_state k ON k.key_id = b.key_id
    WHERE k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > $5)
        AND k.policy_seq = b.policy_seq
    ",
            $on_conflict,
            "
    RETURNING key_id, nonce
)
SELECT key_id, NULL::text, expires_at, revoked_at, policy_seq FROM key_state
UNION ALL
SELECT key_id, nonce, NULL, NULL, NULL FROM recorded"
        )
    };
}

/// The statement every batch runs first. Without ON CONFLICT, an insert
/// skips the speculative-insertion protocol, which cost a sixth of
/// PostgreSQL's CPU per request (BENCHMARKS.md, round 7). A batch holding a
/// pair that is already recorded fails whole with a unique violation,
/// having recorded nothing, and is run again as `RECORD_BATCH`: replays
/// rarely get this far (the in-memory front refuses those it knows), so
/// the second statement is the exception.
const RECORD_NEW_BATCH: &str = record_batch!("");

/// The same with ON CONFLICT DO NOTHING: the inserted pairs are the new
/// ones.
const RECORD_BATCH: &str = record_batch!("ON CONFLICT (key_id, nonce) DO NOTHING");

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
    /// Each key's state and policy version.
    keys: HashMap<String, (KeyStatus, i64)>,
    /// Nonces inserted, by key id.
    recorded: HashMap<String, HashSet<String>>,
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
                    let rows = match s.client.query(&fast, &params).await {
                        Ok(rows) => rows,
                        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                            let careful = s.prepared(RECORD_BATCH).await?;
                            s.client.query(&careful, &params).await?
                        }
                        Err(e) => return Err(e),
                    };
                    let mut answer = Answer::default();
                    for row in rows {
                        let key_id: String = row.get(0);
                        match row.get::<_, Option<String>>(1) {
                            Some(nonce) => {
                                answer.recorded.entry(key_id).or_default().insert(nonce);
                            }
                            None => {
                                let status = KeyStatus::at(now, row.get(2), row.get(3));
                                answer.keys.insert(key_id, (status, row.get(4)));
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
                let key = answer.keys.get(&*pair.key_id).copied();
                PairOutcome::refused_by_key(key, pair).unwrap_or_else(|| {
                    let inserted = answer.recorded.get(&*pair.key_id);
                    if inserted.is_some_and(|nonces| nonces.contains(&*pair.nonce)) {
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
