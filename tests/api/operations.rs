//! What operators reach for (issue 30): request ids on every answer, the
//! config file and `config show`, JSON and access logs that never carry a
//! secret, backup while serving and a restore that refuses older
//! signatures, shell completions and the man page.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::helpers::*;
use crate::raw_upstream::RawUpstream;

fn keygate(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(keygate_bin())
        .args(args)
        .env_remove("KEYGATE_CONFIG")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn every_answer_carries_a_request_id_and_refusals_repeat_it() {
    let upstream = RawUpstream::ok();
    let app = spawn_app_with(|c| c.upstream = Some(upstream.url()));
    let key = app.create_key();
    // The caller's own, when acceptable: in the header and the refusal.
    let refused = app.send_with(
        "GET",
        "/v1/whoami",
        b"",
        &[("X-Request-Id", "partner-42.a_b")],
    );
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("x-request-id"), Some("partner-42.a_b"));
    assert_eq!(refused.body["error"]["request_id"], "partner-42.a_b");
    // Otherwise one of keygate's, on both listeners and on success.
    for (answer, what) in [
        (
            app.send_with("GET", "/healthz", b"", &[("X-Request-Id", "has space")]),
            "healthz",
        ),
        (app.signed(&key, "GET", "/v1/whoami", b""), "whoami"),
        (app.admin("GET", "/admin/apps", None), "admin"),
        (
            app.admin_with_token("GET", "/admin/apps", None, None),
            "admin refusal",
        ),
    ] {
        let id = answer
            .header("x-request-id")
            .unwrap_or_else(|| panic!("{what}: no id"));
        assert_eq!(id.len(), 22, "{what}: {id}");
        assert!(
            id.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{what}: {id}"
        );
        if answer.status >= 400 {
            assert_eq!(answer.body["error"]["request_id"], id, "{what}");
        }
    }
    let long = "a".repeat(129);
    let answer = app.send_with("GET", "/healthz", b"", &[("X-Request-Id", &long)]);
    assert_ne!(answer.header("x-request-id"), Some(long.as_str()));
    // Gateway mode: the upstream gets the same id the partner sees.
    let signing = Signing::new(&key, "GET", "/orders/1", b"");
    let through = app.send_with(
        "GET",
        "/orders/1",
        b"",
        &[
            ("Authorization", &signing.authorization()),
            ("X-Request-Id", "trace-7"),
        ],
    );
    assert_eq!(through.status, 200);
    assert_eq!(through.header("x-request-id"), Some("trace-7"));
    let seen = upstream.requests();
    assert_eq!(seen.last().unwrap().all("x-request-id"), ["trace-7"]);
    let signing = Signing::new(&key, "GET", "/orders/2", b"");
    let made = app.send_with(
        "GET",
        "/orders/2",
        b"",
        &[
            ("Authorization", &signing.authorization()),
            ("X-Request-Id", "bad id"),
        ],
    );
    let id = made.header("x-request-id").unwrap().to_owned();
    assert_eq!(
        upstream.requests().last().unwrap().all("x-request-id"),
        [id.as_str()]
    );
}

/// The README's example config file, as an operator would copy it.
fn readme_example() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme
        .find("```toml\n# /etc/keygate/keygate.toml")
        .expect("the README's example")
        + 8;
    let end = start + readme[start..].find("```").unwrap();
    readme[start..end].to_owned()
}

fn shown(output: &std::process::Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn the_config_file_sits_between_the_environment_and_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keygate.toml");
    std::fs::write(&file, readme_example()).unwrap();
    let file = file.to_str().unwrap();
    let settings = shown(&keygate(
        &["config", "show", "--config", file, "--json"],
        &[],
    ));
    assert_eq!(
        settings["listen"],
        json!({"value": "0.0.0.0:8080", "source": "file"})
    );
    assert_eq!(
        settings["trusted_proxies"],
        json!({"value": "10.0.0.0/8", "source": "file"})
    );
    assert_eq!(
        settings["log_format"],
        json!({"value": "json", "source": "file"})
    );
    assert_eq!(settings["access_log"]["value"], "true");
    assert_eq!(
        settings["max_connections"],
        json!({"value": "10000", "source": "default"})
    );

    // flag > env > file > default, and the file from the environment.
    let settings = shown(&keygate(
        &[
            "config",
            "show",
            "--json",
            "--skew-secs",
            "42",
            "--admin-token",
            ADMIN_TOKEN,
        ],
        &[
            ("KEYGATE_CONFIG", file),
            ("KEYGATE_SKEW_SECS", "90"),
            ("KEYGATE_LISTEN", "127.0.0.1:1"),
        ],
    ));
    assert_eq!(settings["config"]["source"], "env");
    assert_eq!(
        settings["skew_secs"],
        json!({"value": "42", "source": "flag"})
    );
    assert_eq!(
        settings["listen"],
        json!({"value": "127.0.0.1:1", "source": "env"})
    );
    assert_eq!(settings["admin_listen"]["source"], "file");
    // Secrets are never shown.
    assert_eq!(
        settings["admin_token"],
        json!({"value": "(redacted)", "source": "flag"})
    );
    let settings = shown(&keygate(
        &[
            "config",
            "show",
            "--json",
            "--db",
            "postgres://kg:hunter2@db.internal/keygate",
        ],
        &[],
    ));
    assert!(!settings.to_string().contains("hunter2"), "{settings}");

    // An unknown key or a wrong type stops start-up, naming the file and key.
    for (text, says) in [
        (
            "lisen = \"127.0.0.1:0\"\n",
            "key `lisen`: unknown field `lisen`",
        ),
        (
            "skew_secs = \"5m\"\n",
            "key `skew_secs`: invalid type: string \"5m\", expected u32",
        ),
        ("durability = \"sometimes\"\n", "key `durability`"),
        ("listen = \n", "not TOML"),
    ] {
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, text).unwrap();
        let db = dir.path().join("never.db");
        let out = keygate(
            &[
                "serve",
                "--config",
                bad.to_str().unwrap(),
                "--db",
                db.to_str().unwrap(),
            ],
            &[],
        );
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(
            said.contains("bad.toml") && said.contains(says),
            "{text}: {said}"
        );
        assert!(!db.exists(), "{text}: it started anyway");
    }
}

