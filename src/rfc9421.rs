//! RFC 9421 HTTP Message Signatures with `hmac-sha256`: keygate's second
//! scheme (CONTRACT.md section 3), for partners who already have an
//! off-the-shelf RFC 9421 client. Like `signature`, this module does no I/O:
//! it parses `Signature-Input` / `Signature` (RFC 9651 structured fields,
//! through `sfv`), builds the signature base of RFC 9421 section 2.5 from a
//! [`RequestParts`], enforces keygate's coverage policy and checks the
//! `Content-Digest` of RFC 9530. The HTTP edge supplies the request and the
//! key, and runs the same key, clock and nonce checks as for KG1.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sfv::{BareItem, Dictionary, FieldType, InnerList, Item, ListEntry, Parser};
use sha2::{Digest, Sha256, Sha512};

/// The only algorithm keygate verifies: keys are shared secrets.
pub const ALGORITHM: &str = "hmac-sha256";

/// Longest Signature-Input or Signature line parsed; a few signatures fit
/// easily, a 20 KB header is refused before parsing.
pub const MAX_HEADER_LEN: usize = 8192;

/// Longest nonce accepted; RFC 9421 sets no format, keygate a sane bound.
const MAX_NONCE_LEN: usize = 256;

/// What the signature base is built from, as the request was received (or,
/// behind a proxy, as the public origin says the client sent it).
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// Host (and port) as the client addressed it, e.g. `api.example.com`.
    pub authority: &'a str,
    /// Path and query exactly as on the request line.
    pub request_target: &'a str,
    /// All field lines of a header, by lowercase name, in order.
    pub field_lines: &'a dyn Fn(&str) -> Vec<String>,
}

/// One covered component: its name and parameters, e.g. `"@query-param";name="id"`.
#[derive(Debug, Clone)]
struct Component {
    item: Item,
    name: String,
}

/// One labelled signature from `Signature-Input` and `Signature`.
#[derive(Debug, Clone)]
pub struct MessageSignature {
    pub label: String,
    pub key_id: String,
    pub nonce: String,
    pub created: i64,
    pub expires: Option<i64>,
    components: Vec<Component>,
    /// The inner list as it goes on the `@signature-params` line.
    signature_params: String,
    signature: Vec<u8>,
}

impl MessageSignature {
    pub fn covers(&self, name: &str) -> bool {
        self.components.iter().any(|c| c.name == name)
    }

    pub fn signature(&self) -> &[u8] {
        &self.signature
    }
}

/// Each label of a request's signatures, with its parsed signature or why
/// keygate cannot use it.
pub type LabelledSignatures = Vec<(String, Result<MessageSignature, String>)>;

/// Parses both headers. The outer error means the headers themselves are
/// unusable; each label then parses (or fails) on its own, so a request can
/// carry signatures for other verifiers beside keygate's.
pub fn parse(signature_input: &str, signature: &str) -> Result<LabelledSignatures, String> {
    let inputs: Dictionary = Parser::new(signature_input)
        .parse()
        .map_err(|e| format!("Signature-Input is not a valid structured-field dictionary: {e}"))?;
    let signatures: Dictionary = Parser::new(signature)
        .parse()
        .map_err(|e| format!("Signature is not a valid structured-field dictionary: {e}"))?;
    if inputs.is_empty() {
        return Err("Signature-Input has no signatures".into());
    }
    Ok(inputs
        .iter()
        .map(|(label, entry)| {
            let label = label.as_str().to_owned();
            let parsed = parse_one(&label, entry, signatures.get(label.as_str()));
            (label, parsed)
        })
        .collect())
}

