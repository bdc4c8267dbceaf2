//! Gateway mode (CONTRACT.md section 5): with an upstream configured, every
//! request that is not one of keygate's own routes is verified like any
//! signed request and forwarded; the upstream's answer is streamed back.
//!
//! A request goes through named steps, each of which a proxy in front of
//! an arbitrary upstream must get right:
//! 1. [`Upstream::url_for`]: the URL is composed from the configured
//!    upstream's scheme, host and port, and its base path followed by the
//!    request's (already unambiguous) path: the base path is a boundary;
//! 2. [`forwarded_header`]: header hygiene. Hop-by-hop fields, the
//!    credentials, anything that claims to speak for keygate
//!    (`X-Keygate-*`, also spelled with `_`), method overrides and
//!    client-written forwarding fields stay behind;
//! 3. [`Forwarding::of`]: `X-Forwarded-For`, `-Proto` and `-Host` from
//!    what keygate saw (a trusted proxy's chain is extended, anyone else's
//!    replaced), and the caller's identity;
//! 4. [`answer_from`]: the answer streamed back with its status, headers
//!    and body as the upstream sent them: the body framed as it came
//!    (`Content-Length` stays), no field invented (a missing
//!    `Content-Type` stays missing), only keygate's `RateLimit-*` fields
//!    added.

use std::net::IpAddr;
use std::time::Duration;

use actix_web::body::{BodyStream, SizedStream};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use http_body_util::{BodyDataStream, Full};
use hyper::http as upstream_http;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::request_id::RequestId;
use super::{PublicState, SignedRequest};
use crate::error::Error;

/// How long the upstream may take to start answering.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an idle pooled connection to the upstream is kept.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The upstream, parsed once at start-up, and a client for it (one per
/// worker thread, so that each worker's connections and their tasks live
/// on that worker's runtime).
pub struct Upstream {
    scheme: String,
    /// `host:port` as configured (the port always explicit).
    authority: String,
    /// The configured path without its trailing `/`: empty, or `/api`.
    base_path: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Upstream {
    /// `base` must have passed [`validate_upstream`].
    pub fn new(base: &str) -> Result<Self, String> {
        let url = validate_upstream(base)?;
        let host = match url.host() {
            Some(url::Host::Ipv6(address)) => format!("[{address}]"),
            Some(host) => host.to_string(),
            None => return Err(format!("KEYGATE_UPSTREAM {base:?} has no host")),
        };
        let port = url.port_or_known_default().unwrap_or(80);
        Ok(Upstream {
            scheme: url.scheme().to_owned(),
            authority: format!("{host}:{port}"),
            base_path: url.path().trim_end_matches('/').to_owned(),
            // A client follows no redirects: the upstream's answer is the
            // partner's to read.
            client: Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(IDLE_CONNECTION_TIMEOUT)
                .build_http(),
        })
    }

    /// The URL a request is forwarded to. `target` is the path and query
    /// as the partner sent (and signed) them, already checked by
    /// `target::checked_target`: it starts with `/` and has no dot
    /// segment, so the result stays below the base path.
    pub fn url_for(&self, target: &str) -> Result<upstream_http::Uri, Error> {
        upstream_http::Uri::builder()
            .scheme(self.scheme.as_str())
            .authority(self.authority.as_str())
            .path_and_query(format!("{}{}", self.base_path, target))
            .build()
            // A checked target always builds; should the `http` crate
            // ever disagree, the request is refused, never sent elsewhere.
            .map_err(|_| Error::MalformedRequest("a target no upstream URL can be built from"))
    }
}

/// Checks a configured upstream at start-up, so a typo fails loudly.
pub fn validate_upstream(base: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(base)
        .map_err(|e| format!("KEYGATE_UPSTREAM {base:?} is not a URL: {e}"))?;
    if url.scheme() != "http" {
        return Err(format!(
            "KEYGATE_UPSTREAM {base:?}: only http:// upstreams are supported (keygate runs next to its upstream)"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "KEYGATE_UPSTREAM {base:?} must not have a query or fragment"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "KEYGATE_UPSTREAM {base:?} must not carry credentials"
        ));
    }
    if url.host().is_none() {
        return Err(format!("KEYGATE_UPSTREAM {base:?} has no host"));
    }
    crate::canonical_path::check(url.path())
        .map_err(|why| format!("KEYGATE_UPSTREAM {base:?}: its path has {why}"))?;
    Ok(url)
}

/// Which headers of one message belong to its connection alone and are
/// never forwarded (RFC 9110 section 7.6.1): the fixed hop-by-hop set,
/// `host` (the upstream's own) and `content-length` (the framing is
/// rewritten by each hop), and whatever that message's `Connection` field
/// names.
struct HopByHop {
    named_in_connection: Vec<String>,
}

impl HopByHop {
    /// From the values of the message's `Connection` fields.
    fn of<'a>(connection: impl Iterator<Item = &'a [u8]>) -> Self {
        let named_in_connection = connection
            .filter_map(|value| std::str::from_utf8(value).ok())
            .flat_map(|value| value.split(','))
            .map(|name| name.trim().to_ascii_lowercase())
            .filter(|name| !name.is_empty())
            .collect();
        HopByHop {
            named_in_connection,
        }
    }

