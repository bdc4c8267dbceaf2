//! A throwaway PostgreSQL server for the tests, started the way the tests
//! start keygate: Debian's `postgresql` binaries, `initdb` in a temporary
//! directory, `postgres` on a random loopback port. When the tests run as
//! root (as CI does) the server runs as the `postgres` user, since
//! PostgreSQL refuses to run as root.
//!
//! A missing server is a failure, never a skip: the README's test command
//! installs the package.
//!
//! The server is stopped when the test process exits, however it exits: a
//! small shell wrapper holds the read end of a pipe whose write end only
//! this process has, and stops the server when the pipe closes.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub struct PgServer {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    run_as_postgres: bool,
    /// The wrapper and its pipe; dropping the pipe stops the server.
    running: Mutex<Option<(Child, ChildStdin)>>,
    /// More `-c name=value` settings, e.g. for TLS.
    settings: Vec<String>,
    /// The wrapper deletes the directory after the server stops.
    remove_when_stopped: bool,
    dir: TempDir,
}

/// The server most tests share; each test gets a database of its own.
/// A static is never dropped, so its wrapper also removes the directory
/// once the server has stopped (a data directory is a few hundred MB
/// after a test run).
pub fn shared() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(|| PgServer::create(|_| Vec::new(), true))
}

fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("KEYGATE_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists() && bin.join("postgres").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin: install Debian's \
             postgresql package (the README's test command, scripts/test, does) or set \
             KEYGATE_TEST_PG_BIN"
        )
    })
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("run id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PgServer {
    pub fn start() -> PgServer {
        Self::start_with(|_| Vec::new())
    }

    /// `settings` gets the server's directory (owned by the server's user)
    /// and returns more `name=value` settings for it.
    pub fn start_with(settings: impl FnOnce(&Path) -> Vec<String>) -> PgServer {
        Self::create(settings, false)
    }

    fn create(settings: impl FnOnce(&Path) -> Vec<String>, remove_when_stopped: bool) -> PgServer {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("keygate-pg-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        let run_as_postgres = is_root();
        let settings = settings(dir.path());
        if run_as_postgres {
            let chown = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(chown.success(), "chown to postgres failed");
        }
        let server = PgServer {
            bin,
            data,
            port: free_port(),
            run_as_postgres,
            running: Mutex::new(None),
            settings,
            remove_when_stopped,
            dir,
        };
        let initdb = server
            .command(&server.bin.join("initdb"))
            .arg("-D")
            .arg(&server.data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-N",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .output()
            .unwrap();
        assert!(
            initdb.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        server.run();
        server
    }

    fn command(&self, program: &Path) -> Command {
        if self.run_as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    /// Starts the server on its data directory and waits until it answers.
    pub fn run(&self) {
        let extra: String = self.settings.iter().map(|s| format!(" -c '{s}'")).collect();
        let script = format!(
            "\"{bin}/postgres\" -D \"{data}\" -p {port} -k \"{data}\" \
             -c listen_addresses=127.0.0.1 -c max_connections=300{extra} \
             </dev/null >>\"{data}/server.log\" 2>&1 & pid=$!; \
             read _; kill -INT $pid 2>/dev/null; wait $pid{cleanup}",
            bin = self.bin.display(),
            data = self.data.display(),
            port = self.port,
            cleanup = if self.remove_when_stopped {
                format!("; rm -rf \"{}\"", self.dir.path().display())
            } else {
                String::new()
            },
        );
        let mut child = self
            .command(Path::new("/bin/sh"))
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        *self.running.lock().unwrap() = Some((child, stdin));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.answers() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start: {}",
                std::fs::read_to_string(self.data.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn answers(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `pg_ctl stop -m immediate`: the server dies as in a crash (no
    /// checkpoint), and recovers from its WAL when run again.
    pub fn stop_immediately(&self) {
        let stopped = self
            .command(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output()
            .unwrap();
        assert!(
            stopped.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&stopped.stderr)
        );
        if let Some((mut child, stdin)) = self.running.lock().unwrap().take() {
            drop(stdin);
            let _ = child.wait();
        }
    }

    /// Runs SQL as the superuser, returns psql's unaligned output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-d", database, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A new, empty database; returns its name.
    pub fn create_database(&self) -> String {
        let name = format!(
            "kg_{}",
            keygate::credentials::new_nonce().to_ascii_lowercase()
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some((mut child, mut stdin)) = self.running.lock().unwrap().take() {
            let _ = stdin.write_all(b"stop\n");
            drop(stdin);
            let _ = child.wait();
        }
    }
}
