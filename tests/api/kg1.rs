//! The KG1 scheme end to end: accepted requests, every tampering, replays,
//! the clock, malformed headers and oversized bodies, against the real
//! server over real HTTP.

use keygate::clock::Clock;

use crate::helpers::*;

#[test]
fn healthz_needs_no_signature() {
    let app = spawn_app();
    let answer = app.send("GET", "/healthz", b"", None);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, serde_json::json!({ "status": "ok" }));
    let head = app.send("HEAD", "/healthz", b"", None);
    assert_eq!(head.status, 200);
    assert_eq!(head.body, "", "HEAD carries no body");
}

#[test]
fn signed_whoami_and_echo_are_accepted() {
    let app = spawn_app();
    let key = app.create_key();

    let whoami = app.signed(&key, "GET", "/v1/whoami?probe=1&x=a%20b", b"");
    assert_eq!(whoami.status, 200, "{:?}", whoami.body);
    assert_eq!(whoami.body["key_id"], key.key_id.as_str());
    assert_eq!(whoami.body["app_id"], key.app_id.as_str());
    assert_eq!(whoami.body["app_name"], "Acme Corp");

    let body = r#"{"note":"café – 東京 ✓"}"#;
    let echo = app.signed(&key, "POST", "/v1/echo", body.as_bytes());
    assert_eq!(echo.status, 200, "{:?}", echo.body);
    assert_eq!(echo.body["body"], body);
    assert_eq!(echo.body["key_id"], key.key_id.as_str());
    assert_eq!(echo.body["app_id"], key.app_id.as_str());

    let binary = [0xff, 0x00, 0xfe, 0x80];
    let echo = app.signed(&key, "POST", "/v1/echo", &binary);
    assert_eq!(echo.status, 200, "{:?}", echo.body);
    assert_eq!(echo.body["body_base64"], "/wD+gA==");
    assert!(echo.body.get("body").is_none());
}

#[test]
fn missing_authorization_is_401_with_challenge() {
    let app = spawn_app();
    let answer = app.send("GET", "/v1/whoami", b"", None);
    assert_eq!(answer.status, 401);
    assert_eq!(answer.code(), "missing_authorization");
    assert_eq!(answer.header("www-authenticate"), Some("KG1-HMAC-SHA256"));
    assert!(answer.body["error"]["message"].as_str().unwrap().len() > 10);
}

/// Each part of the request the signature covers, changed after signing.
#[test]
fn every_tampering_is_a_signature_mismatch() {
    let app = spawn_app();
    let key = app.create_key();
    let other = app.create_key_for(&key.app_id, None);
    let body: &[u8] = br#"{"amount":100}"#;
    let target = "/v1/echo?id=7&q=a%20b";

    // What the partner sent is fixed; each case signs something else.
    let sent = Signing::new(&key, "POST", target, body);
    let earlier = (sent.timestamp.parse::<i64>().unwrap() - 1).to_string();
    let cases: Vec<(&str, String)> = vec![
        (
            "method",
            Signing {
                method: "PUT",
                ..sent.clone()
            }
            .authorization(),
        ),
        (
            "path",
            Signing {
                target: "/v1/echo2?id=7&q=a%20b",
                ..sent.clone()
            }
            .authorization(),
        ),
        (
            "query value",
            Signing {
                target: "/v1/echo?id=8&q=a%20b",
                ..sent.clone()
            }
            .authorization(),
        ),
        (
            "query order",
            Signing {
                target: "/v1/echo?q=a%20b&id=7",
                ..sent.clone()
            }
            .authorization(),
        ),
        (
            "query decoded",
            Signing {
                target: "/v1/echo?id=7&q=a b",
                ..sent.clone()
            }
            .authorization(),
        ),
        (
            "body",
            Signing {
                body: br#"{"amount":900}"#,
                ..sent.clone()
            }
            .authorization(),
        ),
        (
            "body re-serialised",
            Signing {
                body: br#"{"amount": 100}"#,
                ..sent.clone()
            }
            .authorization(),
        ),
        // Header values changed after signing.
        (
            "timestamp",
            sent.authorization().replace(
                &format!("Timestamp={}", sent.timestamp),
                &format!("Timestamp={earlier}"),
            ),
        ),
        (
            "nonce",
            sent.authorization().replace(&sent.nonce, &fresh_nonce()),
        ),
        (
            "key id",
            sent.authorization().replace(&key.key_id, &other.key_id),
        ),
    ];
    for (what, authorization) in cases {
        let answer = app.send("POST", target, body, Some(&authorization));
        assert_eq!(answer.status, 401, "{what}: {:?}", answer.body);
        assert_eq!(
            answer.code(),
            "signature_mismatch",
            "{what}: {:?}",
            answer.body
        );
        assert_eq!(answer.header("www-authenticate"), Some("KG1-HMAC-SHA256"));
        // The server's string to sign describes the request it received.
        let server_sts = answer.body["error"]["string_to_sign"].as_str().unwrap();
        let lines: Vec<&str> = server_sts.split('\n').collect();
        assert_eq!(lines.len(), 7, "{what}");
        assert_eq!(&lines[..1], ["KG1-HMAC-SHA256"]);
        assert_eq!(&lines[4..6], ["POST", target], "{what}");
        assert_eq!(lines[6], keygate::signature::BodyHash::of(body).as_str());
    }
    // None of the refusals burned the nonce: the genuine request still works.
    let answer = app.send("POST", target, body, Some(&sent.authorization()));
    assert_eq!(answer.status, 200, "{:?}", answer.body);
}

