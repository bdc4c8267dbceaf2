//! Which paths a rule covers, and the one normal form both a rule's pattern
//! and a request's path are compared in (CONTRACT.md section 8).
//!
//! The signature covers the path exactly as sent; matching does not. A
//! rule `/v1/orders/*` must not let `/v1/orders/../admin`,
//! `/v1/orders/%2e%2e/admin` or `/v1/orders/..%2Fadmin` through, because
//! the upstream behind keygate may well resolve any of them to
//! `/v1/admin`. So before matching, a path has:
//!
//! 1. percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`)
//!    decoded, and `%2F` decoded to `/` (an upstream that decodes it would
//!    otherwise see segments the matcher did not), every other escape
//!    upper-cased (`%3a` and `%3A` are one character), a stray `%` written
//!    `%25`;
//! 2. dot segments removed (RFC 3986 section 5.2.4), never above the root.

use std::borrow::Cow;
use std::fmt;

/// Longest pattern accepted; a real route is far shorter.
pub const MAX_PATTERN_LEN: usize = 1024;

/// An exact path (`/v1/whoami`), or every path under a prefix
/// (`/v1/orders/*`: `/v1/orders` itself and anything below it, never
/// `/v1/orders-archive`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    /// As written, after normalisation: what the admin API returns.
    text: String,
    /// For a prefix pattern, the normalised path before `/*`
    /// (`/v1/orders`; empty for `/*`, which covers every path).
    prefix: Option<String>,
}

impl PathPattern {
    pub fn parse(text: &str) -> Result<PathPattern, String> {
        if text.len() > MAX_PATTERN_LEN {
            return Err(format!("a path pattern is at most {MAX_PATTERN_LEN} bytes"));
        }
        if !text.starts_with('/') {
            return Err(format!("path pattern {text:?} must start with /"));
        }
        if let Some(bad) = text
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#'))
        {
            return Err(format!(
                "path pattern {text:?} contains {bad:?}; a pattern is a path without query or fragment"
            ));
        }
        let (base, is_prefix) = match text.strip_suffix("/*") {
            Some(base) => (base, true),
            None => (text, false),
        };
        if base.contains('*') {
            return Err(format!(
                "path pattern {text:?}: * is allowed only as a final /* (a prefix)"
            ));
        }
        let has_dot_segment = base
            .split('/')
            .any(|segment| matches!(&*normalize_path(segment), "." | ".."));
        if has_dot_segment {
            return Err(format!(
                "path pattern {text:?} contains a . or .. segment; write the path it means"
            ));
        }
        let normalized = normalize_path(if base.is_empty() { "/" } else { base }).into_owned();
        // Normalising may lengthen it (a stray '%' is written `%25`), and
        // what is stored must parse again.
        if normalized.len() + 2 > MAX_PATTERN_LEN {
            return Err(format!("a path pattern is at most {MAX_PATTERN_LEN} bytes"));
        }
        Ok(if is_prefix {
            let prefix = normalized.trim_end_matches('/').to_owned();
            PathPattern {
                text: format!("{prefix}/*"),
                prefix: Some(prefix),
            }
        } else {
            PathPattern {
                text: normalized,
                prefix: None,
            }
        })
    }

    /// `path` must already be normalised ([`normalize_path`]).
    pub fn matches(&self, path: &str) -> bool {
        match &self.prefix {
            None => path == self.text,
            Some(prefix) => {
                path.starts_with(prefix.as_str())
                    && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
            }
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|d| d as u8)
}

/// The form paths are matched in (see the module comment). Works on any
/// input, and normalising twice changes nothing (`fuzz/fuzz_targets/policy_path.rs`).
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    // Most paths are normal already: no escape, no dot segment. They cost
    // a scan, not an allocation.
    if path.starts_with('/') && !path.contains('%') && !path.contains("/.") {
        return Cow::Borrowed(path);
    }
    Cow::Owned(rewrite(path))
}

fn rewrite(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex_value(bytes[i + 1]), hex_value(bytes[i + 2])) {
                let byte = high * 16 + low;
                if is_unreserved(byte) || byte == b'/' {
                    decoded.push(byte as char);
                } else {
                    decoded.push('%');
                    decoded.push(bytes[i + 1].to_ascii_uppercase() as char);
                    decoded.push(bytes[i + 2].to_ascii_uppercase() as char);
                }
                i += 3;
                continue;
            }
        }
        if bytes[i] == b'%' {
            // A stray '%' is the character itself, `%25` in normal form.
            // Kept bare, `%%32%65` would become `%2e`, which a second pass
            // (or an upstream that decodes twice) reads as '.'.
            decoded.push_str("%25");
            i += 1;
            continue;
        }
        // Whole characters: the input is a &str, so copy up to the next
        // '%' or the end in one go.
        let next = bytes[i..]
            .iter()
            .position(|&b| b == b'%')
            .map_or(bytes.len(), |p| i + p);
        decoded.push_str(&path[i..next]);
        i = next;
    }
    remove_dot_segments(&decoded)
}

