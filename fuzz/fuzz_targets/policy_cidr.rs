//! Source networks: the CIDR parser (a network that parses prints as text
//! that parses back to it, and contains its own address) and the client
//! address taken from `X-Forwarded-For` behind trusted proxies (the first
//! line is the trusted list, the rest the header: never a panic, and the
//! answer is never one of the trusted proxies unless all hops were).
#![no_main]

use keygate::policy::source::{client_address, parse_network, parse_networks};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
    if let Ok(network) = parse_network(first) {
        assert_eq!(parse_network(&network.to_string()), Ok(network));
        assert!(network.contains(&network.network()));
    }
    let trusted = parse_networks(first).unwrap_or_default();
    let peer = "10.0.0.1".parse().ok();
    let _ = client_address(peer, std::iter::once(rest.as_bytes()), &trusted);
    let _ = client_address(peer, rest.as_bytes().split(|b| *b == b'\n'), &trusted);
});