#[test]
fn path_tampering_is_refused() {
    let app = spawn_app();
    let key = app.create_key();
    let signed = Signing::new(&key, "GET", "/v1/whoami?probe=1", b"");
    let answer = app.send(
        "GET",
        "/v1/whoami?probe=2",
        b"",
        Some(&signed.authorization()),
    );
    assert_eq!(answer.code(), "signature_mismatch");
    let answer = app.send("GET", "/v1/whoami", b"", Some(&signed.authorization()));
    assert_eq!(answer.code(), "signature_mismatch");
}

#[test]
fn unknown_revoked_and_expired_keys() {
    let app = spawn_app_with(|c| c.clock = Clock::manual(now()));
    let key = app.create_key();

    let unknown = TestKey {
        key_id: "pk_000000000000000000000000".into(),
        ..key.clone()
    };
    let answer = app.signed(&unknown, "GET", "/v1/whoami", b"");
    assert_eq!((answer.status, answer.code()), (401, "unknown_key"));

    let revoked = app.admin("POST", &format!("/admin/keys/{}/revoke", key.key_id), None);
    assert_eq!(revoked.status, 200);
    let answer = app.signed(&key, "GET", "/v1/whoami", b"");
    assert_eq!((answer.status, answer.code()), (401, "key_revoked"));

    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let expiring = app.create_key_for(
        &key.app_id,
        Some(
            &soon
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap(),
        ),
    );
    assert_eq!(app.signed(&expiring, "GET", "/v1/whoami", b"").status, 200);
    app.clock.advance(std::time::Duration::from_millis(3100));
    let answer = app.signed(&expiring, "GET", "/v1/whoami", b"");
    assert_eq!((answer.status, answer.code()), (401, "key_expired"));
}

#[test]
fn replay_is_refused_and_forgery_does_not_burn_the_nonce() {
    let app = spawn_app();
    let key = app.create_key();
    let signed = Signing::new(&key, "POST", "/v1/echo", b"pay 100");

    // A forged request (wrong body) carrying the partner's next nonce.
    let forged = app.send(
        "POST",
        "/v1/echo",
        b"pay 900",
        Some(&signed.authorization()),
    );
    assert_eq!(forged.code(), "signature_mismatch");

    let first = app.send(
        "POST",
        "/v1/echo",
        b"pay 100",
        Some(&signed.authorization()),
    );
    assert_eq!(first.status, 200, "{:?}", first.body);
    let replay = app.send(
        "POST",
        "/v1/echo",
        b"pay 100",
        Some(&signed.authorization()),
    );
    assert_eq!((replay.status, replay.code()), (401, "nonce_reused"));
    assert_eq!(replay.header("www-authenticate"), Some("KG1-HMAC-SHA256"));

    // The same nonce under another key is a different pair.
    let other = app.create_key_for(&key.app_id, None);
    let other_signed = Signing {
        key: &other,
        nonce: signed.nonce.clone(),
        ..Signing::new(&other, "POST", "/v1/echo", b"pay 100")
    };
    let answer = app.send(
        "POST",
        "/v1/echo",
        b"pay 100",
        Some(&other_signed.authorization()),
    );
    assert_eq!(answer.status, 200, "{:?}", answer.body);
}

#[test]
fn forty_identical_requests_at_once_exactly_one_accepted() {
    let app = spawn_app();
    let key = app.create_key();
    let signed = Signing::new(&key, "POST", "/v1/echo", b"once");
    let results = send_at_once(&[app.public], 40, &signed.authorization());
    assert_eq!(accepted_and_replays(&results), (1, 39), "{results:?}");
}

