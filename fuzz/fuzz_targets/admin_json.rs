//! The admin API's JSON bodies (create app, create key with its RFC 3339
//! time, rotate) on any bytes: an answer, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    keygate::http::parse_each_admin_body(body);
});
