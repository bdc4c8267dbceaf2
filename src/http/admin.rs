//! The admin API (CONTRACT.md section 6), on its own listener. Every call
//! takes an [`AdminCaller`], which checks the bearer token in constant time
//! before the handler runs. SQLite work runs on actix's blocking pool so a
//! slow disk never stalls the event loop.

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::web::{self, Bytes};
use actix_web::{FromRequest, HttpRequest, HttpResponse};
use futures_util::future::{ready, LocalBoxFuture, Ready};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use super::{body, method_not_allowed, not_found, AdminState};
use crate::domain::{AppId, AppName, ExpiresAt, GracePeriod, KeyId, KeyName};
use crate::error::Error;
use crate::policy::{AccessPolicy, Holder};
use crate::store::Store;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/admin/apps")
            .route(web::post().to(create_app))
            .route(web::get().to(list_apps))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/admin/apps/{app_id}/keys")
            .route(web::post().to(create_key))
            .route(web::get().to(list_keys))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/admin/apps/{app_id}/policy")
            .route(web::get().to(get_app_policy))
            .route(web::put().to(put_app_policy))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/admin/keys/{key_id}")
            .route(web::get().to(get_key))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/admin/keys/{key_id}/policy")
            .route(web::get().to(get_key_policy))
            .route(web::put().to(put_key_policy))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/admin/keys/{key_id}/rotate")
            .route(web::post().to(rotate_key))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/admin/keys/{key_id}/revoke")
            .route(web::post().to(revoke_key))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/admin/audit")
            .route(web::get().to(audit))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/admin/metrics")
            .route(web::get().to(metrics))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/admin/traffic")
            .route(web::get().to(traffic))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/admin/openapi.json")
            .route(web::get().to(openapi))
            .default_service(web::to(method_not_allowed)),
    )
    .default_service(web::to(not_found));
}

/// Proof that the request carried the admin token; names the caller for the
/// audit log (the token is shared, so the peer address is the best "who").
pub struct AdminCaller {
    actor: String,
}

impl FromRequest for AdminCaller {
    type Error = Error;
    type Future = Ready<Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

fn authenticate(req: &HttpRequest) -> Result<AdminCaller, Error> {
    let state = req
        .app_data::<web::Data<AdminState>>()
        .expect("AdminState is registered on the admin app");
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(Error::AdminTokenMissing)?;
    // The scheme name is case-insensitive (RFC 9110 section 11.1): some
    // clients send `bearer`.
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| v.trim_start().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("Bearer"))
        .map(|(_, token)| token)
        .ok_or(Error::AdminTokenInvalid)?;
    if !state.token.matches(presented.trim()) {
        tracing::warn!(peer = ?req.peer_addr(), "admin call with a wrong token");
        return Err(Error::AdminTokenInvalid);
    }
    let peer = req
        .peer_addr()
        .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
    Ok(AdminCaller {
        actor: format!("admin-api@{peer}"),
    })
}

/// Admin request bodies are a few small JSON fields.
pub(crate) const ADMIN_BODY_LIMIT: usize = 64 * 1024;

/// An admin request's body, read up to [`ADMIN_BODY_LIMIT`] by the same
/// reader as the public listener's, so an oversized body gets the
/// contract's JSON 413 (`body_too_large`), not actix's plain text.
/// Handlers take it after [`AdminCaller`], so the token is checked before
/// any body is read.
struct AdminBody(Bytes);

impl FromRequest for AdminBody {
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self, Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let payload = payload.take();
        Box::pin(async move {
            let timeout = req
                .app_data::<web::Data<AdminState>>()
                .expect("AdminState is registered on the admin app")
                .body_timeout;
            body::read_limited(&req, payload, ADMIN_BODY_LIMIT, timeout, None, |_| {})
                .await
                .map(AdminBody)
        })
    }
}

/// Parses a JSON body; an empty body means "all defaults" where the call
/// has only optional fields.
fn json_body<T: DeserializeOwned + Default>(AdminBody(body): &AdminBody) -> Result<T, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| Error::InvalidJson(e.to_string()))
}

/// Every admin request body as its handler reads it (JSON, then the
/// RFC 3339 time where there is one), for the fuzzer
/// (`fuzz/fuzz_targets/admin_json.rs`): any bytes get an answer, never a
/// panic.
#[doc(hidden)]
pub fn parse_each_admin_body(body: &[u8]) {
    let body = AdminBody(Bytes::copy_from_slice(body));
    let _ = json_body::<CreateApp>(&body);
    if let Ok(CreateKey {
        expires_at: Some(at),
        ..
    }) = json_body::<CreateKey>(&body)
    {
        let _ = ExpiresAt::parse(&at, 0);
    }
    let _ = json_body::<RotateKey>(&body);
    let _ = policy_body(&body, Holder::App);
    let _ = policy_body(&body, Holder::Key);
}

