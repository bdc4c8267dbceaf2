//! Where each of `keygate serve`'s settings comes from (CONTRACT.md
//! section 7): a flag, else its environment variable, else the config file
//! (`--config FILE` / `KEYGATE_CONFIG`, TOML, keys named like the
//! variables without `KEYGATE_`, in lower case), else `Config`'s default.
//! `keygate config show` prints the result with each value's source,
//! secrets redacted.
//!
//! clap reads flags and variables (and says which one a value came from);
//! this file adds the config file and the defaults, and builds `Config`.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::ArgMatches;
use serde::Deserialize;

use super::serve::ServeArgs;
use crate::config::{Config, LogFormat, DEFAULT_DATABASE};
use crate::store::{Database, Durability, StoreConfig};

/// The config file's keys: every setting of `keygate serve`. An unknown
/// key or a value of the wrong type is refused at start-up, naming it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub db: Option<String>,
    pub master_key_file: Option<PathBuf>,
    pub durability: Option<Durability>,
    pub db_busy_timeout_ms: Option<u64>,
    pub admin_token: Option<String>,
    pub skew_secs: Option<u32>,
    pub max_body_bytes: Option<usize>,
    pub body_budget_bytes: Option<usize>,
    pub max_connections: Option<u64>,
    pub body_timeout_secs: Option<u64>,
    pub upstream: Option<String>,
    pub public_origin: Option<String>,
    pub workers: Option<usize>,
    /// CIDRs, as a TOML list or one comma-separated string.
    pub trusted_proxies: Option<StringOrList>,
    pub log_format: Option<LogFormat>,
    pub access_log: Option<bool>,
    /// The log level (`KEYGATE_LOG`): error, warn, info, debug, trace.
    pub log: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    List(Vec<String>),
}

impl StringOrList {
    fn joined(&self) -> String {
        match self {
            StringOrList::One(text) => text.clone(),
            StringOrList::List(items) => items.join(","),
        }
    }
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<ConfigFile, String> {
        let shown = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("config file {shown}: cannot read it: {e}"))?;
        let deserializer = toml::Deserializer::parse(&text)
            .map_err(|e| format!("config file {shown}: not TOML: {e}"))?;
        serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let what = inner.message().trim_end().to_owned();
            if key == "." {
                format!("config file {shown}: {what}")
            } else {
                format!("config file {shown}: key `{key}`: {what}")
            }
        })
    }
}

/// One setting as `config show` prints it.
pub struct Shown {
    pub name: &'static str,
    pub value: String,
    pub source: &'static str,
}

/// Lays flags, variables and the file over the defaults, recording where
/// each value came from.
struct Resolver<'a> {
    matches: &'a ArgMatches,
    shown: Vec<Shown>,
}

impl Resolver<'_> {
    /// `from_args`: the flag's or variable's value (clap's `id` is the
    /// field's name); `from_file`: the file's.
    fn pick<T: Display>(
        &mut self,
        name: &'static str,
        from_args: Option<T>,
        from_file: Option<T>,
        default: T,
    ) -> T {
        self.pick_shown(name, from_args, from_file, default, |v| v.to_string())
    }

    fn pick_shown<T>(
        &mut self,
        name: &'static str,
        from_args: Option<T>,
        from_file: Option<T>,
        default: T,
        show: impl Fn(&T) -> String,
    ) -> T {
        let (value, source) = match (from_args, from_file) {
            (Some(value), _) => (value, self.source_of(name)),
            (None, Some(value)) => (value, "file"),
            (None, None) => (default, "default"),
        };
        self.shown.push(Shown {
            name,
            value: show(&value),
            source,
        });
        value
    }

    fn source_of(&self, id: &str) -> &'static str {
        match self.matches.value_source(id) {
            Some(ValueSource::EnvVariable) => "env",
            Some(ValueSource::DefaultValue) => "default",
            _ => "flag",
        }
    }
}

fn none_or<T: Display>(value: &Option<T>) -> String {
    value
        .as_ref()
        .map_or_else(|| "(none)".to_owned(), T::to_string)
}

