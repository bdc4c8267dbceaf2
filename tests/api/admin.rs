//! The key lifecycle through the admin API and the CLI: create, list,
//! rotate with overlap, revoke, audit; the admin token; secrets never
//! stored or logged in the clear.

use std::process::Command;
use std::time::Duration;

use keygate::clock::Clock;
use serde_json::{json, Value};

use crate::helpers::*;

fn create_list_sign_without_ever_listing_secrets(backend: Backend) {
    let app = spawn_app_on(backend);
    let created = app.admin("POST", "/admin/apps", Some(json!({ "name": "Globex" })));
    assert_eq!(created.status, 201);
    let app_id = created.body["app_id"].as_str().unwrap();
    assert_eq!(created.body["name"], "Globex");
    assert!(created.body["created_at"].as_str().unwrap().ends_with('Z'));

    let apps = app.admin("GET", "/admin/apps", None);
    assert_eq!(apps.status, 200);
    assert!(apps.body["apps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["app_id"] == app_id));

    let key = app.create_key_for(app_id, None);
    assert!(key.key_id.starts_with("pk_") && key.key_id.len() >= 27);
    assert!(key.key_id[3..].bytes().all(|b| b.is_ascii_alphanumeric()));
    assert!(key.secret.starts_with("sk_") && key.secret.len() >= 46);
    assert_eq!(app.signed(&key, "GET", "/v1/whoami", b"").status, 200);

    let listed = app.admin("GET", &format!("/admin/apps/{app_id}/keys"), None);
    assert_eq!(listed.status, 200);
    let keys = listed.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["key_id"], key.key_id.as_str());
    assert_eq!(keys[0]["status"], "active");
    for field in ["created_at", "expires_at", "revoked_at", "last_used_at"] {
        assert!(keys[0].get(field).is_some(), "{field}");
    }
    assert!(!listed.body.to_string().contains(&key.secret));
    assert!(keys[0].get("secret").is_none());

    // The application listing counts its keys: one live, then a second
    // one revoked, and when any was last used.
    let revoked = app.create_key_for(app_id, None);
    let answer = app.admin(
        "POST",
        &format!("/admin/keys/{}/revoke", revoked.key_id),
        None,
    );
    assert_eq!(answer.status, 200);
    let apps = app.admin("GET", "/admin/apps", None);
    let listed = apps.body["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["app_id"] == app_id)
        .unwrap()
        .clone();
    assert_eq!(listed["key_count"], 2, "{listed}");
    assert_eq!(listed["live_key_count"], 1, "{listed}");
    assert!(listed.get("last_used_at").is_some(), "{listed}");
    let empty = app.admin("POST", "/admin/apps", Some(json!({ "name": "Keyless" })));
    let apps = app.admin("GET", "/admin/apps", None);
    let keyless = apps.body["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["app_id"] == empty.body["app_id"])
        .unwrap()
        .clone();
    assert_eq!(
        (
            keyless["key_count"].clone(),
            keyless["live_key_count"].clone()
        ),
        (json!(0), json!(0))
    );
}

fn rotation_overlaps_then_the_old_key_expires(backend: Backend) {
    let app = spawn_app_on_with(backend, |c| c.clock = Clock::manual(now()));
    let old = app.create_key();
    let rotated = app.admin(
        "POST",
        &format!("/admin/keys/{}/rotate", old.key_id),
        Some(json!({ "grace_seconds": 2 })),
    );
    assert_eq!(rotated.status, 201, "{:?}", rotated.body);
    let new = TestKey {
        key_id: rotated.body["key_id"].as_str().unwrap().into(),
        secret: rotated.body["secret"].as_str().unwrap().into(),
        app_id: old.app_id.clone(),
    };
    assert_eq!(rotated.body["app_id"], old.app_id.as_str());
    assert_ne!(new.key_id, old.key_id);

    // During the grace both work; the old one is listed as expiring.
    assert_eq!(app.signed(&old, "GET", "/v1/whoami", b"").status, 200);
    assert_eq!(app.signed(&new, "GET", "/v1/whoami", b"").status, 200);
    let keys = app
        .admin("GET", &format!("/admin/apps/{}/keys", old.app_id), None)
        .body;
    let status_of = |keys: &Value, id: &str| {
        keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["key_id"] == id)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status_of(&keys, &old.key_id), "expiring");
    assert_eq!(status_of(&keys, &new.key_id), "active");

    app.clock.advance(Duration::from_millis(3100));
    let answer = app.signed(&old, "GET", "/v1/whoami", b"");
    assert_eq!((answer.status, answer.code()), (401, "key_expired"));
    assert_eq!(app.signed(&new, "GET", "/v1/whoami", b"").status, 200);
    let keys = app
        .admin("GET", &format!("/admin/apps/{}/keys", old.app_id), None)
        .body;
    assert_eq!(status_of(&keys, &old.key_id), "expired");
}

fn rotation_defaults_to_a_day_of_grace(backend: Backend) {
    let app = spawn_app_on(backend);
    let old = app.create_key();
    let before = now();
    let rotated = app.admin("POST", &format!("/admin/keys/{}/rotate", old.key_id), None);
    assert_eq!(rotated.status, 201, "{:?}", rotated.body);
    let info = app.admin("GET", &format!("/admin/keys/{}", old.key_id), None);
    let expires = time::OffsetDateTime::parse(
        info.body["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp();
    assert!((expires - (before + 86_400)).abs() <= 2, "{expires}");
}

fn revocation_applies_to_the_very_next_request(backend: Backend) {
    let app = spawn_app_on(backend);
    let key = app.create_key();
    assert_eq!(app.signed(&key, "GET", "/v1/whoami", b"").status, 200);
    let revoked = app.admin("POST", &format!("/admin/keys/{}/revoke", key.key_id), None);
    assert_eq!(revoked.status, 200);
    assert_eq!(revoked.body["status"], "revoked");
    let answer = app.signed(&key, "GET", "/v1/whoami", b"");
    assert_eq!((answer.status, answer.code()), (401, "key_revoked"));
    // Idempotent.
    assert_eq!(
        app.admin("POST", &format!("/admin/keys/{}/revoke", key.key_id), None)
            .status,
        200
    );
}

fn admin_token_is_required_and_checked(backend: Backend) {
    let app = spawn_app_on(backend);
    let none = app.admin_with_token("GET", "/admin/apps", None, None);
    assert_eq!((none.status, none.code()), (401, "missing_authorization"));
    let wrong = app.admin_with_token("GET", "/admin/apps", None, Some("x".repeat(40).as_str()));
    assert_eq!((wrong.status, wrong.code()), (401, "invalid_admin_token"));
    let wrong = app.admin_with_token(
        "POST",
        "/admin/apps",
        Some(json!({ "name": "x" })),
        Some(&ADMIN_TOKEN[..20]),
    );
    assert_eq!(wrong.status, 401);
    // Nothing was created by the refused call.
    assert_eq!(
        app.admin("GET", "/admin/apps", None).body["apps"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // The scheme name is case-insensitive; the token is not.
    let lower = ureq::get(&app.admin_url("/admin/apps"))
        .set("Authorization", &format!("bearer {ADMIN_TOKEN}"))
        .call();
    assert_eq!(lower.map(|r| r.status()).ok(), Some(200));
    let upper_token = ureq::get(&app.admin_url("/admin/apps"))
        .set(
            "Authorization",
            &format!("Bearer {}", ADMIN_TOKEN.to_uppercase()),
        )
        .call();
    assert!(matches!(upper_token, Err(ureq::Error::Status(401, _))));
    // The public listener has no admin routes at all.
    let public = ureq::get(&app.url("/admin/apps"))
        .set("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
        .call();
    assert!(matches!(public, Err(ureq::Error::Status(404, _))));
}

/// What an operator's scraper sees: accepted and refused signed requests
/// by code, and the nonce writer's commits, behind the admin token.
fn metrics_count_outcomes_and_commits_behind_the_admin_token(backend: Backend) {
    let app = spawn_app_on(backend);
    let key = app.create_key();
    assert_eq!(app.signed(&key, "GET", "/v1/whoami", b"").status, 200);
    let signing = Signing::new(&key, "POST", "/v1/echo", b"{}");
    let authorization = signing.authorization();
    assert_eq!(
        app.send("POST", "/v1/echo", b"{}", Some(&authorization))
            .status,
        200
    );
    let replay = app.send("POST", "/v1/echo", b"{}", Some(&authorization));
    assert_eq!(replay.code(), "nonce_reused");
    assert_eq!(
        app.send("GET", "/v1/whoami", b"", None).code(),
        "missing_authorization"
    );
    let tampered = Signing::new(&key, "POST", "/v1/echo", b"{}").authorization();
    let forged = app.send("POST", "/v1/echo", b"{\"x\":1}", Some(&tampered));
    assert_eq!(forged.code(), "signature_mismatch");
    assert_eq!(app.send("GET", "/healthz", b"", None).status, 200);

    let metrics = app.metrics();
    let value = |name: &str| {
        metrics
            .get(name)
            .copied()
            .unwrap_or_else(|| panic!("{name} in {metrics:?}"))
    };
    let signed = |result: &str| {
        value(&format!(
            "keygate_signed_requests_total{{result=\"{result}\"}}"
        ))
    };
    assert_eq!(signed("accepted"), 2.0);
    assert_eq!(signed("nonce_reused"), 1.0);
    assert_eq!(signed("missing_authorization"), 1.0);
    assert_eq!(signed("signature_mismatch"), 1.0);
    assert_eq!(value("keygate_nonce_pairs_recorded_total"), 2.0);
    // Sent one after the other, the two accepted requests had a commit each
    // (the replay never reached the writer). The 2 s flush of last-used
    // times may have added one of its own, with no request in it.
    assert!((2.0..=3.0).contains(&value("keygate_nonce_commits_total")));
    assert_eq!(
        value("keygate_nonce_commit_seconds_count"),
        value("keygate_nonce_commits_total")
    );
    assert_eq!(value("keygate_nonce_requests_per_commit_count"), 2.0);
    assert_eq!(value("keygate_nonce_requests_per_commit_sum"), 2.0);
    assert_eq!(value("keygate_nonce_failed_commits_total"), 0.0);
    assert_eq!(value("keygate_nonce_window_pairs"), 2.0);
    assert_eq!(value("keygate_nonce_queue_length"), 0.0);
    assert_eq!(value("keygate_cached_keys"), 1.0);
    // /healthz is not a signed route; nothing but codes and counts is said.
    assert_eq!(
        metrics
            .keys()
            .filter(|k| k.starts_with("keygate_signed_requests"))
            .count(),
        4
    );
    let text = app.admin("GET", "/admin/metrics", None).body.to_string();
    assert!(!text.contains(&key.secret) && !text.contains(&signing.nonce));

    let none = app.admin_with_token("GET", "/admin/metrics", None, None);
    assert_eq!((none.status, none.code()), (401, "missing_authorization"));
    let public = ureq::get(&app.url("/admin/metrics")).call();
    assert!(matches!(public, Err(ureq::Error::Status(404, _))));
}

fn bad_json_and_unknown_ids(backend: Backend) {
    let app = spawn_app_on(backend);
    let raw = ureq::post(&app.admin_url("/admin/apps"))
        .set("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
        .send_string("{not json");
    let Err(ureq::Error::Status(400, response)) = raw else {
        panic!("expected 400")
    };
    let body: Value = serde_json::from_str(&response.into_string().unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "invalid_json");

    let missing_name = app.admin("POST", "/admin/apps", Some(json!({})));
    assert_eq!(
        (missing_name.status, missing_name.code()),
        (400, "invalid_request")
    );
    let typo = app.admin(
        "POST",
        "/admin/apps/app_x/keys",
        Some(json!({ "expires": "2030-01-01T00:00:00Z" })),
    );
    assert_eq!((typo.status, typo.code()), (400, "invalid_json"));

    let answer = app.admin("POST", "/admin/apps/app_nope/keys", Some(json!({})));
    assert_eq!((answer.status, answer.code()), (404, "app_not_found"));
    let answer = app.admin("GET", "/admin/apps/app_nope/keys", None);
    assert_eq!((answer.status, answer.code()), (404, "app_not_found"));
    for action in ["rotate", "revoke"] {
        let answer = app.admin("POST", &format!("/admin/keys/pk_nope/{action}"), None);
        assert_eq!(
            (answer.status, answer.code()),
            (404, "key_not_found"),
            "{action}"
        );
    }

    let key = app.create_key();
    let past = app.admin(
        "POST",
        &format!("/admin/apps/{}/keys", key.app_id),
        Some(json!({ "expires_at": "2001-01-01T00:00:00Z" })),
    );
    assert_eq!((past.status, past.code()), (400, "invalid_request"));
    let garbage = app.admin(
        "POST",
        &format!("/admin/apps/{}/keys", key.app_id),
        Some(json!({ "expires_at": "tomorrow" })),
    );
    assert_eq!((garbage.status, garbage.code()), (400, "invalid_request"));
    let grace = app.admin(
        "POST",
        &format!("/admin/keys/{}/rotate", key.key_id),
        Some(json!({ "grace_seconds": -5 })),
    );
    assert_eq!((grace.status, grace.code()), (400, "invalid_request"));
    // Admin bodies are small JSON; a huge one is refused with the
    // contract's JSON 413, like any other refusal.
    let huge = app.admin(
        "POST",
        "/admin/apps",
        Some(json!({ "name": "x".repeat(100_000) })),
    );
    assert_eq!((huge.status, huge.code()), (413, "body_too_large"));
    let bad_limit = app.admin("GET", "/admin/audit?limit=lots", None);
    assert_eq!(
        (bad_limit.status, bad_limit.code()),
        (400, "invalid_request")
    );
}

fn audit_log_records_every_change_newest_first(backend: Backend) {
    let app = spawn_app_on(backend);
    let key = app.create_key();
    app.admin(
        "POST",
        &format!("/admin/keys/{}/rotate", key.key_id),
        Some(json!({ "grace_seconds": 60 })),
    );
    app.admin("POST", &format!("/admin/keys/{}/revoke", key.key_id), None);
    let audit = app.admin("GET", "/admin/audit", None);
    assert_eq!(audit.status, 200);
    let actions: Vec<&str> = audit.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["key.revoke", "key.rotate", "key.create", "app.create"]
    );
    let newest = &audit.body["events"][0];
    assert_eq!(newest["key_id"], key.key_id.as_str());
    assert!(newest["actor"]
        .as_str()
        .unwrap()
        .starts_with("admin-api@127.0.0.1"));
    assert!(!audit.body.to_string().contains("sk_"));
}

fn last_used_is_recorded_in_batches(backend: Backend) {
    let app = spawn_app_on(backend);
    let key = app.create_key();
    let listed = || {
        app.admin("GET", &format!("/admin/apps/{}/keys", key.app_id), None)
            .body["keys"][0]
            .clone()
    };
    assert!(listed()["last_used_at"].is_null());
    assert_eq!(app.signed(&key, "GET", "/v1/whoami", b"").status, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    while listed()["last_used_at"].is_null() {
        assert!(
            std::time::Instant::now() < deadline,
            "last_used_at never written"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A stop by SIGTERM (systemd, docker stop) loses no last-used time, even
/// one from the moment before, which the periodic flush has not written.
fn a_graceful_stop_writes_the_last_used_times(backend: Backend) {
    let db = TestDb::new(backend);
    let server = Binary::serve_on(&db, &[]);
    let app = server.app();
    let key = app.create_key();
    assert_eq!(app.signed(&key, "GET", "/v1/whoami", b"").status, 200);
    let status = server.terminate();
    assert!(status.success(), "{status:?}");

    // Read back by the CLI, with no server running to flush anything.
    let keys = cli(&db, &["key", "list", &key.app_id]);
    assert!(
        !keys["keys"][0]["last_used_at"].is_null(),
        "last_used_at was not written at shutdown: {keys}"
    );
}

/// The CLI works on the database file while a server runs on it: what it
/// creates works at once, what it revokes is refused at once.
fn cli_changes_reach_a_running_server_at_once(backend: Backend) {
    let db = TestDb::new(backend);
    let server = Binary::serve_on(&db, &[]);
    let app = server.app();

    let created = cli(&db, &["app", "create", "Initech"]);
    let app_id = created["app_id"].as_str().unwrap();
    let listed = cli(&db, &["app", "list"]);
    assert!(listed["apps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["name"] == "Initech"));
    let key = cli(&db, &["key", "create", app_id]);
    let key = TestKey {
        key_id: key["key_id"].as_str().unwrap().into(),
        secret: key["secret"].as_str().unwrap().into(),
        app_id: app_id.into(),
    };
    assert_eq!(app.signed(&key, "GET", "/v1/whoami", b"").status, 200);

    let rotated = cli(&db, &["key", "rotate", &key.key_id, "--grace", "1h"]);
    assert!(rotated["secret"].as_str().unwrap().starts_with("sk_"));
    let keys = cli(&db, &["key", "list", app_id]);
    assert_eq!(keys["keys"].as_array().unwrap().len(), 2);
    assert!(!keys.to_string().contains("sk_"));

    let revoked = cli(&db, &["key", "revoke", &key.key_id]);
    assert_eq!(revoked["status"], "revoked");
    let answer = app.signed(&key, "GET", "/v1/whoami", b"");
    assert_eq!((answer.status, answer.code()), (401, "key_revoked"));

    let audit = cli(&db, &["audit"]);
    assert_eq!(audit["events"][0]["action"], "key.revoke");
    assert!(audit["events"][0]["actor"]
        .as_str()
        .unwrap()
        .starts_with("cli:"));
    // Which process made each change: the CLI, then the server's admin API.
    assert!(audit["events"][0]["instance"]
        .as_str()
        .unwrap()
        .starts_with("cli@"));
    app.admin(
        "POST",
        &format!("/admin/apps/{app_id}/keys"),
        Some(json!({})),
    );
    let audit = cli(&db, &["audit"]);
    let serve = format!(":{}", server.child.id());
    let instance = audit["events"][0]["instance"].as_str().unwrap();
    assert!(
        instance.starts_with("serve@") && instance.ends_with(&serve),
        "{instance}"
    );
}

/// The secret is searched for, as bytes, in every file the server wrote and
/// in its log; only the master-key-sealed ciphertext may be there.
#[test]
fn secrets_are_not_in_the_database_files_or_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keygate.db");
    let server = Binary::serve(&db, &[("KEYGATE_LOG", "debug")]);
    let app = server.app();
    let key = app.create_key();
    assert_eq!(app.signed(&key, "GET", "/v1/whoami", b"").status, 200);
    let bad = TestKey {
        secret: "sk_wrong".into(),
        ..key.clone()
    };
    assert_eq!(
        app.signed(&bad, "GET", "/v1/whoami", b"").code(),
        "signature_mismatch"
    );
    let rotated = app.admin("POST", &format!("/admin/keys/{}/rotate", key.key_id), None);
    let new_secret = rotated.body["secret"].as_str().unwrap().to_owned();
    // The real binary's log and WAL are written by its own threads: give
    // them a moment to reach the files this test reads.
    std::thread::sleep(Duration::from_millis(500));

    let secrets = [key.secret.as_str(), new_secret.as_str()];
    let random_part = |s: &str| s[3..].to_owned();
    let mut checked = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        for secret in secrets {
            let needle = random_part(secret);
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "secret found in {}",
                path.display()
            );
        }
        checked += 1;
    }
    assert!(checked >= 3, "database, WAL and key files were checked");
    let log = server.log.lock().unwrap().clone();
    assert!(log.contains("refused"), "the log was captured");
    for secret in secrets {
        assert!(
            !log.contains(&random_part(secret)),
            "secret found in the log"
        );
    }
}

#[test]
fn short_admin_token_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(keygate_bin())
        .arg("serve")
        .env("KEYGATE_DB", dir.path().join("k.db"))
        .env("KEYGATE_LISTEN", "127.0.0.1:0")
        .env("KEYGATE_ADMIN_LISTEN", "127.0.0.1:0")
        .env("KEYGATE_ADMIN_TOKEN", "too-short")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("at least 32 characters"), "{stderr}");
}

#[test]
fn generated_admin_token_file_is_private_and_works() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keygate.db");
    let mut child = Command::new(keygate_bin())
        .arg("serve")
        .env("KEYGATE_DB", &db)
        .env("KEYGATE_LISTEN", "127.0.0.1:0")
        .env("KEYGATE_ADMIN_LISTEN", "127.0.0.1:0")
        .env_remove("KEYGATE_ADMIN_TOKEN")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let token_path = dir.path().join("keygate.db.admin-token");
    let key_path = dir.path().join("keygate.db.master-key");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !(token_path.exists() && key_path.exists()) {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    child.wait().unwrap();
    for path in [&token_path, &key_path, &db] {
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    let token = std::fs::read_to_string(&token_path).unwrap();
    assert!(token.trim().len() >= 32);
    assert!(
        stderr.contains("keygate.db.admin-token"),
        "the token's path is logged: {stderr}"
    );
    assert!(
        !stderr.contains(token.trim()),
        "the token itself is never logged"
    );
}

crate::on_both_backends!(
    create_list_sign_without_ever_listing_secrets,
    rotation_overlaps_then_the_old_key_expires,
    rotation_defaults_to_a_day_of_grace,
    revocation_applies_to_the_very_next_request,
    admin_token_is_required_and_checked,
    metrics_count_outcomes_and_commits_behind_the_admin_token,
    bad_json_and_unknown_ids,
    audit_log_records_every_change_newest_first,
    last_used_is_recorded_in_batches,
    a_graceful_stop_writes_the_last_used_times,
    cli_changes_reach_a_running_server_at_once,
);
