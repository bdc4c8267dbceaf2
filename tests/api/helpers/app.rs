//! The very `Application` the binary runs, in-process on random loopback
//! ports with a fresh database, and the helpers a test calls on it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;

use keygate::clock::Clock;
use keygate::config::Config;
use keygate::http::Application;
use serde_json::Value;

use super::database::{Backend, TestDb};
use super::http::*;

pub struct TestApp {
    pub public: SocketAddr,
    pub admin: SocketAddr,
    /// The SQLite file (on PostgreSQL: the directory of the master key).
    pub db_path: PathBuf,
    /// Holds the database for in-process servers.
    pub _db: Option<TestDb>,
    /// The server's clock: a test that made it manual moves it with
    /// `app.clock.advance(...)` instead of sleeping.
    pub clock: Clock,
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
    let clock = config.clock.clone();
    let (public, admin) = spawn_in_thread(config);
    TestApp {
        public,
        admin,
        db_path: db.path(),
        _db: Some(db),
        clock,
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
