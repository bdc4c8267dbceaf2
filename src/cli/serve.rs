//! `keygate serve`: its flags (and their environment variables), laid over
//! the config file and `Config`'s defaults by `settings.rs`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgMatches, Args};

use super::db_args::DbArgs;
use super::{logging, settings};
use crate::config::LogFormat;
use crate::http::Application;

#[derive(Args)]
pub struct ServeArgs {
    /// A TOML file with any of these settings (keys: the variables' names without KEYGATE_,
    /// in lower case). Flags and variables override it.
    #[arg(long, env = "KEYGATE_CONFIG")]
    pub(super) config: Option<PathBuf>,
    /// Public listener (partners) [default: 127.0.0.1:8080].
    #[arg(long, env = "KEYGATE_LISTEN")]
    pub(super) listen: Option<String>,
    /// Admin listener; keep it off the partners' network [default: 127.0.0.1:8081].
    #[arg(long, env = "KEYGATE_ADMIN_LISTEN")]
    pub(super) admin_listen: Option<String>,
    #[command(flatten)]
    pub(super) db: DbArgs,
    /// Admin bearer token, at least 32 characters [default: <db>.admin-token, created on first start].
    #[arg(long, env = "KEYGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub(super) admin_token: Option<String>,
    /// Allowed difference between a request's Timestamp and the server clock [default: 300].
    #[arg(long, env = "KEYGATE_SKEW_SECS")]
    pub(super) skew_secs: Option<u32>,
    /// Largest request body accepted on the public listener [default: 1048576].
    #[arg(long, env = "KEYGATE_MAX_BODY_BYTES")]
    pub(super) max_body_bytes: Option<usize>,
    /// Body bytes all requests not yet verified may hold in memory at once; past it, 503
    /// unavailable [default: 67108864].
    #[arg(long, env = "KEYGATE_BODY_BUDGET_BYTES")]
    pub(super) body_budget_bytes: Option<usize>,
    /// Open connections per listener; more wait in the kernel's backlog [default: 10000].
    #[arg(long, env = "KEYGATE_MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) max_connections: Option<u64>,
    /// Seconds a request body may take to arrive in full, else 408 body_timeout [default: 30].
    #[arg(long, env = "KEYGATE_BODY_TIMEOUT_SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) body_timeout_secs: Option<u64>,
    /// Gateway mode: forward verified requests to this base URL.
    #[arg(long, env = "KEYGATE_UPSTREAM")]
    pub(super) upstream: Option<String>,
    /// Public origin (e.g. https://api.example.com) for RFC 9421 derived components behind a proxy.
    #[arg(long, env = "KEYGATE_PUBLIC_ORIGIN")]
    pub(super) public_origin: Option<String>,
    /// Worker threads for the public listener [default: one per core].
    #[arg(long, env = "KEYGATE_WORKERS")]
    pub(super) workers: Option<usize>,
    /// Proxies in front of keygate (CIDRs, comma-separated) whose X-Forwarded-For is believed
    /// when checking a key's source networks [default: none; the header is ignored].
    #[arg(long, env = "KEYGATE_TRUSTED_PROXIES")]
    pub(super) trusted_proxies: Option<String>,
    /// How log lines are written: text (for people) or json (one object a line) [default: text].
    #[arg(long, env = "KEYGATE_LOG_FORMAT", value_enum)]
    pub(super) log_format: Option<LogFormat>,
    /// One log line per request: id, method, path (no query), status, code, key, app, latency, bytes.
    #[arg(long, env = "KEYGATE_ACCESS_LOG")]
    pub(super) access_log: bool,
    /// The least level logged: error, warn, info, debug or trace [default: info].
    #[arg(long = "log-level", env = "KEYGATE_LOG")]
    pub(super) log: Option<String>,
}

pub fn run(args: ServeArgs, matches: &ArgMatches) -> Result<ExitCode, String> {
    let (config, _) = settings::resolve(args, matches)?;
    logging::init(config.log_format, &config.log_level)?;
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(config)?;
        app.run_until_stopped().await.map_err(|e| e.to_string())
    })?;
    Ok(ExitCode::SUCCESS)
}
