//! The databases tests run on: a SQLite file in a temporary directory, or
//! a database of its own on the test PostgreSQL server; the macro that
//! runs a test on both; and the CLI on such a database.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use tempfile::TempDir;

use super::binary::keygate_bin;

/// Which storage backend a test runs on. Tests that hold on both are
/// written once, taking a `Backend`, and listed in `on_both_backends!`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh database: a SQLite file in a temporary directory, or a new
/// database on the shared test PostgreSQL server (with the master key file
/// in a temporary directory, as an operator would give every instance).
pub struct TestDb {
    pub backend: Backend,
    /// What `--db` / `KEYGATE_DB` is set to.
    pub setting: String,
    pub dir: TempDir,
}

impl TestDb {
    pub fn new(backend: Backend) -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let setting = match backend {
            Backend::Sqlite => dir.path().join("keygate.db").display().to_string(),
            Backend::Postgres => {
                let server = crate::postgres_server::shared();
                server.url(&server.create_database())
            }
        };
        TestDb {
            backend,
            setting,
            dir,
        }
    }

    /// The SQLite file, or (PostgreSQL) the directory holding the key file.
    pub fn path(&self) -> PathBuf {
        match self.backend {
            Backend::Sqlite => PathBuf::from(&self.setting),
            Backend::Postgres => self.dir.path().to_owned(),
        }
    }

    pub fn master_key_file(&self) -> Option<PathBuf> {
        (self.backend == Backend::Postgres).then(|| self.dir.path().join("master-key"))
    }

    /// The environment a keygate process needs for this database.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![("KEYGATE_DB".to_owned(), self.setting.clone())];
        if let Some(file) = self.master_key_file() {
            env.push((
                "KEYGATE_MASTER_KEY_FILE".to_owned(),
                file.display().to_string(),
            ));
        }
        env
    }
}

/// Runs `keygate ARGS --json` on `db` and returns its JSON output.
pub fn cli(db: &TestDb, args: &[&str]) -> Value {
    let output = Command::new(keygate_bin())
        .args(args)
        .arg("--json")
        .envs(db.env())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "keygate {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Generates `#[test]`s that run each named `fn(Backend)` on SQLite and on
/// PostgreSQL: `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name($crate::helpers::Backend::Sqlite) } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name($crate::helpers::Backend::Postgres) } )*
        }
    };
}
