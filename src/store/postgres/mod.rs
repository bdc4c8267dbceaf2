//! The PostgreSQL backend, for several keygate instances on several
//! machines sharing keys, revocations and one replay window.
//!
//! - Exactly-once is PostgreSQL's own: a primary key on (key_ref, nonce),
//!   the key's integer id and the nonce, and an insert-if-absent, one
//!   statement per batch of pairs (`ledger.rs`), committed synchronously
//!   before any request in it is answered. Expired pairs are swept away
//!   a range of pages at a time (`purge.rs`).
//! - Every call is bounded by the busy timeout on keygate's side: a server
//!   that stops answering (stopped, restarting, partitioned) costs a 503,
//!   never a hang, and the next call connects again.
//! - The client is tokio-postgres, driven on one small background runtime
//!   ([`wait`]); the traits above stay synchronous like SQLite's.

mod catalog;
mod connect;
mod ledger;
mod purge;
mod schema;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, Statement};

pub(crate) use catalog::PgCatalog;
pub(crate) use ledger::PgLedger;

use super::StoreError;
use connect::Target;

/// The catalog on its own connection, schema migrated.
pub(crate) fn open_catalog(url: &str, timeout: Duration) -> Result<Arc<PgCatalog>, String> {
    let target = Arc::new(Target::parse(url, timeout)?);
    if let Some(warning) = target.transport_warning() {
        tracing::warn!("{warning}");
    }
    let shown = target.shown.clone();
    let conn = PgConnection::new(target.clone());
    schema::migrate(&conn).map_err(|e| format!("database {shown}: {e}"))?;
    Ok(Arc::new(PgCatalog::new(conn, PgConnection::new(target))))
}

/// Nonce batches in flight at once per instance, each on a connection of
/// its own (see `NonceWindow::start`): `KEYGATE_PG_NONCE_CONNECTIONS`, 1 to
/// 64, default 1. On one machine with PostgreSQL on the same cores, one
/// was best (wrk, 64 connections: 34k signed requests/s with 1, 27k with
/// 2, 24k with 4): more connections make smaller batches, and each batch
/// costs its own statement and commit. Across a network, where a round
/// trip rather than the CPU bounds a batch, more can help.
pub(crate) fn ledger_connections() -> Result<usize, String> {
    match std::env::var("KEYGATE_PG_NONCE_CONNECTIONS") {
        Err(_) => Ok(1),
        Ok(text) => text
            .parse()
            .ok()
            .filter(|n| (1..=64).contains(n))
            .ok_or_else(|| format!("KEYGATE_PG_NONCE_CONNECTIONS={text}: expected 1 to 64")),
    }
}

/// A nonce ledger on a connection of its own, for one writer thread.
pub(crate) fn open_ledger(url: &str, timeout: Duration) -> Result<PgLedger, String> {
    let target = Arc::new(Target::parse(url, timeout)?);
    Ok(PgLedger::new(PgConnection::driven_by_caller(target)?))
}

/// One current-thread runtime, on a thread of its own, drives every
/// PostgreSQL connection of the process. Callers block on a channel, not on
/// the runtime, so they may be anywhere: an actix worker during start-up,
/// the blocking pool, the nonce writer thread, the CLI.
fn runtime() -> &'static tokio::runtime::Handle {
    static RUNTIME: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("start the PostgreSQL runtime");
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("keygate-postgres".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))
            .expect("spawn the PostgreSQL thread");
        handle
    })
}

fn wait<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> T {
    let (answer, answered) = std::sync::mpsc::sync_channel(1);
    runtime().spawn(async move {
        let _ = answer.send(future.await);
    });
    answered
        .recv()
        .expect("the PostgreSQL runtime dropped a call")
}

/// A connected client and the statements prepared on it: preparing costs a
/// round trip, so each statement is prepared once per connection.
pub(crate) struct Session {
    pub client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl Session {
    pub async fn prepared(
        &mut self,
        sql: &'static str,
    ) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }
}

pub(crate) type Work<T> = Box<
    dyn for<'s> FnOnce(
            &'s mut Session,
        ) -> Pin<
            Box<dyn Future<Output = Result<T, tokio_postgres::Error>> + Send + 's>,
        > + Send,
