//! Gateway mode in front of an arbitrary upstream (issue 28): no path,
//! target or header spelling gets past the access policy, and the
//! upstream's answer reaches the partner byte for byte. The upstream is a
//! raw socket (`raw_upstream.rs`) that records each request exactly as it
//! arrived and answers with scripted bytes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;
use crate::raw_upstream::{dechunk, split_response, RawUpstream, Received};

/// The review's key: `GET, POST /v1/orders/*`.
fn orders_only(app: &TestApp) -> TestKey {
    let key = app.create_key();
    let answer = app.admin(
        "PUT",
        &format!("/admin/keys/{}/policy", key.key_id),
        Some(json!({ "rules": [{ "methods": ["GET", "POST"], "path": "/v1/orders/*" }] })),
    );
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    key
}

/// Sends one signed request as raw bytes (`target` exactly as written,
/// signed as written) with extra header lines, and returns the whole raw
/// answer.
fn send_signed(
    addr: SocketAddr,
    key: &TestKey,
    method: &str,
    target: &str,
    extra_headers: &str,
) -> Vec<u8> {
    let authorization = Signing::new(key, method, target, b"").authorization();
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: keygate.test\r\nAuthorization: {authorization}\r\n\
         {extra_headers}Connection: close\r\n\r\n"
    );
    send_raw(addr, request.as_bytes())
}

fn send_raw(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

fn status_and_code(raw: &[u8]) -> (u16, String) {
    let (head, body) = split_response(raw);
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let code = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status, code)
}

/// The review's bypasses, and every other form the contract names: each
/// is a 400 `ambiguous_path` and reaches no upstream; the plain path
/// arrives exactly as sent.
#[test]
fn paths_servers_read_differently_never_reach_the_upstream() {
    let upstream = RawUpstream::ok();
    let app = spawn_app_with(|c| c.upstream = Some(upstream.url()));
    let key = orders_only(&app);
    for path in [
        "/v1/orders/../admin",
        "/v1/orders/%2e%2e/admin",
        "/v1/orders/..;/admin",
        "/v1/orders/.%2e;/admin",
        "/v1/orders//../admin",
        "/v1/orders/..\\admin",
        "/v1/orders/..%5Cadmin",
        "/v1/orders/%252e%252e/admin",
        "/v1/orders/..%2Fadmin",
        "/v1/orders/%2E;x/admin",
        "/v1/orders/%00/admin",
        "/v1/orders/%C0%AE%C0%AE/admin",
        "/v1/orders/%EF%BC%8E%EF%BC%8E/admin",
        "/v1/orders/x/../7",
    ] {
        let (status, code) = status_and_code(&send_signed(app.public, &key, "GET", path, ""));
        assert_eq!((status, code.as_str()), (400, "ambiguous_path"), "{path}");
    }
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());

    let (status, _) = status_and_code(&send_signed(
        app.public,
        &key,
        "GET",
        "/v1/orders/7?q=a%20b",
        "",
    ));
    assert_eq!(status, 200);
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].request_line, "GET /v1/orders/7?q=a%20b HTTP/1.1");
}

/// `POST *` was once forwarded to `http://127.0.0.1:PORT*`, which the
/// client read as port 80. Targets that are not a path are refused.
#[test]
fn asterisk_and_authority_form_targets_are_refused() {
    let upstream = RawUpstream::ok();
    let app = spawn_app_with(|c| c.upstream = Some(upstream.url()));
    let key = app.create_key();
    for (method, target) in [("POST", "*"), ("OPTIONS", "*"), ("GET", "127.0.0.1:80")] {
        let raw = send_signed(app.public, &key, method, target, "");
        let (status, code) = status_and_code(&raw);
        assert_eq!(
            status,
            400,
            "{method} {target}: {}",
            String::from_utf8_lossy(&raw)
        );
        if target == "*" {
            assert_eq!(code, "malformed_request", "{method} {target}");
        }
    }
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());
}

