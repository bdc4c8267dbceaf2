//! Several keygate instances on one PostgreSQL database, as operators run
//! them behind a load balancer: a pair is accepted once across all of
//! them, a revocation through one is obeyed by all, nothing an instance
//! accepted is forgotten when it is killed, and a database restart costs
//! 503s, never an accept without a recorded nonce.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::helpers::*;
use crate::postgres_server::{self, PgServer};

/// The second records nonces on four connections at once, so concurrent
/// batches of one instance are covered too.
fn three_instances(db: &TestDb) -> [Binary; 3] {
    [
        Binary::serve_on(db, &[]),
        Binary::serve_on(db, &[("KEYGATE_PG_NONCE_CONNECTIONS", "4")]),
        Binary::serve_on(db, &[]),
    ]
}

#[test]
fn three_instances_accept_one_copy_of_64_concurrent_copies() {
    let db = TestDb::new(Backend::Postgres);
    let instances = three_instances(&db);
    let key = instances[0].app().create_key();
    let publics: Vec<_> = instances.iter().map(|i| i.public).collect();
    for round in 0..5 {
        let signed = Signing::new(&key, "POST", "/v1/echo", b"once");
        let results = send_at_once(&publics, 64, &signed.authorization());
        assert_eq!(
            accepted_and_replays(&results),
            (1, 63),
            "round {round}: {results:?}"
        );
    }
}

#[test]
fn a_key_revoked_through_one_instance_is_refused_by_the_others() {
    let db = TestDb::new(Backend::Postgres);
    let [a, b, c] = three_instances(&db);
    let key = a.app().create_key();
    for instance in [&b, &c] {
        // Each has the key in its cache before the revocation.
        assert_eq!(
            instance.app().signed(&key, "GET", "/v1/whoami", b"").status,
            200
        );
    }
    let revoked = a
        .app()
        .admin("POST", &format!("/admin/keys/{}/revoke", key.key_id), None);
    assert_eq!(revoked.status, 200, "{:?}", revoked.body);
    for instance in [&b, &c] {
        let answer = instance.app().signed(&key, "GET", "/v1/whoami", b"");
        assert_eq!(
            (answer.status, answer.code()),
            (401, "key_revoked"),
            "{:?}",
            answer.body
        );
    }
    // And a key created through one instance works on the others at once.
    let fresh = b.app().create_key();
    assert_eq!(c.app().signed(&fresh, "GET", "/v1/whoami", b"").status, 200);
}

#[test]
fn everything_a_killed_instance_accepted_is_refused_by_the_others() {
    let db = TestDb::new(Backend::Postgres);
    let [a, b, c] = three_instances(&db);
    let key = a.app().create_key();
    let load = Load::start(a.public, &key, 8);
    // Real traffic into a real process before it is killed.
    std::thread::sleep(Duration::from_millis(1500));
    a.kill_9();
    let answers = load.finish();
    let accepted: Vec<&String> = answers
        .iter()
        .filter(|(_, status, _)| *status == 200)
        .map(|(authorization, _, _)| authorization)
        .collect();
    assert!(accepted.len() > 50, "only {} accepted", accepted.len());
    for (i, authorization) in accepted.iter().enumerate() {
        let other = if i % 2 == 0 { &b } else { &c };
        let replay = other
            .app()
            .send("POST", "/v1/echo", b"load", Some(authorization));
        assert_eq!(
            (replay.status, replay.code()),
            (401, "nonce_reused"),
            "replay {i} of {}",
            accepted.len()
        );
    }
}

