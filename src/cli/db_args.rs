//! The database flags every command takes (`--db` / `KEYGATE_DB`, ...):
//! optional overrides of `StoreConfig`'s defaults, which live there alone.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::clock::Clock;
use crate::config::DEFAULT_DATABASE;
use crate::store::{self, Catalog, Database, Durability, StoreConfig};

#[derive(Args, Clone)]
pub struct DbArgs {
    /// SQLite database file, or a postgres:// URL (PostgreSQL, for several instances)
    /// [default: ./keygate.db].
    #[arg(long, env = "KEYGATE_DB")]
    pub(super) db: Option<String>,
    /// Master key for secrets at rest [default with SQLite: <db>.master-key, created on first use;
    /// required with PostgreSQL].
    #[arg(long, env = "KEYGATE_MASTER_KEY_FILE")]
    pub(super) master_key_file: Option<PathBuf>,
    /// normal: survives kill -9; full: fsync per commit, survives power loss [default: normal].
    #[arg(long, env = "KEYGATE_DURABILITY", value_enum)]
    pub(super) durability: Option<Durability>,
    /// How long a request waits for the database (a lock, an answer) before refusing (503)
    /// [default: 2000].
    #[arg(long, env = "KEYGATE_DB_BUSY_TIMEOUT_MS")]
    pub(super) db_busy_timeout_ms: Option<u64>,
}

impl DbArgs {
    pub fn store_config(&self) -> StoreConfig {
        let mut config = StoreConfig::new(Database::parse(
            self.db.as_deref().unwrap_or(DEFAULT_DATABASE),
        ));
        config.master_key_file = self.master_key_file.clone();
        if let Some(durability) = self.durability {
            config.durability = durability;
        }
        if let Some(millis) = self.db_busy_timeout_ms {
            config.busy_timeout = Duration::from_millis(millis);
        }
        config
    }

    /// The catalog, for an admin command (its audit events name the CLI).
    pub fn open(&self) -> Result<Catalog, String> {
        store::open_catalog(
            &self.store_config(),
            store::instance_name("cli"),
            Clock::system(),
        )
    }
}