/// A `PUT .../policy` body: the whole policy, validated. An empty body is
/// not "no policy" (that is `{}`): a client that lost its body must not
/// lift every restriction by accident.
fn policy_body(AdminBody(body): &AdminBody, holder: Holder) -> Result<AccessPolicy, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::InvalidRequest(
            "the body must be the whole policy, e.g. {\"rules\": [{\"methods\": [\"GET\"], \"path\": \"/v1/*\"}]}; {} removes every restriction".into(),
        ));
    }
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        return Err(Error::InvalidJson(e.to_string()));
    }
    AccessPolicy::parse(body, holder).map_err(Error::InvalidRequest)
}

/// An application id from the path: one that cannot exist is not found,
/// like one that does not.
fn app_id(path: web::Path<String>) -> Result<AppId, Error> {
    AppId::parse(&path).map_err(|_| Error::AppNotFound(path.into_inner()))
}

/// A key id from the path, the same way.
fn key_id(path: web::Path<String>) -> Result<KeyId, Error> {
    KeyId::parse(&path).map_err(|_| Error::KeyNotFound(path.into_inner()))
}

/// Runs a store call on the blocking pool.
async fn blocking<T: Send + 'static>(
    state: &web::Data<AdminState>,
    call: impl FnOnce(&Store) -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let store = state.store.clone();
    web::block(move || call(&store))
        .await
        .map_err(|e| Error::Unavailable(format!("blocking pool: {e}")))?
}

/// `POST /admin/apps`'s body.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateApp {
    /// 1 to 200 characters, not only spaces, no control characters.
    #[schema(
        required = true,
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: Option<String>,
}

#[utoipa::path(
    post,
    path = "/admin/apps",
    tag = "admin",
    request_body = CreateApp,
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "The application", body = crate::store::App),
        (status = 400, description = "Not JSON for this call (invalid_json) or a value its rules refuse (invalid_request)", body = crate::http::openapi::ErrorBody),
        (status = 401, description = "No admin token (missing_authorization) or a wrong one (invalid_admin_token)", body = crate::http::openapi::ErrorBody),
        (status = 413, description = "The body is over 64 KiB (body_too_large)", body = crate::http::openapi::ErrorBody),
        (status = 503, description = "The database could not answer (unavailable)", body = crate::http::openapi::ErrorBody),
    )
)]

async fn create_app(
    caller: AdminCaller,
    state: web::Data<AdminState>,
    body: AdminBody,
) -> Result<HttpResponse, Error> {
    let request: CreateApp = json_body(&body)?;
    let name = request
        .name
        .ok_or_else(|| Error::InvalidRequest("body must be {\"name\": \"...\"}".into()))?;
    let name = AppName::parse(&name)?;
    let app = blocking(&state, move |store| {
        Ok(store.catalog().create_app(&name, &caller.actor)?)
    })
    .await?;
    Ok(HttpResponse::Created().json(app))
}

#[utoipa::path(
    get,
    path = "/admin/apps",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every application", body = inline(AppList)),
        (status = 401, description = "No admin token (missing_authorization) or a wrong one (invalid_admin_token)", body = crate::http::openapi::ErrorBody),
        (status = 503, description = "The database could not answer (unavailable)", body = crate::http::openapi::ErrorBody),
    )
)]
async fn list_apps(_: AdminCaller, state: web::Data<AdminState>) -> Result<HttpResponse, Error> {
    let apps = blocking(&state, |store| Ok(store.catalog().list_apps()?)).await?;
    Ok(HttpResponse::Ok().json(json!({ "apps": apps })))
}

/// `POST /admin/apps/{app_id}/keys`'s body (optional: `{}` or empty).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    /// RFC 3339, in the future.
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    /// A label for humans ("ERP sync, prod"): 1 to 200 characters, not
    /// only spaces, no control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: Option<String>,
}