fn parse_one(
    label: &str,
    input: &ListEntry,
    signature: Option<&ListEntry>,
) -> Result<MessageSignature, String> {
    let ListEntry::InnerList(inner) = input else {
        return Err(format!(
            "Signature-Input {label} must be an inner list of components"
        ));
    };
    let signature = match signature {
        Some(ListEntry::Item(Item {
            bare_item: BareItem::ByteSequence(bytes),
            ..
        })) => bytes.clone(),
        Some(_) => {
            return Err(format!(
                "Signature {label} must be a byte sequence (:base64:)"
            ))
        }
        None => {
            return Err(format!(
                "Signature-Input {label} has no matching Signature {label}"
            ))
        }
    };

    let mut components: Vec<Component> = Vec::with_capacity(inner.items.len());
    for item in &inner.items {
        let BareItem::String(name) = &item.bare_item else {
            return Err(format!(
                "Signature-Input {label}: components must be quoted strings"
            ));
        };
        let component = Component {
            item: item.clone(),
            name: name.as_str().to_owned(),
        };
        let id = component.item.serialize();
        if components.iter().any(|c| c.item.serialize() == id) {
            return Err(format!(
                "Signature-Input {label}: component {id} is listed twice"
            ));
        }
        components.push(component);
    }

    let param = |name: &str| inner.params.get(name);
    let string_param = |name: &str| -> Result<Option<String>, String> {
        match param(name) {
            None => Ok(None),
            Some(BareItem::String(s)) => Ok(Some(s.as_str().to_owned())),
            Some(_) => Err(format!(
                "Signature-Input {label}: {name} must be a quoted string"
            )),
        }
    };
    let integer_param = |name: &str| -> Result<Option<i64>, String> {
        match param(name) {
            None => Ok(None),
            Some(BareItem::Integer(i)) => Ok(Some(i64::from(*i))),
            Some(_) => Err(format!(
                "Signature-Input {label}: {name} must be an integer (Unix seconds)"
            )),
        }
    };

    if let Some(alg) = string_param("alg")? {
        if alg != ALGORITHM {
            return Err(format!(
                "Signature-Input {label}: alg {alg:?} is not supported; keygate verifies {ALGORITHM}"
            ));
        }
    }
    let key_id = string_param("keyid")?
        .ok_or_else(|| format!("Signature-Input {label}: the keyid parameter is required"))?;
    let nonce = string_param("nonce")?.ok_or_else(|| {
        format!("Signature-Input {label}: the nonce parameter is required (a fresh random value for every request)")
    })?;
    if nonce.is_empty() || nonce.len() > MAX_NONCE_LEN {
        return Err(format!(
            "Signature-Input {label}: nonce must be 1 to {MAX_NONCE_LEN} characters"
        ));
    }
    let created = integer_param("created")?
        .ok_or_else(|| format!("Signature-Input {label}: the created parameter is required"))?;
    let expires = integer_param("expires")?;

    let signature_params = vec![ListEntry::InnerList(InnerList {
        items: inner.items.clone(),
        params: inner.params.clone(),
    })]
    .serialize()
    .ok_or_else(|| format!("Signature-Input {label} cannot be serialised"))?;

    Ok(MessageSignature {
        label: label.to_owned(),
        key_id,
        nonce,
        created,
        expires,
        components,
        signature_params,
        signature,
    })
}

/// keygate's policy (CONTRACT.md section 3): the signature must bind the
/// method, the path and query, and a non-empty body through Content-Digest.
pub fn check_coverage(
    sig: &MessageSignature,
    request_target: &str,
    body_is_empty: bool,
) -> Result<(), String> {
    let label = &sig.label;
    if !sig.covers("@method") {
        return Err(format!("signature {label} must cover \"@method\""));
    }
    let has_query = request_target.contains('?');
    let target_bound = sig.covers("@target-uri")
        || sig.covers("@request-target")
        || (sig.covers("@path") && (!has_query || sig.covers("@query")));
    if !target_bound {
        return Err(format!(
            "signature {label} must cover the path and query: \"@target-uri\", \"@request-target\", or \"@path\" with \"@query\""
        ));
    }
    if !body_is_empty && !sig.covers("content-digest") {
        return Err(format!(
            "signature {label} must cover \"content-digest\" when the request has a body (RFC 9530 Content-Digest header)"
        ));
    }
    Ok(())
}

/// The signature base of RFC 9421 section 2.5.
pub fn signature_base(
    sig: &MessageSignature,
    request: &RequestParts<'_>,
) -> Result<String, String> {
    let mut base = String::with_capacity(256);
    for component in &sig.components {
        let value = component_value(component, request)?;
        base.push_str(&component.item.serialize());
        base.push_str(": ");
        base.push_str(&value);
        base.push('\n');
    }
    base.push_str("\"@signature-params\": ");
    base.push_str(&sig.signature_params);
    Ok(base)
}

/// RFC 9421 section 2.2.8: query parameter values are re-encoded with
/// everything but ALPHA / DIGIT / `*-._` percent-encoded.
const QUERY_PARAM_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'*')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_');

