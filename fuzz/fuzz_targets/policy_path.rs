//! The access policy's path matcher: the first line is a rule's pattern,
//! the rest a request path. Beyond "never panics", the properties that
//! keep `..` and escapes from leaving a prefix: the normal form has no dot
//! segment, normalising it again changes nothing, and a path a prefix
//! pattern matches starts with that prefix.
#![no_main]

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
    if let Ok(pattern) = PathPattern::parse(pattern) {
        let reparsed = PathPattern::parse(pattern.as_str()).expect("a parsed pattern reparses");
        assert_eq!(reparsed, pattern);
        if pattern.matches(&normalized) {
            let base = pattern.as_str().trim_end_matches("/*");
            assert!(normalized.starts_with(base), "{normalized:?} escaped {pattern}");
        }
    }
});
