//! RFC 9421 signatures from an off-the-shelf client (the Python
//! `http-message-signatures` package, installed by .ci/run) against the real
//! server, plus malformed structured fields sent by hand.

use std::process::Command;

use crate::helpers::*;

fn run_client(app: &TestApp, key: &TestKey, sign_origin: Option<&str>) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/rfc9421/off_the_shelf.py"
    );
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .env("KEYGATE_URL", app.url(""))
        .env("KEYGATE_KEY_ID", &key.key_id)
        .env("KEYGATE_SECRET", &key.secret);
    if let Some(origin) = sign_origin {
        cmd.arg(origin);
    }
    let output = cmd.output().expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "off-the-shelf RFC 9421 client (pip install http-message-signatures requests):\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.lines().count() >= 14 && !stdout.contains("FAIL"),
        "{stdout}"
    );
}

#[test]
fn off_the_shelf_client_is_accepted_and_attacks_refused() {
    let app = spawn_app();
    let key = app.create_key();
    run_client(&app, &key, None);
}

/// Behind a TLS-terminating proxy the client signs https://api.example.com;
/// keygate, told its public origin, derives the same @target-uri and
/// @authority although it received plain HTTP on 127.0.0.1.
#[test]
fn public_origin_behind_a_proxy() {
    let app = spawn_app_with(|c| c.public_origin = Some("https://api.example.com".into()));
    let key = app.create_key();
    run_client(&app, &key, Some("https://api.example.com"));

    // Without the setting the same signatures do not verify.
    let plain = spawn_app();
    let key = plain.create_key();
    let output = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/rfc9421/off_the_shelf.py"
        ))
        .arg("https://api.example.com")
        .env("KEYGATE_URL", plain.url(""))
        .env("KEYGATE_KEY_ID", &key.key_id)
        .env("KEYGATE_SECRET", &key.secret)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("FAIL whoami"));
}

#[test]
fn malformed_structured_fields_are_clean_401s() {
    let app = spawn_app();
    let key = app.create_key();
    let now = now();
    let cases = [
        ("sig=(\"@method\"", "sig=:AAAA:"),
        ("sig=(\"@method\");keyid=\"x\"", "sig=:AAAA:"),
        ("", "sig=:AAAA:"),
        (&*format!("sig=(\"@method\" \"@target-uri\");created={now};keyid=\"{}\";nonce=\"abc\"", key.key_id), "sig=:%%%:"),
        (&*format!("sig=(\"@method\" \"@target-uri\");created={now};keyid=\"{}\";nonce=\"abc\";alg=\"rsa-pss-sha512\"", key.key_id), "sig=:AAAA:"),
        (&*format!("sig=(\"@method\" \"@target-uri\");created={now};keyid=\"{}\";nonce=\"abc\"", key.key_id), "other=:AAAA:"),
    ];
    for (input, signature) in cases {
        let request = format!(
            "GET /v1/whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\nSignature-Input: {input}\r\nSignature: {signature}\r\n\r\n"
        );
        let (status, body) = raw_request(app.public, request.as_bytes());
        assert_eq!(status, 401, "{input}: {body}");
        assert!(body.contains("malformed_authorization"), "{input}: {body}");
    }
    let huge = format!(
        "GET /v1/whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\nSignature-Input: sig=(\"{}\")\r\nSignature: sig=:AAAA:\r\n\r\n",
        "a".repeat(20_000)
    );
    let (status, body) = raw_request(app.public, huge.as_bytes());
    assert_eq!(status, 401, "{body}");
}