fn component_value(component: &Component, request: &RequestParts<'_>) -> Result<String, String> {
    let name = component.name.as_str();
    let params = &component.item.params;
    let (path, query) = match request.request_target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (request.request_target, None),
    };
    let no_params = |value: String| -> Result<String, String> {
        if params.is_empty() {
            Ok(value)
        } else {
            Err(format!("component \"{name}\" takes no parameters here"))
        }
    };
    match name {
        "@method" => no_params(request.method.to_owned()),
        "@scheme" => no_params(request.scheme.to_ascii_lowercase()),
        "@authority" => no_params(normalized_authority(request.scheme, request.authority)),
        "@target-uri" => no_params(format!(
            "{}://{}{}",
            request.scheme.to_ascii_lowercase(),
            request.authority,
            request.request_target
        )),
        "@request-target" => no_params(request.request_target.to_owned()),
        "@path" => no_params(if path.is_empty() {
            "/".into()
        } else {
            path.to_owned()
        }),
        "@query" => no_params(format!("?{}", query.unwrap_or(""))),
        "@query-param" => {
            let wanted = match params.get("name") {
                Some(BareItem::String(s)) if params.len() == 1 => s.as_str().to_owned(),
                _ => {
                    return Err("\"@query-param\" needs exactly one parameter, name=\"...\"".into())
                }
            };
            let values: Vec<String> = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .filter(|(n, _)| *n == wanted)
                .map(|(_, v)| percent_encode(v.as_bytes(), QUERY_PARAM_ENCODE).to_string())
                .collect();
            match values.as_slice() {
                [one] => Ok(one.clone()),
                [] => Err(format!(
                    "covered query parameter {wanted:?} is not in the request"
                )),
                _ => Err(format!(
                    "query parameter {wanted:?} appears more than once; cover \"@query\" instead"
                )),
            }
        }
        "@status" => Err("\"@status\" belongs to responses, not requests".into()),
        derived if derived.starts_with('@') => {
            Err(format!("unknown derived component \"{derived}\""))
        }
        field => field_value(field, params, request),
    }
}

fn normalized_authority(scheme: &str, authority: &str) -> String {
    let authority = authority.to_ascii_lowercase();
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => ":443",
        _ => ":80",
    };
    authority
        .strip_suffix(default_port)
        .map(str::to_owned)
        .unwrap_or(authority)
}

/// RFC 9421 section 2.1: field lines trimmed and joined with ", ";
/// `sf` re-serialises a dictionary field, `key` selects a member.
fn field_value(
    name: &str,
    params: &sfv::Parameters,
    request: &RequestParts<'_>,
) -> Result<String, String> {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("field component \"{name}\" must be lowercase"));
    }
    let lines = (request.field_lines)(name);
    if lines.is_empty() {
        return Err(format!("covered header \"{name}\" is not in the request"));
    }
    let combined = lines
        .iter()
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join(", ");
    let dictionary = || -> Result<Dictionary, String> {
        Parser::new(&combined)
            .parse()
            .map_err(|e| format!("header \"{name}\" is not a structured-field dictionary: {e}"))
    };
    let mut key = None;
    let mut sf = false;
    for (param, value) in params {
        match (param.as_str(), value) {
            ("key", BareItem::String(k)) => key = Some(k.as_str().to_owned()),
            ("sf", BareItem::Boolean(true)) => sf = true,
            (other, _) => {
                return Err(format!(
                    "component parameter \"{other}\" on \"{name}\" is not supported"
                ))
            }
        }
    }
    match (key, sf) {
        (Some(key), _) => match dictionary()?.get(key.as_str()) {
            Some(ListEntry::Item(item)) => Ok(item.serialize()),
            Some(ListEntry::InnerList(inner)) => vec![ListEntry::InnerList(inner.clone())]
                .serialize()
                .ok_or_else(|| format!("member {key:?} of \"{name}\" cannot be serialised")),
            None => Err(format!("header \"{name}\" has no member {key:?}")),
        },
        (None, true) => dictionary()?
            .serialize()
            .ok_or_else(|| format!("header \"{name}\" is an empty dictionary")),
        (None, false) => Ok(combined),
    }
}

