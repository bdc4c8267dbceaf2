//! The server's settings, one typed struct, and every default, once.
//! `keygate serve` starts from [`Config::new`] and lays its flags and
//! environment variables over it (CONTRACT.md section 7; `cli/serve.rs`);
//! the tests start from the same [`Config::new`].

use std::fmt;
use std::time::Duration;

use crate::clock::Clock;
use crate::store::{Database, StoreConfig};

pub const DEFAULT_DATABASE: &str = "./keygate.db";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";
pub const DEFAULT_SKEW_SECS: u32 = 300;
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
pub const DEFAULT_BODY_TIMEOUT_SECS: u64 = 30;
/// Per listener. Each open connection costs a few KB and a file
/// descriptor; a client that opens more waits in the backlog instead of
/// exhausting the process's descriptors.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Body bytes all unverified requests together may hold: 64 bodies at the
/// default 1 MiB limit (see `http::BodyBudget`).
pub const DEFAULT_BODY_BUDGET_BYTES: usize = 64 * 1024 * 1024;

#[derive(Clone)]
pub struct Config {
    /// Public listener, e.g. `127.0.0.1:8080` (port 0: any free port).
    pub listen: String,
    /// Admin listener: a different address, so the admin API can be kept
    /// off the network partners reach.
    pub admin_listen: String,
    pub store: StoreConfig,
    /// `None`: read or create `<db>.admin-token` beside a SQLite database;
    /// required with PostgreSQL, where every instance must share it.
    pub admin_token: Option<String>,
    pub skew_secs: u32,
    pub max_body_bytes: usize,
    /// How long a request body may take to arrive in full, counted from
    /// when its handler starts reading it (both listeners).
    pub body_timeout: Duration,
    /// Body bytes that requests not yet verified may hold in memory at
    /// once, all together (see `http::BodyBudget`).
    pub body_budget_bytes: usize,
    /// Open connections per listener; more wait in the kernel's backlog.
    pub max_connections: usize,
    pub upstream: Option<String>,
    pub public_origin: Option<String>,
    /// Proxies in front of keygate whose `X-Forwarded-For` hops are skipped
    /// to find the client address a key's `source_cidrs` are checked
    /// against. Empty: the socket peer is the client, the header ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// actix worker threads for the public listener (`None`: one per core).
    pub workers: Option<usize>,
    /// The one clock: the system's, or a test's manual one.
    pub clock: Clock,
    /// One log line per request (`--access-log`).
    pub access_log: bool,
    /// How log lines are written (`--log-format`).
    pub log_format: LogFormat,
    /// The least level logged (`KEYGATE_LOG`): error, warn, info, debug, trace.
    pub log_level: String,
}

/// `--log-format`: lines for people, or one JSON object a line for a log
/// pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Config {
    /// The contract's defaults for a database (a SQLite path or a
    /// PostgreSQL URL: see [`Database::parse`]).
    pub fn new(database: impl Into<Database>) -> Self {
        Self::with_store(StoreConfig::new(database))
    }

    /// The same, with the store's settings already chosen.
    pub fn with_store(store: StoreConfig) -> Self {
        Config {
            listen: DEFAULT_LISTEN.into(),
            admin_listen: DEFAULT_ADMIN_LISTEN.into(),
            store,
            admin_token: None,
            skew_secs: DEFAULT_SKEW_SECS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            body_timeout: Duration::from_secs(DEFAULT_BODY_TIMEOUT_SECS),
            body_budget_bytes: DEFAULT_BODY_BUDGET_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            upstream: None,
            public_origin: None,
            trusted_proxies: Vec::new(),
            workers: None,
            clock: Clock::system(),
            access_log: false,
            log_format: LogFormat::Text,
            log_level: "info".into(),
        }
    }
}

// Written by hand so the admin token can never be printed.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("admin_listen", &self.admin_listen)
            .field("store", &self.store)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("skew_secs", &self.skew_secs)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("body_timeout", &self.body_timeout)
            .field("body_budget_bytes", &self.body_budget_bytes)
            .field("max_connections", &self.max_connections)
            .field("upstream", &self.upstream)
            .field("public_origin", &self.public_origin)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("workers", &self.workers)
            .field("clock", &self.clock)
            .field("access_log", &self.access_log)
            .field("log_format", &self.log_format)
            .field("log_level", &self.log_level)
            .finish()
    }
}
