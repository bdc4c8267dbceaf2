//! The PostgreSQL backend, for several keygate instances on several
//! machines sharing keys, revocations and one replay window.
//!
//! - Exactly-once is PostgreSQL's own: a primary key on (key_id, nonce)
//!   and an insert-if-absent, one statement per batch of pairs
//!   (`ledger.rs`), committed synchronously before any request in it is
//!   answered.
//! - Every call is bounded by the busy timeout on keygate's side: a server
//!   that stops answering (stopped, restarting, partitioned) costs a 503,
//!   never a hang, and the next call connects again.
//! - The client is tokio-postgres, driven on one small background runtime
//!   ([`wait`]); the traits above stay synchronous like SQLite's.

mod catalog;
mod connect;
mod ledger;
mod schema;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_postgres::{Client, Statement};

pub(crate) use catalog::PgCatalog;
pub(crate) use ledger::PgLedger;

use super::StoreError;
use connect::Target;

/// The catalog on its own connection, schema migrated.
pub(crate) fn open_catalog(url: &str, timeout: Duration) -> Result<Arc<PgCatalog>, String> {
    let target = Arc::new(Target::parse(url, timeout)?);
    let shown = target.shown.clone();
    let conn = PgConnection::new(target.clone());
    schema::migrate(&conn).map_err(|e| format!("database {shown}: {e}"))?;
    Ok(Arc::new(PgCatalog::new(conn, PgConnection::new(target))))
}

/// The nonce ledger on a connection of its own, for the writer thread.
pub(crate) fn open_ledger(url: &str, timeout: Duration) -> Result<PgLedger, String> {
    let target = Arc::new(Target::parse(url, timeout)?);
    Ok(PgLedger::new(PgConnection::new(target)))
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
}

impl PgConnection {
    fn new(target: Arc<Target>) -> Self {
        PgConnection {
            target,
            session: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    /// Runs `work` on the session, connecting first if needed, all within
    /// the timeout. A connection that failed or timed out is dropped, so
    /// nothing half-done (an open transaction) outlives the call and the
    /// next call starts afresh.
    pub(crate) fn run<T: Send + 'static>(&self, work: Work<T>) -> Result<T, StoreError> {
        let target = self.target.clone();
        let slot = self.session.clone();
        wait(async move {
            let mut session = slot.lock().await;
            let outcome = tokio::time::timeout(target.timeout, async {
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
                        target.timeout.as_millis()
                    )))
                }
            }
        })
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
