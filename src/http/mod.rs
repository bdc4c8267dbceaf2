//! HTTP at the edge: two actix-web servers on two addresses. The public one
//! serves partners (signed requests); the admin one manages keys behind a
//! bearer token, and serves the admin console. They share one [`Store`]
//! and nothing else, so no admin route (and no console page) can ever be
//! reached on the public address.
//!
//! [`Application::build`] binds both listeners and returns before serving,
//! so the binary and the tests run exactly the same server.

mod admin;
mod body;
mod body_budget;
mod console;
mod gateway;
pub mod openapi;
mod public;
pub mod request_id;
mod signed_request;
mod target;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_http::body::MessageBody;
use actix_http::error::DispatchError;
use actix_http::{HttpMessage, HttpService, Request, Response};
use actix_service::{
    fn_service, map_config, IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt,
};
use actix_web::dev::{AppConfig, Server};
use actix_web::rt::net::TcpStream;
use actix_web::{web, App};

pub use admin::parse_each_admin_body;
pub use body_budget::BodyBudget;
pub use signed_request::{RefusalLog, SignedRequest};

use crate::config::Config;
use crate::credentials::AdminToken;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::store::{path_beside, Store};

/// What the public handlers share.
pub struct PublicState {
    pub store: Arc<Store>,
    pub skew_secs: u32,
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
    /// Body bytes all unverified requests together may hold.
    pub body_budget: BodyBudget,
    pub public_origin: Option<PublicOrigin>,
    pub metrics: Arc<Metrics>,
    pub refusal_log: RefusalLog,
    /// Peers whose `X-Forwarded-For` is believed (`--trusted-proxies`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// `KEYGATE_PUBLIC_ORIGIN` split into what RFC 9421's derived components
/// need: the scheme and the authority (default port omitted).
#[derive(Debug, Clone)]
pub struct PublicOrigin {
    pub scheme: String,
    pub authority: String,
}

impl PublicOrigin {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!("KEYGATE_PUBLIC_ORIGIN must look like https://api.example.com (got {text:?})")
        };
        let url = url::Url::parse(text).map_err(|_| bad())?;
        if !matches!(url.scheme(), "http" | "https") || url.path() != "/" || url.query().is_some() {
            return Err(bad());
        }
        let host = url.host_str().ok_or_else(bad)?;
        Ok(PublicOrigin {
            scheme: url.scheme().to_owned(),
            authority: match url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            },
        })
    }
}

/// What the admin handlers share.
pub struct AdminState {
    pub store: Arc<Store>,
    pub token: AdminToken,
    pub body_timeout: Duration,
    pub metrics: Arc<Metrics>,
}

pub struct Application {
    public_addr: SocketAddr,
    admin_addr: SocketAddr,
    public_server: Server,
    admin_server: Server,
    store: Arc<Store>,
}

impl Application {
    /// Opens the store, resolves the admin token, binds both listeners.
    /// Must be called inside an actix (tokio) runtime.
    pub fn build(config: Config) -> Result<Application, String> {
        let token = match &config.admin_token {
            Some(text) => AdminToken::new(text)?,
            None => {
                let Some(db_path) = config.store.database.sqlite_path() else {
                    return Err("with a PostgreSQL database, set KEYGATE_ADMIN_TOKEN (or \
                                --admin-token) to the admin token every instance shares: \
                                generate one with: openssl rand -base64 32"
                        .into());
                };
                let path = path_beside(db_path, "admin-token");
                let (token, created) = AdminToken::load_or_create(&path)?;
                if created {
                    tracing::info!(path = %path.display(), "generated an admin token (mode 0600); read it from this file");
                } else {
                    tracing::info!(path = %path.display(), "using the admin token from this file");
                }
                token
            }
        };
        let public_origin = config
            .public_origin
            .as_deref()
            .map(PublicOrigin::parse)
            .transpose()?;
        if let Some(upstream) = &config.upstream {
            gateway::validate_upstream(upstream)?;
        }
        let store = Store::open(&config.store, config.skew_secs, config.clock.clone())?;
        let metrics = Arc::new(Metrics::new(store.clone()));
        metrics.start_sampling();

        let public_listener = TcpListener::bind(&config.listen)
            .map_err(|e| format!("cannot listen on {} (public): {e}", config.listen))?;
        let admin_listener = TcpListener::bind(&config.admin_listen)
            .map_err(|e| format!("cannot listen on {} (admin): {e}", config.admin_listen))?;
        let public_addr = public_listener.local_addr().map_err(|e| e.to_string())?;
        let admin_addr = admin_listener.local_addr().map_err(|e| e.to_string())?;

        let public_state = web::Data::new(PublicState {
            store: store.clone(),
            skew_secs: config.skew_secs,
            max_body_bytes: config.max_body_bytes,
            body_timeout: config.body_timeout,
            // Never below one largest body, or such a body could never be read.
            body_budget: BodyBudget::new(config.body_budget_bytes.max(config.max_body_bytes)),
            public_origin,
            metrics: metrics.clone(),
            refusal_log: RefusalLog::new(),
            trusted_proxies: config.trusted_proxies.clone(),
        });
        let upstream = config.upstream.clone();
        let access_log = request_id::AccessLog(config.access_log);
        let public_workers = config.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        let public = serve(
            public_listener,
            public_workers,
            config.max_connections,
            config.max_body_bytes,
            move || {
                let app = App::new()
                    .wrap(actix_web::middleware::from_fn(request_id::middleware))
                    .app_data(access_log)
                    .app_data(public_state.clone());
                match &upstream {
                    Some(base) => app
                        .app_data(web::Data::new(
                            gateway::Upstream::new(base).expect("validated in Application::build"),
                        ))
                        .configure(public::own_routes)
                        .default_service(web::to(gateway::forward)),
                    None => app
                        .configure(public::own_routes)
                        .default_service(web::to(not_found)),
                }
            },
        )
        .map_err(|e| e.to_string())?;

        let admin_state = web::Data::new(AdminState {
            store: store.clone(),
            token,
            body_timeout: config.body_timeout,
            metrics,
        });
        let admin = serve(
            admin_listener,
            1,
            config.max_connections,
            admin::ADMIN_BODY_LIMIT,
            move || {
                App::new()
                    .wrap(actix_web::middleware::from_fn(request_id::middleware))
                    .app_data(access_log)
                    .wrap(console::security_headers())
                    .app_data(admin_state.clone())
                    .app_data(web::QueryConfig::default().error_handler(|err, _| {
                        Error::InvalidRequest(format!("bad query string: {err}")).into()
                    }))
                    .configure(console::routes)
                    .configure(admin::routes)
            },
        )
        .map_err(|e| e.to_string())?;

        if let Some(upstream) = &config.upstream {
            tracing::info!(upstream = %upstream, "gateway mode: verified requests are forwarded");
        }
        tracing::info!(public = %public_addr, admin = %admin_addr, "keygate listening");
        Ok(Application {
            public_addr,
            admin_addr,
            public_server: public,
            admin_server: admin,
            store,
        })
    }

