//! tests/vectors/kg1.json: every good vector signs exactly; every bad one does not verify.

use base64::Engine;
use keygate_client::{sign, Refusal, Scheme, SignRequest};
use serde_json::Value;

fn vectors() -> Value {
    let path = std::env::var("KEYGATE_VECTORS").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/vectors/kg1.json").to_owned()
    });
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn signed(c: &Value) -> String {
    let body = match c.get("body_base64") {
        Some(b) => base64::engine::general_purpose::STANDARD
            .decode(b.as_str().unwrap())
            .unwrap(),
        None => c["body"].as_str().unwrap_or("").as_bytes().to_vec(),
    };
    let s = |name: &str| c[name].as_str().unwrap();
    let out = sign(&SignRequest {
        key_id: s("key_id"),
        secret: s("secret"),
        method: s("method"),
        target: s("request_target"),
        body: &body,
        timestamp: s("timestamp").parse().unwrap(),
        nonce: Some(s("nonce")),
        scheme: Scheme::Kg1,
    });
    assert_eq!(out.headers[0].0, "authorization");
    if let Some(expected) = c.get("expected") {
        assert_eq!(
            out.string_to_sign,
            expected["string_to_sign"].as_str().unwrap(),
            "{}",
            c["name"]
        );
    }
    out.headers[0].1.clone()
}

#[test]
fn every_valid_vector_signs_exactly() {
    let v = vectors();
    let valid = v["valid"].as_array().unwrap();
    assert!(!valid.is_empty());
    for c in valid {
        assert_eq!(
            signed(c),
            c["expected"]["authorization"].as_str().unwrap(),
            "{}",
            c["name"]
        );
    }
}

#[test]
fn every_mismatch_vector_signs_differently() {
    let v = vectors();
    let mismatch = v["signature_mismatch"].as_array().unwrap();
    assert!(!mismatch.is_empty());
    for c in mismatch {
        assert_ne!(
            signed(&c["request"]),
            c["authorization"].as_str().unwrap(),
            "{}",
            c["name"]
        );
    }
}

#[test]
fn the_diff_marks_the_first_differing_line() {
    let body =
        br#"{"error":{"code":"signature_mismatch","message":"no","string_to_sign":"a\nB\nC"}}"#;
    let refusal = Refusal::parse(401, None, Some("rid"), body, Some("a\nb\nc")).unwrap();
    let diff = refusal.diff().unwrap();
    let marked: Vec<&str> = diff.lines().filter(|l| l.starts_with('>')).collect();
    assert_eq!(marked.len(), 1, "{diff}");
    assert!(
        marked[0].contains('b') && marked[0].contains("| B"),
        "{diff}"
    );
    assert_eq!(refusal.request_id.as_deref(), Some("rid"));
}
