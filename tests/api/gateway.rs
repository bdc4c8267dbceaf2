//! Gateway mode: verified requests are forwarded to a real upstream HTTP
//! server (an actix app on another loopback port), with the caller's
//! identity added and its credentials removed; refused ones never reach it.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::json;

use crate::helpers::*;

/// An upstream that answers with what it received, and counts requests.
pub fn spawn_upstream() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let counter = hits.clone();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            HttpServer::new(move || {
                let counter = counter.clone();
                App::new()
                    .route(
                        "/big",
                        web::get()
                            .to(|| async { HttpResponse::Ok().body(vec![b'z'; 5 * 1024 * 1024]) }),
                    )
                    .default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let headers: serde_json::Map<String, serde_json::Value> = req
                            .headers()
                            .iter()
                            .map(|(n, v)| (n.as_str().to_owned(), json!(v.to_str().unwrap_or("?"))))
                            .collect();
                        async move {
                            HttpResponse::Created()
                                .insert_header(("x-upstream", "yes"))
                                .json(json!({
                                    "method": req.method().as_str(),
                                    "target": req.uri().to_string(),
                                    "headers": headers,
                                    "body": String::from_utf8_lossy(&body),
                                }))
                        }
                    }))
            })
            .workers(1)
            .disable_signals()
            .listen(listener)
            .unwrap()
            .run()
            .await
        })
    });
    (format!("http://{addr}"), hits)
}

#[test]
fn verified_requests_are_forwarded_with_identity() {
    let (upstream, hits) = spawn_upstream();
    let app = spawn_app_with(|c| c.upstream = Some(upstream.clone()));
    let key = app.create_key();

    let target = "/api/orders/7?expand=items&q=a%20b";
    let signing = Signing::new(&key, "PUT", target, br#"{"qty":2}"#);
    let mut req = ureq::request("PUT", &app.url(target))
        .set("Authorization", &signing.authorization())
        .set("X-Keygate-App-Id", "app_spoofed")
        .set("X-Request-Id", "r-1");
    req = req.set("Content-Type", "application/json");
    let response = req.send_bytes(br#"{"qty":2}"#).unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.header("x-upstream"), Some("yes"));
    let seen: serde_json::Value = serde_json::from_str(&response.into_string().unwrap()).unwrap();
    assert_eq!(seen["method"], "PUT");
    assert_eq!(seen["target"], target);
    assert_eq!(seen["body"], r#"{"qty":2}"#);
    let headers = &seen["headers"];
    assert_eq!(headers["x-keygate-app-id"], key.app_id.as_str());
    assert_eq!(headers["x-keygate-key-id"], key.key_id.as_str());
    assert_eq!(headers["x-request-id"], "r-1");
    assert_eq!(headers["content-type"], "application/json");
    assert!(headers.get("authorization").is_none());
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // Refusals never reach the upstream.
    let unsigned = app.send("GET", "/api/orders/7", b"", None);
    assert_eq!(
        (unsigned.status, unsigned.code()),
        (401, "missing_authorization")
    );
    let replay = app.send(
        "PUT",
        target,
        br#"{"qty":2}"#,
        Some(&signing.authorization()),
    );
    assert_eq!(replay.code(), "nonce_reused");
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // keygate's own routes still answer locally.
    assert_eq!(app.signed(&key, "GET", "/v1/whoami", b"").status, 200);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

/// Headers the caller's `Connection` field names are that connection's
/// own (RFC 9110 section 7.6.1): never forwarded, unlike the others.
#[test]
fn headers_named_in_connection_are_not_forwarded() {
    let (upstream, hits) = spawn_upstream();
    let app = spawn_app_with(|c| c.upstream = Some(upstream.clone()));
    let key = app.create_key();
    let authorization = Signing::new(&key, "GET", "/api/hop", b"").authorization();
    let request = format!(
        "GET /api/hop HTTP/1.1\r\nHost: keygate\r\nAuthorization: {authorization}\r\n\
         Connection: close, X-Hop-Secret,x-hop-other\r\nX-Hop-Secret: s\r\nX-Hop-Other: o\r\n\
         X-End-To-End: kept\r\n\r\n"
    );
    let (status, body) = raw_request(app.public, request.as_bytes());
    assert_eq!(status, 201, "{body}");
    // The answer is streamed back chunked; the JSON is within.
    let json = &body[body.find('{').unwrap()..=body.rfind('}').unwrap()];
    let seen: serde_json::Value = serde_json::from_str(json).unwrap();
    let headers = seen["headers"].as_object().unwrap();
    assert_eq!(headers["x-end-to-end"], "kept");
    assert!(headers.get("x-hop-secret").is_none(), "{headers:?}");
    assert!(headers.get("x-hop-other").is_none(), "{headers:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[test]
fn large_upstream_answers_stream_back() {
    let (upstream, _) = spawn_upstream();
    let app = spawn_app_with(|c| c.upstream = Some(upstream));
    let key = app.create_key();
    let signing = Signing::new(&key, "GET", "/big", b"");
    let response = ureq::get(&app.url("/big"))
        .set("Authorization", &signing.authorization())
        .call()
        .unwrap();
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut response.into_reader(), &mut body).unwrap();
    assert_eq!(body.len(), 5 * 1024 * 1024);
}

#[test]
fn unreachable_upstream_is_a_clean_502() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let app = spawn_app_with(|c| c.upstream = Some(format!("http://{closed}")));
    let key = app.create_key();
    let answer = app.signed(&key, "GET", "/anything", b"");
    assert_eq!(
        (answer.status, answer.code()),
        (502, "upstream_unavailable")
    );
}