#[test]
fn a_database_restart_under_load_costs_503s_never_an_unrecorded_accept() {
    let server = PgServer::start();
    let name = server.create_database();
    let master_key = tempfile::tempdir().unwrap();
    let key_file = master_key.path().join("master-key");
    let url = server.url(&name);
    let env = [
        ("KEYGATE_DB", url.as_str()),
        ("KEYGATE_MASTER_KEY_FILE", key_file.to_str().unwrap()),
        ("KEYGATE_DB_BUSY_TIMEOUT_MS", "1000"),
    ];
    let instance = Binary::serve(std::path::Path::new("unused"), &env);
    let key = instance.app().create_key();
    let load = Load::start(instance.public, &key, 4);
    // Load on the real server, then the real database down for a while.
    std::thread::sleep(Duration::from_millis(700));
    server.stop_immediately();
    std::thread::sleep(Duration::from_millis(2500));
    server.run();
    // Back by itself: the next calls connect again.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answers = load.answers.lock().unwrap().clone();
        let recovered = answers
            .iter()
            .rev()
            .take(20)
            .filter(|(_, s, _)| *s == 200)
            .count();
        if recovered == 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not serving again within 15 s of the restart"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let answers = load.finish();
    let unavailable = answers.iter().filter(|(_, s, _)| *s == 503).count();
    assert!(unavailable > 0, "no 503 while the database was down");
    for (_, status, code) in &answers {
        assert!(
            *status == 200 || (*status == 503 && code == "unavailable"),
            "{status} {code}"
        );
    }
    // Every accepted pair is in the database, crash recovery and all.
    let recorded: usize = server
        .psql(&name, "SELECT count(*) FROM nonces")
        .parse()
        .unwrap();
    let accepted = answers.iter().filter(|(_, s, _)| *s == 200).count();
    assert!(
        recorded >= accepted,
        "{accepted} accepted, {recorded} recorded"
    );
    for (authorization, _, _) in answers.iter().filter(|(_, s, _)| *s == 200) {
        let replay = instance
            .app()
            .send("POST", "/v1/echo", b"load", Some(authorization));
        assert_eq!(replay.code(), "nonce_reused");
    }
}

