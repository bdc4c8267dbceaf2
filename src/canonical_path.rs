//! The one form of request path keygate forwards and judges (CONTRACT.md
//! section 5): a path every common server reads the same way.
//!
//! An access policy is only as good as the agreement between keygate and
//! the upstream on what a path means. They disagree on many spellings:
//! Tomcat and Spring cut `;` parameters and then resolve `..` (so
//! `/a/..;/b` is `/b`), nginx merges `//` before resolving `..`, IIS and
//! WHATWG URL parsers read `\` as `/`, some frameworks decode twice
//! (`%252e` is `.` to them) and some decode `%2F` into a separator. No
//! normaliser of ours can match every upstream at once, so a path that any
//! of them could read differently is refused outright, before policy,
//! signature or upstream see it, as Envoy does with `normalize_path`,
//! `merge_slashes` and `path_with_escaped_slashes_action: REJECT_REQUEST`.
//!
//! A path is refused ([`Ambiguity`]) when it has, in any letter case and
//! any level of percent-encoding:
//! - a `.` or `..` segment, also once `;` parameters are cut (`..;x`);
//! - an empty segment (`//`, or a segment of `;` parameters only); a final
//!   empty segment (a trailing `/`) is a path of its own and is allowed;
//! - `\`, an encoded `/` (`%2F`) or `\` (`%5C`);
//! - a double encoding: an escape that, decoded once, leaves `%` and two
//!   hex digits (`%252e`, `%25%32%65`); or a `%` not followed by two hex
//!   digits;
//! - a control byte (raw or encoded, `%00` included);
//! - a raw byte outside ASCII, or escapes that do not decode to UTF-8
//!   (overlong forms such as `%C0%AE`, which old decoders read as `.`);
//! - a Unicode character that compatibility mappings (NFKC, Windows
//!   "best fit") turn into `.`, `/` or `\` (fullwidth `．` `／` `＼`, ...).
//!
//! What passes has one reading everywhere: decoding it once gives its
//! final bytes, its segments are exactly those between its raw `/`s, and
//! none of them moves the path up or sideways. The query is not judged:
//! upstreams split it off before reading the path.
//!
//! Pure: no I/O. The gateway, the policy check, the fuzz target
//! (`fuzz/fuzz_targets/policy_path.rs`) and the differential test against
//! real upstreams (`tests/api/gateway_paths.rs`) share it.

use std::fmt;

/// Why a path was refused: what was found, for the `ambiguous_path`
/// message a partner reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ambiguity {
    DotSegment,
    DotSegmentBeforeParameters,
    EmptySegment,
    Backslash,
    EncodedSlash,
    EncodedBackslash,
    DoubleEncoding,
    BadEscape,
    ControlByte,
    NonAsciiByte,
    NotUtf8,
    LookalikeCharacter(char),
}

impl fmt::Display for Ambiguity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ambiguity::DotSegment => f.write_str("a '.' or '..' segment (also percent-encoded)"),
            Ambiguity::DotSegmentBeforeParameters => {
                f.write_str("a '.' or '..' segment once ';' parameters are cut (as in '..;')")
            }
            Ambiguity::EmptySegment => f.write_str("an empty segment ('//')"),
            Ambiguity::Backslash => f.write_str("a '\\', which some servers read as '/'"),
            Ambiguity::EncodedSlash => f.write_str("an encoded '/' (%2F)"),
            Ambiguity::EncodedBackslash => f.write_str("an encoded '\\' (%5C)"),
            Ambiguity::DoubleEncoding => {
                f.write_str("a double percent-encoding ('%25' followed by two hex digits)")
            }
            Ambiguity::BadEscape => f.write_str("a '%' not followed by two hex digits"),
            Ambiguity::ControlByte => f.write_str("a control byte (raw or percent-encoded)"),
            Ambiguity::NonAsciiByte => f.write_str("a raw byte outside ASCII"),
            Ambiguity::NotUtf8 => f.write_str("percent-escapes that do not decode to UTF-8"),
            Ambiguity::LookalikeCharacter(c) => write!(
                f,
                "the character U+{:04X}, which some servers map to '.', '/' or '\\'",
                u32::from(*c)
            ),
        }
    }
}

