//! The crate against a real keygate: run under sdk/testbed.py, which starts
//! one and sets the KEYGATE_* environment (its docstring lists it).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keygate_client::{
    sign, Error, KeygateClient, Refusal, RetryPolicy, Scheme, SignRequest, Signer,
};
use serde_json::Value;

fn env(name: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| panic!("{name} is not set: run this suite under sdk/testbed.py"))
}

fn url(path: &str) -> String {
    format!("{}{path}", env("KEYGATE_URL"))
}

fn signer(prefix: &str) -> Signer {
    Signer::new(
        env(&format!("KEYGATE_{prefix}KEY_ID")),
        env(&format!("KEYGATE_{prefix}SECRET")),
    )
}

fn client(signer: Signer) -> KeygateClient {
    KeygateClient::new(reqwest::Client::new(), signer)
}

const WRONG_SECRET: &str = "sk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

async fn ok(client: &KeygateClient, request: reqwest::RequestBuilder) -> Value {
    match client.execute_checked(request.build().unwrap()).await {
        Ok(response) => {
            assert!(response.status().is_success(), "{}", response.status());
            serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
        }
        Err(e) => panic!("{e}"),
    }
}

async fn refused(client: &KeygateClient, request: reqwest::RequestBuilder) -> Refusal {
    match client.execute_checked(request.build().unwrap()).await {
        Err(Error::Refused(refusal)) => refusal,
        Err(e) => panic!("{e}"),
        Ok(response) => panic!("not a refusal: {}", response.status()),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn signs_gets_posts_and_awkward_queries() {
    let c = client(signer(""));
    assert_eq!(
        ok(&c, c.http().get(url("/v1/whoami"))).await["key_id"],
        env("KEYGATE_KEY_ID")
    );
    let echo = ok(
        &c,
        c.http().post(url("/v1/echo")).body(r#"{"note":"café ✓"}"#),
    )
    .await;
    assert_eq!(echo["body"], r#"{"note":"café ✓"}"#);
    // reqwest's query() encoding: spaces, '+', '/', non-ASCII, a repeated key.
    let query = [
        ("q", "a b+c"),
        ("path", "x/y%2Fz"),
        ("city", "Zoë 東京"),
        ("k", "1"),
        ("k", "2"),
    ];
    ok(&c, c.http().get(url("/v1/whoami")).query(&query)).await;
    ok(
        &c,
        c.http()
            .get(url("/v1/whoami?q=a%20b+c&path=a%2Fb&city=Zo%C3%AB&k=1&k=2")),
    )
    .await;
    let seen = ok(
        &c,
        c.http().get(url("/orders/7?q=a b+c&path=a%2Fb&k=1&k=2")),
    )
    .await;
    assert_eq!(seen["target"], "/orders/7?q=a%20b+c&path=a%2Fb&k=1&k=2");
}

#[tokio::test]
async fn a_streamed_or_oversized_body_is_refused_before_sending() {
    let c = client(signer("").max_body_bytes(10));
    let request = c
        .http()
        .post(url("/v1/echo"))
        .body("x".repeat(11))
        .build()
        .unwrap();
    assert!(matches!(c.execute(request).await, Err(Error::Body(_))));
    let request = c
        .http()
        .post(url("/v1/echo"))
        .body(reqwest::Body::wrap(StreamedBody))
        .build()
        .unwrap();
    assert!(matches!(c.execute(request).await, Err(Error::Body(_))));
}

/// A body reqwest can only stream (not bytes in memory).
struct StreamedBody;

impl http_body::Body for StreamedBody {
    type Data = bytes::Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>> {
        std::task::Poll::Ready(None)
    }
}

#[tokio::test]
async fn a_wrong_secret_shows_both_strings_to_sign() {
    let c = client(Signer::new(env("KEYGATE_KEY_ID"), WRONG_SECRET));
    let refusal = refused(&c, c.http().get(url("/v1/whoami?x=1"))).await;
    assert_eq!(
        (refusal.code.as_str(), refusal.status),
        ("signature_mismatch", 401)
    );
    assert!(refusal.request_id.is_some());
    assert!(refusal
        .server_string_to_sign
        .as_deref()
        .unwrap()
        .contains("/v1/whoami?x=1"));
    assert_eq!(refusal.string_to_sign, refusal.server_string_to_sign);
    assert!(
        refusal.to_string().contains("the secret differs"),
        "{refusal}"
    );
}

#[tokio::test]
async fn each_refusal_has_its_code() {
    let unknown = client(Signer::new(
        format!("pk_{}", "Z".repeat(24)),
        env("KEYGATE_SECRET"),
    ));
    let revoked = client(signer("REVOKED_"));
    let narrow = client(signer("NARROW_"));
    let big = client(signer("").max_body_bytes(4 << 20));
    let cases = [
        (
            &unknown,
            unknown.http().get(url("/v1/whoami")),
            "unknown_key",
            401,
        ),
        (
            &revoked,
            revoked.http().get(url("/v1/whoami")),
            "key_revoked",
            401,
        ),
        (
            &narrow,
            narrow.http().post(url("/v1/echo")).body("{}"),
            "forbidden",
            403,
        ),
        (
            &big,
            big.http()
                .post(url("/v1/echo"))
                .body("x".repeat((64 << 10) + 1)),
            "body_too_large",
            413,
        ),
    ];
    for (c, request, code, status) in cases {
        let refusal = refused(c, request).await;
        assert_eq!((refusal.code.as_str(), refusal.status), (code, status));
        assert!(!refusal.message.is_empty());
    }
}

#[tokio::test]
async fn every_malformed_vector_is_refused_with_its_code() {
    let vectors: Value =
        serde_json::from_str(&std::fs::read_to_string(env("KEYGATE_VECTORS")).unwrap()).unwrap();
    let http = reqwest::Client::new();
    for c in vectors["malformed"].as_array().unwrap() {
        let response = http
            .get(url("/v1/whoami"))
            .header("authorization", c["authorization"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let refusal =
            Refusal::parse(status, None, None, &response.bytes().await.unwrap(), None).unwrap();
        assert_eq!(
            refusal.code,
            c["expected_error"].as_str().unwrap(),
            "{}",
            c["name"]
        );
    }
}

#[tokio::test]
async fn a_reused_nonce_is_refused() {
    let (key_id, secret) = (env("KEYGATE_KEY_ID"), env("KEYGATE_SECRET"));
    let signed = sign(&SignRequest {
        key_id: &key_id,
        secret: &secret,
        method: "GET",
        target: "/v1/whoami",
        body: b"",
        timestamp: now(),
        nonce: None,
        scheme: Scheme::Kg1,
    });
    let http = reqwest::Client::new();
    let send = || {
        http.get(url("/v1/whoami"))
            .header(signed.headers[0].0, &signed.headers[0].1)
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 200);
    let again = send().await.unwrap();
    let refusal = Refusal::parse(
        again.status().as_u16(),
        None,
        None,
        &again.bytes().await.unwrap(),
        None,
    )
    .unwrap();
    assert_eq!(refusal.code, "nonce_reused");
}

#[tokio::test]
async fn skew_is_corrected_from_server_time_and_kept() {
    let shifted = env("KEYGATE_SHIFTED_URL");
    let c = client(signer(""));
    ok(&c, c.http().get(format!("{shifted}/v1/whoami"))).await;
    assert!(
        (c.signer().clock_offset_millis() - 600_000).abs() < 5000,
        "{}",
        c.signer().clock_offset_millis()
    );
    ok(
        &c,
        c.http().post(format!("{shifted}/v1/echo")).body("again"),
    )
    .await;
    let off = client(signer("").correct_clock_skew(false));
    let refusal = refused(&off, off.http().get(format!("{shifted}/v1/whoami"))).await;
    assert_eq!(refusal.code, "timestamp_out_of_range");
    assert!((refusal.server_time.unwrap() - now() as i64 - 600).abs() < 5);
}

#[tokio::test]
async fn keygates_own_503_is_retried() {
    let c = client(signer(""));
    let started = std::time::Instant::now();
    ok(
        &c,
        c.http()
            .get(format!("{}/v1/whoami", env("KEYGATE_LOCKED_URL"))),
    )
    .await;
    // One 503 (after the locked database's 200 ms), one Retry-After: 1 s.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_upstream_503_is_retried_with_a_fresh_nonce_and_a_post_only_when_asked() {
    let token = || format!("{:016x}", rand_token());
    let c = client(signer(""));
    ok(&c, c.http().get(url(&format!("/flaky/{}", token())))).await;
    let refusal = refused(
        &c,
        c.http().post(url(&format!("/flaky/{}", token()))).body("1"),
    )
    .await;
    assert_eq!(refusal.code, "unavailable");
    let eager = client(signer("").retry(RetryPolicy {
        retry_non_idempotent: true,
        ..RetryPolicy::default()
    }));
    ok(
        &eager,
        eager
            .http()
            .post(url(&format!("/flaky/{}", token())))
            .body("1"),
    )
    .await;
}

fn rand_token() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[tokio::test]
async fn a_rate_limit_is_waited_out() {
    let c = client(signer("LIMITED_"));
    ok(&c, c.http().get(url("/v1/whoami"))).await;
    ok(&c, c.http().get(url("/v1/whoami"))).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let once = client(signer("LIMITED_").retry(RetryPolicy::NONE));
    ok(&once, once.http().get(url("/v1/whoami"))).await;
    let refusal = refused(&once, once.http().get(url("/v1/whoami"))).await;
    assert_eq!(refusal.code, "rate_limited");
    assert!(refusal.retry_after.unwrap() >= Duration::from_secs(1));
}

#[tokio::test]
async fn a_rotated_keys_old_secret_works_during_grace() {
    for prefix in ["OLD_", "NEW_"] {
        let c = client(signer(prefix));
        assert_eq!(
            ok(&c, c.http().get(url("/v1/whoami"))).await["key_id"],
            env(&format!("KEYGATE_{prefix}KEY_ID"))
        );
    }
}

#[tokio::test]
async fn rfc9421() {
    let c = client(signer("").scheme(Scheme::Rfc9421));
    ok(&c, c.http().get(url("/v1/whoami?q=a%20b+c&k=1&k=2"))).await;
    assert_eq!(
        ok(&c, c.http().post(url("/v1/echo")).body("nine four two one")).await["body"],
        "nine four two one"
    );
    let wrong = client(Signer::new(env("KEYGATE_KEY_ID"), WRONG_SECRET).scheme(Scheme::Rfc9421));
    let refusal = refused(&wrong, wrong.http().get(url("/v1/whoami"))).await;
    assert_eq!(refusal.code, "signature_mismatch");
    assert!(refusal
        .string_to_sign
        .unwrap()
        .contains(r#""@method": GET"#));
}
