//! Requests actix-http refuses before any handler runs (not HTTP, a head
//! too large, a head too slow) get their 400, 431 or 408 on both
//! listeners, bare (an empty body, the connection closed): no keygate
//! code runs for them, and the JSON they once had was made by rewriting
//! bytes on their way out, which also rewrote upstream answers (issue
//! 28). An oversized body announced with `Expect: 100-continue` gets its
//! 413 at once, never a 100 Continue.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

/// Sends `request` and reads until the server closes the connection.
fn refused(addr: SocketAddr, request: &[u8]) -> (u16, String, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let json = serde_json::from_str(body).unwrap_or(Value::Null);
    (status, head.to_ascii_lowercase(), json)
}

#[test]
fn refusals_of_the_http_layer_keep_their_status_on_both_listeners() {
    let app = spawn_app();
    let many_headers: String = (0..120).map(|i| format!("X-Filler-{i}: {i}\r\n")).collect();
    let long_header = format!("X-Long: {}\r\n", "a".repeat(200 * 1024));
    let cases: Vec<(String, u16, &str)> = vec![
        ("GARBAGE\r\n\r\n".into(), 400, "malformed_request"),
        (
            "GET /healthz HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n".into(),
            400,
            "malformed_request",
        ),
        (
            "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
                .into(),
            400,
            "malformed_request",
        ),
        (
            "POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n".into(),
            400,
            "malformed_request",
        ),
        (
            "GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n".into(),
            400,
            "malformed_request",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n"),
            431,
            "header_too_large",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{long_header}\r\n"),
            431,
            "header_too_large",
        ),
    ];
    for listener in [app.public, app.admin] {
        for (request, status, code) in &cases {
            let (got, head, body) = refused(listener, request.as_bytes());
            let shown = request.chars().take(60).collect::<String>();
            assert_eq!(got, *status, "{shown:?} ({code}) on {listener}: {head}");
            assert!(head.contains("content-length: 0"), "{shown:?}: {head}");
            assert!(head.contains("connection: close"), "{shown:?}: {head}");
            assert_eq!(body, Value::Null, "{shown:?}");
        }
    }
    // Still serving, and a normal refusal is untouched.
    assert_eq!(
        app.send("GET", "/v1/whoami", b"", None).code(),
        "missing_authorization"
    );
}

#[test]
fn a_request_head_that_never_ends_gets_408() {
    let app = spawn_app();
    for listener in [app.public, app.admin] {
        let started = Instant::now();
        let (status, head, _) = refused(listener, b"GET /healthz HTTP/1.1\r\nHost: x\r\n");
        assert_eq!(status, 408, "{head}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}

#[test]
fn an_oversized_body_announced_with_expect_gets_413_before_any_100_continue() {
    let app = spawn_app_with(|c| c.max_body_bytes = 1024);
    let key = app.create_key();
    let authorization = Signing::new(&key, "POST", "/v1/echo", b"").authorization();
    let mut stream = TcpStream::connect(app.public).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The head only: a client that waits for 100 Continue sends no body.
    write!(
        stream,
        "POST /v1/echo HTTP/1.1\r\nHost: x\r\nAuthorization: {authorization}\r\n\
         Content-Length: 10485760\r\nExpect: 100-continue\r\n\r\n"
    )
    .unwrap();
    let mut first = [0u8; 512];
    let n = stream.read(&mut first).unwrap();
    let text = String::from_utf8_lossy(&first[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("body_too_large"), "{text}");

    // Within the limit, the client gets its 100 Continue and is served.
    let body = b"{\"ok\":true}";
    let signing = Signing::new(&key, "POST", "/v1/echo", body);
    let mut stream = TcpStream::connect(app.public).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST /v1/echo HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nConnection: close\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        signing.authorization(),
        body.len()
    )
    .unwrap();
    let n = stream.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 100 Continue"));
    stream.write_all(body).unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("HTTP/1.1 200"), "{rest}");
}
