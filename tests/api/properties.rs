//! Properties of the signature core over generated input: the parsers
//! never panic on any bytes a client can send, a header keygate's own
//! signer writes always parses back and verifies, the parameters may come
//! in any order and spacing, and a change to any signed part or to the
//! signature is refused.

use keygate::rfc9421;
use keygate::signature::{
    authorization_header, Authorization, BodyHash, SignedParts, SigningKey, StringToSign,
};
use proptest::prelude::*;

const KEY_ID: &str = "pk_[A-Za-z0-9]{24}";
const SECRET: &str = "sk_[A-Za-z0-9_-]{43}";
const TIMESTAMP: &str = "[1-9][0-9]{0,11}";
const NONCE: &str = "[A-Za-z0-9_-]{16,128}";
const METHOD: &str = "GET|POST|PUT|PATCH|DELETE";
/// Path and query as a client may send them, percent-encoding included.
const TARGET: &str = "/[A-Za-z0-9/._~%-]{0,40}(\\?[A-Za-z0-9=&%+._~-]{0,40})?";

fn parts<'a>(
    key_id: &'a str,
    timestamp: &'a str,
    nonce: &'a str,
    method: &'a str,
    target: &'a str,
    body: &[u8],
) -> SignedParts<'a> {
    SignedParts {
        key_id,
        timestamp,
        nonce,
        method,
        request_target: target,
        body_hash: BodyHash::of(body),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any bytes at all: an answer, never a panic, and what is accepted
    /// obeys the contract's grammar.
    #[test]
    fn the_kg1_parser_takes_any_bytes(header in proptest::collection::vec(any::<u8>(), 0..700)) {
        if let Ok(auth) = Authorization::parse(&header) {
            prop_assert!(auth.key_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
            prop_assert!((1..=12).contains(&auth.timestamp.len()));
            prop_assert!(auth.unix_time() >= 0);
            prop_assert!(keygate::signature::is_valid_nonce(auth.nonce));
        }
    }

    /// Nearly valid headers, where a parser is most likely to slip: the
    /// scheme and the parameter names right, the values anything printable.
    #[test]
    fn the_kg1_parser_takes_any_values(
        key_id in "[ -~]{0,40}", timestamp in "[ -~]{0,20}",
        nonce in "[ -~]{0,140}", signature in "[ -~]{0,70}",
    ) {
        let header = format!(
            "KG1-HMAC-SHA256 KeyId={key_id}, Timestamp={timestamp}, Nonce={nonce}, Signature={signature}"
        );
        if let Ok(auth) = Authorization::parse(header.as_bytes()) {
            prop_assert_eq!(auth.key_id, key_id.as_str());
            prop_assert_eq!(auth.nonce, nonce.as_str());
            prop_assert_eq!(auth.timestamp, timestamp.as_str());
        }
    }

    /// What keygate's signer writes parses back to the same fields and
    /// verifies against the same parts, whatever the request.
    #[test]
    fn a_signed_header_parses_back_and_verifies(
        key_id in KEY_ID, secret in SECRET, timestamp in TIMESTAMP, nonce in NONCE,
        method in METHOD, target in TARGET, body in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let signed = parts(&key_id, &timestamp, &nonce, &method, &target, &body);
        let header = authorization_header(&secret, &signed);
        let auth = Authorization::parse(header.as_bytes()).unwrap();
        prop_assert_eq!(auth.key_id, key_id.as_str());
        prop_assert_eq!(auth.timestamp, timestamp.as_str());
        prop_assert_eq!(auth.nonce, nonce.as_str());
        prop_assert!(SigningKey::new(&secret).verify(&StringToSign::new(&signed), &auth.signature));
    }

    /// The four parameters in any order, with any spaces and tabs around
    /// the commas and the scheme, parse to the same header.
    #[test]
    fn parameters_come_in_any_order_and_spacing(
        key_id in KEY_ID, timestamp in TIMESTAMP, nonce in NONCE,
        signature in "[0-9a-f]{64}",
        order in Just([0usize, 1, 2, 3]).prop_shuffle(),
        gaps in proptest::collection::vec("[ \t]{0,3}", 9),
    ) {
        let params = [
            format!("KeyId={key_id}"),
            format!("Timestamp={timestamp}"),
            format!("Nonce={nonce}"),
            format!("Signature={signature}"),
        ];
        let mut header = format!("{}KG1-HMAC-SHA256 {}", gaps[0], gaps[1]);
        for (i, index) in order.iter().enumerate() {
            if i > 0 {
                header.push_str(&format!("{},{}", gaps[2 * i], gaps[2 * i + 1]));
            }
            header.push_str(&params[*index]);
        }
        header.push_str(&gaps[8]);
        let auth = Authorization::parse(header.as_bytes());
        prop_assert!(auth.is_ok(), "{:?}: {:?}", header, auth);
        let auth = auth.unwrap();
        prop_assert_eq!(auth.key_id, key_id.as_str());
        prop_assert_eq!(auth.nonce, nonce.as_str());
        prop_assert_eq!(const_hex::encode(auth.signature), signature);
    }

    /// A signature over other parts, or a signature with any one byte
    /// changed, is refused.
    #[test]
    fn any_change_is_refused(
        key_id in KEY_ID, secret in SECRET, timestamp in TIMESTAMP, nonce in NONCE,
        method in METHOD, target in TARGET, body in proptest::collection::vec(any::<u8>(), 0..100),
        other_target in TARGET, flipped_byte in 0usize..32, flip in 1u8..=255,
    ) {
        let key = SigningKey::new(&secret);
        let signed = StringToSign::new(&parts(&key_id, &timestamp, &nonce, &method, &target, &body));
        let mut signature = key.sign(&signed);
        prop_assert!(key.verify(&signed, &signature));
        if other_target != target {
            let moved = StringToSign::new(&parts(&key_id, &timestamp, &nonce, &method, &other_target, &body));
            prop_assert!(!key.verify(&moved, &signature));
        }
        let mut longer_body = body.clone();
        longer_body.push(0);
        let padded = StringToSign::new(&parts(&key_id, &timestamp, &nonce, &method, &target, &longer_body));
        prop_assert!(!key.verify(&padded, &signature));
        signature[flipped_byte] ^= flip;
        prop_assert!(!key.verify(&signed, &signature));
    }

    /// The RFC 9421 parser on any text in both headers: an answer, never a
    /// panic.
    #[test]
    fn the_rfc9421_parser_takes_any_text(input in "[ -~]{0,300}", signature in "[ -~]{0,200}") {
        let _ = rfc9421::parse(&input, &signature);
    }

    /// Structured-field dictionaries that parse, with the parameters
    /// keygate reads given values of every type: still an answer.
    #[test]
    fn the_rfc9421_parser_takes_any_parameters(
        components in proptest::collection::vec("\"[@a-z-]{1,15}\"", 0..5),
        created in "-?[0-9]{1,15}|\"[a-z]{0,5}\"|\\?[01]|[0-9]{1,3}\\.[0-9]",
        nonce in "\"[ -!#-\\[\\]-~]{0,20}\"|[0-9]{1,5}|:[A-Za-z0-9+/]{0,8}:",
        keyid in "\"[A-Za-z0-9_]{0,30}\"|[a-z]{1,8}",
        alg in "\"[a-z0-9-]{0,15}\"",
        signature in ":[A-Za-z0-9+/]{0,60}={0,2}:|[a-z]{1,5}|\"x\"",
    ) {
        let input = format!(
            "sig1=({});created={created};nonce={nonce};keyid={keyid};alg={alg}",
            components.join(" ")
        );
        let _ = rfc9421::parse(&input, &format!("sig1={signature}"));
    }
}