/// RFC 9530: the Content-Digest header must match the body for every
/// algorithm keygate knows (sha-256, sha-512), and name at least one.
pub fn check_content_digest(header: &str, body: &[u8]) -> Result<(), String> {
    let digests: Dictionary = Parser::new(header)
        .parse()
        .map_err(|e| format!("Content-Digest is not a structured-field dictionary: {e}"))?;
    let mut checked = 0;
    for (algorithm, entry) in &digests {
        let expected: Vec<u8> = match algorithm.as_str() {
            "sha-256" => Sha256::digest(body).to_vec(),
            "sha-512" => Sha512::digest(body).to_vec(),
            _ => continue,
        };
        let Some(ListEntry::Item(Item {
            bare_item: BareItem::ByteSequence(sent),
            ..
        })) = Some(entry)
        else {
            return Err(format!(
                "Content-Digest {algorithm} must be a byte sequence (:base64:)"
            ));
        };
        if *sent != expected {
            return Err(format!(
                "Content-Digest {algorithm} does not match the body received (expected :{}:); sign and send the same bytes",
                STANDARD.encode(&expected)
            ));
        }
        checked += 1;
    }
    if checked == 0 {
        return Err("Content-Digest has no sha-256 or sha-512 digest".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::SigningKey;

    fn request<'a>(fields: &'a dyn Fn(&str) -> Vec<String>) -> RequestParts<'a> {
        RequestParts {
            method: "POST",
            scheme: "https",
            authority: "example.com",
            request_target: "/foo?param=Value&Pet=dog",
            field_lines: fields,
        }
    }

    fn test_request_fields(name: &str) -> Vec<String> {
        match name {
            "date" => vec!["Tue, 20 Apr 2021 02:07:55 GMT".into()],
            "content-type" => vec!["application/json".into()],
            "content-digest" => vec!["sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:".into()],
            "x-multi" => vec!["  a ".into(), "b".into()],
            _ => vec![],
        }
    }

    /// RFC 9421 Appendix B.2.5: the signature base and HMAC-SHA256 of the
    /// test request with the shared secret of Appendix B.1.5.
    #[test]
    fn rfc_9421_appendix_b_2_5() {
        let input = r#"sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret""#;
        let signature = "sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:";
        let parsed = parse(input, signature).unwrap();
        assert_eq!(parsed.len(), 1);
        // The RFC's example has no nonce, which keygate requires; add one
        // to check the base with the same components.
        let err = parsed[0].1.as_ref().unwrap_err();
        assert!(err.contains("nonce"), "{err}");

        let sig = parse_one_unchecked(input, signature);
        let fields = test_request_fields;
        let base = signature_base(&sig, &request(&fields)).unwrap();
        assert_eq!(
            base,
            "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n\"@authority\": example.com\n\"content-type\": application/json\n\"@signature-params\": (\"date\" \"@authority\" \"content-type\");created=1618884473;keyid=\"test-shared-secret\""
        );
        let key = STANDARD
            .decode("uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ==")
            .unwrap();
        assert!(SigningKey::from_bytes(&key).verify_bytes(base.as_bytes(), sig.signature()));
        assert!(!SigningKey::from_bytes(b"other").verify_bytes(base.as_bytes(), sig.signature()));
    }

    /// Builds a MessageSignature without keygate's required-parameter rules,
    /// for the RFC's own vector.
    fn parse_one_unchecked(input: &str, signature: &str) -> MessageSignature {
        let with_nonce = input.replace("keyid=", "nonce=\"x\";keyid=");
        let mut sig = parse(&with_nonce, signature).unwrap().remove(0).1.unwrap();
        sig.signature_params = sig.signature_params.replace(";nonce=\"x\"", "");
        sig
    }

    #[test]
    fn derived_components_and_parameter_order() {
        let input = r#"s=("@method" "@target-uri" "@authority" "@scheme" "@request-target" "@path" "@query" "@query-param";name="Pet" "x-multi");keyid="k";nonce="n1";created=5"#;
        let sig = parse(input, "s=:AAAA:").unwrap().remove(0).1.unwrap();
        let fields = test_request_fields;
        let base = signature_base(&sig, &request(&fields)).unwrap();
        let expected = [
            "\"@method\": POST",
            "\"@target-uri\": https://example.com/foo?param=Value&Pet=dog",
            "\"@authority\": example.com",
            "\"@scheme\": https",
            "\"@request-target\": /foo?param=Value&Pet=dog",
            "\"@path\": /foo",
            "\"@query\": ?param=Value&Pet=dog",
            "\"@query-param\";name=\"Pet\": dog",
            "\"x-multi\": a, b",
            "\"@signature-params\": (\"@method\" \"@target-uri\" \"@authority\" \"@scheme\" \"@request-target\" \"@path\" \"@query\" \"@query-param\";name=\"Pet\" \"x-multi\");keyid=\"k\";nonce=\"n1\";created=5",
        ]
        .join("\n");
        assert_eq!(base, expected);
        // Parameters keep the client's order on the @signature-params line.
        assert_eq!(sig.created, 5);
        assert_eq!(sig.nonce, "n1");
    }

    #[test]
    fn query_param_values_are_re_encoded() {
        let fields = |_: &str| Vec::new();
        let req = RequestParts {
            request_target: "/p?q=a+b%2Fc&t=%7E",
            ..request(&fields)
        };
        let sig = parse(
            r#"s=("@query-param";name="q" "@query-param";name="t");keyid="k";nonce="n";created=1"#,
            "s=:AAAA:",
        )
        .unwrap()
        .remove(0)
        .1
        .unwrap();
        let base = signature_base(&sig, &req).unwrap();
        assert!(
            base.starts_with(
                "\"@query-param\";name=\"q\": a%20b%2Fc\n\"@query-param\";name=\"t\": %7E\n"
            ),
            "{base}"
        );
    }

    #[test]
    fn bad_syntax_missing_parts_and_duplicates() {
        assert!(parse("s=(\"@method\"", "s=:AAAA:").is_err());
        assert!(parse("s=(\"@method\")", "s=:not base64:").is_err());
        assert!(parse("", "s=:AAAA:").is_err());
        assert!(parse(r#"s=(@method);keyid="k""#, "s=:AAAA:").is_err());
        let cases = [
            (r#"s=("@method");nonce="n";created=1"#, "s=:AAAA:", "keyid"),
            (r#"s=("@method");keyid="k";created=1"#, "s=:AAAA:", "nonce"),
            (
                r#"s=("@method");keyid="k";nonce="n""#,
                "s=:AAAA:",
                "created",
            ),
            (
                r#"s=("@method");keyid="k";nonce="n";created=1;alg="ed25519""#,
                "s=:AAAA:",
                "alg",
            ),
            (
                r#"s=("@method");keyid="k";nonce="n";created="1""#,
                "s=:AAAA:",
                "integer",
            ),
            (
                r#"s=("@method" "@method");keyid="k";nonce="n";created=1"#,
                "s=:AAAA:",
                "twice",
            ),
            (
                r#"s=("@method");keyid="k";nonce="n";created=1"#,
                "other=:AAAA:",
                "no matching Signature",
            ),
            (
                r#"s=(method);keyid="k";nonce="n";created=1"#,
                "s=:AAAA:",
                "quoted",
            ),
            (
                r#"s=("@method");keyid="k";nonce="n";created=1"#,
                "s=notbase64",
                "byte sequence",
            ),
            (
                r#"s="@method";keyid="k";nonce="n";created=1"#,
                "s=:AAAA:",
                "inner list",
            ),
        ];
        for (input, signature, expected) in cases {
            let parsed = parse(input, signature).unwrap();
            let err = parsed[0].1.as_ref().unwrap_err();
            assert!(err.contains(expected), "{input}: {err}");
        }
        // A repeated label: the structured-field rule is that the last one wins.
        let parsed = parse(
            r#"s=("@path");keyid="a";nonce="n";created=1, s=("@method");keyid="b";nonce="n";created=1"#,
            "s=:AAAA:",
        )
        .unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].1.as_ref().unwrap().key_id, "b");
    }

    #[test]
    fn coverage_policy() {
        let sig = |components: &str| {
            parse(
                &format!("s=({components});keyid=\"k\";nonce=\"n\";created=1"),
                "s=:AAAA:",
            )
            .unwrap()
            .remove(0)
            .1
            .unwrap()
        };
        assert!(check_coverage(&sig(r#""@method" "@target-uri""#), "/a?b", true).is_ok());
        assert!(check_coverage(&sig(r#""@method" "@request-target""#), "/a?b", true).is_ok());
        assert!(check_coverage(&sig(r#""@method" "@path""#), "/a", true).is_ok());
        assert!(check_coverage(&sig(r#""@method" "@path""#), "/a?b", true)
            .unwrap_err()
            .contains("path and query"));
        assert!(check_coverage(&sig(r#""@method" "@path" "@query""#), "/a?b", true).is_ok());
        assert!(check_coverage(&sig(r#""@target-uri""#), "/a", true)
            .unwrap_err()
            .contains("@method"));
        assert!(
            check_coverage(&sig(r#""@method" "@target-uri""#), "/a", false)
                .unwrap_err()
                .contains("content-digest")
        );
        assert!(check_coverage(
            &sig(r#""@method" "@target-uri" "content-digest""#),
            "/a",
            false
        )
        .is_ok());
    }

    #[test]
    fn content_digest() {
        let body = br#"{"hello": "world"}"#;
        let sha512 = "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:";
        assert!(check_content_digest(sha512, body).is_ok());
        let sha256 = format!("sha-256=:{}:", STANDARD.encode(Sha256::digest(body)));
        assert!(check_content_digest(&sha256, body).is_ok());
        assert!(check_content_digest(&format!("{sha256}, {sha512}"), body).is_ok());
        assert!(check_content_digest(&sha256, b"tampered")
            .unwrap_err()
            .contains("does not match"));
        assert!(check_content_digest("md5=:AAAA:", body)
            .unwrap_err()
            .contains("no sha-256"));
        assert!(check_content_digest("sha-256=abc", body).is_err());
        assert!(check_content_digest("sha-256=:", body).is_err());
    }
}