/// Characters that Unicode compatibility normalisation (NFKC) or Windows'
/// "best fit" code-page mapping turn into `.`, `/` or `\`.
const LOOKALIKES: [char; 11] = [
    '\u{2024}', // ONE DOT LEADER
    '\u{FE52}', // SMALL FULL STOP
    '\u{FF0E}', // FULLWIDTH FULL STOP
    '\u{2044}', // FRACTION SLASH
    '\u{2215}', // DIVISION SLASH
    '\u{FF0F}', // FULLWIDTH SOLIDUS
    '\u{2216}', // SET MINUS
    '\u{29F5}', // REVERSE SOLIDUS OPERATOR
    '\u{FE68}', // SMALL REVERSE SOLIDUS
    '\u{FF3C}', // FULLWIDTH REVERSE SOLIDUS
    '\u{3002}', // IDEOGRAPHIC FULL STOP (read as '.' by IDNA-style mappings)
];

/// The path of an origin-form request target (`/…`, before any `?`):
/// `Ok` when every common server reads it one way.
pub fn check(target: &str) -> Result<(), Ambiguity> {
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let mut decoded = Vec::with_capacity(path.len());
    let mut segments = path.strip_prefix('/').unwrap_or(path).split('/').peekable();
    while let Some(raw) = segments.next() {
        let start = decoded.len();
        decode_segment(raw.as_bytes(), &mut decoded)?;
        let segment = &decoded[start..];
        if is_dot_segment(segment) {
            return Err(Ambiguity::DotSegment);
        }
        let before_parameters = segment.split(|&b| b == b';').next().unwrap_or_default();
        if is_dot_segment(before_parameters) {
            return Err(Ambiguity::DotSegmentBeforeParameters);
        }
        let is_final_slash = segments.peek().is_none() && raw.is_empty();
        if before_parameters.is_empty() && !is_final_slash {
            return Err(Ambiguity::EmptySegment);
        }
        decoded.push(b'/');
    }
    let text = std::str::from_utf8(&decoded).map_err(|_| Ambiguity::NotUtf8)?;
    if let Some(c) = text.chars().find(|c| LOOKALIKES.contains(c)) {
        return Err(Ambiguity::LookalikeCharacter(c));
    }
    Ok(())
}

fn is_dot_segment(segment: &[u8]) -> bool {
    matches!(segment, b"." | b"..")
}

/// Appends one segment's bytes, percent-decoded once, refusing whatever
/// would read differently if decoded again or split differently.
fn decode_segment(raw: &[u8], out: &mut Vec<u8>) -> Result<(), Ambiguity> {
    let start = out.len();
    let mut i = 0;
    while i < raw.len() {
        let byte = raw[i];
        let decoded = if byte == b'%' {
            let escaped = raw
                .get(i + 1..i + 3)
                .and_then(|hex| Some(hex_value(hex[0])? * 16 + hex_value(hex[1])?))
                .ok_or(Ambiguity::BadEscape)?;
            match escaped {
                b'/' => return Err(Ambiguity::EncodedSlash),
                b'\\' => return Err(Ambiguity::EncodedBackslash),
                _ => {}
            }
            i += 3;
            escaped
        } else {
            match byte {
                b'\\' => return Err(Ambiguity::Backslash),
                0x80.. => return Err(Ambiguity::NonAsciiByte),
                _ => {}
            }
            i += 1;
            byte
        };
        if decoded < 0x20 || decoded == 0x7f {
            return Err(Ambiguity::ControlByte);
        }
        out.push(decoded);
    }
    // Decoded once, it must not decode again: `%252e` and `%25%32%65` are
    // both `%2e` here, which a second decoding reads as '.'.
    let segment = &out[start..];
    let decodes_again = segment
        .windows(3)
        .any(|w| w[0] == b'%' && hex_value(w[1]).is_some() && hex_value(w[2]).is_some());
    if decodes_again {
        return Err(Ambiguity::DoubleEncoding);
    }
    Ok(())
}

