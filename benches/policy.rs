//! What the access-policy check costs one signed request, next to the
//! request's whole cost (about 14 µs of keygate's CPU per signed request
//! on SQLite: BENCHMARKS.md, rounds 7 and 8).
//!
//!   cargo bench --bench policy
//!
//! - `none`: a key and an application without policies (the check is two
//!   `is_some` tests and two empty limiter slots).
//! - `twenty_rules`: 20 rules on the application and 20 on the key, the
//!   matching one last, 8 source networks with the client's last, and a
//!   rate limit on each: every part of the check runs in full.
//! - `twenty_rules_escaped_path`: the same on a path with an escape and a
//!   dot segment, which has to be rewritten before matching.

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use keygate::policy::{AccessPolicy, Compiled, Enforced, Holder};

fn compiled(json: &str, holder: Holder) -> Arc<Compiled> {
    let stored = AccessPolicy::parse(json.as_bytes(), holder)
        .unwrap()
        .to_stored();
    Arc::new(Compiled::new(
        stored,
        holder,
        &keygate::clock::Clock::system(),
    ))
}

fn bench(c: &mut Criterion) {
    let mut rules: Vec<String> = (0..19)
        .map(|i| format!(r#"{{"methods": ["GET", "POST"], "path": "/v1/resource{i}/*"}}"#))
        .collect();
    rules.push(r#"{"methods": ["GET"], "path": "/v1/orders/*"}"#.into());
    let rules = rules.join(",");
    let limit = r#""rate_limit": {"per_second": 1000000, "burst": 1000000}"#;
    let twenty = Enforced {
        app: compiled(&format!(r#"{{"rules": [{rules}], {limit}}}"#), Holder::App),
        key: compiled(
            &format!(
                r#"{{"rules": [{rules}], {limit}, "source_cidrs": ["10.0.0.0/8", "172.16.0.0/12",
                "192.168.0.0/16", "203.0.113.0/24", "2001:db8::/32", "fd00::/8",
                "198.51.100.0/24", "127.0.0.0/8"]}}"#
            ),
            Holder::Key,
        ),
        policy_seq: 1,
    };
    let none = Enforced {
        app: compiled("{}", Holder::App),
        key: compiled("{}", Holder::Key),
        policy_seq: 0,
    };
    let client: IpAddr = "127.0.0.1".parse().unwrap();
    let mut group = c.benchmark_group("policy_check");
    group.bench_function("none", |b| {
        b.iter(|| {
            none.check(black_box("GET"), black_box("/v1/orders/42"), || {
                Some(client)
            })
        })
    });
    group.bench_function("twenty_rules", |b| {
        b.iter(|| {
            twenty.check(black_box("GET"), black_box("/v1/orders/42"), || {
                Some(client)
            })
        })
    });
    group.bench_function("twenty_rules_escaped_path", |b| {
        b.iter(|| {
            twenty.check(
                black_box("GET"),
                black_box("/v1/orders/x/../%34%32"),
                || Some(client),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
