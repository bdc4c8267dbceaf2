//! What a hostile client cannot take: memory for bodies of requests whose
//! signature is not known yet.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::helpers::*;

/// Bodies of requests not yet verified share one memory budget. Two
/// stalled uploads that hold all of it (one declared, one chunked) make
/// the next request with a body wait about a second, then get 503 with
/// `Retry-After`; a request without a body is not held up, and once the
/// stalled uploads go, there is room again.
#[test]
fn stalled_bodies_cannot_take_more_than_the_budget() {
    let app = spawn_app_with(|c| {
        c.max_body_bytes = 64 * 1024;
        c.body_budget_bytes = 128 * 1024;
        c.body_timeout = Duration::from_secs(30);
    });
    let key = app.create_key();
    // Only a key id and a fresh timestamp are needed to get as far as the
    // body; the signature is never checked.
    let authorization = Signing::new(&key, "POST", "/v1/echo", b"x").authorization();
    let starts = [
        format!("POST /v1/echo HTTP/1.1\r\nHost: x\r\nAuthorization: {authorization}\r\nContent-Length: 65536\r\n\r\n{}", "a".repeat(1024)),
        format!("POST /v1/echo HTTP/1.1\r\nHost: x\r\nAuthorization: {authorization}\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n{}\r\n", "a".repeat(1024)),
    ];
    let mut stalled: Vec<TcpStream> = starts
        .iter()
        .map(|start| {
            let mut stream = TcpStream::connect(app.public).unwrap();
            stream.write_all(start.as_bytes()).unwrap();
            stream
        })
        .collect();
    // The stalled uploads reach the server's reader threads.
    std::thread::sleep(Duration::from_millis(500));

    let started = Instant::now();
    let refused = app.signed(&key, "POST", "/v1/echo", b"0123456789");
    let waited = started.elapsed();
    assert_eq!(
        (refused.status, refused.code()),
        (503, "unavailable"),
        "{:?}",
        refused.body
    );
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(5)).contains(&waited),
        "refused after {waited:?}"
    );
    assert_eq!(app.signed(&key, "GET", "/v1/whoami", b"").status, 200);

    stalled.clear();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = app.signed(&key, "POST", "/v1/echo", b"0123456789");
        if answer.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no room after the uploads went: {:?}",
            answer.body
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