/// A whole session with JSON logs and the access log: every line is one
/// JSON object, and no secret, signature or admin token appears anywhere.
#[test]
fn json_and_access_logs_carry_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::serve(
        &dir.path().join("keygate.db"),
        &[
            ("KEYGATE_LOG_FORMAT", "json"),
            ("KEYGATE_ACCESS_LOG", "true"),
            ("KEYGATE_LOG", "debug"),
        ],
    );
    let app = server.app();
    let key = app.create_key();
    let mut secrets = vec![key.secret.clone(), ADMIN_TOKEN.to_owned()];
    let mut signatures = Vec::new();
    for target in ["/v1/whoami", "/v1/whoami?x=1"] {
        let signing = Signing::new(&key, "GET", target, b"");
        let authorization = signing.authorization();
        signatures.push(
            authorization
                .rsplit("Signature=")
                .next()
                .unwrap()
                .to_owned(),
        );
        assert_eq!(
            app.send("GET", target, b"", Some(&authorization)).status,
            200
        );
        // A replay and a forgery: refusals are logged too.
        app.send("GET", target, b"", Some(&authorization));
        app.send(
            "GET",
            target,
            b"",
            Some(&authorization.replace("Signature=", "Signature=0")),
        );
    }
    let rotated = app.admin("POST", &format!("/admin/keys/{}/rotate", key.key_id), None);
    secrets.push(rotated.body["secret"].as_str().unwrap().to_owned());
    app.admin_with_token(
        "GET",
        "/admin/apps",
        None,
        Some("wrong-token-0123456789abcdefghijklmnop"),
    );
    let log = server.log.clone();
    assert!(server.terminate().success());

    let log = log.lock().unwrap().clone();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() > 10, "{log}");
    let mut access = 0;
    for line in &lines {
        let event: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for field in ["timestamp", "level", "message", "target"] {
            assert!(event.get(field).is_some(), "no {field}: {line}");
        }
        if event["target"] == "keygate::access" {
            access += 1;
            for field in [
                "request_id",
                "method",
                "path",
                "status",
                "code",
                "key_id",
                "app_id",
                "latency_ms",
                "bytes",
            ] {
                assert!(event.get(field).is_some(), "no {field}: {line}");
            }
            assert!(
                !event["path"].as_str().unwrap().contains('?'),
                "the query was logged: {line}"
            );
        }
        for secret in secrets.iter().chain(&signatures) {
            assert!(
                !line.contains(secret.as_str()),
                "a secret or signature was logged: {line}"
            );
        }
    }
    assert!(access >= 8, "{access} access lines: {log}");
    let verified = lines
        .iter()
        .filter(|l| {
            l.contains("keygate::access") && l.contains(&key.key_id) && l.contains(&key.app_id)
        })
        .count();
    assert!(verified >= 2, "{log}");
}

