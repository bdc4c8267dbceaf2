//! The published vectors in tests/vectors/kg1.json (made by an independent
//! Python implementation) against the Rust signing core. Every client
//! example checks the same file.

use base64::Engine;
use keygate::signature::{
    authorization_header, Authorization, BodyHash, SignedParts, SigningKey, StringToSign,
};
use serde_json::Value;

fn vectors() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/kg1.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn body_of(case: &Value) -> Vec<u8> {
    match (case.get("body"), case.get("body_base64")) {
        (Some(text), _) => text.as_str().unwrap().as_bytes().to_vec(),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap(),
        _ => panic!("case without body: {case}"),
    }
}

fn s<'a>(case: &'a Value, field: &str) -> &'a str {
    case[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} missing in {case}"))
}

#[test]
fn valid_vectors_sign_exactly_as_published() {
    let all = vectors();
    let valid = all["valid"].as_array().unwrap();
    assert!(valid.len() >= 5);
    for case in valid {
        let body = body_of(case);
        let parts = SignedParts {
            key_id: s(case, "key_id"),
            timestamp: s(case, "timestamp"),
            nonce: s(case, "nonce"),
            method: s(case, "method"),
            request_target: s(case, "request_target"),
            body_hash: BodyHash::of(&body),
        };
        let expected = &case["expected"];
        let name = s(case, "name");
        assert_eq!(
            parts.body_hash.as_str(),
            s(expected, "body_sha256"),
            "{name}"
        );
        let sts = StringToSign::new(&parts);
        assert_eq!(sts.as_str(), s(expected, "string_to_sign"), "{name}");
        let key = SigningKey::new(s(case, "secret"));
        assert_eq!(key.sign_hex(&sts), s(expected, "signature"), "{name}");
        let header = authorization_header(s(case, "secret"), &parts);
        assert_eq!(header, s(expected, "authorization"), "{name}");
        let parsed = Authorization::parse(header.as_bytes()).unwrap();
        assert!(key.verify(&sts, &parsed.signature), "{name}");
    }
}

#[test]
fn mismatch_vectors_fail_verification() {
    let all = vectors();
    let cases = all["signature_mismatch"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for case in cases {
        let request = &case["request"];
        let body = body_of(request);
        let auth = Authorization::parse(s(case, "authorization").as_bytes()).unwrap();
        let sts = StringToSign::new(&SignedParts {
            key_id: auth.key_id,
            timestamp: auth.timestamp,
            nonce: auth.nonce,
            method: s(request, "method"),
            request_target: s(request, "request_target"),
            body_hash: BodyHash::of(&body),
        });
        let key = SigningKey::new(s(request, "secret"));
        assert!(
            !key.verify(&sts, &auth.signature),
            "{} must not verify",
            s(case, "name")
        );
    }
}

#[test]
fn malformed_vectors_do_not_parse() {
    let all = vectors();
    for case in all["malformed"].as_array().unwrap() {
        assert!(
            Authorization::parse(s(case, "authorization").as_bytes()).is_err(),
            "{} must be malformed",
            s(case, "name")
        );
    }
}
