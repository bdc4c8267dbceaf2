//! Call a keygate-protected API with KG1-HMAC-SHA256 signatures, from Rust.
//!
//! Uses the keygate crate's signing core (`keygate::signature`, no I/O) and
//! `ureq` for HTTP. In your own crate, depend on keygate for the core, or
//! copy `sign()` with the `hmac`, `sha2` and `hex` crates.
//!
//!   KEYGATE_URL=http://127.0.0.1:8080 KEYGATE_KEY_ID=pk_... KEYGATE_SECRET=sk_... cargo run --example client

use std::io::{BufRead, Read};
use std::process::ExitCode;

use keygate::signature::{authorization_header, BodyHash, SignedParts, StringToSign};
use rand::RngCore;

/// The Authorization header and the string to sign for one request.
/// `target` is the path and query exactly as on the request line;
/// `body` the exact bytes sent.
pub fn sign(
    key_id: &str,
    secret: &str,
    method: &str,
    target: &str,
    body: &[u8],
    timestamp: &str,
    nonce: &str,
) -> (String, String) {
    let parts = SignedParts {
        key_id,
        timestamp,
        nonce,
        method,
        request_target: target,
        body_hash: BodyHash::of(body),
    };
    (
        authorization_header(secret, &parts),
        StringToSign::new(&parts).as_str().to_owned(),
    )
}

struct Answer {
    status: u16,
    body: String,
    string_to_sign: String,
}

/// Signs with the current time and a fresh nonce, sends, returns the answer.
fn send(
    key_id: &str,
    secret: &str,
    method: &str,
    url: &str,
    body: &[u8],
) -> Result<Answer, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("bad URL {url}: {e}"))?;
    // ureq sends the parsed URL's path and query: sign exactly that.
    let target = match parsed.query() {
        Some(query) => format!("{}?{}", parsed.path(), query),
        None => parsed.path().to_owned(),
    };
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs()
        .to_string();
    let mut nonce = [0u8; 16];
    rand::rng().fill_bytes(&mut nonce); // fresh for every request, retries too
    let (authorization, string_to_sign) = sign(
        key_id,
        secret,
        method,
        &target,
        body,
        &timestamp,
        &hex::encode(nonce),
    );
    let request = ureq::request_url(method, &parsed).set("Authorization", &authorization);
    let result = if body.is_empty() {
        request.call()
    } else {
        request
            .set("Content-Type", "application/json")
            .send_bytes(body)
    };
    let response = match result {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(format!("{method} {url}: {e}")),
    };
    let status = response.status();
    let mut text = String::new();
    response
        .into_reader()
        .take(16 * 1024 * 1024)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    Ok(Answer {
        status,
        body: text,
        string_to_sign,
    })
}

/// Prints the error code and, for a signature mismatch, both strings to
/// sign side by side.
fn explain_refusal(answer: &Answer) {
    let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap_or_default();
    let error = &json["error"];
    println!(
        "  refused: {}: {}",
        error["code"].as_str().unwrap_or("?"),
        error["message"].as_str().unwrap_or(&answer.body)
    );
    if error["code"] == "signature_mismatch" {
        let theirs: Vec<&str> = error["string_to_sign"]
            .as_str()
            .unwrap_or("")
            .split('\n')
            .collect();
        let ours: Vec<&str> = answer.string_to_sign.split('\n').collect();
        println!("  string to sign, ours | server's ('!' marks a difference):");
        for i in 0..ours.len().max(theirs.len()) {
            let (a, b) = (
                ours.get(i).copied().unwrap_or(""),
                theirs.get(i).copied().unwrap_or(""),
            );
            println!("  {} {a:<66} | {b}", if a == b { ' ' } else { '!' });
        }
        if ours == theirs {
            println!("  the strings match, so the secret is wrong: use the whole secret of this key id, sk_ prefix included");
        }
    }
}

/// Test hook: tab-separated key_id, secret, method, target, timestamp,
/// nonce, body_hex lines on stdin; one Authorization header per line.
fn sign_vectors() {
    for line in std::io::stdin().lock().lines().map_while(Result::ok) {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() == 7 {
            let body = hex::decode(f[6]).expect("hex body");
            println!("{}", sign(f[0], f[1], f[2], f[3], &body, f[4], f[5]).0);
        }
    }
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--sign-vectors") {
        sign_vectors();
        return ExitCode::SUCCESS;
    }
    let env = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("set {name}"));
    let base = env("KEYGATE_URL").trim_end_matches('/').to_owned();
    let (key_id, secret) = (env("KEYGATE_KEY_ID"), env("KEYGATE_SECRET"));
    let body = serde_json::json!({ "order_id": 7, "note": "café – 東京 ✓" }).to_string();
    let calls = [
        ("GET", "/v1/whoami?probe=1&x=a%20b", ""),
        ("POST", "/v1/echo", body.as_str()),
    ];
    let mut ok = true;
    for (method, target, payload) in calls {
        match send(
            &key_id,
            &secret,
            method,
            &format!("{base}{target}"),
            payload.as_bytes(),
        ) {
            Ok(answer) => {
                println!("{method} {target} -> {}", answer.status);
                if (200..300).contains(&answer.status) {
                    println!("  {}", answer.body);
                } else {
                    ok = false;
                    explain_refusal(&answer);
                }
            }
            Err(e) => {
                ok = false;
                println!("{method} {target} -> failed: {e}");
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
