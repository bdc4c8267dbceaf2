//! Request ids (CONTRACT.md section 4) and the access log, as one
//! middleware on both listeners.
//!
//! Every answer carries `X-Request-Id`: the caller's own when it is 1 to
//! 128 characters of `[A-Za-z0-9._-]`, otherwise one keygate makes. A
//! refusal's JSON repeats it as `request_id`: the refusal is rebuilt from
//! the `Error` value that made it (never by reading bytes), with the id.
//! In gateway mode the upstream gets the same id, so a partner's complaint,
//! keygate's log line and the upstream's log meet on one value.
//!
//! With `--access-log`, one line per request: id, method, path (the query
//! is left out, as it may carry personal data), status, the refusal's
//! code, the key and application when verified, latency and bytes. Never
//! a secret, a signature or a token: none of those is among the fields.

use std::sync::Arc;
use std::time::Instant;

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::HttpMessage;
use rand::distr::{Alphanumeric, SampleString};

use crate::error::Error;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the request being served, in its extensions.
#[derive(Clone, Debug)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// The caller's id when it is one keygate may repeat, else a new one.
    pub fn of(sent: Option<&HeaderValue>) -> RequestId {
        match sent.map(HeaderValue::as_bytes) {
            Some(id) if is_acceptable(id) => {
                RequestId(Arc::from(std::str::from_utf8(id).unwrap_or_default()))
            }
            _ => RequestId(Arc::from(
                Alphanumeric.sample_string(&mut rand::rng(), 22).as_str(),
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// 1 to 128 characters of `[A-Za-z0-9._-]`: safe in a header, a log line
/// and a JSON string as it is.
fn is_acceptable(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Who a request was verified as, for the access log (set by the
/// signed-request extractor).
#[derive(Clone, Debug)]
pub struct VerifiedAs {
    pub key_id: Arc<str>,
    pub app_id: String,
}

/// Whether each request gets an access log line (`--access-log`).
#[derive(Clone, Copy, Debug)]
pub struct AccessLog(pub bool);

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let id = RequestId::of(req.headers().get(HEADER));
    req.extensions_mut().insert(id.clone());
    let access_log = req.app_data::<AccessLog>().is_some_and(|AccessLog(on)| *on);
    // Handlers' refusals arrive as responses that keep their error; an
    // `Err` here would be actix's own failure, answered by actix. (The
    // request cannot be cloned to build an answer here: routing still
    // needs it unshared.)
    let response = next.call(req).await?.map_into_boxed_body();
    // A refusal of ours: the same answer, built again with the id.
    let refusal = response
        .response()
        .error()
        .and_then(|e| e.as_error::<Error>())
        .map(|e| (e.code(), e.response_for(Some(id.as_str()))));
    let code = refusal.as_ref().map(|(code, _)| *code);
    let mut response = match refusal {
        Some((_, rebuilt)) => response.into_response(rebuilt.map_into_boxed_body()),
        None => response,
    };
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        response.headers_mut().insert(HEADER, value);
    }
    if access_log {
        log_line(&response, &id, code, started);
    }
    Ok(response)
}

fn log_line<B: MessageBody>(
    response: &ServiceResponse<B>,
    id: &RequestId,
    code: Option<&str>,
    started: Instant,
) {
    let request = response.request();
    let verified = request.extensions().get::<VerifiedAs>().cloned();
    let bytes = match response.response().body().size() {
        BodySize::Sized(n) => n.to_string(),
        BodySize::None => "0".into(),
        BodySize::Stream => "-".into(),
    };
    tracing::info!(
        target: "keygate::access",
        request_id = id.as_str(),
        method = %request.method(),
        path = request.path(),
        status = response.status().as_u16(),
        code = code.unwrap_or("-"),
        key_id = verified.as_ref().map_or("-", |v| &*v.key_id),
        app_id = verified.as_ref().map_or("-", |v| v.app_id.as_str()),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        bytes = bytes.as_str(),
        "request"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_id_is_kept_only_when_safe() {
        let kept = RequestId::of(Some(&HeaderValue::from_static("req-1.a_B")));
        assert_eq!(kept.as_str(), "req-1.a_B");
        for bad in ["", "has space", "semi;colon", "é"] {
            let value = HeaderValue::from_bytes(bad.as_bytes()).ok();
            let made = RequestId::of(value.as_ref());
            assert_ne!(made.as_str(), bad);
            assert_eq!(made.as_str().len(), 22);
        }
        let long = "a".repeat(129);
        assert_eq!(
            RequestId::of(Some(&HeaderValue::from_str(&long).unwrap()))
                .as_str()
                .len(),
            22
        );
        assert_eq!(RequestId::of(None).as_str().len(), 22);
        assert!(is_acceptable(&[b'a'; 128]));
    }
}
