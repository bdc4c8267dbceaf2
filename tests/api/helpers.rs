//! Starting the real server (in-process on random loopback ports, or the
//! real binary) and talking to it over real HTTP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keygate::config::Config;
use keygate::http::Application;
use keygate::signature::{self, BodyHash, SignedParts};
use serde_json::Value;
use tempfile::TempDir;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdefghijkl";

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn fresh_nonce() -> String {
    keygate::credentials::new_nonce()
}

#[derive(Clone, Debug)]
pub struct TestKey {
    pub key_id: String,
    pub secret: String,
    pub app_id: String,
}

pub struct TestApp {
    pub public: SocketAddr,
    pub admin: SocketAddr,
    /// The SQLite file (on PostgreSQL: the directory of the master key).
    pub db_path: PathBuf,
    /// Holds the database for in-process servers.
    pub _db: Option<TestDb>,
}

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

/// A server on random loopback ports with a fresh SQLite database.
pub fn spawn_app() -> TestApp {
    spawn_app_with(|_| {})
}

pub fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_on_with(Backend::Sqlite, adjust)
}

/// A server on random loopback ports with a fresh database of `backend`.
pub fn spawn_app_on(backend: Backend) -> TestApp {
    spawn_app_on_with(backend, |_| {})
}

pub fn spawn_app_on_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let db = TestDb::new(backend);
    let mut config = Config::new(keygate::store::Database::parse(&db.setting));
    config.store.master_key_file = db.master_key_file();
    config.listen = "127.0.0.1:0".into();
    config.admin_listen = "127.0.0.1:0".into();
    config.admin_token = Some(ADMIN_TOKEN.into());
    config.workers = Some(2);
    adjust(&mut config);
    let (public, admin) = spawn_in_thread(config);
    TestApp {
        public,
        admin,
        db_path: db.path(),
        _db: Some(db),
    }
}

/// Runs the very `Application` the binary runs, in its own actix system on
/// a background thread; it lives until the test process ends.
pub fn spawn_in_thread(config: Config) -> (SocketAddr, SocketAddr) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            match Application::build(config) {
                Ok(app) => {
                    tx.send(Ok((app.public_addr(), app.admin_addr()))).unwrap();
                    let _ = app.run_until_stopped().await;
                }
                Err(e) => tx.send(Err(e)).unwrap(),
            }
        })
    });
    rx.recv().unwrap().expect("server starts")
}

/// An HTTP answer: status, headers (lowercase names) and JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn answer(result: Result<ureq::Response, ureq::Error>) -> Answer {
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = response.status();
    let headers = response
        .headers_names()
        .into_iter()
        .map(|n| {
            let v = response.header(&n).unwrap_or("").to_owned();
            (n, v)
        })
        .collect();
    let text = response.into_string().unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        headers,
        body,
    }
}

/// How to sign: every field can be overridden to build a tampered request.
#[derive(Clone)]
pub struct Signing<'a> {
    pub key: &'a TestKey,
    pub method: &'a str,
    pub target: &'a str,
    pub body: &'a [u8],
    pub timestamp: String,
    pub nonce: String,
}

impl<'a> Signing<'a> {
    pub fn new(key: &'a TestKey, method: &'a str, target: &'a str, body: &'a [u8]) -> Self {
        Signing {
            key,
            method,
            target,
            body,
            timestamp: now().to_string(),
            nonce: fresh_nonce(),
        }
    }

    pub fn authorization(&self) -> String {
        signature::authorization_header(
            &self.key.secret,
            &SignedParts {
                key_id: &self.key.key_id,
                timestamp: &self.timestamp,
                nonce: &self.nonce,
                method: self.method,
                request_target: self.target,
                body_hash: BodyHash::of(self.body),
            },
        )
    }
}

impl TestApp {
    pub fn url(&self, target: &str) -> String {
        format!("http://{}{}", self.public, target)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// Sends `method target` with `body` and the given Authorization header
    /// (or none), over a real connection.
    pub fn send(
        &self,
        method: &str,
        target: &str,
        body: &[u8],
        authorization: Option<&str>,
    ) -> Answer {
        let headers: Vec<(&str, &str)> = authorization
            .map(|auth| ("Authorization", auth))
            .into_iter()
            .collect();
        self.send_with(method, target, body, &headers)
    }

    /// Like `send`, with any headers.
    pub fn send_with(
        &self,
        method: &str,
        target: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = ureq::request(method, &self.url(target));
        for (name, value) in headers {
            req = req.set(name, value);
        }
        answer(if body.is_empty() {
            req.call()
        } else {
            req.send_bytes(body)
        })
    }

    /// A correctly signed request with a fresh nonce.
    pub fn signed(&self, key: &TestKey, method: &str, target: &str, body: &[u8]) -> Answer {
        let signing = Signing::new(key, method, target, body);
        self.send(method, target, body, Some(&signing.authorization()))
    }

    pub fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        self.admin_with_token(method, path, body, Some(ADMIN_TOKEN))
    }

