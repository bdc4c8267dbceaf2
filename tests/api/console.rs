//! The admin console (CONTRACT.md section 9): its security headers and
//! where it is served, over HTTP here; and the page itself driven in a real
//! headless Chromium by `tests/console/console.test.mjs` (playwright-core,
//! installed by scripts/test), which saves a screenshot of each screen to
//! `target/console-screenshots/`.

use std::path::Path;
use std::process::Command;

use crate::helpers::*;

#[test]
fn the_console_is_served_by_the_admin_listener_only_with_strict_headers() {
    let app = spawn_app();
    for path in [
        "/",
        "/console/console.js",
        "/console/console.css",
        "/console/favicon.svg",
    ] {
        let response = ureq::get(&app.admin_url(path)).call().unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let csp = response.header("content-security-policy").unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(response.header("x-frame-options"), Some("DENY"));
        assert_eq!(response.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
    }
    let page = ureq::get(&app.admin_url("/"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(!page.contains("<script>"), "no inline script");
    for handler in ["onload", "onclick", "onerror", "onsubmit", "javascript:"] {
        assert!(!page.contains(handler), "no inline handler: {handler}");
    }

    // An answer that carries a secret is never stored by the browser.
    let key = app.admin(
        "POST",
        "/admin/apps",
        Some(serde_json::json!({ "name": "Cache check" })),
    );
    let created = ureq::post(&app.admin_url(&format!(
        "/admin/apps/{}/keys",
        key.body["app_id"].as_str().unwrap()
    )))
    .set("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
    .send_string("{}")
    .unwrap();
    assert_eq!(created.header("cache-control"), Some("no-store"));

    // The public listener never serves it.
    for path in ["/", "/console/console.js"] {
        let answer = app.send("GET", path, b"", None);
        assert_eq!(answer.status, 404, "{path}");
        assert_eq!(answer.code(), "not_found");
    }
}

#[test]
fn the_console_in_a_real_browser() {
    let app = spawn_app();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        repo.join("tests/console/node_modules/playwright-core")
            .exists(),
        "playwright-core is not installed: run scripts/test (or npm ci --prefix tests/console)"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "Chromium is not installed: run scripts/test (or apt-get install chromium)"
    );
    let output = Command::new("node")
        .arg(repo.join("tests/console/console.test.mjs"))
        .env("KEYGATE_ADMIN_URL", format!("http://{}", app.admin))
        .env("KEYGATE_PUBLIC_URL", format!("http://{}", app.public))
        .env("KEYGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SCREENSHOTS", repo.join("target/console-screenshots"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("console: all steps passed"),
        "the console test failed:\n{stdout}\n{stderr}"
    );
}
