//! Gateway mode (CONTRACT.md section 5): with an upstream configured, every
//! request that is not one of keygate's own routes is verified like any
//! signed request, stripped of its credentials and of any `X-Keygate-*`
//! header the caller sent, told who the caller is through
//! `X-Keygate-App-Id` / `X-Keygate-Key-Id`, and forwarded; the upstream's
//! answer is streamed back as it arrives.

use std::time::Duration;

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};

use super::SignedRequest;
use crate::error::Error;

/// How long the upstream may take to start answering.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// The upstream base URL and a client for it (one per worker thread: awc
/// clients are not shared across threads).
pub struct Upstream {
    pub base: String,
    pub client: awc::Client,
}

impl Upstream {
    pub fn new(base: &str) -> Self {
        Upstream {
            base: base.trim_end_matches('/').to_owned(),
            client: awc::Client::builder()
                .timeout(UPSTREAM_TIMEOUT)
                .disable_redirects()
                .finish(),
        }
    }
}

/// Which headers of one message belong to its connection alone and are
/// never forwarded (RFC 9110 section 7.6.1): the fixed hop-by-hop set,
/// `host` (the upstream's own), and whatever that message's `Connection`
/// field names, which the upstream would otherwise receive though they
/// were meant only for the hop to keygate (or from the upstream).
struct HopByHop {
    named_in_connection: Vec<String>,
}

impl HopByHop {
    fn of(headers: &header::HeaderMap) -> Self {
        let named_in_connection = headers
            .get_all(header::CONNECTION)
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(|name| name.trim().to_ascii_lowercase())
            .filter(|name| !name.is_empty())
            .collect();
        HopByHop {
            named_in_connection,
        }
    }

    fn contains(&self, name: &HeaderName) -> bool {
        matches!(
            name.as_str(),
            "connection"
                | "keep-alive"
                | "proxy-authenticate"
                | "proxy-authorization"
                | "proxy-connection"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "upgrade"
                | "host"
                | "content-length"
        ) || self.named_in_connection.iter().any(|n| n == name.as_str())
    }
}

/// Checks a configured upstream at start-up, so a typo fails loudly.
pub fn validate_upstream(base: &str) -> Result<(), String> {
    let url = url::Url::parse(base)
        .map_err(|e| format!("KEYGATE_UPSTREAM {base:?} is not a URL: {e}"))?;
    if url.scheme() != "http" {
        return Err(format!(
            "KEYGATE_UPSTREAM {base:?}: only http:// upstreams are supported (keygate runs next to its upstream)"
        ));
    }
    if url.query().is_some() {
        return Err(format!("KEYGATE_UPSTREAM {base:?} must not have a query"));
    }
    Ok(())
}

pub async fn forward(
    req: HttpRequest,
    signed: SignedRequest,
    upstream: web::Data<Upstream>,
) -> Result<HttpResponse, Error> {
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let url = format!("{}{}", upstream.base, target);
    let mut outgoing = upstream.client.request(req.method().clone(), url);
    let hop_by_hop = HopByHop::of(req.headers());
    for (name, value) in req.headers() {
        if hop_by_hop.contains(name)
            || name == header::AUTHORIZATION
            || name.as_str().starts_with("x-keygate-")
        {
            continue;
        }
        outgoing = outgoing.append_header((name.clone(), value.clone()));
    }
    let app_id = HeaderValue::from_str(&signed.key.app_id)
        .map_err(|_| Error::Unavailable("app id".into()))?;
    let key_id = HeaderValue::from_str(&signed.key.key_id)
        .map_err(|_| Error::Unavailable("key id".into()))?;
    outgoing = outgoing
        .insert_header(("x-keygate-app-id", app_id))
        .insert_header(("x-keygate-key-id", key_id));

    let allowance = signed.allowance;
    let response = outgoing.send_body(signed.body).await.map_err(|e| {
        tracing::warn!(error = %e, "upstream request failed");
        Error::UpstreamUnavailable(e.to_string())
    })?;
    let mut answer = HttpResponse::build(response.status());
    // keygate's RateLimit-* fields, unless the upstream limits too and
    // sent its own: a client must not be told of the looser one.
    if !response.headers().contains_key("ratelimit-limit") {
        for field in allowance.iter().flat_map(crate::policy::Allowance::fields) {
            answer.insert_header(field);
        }
    }
    let hop_by_hop = HopByHop::of(response.headers());
    for (name, value) in response.headers() {
        if !hop_by_hop.contains(name) {
            answer.append_header((name.clone(), value.clone()));
        }
    }
    Ok(answer.streaming(response))
}
