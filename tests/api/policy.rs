//! Access policies (CONTRACT.md section 8) over real HTTP, on both
//! backends: allowed routes (with path-normalisation escapes through the
//! gateway), source networks (IPv4, IPv6, X-Forwarded-For with and without
//! trusted proxies), rate limits, and policy changes made through the
//! admin API, the CLI and another process, each seen by the next request.

use std::process::Command;
use std::time::Duration;

use keygate::clock::Clock;
use serde_json::{json, Value};

use crate::gateway::spawn_upstream;
use crate::helpers::*;

fn put_policy(app: &TestApp, path: &str, policy: Value) -> Answer {
    app.admin("PUT", path, Some(policy))
}

fn set_key_policy(app: &TestApp, key: &TestKey, policy: Value) {
    let answer = put_policy(app, &format!("/admin/keys/{}/policy", key.key_id), policy);
    assert_eq!(answer.status, 200, "{:?}", answer.body);
}

fn set_app_policy(app: &TestApp, app_id: &str, policy: Value) {
    let answer = put_policy(app, &format!("/admin/apps/{app_id}/policy"), policy);
    assert_eq!(answer.status, 200, "{:?}", answer.body);
}

/// A signed request with extra headers.
fn signed_with(
    app: &TestApp,
    key: &TestKey,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let authorization = Signing::new(key, method, target, b"").authorization();
    let mut all = vec![("Authorization", authorization.as_str())];
    all.extend_from_slice(headers);
    app.send_with(method, target, b"", &all)
}

fn routes_are_enforced_after_the_signature(backend: Backend) {
    let (upstream, hits) = spawn_upstream();
    let app = spawn_app_on_with(backend, |c| c.upstream = Some(upstream));
    let key = app.create_key();
    set_app_policy(
        &app,
        &key.app_id,
        json!({ "rules": [
            { "methods": ["GET", "POST"], "path": "/v1/orders/*" },
            { "methods": ["GET"], "path": "/v1/whoami" },
            { "methods": ["*"], "path": "/v1/admin/*" },
        ]}),
    );
    // The key narrows its application: no admin, and orders read-only.
    set_key_policy(
        &app,
        &key,
        json!({ "rules": [
            { "methods": ["get"], "path": "/v1/orders/*" },
            { "methods": ["GET"], "path": "/v1/whoami" },
        ]}),
    );

    assert_eq!(app.signed(&key, "GET", "/v1/whoami", b"").status, 200);
    assert_eq!(app.signed(&key, "GET", "/v1/orders/42", b"").status, 201);
    assert_eq!(app.signed(&key, "GET", "/v1/orders", b"").status, 201);
    assert_eq!(
        app.signed(&key, "GET", "/v1/orders/42?expand=items", b"")
            .status,
        201
    );
    let upstream_hits = hits.load(std::sync::atomic::Ordering::SeqCst);

    let refused = app.signed(&key, "POST", "/v1/orders/42", b"{}");
    assert_eq!(refused.status, 403, "{:?}", refused.body);
    assert_eq!(refused.code(), "forbidden");
    let message = refused.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("POST /v1/orders/42"), "{message}");
    assert_eq!(refused.body["error"]["method"], "POST");
    assert_eq!(refused.body["error"]["path"], "/v1/orders/42");

    // Allowed by the application, not by the key.
    assert_eq!(
        app.signed(&key, "GET", "/v1/admin/users", b"").code(),
        "forbidden"
    );
    // Sent raw: an HTTP client library would resolve the dot segments
    // before sending.
    let raw = |method: &str, target: &str| {
        let authorization = Signing::new(&key, method, target, b"").authorization();
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: keygate\r\nAuthorization: {authorization}\r\n\
             Connection: close\r\n\r\n"
        );
        let (status, body) = raw_request(app.public, request.as_bytes());
        (
            status,
            serde_json::from_str::<Value>(&body).unwrap_or(Value::String(body)),
        )
    };
    // Paths servers read differently never reach a policy decision: 400
    // ambiguous_path, whatever the policy (canonical_path.rs).
    for escape in [
        "/v1/orders/../admin/users",
        "/v1/orders/%2e%2e/admin/users",
        "/v1/orders/%2E%2E/admin/users",
        "/v1/orders/.%2e/admin/users",
        "/v1/orders/..%2Fadmin/users",
        "/v1/orders/..%2fadmin/users",
        "/v1/orders/..;/admin/users",
        "/v1/./admin/users",
        "/v1/orders/x/../42",
    ] {
        let (status, body) = raw("GET", escape);
        assert_eq!(status, 400, "{escape}: {body}");
        assert_eq!(body["error"]["code"], "ambiguous_path", "{escape}");
    }
    let (status, body) = raw("GET", "/v1/orders-archive/1");
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("forbidden")),
        "{body}"
    );
    // Method case: `get` is GET to the matcher, and `delete` is not.
    assert_eq!(raw("get", "/v1/orders/7").0, 201);
    let (status, body) = raw("delete", "/v1/orders/7");
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("forbidden")),
        "{body}"
    );
    // Nothing refused reached the upstream.
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        upstream_hits + 1,
        "only the lower-case get went through"
    );

    // A forgery is refused for its signature, never for the policy: the
    // policy is not revealed to someone without the secret.
    let forged = Signing {
        nonce: fresh_nonce(),
        ..Signing::new(&key, "DELETE", "/v1/admin/users", b"")
    };
    let tampered = forged.authorization().replace("Signature=", "Signature=00");
    let answer = app.send("DELETE", "/v1/admin/users", b"", Some(&tampered));
    assert_eq!(answer.status, 401, "{:?}", answer.body);

    // An empty list allows nothing; {} lifts every restriction.
    set_key_policy(&app, &key, json!({ "rules": [] }));
    assert_eq!(
        app.signed(&key, "GET", "/v1/whoami", b"").code(),
        "forbidden"
    );
    set_key_policy(&app, &key, json!({}));
    set_app_policy(&app, &key.app_id, json!({}));
    assert_eq!(app.signed(&key, "DELETE", "/v1/anything", b"").status, 201);

    let metrics = app.metrics();
    let count = |result: &str| {
        metrics
            .iter()
            .find(|(name, _)| name.contains(&format!("result=\"{result}\"")))
            .map_or(0.0, |(_, v)| *v)
    };
    assert!(count("forbidden") >= 5.0, "{metrics:?}");
    assert!(count("ambiguous_path") >= 9.0, "{metrics:?}");
}