#[test]
fn timestamps_inside_and_outside_the_skew() {
    let app = spawn_app_with(|c| c.skew_secs = 60);
    let key = app.create_key();
    for (offset, ok) in [
        (-58, true),
        (58, true),
        (-62, false),
        (62, false),
        (-100_000, false),
    ] {
        let mut signed = Signing::new(&key, "GET", "/v1/whoami", b"");
        signed.timestamp = (now() + offset).to_string();
        let answer = app.send("GET", "/v1/whoami", b"", Some(&signed.authorization()));
        if ok {
            assert_eq!(answer.status, 200, "offset {offset}: {:?}", answer.body);
        } else {
            assert_eq!(
                (answer.status, answer.code()),
                (401, "timestamp_out_of_range"),
                "offset {offset}"
            );
            let server_time = answer.body["error"]["server_time"].as_i64().unwrap();
            assert!((server_time - now()).abs() <= 2);
        }
    }
}

#[test]
fn malformed_headers_get_clean_401s() {
    let app = spawn_app();
    let key = app.create_key();
    let good = Signing::new(&key, "GET", "/v1/whoami", b"").authorization();
    let sig = good.rsplit_once("Signature=").unwrap().1.to_owned();
    let cases = vec![
        ("empty", String::new()),
        ("scheme only", "KG1-HMAC-SHA256".to_owned()),
        ("wrong scheme", good.replace("KG1-HMAC-SHA256", "AWS4-HMAC-SHA256")),
        ("repeated", format!("{good}, KeyId={}", key.key_id)),
        ("unknown parameter", format!("{good}, Region=eu")),
        ("missing nonce", good.replace(&format!("Nonce={}, ", good.split("Nonce=").nth(1).unwrap().split(',').next().unwrap()), "")),
        ("bad hex", good.replace(&sig, &"g".repeat(64))),
        ("uppercase hex", good.replace(&sig, &sig.to_uppercase())),
        ("short signature", good.replace(&sig, &sig[..63])),
        ("long signature", good.replace(&sig, &format!("{sig}0"))),
        ("short nonce", format!("KG1-HMAC-SHA256 KeyId={}, Timestamp=1, Nonce=abc, Signature={sig}", key.key_id)),
        ("13-digit timestamp", format!("KG1-HMAC-SHA256 KeyId={}, Timestamp=1234567890123, Nonce=abcdefghijklmnop, Signature={sig}", key.key_id)),
        ("quoted", format!("KG1-HMAC-SHA256 KeyId=\"{}\", Timestamp=1, Nonce=abcdefghijklmnop, Signature={sig}", key.key_id)),
        ("no commas", good.replace(", ", " ")),
    ];
    for (what, header) in cases {
        let answer = app.send("GET", "/v1/whoami", b"", Some(&header));
        assert_eq!(answer.status, 401, "{what}: {:?}", answer.body);
        assert_eq!(
            answer.code(),
            "malformed_authorization",
            "{what}: {:?}",
            answer.body
        );
        assert_eq!(answer.header("www-authenticate"), Some("KG1-HMAC-SHA256"));
    }
}

#[test]
fn malformed_bytes_on_the_wire_get_clean_4xx() {
    let app = spawn_app();
    let key = app.create_key();
    let good = Signing::new(&key, "GET", "/v1/whoami", b"").authorization();
    let host = app.public;

    let mut non_ascii =
        format!("GET /v1/whoami HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAuthorization: ")
            .into_bytes();
    non_ascii.extend_from_slice(good.replace("KeyId=", "KeyId=\u{e9}").as_bytes());
    non_ascii.extend_from_slice(b"\xff\xfe\r\n\r\n");
    let (status, body) = raw_request(host, &non_ascii);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("malformed_authorization"), "{body}");

    let huge = format!(
        "GET /v1/whoami HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAuthorization: {good}, {}\r\n\r\n",
        "x".repeat(20 * 1024)
    );
    let (status, body) = raw_request(host, huge.as_bytes());
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("malformed_authorization"), "{body}");

    let twice = format!(
        "GET /v1/whoami HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAuthorization: {good}\r\nAuthorization: {good}\r\n\r\n"
    );
    let (status, body) = raw_request(host, twice.as_bytes());
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("malformed_authorization"), "{body}");
}

#[test]
fn oversized_bodies_are_413() {
    let app = spawn_app_with(|c| c.max_body_bytes = 1024);
    let key = app.create_key();
    let at_limit = vec![b'a'; 1024];
    assert_eq!(app.signed(&key, "POST", "/v1/echo", &at_limit).status, 200);

    let over = vec![b'a'; 1025];
    let answer = app.signed(&key, "POST", "/v1/echo", &over);
    assert_eq!((answer.status, answer.code()), (413, "body_too_large"));

    // Chunked, so no Content-Length announces it: caught while streaming.
    let signing = Signing::new(&key, "POST", "/v1/echo", &over);
    let chunk = String::from_utf8(over.clone()).unwrap();
    let request = format!(
        "POST /v1/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\nAuthorization: {}\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        signing.authorization(),
        chunk.len()
    );
    let (status, body) = raw_request(app.public, request.as_bytes());
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("body_too_large"));
}

