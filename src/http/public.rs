//! Partner-facing endpoints (CONTRACT.md section 5).

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Serialize;
use serde_json::json;

use super::{method_not_allowed, SignedRequest};

/// keygate's own partner routes; what else the listener does (404, or
/// forwarding in gateway mode) is decided in `http::Application::build`.
pub fn own_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/healthz")
            .route(web::get().to(healthz))
            // Load balancers and uptime checkers often probe with HEAD;
            // actix sends the headers without the body.
            .route(web::head().to(healthz))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/whoami")
            .route(web::get().to(whoami))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/echo")
            .route(web::post().to(echo))
            .default_service(web::to(method_not_allowed)),
    );
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "public",
    responses(
        (status = 200, description = "{\"status\": \"ok\"}, unauthenticated", body = Object),
    )
)]
pub(super) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Serialized straight from the cached key: no intermediate JSON tree on
/// the path every signed request takes.
#[derive(Serialize, utoipa::ToSchema)]
struct WhoAmI<'a> {
    app_id: &'a str,
    app_name: &'a str,
    key_id: &'a str,
}

#[utoipa::path(
    get,
    path = "/v1/whoami",
    tag = "public",
    security(("kg1" = [])),
    responses(
        (status = 200, description = "Who the signature says you are", body = WhoAmI),
        crate::http::openapi::SignedRequestRefusals,
    )
)]
pub(super) async fn whoami(signed: SignedRequest) -> HttpResponse {
    let key = &signed.key;
    signed.respond(StatusCode::OK).json(WhoAmI {
        app_id: &key.app_id,
        app_name: &key.app_name,
        key_id: &key.key_id,
    })
}

/// Echoes the exact bytes that were signed; a body that is not UTF-8 comes
/// back base64-encoded so nothing is lost or replaced.
#[utoipa::path(
    post,
    path = "/v1/echo",
    tag = "public",
    request_body(content = String, description = "Any bytes, signed", content_type = "application/octet-stream"),
    security(("kg1" = [])),
    responses(
        (status = 200, description = "Your identity and the body: `body` when it is UTF-8, else `body_base64`", body = Echo),
        crate::http::openapi::SignedRequestRefusals,
    )
)]
pub(super) async fn echo(signed: SignedRequest) -> HttpResponse {
    let key = &signed.key;
    let body = match std::str::from_utf8(&signed.body) {
        Ok(text) => json!({ "app_id": key.app_id, "key_id": &*key.key_id, "body": text }),
        Err(_) => json!({
            "app_id": key.app_id,
            "key_id": &*key.key_id,
            "body_base64": STANDARD.encode(&signed.body),
        }),
    };
    signed.respond(StatusCode::OK).json(body)
}

/// `POST /v1/echo`'s answer, for the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct Echo {
    app_id: String,
    key_id: String,
    body: Option<String>,
    body_base64: Option<String>,
}