/// Through the gateway, the upstream's answer carries keygate's
/// RateLimit fields too.
fn the_gateway_passes_on_the_allowance(backend: Backend) {
    let (upstream, _) = spawn_upstream();
    let app = spawn_app_on_with(backend, |c| c.upstream = Some(upstream));
    let key = app.create_key();
    set_key_policy(
        &app,
        &key,
        json!({ "rate_limit": { "per_second": 1, "burst": 5 } }),
    );
    let answer = app.signed(&key, "GET", "/v1/orders/1", b"");
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    assert_eq!(answer.header("x-upstream"), Some("yes"));
    assert_eq!(answer.header("ratelimit-limit"), Some("5"));
    assert_eq!(answer.header("ratelimit-remaining"), Some("4"));
}

fn a_refused_request_does_not_burn_its_nonce(backend: Backend) {
    let app = spawn_app_on(backend);
    let key = app.create_key();
    set_key_policy(
        &app,
        &key,
        json!({ "rules": [{ "methods": ["GET"], "path": "/v1/whoami" }] }),
    );
    let signing = Signing::new(&key, "POST", "/v1/echo", b"kept");
    let authorization = signing.authorization();
    let refused = app.send("POST", "/v1/echo", b"kept", Some(&authorization));
    assert_eq!(refused.code(), "forbidden");
    // The admin allows it; the very same request (same nonce) now passes,
    // once.
    set_key_policy(
        &app,
        &key,
        json!({ "rules": [{ "methods": ["*"], "path": "/v1/*" }] }),
    );
    let accepted = app.send("POST", "/v1/echo", b"kept", Some(&authorization));
    assert_eq!(accepted.status, 200, "{:?}", accepted.body);
    let replayed = app.send("POST", "/v1/echo", b"kept", Some(&authorization));
    assert_eq!(replayed.code(), "nonce_reused");
}

