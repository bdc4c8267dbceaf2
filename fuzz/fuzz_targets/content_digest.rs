//! RFC 9530 `Content-Digest` against a body: the header is the input up to
//! its first line feed, the body the rest. An answer, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let header = String::from_utf8_lossy(&data[..split]);
    let body = data.get(split + 1..).unwrap_or(&[]);
    let _ = keygate::rfc9421::check_content_digest(&header, body);
});