#[utoipa::path(
    post,
    path = "/admin/apps/{app_id}/keys",
    tag = "admin",
    request_body(content = Option<CreateKey>),
    params(("app_id" = String, Path, description = "The application's id", pattern = r"^app_[A-Za-z0-9]{20,124}$")),
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "The key and its secret, shown this once", body = crate::store::NewKey),
        (status = 400, description = "Not JSON for this call (invalid_json) or a value its rules refuse (invalid_request)", body = crate::http::openapi::ErrorBody),
        (status = 401, description = "No admin token (missing_authorization) or a wrong one (invalid_admin_token)", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such application (app_not_found)", body = crate::http::openapi::ErrorBody),
        (status = 413, description = "The body is over 64 KiB (body_too_large)", body = crate::http::openapi::ErrorBody),
        (status = 503, description = "The database could not answer (unavailable)", body = crate::http::openapi::ErrorBody),
    )
)]
async fn create_key(
    caller: AdminCaller,
    state: web::Data<AdminState>,
    app_id: web::Path<String>,
    body: AdminBody,
) -> Result<HttpResponse, Error> {
    let request: CreateKey = json_body(&body)?;
    let now = state.store.clock().now();
    let expires_at = request
        .expires_at
        .as_deref()
        .map(|at| ExpiresAt::parse(at, now))
        .transpose()?;
    let name = request.name.as_deref().map(KeyName::parse).transpose()?;
    let app_id = self::app_id(app_id)?;
    let key = blocking(&state, move |store| {
        let key = store
            .catalog()
            .create_key(&app_id, expires_at, name.as_ref(), &caller.actor)?;
        store.key_states_changed();
        Ok(key)
    })
    .await?;
    Ok(HttpResponse::Created().json(key))
}

#[utoipa::path(
    get,
    path = "/admin/apps/{app_id}/keys",
    tag = "admin",
    params(("app_id" = String, Path, description = "The application's id", pattern = r"^app_[A-Za-z0-9]{20,124}$")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The application's keys, never their secrets", body = inline(KeyList)),
        (status = 401, description = "No admin token (missing_authorization) or a wrong one (invalid_admin_token)", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such application (app_not_found)", body = crate::http::openapi::ErrorBody),
        (status = 503, description = "The database could not answer (unavailable)", body = crate::http::openapi::ErrorBody),
    )
)]
async fn list_keys(
    _: AdminCaller,
    state: web::Data<AdminState>,
    app_id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let app_id = self::app_id(app_id)?;
    let keys = blocking(&state, move |store| {
        Ok(store.catalog().list_keys(&app_id)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "keys": keys })))
}

#[utoipa::path(
    get,
    path = "/admin/keys/{key_id}",
    tag = "admin",
    params(("key_id" = String, Path, description = "The key's id", pattern = r"^pk_[A-Za-z0-9]{24,125}$")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The key", body = crate::store::KeyInfo),
        (status = 401, description = "No admin token (missing_authorization) or a wrong one (invalid_admin_token)", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such key (key_not_found)", body = crate::http::openapi::ErrorBody),
        (status = 503, description = "The database could not answer (unavailable)", body = crate::http::openapi::ErrorBody),
    )
)]
async fn get_key(
    _: AdminCaller,
    state: web::Data<AdminState>,
    key_id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let key_id = self::key_id(key_id)?;
    let key = blocking(&state, move |store| {
        Ok(store.catalog().key_info(&key_id)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(key))
}

/// `POST /admin/keys/{key_id}/rotate`'s body (optional).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RotateKey {
    /// How long the old key keeps working: 0 to a year (default a day).
    #[schema(minimum = 0, maximum = 31_536_000)]
    grace_seconds: Option<i64>,
}

#[utoipa::path(
    post,
    path = "/admin/keys/{key_id}/rotate",
    tag = "admin",
    request_body(content = Option<RotateKey>),
    params(("key_id" = String, Path, description = "The key's id", pattern = r"^pk_[A-Za-z0-9]{24,125}$")),
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "The new key and its secret; the old one expires after the grace", body = crate::store::NewKey),
        (status = 400, description = "Not JSON (invalid_json), a grace out of range or a revoked key (invalid_request)", body = crate::http::openapi::ErrorBody),
        (status = 401, description = "No admin token (missing_authorization) or a wrong one (invalid_admin_token)", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such key (key_not_found)", body = crate::http::openapi::ErrorBody),
        (status = 413, description = "The body is over 64 KiB (body_too_large)", body = crate::http::openapi::ErrorBody),
        (status = 503, description = "The database could not answer (unavailable)", body = crate::http::openapi::ErrorBody),
    )
)]
async fn rotate_key(
    caller: AdminCaller,
    state: web::Data<AdminState>,
    key_id: web::Path<String>,
    body: AdminBody,
) -> Result<HttpResponse, Error> {
    let request: RotateKey = json_body(&body)?;
    let grace = request
        .grace_seconds
        .map_or(Ok(GracePeriod::DEFAULT), GracePeriod::parse)?;
    let key_id = self::key_id(key_id)?;
    let key = blocking(&state, move |store| {
        let key = store.catalog().rotate_key(&key_id, grace, &caller.actor)?;
        store.key_states_changed();
        Ok(key)
    })
    .await?;
    Ok(HttpResponse::Created().json(key))
}