fn source_networks_and_forwarded_for(backend: Backend) {
    // No trusted proxies: X-Forwarded-For is ignored, the peer counts.
    let app = spawn_app_on(backend);
    let key = app.create_key();
    set_key_policy(&app, &key, json!({ "source_cidrs": ["203.0.113.0/24"] }));
    let spoofed = signed_with(
        &app,
        &key,
        "GET",
        "/v1/whoami",
        &[("X-Forwarded-For", "203.0.113.5")],
    );
    assert_eq!(spoofed.status, 403, "{:?}", spoofed.body);
    assert_eq!(spoofed.code(), "forbidden_source");
    assert_eq!(spoofed.body["error"]["client_address"], "127.0.0.1");
    set_key_policy(&app, &key, json!({ "source_cidrs": ["127.0.0.0/8"] }));
    assert_eq!(app.signed(&key, "GET", "/v1/whoami", b"").status, 200);

    // Behind a trusted proxy (the loopback peer): the rightmost untrusted hop.
    let proxied = spawn_app_on_with(backend, |c| {
        c.trusted_proxies =
            keygate::policy::source::parse_networks("127.0.0.0/8, 10.0.0.0/8").unwrap()
    });
    let key = proxied.create_key();
    set_key_policy(
        &proxied,
        &key,
        json!({ "source_cidrs": ["203.0.113.0/24", "2001:db8::/32"] }),
    );
    for (forwarded, status) in [
        ("203.0.113.5", 200),
        ("198.51.100.1, 203.0.113.5", 200),
        ("198.51.100.1, 203.0.113.5, 10.1.2.3", 200),
        ("203.0.113.5, 198.51.100.1", 403),
        ("2001:db8::7", 200),
        ("[2001:db8::7]:4711", 200),
        ("2001:db9::7", 403),
        ("not-an-address", 403),
    ] {
        let answer = signed_with(
            &proxied,
            &key,
            "GET",
            "/v1/whoami",
            &[("X-Forwarded-For", forwarded)],
        );
        assert_eq!(answer.status, status, "{forwarded}: {:?}", answer.body);
    }
    // No header: the trusted peer itself is the client.
    assert_eq!(
        proxied.signed(&key, "GET", "/v1/whoami", b"").code(),
        "forbidden_source"
    );

    // The real binary takes the setting from its flag and its environment.
    let db = TestDb::new(backend);
    for (flag, env) in [(true, ""), (false, "127.0.0.0/8, 10.0.0.0/8")] {
        let server = if flag {
            Binary::serve_on_with_args(&db, &[], &["--trusted-proxies", "127.0.0.0/8,10.0.0.0/8"])
        } else {
            Binary::serve_on(&db, &[("KEYGATE_TRUSTED_PROXIES", env)])
        };
        let app = server.app();
        let key = app.create_key();
        set_key_policy(&app, &key, json!({ "source_cidrs": ["203.0.113.0/24"] }));
        let through = signed_with(
            &app,
            &key,
            "GET",
            "/v1/whoami",
            &[("X-Forwarded-For", "203.0.113.5")],
        );
        assert_eq!(through.status, 200, "flag {flag}: {:?}", through.body);
    }

    // An IPv6 listener and peer.
    let v6 = spawn_app_on_with(backend, |c| c.listen = "[::1]:0".into());
    let key = v6.create_key();
    set_key_policy(&v6, &key, json!({ "source_cidrs": ["::1/128"] }));
    assert_eq!(v6.signed(&key, "GET", "/v1/whoami", b"").status, 200);
    set_key_policy(
        &v6,
        &key,
        json!({ "source_cidrs": ["2001:db8::/32", "127.0.0.1"] }),
    );
    let refused = v6.signed(&key, "GET", "/v1/whoami", b"");
    assert_eq!(refused.code(), "forbidden_source");
    assert_eq!(refused.body["error"]["client_address"], "::1");
}

