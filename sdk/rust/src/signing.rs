//! The signature schemes: pure functions, no I/O.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub const KG1: &str = "KG1-HMAC-SHA256";

/// The signature scheme.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scheme {
    /// KG1-HMAC-SHA256: one Authorization header.
    #[default]
    Kg1,
    /// RFC 9421 HTTP Message Signatures with `alg="hmac-sha256"`.
    Rfc9421,
}

/// One request to sign.
#[derive(Clone, Copy, Debug)]
pub struct SignRequest<'a> {
    pub key_id: &'a str,
    pub secret: &'a str,
    pub method: &'a str,
    /// The path and query exactly as on the request line, e.g.
    /// `/v1/orders?id=7&q=a%20b`: not decoded, not re-ordered.
    pub target: &'a str,
    /// The exact bytes sent.
    pub body: &'a [u8],
    /// Unix seconds.
    pub timestamp: u64,
    /// `None`: a fresh one.
    pub nonce: Option<&'a str>,
    pub scheme: Scheme,
}

/// The headers to add, and what was signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    pub headers: Vec<(&'static str, String)>,
    pub string_to_sign: String,
}

/// KG1's seven lines (CONTRACT section 2).
pub fn string_to_sign(
    key_id: &str,
    timestamp: u64,
    nonce: &str,
    method: &str,
    target: &str,
    body: &[u8],
) -> String {
    [
        KG1,
        key_id,
        &timestamp.to_string(),
        nonce,
        &method.to_ascii_uppercase(),
        target,
        &hex::encode(Sha256::digest(body)),
    ]
    .join("\n")
}

/// 16 random bytes, hex: fresh for every request, retries included.
pub fn new_nonce() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Signs one request.
pub fn sign(request: &SignRequest<'_>) -> Signed {
    let fresh;
    let nonce = match request.nonce {
        Some(nonce) => nonce,
        None => {
            fresh = new_nonce();
            &fresh
        }
    };
    match request.scheme {
        Scheme::Kg1 => {
            let text = string_to_sign(
                request.key_id,
                request.timestamp,
                nonce,
                request.method,
                request.target,
                request.body,
            );
            let header = format!(
                "{KG1} KeyId={}, Timestamp={}, Nonce={nonce}, Signature={}",
                request.key_id,
                request.timestamp,
                hex::encode(mac(request.secret, &text))
            );
            Signed {
                headers: vec![("authorization", header)],
                string_to_sign: text,
            }
        }
        Scheme::Rfc9421 => sign_rfc9421(request, nonce),
    }
}

/// The HMAC key is the whole secret string's bytes, prefix included.
fn mac(secret: &str, text: &str) -> Vec<u8> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(text.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// RFC 9421 with alg hmac-sha256, covering the method, the request target
/// as sent and, when there is a body, its RFC 9530 Content-Digest.
fn sign_rfc9421(r: &SignRequest<'_>, nonce: &str) -> Signed {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut headers = Vec::new();
    let mut components = vec![r#""@method""#, r#""@request-target""#];
    let mut lines = vec![
        format!(r#""@method": {}"#, r.method.to_ascii_uppercase()),
        format!(r#""@request-target": {}"#, r.target),
    ];
    if !r.body.is_empty() {
        let digest = format!("sha-256=:{}:", b64.encode(Sha256::digest(r.body)));
        components.push(r#""content-digest""#);
        lines.push(format!(r#""content-digest": {digest}"#));
        headers.push(("content-digest", digest));
    }
    let params = format!(
        r#"({});created={};keyid="{}";nonce="{nonce}";alg="hmac-sha256""#,
        components.join(" "),
        r.timestamp,
        r.key_id
    );
    lines.push(format!(r#""@signature-params": {params}"#));
    let base = lines.join("\n");
    headers.push(("signature-input", format!("sig1={params}")));
    headers.push((
        "signature",
        format!("sig1=:{}:", b64.encode(mac(r.secret, &base))),
    ));
    Signed {
        headers,
        string_to_sign: base,
    }
}
