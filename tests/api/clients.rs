//! Every client example in client-examples/, run with its real interpreter
//! or toolchain against the real server: it must succeed with a good key,
//! fail cleanly (error code, both strings to sign) with a wrong secret, and
//! sign the published vectors exactly. A missing interpreter fails the test.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use base64::Engine;

use crate::helpers::*;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The Rust example runs as a partner would run it: `cargo run --example
/// client` (cargo's build lock is free while tests run).
fn rust_example() -> Command {
    let mut c = nested_cargo();
    c.args(["run", "--quiet", "--example", "client", "--"]);
    c
}

/// How a partner runs each example, from its own directory.
fn command(language: &str) -> Command {
    let interpreted = |program: &str, args: &[&str]| {
        let mut c = Command::new(program);
        c.args(args);
        c
    };
    let mut cmd = match language {
        "python" => interpreted("python3", &["client.py"]),
        "node" => interpreted("node", &["client.mjs"]),
        "java" => interpreted("java", &["Client.java"]),
        "bash" => interpreted("bash", &["client.sh"]),
        "go" => {
            let mut c = interpreted("go", &["run", "client.go"]);
            // Go's build cache, kept with the test build's other artefacts
            // rather than wherever $HOME is (CI may not set it).
            c.env(
                "GOCACHE",
                Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-cache"),
            );
            c
        }
        "php" => interpreted("php", &["client.php"]),
        "ruby" => interpreted("ruby", &["client.rb"]),
        "rust" => rust_example(),
        other => panic!("no example for {other}"),
    };
    cmd.current_dir(repo().join("client-examples").join(language));
    cmd
}

fn run(language: &str, app: &TestApp, key: &TestKey) -> Output {
    command(language)
        .env("KEYGATE_URL", app.url(""))
        .env("KEYGATE_KEY_ID", &key.key_id)
        .env("KEYGATE_SECRET", &key.secret)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run the {language} example (is its interpreter installed?): {e}")
        })
}