    pub fn public_addr(&self) -> SocketAddr {
        self.public_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Serves until both servers stop (SIGINT/SIGTERM stop them
    /// gracefully), then writes what the store still holds only in memory.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let (public, admin) =
            futures_util::future::join(self.public_server, self.admin_server).await;
        self.store.shut_down().await;
        public.and(admin)
    }
}

/// Serves the app `factory` makes (one per worker) on `listener`, as
/// actix-web's `HttpServer::listen` does with its defaults (5 s for a
/// request head, keep-alive, 1 s to say goodbye), with the `Expect:
/// 100-continue` check below. `max_connections` is for the whole listener
/// (actix counts per worker).
///
/// The refusals actix-http writes itself, for a request it cannot parse
/// (400), a head too large (431) or too slow (408), are bare: an empty
/// body, no code. They were once rewritten into JSON by recognising their
/// bytes on the way out, which also rewrote an upstream's body that
/// contained those bytes (issue 28); no byte written is inspected now.
fn serve<F, I, S, B>(
    listener: TcpListener,
    workers: usize,
    max_connections: usize,
    body_limit: usize,
    factory: F,
) -> std::io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: std::fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let local_addr = listener.local_addr()?;
    Ok(actix_server::Server::build()
        .workers(workers)
        .max_concurrent_connections(max_connections.div_ceil(workers).max(1))
        .listen(format!("keygate-{local_addr}"), listener, move || {
            let app = factory()
                .into_factory()
                .map_err(|err| err.into().error_response());
            fn_service(|io: TcpStream| async move {
                let peer = io.peer_addr().ok();
                Ok::<_, DispatchError>((io, peer))
            })
            .and_then(
                HttpService::build()
                    .expect(fn_service(move |request: Request| async move {
                        refuse_oversized_before_continue(request, body_limit)
                    }))
                    .client_request_timeout(Duration::from_secs(5))
                    .client_disconnect_timeout(Duration::from_secs(1))
                    .local_addr(local_addr)
                    // keygate uses neither URL generation nor the
                    // connection's host: the default AppConfig will do.
                    .h1(map_config(app, |_| AppConfig::default())),
            )
        })?
        .run())
}

/// Runs for a request with `Expect: 100-continue`, before actix answers
/// `100 Continue`: a `Content-Length` over the limit gets its 413 now, so
/// the client never starts sending a body that would be refused.
fn refuse_oversized_before_continue(
    request: Request,
    limit: usize,
) -> Result<Request, actix_web::Error> {
    let announced = request
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match announced {
        Some(length) if length > limit as u64 => Err(Error::BodyTooLarge { limit }.into()),
        _ => Ok(request),
    }
}

/// The JSON 404 / 405 answers, so even a wrong URL gets a stable code.
async fn not_found() -> Result<actix_web::HttpResponse, Error> {
    Err(Error::NotFound)
}

async fn method_not_allowed() -> Result<actix_web::HttpResponse, Error> {
    Err(Error::MethodNotAllowed)
}