/// A body that stops arriving gets a 408 once the body timeout has passed,
/// and the server closes the connection, instead of holding it and its
/// handler forever: on both listeners, with a declared length or chunked.
#[test]
fn a_stalled_body_times_out_with_408() {
    use std::time::{Duration, Instant};
    let app = spawn_app_with(|c| c.body_timeout = Duration::from_secs(1));
    let key = app.create_key();
    let signing = Signing::new(&key, "POST", "/v1/echo", b"0123456789");
    let authorization = signing.authorization();
    let stalled = [
        (app.public, format!("POST /v1/echo HTTP/1.1\r\nHost: x\r\nAuthorization: {authorization}\r\nContent-Length: 10\r\n\r\n01")),
        (app.public, format!("POST /v1/echo HTTP/1.1\r\nHost: x\r\nAuthorization: {authorization}\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n01\r\n")),
        (app.admin, format!("POST /admin/apps HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n{{\"name\"")),
    ];
    for (listener, request) in stalled {
        let started = Instant::now();
        let (status, body) = raw_request(listener, request.as_bytes());
        assert_eq!(status, 408, "{body}");
        assert!(body.contains("\"code\":\"body_timeout\""), "{body}");
        // The timeout (1 s), then actix's 1 s for the client to hang up:
        // a connection left open would last raw_request's 10 s read timeout.
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(5),
            "connection open for {took:?}: {request:?}"
        );
    }
}

#[test]
fn default_body_limit_is_one_mebibyte() {
    let app = spawn_app();
    let key = app.create_key();
    let over = vec![b'a'; 1024 * 1024 + 1];
    let answer = app.signed(&key, "POST", "/v1/echo", &over);
    assert_eq!((answer.status, answer.code()), (413, "body_too_large"));
    let at = vec![b'a'; 1024 * 1024];
    assert_eq!(app.signed(&key, "POST", "/v1/echo", &at).status, 200);
}

#[test]
fn unknown_routes_and_methods_answer_json() {
    let app = spawn_app();
    let answer = app.send("GET", "/nope", b"", None);
    assert_eq!((answer.status, answer.code()), (404, "not_found"));
    let answer = app.send("DELETE", "/v1/whoami", b"", None);
    assert_eq!((answer.status, answer.code()), (405, "method_not_allowed"));
    // The admin API is not on the public listener.
    let answer = app.send("GET", "/admin/apps", b"", None);
    assert_eq!(answer.status, 404);
}

/// Anyone can send refused requests as fast as keygate answers them, so a
/// line per refusal would let them fill the disk. Past a burst the lines
/// are capped, the next line logged says how many were not, and the
/// metrics still count every one.
#[test]
fn a_flood_of_refusals_is_counted_in_full_but_logged_in_part() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::serve(&dir.path().join("keygate.db"), &[("KEYGATE_LOG", "info")]);
    let app = server.app();

    let started = std::time::Instant::now();
    let flood: u64 = 600;
    for _ in 0..flood {
        assert_eq!(app.send("GET", "/v1/whoami", b"", None).status, 401);
    }
    let elapsed = started.elapsed().as_secs_f64();
    // A token comes back every 50 ms: the next refusal is logged, and says
    // how many lines were held back. A real sleep: the server is the real
    // binary, whose log limiter runs on its own clock.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(app.send("GET", "/v1/whoami", b"", None).status, 401);

    // Every refusal is either a line of its own or counted in a later
    // line's lines_not_logged_before; the last one was logged, so the two
    // add up to all of them once the log has been read in full.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (logged, held_back) = loop {
        let log = server.log.lock().unwrap().clone();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(" refused ")).collect();
        let held_back: u64 = lines
            .iter()
            .filter_map(|line| line.split("lines_not_logged_before=").nth(1))
            .map(|n| n.trim().parse::<u64>().unwrap())
            .sum();
        if lines.len() as u64 + held_back == flood + 1 {
            break (lines.len() as u64, held_back);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} lines, {held_back} held back: {log}",
            lines.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // A burst of 100, then 20 a second, and the one after the pause.
    let allowed = 100 + (20.0 * (elapsed + 0.5)).ceil() as u64 + 1;
    assert!(
        logged <= allowed,
        "{logged} lines for {flood} refusals in {elapsed:.2} s"
    );
    assert!(logged >= 100, "the first burst is logged in full: {logged}");
    assert!(held_back > 0);
    assert_eq!(
        app.metrics()["keygate_signed_requests_total{result=\"missing_authorization\"}"],
        (flood + 1) as f64
    );
}