    pub fn admin_with_token(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> Answer {
        let mut req = ureq::request(method, &self.admin_url(path));
        if let Some(token) = token {
            req = req.set("Authorization", &format!("Bearer {token}"));
        }
        answer(match body {
            Some(json) => req
                .set("Content-Type", "application/json")
                .send_string(&json.to_string()),
            None => req.call(),
        })
    }

    /// `GET /admin/metrics`, as `name{labels}` → value for every sample.
    pub fn metrics(&self) -> std::collections::HashMap<String, f64> {
        let answer = self.admin("GET", "/admin/metrics", None);
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        assert!(answer
            .header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text"));
        let text = answer.body.as_str().expect("metrics are text");
        assert!(text.ends_with("# EOF\n"), "{text}");
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| {
                let (name, value) = line.rsplit_once(' ').unwrap();
                (name.to_owned(), value.parse().unwrap())
            })
            .collect()
    }

    /// A new application with one key, through the admin API.
    pub fn create_key(&self) -> TestKey {
        let app = self.admin(
            "POST",
            "/admin/apps",
            Some(serde_json::json!({ "name": "Acme Corp" })),
        );
        assert_eq!(app.status, 201, "{:?}", app.body);
        let app_id = app.body["app_id"].as_str().unwrap().to_owned();
        self.create_key_for(&app_id, None)
    }

    pub fn create_key_for(&self, app_id: &str, expires_at: Option<&str>) -> TestKey {
        let body = match expires_at {
            Some(at) => serde_json::json!({ "expires_at": at }),
            None => serde_json::json!({}),
        };
        let key = self.admin("POST", &format!("/admin/apps/{app_id}/keys"), Some(body));
        assert_eq!(key.status, 201, "{:?}", key.body);
        TestKey {
            key_id: key.body["key_id"].as_str().unwrap().to_owned(),
            secret: key.body["secret"].as_str().unwrap().to_owned(),
            app_id: app_id.to_owned(),
        }
    }
}

/// Writes raw bytes on a fresh connection and reads the whole answer: for
/// requests an HTTP client library would refuse to send (non-ASCII header
/// bytes, oversized headers).
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

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
                    let addr = |name: &str| -> SocketAddr {
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

/// Sends the same signed `POST /v1/echo` (body "once") from `count` threads
/// released together, spread over `servers`; returns each (status, code).
pub fn send_at_once(
    servers: &[SocketAddr],
    count: usize,
    authorization: &str,
) -> Vec<(u16, String)> {
    let barrier = Arc::new(std::sync::Barrier::new(count));
    let threads: Vec<_> = (0..count)
        .map(|i| {
            let url = format!("http://{}/v1/echo", servers[i % servers.len()]);
            let (authorization, barrier) = (authorization.to_owned(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let answer = answer(
                    ureq::post(&url)
                        .set("Authorization", &authorization)
                        .send_bytes(b"once"),
                );
                (answer.status, answer.code().to_owned())
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// (accepted, refused as replays) among `send_at_once` results.
pub fn accepted_and_replays(results: &[(u16, String)]) -> (usize, usize) {
    (
        results.iter().filter(|(s, _)| *s == 200).count(),
        results.iter().filter(|(_, c)| c == "nonce_reused").count(),
    )
}

/// Runs openssl in `dir`; a failure fails the test.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway certificate authority in `dir`: `NAME.pem` and `NAME.key`.
pub fn make_test_ca(dir: &Path, name: &str) {
    let (pem, key, subject) = (
        format!("{name}.pem"),
        format!("{name}.key"),
        format!("/CN=keygate test {name}"),
    );
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &pem,
            "-days", "1", "-subj", &subject,
        ],
    );
}

/// `server.pem` and `server.key` in `dir`: a certificate for localhost and
/// 127.0.0.1, signed by the test CA `ca` made there before.
pub fn make_test_server_certificate(dir: &Path, ca: &str) {
    std::fs::write(
        dir.join("leaf.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "leaf.cnf",
        ],
    );
}

/// Signed requests sent one after another on `threads` threads until
/// `stop`; every answer is kept with the request that got it.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// (Authorization, status, error code) of every request so far.
    pub answers: Arc<Mutex<Vec<(String, u16, String)>>>,
}

impl Load {
    pub fn start(target: std::net::SocketAddr, key: &TestKey, threads: usize) -> Load {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|_| {
                let (stop, answers, key) = (stop.clone(), answers.clone(), key.clone());
                std::thread::spawn(move || {
                    let agent = ureq::AgentBuilder::new()
                        .timeout(Duration::from_secs(10))
                        .build();
                    let url = format!("http://{target}/v1/echo");
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let authorization =
                            Signing::new(&key, "POST", "/v1/echo", b"load").authorization();
                        let (status, code) = match agent
                            .post(&url)
                            .set("Authorization", &authorization)
                            .send_bytes(b"load")
                        {
                            Ok(r) => (r.status(), String::new()),
                            Err(ureq::Error::Status(s, r)) => {
                                let body: serde_json::Value = r
                                    .into_string()
                                    .ok()
                                    .and_then(|t| serde_json::from_str(&t).ok())
                                    .unwrap_or_default();
                                (s, body["error"]["code"].as_str().unwrap_or("").to_owned())
                            }
                            // The instance was killed mid-request.
                            Err(_) => (0, "transport".into()),
                        };
                        answers.lock().unwrap().push((authorization, status, code));
                    }
                })
            })
            .collect();
        Load {
            stop,
            threads,
            answers,
        }
    }

    /// Lets the load run for `duration`, then finishes it.
    pub fn finish_after(self, duration: Duration) -> Vec<(String, u16, String)> {
        std::thread::sleep(duration);
        self.finish()
    }

    pub fn finish(self) -> Vec<(String, u16, String)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
        Arc::try_unwrap(self.answers).unwrap().into_inner().unwrap()
    }
}
