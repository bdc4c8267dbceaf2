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
use proptest::test_runner::{Config, TestRunner};

const KEY_ID: &str = "pk_[A-Za-z0-9]{24}";
const SECRET: &str = "sk_[A-Za-z0-9_-]{43}";
const TIMESTAMP: &str = "[1-9][0-9]{0,11}";
const NONCE: &str = "[A-Za-z0-9_-]{16,128}";
const METHOD: &str = "GET|POST|PUT|PATCH|DELETE";
/// Path and query as a client may send them, percent-encoding included.
const TARGET: &str = "/[A-Za-z0-9/._~%-]{0,40}(\\?[A-Za-z0-9=&%+._~-]{0,40})?";

/// A parsed header written out again in the canonical form; it must
/// parse to the same fields (the parser keeps nothing it cannot give back).
fn reparses_the_same(auth: &Authorization<'_>) -> Result<(), TestCaseError> {
    let canonical = format!(
        "KG1-HMAC-SHA256 KeyId={}, Timestamp={}, Nonce={}, Signature={}",
        auth.key_id,
        auth.timestamp,
        auth.nonce,
        const_hex::encode(auth.signature)
    );
    let again = Authorization::parse(canonical.as_bytes());
    prop_assert!(again.is_ok(), "{:?}: {:?}", canonical, again);
    let again = again.unwrap();
    prop_assert_eq!(again.key_id, auth.key_id);
    prop_assert_eq!(again.timestamp, auth.timestamp);
    prop_assert_eq!(again.nonce, auth.nonce);
    prop_assert_eq!(again.signature, auth.signature);
    Ok(())
}

