//! The KG1 `Authorization` header parser on any bytes: an answer, never a
//! panic; a header that parses obeys the contract's grammar and, written
//! out again, parses to the same fields.
#![no_main]

use keygate::signature::{is_valid_nonce, Authorization};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|header: &[u8]| {
    let Ok(auth) = Authorization::parse(header) else {
        return;
    };
    assert!(auth.key_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    assert!((1..=12).contains(&auth.timestamp.len()));
    assert!(auth.unix_time() >= 0);
    assert!(is_valid_nonce(auth.nonce));
    let canonical = format!(
        "KG1-HMAC-SHA256 KeyId={}, Timestamp={}, Nonce={}, Signature={}",
        auth.key_id,
        auth.timestamp,
        auth.nonce,
        auth.signature.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let again = Authorization::parse(canonical.as_bytes()).expect("the canonical form parses");
    assert_eq!(
        (again.key_id, again.timestamp, again.nonce, again.signature),
        (auth.key_id, auth.timestamp, auth.nonce, auth.signature)
    );
});