>;

/// One connection, made on first use and again after any failure.
pub(crate) struct PgConnection {
    target: Arc<Target>,
    session: Arc<tokio::sync::Mutex<Option<Session>>>,
    driver: Driver,
}

/// Who drives the connection's I/O.
enum Driver {
    /// The process's PostgreSQL thread ([`runtime`]): for callers that may
    /// be on an async worker (the catalog).
    Shared,
    /// The calling thread itself, blocking on a runtime of its own: for a
    /// nonce writer, a plain thread that does nothing else. Handing each
    /// batch to another thread and back cost two thread wake-ups per
    /// batch; perf showed half of keygate's time in the scheduler.
    CallingThread(tokio::runtime::Runtime),
}

impl PgConnection {
    fn new(target: Arc<Target>) -> Self {
        PgConnection {
            target,
            session: Arc::new(tokio::sync::Mutex::new(None)),
            driver: Driver::Shared,
        }
    }

    /// For a thread that only ever calls this connection and never runs
    /// inside an async runtime (a nonce writer).
    fn driven_by_caller(target: Arc<Target>) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a PostgreSQL runtime: {e}"))?;
        Ok(PgConnection {
            driver: Driver::CallingThread(runtime),
            ..PgConnection::new(target)
        })
    }

    /// Runs `work` on the session, connecting first if needed, all within
    /// the timeout. A connection that failed or timed out is dropped, so
    /// nothing half-done (an open transaction) outlives the call and the
    /// next call starts afresh.
    pub(crate) fn run<T: Send + 'static>(&self, work: Work<T>) -> Result<T, StoreError> {
        self.run_until(work, Instant::now() + self.target.timeout)
    }

    /// `run`, bounded by `deadline` rather than the timeout from now.
    pub(crate) fn run_until<T: Send + 'static>(
        &self,
        work: Work<T>,
        deadline: Instant,
    ) -> Result<T, StoreError> {
        let target = self.target.clone();
        let slot = self.session.clone();
        let limit = deadline
            .saturating_duration_since(Instant::now())
            .min(target.timeout);
        let call = async move {
            let mut session = slot.lock().await;
            let outcome = tokio::time::timeout(limit, async {
                if session.as_ref().is_none_or(|s| s.client.is_closed()) {
                    *session = None;
                    let client = target.connect().await?;
                    *session = Some(Session {
                        client,
                        statements: HashMap::new(),
                    });
                }
                let live = session.as_mut().expect("connected above");
                work(live).await
            })
            .await;
            match outcome {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(e)) => {
                    if connection_is_unusable(&e) {
                        *session = None;
                    }
                    Err(StoreError::Unavailable(describe(&e)))
                }
                Err(_) => {
                    *session = None;
                    Err(StoreError::Unavailable(format!(
                        "PostgreSQL ({}) did not answer within {} ms",
                        target.shown,
                        limit.as_millis()
                    )))
                }
            }
        };
        match &self.driver {
            Driver::Shared => wait(call),
            Driver::CallingThread(runtime) => runtime.block_on(call),
        }
    }
}

/// Errors after which the connection is not worth keeping: it is closed,
/// the server is shutting down or failing, or the error did not come from
/// the server at all (I/O, protocol).
fn connection_is_unusable(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.as_db_error() {
        None => true,
        Some(db) => {
            let class = &db.code().code()[..2];
            // 08 connection exception, 53 insufficient resources,
            // 57 operator intervention (shutdown, statement timeout),
            // 58 system error, XX internal error.
            matches!(class, "08" | "53" | "57" | "58" | "XX")
        }
    }
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("PostgreSQL: {} ({})", db.message(), db.code().code()),
        None => {
            // The cause says what went wrong (which certificate check, which
            // socket error); the error's own text often does not.
            let mut text = format!("PostgreSQL: {e}");
            let mut cause = std::error::Error::source(e);
            while let Some(inner) = cause {
                text.push_str(&format!(": {inner}"));
                cause = inner.source();
            }
            text
        }
    }
}