fn hex_value(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The review's findings (issue 28) and the other forms the contract
    /// names: each refused, for the reason named.
    #[test]
    fn every_form_common_servers_read_differently_is_refused() {
        use Ambiguity::*;
        for (path, why) in [
            ("/v1/orders/../admin", DotSegment),
            ("/v1/orders/%2e%2e/admin", DotSegment),
            ("/v1/orders/%2E%2e/admin", DotSegment),
            ("/v1/orders/./admin", DotSegment),
            ("/v1/orders/%2e", DotSegment),
            ("/v1/orders/..", DotSegment),
            ("/v1/orders/..;/admin", DotSegmentBeforeParameters),
            ("/v1/orders/.%2e;/admin", DotSegmentBeforeParameters),
            ("/v1/orders/.;x/admin", DotSegmentBeforeParameters),
            ("/v1/orders/..%3B/admin", DotSegmentBeforeParameters),
            ("/v1/orders//../admin", EmptySegment),
            ("/v1/orders//admin", EmptySegment),
            ("//v1/orders", EmptySegment),
            ("/v1/orders/;x/admin", EmptySegment),
            ("/v1/orders/..\\admin", Backslash),
            ("/v1/orders/..%5Cadmin", EncodedBackslash),
            ("/v1/orders/..%5cadmin", EncodedBackslash),
            ("/v1/orders/..%2Fadmin", EncodedSlash),
            ("/v1/orders/..%2fadmin", EncodedSlash),
            ("/v1/orders/%252e%252e/admin", DoubleEncoding),
            ("/v1/orders/%252F", DoubleEncoding),
            ("/v1/orders/%25%32%65", DoubleEncoding),
            ("/v1/orders/a%25%41%42", DoubleEncoding),
            ("/v1/orders/%", BadEscape),
            ("/v1/orders/%2", BadEscape),
            ("/v1/orders/%zz", BadEscape),
            ("/v1/orders/%00", ControlByte),
            ("/v1/orders/%0a", ControlByte),
            ("/v1/orders/%7F", ControlByte),
            ("/v1/orders/a\tb", ControlByte),
            ("/v1/orders/é", NonAsciiByte),
            ("/v1/orders/%C0%AE%C0%AE/admin", NotUtf8),
            ("/v1/orders/%FF", NotUtf8),
            (
                "/v1/orders/%EF%BC%8E%EF%BC%8E/admin",
                LookalikeCharacter('\u{FF0E}'),
            ),
            ("/v1/orders/a%E2%88%95b", LookalikeCharacter('\u{2215}')),
        ] {
            assert_eq!(check(path), Err(why), "{path}");
        }
    }

    #[test]
    fn ordinary_paths_pass() {
        for path in [
            "/",
            "/v1/orders",
            "/v1/orders/",
            "/v1/orders/42?expand=items&q=a%20b",
            "/v1/orders/42?path=../../etc&x=%2F",
            "/v1/orders/a.b/...",
            "/v1/orders/.well-known",
            "/v1/orders/a;v=1/items",
            "/v1/%6Frders/42",
            "/v1/orders/caf%C3%A9",
            "/v1/orders/100%25",
            "/v1/orders/100%25off",
            "/v1/orders/%25zz",
            "/v1/orders/a%20b",
            "/v1/orders/%3F%23",
        ] {
            assert_eq!(check(path), Ok(()), "{path}");
        }
    }

    /// The query is the upstream's to read; its `..` or `%2F` move no path.
    #[test]
    fn only_the_path_is_judged() {
        assert_eq!(check("/a?b=//..\\%2F%252e"), Ok(()));
        assert_eq!(check("/a/..?b"), Err(Ambiguity::DotSegment));
    }
}
