//! The real `keygate` binary, as an operator runs it: started on random
//! ports, its log captured, stopped with SIGTERM or SIGKILL.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use keygate::clock::Clock;

use super::app::TestApp;
use super::database::TestDb;
use super::http::ADMIN_TOKEN;

/// The real `keygate` binary, as an operator runs it.
pub struct Binary {
    pub child: Child,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub db_path: PathBuf,
    /// Everything the process wrote to stderr so far.
    pub log: Arc<Mutex<String>>,
}

pub fn keygate_bin() -> &'static str {
    env!("CARGO_BIN_EXE_keygate")
}

impl Binary {
    /// Starts `keygate serve` on the SQLite file `db`.
    pub fn serve(db: &Path, extra_env: &[(&str, &str)]) -> Binary {
        Self::serve_with(
            &[("KEYGATE_DB".into(), db.display().to_string())],
            db,
            extra_env,
            &[],
        )
    }

    /// Starts `keygate serve` on a test database of either backend.
    pub fn serve_on(db: &TestDb, extra_env: &[(&str, &str)]) -> Binary {
        Self::serve_with(&db.env(), &db.path(), extra_env, &[])
    }

    /// The same with command-line flags after `serve`.
    pub fn serve_on_with_args(db: &TestDb, extra_env: &[(&str, &str)], args: &[&str]) -> Binary {
        Self::serve_with(&db.env(), &db.path(), extra_env, args)
    }

    /// Starts `keygate serve` with random ports and waits until it listens
    /// (it logs both addresses).
    fn serve_with(
        db_env: &[(String, String)],
        db: &Path,
        extra_env: &[(&str, &str)],
        args: &[&str],
    ) -> Binary {
        let mut child = Command::new(keygate_bin())
            .arg("serve")
            .args(args)
            .envs(db_env.iter().map(|(k, v)| (k, v)))
            .env("KEYGATE_LISTEN", "127.0.0.1:0")
            .env("KEYGATE_ADMIN_LISTEN", "127.0.0.1:0")
            .env("KEYGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .envs(extra_env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(String::new()));
        let log_writer = log.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log_writer.lock().unwrap().push_str(&format!("{line}\n"));
                if !sent && line.contains("keygate listening") {
                    // Text (`public=...`) or JSON (`"public":"..."`) logs.
                    let json: Option<serde_json::Value> = serde_json::from_str(&line).ok();
                    let addr = |name: &str| -> SocketAddr {
                        if let Some(json) = &json {
                            return json[name].as_str().unwrap().parse().unwrap();
                        }
                        let start = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
                        line[start..]
                            .split_whitespace()
                            .next()
                            .unwrap()
                            .parse()
                            .unwrap()
                    };
                    tx.send((addr("public"), addr("admin"))).unwrap();
                    sent = true;
                }
            }
        });
        let (public, admin) = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "keygate serve did not start listening: {}",
                    log.lock().unwrap()
                )
            });
        Binary {
            child,
            public,
            admin,
            db_path: db.to_owned(),
            log,
        }
    }

    /// The same helpers as for an in-process server.
    pub fn app(&self) -> TestApp {
        TestApp {
            public: self.public,
            admin: self.admin,
            db_path: self.db_path.clone(),
            _db: None,
            clock: Clock::system(),
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, as a service manager stops it; waits (at most 30 s) for the
    /// process to exit and returns its status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "keygate did not exit after SIGTERM: {}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `cargo`, run from inside a test as a partner would run it (cargo's build
/// lock is free while tests run).
pub fn nested_cargo() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO"));
    // Cargo gives this test process the package's CARGO_PKG_* and
    // CARGO_MANIFEST_* variables. Passed on, they make the inner cargo see
    // different values for build scripts that watch them (ring's does), so
    // it rebuilt ring and all above it on every run (25 s), and the next
    // `cargo test` rebuilt them back.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || name.starts_with("CARGO_BIN_")
            || matches!(
                &*name,
                "CARGO_CRATE_NAME" | "CARGO_PRIMARY_PACKAGE" | "CARGO_TARGET_TMPDIR" | "OUT_DIR"
            )
        {
            c.env_remove(&*name);
        }
    }
    c
}
