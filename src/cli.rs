//! The `keygate` command line (CONTRACT.md section 7): `serve`, the admin
//! commands that work on the database directly, and `request`, a curl that
//! signs.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{Config, DEFAULT_BODY_TIMEOUT_SECS, DEFAULT_MAX_BODY_BYTES, DEFAULT_SKEW_SECS};
use crate::http::Application;
use crate::signature::{self, BodyHash, SignedParts, StringToSign};
use crate::store::{self, Catalog, Database, Durability, StoreConfig};

#[derive(Parser)]
#[command(
    name = "keygate",
    version,
    about = "HMAC-signed partner API keys: issue, verify, rotate, revoke"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the public and admin listeners.
    Serve(ServeArgs),
    /// Manage partner applications (works on the database directly).
    #[command(subcommand)]
    App(AppCommand),
    /// Manage keys (works on the database directly).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Show the audit log, newest first.
    Audit {
        #[command(flatten)]
        db: DbArgs,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Send one KG1-signed request and print the answer, like curl.
    Request(RequestArgs),
    /// Load-test a running keygate: unauthenticated vs signed throughput and latency.
    Bench(BenchArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// Base URL of the public listener.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Key id [env: KEYGATE_KEY_ID].
    #[arg(long, env = "KEYGATE_KEY_ID")]
    key_id: String,
    /// Secret [env: KEYGATE_SECRET].
    #[arg(long, env = "KEYGATE_SECRET", hide_env_values = true)]
    secret: String,
    /// Concurrent keep-alive connections.
    #[arg(long, short = 'c', default_value_t = 64)]
    connections: usize,
    /// Generator threads. Two, because one thread signing and parsing
    /// responses saturates before keygate does on /healthz, and the
    /// baseline would then measure the generator.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Length of each measured phase, e.g. 10s.
    #[arg(long, short = 'd', default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured signed warm-up before the phases.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Unauthenticated baseline route.
    #[arg(long, default_value = "/healthz")]
    baseline_path: String,
    /// Signed route (GET).
    #[arg(long, default_value = "/v1/whoami")]
    signed_path: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Clone)]
struct DbArgs {
    /// SQLite database file, or a postgres:// URL (PostgreSQL, for several instances).
    #[arg(long, env = "KEYGATE_DB", default_value = "./keygate.db")]
    db: String,
    /// Master key for secrets at rest [default with SQLite: <db>.master-key, created on first use;
    /// required with PostgreSQL].
    #[arg(long, env = "KEYGATE_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
    /// normal: survives kill -9; full: fsync per commit, survives power loss.
    #[arg(long, env = "KEYGATE_DURABILITY", value_enum, default_value = "normal")]
    durability: Durability,
    /// How long a request waits for the database (a lock, an answer) before refusing (503).
    #[arg(long, env = "KEYGATE_DB_BUSY_TIMEOUT_MS", default_value_t = 2000)]
    db_busy_timeout_ms: u64,
}

impl DbArgs {
    fn store_config(&self) -> StoreConfig {
        StoreConfig {
            database: Database::parse(&self.db),
            master_key_file: self.master_key_file.clone(),
            durability: self.durability,
            busy_timeout: Duration::from_millis(self.db_busy_timeout_ms),
        }
    }

    fn open(&self) -> Result<Catalog, String> {
        store::open_catalog(&self.store_config(), store::instance_name("cli"))
    }
}

