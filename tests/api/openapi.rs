//! The OpenAPI document (CONTRACT.md section 6): generated from the code,
//! committed as `docs/openapi.json` and kept identical to what the code
//! generates, served behind the admin token, naming every refusal code;
//! and Schemathesis, a property-based API tester, run with it against a
//! real keygate on both backends.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::helpers::*;

fn committed_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json")
}

/// `KEYGATE_WRITE_OPENAPI=1 cargo test --test api openapi` rewrites the
/// committed copy after a change to the API.
#[test]
fn the_committed_document_is_the_one_the_code_generates() {
    let generated = keygate::http::openapi::document_json();
    if std::env::var_os("KEYGATE_WRITE_OPENAPI").is_some() {
        std::fs::write(committed_path(), &generated).unwrap();
    }
    let committed = std::fs::read_to_string(committed_path()).unwrap();
    assert!(
        committed == generated,
        "docs/openapi.json differs from what the code generates: run \
         KEYGATE_WRITE_OPENAPI=1 cargo test --test api openapi, and commit it"
    );
}

#[test]
fn the_document_is_served_and_covers_the_contract() {
    let app = spawn_app();
    let refused = app.admin_with_token("GET", "/admin/openapi.json", None, None);
    assert_eq!(
        (refused.status, refused.code()),
        (401, "missing_authorization")
    );
    let served = app.admin("GET", "/admin/openapi.json", None);
    assert_eq!(served.status, 200);
    assert_eq!(served.header("content-type"), Some("application/json"));
    let doc = &served.body;
    assert_eq!(doc["openapi"], "3.1.0");
    let committed: Value =
        serde_json::from_str(&std::fs::read_to_string(committed_path()).unwrap()).unwrap();
    assert_eq!(*doc, committed);
    // The public listener never serves it.
    let public = app.send("GET", "/admin/openapi.json", b"", None);
    assert_eq!(public.status, 404);

    // Every call of the contract's section 6, and the partner endpoints.
    for (path, methods) in [
        ("/admin/apps", &["post", "get"][..]),
        ("/admin/apps/{app_id}/keys", &["post", "get"]),
        ("/admin/keys/{key_id}/rotate", &["post"]),
        ("/admin/keys/{key_id}/revoke", &["post"]),
        ("/admin/audit", &["get"]),
        ("/admin/apps/{app_id}/policy", &["get", "put"]),
        ("/admin/keys/{key_id}/policy", &["get", "put"]),
        ("/admin/openapi.json", &["get"]),
        ("/healthz", &["get"]),
        ("/v1/whoami", &["get"]),
        ("/v1/echo", &["post"]),
    ] {
        for method in methods {
            assert!(doc["paths"][path][method].is_object(), "{method} {path}");
        }
    }
    // Every refusal code of the contract, in the one refusal schema.
    let codes: Vec<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for code in [
        "missing_authorization",
        "malformed_authorization",
        "unknown_key",
        "key_revoked",
        "key_expired",
        "timestamp_out_of_range",
        "nonce_reused",
        "signature_mismatch",
        "content_digest_mismatch",
        "body_too_large",
        "forbidden",
        "forbidden_source",
        "rate_limited",
        "unavailable",
        "ambiguous_path",
        "malformed_request",
        "invalid_admin_token",
        "invalid_json",
        "invalid_request",
        "app_not_found",
        "key_not_found",
    ] {
        assert!(codes.contains(&code), "{code} is not in the document");
    }
    // Each operation names the statuses it refuses with, and their body.
    let create_key = &doc["paths"]["/admin/apps/{app_id}/keys"]["post"]["responses"];
    for status in ["201", "400", "401", "404", "413", "503"] {
        assert!(create_key[status].is_object(), "POST .../keys: no {status}");
    }
    assert_eq!(
        create_key["404"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ErrorBody"
    );
    let whoami = &doc["paths"]["/v1/whoami"]["get"]["responses"];
    for status in ["200", "400", "401", "403", "413", "429", "503"] {
        assert!(whoami[status].is_object(), "GET /v1/whoami: no {status}");
    }
}

/// Schemathesis (PyPI) against the real binary: every admin operation,
/// with generated valid and invalid inputs and the admin token, checked
/// for server errors, undocumented statuses, content types and response
/// schemas. Bounded: a fixed number of examples per operation and a seed.
fn schemathesis_finds_nothing(backend: Backend) {
    let db = TestDb::new(backend);
    let server = Binary::serve_on(&db, &[]);
    let app = server.app();
    // Something to list, rotate and revoke besides what it creates.
    app.create_key();
    let out = Command::new("schemathesis")
        .arg("run")
        .arg(committed_path())
        .args(["--url", &format!("http://{}", app.admin)])
        .args(["-H", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", "25", "--seed", "7", "--include-tag", "admin"])
        .env("SCHEMATHESIS_HOOKS", "")
        .env("NO_COLOR", "1")
        .output()
        .expect("schemathesis is installed (scripts/test installs it from PyPI)");
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "Schemathesis found problems:\n{report}"
    );
    assert!(
        report.contains("Tested: 15"),
        "not every admin operation was tested:\n{report}"
    );
    assert!(!server.log.lock().unwrap().contains("panicked"));
}

crate::on_both_backends!(schemathesis_finds_nothing);
