//! The admin console (CONTRACT.md section 9): one page, its script and its
//! style sheet, compiled into the binary and served by the admin listener
//! only. The page signs in with the admin token and does everything
//! through the admin API, so it can do nothing the API cannot.
//!
//! No build step: the files in `console/` are what the browser gets.

use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, HttpResponse};

const PAGE: &str = include_str!("../../console/index.html");
const SCRIPT: &str = include_str!("../../console/console.js");
const STYLE: &str = include_str!("../../console/console.css");
const ICON: &str = include_str!("../../console/favicon.svg");

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/",
        web::get().to(|| asset(PAGE, "text/html; charset=utf-8")),
    )
    .route(
        "/console/console.js",
        web::get().to(|| asset(SCRIPT, "text/javascript; charset=utf-8")),
    )
    .route(
        "/console/console.css",
        web::get().to(|| asset(STYLE, "text/css; charset=utf-8")),
    )
    .route(
        "/console/favicon.svg",
        web::get().to(|| asset(ICON, "image/svg+xml")),
    );
}

async fn asset(body: &'static str, content_type: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static(content_type)))
        .body(body)
}

/// On every answer of the admin listener, the console's and the API's:
/// - scripts and styles only from keygate itself: no inline script, no
///   eval, so a value that slipped into the page as markup could not run;
/// - never framed (clickjacking the revoke button);
/// - no Referer to anywhere;
/// - nothing stored by the browser or a proxy: answers carry secrets
///   (a new key's) and partner data.
pub fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::REFERRER_POLICY, "no-referrer"))
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::CACHE_CONTROL, "no-store"))
}
