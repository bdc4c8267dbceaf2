//! RFC 9421: `Signature-Input` and `Signature` (the input split at its
//! first line feed), then, for every label that parses, the coverage check
//! and the signature base over a fixed request whose header fields come
//! from the rest of the input. An answer, never a panic.
#![no_main]

use keygate::rfc9421::{self, RequestParts};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let input = parts.next().unwrap_or("");
    let signature = parts.next().unwrap_or("");
    let fields = parts.next().unwrap_or("").to_owned();
    if input.len() > rfc9421::MAX_HEADER_LEN || signature.len() > rfc9421::MAX_HEADER_LEN {
        return;
    }
    let Ok(labelled) = rfc9421::parse(input, signature) else {
        return;
    };
    let field_lines = move |name: &str| -> Vec<String> {
        fields
            .split('\n')
            .filter_map(|line| line.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    };
    let request = RequestParts {
        method: "POST",
        scheme: "https",
        authority: "api.example.com",
        request_target: "/v1/orders?id=7&q=a%20b",
        field_lines: &field_lines,
    };
    for (_, parsed) in labelled {
        if let Ok(sig) = parsed {
            let _ = rfc9421::check_coverage(&sig, request.request_target, false);
            let _ = rfc9421::signature_base(&sig, &request);
        }
    }
});
