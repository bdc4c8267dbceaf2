//! The KG1-HMAC-SHA256 signature scheme of CONTRACT.md section 2.
//!
//! This module does no I/O and knows nothing of HTTP servers or databases:
//! it parses the `Authorization` header, builds the string to sign, signs
//! and verifies. The server, `keygate request`, the Rust client example and
//! the tests all use it, and partners' code in other languages mirrors it, so
//! it is written to read like the specification.
//!
//! ```text
//! Authorization: KG1-HMAC-SHA256 KeyId=<key_id>, Timestamp=<ts>, Nonce=<nonce>, Signature=<sig>
//!
//! string_to_sign = "KG1-HMAC-SHA256\n<key_id>\n<ts>\n<nonce>\n<METHOD>\n<request-target>\n<body-sha256>"
//! sig            = lowercase_hex(HMAC-SHA256(secret_string_bytes, string_to_sign))
//! ```

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The scheme name: first word of the `Authorization` header and first line
/// of the string to sign.
pub const SCHEME: &str = "KG1-HMAC-SHA256";

/// Longest `Authorization` header we parse. A valid header is at most about
/// 400 bytes (128-char nonce, 128-char key id); anything longer is refused
/// before it is looked at so a 20 KB header costs nothing.
pub const MAX_AUTHORIZATION_LEN: usize = 1024;

/// Lowercase hex SHA-256 of the empty body, the most common body hash.
pub const EMPTY_BODY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

type HmacSha256 = Hmac<Sha256>;

/// Why an `Authorization` header is not a well-formed KG1 header. The
/// `Display` text is sent to the partner, so it says exactly what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the Authorization header is longer than {MAX_AUTHORIZATION_LEN} bytes")]
    TooLong,
    #[error("the Authorization header contains bytes that are not visible ASCII")]
    NotAscii,
    #[error("the Authorization scheme must be {SCHEME}")]
    WrongScheme,
    #[error("parameter {0:?} is not of the form Name=value")]
    NotNameValue(String),
    #[error("unknown parameter {0:?}; expected KeyId, Timestamp, Nonce and Signature")]
    UnknownParameter(String),
    #[error("parameter {0} appears more than once")]
    RepeatedParameter(&'static str),
    #[error("parameter {0} is missing")]
    MissingParameter(&'static str),
    #[error("KeyId must be 1 to 128 characters of [A-Za-z0-9_] (e.g. pk_...), unquoted")]
    BadKeyId,
    #[error("Timestamp must be Unix seconds: 1 to 12 decimal digits, unquoted")]
    BadTimestamp,
    #[error("Nonce must be 16 to 128 characters of [A-Za-z0-9_-], unquoted")]
    BadNonce,
    #[error("Signature must be exactly 64 lowercase hex characters, unquoted")]
    BadSignature,
}

/// The four parameters of a KG1 `Authorization` header, borrowed from the
/// header value (no copies on the request path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization<'a> {
    pub key_id: &'a str,
    /// The timestamp exactly as sent; it is signed as text.
    pub timestamp: &'a str,
    pub nonce: &'a str,
    pub signature: [u8; 32],
}

impl<'a> Authorization<'a> {
    /// Parses a header value such as
    /// `KG1-HMAC-SHA256 KeyId=pk_x, Timestamp=1700000000, Nonce=..., Signature=...`.
    pub fn parse(header: &'a [u8]) -> Result<Self, HeaderError> {
        if header.len() > MAX_AUTHORIZATION_LEN {
            return Err(HeaderError::TooLong);
        }
        if !all_of(VISIBLE, header) {
            return Err(HeaderError::NotAscii);
        }
        let header = std::str::from_utf8(header).map_err(|_| HeaderError::NotAscii)?;
        let header = header.trim_matches(is_space);
        let (scheme, params) = header
            .split_once(is_space)
            .ok_or(HeaderError::WrongScheme)?;
        // Authentication scheme names are case-insensitive (RFC 9110 11.1).
        if !scheme.eq_ignore_ascii_case(SCHEME) {
            return Err(HeaderError::WrongScheme);
        }

        let (mut key_id, mut timestamp, mut nonce, mut signature) = (None, None, None, None);
        for param in params.split(',') {
            let param = param.trim_matches(is_space);
            let (name, value) = param
                .split_once('=')
                .ok_or_else(|| HeaderError::NotNameValue(param.to_owned()))?;
            let (slot, name) = match name {
                "KeyId" => (&mut key_id, "KeyId"),
                "Timestamp" => (&mut timestamp, "Timestamp"),
                "Nonce" => (&mut nonce, "Nonce"),
                "Signature" => (&mut signature, "Signature"),
                other => return Err(HeaderError::UnknownParameter(other.to_owned())),
            };
            if slot.replace(value).is_some() {
                return Err(HeaderError::RepeatedParameter(name));
            }
        }

        let key_id = key_id.ok_or(HeaderError::MissingParameter("KeyId"))?;
        let timestamp = timestamp.ok_or(HeaderError::MissingParameter("Timestamp"))?;
        let nonce = nonce.ok_or(HeaderError::MissingParameter("Nonce"))?;
        let signature = signature.ok_or(HeaderError::MissingParameter("Signature"))?;

        if !is_valid_key_id(key_id) {
            return Err(HeaderError::BadKeyId);
        }
        if !(1..=12).contains(&timestamp.len()) || !all_of(DIGIT, timestamp.as_bytes()) {
            return Err(HeaderError::BadTimestamp);
        }
        if !is_valid_nonce(nonce) {
            return Err(HeaderError::BadNonce);
        }
        let signature = parse_signature_hex(signature).ok_or(HeaderError::BadSignature)?;

        Ok(Authorization {
            key_id,
            timestamp,
            nonce,
            signature,
        })
    }

