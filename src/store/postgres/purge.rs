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
//! Expired by the database's clock, never an instance's, and only once no
//! instance could still accept the pair's timestamp, whatever its clock
//! says. A pair signed at `ts` is stored with `expires_at = ts + skew + 1`.
//! An instance accepts `ts` only while its clock is within `skew` of it,
//! and serves signed requests only while its clock is within `skew` of
//! the database's (`store/database_clock.rs`); so while an instance could
//! accept `ts`, the database's clock reads at most `ts + 2 x skew`. Rows
//! are deleted once `expires_at < database now - skew - CLOCK_SLACK_SECS`,
//! which is later than that. Purging by each instance's own clock (before
//! issue 28) let an instance a second or more behind the purger accept a
//! replay of a pair already deleted. Every instance must therefore run
//! with the same `KEYGATE_SKEW_SECS` (the README says so).
//!
//! Each range is one short statement: it locks only the expired rows it
//! deletes, which no request can be waiting for, as their timestamps are
//! out of range. Instances sweep on their own, each from a random page, so
//! that they seldom delete the same range at once (when they do, one waits
//! for the other's short transaction and finds the rows gone).

use std::sync::atomic::{AtomicI64, Ordering};

use super::{PgConnection, Session};
use crate::store::StoreError;

/// Slack on top of the skew for what the offset measurement cannot see:
/// half a round trip, and a clock step between two measurements (taken
/// every few seconds).
const CLOCK_SLACK_SECS: u32 = 2;

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

    /// Deletes the pairs in the next range of pages that no instance
    /// allowing `skew_secs` could accept any more (see the module comment).
    pub(super) fn tick(&self, skew_secs: u32) -> Result<(), StoreError> {
        let margin = i64::from(skew_secs) + i64::from(CLOCK_SLACK_SECS);
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
                             AND ctid < '({to},0)'::tid \
                             AND expires_at < extract(epoch FROM statement_timestamp())::int8 - {margin}"
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

impl ExpiredPairSweep {
    /// The database's clock, read on the sweep's connection: the
    /// maintenance thread's own, so no admin call delays the reading and
    /// the round trip stays short.
    pub(super) fn database_time(&self) -> Result<f64, StoreError> {
        self.conn.run(Box::new(|s: &mut Session| {
            Box::pin(async move {
                let row = s
                    .client
                    .query_one("SELECT extract(epoch FROM clock_timestamp())::float8", &[])
                    .await?;
                Ok(row.get::<_, f64>(0))
            })
        }))
    }
}
