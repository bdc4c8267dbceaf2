//! Talking to keygate over real HTTP: the test keys, a signed request's
//! `Authorization`, answers as status, headers and JSON, and raw bytes on
//! a socket for what a client library would refuse to send.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use keygate::clock::Clock;
use keygate::signature::{self, BodyHash, SignedParts};
use serde_json::Value;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdefghijkl";

/// The machine's Unix time, as a partner signs with it.
pub fn now() -> i64 {
    Clock::system().now()
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

pub fn answer(result: Result<ureq::Response, ureq::Error>) -> Answer {
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