#[derive(Args)]
struct ServeArgs {
    /// Public listener (partners).
    #[arg(long, env = "KEYGATE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Admin listener; keep it off the partners' network.
    #[arg(long, env = "KEYGATE_ADMIN_LISTEN", default_value = "127.0.0.1:8081")]
    admin_listen: String,
    #[command(flatten)]
    db: DbArgs,
    /// Admin bearer token, at least 32 characters [default: <db>.admin-token, created on first start].
    #[arg(long, env = "KEYGATE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Allowed difference between a request's Timestamp and the server clock.
    #[arg(long, env = "KEYGATE_SKEW_SECS", default_value_t = DEFAULT_SKEW_SECS)]
    skew_secs: u32,
    /// Largest request body accepted on the public listener.
    #[arg(long, env = "KEYGATE_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Body bytes all requests not yet verified may hold in memory at once; past it, 503 unavailable.
    #[arg(long, env = "KEYGATE_BODY_BUDGET_BYTES", default_value_t = crate::http::DEFAULT_BODY_BUDGET_BYTES)]
    body_budget_bytes: usize,
    /// Open connections per listener; more wait in the kernel's backlog.
    #[arg(long, env = "KEYGATE_MAX_CONNECTIONS", default_value_t = crate::config::DEFAULT_MAX_CONNECTIONS as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
    /// Seconds a request body may take to arrive in full, else 408 body_timeout.
    #[arg(long, env = "KEYGATE_BODY_TIMEOUT_SECS", default_value_t = DEFAULT_BODY_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..))]
    body_timeout_secs: u64,
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

/// A policy to set, as JSON or as flags; none of them: show the policy.
/// Setting replaces the whole policy, as `PUT .../policy` does.
#[derive(Args)]
struct PolicyArgs {
    /// The whole policy as JSON (CONTRACT.md section 8); @FILE reads a file, @- standard input.
    #[arg(long, value_name = "JSON", conflicts_with_all = ["allow", "source_cidr", "rate", "burst", "clear"])]
    set: Option<String>,
    /// An allowed route, "METHODS PATH": "GET,POST /v1/orders/*", "* /v1/whoami" (repeatable).
    #[arg(long, value_name = "METHODS PATH")]
    allow: Vec<String>,
    /// A network the key may be used from, e.g. 203.0.113.0/24 or 2001:db8::/32 (repeatable; keys only).
    #[arg(long, value_name = "CIDR")]
    source_cidr: Vec<String>,
    /// Requests per second allowed.
    #[arg(long, value_name = "PER_SECOND")]
    rate: Option<f64>,
    /// Requests allowed at once after a quiet spell [default: one second's worth].
    #[arg(long, requires = "rate")]
    burst: Option<u32>,
    /// Remove every restriction.
    #[arg(long, conflicts_with_all = ["allow", "source_cidr", "rate", "burst"])]
    clear: bool,
}

impl PolicyArgs {
    /// The policy document the flags describe; `None` when none was given.
    fn document(&self) -> Result<Option<Vec<u8>>, String> {
        if let Some(json) = &self.set {
            return read_data(json).map(Some);
        }
        if self.clear {
            return Ok(Some(b"{}".to_vec()));
        }
        if self.allow.is_empty() && self.source_cidr.is_empty() && self.rate.is_none() {
            return Ok(None);
        }
        let mut document = serde_json::Map::new();
        if !self.allow.is_empty() {
            let rules = self
                .allow
                .iter()
                .map(|rule| {
                    let (methods, path) = rule.trim().split_once(char::is_whitespace).ok_or_else(
                        || format!("--allow {rule:?}: write \"METHODS PATH\", e.g. \"GET,POST /v1/orders/*\""),
                    )?;
                    let methods: Vec<&str> = methods.split(',').map(str::trim).collect();
                    Ok(serde_json::json!({ "methods": methods, "path": path.trim() }))
                })
                .collect::<Result<Vec<_>, String>>()?;
            document.insert("rules".into(), rules.into());
        }
        if !self.source_cidr.is_empty() {
            let cidrs: Vec<&str> = self
                .source_cidr
                .iter()
                .flat_map(|c| c.split(','))
                .map(str::trim)
                .collect();
            document.insert("source_cidrs".into(), cidrs.into());
        }
        if let Some(per_second) = self.rate {
            let mut limit = serde_json::json!({ "per_second": per_second });
            if let Some(burst) = self.burst {
                limit["burst"] = burst.into();
            }
            document.insert("rate_limit".into(), limit);
        }
        Ok(Some(
            serde_json::Value::Object(document).to_string().into_bytes(),
        ))
    }