    /// The timestamp as Unix seconds (12 digits always fit in an i64).
    pub fn unix_time(&self) -> i64 {
        self.timestamp.parse().expect("validated as 1 to 12 digits")
    }
}

fn is_space(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Key ids we issue are `pk_` + 24 alphanumerics; the header accepts any
/// plausible id so that a mistyped one is answered `unknown_key`, which is
/// the more helpful answer.
fn is_valid_key_id(key_id: &str) -> bool {
    (1..=128).contains(&key_id.len()) && all_of(KEY_ID, key_id.as_bytes())
}

/// 16 to 128 characters of `[A-Za-z0-9_-]`.
pub fn is_valid_nonce(nonce: &str) -> bool {
    (16..=128).contains(&nonce.len()) && all_of(NONCE, nonce.as_bytes())
}

/// 64 lowercase hex characters into 32 bytes; uppercase is refused because
/// the contract fixes one spelling, so that logs and diffs compare by eye.
fn parse_signature_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !all_of(LOWER_HEX, text.as_bytes()) {
        return None;
    }
    let mut out = [0u8; 32];
    const_hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

// Character classes of the header's parts, looked up in a table. Nonces and
// signatures are random bytes, so a chain of range comparisons per byte
// would be a mispredicted branch on almost every character of every request
// (measured: `kg1_verify_fresh_requests` in benches/signature.rs).
const VISIBLE: u8 = 1; // tab, or ' ' to '~'
const DIGIT: u8 = 2; // 0-9
const KEY_ID: u8 = 4; // A-Z a-z 0-9 _
const NONCE: u8 = 8; // A-Z a-z 0-9 _ -
const LOWER_HEX: u8 = 16; // 0-9 a-f

static BYTE_CLASSES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let mut class = 0;
        if c == b'\t' || (c >= b' ' && c <= b'~') {
            class |= VISIBLE;
        }
        if c.is_ascii_digit() {
            class |= DIGIT | KEY_ID | NONCE | LOWER_HEX;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            class |= KEY_ID | NONCE;
        }
        if c == b'-' {
            class |= NONCE;
        }
        if c >= b'a' && c <= b'f' {
            class |= LOWER_HEX;
        }
        table[b] = class;
        b += 1;
    }
    table
};

/// Whether every byte is in `class`, without a branch per byte.
fn all_of(class: u8, text: &[u8]) -> bool {
    text.iter()
        .fold(class, |seen, &b| seen & BYTE_CLASSES[usize::from(b)])
        == class
}

/// Lowercase hex SHA-256 of a body, as it appears on the string to sign.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BodyHash([u8; 64]);

impl BodyHash {
    /// Most signed requests (every GET) have no body; no need to hash it.
    pub const EMPTY: BodyHash = match EMPTY_BODY_SHA256.as_bytes().first_chunk::<64>() {
        Some(hex_digits) => BodyHash(*hex_digits),
        None => panic!("EMPTY_BODY_SHA256 holds 64 hex digits"),
    };

    pub fn of(body: &[u8]) -> Self {
        Self::from_digest(Sha256::digest(body).into())
    }

