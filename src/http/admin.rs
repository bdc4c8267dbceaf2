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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateApp {
    name: Option<String>,
}

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

async fn list_apps(_: AdminCaller, state: web::Data<AdminState>) -> Result<HttpResponse, Error> {
    let apps = blocking(&state, |store| Ok(store.catalog().list_apps()?)).await?;
    Ok(HttpResponse::Ok().json(json!({ "apps": apps })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    expires_at: Option<String>,
    /// A label for humans ("ERP sync, prod").
    name: Option<String>,
}

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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateKey {
    grace_seconds: Option<i64>,
}

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

#[derive(Deserialize)]
struct AuditQuery {
    limit: Option<u32>,
}

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

/// Behind the admin token like every admin call: the counts reveal traffic
/// volumes and which partners fail how, which is nobody else's business.
/// Prometheus sends the token with `authorization: {credentials_file: ...}`.
async fn metrics(_: AdminCaller, state: web::Data<AdminState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(state.metrics.render())
}

/// Signed requests by result over the last minutes, in 10 s intervals, as
/// JSON: what the console's traffic view draws.
async fn traffic(_: AdminCaller, state: web::Data<AdminState>) -> HttpResponse {
    HttpResponse::Ok().json(state.metrics.traffic())
}