#[utoipa::path(
    post,
    path = "/admin/keys/{key_id}/revoke",
    tag = "admin",
    params(("key_id" = String, Path, description = "The key's id", pattern = r"^pk_[A-Za-z0-9]{24,125}$")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The key, revoked", body = crate::store::KeyInfo),
        (status = 401, description = "No admin token (missing_authorization) or a wrong one (invalid_admin_token)", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such key (key_not_found)", body = crate::http::openapi::ErrorBody),
        (status = 503, description = "The database could not answer (unavailable)", body = crate::http::openapi::ErrorBody),
    )
)]
async fn revoke_key(
    caller: AdminCaller,
    state: web::Data<AdminState>,
    key_id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let key_id = self::key_id(key_id)?;
    let key = blocking(&state, move |store| {
        let key = store.catalog().revoke_key(&key_id, &caller.actor)?;
        store.key_states_changed();
        Ok(key)
    })
    .await?;
    Ok(HttpResponse::Ok().json(key))
}

#[utoipa::path(
    get,
    path = "/admin/apps/{app_id}/policy",
    tag = "admin",
    params(("app_id" = String, Path, description = "The application's id", pattern = r"^app_[A-Za-z0-9]{20,124}$")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The application's policy ({} when none)", body = crate::policy::PolicyDocument),
        (status = 401, description = "No admin token (missing_authorization) or a wrong one (invalid_admin_token)", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such application (app_not_found)", body = crate::http::openapi::ErrorBody),
        (status = 503, description = "The database could not answer (unavailable)", body = crate::http::openapi::ErrorBody),
    )
)]
async fn get_app_policy(
    _: AdminCaller,
    state: web::Data<AdminState>,
    app_id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let app_id = self::app_id(app_id)?;
    let policy = blocking(&state, move |store| {
        Ok(store.catalog().app_policy(&app_id)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(policy))
}

#[utoipa::path(
    put,
    path = "/admin/apps/{app_id}/policy",
    tag = "admin",
    request_body = crate::policy::PolicyDocument,
    params(("app_id" = String, Path, description = "The application's id", pattern = r"^app_[A-Za-z0-9]{20,124}$")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The policy as stored", body = crate::policy::PolicyDocument),
        (status = 400, description = "Not JSON for this call (invalid_json) or a value its rules refuse (invalid_request)", body = crate::http::openapi::ErrorBody),
        (status = 401, description = "No admin token (missing_authorization) or a wrong one (invalid_admin_token)", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such application (app_not_found)", body = crate::http::openapi::ErrorBody),
        (status = 413, description = "The body is over 64 KiB (body_too_large)", body = crate::http::openapi::ErrorBody),
        (status = 503, description = "The database could not answer (unavailable)", body = crate::http::openapi::ErrorBody),
    )
)]
async fn put_app_policy(
    caller: AdminCaller,
    state: web::Data<AdminState>,
    app_id: web::Path<String>,
    body: AdminBody,
) -> Result<HttpResponse, Error> {
    let policy = policy_body(&body, Holder::App)?;
    let app_id = self::app_id(app_id)?;
    let stored = blocking(&state, move |store| {
        let stored = store
            .catalog()
            .set_app_policy(&app_id, &policy, &caller.actor)?;
        store.key_states_changed();
        Ok(stored)
    })
    .await?;
    Ok(HttpResponse::Ok().json(stored))
}

#[utoipa::path(
    get,
    path = "/admin/keys/{key_id}/policy",
    tag = "admin",
    params(("key_id" = String, Path, description = "The key's id", pattern = r"^pk_[A-Za-z0-9]{24,125}$")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The key's own policy ({} when none)", body = crate::policy::PolicyDocument),
        (status = 401, description = "No admin token (missing_authorization) or a wrong one (invalid_admin_token)", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such key (key_not_found)", body = crate::http::openapi::ErrorBody),
        (status = 503, description = "The database could not answer (unavailable)", body = crate::http::openapi::ErrorBody),
    )
)]
async fn get_key_policy(
    _: AdminCaller,
    state: web::Data<AdminState>,
    key_id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let key_id = self::key_id(key_id)?;
    let policy = blocking(&state, move |store| {
        Ok(store.catalog().key_policy(&key_id)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(policy))
}

#[utoipa::path(
    put,
    path = "/admin/keys/{key_id}/policy",
    tag = "admin",
    request_body = crate::policy::PolicyDocument,
    params(("key_id" = String, Path, description = "The key's id", pattern = r"^pk_[A-Za-z0-9]{24,125}$")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The policy as stored", body = crate::policy::PolicyDocument),
        (status = 400, description = "Not JSON for this call (invalid_json) or a value its rules refuse (invalid_request)", body = crate::http::openapi::ErrorBody),
        (status = 401, description = "No admin token (missing_authorization) or a wrong one (invalid_admin_token)", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such key (key_not_found)", body = crate::http::openapi::ErrorBody),
        (status = 413, description = "The body is over 64 KiB (body_too_large)", body = crate::http::openapi::ErrorBody),
        (status = 503, description = "The database could not answer (unavailable)", body = crate::http::openapi::ErrorBody),
    )
)]
async fn put_key_policy(
    caller: AdminCaller,
    state: web::Data<AdminState>,
    key_id: web::Path<String>,
    body: AdminBody,
) -> Result<HttpResponse, Error> {
    let policy = policy_body(&body, Holder::Key)?;
    let key_id = self::key_id(key_id)?;
    let stored = blocking(&state, move |store| {
        let stored = store
            .catalog()
            .set_key_policy(&key_id, &policy, &caller.actor)?;
        store.key_states_changed();
        Ok(stored)
    })
    .await?;
    Ok(HttpResponse::Ok().json(stored))
}

#[derive(Deserialize, utoipa::IntoParams)]
struct AuditQuery {
    /// How many events, newest first: 1 to 1000 (default 100).
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/admin/audit",
    tag = "admin",
    params(AuditQuery),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Audit events, newest first", body = inline(AuditList)),
        (status = 400, description = "A limit that is not a number (invalid_request)", body = crate::http::openapi::ErrorBody),
        (status = 401, description = "No admin token (missing_authorization) or a wrong one (invalid_admin_token)", body = crate::http::openapi::ErrorBody),
        (status = 503, description = "The database could not answer (unavailable)", body = crate::http::openapi::ErrorBody),
    )
)]