    /// For callers that hash the body as it streams in.
    pub fn from_digest(digest: [u8; 32]) -> Self {
        let mut hex_digits = [0u8; 64];
        const_hex::encode_to_slice(digest, &mut hex_digits).expect("64 bytes hold 32 in hex");
        BodyHash(hex_digits)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

impl fmt::Debug for BodyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a request is signed over, besides the credentials.
#[derive(Debug, Clone, Copy)]
pub struct SignedParts<'a> {
    pub key_id: &'a str,
    pub timestamp: &'a str,
    pub nonce: &'a str,
    /// Uppercase, exactly as on the request line.
    pub method: &'a str,
    /// Path and query exactly as on the request line: no host, no decoding,
    /// no re-ordering.
    pub request_target: &'a str,
    pub body_hash: BodyHash,
}

/// The seven lines joined by `\n`, no trailing newline.
#[derive(Clone, PartialEq, Eq)]
pub struct StringToSign(String);

impl StringToSign {
    pub fn new(parts: &SignedParts<'_>) -> Self {
        let lines = [
            SCHEME,
            parts.key_id,
            parts.timestamp,
            parts.nonce,
            parts.method,
            parts.request_target,
            parts.body_hash.as_str(),
        ];
        let mut text = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for (i, line) in lines.iter().enumerate() {
            if i > 0 {
                text.push('\n');
            }
            text.push_str(line);
        }
        StringToSign(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for StringToSign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A secret made ready to sign: the HMAC key schedule is computed once per
/// key instead of once per request. The key is the UTF-8 bytes of the whole
/// secret string, `sk_` prefix included, with no decoding step.
#[derive(Clone)]
pub struct SigningKey(HmacSha256);

impl SigningKey {
    pub fn new(secret: &str) -> Self {
        SigningKey(
            HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length"),
        )
    }

    /// A key from raw bytes (RFC 9421's own test vector uses a binary key).
    pub fn from_bytes(key: &[u8]) -> Self {
        SigningKey(HmacSha256::new_from_slice(key).expect("HMAC takes any key length"))
    }

    /// Constant-time check of an HMAC-SHA256 over any message (the RFC 9421
    /// signature base); a signature of the wrong length simply fails.
    pub fn verify_bytes(&self, message: &[u8], signature: &[u8]) -> bool {
        let mut mac = self.0.clone();
        mac.update(message);
        mac.verify_slice(signature).is_ok()
    }

    pub fn sign(&self, string_to_sign: &StringToSign) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(string_to_sign.as_str().as_bytes());
        mac.finalize().into_bytes().into()
    }

    pub fn sign_hex(&self, string_to_sign: &StringToSign) -> String {
        const_hex::encode(self.sign(string_to_sign))
    }

    /// Constant-time comparison (through `hmac`'s `verify_slice`, which uses
    /// `subtle`), so the time taken says nothing about how much matched.
    pub fn verify(&self, string_to_sign: &StringToSign, signature: &[u8; 32]) -> bool {
        let mut mac = self.0.clone();
        mac.update(string_to_sign.as_str().as_bytes());
        mac.verify_slice(signature).is_ok()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// The client side in one call: the `Authorization` header value for a
/// request. Used by `keygate request`, the Rust client example and the tests.
pub fn authorization_header(secret: &str, parts: &SignedParts<'_>) -> String {
    let signature = SigningKey::new(secret).sign_hex(&StringToSign::new(parts));
    format!(
        "{SCHEME} KeyId={}, Timestamp={}, Nonce={}, Signature={}",
        parts.key_id, parts.timestamp, parts.nonce, signature
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIG: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn header(params: &str) -> String {
        format!("KG1-HMAC-SHA256 {params}")
    }

    /// The lookup table must say exactly what the contract's character
    /// classes say, for every byte value.
    #[test]
    fn byte_classes_match_the_contract() {
        for b in 0..=255u8 {
            let cases = [
                (VISIBLE, b == b'\t' || (b' '..=b'~').contains(&b)),
                (DIGIT, b.is_ascii_digit()),
                (KEY_ID, b.is_ascii_alphanumeric() || b == b'_'),
                (NONCE, b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                (LOWER_HEX, matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            ];
            for (class, expected) in cases {
                assert_eq!(all_of(class, &[b]), expected, "byte {b:#04x} class {class}");
                // Digits are in every class: one bad byte among good ones.
                assert_eq!(all_of(class, &[b'0', b, b'1']), expected);
            }
        }
        assert!(all_of(NONCE, b""));
    }

    #[test]
    fn parses_parameters_in_any_order_with_optional_spaces() {
        let h = header(&format!(
            "Signature={SIG},Nonce=abcdefghijklmnop ,  KeyId=pk_abc,Timestamp=1700000000"
        ));
        let auth = Authorization::parse(h.as_bytes()).unwrap();
        assert_eq!(auth.key_id, "pk_abc");
        assert_eq!(auth.timestamp, "1700000000");
        assert_eq!(auth.unix_time(), 1_700_000_000);
        assert_eq!(auth.nonce, "abcdefghijklmnop");
        assert_eq!(const_hex::encode(auth.signature), SIG);
    }

    #[test]
    fn refuses_each_kind_of_malformed_header() {
        let ok = format!("KeyId=pk_abc, Timestamp=1, Nonce=abcdefghijklmnop, Signature={SIG}");
        assert!(Authorization::parse(header(&ok).as_bytes()).is_ok());
        let cases: Vec<(String, HeaderError)> = vec![
            (format!("Bearer {ok}"), HeaderError::WrongScheme),
            ("KG1-HMAC-SHA256".into(), HeaderError::WrongScheme),
            (
                header(&format!("{ok}, Extra=1")),
                HeaderError::UnknownParameter("Extra".into()),
            ),
            (
                header(&format!("{ok}, Nonce=abcdefghijklmnop")),
                HeaderError::RepeatedParameter("Nonce"),
            ),
            (
                header(&format!("{ok},")),
                HeaderError::NotNameValue("".into()),
            ),
            (
                header("KeyId=pk_abc, Timestamp=1, Nonce=abcdefghijklmnop"),
                HeaderError::MissingParameter("Signature"),
            ),
            (
                header(&ok.replace("pk_abc", "\"pk_abc\"")),
                HeaderError::BadKeyId,
            ),
            (
                header(&ok.replace("Timestamp=1", "Timestamp=1234567890123")),
                HeaderError::BadTimestamp,
            ),
            (
                header(&ok.replace("Timestamp=1", "Timestamp=-1")),
                HeaderError::BadTimestamp,
            ),
            (
                header(&ok.replace("Timestamp=1", "Timestamp=")),
                HeaderError::BadTimestamp,
            ),
            (
                header(&ok.replace("abcdefghijklmnop", "short")),
                HeaderError::BadNonce,
            ),
            (
                header(&ok.replace("abcdefghijklmnop", &"n".repeat(129))),
                HeaderError::BadNonce,
            ),
            (
                header(&ok.replace("abcdefghijklmnop", "abcdefghijklmno!")),
                HeaderError::BadNonce,
            ),
            (
                header(&ok.replace(SIG, &SIG.to_uppercase())),
                HeaderError::BadSignature,
            ),
            (
                header(&ok.replace(SIG, &SIG[..62])),
                HeaderError::BadSignature,
            ),
            (
                header(&ok.replace(SIG, &SIG.replace('a', "g"))),
                HeaderError::BadSignature,
            ),
            (
                header(&format!("{ok}{}", " ".repeat(2000))),
                HeaderError::TooLong,
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(
                Authorization::parse(value.as_bytes()),
                Err(expected),
                "{value}"
            );
        }
        assert_eq!(
            Authorization::parse("KG1-HMAC-SHA256 KeyId=pk_é".as_bytes()),
            Err(HeaderError::NotAscii)
        );
        assert_eq!(
            Authorization::parse(b"KG1-HMAC-SHA256 KeyId=\xff"),
            Err(HeaderError::NotAscii)
        );
    }

    #[test]
    fn scheme_name_is_case_insensitive() {
        let h = format!(
            "kg1-hmac-sha256 KeyId=pk_abc, Timestamp=1, Nonce=abcdefghijklmnop, Signature={SIG}"
        );
        assert!(Authorization::parse(h.as_bytes()).is_ok());
    }

    #[test]
    fn empty_body_hash_matches_constant() {
        assert_eq!(BodyHash::of(b"").as_str(), EMPTY_BODY_SHA256);
        assert_eq!(BodyHash::EMPTY, BodyHash::of(b""));
    }

    #[test]
    fn sign_then_verify_and_tamper() {
        let parts = SignedParts {
            key_id: "pk_abc",
            timestamp: "1700000000",
            nonce: "abcdefghijklmnop",
            method: "GET",
            request_target: "/v1/whoami",
            body_hash: BodyHash::of(b""),
        };
        let key = SigningKey::new("sk_secret");
        let sts = StringToSign::new(&parts);
        assert_eq!(
            sts.as_str(),
            format!("KG1-HMAC-SHA256\npk_abc\n1700000000\nabcdefghijklmnop\nGET\n/v1/whoami\n{EMPTY_BODY_SHA256}")
        );
        let sig = key.sign(&sts);
        assert!(key.verify(&sts, &sig));
        let mut bad = sig;
        bad[31] ^= 1;
        assert!(!key.verify(&sts, &bad));
        assert!(!SigningKey::new("sk_other").verify(&sts, &sig));
        let header = authorization_header("sk_secret", &parts);
        let auth = Authorization::parse(header.as_bytes()).unwrap();
        assert_eq!(auth.signature, sig);
    }
}
