//! The access policy's path matcher and the canonical-path check that runs
//! before it: the first line is a rule's pattern, the rest a request path.
//! Beyond "never panics":
//! - the normal form has no dot segment, and normalising it again changes
//!   nothing; a path a prefix pattern matches starts with that prefix;
//! - a path `canonical_path::check` accepts keeps its segments under
//!   normalisation (none vanishes or merges), its normal form is accepted
//!   too, and if a prefix pattern matches it, the most suspicious reading
//!   any upstream could make of it (decoded three times, `\` as `/`, `;`
//!   parameters cut, slashes merged, dots resolved) stays inside the same
//!   reading of the prefix.
#![no_main]

use keygate::canonical_path;
use keygate::policy::{normalize_path, PathPattern};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (pattern, path) = text.split_once('\n').unwrap_or(("/v1/orders/*", &text));
    let normalized = normalize_path(path);
    assert_eq!(normalize_path(&normalized), normalized, "not idempotent: {path:?}");
    assert!(
        normalized
            .split('/')
            .skip(1)
            .all(|segment| segment != "." && segment != ".."),
        "dot segment left in {normalized:?} (from {path:?})"
    );
    let accepted = path.starts_with('/')
        && !path.contains('?')
        && canonical_path::check(path).is_ok();
    if accepted {
        assert_eq!(
            path.split('/').count(),
            normalized.split('/').count(),
            "{path:?} changed its segments: {normalized:?}"
        );
        assert_eq!(
            canonical_path::check(&normalized),
            Ok(()),
            "the normal form {normalized:?} of accepted {path:?} is refused"
        );
    }
    if let Ok(pattern) = PathPattern::parse(pattern) {
        let reparsed = PathPattern::parse(pattern.as_str()).expect("a parsed pattern reparses");
        assert_eq!(reparsed, pattern);
        if pattern.matches(&normalized) {
            let base = pattern.as_str().trim_end_matches("/*");
            assert!(normalized.starts_with(base), "{normalized:?} escaped {pattern}");
            if accepted && pattern.as_str().ends_with("/*") {
                let (read, base_read) = (suspicious_reading(path), suspicious_reading(base));
                let inside = base_read == "/"
                    || read == base_read
                    || read.starts_with(&format!("{base_read}/"));
                assert!(inside, "{path:?} is read as {read:?}, outside {pattern} ({base_read:?})");
            }
        }
    }
});

/// Every liberty some upstream takes with a path, at once.
fn suspicious_reading(path: &str) -> String {
    let mut bytes = path.as_bytes().to_vec();
    for _ in 0..3 {
        bytes = percent_decode(&bytes);
    }
    let text = String::from_utf8_lossy(&bytes).replace('\\', "/");
    let mut segments: Vec<&str> = Vec::new();
    for segment in text.split('/') {
        match segment.split(';').next().unwrap_or("") {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            name => segments.push(name),
        }
    }
    format!("/{}", segments.join("/"))
}

fn percent_decode(input: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' && i + 2 < input.len() {
            if let (Some(h), Some(l)) = (hex(input[i + 1]), hex(input[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}