    /// `name` in lower case, as both HTTP crates keep names.
    fn contains(&self, name: &str) -> bool {
        matches!(
            name,
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
        ) || self.named_in_connection.iter().any(|n| n == name)
    }
}

/// Fields keygate sets itself, or that tell an upstream to read the
/// request as something other than what was signed and judged: a client's
/// own are never forwarded. Compared with `_` read as `-`, because CGI,
/// WSGI, Rack and PHP map `X_Keygate_App_Id` and `X-Keygate-App-Id` to
/// the same variable, and which one wins is theirs to decide.
const CONTROLLED_FIELDS: [&str; 14] = [
    // Method overrides: a rule allowing POST must not become a DELETE on
    // an upstream that honours them. Stripped rather than refused, so a
    // library that adds one by habit still works, with the method signed.
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    // Forwarding fields: keygate writes its own (see `Forwarding`).
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-real-ip",
    "forwarded",
    // Path overrides honoured by IIS URL Rewrite and Symfony: the path the
    // policy judged must be the one served.
    "x-original-url",
    "x-rewrite-url",
    // keygate sets the request id the answer carries.
    "x-request-id",
];

/// Whether a request field the caller sent goes to the upstream. `name`
/// is lower case.
fn forwarded_header(name: &str, hop_by_hop: &HopByHop) -> bool {
    if hop_by_hop.contains(name) || name == "authorization" {
        return false;
    }
    // Only `_` needs reading as `-`.
    let as_dashes = |expected: &str| {
        name.len() >= expected.len()
            && name
                .bytes()
                .zip(expected.bytes())
                .all(|(got, want)| got == want || (got == b'_' && want == b'-'))
    };
    !(as_dashes("x-keygate-")
        || CONTROLLED_FIELDS
            .iter()
            .any(|field| name.len() == field.len() && as_dashes(field)))
}

/// The forwarding fields keygate sets (CONTRACT.md section 5). From a
/// trusted proxy (`--trusted-proxies`), its `X-Forwarded-For` chain is
/// extended with the peer and its `-Proto` and `-Host` are kept, as the
/// policy's source check already believes that chain; from anyone else,
/// all three describe what keygate itself saw, whatever the client wrote.
struct Forwarding {
    for_chain: String,
    proto: String,
    host: Option<HeaderValue>,
}

impl Forwarding {
    fn of(req: &HttpRequest, state: &PublicState) -> Forwarding {
        let peer = req.peer_addr().map(|a| a.ip().to_canonical());
        let trusted =
            peer.is_some_and(|p: IpAddr| state.trusted_proxies.iter().any(|net| net.contains(&p)));
        let peer_text = peer.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
        let own_proto = state
            .public_origin
            .as_ref()
            .map_or("http", |origin| origin.scheme.as_str());
        let headers = req.headers();
        if !trusted {
            return Forwarding {
                for_chain: peer_text,
                proto: own_proto.to_owned(),
                host: headers.get(header::HOST).cloned(),
            };
        }
        let chain: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        let for_chain = if chain.is_empty() {
            peer_text
        } else {
            format!("{}, {peer_text}", chain.join(", "))
        };
        let proto = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .filter(|v| matches!(*v, "http" | "https"))
            .unwrap_or(own_proto)
            .to_owned();
        let host = headers
            .get("x-forwarded-host")
            .or_else(|| headers.get(header::HOST))
            .cloned();
        Forwarding {
            for_chain,
            proto,
            host,
        }
    }
}

pub async fn forward(
    req: HttpRequest,
    signed: SignedRequest,
    upstream: web::Data<Upstream>,
    state: web::Data<PublicState>,
) -> Result<HttpResponse, Error> {
    let target = super::target::checked_target(req.uri())?;
    let mut outgoing = upstream_http::Request::builder()
        .method(req.method().as_str())
        .uri(upstream.url_for(target)?);
    let connection = req.headers().get_all(header::CONNECTION);
    let hop_by_hop = HopByHop::of(connection.map(HeaderValue::as_bytes));
    for (name, value) in req.headers() {
        if forwarded_header(name.as_str(), &hop_by_hop) {
            outgoing = outgoing.header(name.as_str(), value.as_bytes());
        }
    }
    let forwarding = Forwarding::of(&req, &state);
    outgoing = outgoing
        .header("x-keygate-app-id", &signed.key.app_id)
        .header("x-keygate-key-id", &*signed.key.key_id)
        .header("x-forwarded-for", forwarding.for_chain)
        .header("x-forwarded-proto", forwarding.proto);
    if let Some(host) = forwarding.host {
        outgoing = outgoing.header("x-forwarded-host", host.as_bytes());
    }
    // The id the partner's answer carries: the caller's own when it is
    // acceptable, else the one keygate made (`request_id.rs`).
    if let Some(id) = req.extensions().get::<RequestId>() {
        outgoing = outgoing.header("x-request-id", id.as_str());
    }
    let outgoing = outgoing
        .body(Full::new(signed.body))
        .map_err(|e| Error::Unavailable(format!("building the upstream request: {e}")))?;

    let sent = tokio::time::timeout(UPSTREAM_TIMEOUT, upstream.client.request(outgoing));
    let response = match sent.await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "upstream request failed");
            return Err(Error::UpstreamUnavailable(e.to_string()));
        }
        Err(_) => {
            tracing::warn!(
                timeout_secs = UPSTREAM_TIMEOUT.as_secs(),
                "upstream did not answer in time"
            );
            return Err(Error::UpstreamUnavailable("no answer in time".into()));
        }
    };
    Ok(answer_from(response, signed.allowance))
}