/// With a base path, the forwarded URL always begins with it, and always
/// goes to the configured host and port, whatever the request names.
#[test]
fn the_upstream_base_path_is_a_boundary() {
    let upstream = RawUpstream::ok();
    let app = spawn_app_with(|c| c.upstream = Some(format!("{}/api/", upstream.url())));
    let key = app.create_key();
    let (status, code) = status_and_code(&send_signed(
        app.public,
        &key,
        "GET",
        "/../internal/secret",
        "",
    ));
    assert_eq!((status, code.as_str()), (400, "ambiguous_path"));
    let (status, code) = status_and_code(&send_signed(
        app.public,
        &key,
        "GET",
        "/%2e%2e/internal",
        "",
    ));
    assert_eq!((status, code.as_str()), (400, "ambiguous_path"));
    assert!(upstream.requests().is_empty());

    assert_eq!(
        status_and_code(&send_signed(app.public, &key, "GET", "/v1/x?q=1", "")).0,
        200
    );
    assert_eq!(
        status_and_code(&send_signed(app.public, &key, "GET", "/", "")).0,
        200
    );
    // Absolute-form: signed and forwarded as its path and query, to the
    // configured upstream only.
    let absolute = "http://elsewhere.example:9/v1/y";
    let authorization = Signing::new(&key, "GET", "/v1/y", b"").authorization();
    let raw = send_raw(
        app.public,
        format!(
            "GET {absolute} HTTP/1.1\r\nHost: elsewhere.example:9\r\nAuthorization: {authorization}\r\n\
             Connection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(
        status_and_code(&raw).0,
        200,
        "{}",
        String::from_utf8_lossy(&raw)
    );
    let seen: Vec<(String, Vec<String>)> = upstream
        .requests()
        .iter()
        .map(|r| {
            (
                r.request_line.clone(),
                r.all("host").iter().map(|h| h.to_string()).collect(),
            )
        })
        .collect();
    let host = upstream.addr.to_string();
    assert_eq!(
        seen,
        [
            ("GET /api/v1/x?q=1 HTTP/1.1".to_owned(), vec![host.clone()]),
            ("GET /api/ HTTP/1.1".to_owned(), vec![host.clone()]),
            ("GET /api/v1/y HTTP/1.1".to_owned(), vec![host]),
        ]
    );
}

fn the_one(received: &Received, name: &str) -> String {
    let values = received.all(name);
    assert_eq!(values.len(), 1, "{name}: {:?}", received.headers);
    values[0].to_owned()
}

const SPOOFS: &str = "X_Keygate_App_Id: app_VICTIM\r\nX-Keygate-Key-Id: pk_VICTIM\r\n\
    x_keygate_key_id: pk_VICTIM2\r\nX-Forwarded-For: 203.0.113.9\r\nX_Forwarded_For: 203.0.113.10\r\n\
    X-Real-IP: 203.0.113.11\r\nForwarded: for=203.0.113.12\r\nX-Forwarded-Host: evil.example\r\n\
    X-Forwarded-Proto: https\r\nX-HTTP-Method-Override: DELETE\r\nX_HTTP_Method_Override: DELETE\r\n\
    X-HTTP-Method: DELETE\r\nX-Method-Override: DELETE\r\nX-Original-URL: /v1/admin\r\n\
    X-Rewrite-URL: /v1/admin\r\nX-Kept: yes\r\n";

/// No header the caller writes can speak for keygate, change the method
/// or claim another client address.
#[test]
fn identity_method_and_forwarding_headers_cannot_be_spoofed() {
    let upstream = RawUpstream::ok();
    let app = spawn_app_with(|c| c.upstream = Some(upstream.url()));
    let key = orders_only(&app);
    let raw = send_signed(app.public, &key, "POST", "/v1/orders/7", SPOOFS);
    assert_eq!(
        status_and_code(&raw).0,
        200,
        "{}",
        String::from_utf8_lossy(&raw)
    );
    let seen = &upstream.requests()[0];
    assert_eq!(seen.request_line, "POST /v1/orders/7 HTTP/1.1");
    assert_eq!(the_one(seen, "x-keygate-app-id"), key.app_id);
    assert_eq!(the_one(seen, "x-keygate-key-id"), key.key_id);
    assert_eq!(the_one(seen, "x-forwarded-for"), "127.0.0.1");
    assert_eq!(the_one(seen, "x-forwarded-proto"), "http");
    assert_eq!(the_one(seen, "x-forwarded-host"), "keygate.test");
    assert_eq!(the_one(seen, "x-kept"), "yes");
    for gone in [
        "x_keygate_app_id",
        "x_keygate_key_id",
        "x_forwarded_for",
        "x-real-ip",
        "forwarded",
        "x-http-method-override",
        "x_http_method_override",
        "x-http-method",
        "x-method-override",
        "x-original-url",
        "x-rewrite-url",
        "authorization",
    ] {
        assert!(
            seen.all(gone).is_empty(),
            "{gone} reached the upstream: {:?}",
            seen.headers
        );
    }
}

/// Behind a trusted proxy, its chain is extended and its protocol and host
/// kept; the caller's underscore spellings still stay behind.
#[test]
fn a_trusted_proxy_chain_is_extended() {
    let upstream = RawUpstream::ok();
    let app = spawn_app_with(|c| {
        c.upstream = Some(upstream.url());
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    });
    let key = app.create_key();
    let raw = send_signed(app.public, &key, "GET", "/v1/orders/7", SPOOFS);
    assert_eq!(status_and_code(&raw).0, 200);
    let seen = &upstream.requests()[0];
    assert_eq!(the_one(seen, "x-forwarded-for"), "203.0.113.9, 127.0.0.1");
    assert_eq!(the_one(seen, "x-forwarded-proto"), "https");
    assert_eq!(the_one(seen, "x-forwarded-host"), "evil.example");
    assert_eq!(the_one(seen, "x-keygate-app-id"), key.app_id);
    assert!(seen.all("x_forwarded_for").is_empty());
    assert!(seen.all("x-real-ip").is_empty());
}

/// The exact bytes actix-http writes for its own refusals (keygate once
/// rewrote any write that ended like one).
const REFUSAL_BYTES: [&[u8]; 4] = [
    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\ndate: Wed, 02 Dec 2026 16:00:00 GMT\r\n\r\n",
    b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    b"hello\r\nHTTP/1.1 400 X\r\ncontent-length: 0\r\n\r\n",
];

/// Keygate's answer, from the upstream's: the head's field names (lower
/// case) and the body, de-chunked when keygate chunked it.
fn fields_and_body(raw: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let (head, body) = split_response(raw);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let fields: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let chunked = fields
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    (
        status,
        fields.clone(),
        if chunked { dechunk(&body) } else { body },
    )
}

/// Whatever the upstream streams, however it frames it and whenever it
/// pauses, the partner receives the same status, fields and bytes: no
/// byte rewritten, no Content-Type invented, a Content-Length kept; the
/// only fields added are the framing, a Date and the request id.
#[test]
fn upstream_answers_arrive_byte_for_byte() {
    #[derive(Clone, Copy, Debug)]
    enum Framing {
        ChunkedWithPause,
        ChunkedAtOnce,
        Sized,
        CloseDelimited,
    }
    let upstream = RawUpstream::start(|request| {
        let target = request.target();
        let which: usize = target[target.rfind('/').unwrap() + 1..].parse().unwrap();
        let framing = match &target[..target.rfind('/').unwrap()] {
            "/chunked-pause" => Framing::ChunkedWithPause,
            "/chunked" => Framing::ChunkedAtOnce,
            "/sized" => Framing::Sized,
            _ => Framing::CloseDelimited,
        };
        let payload = REFUSAL_BYTES[which].to_vec();
        let now = Duration::ZERO;
        let pause = Duration::from_millis(150);
        match framing {
            Framing::ChunkedWithPause | Framing::ChunkedAtOnce => {
                let mut chunk = format!("{:x}\r\n", payload.len()).into_bytes();
                chunk.extend_from_slice(&payload);
                chunk.extend_from_slice(b"\r\n");
                let head = b"HTTP/1.1 418 I'm a teapot\r\nx-custom: kept\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
                let end = b"0\r\n\r\n".to_vec();
                match framing {
                    Framing::ChunkedWithPause => vec![(now, head), (now, chunk), (pause, end)],
                    _ => vec![(now, [head, chunk, end].concat())],
                }
            }
            Framing::Sized => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nx-custom: kept\r\ncontent-length: {}\r\n\r\n",
                    payload.len()
                );
                vec![(now, head.into_bytes()), (pause, payload)]
            }
            Framing::CloseDelimited => {
                vec![
                    (now, b"HTTP/1.1 200 OK\r\nx-custom: kept\r\n\r\n".to_vec()),
                    (pause, payload),
                ]
            }
        }
    });
    let app = spawn_app_with(|c| c.upstream = Some(upstream.url()));
    let key = app.create_key();
    for prefix in ["/chunked-pause", "/chunked", "/sized", "/closed"] {
        for (which, payload) in REFUSAL_BYTES.iter().enumerate() {
            let target = format!("{prefix}/{which}");
            let raw = send_signed(app.public, &key, "GET", &target, "");
            let (status, fields, body) = fields_and_body(&raw);
            let shown = String::from_utf8_lossy(&raw);
            assert_eq!(body, *payload, "{target}: {shown}");
            assert_eq!(
                status,
                if prefix.starts_with("/chunked") {
                    418
                } else {
                    200
                },
                "{target}"
            );
            let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
            assert!(!names.contains(&"content-type"), "{target}: {shown}");
            assert!(
                fields.contains(&("x-custom".into(), "kept".into())),
                "{target}: {shown}"
            );
            for name in &names {
                assert!(
                    matches!(
                        *name,
                        "x-custom"
                            | "date"
                            | "content-length"
                            | "transfer-encoding"
                            | "connection"
                            | "x-request-id"
                    ),
                    "{target}: keygate added {name}: {shown}"
                );
            }
            if prefix == "/sized" {
                assert!(
                    fields.contains(&("content-length".into(), payload.len().to_string())),
                    "{target}: re-framed: {shown}"
                );
                assert!(!names.contains(&"transfer-encoding"), "{target}: {shown}");
            }
        }
    }
}