/// The server's `Config` from `args` (with the `matches` they came from,
/// for the sources) and the config file they name, if any; and what
/// `config show` prints.
pub fn resolve(args: ServeArgs, matches: &ArgMatches) -> Result<(Config, Vec<Shown>), String> {
    let file = match &args.config {
        Some(path) => ConfigFile::load(path)?,
        None => ConfigFile::default(),
    };
    let mut r = Resolver {
        matches,
        shown: Vec::new(),
    };
    if let Some(path) = &args.config {
        r.shown.push(Shown {
            name: "config",
            value: path.display().to_string(),
            source: r.source_of("config"),
        });
    }
    let defaults = Config::new(Database::parse(DEFAULT_DATABASE));
    let store_defaults = StoreConfig::new(Database::parse(DEFAULT_DATABASE));

    let db = r.pick_shown(
        "db",
        args.db.db,
        file.db,
        DEFAULT_DATABASE.to_owned(),
        |db| Database::parse(db).to_string(),
    );
    let mut config = Config::with_store(StoreConfig::new(Database::parse(&db)));
    config.store.master_key_file = r.pick_shown(
        "master_key_file",
        args.db.master_key_file.map(Some),
        file.master_key_file.map(Some),
        None,
        |p| none_or(&p.as_ref().map(|p| p.display())),
    );
    config.store.durability = r.pick_shown(
        "durability",
        args.db.durability,
        file.durability,
        store_defaults.durability,
        |d| format!("{d:?}").to_lowercase(),
    );
    config.store.busy_timeout = Duration::from_millis(r.pick(
        "db_busy_timeout_ms",
        args.db.db_busy_timeout_ms,
        file.db_busy_timeout_ms,
        store_defaults.busy_timeout.as_millis() as u64,
    ));
    config.listen = r.pick("listen", args.listen, file.listen, defaults.listen);
    config.admin_listen = r.pick(
        "admin_listen",
        args.admin_listen,
        file.admin_listen,
        defaults.admin_listen,
    );
    config.admin_token = r.pick_shown(
        "admin_token",
        args.admin_token.map(Some),
        file.admin_token.map(Some),
        None,
        |t| match t {
            Some(_) => "(redacted)".into(),
            None => "(none: <db>.admin-token with SQLite)".into(),
        },
    );
    config.skew_secs = r.pick(
        "skew_secs",
        args.skew_secs,
        file.skew_secs,
        defaults.skew_secs,
    );
    config.max_body_bytes = r.pick(
        "max_body_bytes",
        args.max_body_bytes,
        file.max_body_bytes,
        defaults.max_body_bytes,
    );
    config.body_budget_bytes = r.pick(
        "body_budget_bytes",
        args.body_budget_bytes,
        file.body_budget_bytes,
        defaults.body_budget_bytes,
    );
    config.max_connections = usize::try_from(r.pick(
        "max_connections",
        args.max_connections,
        file.max_connections,
        defaults.max_connections as u64,
    ))
    .unwrap_or(usize::MAX);
    config.body_timeout = Duration::from_secs(r.pick(
        "body_timeout_secs",
        args.body_timeout_secs,
        file.body_timeout_secs,
        defaults.body_timeout.as_secs(),
    ));
    config.upstream = r.pick_shown(
        "upstream",
        args.upstream.map(Some),
        file.upstream.map(Some),
        None,
        none_or,
    );
    config.public_origin = r.pick_shown(
        "public_origin",
        args.public_origin.map(Some),
        file.public_origin.map(Some),
        None,
        none_or,
    );
    config.workers = r.pick_shown(
        "workers",
        args.workers.map(Some),
        file.workers.map(Some),
        None,
        |w| w.map_or_else(|| "(one per core)".into(), |w| w.to_string()),
    );
    let proxies = r.pick_shown(
        "trusted_proxies",
        args.trusted_proxies,
        file.trusted_proxies.map(|p| p.joined()),
        String::new(),
        |p| {
            if p.is_empty() {
                "(none)".into()
            } else {
                p.clone()
            }
        },
    );
    config.trusted_proxies = crate::policy::source::parse_networks(&proxies)
        .map_err(|e| format!("trusted_proxies: {e}"))?;
    config.log_format = r.pick_shown(
        "log_format",
        args.log_format,
        file.log_format,
        defaults.log_format,
        |f| format!("{f:?}").to_lowercase(),
    );
    config.access_log = r.pick(
        "access_log",
        args.access_log.then_some(true),
        file.access_log,
        defaults.access_log,
    );
    config.log_level = r.pick("log", args.log, file.log, defaults.log_level);
    Ok((config, r.shown))
}