fn rate_limits_count_only_valid_signatures(backend: Backend) {
    let app = spawn_app_on_with(backend, |c| c.clock = Clock::manual(now()));
    let key = app.create_key();
    // No limit, no RateLimit fields.
    let unlimited = app.signed(&key, "GET", "/v1/whoami", b"");
    assert_eq!(unlimited.header("ratelimit-limit"), None);
    set_key_policy(
        &app,
        &key,
        json!({ "rate_limit": { "per_second": 1, "burst": 3 } }),
    );
    // Forgeries first: they must not spend the partner's allowance.
    for _ in 0..20 {
        let signing = Signing::new(&key, "GET", "/v1/whoami", b"");
        let forged = signing
            .authorization()
            .replace("Signature=", "Signature=ff");
        assert_eq!(
            app.send("GET", "/v1/whoami", b"", Some(&forged)).status,
            401
        );
    }
    // Accepted answers say what is left, so a client can pace itself.
    for remaining in ["2", "1", "0"] {
        let answer = app.signed(&key, "GET", "/v1/whoami", b"");
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        assert_eq!(answer.header("ratelimit-limit"), Some("3"));
        assert_eq!(answer.header("ratelimit-remaining"), Some(remaining));
        let reset: u64 = answer.header("ratelimit-reset").unwrap().parse().unwrap();
        assert!((1..=3).contains(&reset), "{reset}");
    }
    let limited = app.signed(&key, "GET", "/v1/whoami", b"");
    assert_eq!(limited.status, 429, "{:?}", limited.body);
    assert_eq!(limited.code(), "rate_limited");
    let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(limited.header("ratelimit-limit"), Some("3"));
    assert_eq!(limited.header("ratelimit-remaining"), Some("0"));
    assert_eq!(
        limited.header("ratelimit-reset"),
        Some(retry_after.to_string().as_str())
    );
    // Accepted again once Retry-After has passed.
    app.clock.advance(Duration::from_secs(retry_after));
    assert_eq!(app.signed(&key, "GET", "/v1/whoami", b"").status, 200);

    // An application's limit counts all its keys together.
    let second = app.create_key_for(&key.app_id, None);
    set_key_policy(&app, &key, json!({}));
    set_app_policy(
        &app,
        &key.app_id,
        json!({ "rate_limit": { "per_second": 0.5, "burst": 2 } }),
    );
    assert_eq!(app.signed(&key, "GET", "/v1/whoami", b"").status, 200);
    assert_eq!(app.signed(&second, "GET", "/v1/whoami", b"").status, 200);
    assert_eq!(
        app.signed(&second, "GET", "/v1/whoami", b"").code(),
        "rate_limited"
    );
    assert_eq!(
        app.signed(&key, "GET", "/v1/whoami", b"").code(),
        "rate_limited"
    );
}