fn serve_output(env: &[(&str, &str)]) -> std::process::Output {
    let mut child = Command::new(keygate_bin())
        .arg("serve")
        .env("KEYGATE_LISTEN", "127.0.0.1:0")
        .env("KEYGATE_ADMIN_LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It refuses at start-up or not at all.
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Every instance needs the same master key and admin token: keygate never
/// makes up a key for a database that has one, and refuses a wrong one.
#[test]
fn instances_must_share_the_master_key_and_the_admin_token() {
    let db = TestDb::new(Backend::Postgres);
    let first = Binary::serve_on(&db, &[]);
    first.app().create_key();
    let url = db.setting.as_str();

    let no_key_file = serve_output(&[("KEYGATE_DB", url), ("KEYGATE_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let said = String::from_utf8_lossy(&no_key_file.stderr);
    assert!(!no_key_file.status.success());
    assert!(said.contains("KEYGATE_MASTER_KEY_FILE"), "{said}");

    let elsewhere = tempfile::tempdir().unwrap();
    let missing = elsewhere.path().join("master-key");
    let missing_file = serve_output(&[
        ("KEYGATE_DB", url),
        ("KEYGATE_ADMIN_TOKEN", ADMIN_TOKEN),
        ("KEYGATE_MASTER_KEY_FILE", missing.to_str().unwrap()),
    ]);
    let said = String::from_utf8_lossy(&missing_file.stderr);
    assert!(!missing_file.status.success());
    assert!(said.contains("copy the file"), "{said}");
    assert!(!missing.exists(), "a new key file was made: {said}");

    let wrong = elsewhere.path().join("wrong-key");
    std::fs::write(&wrong, "0".repeat(64)).unwrap();
    let wrong_key = serve_output(&[
        ("KEYGATE_DB", url),
        ("KEYGATE_ADMIN_TOKEN", ADMIN_TOKEN),
        ("KEYGATE_MASTER_KEY_FILE", wrong.to_str().unwrap()),
    ]);
    let said = String::from_utf8_lossy(&wrong_key.stderr);
    assert!(!wrong_key.status.success());
    assert!(
        said.contains("not the one this database was created with"),
        "{said}"
    );

    let key_file = db.master_key_file().unwrap();
    let no_token = serve_output(&[
        ("KEYGATE_DB", url),
        ("KEYGATE_MASTER_KEY_FILE", key_file.to_str().unwrap()),
    ]);
    let said = String::from_utf8_lossy(&no_token.stderr);
    assert!(!no_token.status.success());
    assert!(said.contains("KEYGATE_ADMIN_TOKEN"), "{said}");
    assert!(!said.contains("password"), "{said}");
}

/// TLS to PostgreSQL: `verify-full` with the server's CA works, with
/// another CA it is refused; `require` refuses a server without TLS.
#[test]
fn tls_to_postgres_is_verified_as_sslmode_says() {
    let server = PgServer::start_with(|dir| {
        // Two CAs; the server's certificate is signed by the first.
        make_test_ca(dir, "ca");
        make_test_ca(dir, "other-ca");
        make_test_server_certificate(dir, "ca");
        // PostgreSQL refuses a key file others can read.
        std::fs::set_permissions(
            dir.join("server.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        vec![
            "ssl=on".into(),
            format!("ssl_cert_file={}", dir.join("server.pem").display()),
            format!("ssl_key_file={}", dir.join("server.key").display()),
        ]
    });
    let name = server.create_database();
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("master-key");
    let cli_on = |url: &str| {
        Command::new(keygate_bin())
            .args(["app", "list", "--json"])
            .env("KEYGATE_DB", url)
            .env("KEYGATE_MASTER_KEY_FILE", &key_file)
            .output()
            .unwrap()
    };
    let base = format!("postgres://postgres@localhost:{}/{name}", server.port());
    let root = server.dir().join("ca.pem");
    let verified = cli_on(&format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        root.display()
    ));
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    let other_root = server.dir().join("other-ca.pem");
    let refused = cli_on(&format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        other_root.display()
    ));
    assert!(!refused.status.success());
    let public_roots = cli_on(&format!("{base}?sslmode=verify-full"));
    assert!(!public_roots.status.success());

    let plain = postgres_server::shared();
    let plain_db = plain.create_database();
    let plain_url = plain
        .url(&plain_db)
        .replace("sslmode=disable", "sslmode=require");
    let no_tls = cli_on(&plain_url);
    assert!(
        !no_tls.status.success(),
        "require accepted a server without TLS"
    );
}

/// Pairs past their window are deleted by the maintenance thread, so the
/// table stays near rate x window however long keygate runs.
#[test]
fn expired_pairs_are_purged_from_postgres() {
    let app = spawn_app_on_with(Backend::Postgres, |c| c.skew_secs = 1);
    let key = app.create_key();
    for _ in 0..20 {
        assert_eq!(app.signed(&key, "GET", "/v1/whoami", b"").status, 200);
    }
    let name = database_name(&app);
    let count = || -> usize {
        postgres_server::shared()
            .psql(&name, "SELECT count(*) FROM nonces")
            .parse()
            .unwrap()
    };
    assert!(count() >= 20, "the accepted pairs are recorded");
    // Remembered until ts + skew + 1, purged on the next tick after.
    let deadline = Instant::now() + Duration::from_secs(10);
    while count() > 0 {
        assert!(Instant::now() < deadline, "{} pairs never purged", count());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The purge sweeps the table a range of pages at a time (there is no
/// index on expiry): on a table many ranges long, every expired pair goes
/// and every live one stays, wherever it lies.
#[test]
fn the_purge_sweeps_a_large_postgres_table_whole() {
    let app = spawn_app_on(Backend::Postgres);
    let key = app.create_key();
    let name = database_name(&app);
    let server = postgres_server::shared();
    // 100,000 pairs, about 800 pages (the sweep takes 128 a tick); every
    // tenth one live, so live rows share every page with expired ones.
    server.psql(
        &name,
        &format!(
            "INSERT INTO nonces (key_ref, nonce, expires_at)
             SELECT key_ref, 'pair-' || i, CASE WHEN i % 10 = 0 THEN 4102444800 ELSE 1000 END
             FROM keys, generate_series(1, 100000) AS i WHERE key_id = '{}'",
            key.key_id
        ),
    );
    let pages: u64 = server
        .psql(&name, "SELECT pg_relation_size('nonces') / 8192")
        .parse()
        .unwrap();
    assert!(pages > 4 * 128, "only {pages} pages");
    let expired = || -> usize {
        server
            .psql(&name, "SELECT count(*) FROM nonces WHERE expires_at = 1000")
            .parse()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while expired() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} expired pairs left",
            expired()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        server.psql(&name, "SELECT count(*) FROM nonces"),
        "10000",
        "live pairs were deleted"
    );
}

/// The name of an in-process server's PostgreSQL database.
fn database_name(app: &TestApp) -> String {
    let setting = &app._db.as_ref().unwrap().setting;
    setting
        .rsplit('/')
        .next()
        .and_then(|tail| tail.split('?').next())
        .unwrap()
        .to_owned()
}