/// A backup taken while keygate serves signed traffic; a restore while it
/// runs is refused; after a restore, a request signed before it is
/// refused, even one whose nonce the restored window never saw, and a
/// fresh one is accepted.
#[test]
fn backup_while_serving_and_a_restore_that_refuses_older_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keygate.db");
    let db_arg = db.to_str().unwrap().to_owned();
    let backup_file = dir.path().join("backup.db");
    let server = Binary::serve(&db, &[]);
    let app = server.app();
    let key = app.create_key();
    let load = Load::start(app.public, &key, 2);
    // Real traffic into the real server while it is copied.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = keygate(
        &[
            "backup",
            "--db",
            &db_arg,
            "--to",
            backup_file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let during = load.finish();
    assert!(
        during.iter().all(|(_, status, _)| *status == 200),
        "the backup disturbed the load"
    );
    // Accepted after the backup: the restored window will not hold these.
    let after =
        Load::start(app.public, &key, 2).finish_after(std::time::Duration::from_millis(300));
    let accepted_after: Vec<&String> = after
        .iter()
        .filter(|(_, status, _)| *status == 200)
        .map(|(authorization, _, _)| authorization)
        .collect();
    assert!(accepted_after.len() > 10, "{}", accepted_after.len());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&backup_file)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let again = keygate(
        &[
            "backup",
            "--db",
            &db_arg,
            "--to",
            backup_file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        !again.status.success(),
        "a backup must not overwrite a file"
    );

    // Signed after the backup, never sent: the restored window lacks it.
    let signed_before = Signing::new(&key, "GET", "/v1/whoami", b"").authorization();
    let refused = keygate(
        &[
            "restore",
            "--db",
            &db_arg,
            "--from",
            backup_file.to_str().unwrap(),
        ],
        &[],
    );
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("in use"),
        "{said}"
    );
    assert!(server.terminate().success());

    // A restore in a later second than every signature above.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = keygate(
        &[
            "restore",
            "--db",
            &db_arg,
            "--from",
            backup_file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = Binary::serve(&db, &[]);
    let app = server.app();
    let old = app.send("GET", "/v1/whoami", b"", Some(&signed_before));
    assert_eq!(
        (old.status, old.code()),
        (401, "timestamp_out_of_range"),
        "{:?}",
        old.body
    );
    for authorization in accepted_after {
        let replay = app.send("POST", "/v1/echo", b"load", Some(authorization));
        assert_eq!(
            (replay.status, replay.code()),
            (401, "timestamp_out_of_range"),
            "{:?}",
            replay.body
        );
    }
    assert_eq!(app.signed(&key, "GET", "/v1/whoami", b"").status, 200);

    // A file that is not a keygate database is refused, the database kept.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"not a database").unwrap();
    drop(server);
    let out = keygate(
        &["restore", "--db", &db_arg, "--from", junk.to_str().unwrap()],
        &[],
    );
    assert!(!out.status.success());
}

/// After pg_restore or point-in-time recovery, `keygate restore
/// --watermark` refuses what was signed before, on PostgreSQL as on SQLite.
#[test]
fn a_watermark_after_a_postgres_restore_refuses_older_signatures() {
    let db = TestDb::new(Backend::Postgres);
    let server = Binary::serve_on(&db, &[]);
    let key = server.app().create_key();
    let signed_before = Signing::new(&key, "GET", "/v1/whoami", b"").authorization();
    drop(server);
    // The restore happens in a later second than the signature.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let env: Vec<(String, String)> = db.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = keygate(&["restore", "--watermark"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from_file = keygate(&["restore", "--from", "/nonexistent"], &env);
    assert!(String::from_utf8_lossy(&from_file.stderr).contains("--watermark"));
    let server = Binary::serve_on(&db, &[]);
    let app = server.app();
    let old = app.send("GET", "/v1/whoami", b"", Some(&signed_before));
    assert_eq!((old.status, old.code()), (401, "timestamp_out_of_range"));
    assert_eq!(app.signed(&key, "GET", "/v1/whoami", b"").status, 200);
}

#[test]
fn completions_and_the_man_page_cover_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let out = keygate(&["completions", shell], &[]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("keygate"), "{shell}");
        for command in ["serve", "backup", "restore", "config"] {
            assert!(text.contains(command), "{shell}: {command}");
        }
    }
    let out = keygate(&["man"], &[]);
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && page.starts_with(".ie") && page.contains(".TH keygate 1"),
        "{page}"
    );
    assert!(page.contains("serve") && page.contains("restore"));
}

/// The packaged unit passes `systemd-analyze verify` (with the real binary
/// and the man page its Documentation= names) and is sandboxed: systemd's
/// own exposure score stays in its "OK" band.
#[test]
fn the_systemd_unit_verifies_and_is_sandboxed() {
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/keygate.service"),
    )
    .unwrap()
    .replace("/usr/local/bin/keygate", keygate_bin());
    let unit_file = dir.path().join("keygate.service");
    std::fs::write(&unit_file, unit).unwrap();
    let man = dir.path().join("man/man1");
    std::fs::create_dir_all(&man).unwrap();
    std::fs::write(man.join("keygate.1"), keygate(&["man"], &[]).stdout).unwrap();
    let analyze = |args: &[&str]| {
        Command::new("systemd-analyze")
            .args(args)
            .arg(&unit_file)
            .env("MANPATH", dir.path().join("man"))
            .output()
            .expect("systemd-analyze is installed (scripts/test installs systemd)")
    };
    let verify = analyze(&["verify"]);
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let security = analyze(&["security", "--offline=true"]);
    let text = String::from_utf8_lossy(&security.stdout).into_owned()
        + &String::from_utf8_lossy(&security.stderr);
    let level: f64 = text
        .split("Overall exposure level for keygate.service:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level: {text}"));
    assert!(level <= 2.0, "exposure {level}: {text}");
}