/// The valid vectors as the examples' `--sign-vectors` input, and the
/// Authorization headers they must print.
fn vector_lines() -> (String, Vec<String>) {
    let text = std::fs::read_to_string(repo().join("tests/vectors/kg1.json")).unwrap();
    let vectors: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut input = String::new();
    let mut expected = Vec::new();
    for case in vectors["valid"].as_array().unwrap() {
        let body = match case.get("body") {
            Some(text) => text.as_str().unwrap().as_bytes().to_vec(),
            None => base64::engine::general_purpose::STANDARD
                .decode(case["body_base64"].as_str().unwrap())
                .unwrap(),
        };
        let field = |name: &str| case[name].as_str().unwrap().to_owned();
        input.push_str(
            &[
                field("key_id"),
                field("secret"),
                field("method"),
                field("request_target"),
                field("timestamp"),
                field("nonce"),
                const_hex::encode(body),
            ]
            .join("\t"),
        );
        input.push('\n');
        expected.push(
            case["expected"]["authorization"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    (input, expected)
}

fn check_example(language: &str) {
    let app = spawn_app();
    let key = app.create_key();

    let good = run(language, &app, &key);
    let stdout = String::from_utf8_lossy(&good.stdout);
    assert!(
        good.status.success(),
        "{language} example failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(
        stdout.contains("GET /v1/whoami?probe=1&x=a%20b -> 200"),
        "{language}: {stdout}"
    );
    assert!(
        stdout.contains("POST /v1/echo -> 200"),
        "{language}: {stdout}"
    );
    assert!(stdout.contains(&key.key_id), "{language}: {stdout}");
    assert!(
        stdout.contains("東京"),
        "{language}: the non-ASCII body came back: {stdout}"
    );

    let wrong = TestKey {
        secret: format!("{}x", key.secret),
        ..key.clone()
    };
    let bad = run(language, &app, &wrong);
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert!(
        !bad.status.success(),
        "{language} must fail with a wrong secret: {stdout}"
    );
    assert!(
        stdout.contains("signature_mismatch"),
        "{language}: {stdout}"
    );
    assert!(
        stdout.contains("ours | server's")
            && stdout.matches("KG1-HMAC-SHA256").count() >= 2
            && stdout.contains("the secret is wrong"),
        "{language} shows both strings to sign: {stdout}"
    );

    // The access policy's refusals, printed like the others.
    let policy_path = format!("/admin/keys/{}/policy", key.key_id);
    let only_whoami = serde_json::json!({
        "rules": [{ "methods": ["GET"], "path": "/v1/whoami" }],
        "rate_limit": { "per_second": 0.01, "burst": 1 },
    });
    assert_eq!(
        app.admin("PUT", &policy_path, Some(only_whoami)).status,
        200
    );
    let refused = run(language, &app, &key);
    let stdout = String::from_utf8_lossy(&refused.stdout);
    assert!(!refused.status.success(), "{language}: {stdout}");
    for expected in [
        "-> 200",
        "POST /v1/echo -> 403",
        "forbidden",
        "POST /v1/echo",
    ] {
        assert!(
            stdout.contains(expected),
            "{language} prints {expected:?}: {stdout}"
        );
    }
    let limited = run(language, &app, &key);
    let stdout = String::from_utf8_lossy(&limited.stdout);
    assert!(
        stdout.contains("-> 429") && stdout.contains("rate_limited"),
        "{language} prints the rate limit: {stdout}"
    );

    let (input, expected) = vector_lines();
    let mut child = command(language)
        .arg("--sign-vectors")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{language} --sign-vectors");
    let printed: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(printed, expected, "{language} signs the published vectors");
}

#[test]
fn python_example() {
    check_example("python");
}

#[test]
fn node_example() {
    check_example("node");
}

#[test]
fn java_example() {
    check_example("java");
}

#[test]
fn bash_example() {
    check_example("bash");
}

#[test]
fn go_example() {
    check_example("go");
}

#[test]
fn php_example() {
    check_example("php");
}

#[test]
fn ruby_example() {
    check_example("ruby");
}

#[test]
fn rust_example_client() {
    check_example("rust");
}

/// `keygate request`: curl with signing.
#[test]
fn keygate_request_signs_and_reports() {
    let app = spawn_app();
    let key = app.create_key();
    let dir = tempfile::tempdir().unwrap();
    let body_file = dir.path().join("body.json");
    std::fs::write(&body_file, r#"{"from":"file","note":"ü"}"#).unwrap();

    let request = |args: &[&str], secret: &str| {
        Command::new(keygate_bin())
            .arg("request")
            .args(args)
            .env("KEYGATE_KEY_ID", &key.key_id)
            .env("KEYGATE_SECRET", secret)
            .output()
            .unwrap()
    };
    let whoami = request(
        &["GET", &app.url("/v1/whoami?probe=1&x=a%20b")],
        &key.secret,
    );
    assert!(whoami.status.success());
    assert!(String::from_utf8_lossy(&whoami.stdout).contains(&key.key_id));

    let data = format!("@{}", body_file.display());
    let echo = request(
        &[
            "-v",
            "POST",
            &app.url("/v1/echo"),
            "--data",
            &data,
            "-H",
            "Content-Type: application/json",
        ],
        &key.secret,
    );
    assert!(
        echo.status.success(),
        "{}",
        String::from_utf8_lossy(&echo.stderr)
    );
    assert!(String::from_utf8_lossy(&echo.stdout).contains(r#"\"from\":\"file\""#));
    let verbose = String::from_utf8_lossy(&echo.stderr);
    assert!(
        verbose.contains("string to sign") && verbose.contains("KG1-HMAC-SHA256\npk_"),
        "{verbose}"
    );

    let refused = request(&["POST", &app.url("/v1/echo"), "--data", "x"], "sk_wrong");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stdout).contains("signature_mismatch"));
}

/// `keygate request` against keygate behind a TLS terminator, as deployed:
/// a test CA made with openssl, a Python https proxy (tests/tls/proxy.py).
/// The signature covers the path and query as sent, so it survives the
/// proxy; a certificate from an unknown CA is refused unless --cacert
/// names it.
#[test]
fn keygate_request_reaches_keygate_behind_https() {
    let app = spawn_app();
    let key = app.create_key();
    let dir = tempfile::tempdir().unwrap();
    make_test_ca(dir.path(), "ca");
    make_test_server_certificate(dir.path(), "ca");
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (ca, cert, cert_key) = (file("ca.pem"), file("server.pem"), file("server.key"));

    struct Proxy(std::process::Child);
    impl Drop for Proxy {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut proxy = Proxy(
        Command::new("python3")
            .arg(repo().join("tests/tls/proxy.py"))
            .args([&cert, &cert_key, &app.public.port().to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 is installed"),
    );
    let mut port = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(proxy.0.stdout.take().unwrap()),
        &mut port,
    )
    .unwrap();
    let url = format!("https://127.0.0.1:{}/v1/echo?q=a%20b", port.trim());

    let request = |extra: &[&str]| {
        Command::new(keygate_bin())
            .arg("request")
            .args(extra)
            .args(["POST", &url, "--data", r#"{"over":"tls"}"#])
            .env("KEYGATE_KEY_ID", &key.key_id)
            .env("KEYGATE_SECRET", &key.secret)
            .output()
            .unwrap()
    };
    let accepted = request(&["--cacert", &ca]);
    assert!(
        accepted.status.success(),
        "{}{}",
        String::from_utf8_lossy(&accepted.stdout),
        String::from_utf8_lossy(&accepted.stderr)
    );
    assert!(String::from_utf8_lossy(&accepted.stdout).contains(r#"\"over\":\"tls\""#));

    let untrusted = request(&[]);
    assert_eq!(untrusted.status.code(), Some(2));
    let message = String::from_utf8_lossy(&untrusted.stderr);
    assert!(message.contains("UnknownIssuer"), "{message}");

    let not_a_certificate = request(&["--cacert", &cert_key]);
    assert_eq!(not_a_certificate.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&not_a_certificate.stderr).contains("no PEM certificate"));
}
