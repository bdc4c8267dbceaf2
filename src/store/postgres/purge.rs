//! Deleting expired pairs from the nonce table, which has no index on
//! `expires_at` (schema version 3: keeping one up to date cost about a
//! tenth of each insert). Each maintenance tick deletes the expired rows of
//! the next range of pages, found by a TID range scan, and the ranges wrap
//! around the table. A whole pass takes at most `PASS_TICKS` ticks however
//! large the table is (60 s at the 200 ms tick), so a pair stays at most
//! that long past its window: the table holds about rate x (window + 60 s).
//! A pass reads the whole table, which costs far less than an index
//! (BENCHMARKS.md, round 9): at 30,000 pairs a second and the default
//! window, 10 M rows a minute.
//!
//! Each range is one short statement: it locks only the expired rows it
//! deletes, which no request can be waiting for, as their timestamps are
//! out of range. Instances sweep on their own, each from a random page, so
//! that they seldom delete the same range at once (when they do, one waits
//! for the other's short transaction and finds the rows gone).

use std::sync::atomic::{AtomicI64, Ordering};

use super::{PgConnection, Session};
use crate::store::StoreError;

/// Ticks a whole pass over the table takes at most.
const PASS_TICKS: i64 = 300;
/// The least a tick sweeps (1 MiB): a table under 38,400 pages (about
/// 4 M pairs) is swept in fewer than `PASS_TICKS` ticks.
const MIN_PAGES_A_TICK: i64 = 128;

pub(super) struct ExpiredPairSweep {
    /// Its own connection, so a sweep never queues behind admin calls.
    conn: PgConnection,
    /// The first page of the next range.
    next_page: AtomicI64,
}

impl ExpiredPairSweep {
    pub(super) fn new(conn: PgConnection) -> Self {
        ExpiredPairSweep {
            conn,
            next_page: AtomicI64::new(i64::from(rand::random::<u32>())),
        }
    }

    /// Deletes the pairs expired before `now` in the next range of pages.
    pub(super) fn tick(&self, now: i64) -> Result<(), StoreError> {
        let from = self.next_page.load(Ordering::Relaxed);
        let next = self.conn.run(Box::new(move |s: &mut Session| {
            Box::pin(async move {
                let pages: i64 = s
                    .client
                    .query_one(
                        "SELECT pg_relation_size('nonces') / current_setting('block_size')::bigint",
                        &[],
                    )
                    .await?
                    .get(0);
                if pages == 0 {
                    return Ok(0);
                }
                let from = from % pages;
                let to = from + (pages / PASS_TICKS).max(MIN_PAGES_A_TICK);
                // Literal numbers, planned each call: a TID range scan of
                // exactly these pages (a tid has no binary parameter type
                // in the client).
                s.client
                    .execute(
                        &format!(
                            "DELETE FROM nonces WHERE ctid >= '({from},0)'::tid \
                             AND ctid < '({to},0)'::tid AND expires_at < {now}"
                        ),
                        &[],
                    )
                    .await?;
                Ok(if to >= pages { 0 } else { to })
            })
        }))?;
        self.next_page.store(next, Ordering::Relaxed);
        Ok(())
    }
}