fn policies_are_validated_listed_and_audited(backend: Backend) {
    let app = spawn_app_on(backend);
    let key = app.create_key();
    let key_path = format!("/admin/keys/{}/policy", key.key_id);
    let app_path = format!("/admin/apps/{}/policy", key.app_id);
    for (path, bad, says) in [
        (
            &key_path,
            json!({ "rules": [{ "methods": ["GET"], "path": "v1/*" }] }),
            "start with /",
        ),
        (
            &key_path,
            json!({ "rules": [{ "methods": ["GET"], "path": "/v1/*/x" }] }),
            "final /*",
        ),
        (
            &key_path,
            json!({ "rules": [{ "methods": ["GET"], "path": "/v1/../x" }] }),
            "..",
        ),
        (
            &key_path,
            json!({ "rules": [{ "methods": [], "path": "/v1" }] }),
            "methods",
        ),
        (
            &key_path,
            json!({ "source_cidrs": ["10.0.0.0/33"] }),
            "10.0.0.0/33",
        ),
        (
            &key_path,
            json!({ "source_cidrs": ["example.com"] }),
            "example.com",
        ),
        (
            &key_path,
            json!({ "rate_limit": { "per_second": 0 } }),
            "per_second",
        ),
        (
            &key_path,
            json!({ "rate_limit": { "per_second": 5, "burst": 0 } }),
            "burst",
        ),
        (
            &key_path,
            json!({ "rate_limit": { "per_second": "fast" } }),
            "rate_limit",
        ),
        (&key_path, json!({ "rulez": [] }), "rulez"),
        (&app_path, json!({ "source_cidrs": ["10.0.0.0/8"] }), "key"),
    ] {
        let answer = put_policy(&app, path, bad.clone());
        assert_eq!(answer.status, 400, "{bad}: {:?}", answer.body);
        assert_eq!(answer.code(), "invalid_request", "{bad}");
        let message = answer.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{bad}: {message}");
    }
    let not_json = ureq::put(&app.admin_url(&key_path))
        .set("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
        .send_string("{not json");
    assert_eq!(not_json.unwrap_err().into_response().unwrap().status(), 400);
    assert_eq!(
        put_policy(&app, "/admin/keys/pk_nope/policy", json!({})).code(),
        "key_not_found"
    );
    assert_eq!(
        app.admin("GET", "/admin/apps/app_nope/policy", None).status,
        404
    );

    let policy = json!({
        "rules": [{ "methods": ["GET", "POST"], "path": "/v1/orders/*" }],
        "source_cidrs": ["203.0.113.0/24", "2001:db8::/32"],
        "rate_limit": { "per_second": 50, "burst": 100 },
    });
    let stored = put_policy(&app, &key_path, policy.clone());
    assert_eq!(stored.body, policy);
    assert_eq!(app.admin("GET", &key_path, None).body, policy);
    let app_policy = json!({ "rate_limit": { "per_second": 2.5, "burst": 10 } });
    assert_eq!(
        put_policy(&app, &app_path, app_policy.clone()).body,
        app_policy
    );
    assert_eq!(app.admin("GET", &app_path, None).body, app_policy);

    // In the listings.
    let keys = app.admin("GET", &format!("/admin/apps/{}/keys", key.app_id), None);
    assert_eq!(keys.body["keys"][0]["policy"], policy);
    let apps = app.admin("GET", "/admin/apps", None);
    let listed = apps.body["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["app_id"] == key.app_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(listed["policy"], app_policy);

    // Audited, with the policy set.
    let events = app.admin("GET", "/admin/audit", None).body["events"].clone();
    let actions: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(&actions[..2], ["app.policy", "key.policy"]);
    assert_eq!(events[1]["detail"]["policy"], policy);
    assert_eq!(events[1]["key_id"], key.key_id.as_str());
    assert_eq!(events[1]["app_id"], key.app_id.as_str());

    // A rotated key keeps its name and its policy.
    let named = app.admin(
        "POST",
        &format!("/admin/apps/{}/keys", key.app_id),
        Some(json!({ "name": "ERP sync, prod" })),
    );
    assert_eq!(named.status, 201, "{:?}", named.body);
    assert_eq!(named.body["name"], "ERP sync, prod");
    let named_id = named.body["key_id"].as_str().unwrap();
    set_key_policy(
        &app,
        &TestKey {
            key_id: named_id.into(),
            secret: String::new(),
            app_id: key.app_id.clone(),
        },
        policy.clone(),
    );
    let rotated = app.admin(
        "POST",
        &format!("/admin/keys/{named_id}/rotate"),
        Some(json!({})),
    );
    assert_eq!(rotated.status, 201);
    assert_eq!(rotated.body["name"], "ERP sync, prod");
    let new_id = rotated.body["key_id"].as_str().unwrap();
    assert_eq!(
        app.admin("GET", &format!("/admin/keys/{new_id}/policy"), None)
            .body,
        policy
    );
    let bad_name = app.admin(
        "POST",
        &format!("/admin/apps/{}/keys", key.app_id),
        Some(json!({ "name": "" })),
    );
    assert_eq!(bad_name.code(), "invalid_request");
}

/// The CLI writes the database directly; the running server sees the new
/// policy on the very next request (the nonce ledger compares the policy
/// version it checked against the stored one in the same transaction).
fn cli_changes_apply_to_the_next_request(backend: Backend) {
    let db = TestDb::new(backend);
    let server = Binary::serve_on(&db, &[]);
    let app = server.app();
    let key = app.create_key();
    assert_eq!(app.signed(&key, "GET", "/v1/whoami", b"").status, 200);
    for round in 0..5 {
        let set = cli(
            &db,
            &["key", "policy", &key.key_id, "--allow", "POST /v1/echo"],
        );
        assert_eq!(set["rules"][0]["methods"], json!(["POST"]), "{set}");
        let refused = app.signed(&key, "GET", "/v1/whoami", b"");
        assert_eq!(
            refused.code(),
            "forbidden",
            "round {round}: {:?}",
            refused.body
        );
        cli(&db, &["key", "policy", &key.key_id, "--clear"]);
        let accepted = app.signed(&key, "GET", "/v1/whoami", b"");
        assert_eq!(accepted.status, 200, "round {round}: {:?}", accepted.body);
    }
    // The application's policy, as JSON, and the flags for a rate limit.
    cli(
        &db,
        &[
            "app",
            "policy",
            &key.app_id,
            "--set",
            r#"{"rules":[{"methods":["*"],"path":"/v1/echo"}]}"#,
        ],
    );
    assert_eq!(
        app.signed(&key, "GET", "/v1/whoami", b"").code(),
        "forbidden"
    );
    let shown = cli(&db, &["app", "policy", &key.app_id]);
    assert_eq!(
        shown,
        json!({ "rules": [{ "methods": ["*"], "path": "/v1/echo" }] })
    );
    let limited = cli(
        &db,
        &[
            "key",
            "policy",
            &key.key_id,
            "--rate",
            "0.5",
            "--burst",
            "1",
            "--source-cidr",
            "127.0.0.1,::1",
        ],
    );
    assert_eq!(
        limited["rate_limit"],
        json!({ "per_second": 0.5, "burst": 1 })
    );
    assert_eq!(limited["source_cidrs"], json!(["127.0.0.1/32", "::1/128"]));

    // A bad policy: a clear message, exit status 2, nothing changed.
    let output = Command::new(keygate_bin())
        .args(["key", "policy", &key.key_id, "--source-cidr", "10.0.0.0/99"])
        .envs(db.env())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("10.0.0.0/99"));
    assert_eq!(
        cli(&db, &["key", "policy", &key.key_id])["rate_limit"]["burst"],
        1
    );
}

/// Two instances on one database: a policy set through one applies to the
/// next request the other serves.
fn another_instance_sees_a_policy_change_at_once(backend: Backend) {
    let db = TestDb::new(backend);
    let first = Binary::serve_on(&db, &[]);
    let second = Binary::serve_on(&db, &[]);
    let (one, two) = (first.app(), second.app());
    let key = one.create_key();
    assert_eq!(two.signed(&key, "GET", "/v1/whoami", b"").status, 200);
    for round in 0..5 {
        set_key_policy(
            &one,
            &key,
            json!({ "rules": [{ "methods": ["POST"], "path": "/v1/echo" }] }),
        );
        assert_eq!(
            two.signed(&key, "GET", "/v1/whoami", b"").code(),
            "forbidden",
            "round {round}"
        );
        set_app_policy(&two, &key.app_id, json!({ "rules": [] }));
        set_key_policy(&two, &key, json!({}));
        assert_eq!(
            one.signed(&key, "GET", "/v1/whoami", b"").code(),
            "forbidden",
            "round {round}"
        );
        set_app_policy(&one, &key.app_id, json!({}));
        assert_eq!(
            two.signed(&key, "GET", "/v1/whoami", b"").status,
            200,
            "round {round}"
        );
    }
}

/// What the README says of rate limits with several instances: each
/// counts the requests it serves, so two instances let a partner through
/// twice the burst.
fn each_instance_counts_its_own_requests(backend: Backend) {
    let db = TestDb::new(backend);
    let first = Binary::serve_on(&db, &[]);
    let second = Binary::serve_on(&db, &[]);
    let (one, two) = (first.app(), second.app());
    let key = one.create_key();
    set_key_policy(
        &one,
        &key,
        json!({ "rate_limit": { "per_second": 0.01, "burst": 2 } }),
    );
    let mut accepted = [0, 0];
    for _ in 0..4 {
        for (i, instance) in [&one, &two].into_iter().enumerate() {
            let answer = instance.signed(&key, "GET", "/v1/whoami", b"");
            match answer.status {
                200 => accepted[i] += 1,
                429 => assert_eq!(answer.code(), "rate_limited"),
                other => panic!("{other}: {:?}", answer.body),
            }
        }
    }
    assert_eq!(accepted, [2, 2]);
}

crate::on_both_backends!(
    the_gateway_passes_on_the_allowance,
    each_instance_counts_its_own_requests,
    routes_are_enforced_after_the_signature,
    a_refused_request_does_not_burn_its_nonce,
    source_networks_and_forwarded_for,
    rate_limits_count_only_valid_signatures,
    policies_are_validated_listed_and_audited,
    cli_changes_apply_to_the_next_request,
    another_instance_sees_a_policy_change_at_once,
);