async fn audit(
    _: AdminCaller,
    state: web::Data<AdminState>,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, Error> {
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let events = blocking(&state, move |store| {
        Ok(store.catalog().audit_events(limit)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "events": events })))
}

#[utoipa::path(
    get,
    path = "/admin/metrics",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "OpenMetrics text for Prometheus", body = String, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
        (status = 401, description = "No admin token (missing_authorization) or a wrong one (invalid_admin_token)", body = crate::http::openapi::ErrorBody),
    )
)]
/// Behind the admin token like every admin call: the counts reveal traffic
/// volumes and which partners fail how, which is nobody else's business.
/// Prometheus sends the token with `authorization: {credentials_file: ...}`.
async fn metrics(_: AdminCaller, state: web::Data<AdminState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(state.metrics.render())
}

#[utoipa::path(
    get,
    path = "/admin/traffic",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Signed requests by result in 10 s intervals over the last 15 minutes", body = Object),
        (status = 401, description = "No admin token (missing_authorization) or a wrong one (invalid_admin_token)", body = crate::http::openapi::ErrorBody),
    )
)]
/// Signed requests by result over the last minutes, in 10 s intervals, as
/// JSON: what the console's traffic view draws.
async fn traffic(_: AdminCaller, state: web::Data<AdminState>) -> HttpResponse {
    HttpResponse::Ok().json(state.metrics.traffic())
}

#[utoipa::path(
    get,
    path = "/admin/openapi.json",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "This document", body = Object),
        (status = 401, description = "No admin token (missing_authorization) or a wrong one (invalid_admin_token)", body = crate::http::openapi::ErrorBody),
    )
)]
pub(super) async fn openapi(_: AdminCaller) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(super::openapi::document_json())
}

/// The list answers' shapes, for the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct AppList {
    apps: Vec<crate::store::App>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct KeyList {
    keys: Vec<crate::store::KeyInfo>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct AuditList {
    events: Vec<crate::store::AuditEvent>,
}