/// A replay is refused before it can spend an allowance: 100 replays of
/// one request leave the key's and the application's allowance as they
/// were (CONTRACT.md section 8).
#[test]
fn replays_never_spend_an_allowance() {
    let app = spawn_app();
    let key = app.create_key();
    let other_key = app.create_key_for(&key.app_id, None);
    let slow = |burst: u32| json!({ "rate_limit": { "per_second": 0.001, "burst": burst } });
    assert_eq!(
        app.admin(
            "PUT",
            &format!("/admin/keys/{}/policy", key.key_id),
            Some(slow(3))
        )
        .status,
        200
    );
    assert_eq!(
        app.admin(
            "PUT",
            &format!("/admin/apps/{}/policy", key.app_id),
            Some(slow(5))
        )
        .status,
        200
    );

    let signing = Signing::new(&key, "GET", "/v1/whoami", b"");
    let authorization = signing.authorization();
    let first = app.send("GET", "/v1/whoami", b"", Some(&authorization));
    assert_eq!(first.status, 200);
    assert_eq!(first.header("ratelimit-remaining"), Some("2"));
    for _ in 0..100 {
        let replay = app.send("GET", "/v1/whoami", b"", Some(&authorization));
        assert_eq!((replay.status, replay.code()), (401, "nonce_reused"));
    }
    // The key: 3 - 2 accepted.
    let second = app.signed(&key, "GET", "/v1/whoami", b"");
    assert_eq!(second.status, 200, "{:?}", second.body);
    assert_eq!(second.header("ratelimit-remaining"), Some("1"));
    // The application: 5 - 3 accepted, whichever key.
    let other = app.signed(&other_key, "GET", "/v1/whoami", b"");
    assert_eq!(other.status, 200, "{:?}", other.body);
    assert_eq!(other.header("ratelimit-remaining"), Some("2"));
}

/// Copies of one request sent at the same moment all pass the in-memory
/// replay check before any is recorded: the copies the ledger refuses give
/// back what they took.
#[test]
fn concurrent_copies_of_one_request_spend_one_allowance() {
    let app = spawn_app();
    let key = app.create_key();
    let limit = json!({ "rate_limit": { "per_second": 0.001, "burst": 40 } });
    assert_eq!(
        app.admin(
            "PUT",
            &format!("/admin/keys/{}/policy", key.key_id),
            Some(limit)
        )
        .status,
        200
    );
    let authorization = Signing::new(&key, "POST", "/v1/echo", b"once").authorization();
    let results = send_at_once(&[app.public], 32, &authorization);
    assert_eq!(accepted_and_replays(&results), (1, 31), "{results:?}");
    let next = app.signed(&key, "GET", "/v1/whoami", b"");
    assert_eq!(
        next.header("ratelimit-remaining"),
        Some("38"),
        "{:?}",
        next.headers
    );
}