/// RFC 3986 section 5.2.4, for an absolute path: `.` segments vanish and
/// `..` removes the segment before it, never going above the root.
fn remove_dot_segments(path: &str) -> String {
    let mut output: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len().saturating_sub(1);
    // The first segment is what precedes the leading '/', empty for an
    // absolute path.
    for (index, segment) in segments.iter().enumerate().skip(1) {
        match *segment {
            "." | ".." => {
                if *segment == ".." {
                    output.pop();
                }
                // A trailing dot segment leaves a directory: `/a/b/..` is `/a/`.
                if index == last {
                    output.push("");
                }
            }
            other => output.push(other),
        }
    }
    let mut normalized = String::with_capacity(path.len());
    normalized.push_str(segments.first().copied().unwrap_or(""));
    for segment in output {
        normalized.push('/');
        normalized.push_str(segment);
    }
    if normalized.is_empty() {
        normalized.push('/');
    }
    normalized
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_and_escapes_cannot_leave_a_prefix() {
        let orders = PathPattern::parse("/v1/orders/*").unwrap();
        for allowed in [
            "/v1/orders",
            "/v1/orders/",
            "/v1/orders/42",
            "/v1/orders/42/items",
            "/v1/./orders/42",
            "/v1/orders/a/../b",
            "/v1/%6Frders/42",
            "/v1/orders%2F42",
        ] {
            assert!(orders.matches(&normalize_path(allowed)), "{allowed}");
        }
        for refused in [
            "/v1/orders/../admin",
            "/v1/orders/%2e%2e/admin",
            "/v1/orders/%2E%2E/admin",
            "/v1/orders/.%2e/admin",
            "/v1/orders/..%2Fadmin",
            "/v1/orders/..%2fadmin",
            "/v1/orders/../../../v1/admin",
            "/v1/orders-archive",
            "/v1/ordersx/1",
            "/v1/admin",
            "/",
        ] {
            assert!(!orders.matches(&normalize_path(refused)), "{refused}");
        }
    }

    #[test]
    fn normal_form() {
        assert_eq!(normalize_path("/a/b/../c"), "/a/c");
        assert_eq!(normalize_path("/a/b/.."), "/a/");
        assert_eq!(normalize_path("/../../a"), "/a");
        assert_eq!(normalize_path("/a/%3a/%7e"), "/a/%3A/~");
        assert_eq!(normalize_path("/a%"), "/a%25");
        assert_eq!(normalize_path("/a%2"), "/a%252");
        assert_eq!(normalize_path("/%zz"), "/%25zz");
        // Not a dot segment in two steps.
        assert_eq!(normalize_path("/a/%%32%65%%32%65/b"), "/a/%252e%252e/b");
        assert_eq!(normalize_path("/a/%252e%252e/b"), "/a/%252e%252e/b");
        assert_eq!(normalize_path("/é/ü"), "/é/ü");
        assert_eq!(normalize_path(""), "/");
    }

    #[test]
    fn exact_patterns_match_one_path() {
        let whoami = PathPattern::parse("/v1/whoami").unwrap();
        assert!(whoami.matches(&normalize_path("/v1/whoami")));
        assert!(whoami.matches(&normalize_path("/v1/x/../whoami")));
        assert!(!whoami.matches(&normalize_path("/v1/whoami/")));
        assert!(!whoami.matches(&normalize_path("/v1/whoami/x")));
        let everything = PathPattern::parse("/*").unwrap();
        assert!(everything.matches("/"));
        assert!(everything.matches("/anything/at/all"));
    }

    /// Found by `cargo fuzz run policy_path`: a pattern of stray '%'s
    /// parsed, but its normal form (each '%' written `%25`) was over the
    /// length limit and did not parse again.
    #[test]
    fn a_pattern_parses_again_from_its_normal_form() {
        let long = format!("/{}", "%".repeat(400));
        match PathPattern::parse(&long) {
            Ok(pattern) => assert_eq!(PathPattern::parse(pattern.as_str()), Ok(pattern)),
            Err(e) => assert!(e.contains("at most"), "{e}"),
        }
        let pattern = PathPattern::parse("/a%/b/*").unwrap();
        assert_eq!(pattern.as_str(), "/a%25/b/*");
        assert_eq!(PathPattern::parse(pattern.as_str()), Ok(pattern));
    }

    #[test]
    fn bad_patterns_are_refused_with_a_reason() {
        for bad in [
            "",
            "v1/orders",
            "/v1/*/x",
            "/v1/orders*",
            "/v1/../x",
            "/a?b",
            "/a b",
            "/v1/%2e%2e/x",
        ] {
            let error = PathPattern::parse(bad).unwrap_err();
            assert!(!error.is_empty(), "{bad}");
        }
        assert_eq!(
            PathPattern::parse("/v1/orders/*").unwrap().as_str(),
            "/v1/orders/*"
        );
        assert_eq!(
            PathPattern::parse("/v1/%6Frders").unwrap().as_str(),
            "/v1/orders"
        );
    }
}
