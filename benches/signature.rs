//! What verifying a KG1 signature costs next to the HMAC itself.
//!
//!   cargo bench --bench signature
//!
//! - `raw_hmac_sha256`: HMAC-SHA256 over the bytes of a typical string to
//!   sign, keyed per call, as any HMAC user would write it.
//! - `kg1_verify`: what keygate does per request once the body is hashed:
//!   parse the Authorization header, build the string to sign, HMAC with the
//!   cached key schedule, compare in constant time.
//! - `kg1_verify_with_body_hash`: the same plus SHA-256 of a 200-byte body.
//! - `kg1_verify_fresh_requests`: `kg1_verify` over 4096 different headers
//!   in turn, each with its own random nonce and signature, as real traffic
//!   is. The branch predictor cannot learn one header's bytes here, so this
//!   is the figure to compare with raw HMAC.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hmac::{Hmac, Mac};
use keygate::signature::{
    authorization_header, Authorization, BodyHash, SignedParts, SigningKey, StringToSign,
};
use sha2::Sha256;

const SECRET: &str = "sk_Zq3vX9mR2tY7uW1pL8sK4dF6gH0jB5nC2xV7bM9aQeE";

fn parts(body_hash: BodyHash) -> SignedParts<'static> {
    SignedParts {
        key_id: "pk_4vQm2R7yXc9LpT3sWd8Zk1Bn",
        timestamp: "1700000000",
        nonce: "9f86d081884c7d659a2feaa0c55ad015",
        method: "GET",
        request_target: "/v1/orders?id=7&q=a%20b&page=2",
        body_hash,
    }
}

fn bench(c: &mut Criterion) {
    let body = vec![b'x'; 200];
    let header = authorization_header(SECRET, &parts(BodyHash::of(&body)));
    let string_to_sign = StringToSign::new(&parts(BodyHash::of(&body)));
    let key = SigningKey::new(SECRET);

    let mut group = c.benchmark_group("signature");
    group.throughput(Throughput::Elements(1));
    group.bench_function("raw_hmac_sha256", |b| {
        b.iter(|| {
            let mut mac = Hmac::<Sha256>::new_from_slice(black_box(SECRET).as_bytes()).unwrap();
            mac.update(black_box(string_to_sign.as_str()).as_bytes());
            black_box(mac.finalize().into_bytes())
        })
    });
    let verify = |header: &str, body_hash: BodyHash| {
        let auth = Authorization::parse(black_box(header.as_bytes())).unwrap();
        let sts = StringToSign::new(&SignedParts {
            key_id: auth.key_id,
            timestamp: auth.timestamp,
            nonce: auth.nonce,
            method: "GET",
            request_target: "/v1/orders?id=7&q=a%20b&page=2",
            body_hash,
        });
        assert!(key.verify(&sts, &auth.signature));
    };
    let precomputed = BodyHash::of(&body);
    group.bench_function("kg1_verify", |b| {
        b.iter(|| verify(&header, black_box(precomputed)))
    });
    group.bench_function("kg1_verify_with_body_hash", |b| {
        b.iter(|| verify(&header, BodyHash::of(black_box(&body))))
    });
    // Real traffic: every request brings a new nonce and signature.
    let fresh: Vec<String> = (0..4096)
        .map(|i| {
            let nonce = const_hex::encode(rand::random::<[u8; 16]>());
            let timestamp = (1_700_000_000 + i).to_string();
            authorization_header(
                SECRET,
                &SignedParts {
                    nonce: &nonce,
                    timestamp: &timestamp,
                    ..parts(precomputed)
                },
            )
        })
        .collect();
    let mut next = fresh.iter().cycle();
    group.bench_function("kg1_verify_fresh_requests", |b| {
        b.iter(|| verify(next.next().expect("cycle never ends"), precomputed))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