    fn policy(
        &self,
        holder: crate::policy::Holder,
    ) -> Result<Option<crate::policy::AccessPolicy>, String> {
        self.document()?
            .map(|document| crate::policy::AccessPolicy::parse(&document, holder))
            .transpose()
    }
}

#[derive(Subcommand)]
enum AppCommand {
    /// Create an application (a partner).
    Create {
        name: String,
        #[command(flatten)]
        db: DbArgs,
        #[arg(long)]
        json: bool,
    },
    /// List applications.
    List {
        #[command(flatten)]
        db: DbArgs,
        #[arg(long)]
        json: bool,
    },
    /// Show or set an application's access policy (its keys' policies narrow it further).
    Policy {
        app_id: String,
        #[command(flatten)]
        policy: PolicyArgs,
        #[command(flatten)]
        db: DbArgs,
        /// Accepted for symmetry with the other commands: the policy is always printed as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create a key for an application; prints the secret, once.
    Create {
        app_id: String,
        /// RFC 3339 time after which the key stops working.
        #[arg(long)]
        expires_at: Option<String>,
        /// A label for humans, e.g. "ERP sync, prod".
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        db: DbArgs,
        #[arg(long)]
        json: bool,
    },
    /// List an application's keys (never their secrets).
    List {
        app_id: String,
        #[command(flatten)]
        db: DbArgs,
        #[arg(long)]
        json: bool,
    },
    /// Create a new key for the same application; the old one keeps working for the grace period.
    Rotate {
        key_id: String,
        /// How long the old key keeps working, e.g. 24h, 90m, 3600s.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        grace: Duration,
        #[command(flatten)]
        db: DbArgs,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: refused from the next request on.
    Revoke {
        key_id: String,
        #[command(flatten)]
        db: DbArgs,
        #[arg(long)]
        json: bool,
    },
    /// Show or set a key's access policy (its application's applies too).
    Policy {
        key_id: String,
        #[command(flatten)]
        policy: PolicyArgs,
        #[command(flatten)]
        db: DbArgs,
        /// Accepted for symmetry with the other commands: the policy is always printed as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct RequestArgs {
    /// Key id [env: KEYGATE_KEY_ID].
    #[arg(long, env = "KEYGATE_KEY_ID")]
    key_id: String,
    /// Secret [env: KEYGATE_SECRET]; prefer the environment variable, which `ps` does not show.
    #[arg(long, env = "KEYGATE_SECRET", hide_env_values = true)]
    secret: String,
    /// HTTP method, e.g. GET or POST.
    method: String,
    /// Full URL, e.g. http://127.0.0.1:8080/v1/whoami?x=1
    url: String,
    /// Request body; @FILE reads a file, @- standard input.
    #[arg(long, short = 'd')]
    data: Option<String>,
    /// Extra header, "Name: value" (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Print the string to sign and the response headers.
    #[arg(long, short = 'v')]
    verbose: bool,
    /// For https URLs: also trust the CA certificates in this PEM file
    /// (a private CA, a test certificate), besides the public roots.
    #[arg(long, value_name = "PEM_FILE")]
    cacert: Option<PathBuf>,
}

pub fn main() -> ExitCode {
    // A file-size limit (ulimit -f, systemd's LimitFSIZE) reached while
    // writing the database would otherwise kill the process (SIGXFSZ's
    // default action) in the middle of a commit. Ignored, the write fails
    // with EFBIG, SQLite reports the database full, and keygate refuses
    // requests with 503 until there is room again: fail closed, alive.
    // SAFETY: setting a signal's disposition to SIG_IGN runs no handler
    // code, and happens before any other thread exists.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::App(cmd) => app_command(cmd),
        Command::Key(cmd) => key_command(cmd),
        Command::Audit { db, limit, json } => db.open().and_then(|c| {
            let events = c.audit_events(limit).map_err(|e| e.to_string())?;
            print_out(json, &serde_json::json!({ "events": events }), || {
                events
                    .iter()
                    .map(|e| {
                        format!(
                            "{}  {:<10} {:<22} app={} key={} {}",
                            when(e.at),
                            e.action,
                            e.actor,
                            e.app_id.as_deref().unwrap_or("-"),
                            e.key_id.as_deref().unwrap_or("-"),
                            e.detail
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(ExitCode::SUCCESS)
        }),
        Command::Request(args) => request(args),
        Command::Bench(args) => bench(args),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("keygate: {message}");
            ExitCode::from(2)
        }
    }
}

fn init_logging() {
    let level = std::env::var("KEYGATE_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(tracing::Level::INFO);
    // actix logs every request it cannot parse (and answers with a bare
    // 400) as an ERROR "stream error": the peer's fault, not keygate's, and
    // a port scanner would fill the log with it. Shown in debug runs only.
    let dispatcher = if level >= tracing::Level::DEBUG {
        LevelFilter::from_level(level)
    } else {
        LevelFilter::OFF
    };
    let filter = Targets::new()
        .with_default(level)
        .with_target("actix_http::h1::dispatcher", dispatcher);
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .try_init();
}

fn serve(args: ServeArgs) -> Result<ExitCode, String> {
    init_logging();
    let config = Config {
        listen: args.listen,
        admin_listen: args.admin_listen,
        store: args.db.store_config(),
        admin_token: args.admin_token,
        skew_secs: args.skew_secs,
        max_body_bytes: args.max_body_bytes,
        body_timeout: Duration::from_secs(args.body_timeout_secs),
        body_budget_bytes: args.body_budget_bytes,
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        upstream: args.upstream,
        public_origin: args.public_origin,
        trusted_proxies: args.trusted_proxies.map(|t| t.0).unwrap_or_default(),
        workers: args.workers,
    };
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(config)?;
        app.run_until_stopped().await.map_err(|e| e.to_string())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `--json` prints the API's JSON; otherwise a human summary.
fn print_out(json: bool, value: &impl Serialize, human: impl FnOnce() -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("serialisable")
        );
    } else {
        let text = human();
        if !text.is_empty() {
            println!("{text}");
        }
    }
}

fn cli_actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

fn app_command(cmd: AppCommand) -> Result<ExitCode, String> {
    match cmd {
        AppCommand::Create { name, db, json } => {
            let app = db
                .open()?
                .create_app(&name, &cli_actor())
                .map_err(|e| e.to_string())?;
            print_out(json, &app, || {
                format!("created app {} ({})", app.app_id, app.name)
            });
        }
        AppCommand::List { db, json } => {
            let apps = db.open()?.list_apps().map_err(|e| e.to_string())?;
            print_out(json, &serde_json::json!({ "apps": apps }), || {
                apps.iter()
                    .map(|a| {
                        format!(
                            "{}  {}  {}  keys {} live / {}  last used {}  policy {}",
                            a.app_id,
                            when(a.created_at),
                            a.name,
                            a.live_key_count,
                            a.key_count,
                            a.last_used_at.map_or_else(|| "never".into(), when),
                            a.policy
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        AppCommand::Policy {
            app_id, policy, db, ..
        } => {
            let catalog = db.open()?;
            let shown = match policy.policy(crate::policy::Holder::App)? {
                None => catalog.app_policy(&app_id),
                Some(policy) => catalog.set_app_policy(&app_id, &policy, &cli_actor()),
            }
            .map_err(|e| e.to_string())?;
            print_out(true, &shown, String::new);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn new_key_text(key: &crate::store::NewKey) -> String {
    format!(
        "key_id:  {}\nsecret:  {}\napp_id:  {}\nname:    {}\nexpires: {}\n\nThe secret is shown only this once; store it now.",
        key.key_id,
        key.secret.expose(),
        key.app_id,
        key.name.as_deref().unwrap_or("-"),
        key.expires_at.map_or_else(|| "never".to_owned(), when),
    )
}

/// Times as the admin API writes them (RFC 3339, UTC), so what an admin
/// reads in the terminal can be pasted into `--expires-at` or a query.
fn when(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

fn key_command(cmd: KeyCommand) -> Result<ExitCode, String> {
    let err = |e: crate::Error| e.to_string();
    match cmd {
        KeyCommand::Create {
            app_id,
            expires_at,
            name,
            db,
            json,
        } => {
            let expires_at = expires_at
                .as_deref()
                .map(crate::http::parse_rfc3339)
                .transpose()
                .map_err(err)?;
            let key = db
                .open()?
                .create_key(&app_id, expires_at, name.as_deref(), &cli_actor())
                .map_err(err)?;
            print_out(json, &key, || new_key_text(&key));
        }
        KeyCommand::List { app_id, db, json } => {
            let keys = db.open()?.list_keys(&app_id).map_err(err)?;
            print_out(json, &serde_json::json!({ "keys": keys }), || {
                keys.iter()
                    .map(|k| {
                        let status = serde_json::to_value(k.status).expect("status serialises");
                        format!(
                            "{}  {:<8}  created {}  expires {}  last used {}  name {}  policy {}",
                            k.key_id,
                            status.as_str().unwrap_or("?"),
                            when(k.created_at),
                            k.expires_at.map_or_else(|| "never".into(), when),
                            k.last_used_at.map_or_else(|| "never".into(), when),
                            k.name
                                .as_deref()
                                .map_or_else(|| "-".into(), |n| format!("{n:?}")),
                            k.policy,
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        KeyCommand::Rotate {
            key_id,
            grace,
            db,
            json,
        } => {
            let grace = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
            let key = db
                .open()?
                .rotate_key(&key_id, grace, &cli_actor())
                .map_err(err)?;
            print_out(json, &key, || {
                format!(
                    "{}\n\nThe old key {key_id} keeps working for {grace} s.",
                    new_key_text(&key)
                )
            });
        }
        KeyCommand::Revoke { key_id, db, json } => {
            let key = db.open()?.revoke_key(&key_id, &cli_actor()).map_err(err)?;
            print_out(json, &key, || format!("revoked {}", key.key_id));
        }
        KeyCommand::Policy {
            key_id, policy, db, ..
        } => {
            let catalog = db.open()?;
            let shown = match policy.policy(crate::policy::Holder::Key)? {
                None => catalog.key_policy(&key_id),
                Some(policy) => catalog.set_key_policy(&key_id, &policy, &cli_actor()),
            }
            .map_err(err)?;
            print_out(true, &shown, String::new);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_data(data: &str) -> Result<Vec<u8>, String> {
    match data.strip_prefix('@') {
        Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| e.to_string())?;
            Ok(buf)
        }
        Some(path) => std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}")),
        None => Ok(data.as_bytes().to_vec()),
    }
}

fn request(args: RequestArgs) -> Result<ExitCode, String> {
    let method = args.method.to_ascii_uppercase();
    let body = args
        .data
        .as_deref()
        .map(read_data)
        .transpose()?
        .unwrap_or_default();
    // Sign exactly the target the HTTP client will put on the request line:
    // parse the URL the way it does, then take its path and query.
    let url = url::Url::parse(&args.url).map_err(|e| format!("bad URL {}: {e}", args.url))?;
    let target = match url.query() {
        Some(q) => format!("{}?{}", url.path(), q),
        None => url.path().to_owned(),
    };
    let timestamp = crate::clock::now().to_string();
    let nonce = crate::credentials::new_nonce();
    let parts = SignedParts {
        key_id: &args.key_id,
        timestamp: &timestamp,
        nonce: &nonce,
        method: &method,
        request_target: &target,
        body_hash: BodyHash::of(&body),
    };
    let authorization = signature::authorization_header(&args.secret, &parts);
    if args.verbose {
        eprintln!(
            "* string to sign:\n{}\n",
            StringToSign::new(&parts).as_str()
        );
        eprintln!("> {method} {target}\n> Authorization: {authorization}");
    }

    // A server that never answers must not leave the command waiting
    // forever (keygate's own body timeout is 30 s by default).
    let mut agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60));
    if let Some(path) = &args.cacert {
        agent = agent.tls_config(tls_trusting(path)?);
    }
    let agent = agent.build();
    let mut req = agent
        .request_url(&method, &url)
        .set("Authorization", &authorization);
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| format!("header {header:?} is not \"Name: value\""))?;
        req = req.set(name.trim(), value.trim());
    }
    let response = if body.is_empty() && args.data.is_none() {
        req.call()
    } else {
        req.send_bytes(&body)
    };
    let response = match response {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(format!("request failed: {e}")),
    };
    let status = response.status();
    if args.verbose {
        eprintln!("< {} {}", status, response.status_text());
        for name in response.headers_names() {
            eprintln!("< {}: {}", name, response.header(&name).unwrap_or(""));
        }
    }
    let mut text = Vec::new();
    response
        .into_reader()
        .take(64 * 1024 * 1024)
        .read_to_end(&mut text)
        .map_err(|e| format!("reading the answer: {e}"))?;
    println!("{}", String::from_utf8_lossy(&text));
    Ok(if status >= 400 {
        ExitCode::from(22)
    } else {
        ExitCode::SUCCESS
    })
}

/// TLS that trusts the public roots (what ureq trusts by default) and the
/// certificates of `pem_file`.
fn tls_trusting(pem_file: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let bad = |e: &dyn std::fmt::Display| format!("--cacert {}: {e}", pem_file.display());
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut added = 0;
    for cert in CertificateDer::pem_file_iter(pem_file).map_err(|e| bad(&e))? {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
        added += 1;
    }
    if added == 0 {
        return Err(bad(&"no PEM certificate in the file"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn bench(args: BenchArgs) -> Result<ExitCode, String> {
    let options = crate::load_generator::LoadOptions {
        base_url: args.url,
        key_id: args.key_id,
        secret: args.secret,
        connections: args.connections,
        threads: args.threads,
        duration: args.duration,
        warmup: args.warmup,
        baseline_path: args.baseline_path,
        signed_path: args.signed_path,
    };
    let report = crate::load_generator::run(&options)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serialisable")
        );
    } else {
        crate::load_generator::print_report(&report);
    }
    let failed = report.baseline.errors + report.signed.errors > 0;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
