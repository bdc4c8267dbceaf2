//! `keygate serve`: every flag (or its environment variable) is an
//! optional override of `Config`'s defaults, which are written once, in
//! `config.rs`; the binary and the tests build `Config` the same way.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::db_args::DbArgs;
use super::logging;
use crate::config::Config;
use crate::http::Application;

#[derive(Args)]
pub struct ServeArgs {
    /// Public listener (partners) [default: 127.0.0.1:8080].
    #[arg(long, env = "KEYGATE_LISTEN")]
    listen: Option<String>,
    /// Admin listener; keep it off the partners' network [default: 127.0.0.1:8081].
    #[arg(long, env = "KEYGATE_ADMIN_LISTEN")]
    admin_listen: Option<String>,
    #[command(flatten)]
    db: DbArgs,
    /// Admin bearer token, at least 32 characters [default: <db>.admin-token, created on first start].
    #[arg(long, env = "KEYGATE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Allowed difference between a request's Timestamp and the server clock [default: 300].
    #[arg(long, env = "KEYGATE_SKEW_SECS")]
    skew_secs: Option<u32>,
    /// Largest request body accepted on the public listener [default: 1048576].
    #[arg(long, env = "KEYGATE_MAX_BODY_BYTES")]
    max_body_bytes: Option<usize>,
    /// Body bytes all requests not yet verified may hold in memory at once; past it, 503
    /// unavailable [default: 67108864].
    #[arg(long, env = "KEYGATE_BODY_BUDGET_BYTES")]
    body_budget_bytes: Option<usize>,
    /// Open connections per listener; more wait in the kernel's backlog [default: 10000].
    #[arg(long, env = "KEYGATE_MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: Option<u64>,
    /// Seconds a request body may take to arrive in full, else 408 body_timeout [default: 30].
    #[arg(long, env = "KEYGATE_BODY_TIMEOUT_SECS", value_parser = clap::value_parser!(u64).range(1..))]
    body_timeout_secs: Option<u64>,
    /// Gateway mode: forward verified requests to this base URL.
    #[arg(long, env = "KEYGATE_UPSTREAM")]
    upstream: Option<String>,
    /// Public origin (e.g. https://api.example.com) for RFC 9421 derived components behind a proxy.
    #[arg(long, env = "KEYGATE_PUBLIC_ORIGIN")]
    public_origin: Option<String>,
    /// Worker threads for the public listener [default: one per core].
    #[arg(long, env = "KEYGATE_WORKERS")]
    workers: Option<usize>,
    /// Proxies in front of keygate (CIDRs, comma-separated) whose X-Forwarded-For is believed
    /// when checking a key's source networks [default: none; the header is ignored].
    #[arg(long, env = "KEYGATE_TRUSTED_PROXIES", value_parser = parse_trusted_proxies)]
    trusted_proxies: Option<TrustedProxies>,
}

/// `--trusted-proxies`' one value, a comma-separated list: a type of its
/// own, because clap would take an `Option<Vec<_>>` for a repeated flag.
#[derive(Clone, Debug)]
struct TrustedProxies(Vec<ipnet::IpNet>);

fn parse_trusted_proxies(list: &str) -> Result<TrustedProxies, String> {
    crate::policy::source::parse_networks(list).map(TrustedProxies)
}

impl ServeArgs {
    /// `Config`'s defaults, with whatever was given laid over them.
    fn config(self) -> Config {
        let mut config = Config::with_store(self.db.store_config());
        set(self.listen, &mut config.listen);
        set(self.admin_listen, &mut config.admin_listen);
        set(self.skew_secs, &mut config.skew_secs);
        set(self.max_body_bytes, &mut config.max_body_bytes);
        set(self.body_budget_bytes, &mut config.body_budget_bytes);
        set(
            self.max_connections
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            &mut config.max_connections,
        );
        set(
            self.body_timeout_secs.map(Duration::from_secs),
            &mut config.body_timeout,
        );
        set(
            self.trusted_proxies.map(|t| t.0),
            &mut config.trusted_proxies,
        );
        config.admin_token = self.admin_token;
        config.upstream = self.upstream;
        config.public_origin = self.public_origin;
        config.workers = self.workers;
        config
    }
}

/// An override, when one was given.
fn set<T>(value: Option<T>, field: &mut T) {
    if let Some(value) = value {
        *field = value;
    }
}

pub fn run(args: ServeArgs) -> Result<ExitCode, String> {
    logging::init();
    let config = args.config();
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(config)?;
        app.run_until_stopped().await.map_err(|e| e.to_string())
    })?;
    Ok(ExitCode::SUCCESS)
}