/// Runs `property` over `cases` generated inputs and returns how many of
/// them it says reached the branch worth checking, so a test can assert
/// that its generator really gets there (random bytes almost never make a
/// valid header, and a property checked on nothing proves nothing).
fn count_reaching<S: Strategy>(
    cases: u32,
    strategy: S,
    property: impl Fn(S::Value) -> Result<bool, TestCaseError>,
) -> u32 {
    let reached = std::cell::Cell::new(0u32);
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    runner
        .run(&strategy, |value| {
            if property(value)? {
                reached.set(reached.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    reached.get()
}

/// A valid header with a few bytes replaced, inserted or removed: where a
/// parser is most likely to slip.
fn mutated_header() -> impl Strategy<Value = Vec<u8>> {
    (
        KEY_ID,
        TIMESTAMP,
        NONCE,
        "[0-9a-f]{64}",
        proptest::collection::vec((0usize..200, 0u8..3, any::<u8>()), 0..4),
    )
        .prop_map(|(key_id, timestamp, nonce, signature, edits)| {
            let mut header = format!(
                "KG1-HMAC-SHA256 KeyId={key_id}, Timestamp={timestamp}, Nonce={nonce}, Signature={signature}"
            )
            .into_bytes();
            for (at, kind, byte) in edits {
                let at = at % (header.len() + 1);
                match kind {
                    0 if at < header.len() => header[at] = byte,
                    1 => header.insert(at, byte),
                    _ if at < header.len() => {
                        header.remove(at);
                    }
                    _ => {}
                }
            }
            header
        })
}

/// Any bytes at all, or a mutated valid header: an answer, never a panic;
/// what is accepted obeys the contract's grammar and reparses the same.
/// About a quarter of the cases parse (unchanged headers, and edits that
/// keep one valid); at least 150 must, so those checks really run.
#[test]
fn the_kg1_parser_takes_any_bytes() {
    let strategy = prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..700),
        3 => mutated_header(),
    ];
    let parsed = count_reaching(1024, strategy, |header| {
        let Ok(auth) = Authorization::parse(&header) else {
            return Ok(false);
        };
        prop_assert!((1..=128).contains(&auth.key_id.len()));
        prop_assert!(auth
            .key_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        prop_assert!((1..=12).contains(&auth.timestamp.len()));
        prop_assert!(auth.unix_time() >= 0);
        prop_assert!(keygate::signature::is_valid_nonce(auth.nonce));
        reparses_the_same(&auth)?;
        Ok(true)
    });
    assert!(parsed >= 150, "only {parsed} of 1024 cases parsed");
}

/// Nearly valid headers: the scheme and the parameter names right, each
/// value either of the right shape or any printable text. What parses
/// holds exactly the values sent (less the spaces around the commas), and
/// reparses the same. About (3/4)^4 of
/// the cases have four well-shaped values; at least 170 must parse.
#[test]
fn the_kg1_parser_takes_any_values() {
    let value = |shape: &'static str, any: &'static str| {
        prop_oneof![3 => proptest::string::string_regex(shape).unwrap(),
                    1 => proptest::string::string_regex(any).unwrap()]
    };
    let strategy = (
        value(KEY_ID, "[ -~]{0,40}"),
        value(TIMESTAMP, "[ -~]{0,20}"),
        value(NONCE, "[ -~]{0,140}"),
        value("[0-9a-f]{64}", "[ -~]{0,70}"),
    );
    let parsed = count_reaching(1024, strategy, |(key_id, timestamp, nonce, signature)| {
        let header = format!(
            "KG1-HMAC-SHA256 KeyId={key_id}, Timestamp={timestamp}, Nonce={nonce}, Signature={signature}"
        );
        let Ok(auth) = Authorization::parse(header.as_bytes()) else {
            return Ok(false);
        };
        // Spaces next to a comma belong to the separator ("a comma and
        // optional spaces"), so a value ends where they begin.
        let sent = |value: &str| value.trim_matches([' ', '\t']).to_owned();
        prop_assert_eq!(auth.key_id, sent(&key_id));
        prop_assert_eq!(auth.nonce, sent(&nonce));
        prop_assert_eq!(auth.timestamp, sent(&timestamp));
        prop_assert_eq!(const_hex::encode(auth.signature), sent(&signature));
        reparses_the_same(&auth)?;
        Ok(true)
    });
    assert!(parsed >= 170, "only {parsed} of 1024 cases parsed");
}

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

    /// A signature made for one request verifies for no other: changing
    /// any one signed field (method, target, body, timestamp, nonce, key
    /// id), any one byte of the signature, or any one parameter of the
    /// header as the server reads it, is refused.
    #[test]
    fn any_change_is_refused(
        key_id in KEY_ID, secret in SECRET, timestamp in TIMESTAMP, nonce in NONCE,
        method in METHOD, target in TARGET, body in proptest::collection::vec(any::<u8>(), 0..100),
        other_key_id in KEY_ID, other_timestamp in TIMESTAMP, other_nonce in NONCE,
        other_method in METHOD, other_target in TARGET,
        other_body in proptest::collection::vec(any::<u8>(), 0..100),
        flipped_byte in 0usize..32, flip in 1u8..=255,
    ) {
        let key = SigningKey::new(&secret);
        let original = parts(&key_id, &timestamp, &nonce, &method, &target, &body);
        let signed = StringToSign::new(&original);
        let mut signature = key.sign(&signed);
        prop_assert!(key.verify(&signed, &signature));

        // Each field changed alone (when the generator gave another value).
        let changed: [(&str, bool, SignedParts<'_>); 6] = [
            ("key id", other_key_id != key_id, parts(&other_key_id, &timestamp, &nonce, &method, &target, &body)),
            ("timestamp", other_timestamp != timestamp, parts(&key_id, &other_timestamp, &nonce, &method, &target, &body)),
            ("nonce", other_nonce != nonce, parts(&key_id, &timestamp, &other_nonce, &method, &target, &body)),
            ("method", other_method != method, parts(&key_id, &timestamp, &nonce, &other_method, &target, &body)),
            ("target", other_target != target, parts(&key_id, &timestamp, &nonce, &method, &other_target, &body)),
            ("body", other_body != body, parts(&key_id, &timestamp, &nonce, &method, &target, &other_body)),
        ];
        for (field, differs, parts) in changed {
            if differs {
                prop_assert!(!key.verify(&StringToSign::new(&parts), &signature), "{} changed, still verified", field);
            }
        }
        // The body one byte longer: a hash, not a prefix, is signed.
        let mut longer_body = body.clone();
        longer_body.push(0);
        let padded = StringToSign::new(&parts(&key_id, &timestamp, &nonce, &method, &target, &longer_body));
        prop_assert!(!key.verify(&padded, &signature));

        // Each parameter of the header as sent, replaced: what the server
        // parses and rebuilds no longer verifies.
        let header = authorization_header(&secret, &original);
        let replacements = [
            (format!("KeyId={key_id}"), format!("KeyId={other_key_id}"), other_key_id != key_id),
            (format!("Timestamp={timestamp}"), format!("Timestamp={other_timestamp}"), other_timestamp != timestamp),
            (format!("Nonce={nonce}"), format!("Nonce={other_nonce}"), other_nonce != nonce),
        ];
        for (from, to, differs) in replacements {
            if !differs {
                continue;
            }
            let tampered = header.replacen(&from, &to, 1);
            let auth = Authorization::parse(tampered.as_bytes()).unwrap();
            let rebuilt = parts(auth.key_id, auth.timestamp, auth.nonce, &method, &target, &body);
            prop_assert!(!key.verify(&StringToSign::new(&rebuilt), &auth.signature), "{} -> {} still verified", from, to);
        }

        signature[flipped_byte] ^= flip;
        prop_assert!(!key.verify(&signed, &signature));
    }

    /// The RFC 9421 parser on any text in both headers: an answer, never a
    /// panic.
    #[test]
    fn the_rfc9421_parser_takes_any_text(input in "[ -~]{0,300}", signature in "[ -~]{0,200}") {
        let _ = rfc9421::parse(&input, &signature);
    }
}

/// Structured-field dictionaries, with the parameters keygate reads given
/// values of every type: an answer, never a panic; and when every one is
/// of the right type, the label parses with exactly the values sent. At
/// least a fifth of the cases must (each value is well-typed in about
/// three cases of four), so the round trip is really checked.
#[test]
fn the_rfc9421_parser_takes_any_parameters_and_keeps_good_ones() {
    let typed = |good: &'static str, bad: &'static str| {
        prop_oneof![3 => proptest::string::string_regex(good).unwrap().prop_map(|v| (v, true)),
                    1 => proptest::string::string_regex(bad).unwrap().prop_map(|v| (v, false))]
    };
    let strategy = (
        proptest::sample::subsequence(
            vec![
                "\"@method\"",
                "\"@target-uri\"",
                "\"@path\"",
                "\"@query\"",
                "\"@authority\"",
            ],
            0..=4,
        ),
        typed(
            "[1-9][0-9]{0,9}",
            "-?[0-9]{1,3}\\.[0-9]|\"[a-z]{0,5}\"|\\?[01]",
        ),
        typed(
            "\"[A-Za-z0-9_-]{16,40}\"",
            "[0-9]{1,5}|:([A-Za-z0-9+/]{4}){0,2}:",
        ),
        typed("\"pk_[A-Za-z0-9]{24}\"", "[a-z]{1,8}|[0-9]{1,4}"),
        proptest::collection::vec(any::<u8>(), 32),
    );
    let parsed = count_reaching(
        1024,
        strategy,
        |(components, created, nonce, keyid, signature)| {
            let input = format!(
                "sig1=({});created={};nonce={};keyid={};alg=\"hmac-sha256\"",
                components.join(" "),
                created.0,
                nonce.0,
                keyid.0
            );
            let signature_field = format!(
                "sig1=:{}:",
                base64::engine::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    &signature
                )
            );
            let labels = rfc9421::parse(&input, &signature_field).map_err(|e| {
                TestCaseError::fail(format!(
                    "a well-formed dictionary was refused whole ({e}): {input}"
                ))
            })?;
            prop_assert_eq!(labels.len(), 1);
            let (label, parsed) = &labels[0];
            prop_assert_eq!(label, "sig1");
            let all_typed = created.1 && nonce.1 && keyid.1;
            match parsed {
                Ok(sig) => {
                    prop_assert!(all_typed, "parsed with a mistyped parameter: {}", input);
                    prop_assert_eq!(sig.created, created.0.parse::<i64>().unwrap());
                    prop_assert_eq!(&sig.nonce, nonce.0.trim_matches('"'));
                    prop_assert_eq!(&sig.key_id, keyid.0.trim_matches('"'));
                    prop_assert_eq!(sig.expires, None);
                    prop_assert_eq!(sig.signature(), &signature[..]);
                    for component in &components {
                        prop_assert!(
                            sig.covers(component.trim_matches('"')),
                            "{} not covered",
                            component
                        );
                    }
                    Ok(true)
                }
                Err(why) => {
                    prop_assert!(
                        !all_typed,
                        "well-typed parameters refused ({}): {}",
                        why,
                        input
                    );
                    Ok(false)
                }
            }
        },
    );
    assert!(parsed >= 200, "only {parsed} of 1024 cases parsed");
}