/// The upstream's answer as the partner receives it: status, fields and
/// body as they came. The framing is each hop's own: a body with a
/// `Content-Length` keeps it (re-sent sized, not re-framed as chunked), a
/// chunked or close-delimited one is streamed chunked. The only fields
/// keygate adds are its `RateLimit-*` (unless the upstream sent its own),
/// and a `Date` when the upstream sent none (RFC 9110 section 6.6.1 asks a
/// proxy with a clock to add it; actix-http does).
fn answer_from(
    response: upstream_http::Response<hyper::body::Incoming>,
    allowance: Option<crate::policy::Allowance>,
) -> HttpResponse {
    let (parts, body) = response.into_parts();
    let status = StatusCode::from_u16(parts.status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut answer = HttpResponse::build(status);
    // A client must not be told of the looser of two limits.
    if !parts.headers.contains_key("ratelimit-limit") {
        for field in allowance.iter().flat_map(crate::policy::Allowance::fields) {
            answer.insert_header(field);
        }
    }
    let connection = parts.headers.get_all(upstream_http::header::CONNECTION);
    let hop_by_hop = HopByHop::of(connection.iter().map(|v| v.as_bytes()));
    for (name, value) in &parts.headers {
        if !hop_by_hop.contains(name.as_str()) {
            // Both crates check names and values alike: these always convert.
            if let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
                answer.append_header((name.as_str(), value));
            }
        }
    }
    let length = parts
        .headers
        .get(upstream_http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = BodyDataStream::new(body);
    // Not `streaming()`: it adds `Content-Type: application/octet-stream`
    // when the upstream sent none.
    match length {
        Some(length) => answer.body(SizedStream::new(length, body)),
        None => answer.body(BodyStream::new(body)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_is_composed_below_the_base_path() {
        let upstream = Upstream::new("http://127.0.0.1:19000/api/").unwrap();
        let url = upstream.url_for("/v1/orders/7?q=a%20b").unwrap();
        assert_eq!(url.scheme_str(), Some("http"));
        assert_eq!(url.authority().unwrap().as_str(), "127.0.0.1:19000");
        assert_eq!(url.path(), "/api/v1/orders/7");
        assert_eq!(url.query(), Some("q=a%20b"));
        let root = Upstream::new("http://localhost").unwrap();
        let url = root.url_for("/").unwrap();
        assert_eq!(url.to_string(), "http://localhost:80/");
        let v6 = Upstream::new("http://[::1]:8000/base").unwrap();
        assert_eq!(
            v6.url_for("/x").unwrap().to_string(),
            "http://[::1]:8000/base/x"
        );
    }

    #[test]
    fn bad_upstreams_are_refused_at_start_up() {
        for bad in [
            "https://example.com",
            "http://example.com/?q=1",
            "http://user:pw@example.com",
            "http://example.com/a/../b%2Fc",
            "http://example.com/a//b",
            "not a url",
        ] {
            assert!(Upstream::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn controlled_fields_stay_behind_in_any_spelling() {
        let none = HopByHop::of(std::iter::empty());
        let forwarded = |name: &str| forwarded_header(&name.to_ascii_lowercase(), &none);
        for dropped in [
            "x-keygate-app-id",
            "X_Keygate_App_Id",
            "x_keygate-key_id",
            "X-HTTP-Method-Override",
            "x_http_method_override",
            "X-HTTP-Method",
            "X-Method-Override",
            "X-Forwarded-For",
            "x_forwarded_for",
            "X-Real-IP",
            "Forwarded",
            "X-Original-URL",
            "X-Rewrite-Url",
            "Authorization",
            "Connection",
            "Transfer-Encoding",
            "Host",
            "X-Request-Id",
        ] {
            assert!(!forwarded(dropped), "{dropped}");
        }
        for kept in [
            "content-type",
            "x-keygate",
            "x-forwarded",
            "x-http-method-override-not",
            "accept",
        ] {
            assert!(forwarded(kept), "{kept}");
        }
    }
}
