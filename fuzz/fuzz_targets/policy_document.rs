//! A whole policy document, as `PUT .../policy` takes it: any bytes get an
//! answer, and a document that parses comes back from its JSON as the
//! same policy (what the admin API shows is what is enforced).
#![no_main]

use keygate::policy::{AccessPolicy, Holder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for holder in [Holder::App, Holder::Key] {
        if let Ok(policy) = AccessPolicy::parse(data, holder) {
            let shown = policy.to_json().to_string();
            let again = AccessPolicy::parse(shown.as_bytes(), holder).expect("its own JSON parses");
            assert_eq!(again, policy, "{shown}");
        }
    }
});
