//! The one error type. Every refusal keygate gives, on either listener, is a
//! variant here, and `ResponseError` below is the one place where a variant
//! becomes an HTTP status, a stable `code` and a JSON body (CONTRACT.md
//! section 4).

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Map, Value};

use crate::domain::Invalid;
use crate::signature::SCHEME;
use crate::store::{KeyUnusable, PairOutcome, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- partner-facing refusals (public listener) ---
    /// The request target is not origin-form (`*`, or `host:port`): there
    /// is no path to sign, judge or forward.
    #[error("the request target must be a path starting with '/' (got {0})")]
    MalformedRequest(&'static str),
    /// A path that common servers read differently (see `canonical_path`):
    /// never judged by a policy, never forwarded.
    #[error("the path has {0}; servers disagree on what such a path means, so keygate refuses it: send the path it stands for")]
    AmbiguousPath(crate::canonical_path::Ambiguity),
    #[error("the request has no Authorization header; sign it with {SCHEME} (see the README)")]
    MissingAuthorization,
    #[error("malformed Authorization header: {0}")]
    MalformedAuthorization(String),
    #[error("no key with this KeyId exists")]
    UnknownKey,
    #[error("this key has been revoked")]
    KeyRevoked,
    #[error("this key has expired")]
    KeyExpired,
    #[error("Timestamp is {offset} s from the server's clock (server_time), more than the allowed {skew} s; sign with the current Unix time and check the client's clock (NTP)")]
    TimestampOutOfRange {
        server_time: i64,
        offset: i64,
        skew: u32,
    },
    /// Signed before the database was restored from a backup: its nonce
    /// may be in no window any more, so it is refused by its time.
    #[error("this request was signed before the database was restored from a backup (at {restored_at}); sign it again")]
    SignedBeforeRestore { server_time: i64, restored_at: i64 },
    #[error(
        "this Nonce was already used with this key; send a fresh random nonce with every request"
    )]
    NonceReused,
    #[error("the signature expired at {expires} (server_time {server_time}); sign again")]
    SignatureExpired { server_time: i64, expires: i64 },
    #[error("the signature does not match; compare the server's string_to_sign below with the one you signed, line by line (method, path and query exactly as sent, SHA-256 of the exact body bytes)")]
    SignatureMismatch { string_to_sign: String },
    #[error("{0}")]
    ContentDigestMismatch(String),
    #[error("the body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("the request body could not be read: {0}")]
    UnreadableBody(String),
    /// The body did not arrive in full in time: a stalled or trickling
    /// upload must not hold a connection and a handler forever.
    #[error("the request body did not arrive in full within {secs} s")]
    BodyTimeout { secs: u64 },
    /// Fail closed: the nonce could not be recorded durably, so the request
    /// is not accepted. The reason goes to the log, not to the partner.
    #[error("keygate cannot record this request right now; retry with a new nonce")]
    Unavailable(String),

    /// Outside the allowed routes of the key's or its application's policy.
    #[error("this key may not call {method} {path}: the route is outside its access policy")]
    Forbidden { method: String, path: String },
    #[error("{}", match address {
        Some(a) => format!("this key may not be used from {a}: the address is outside its source networks"),
        None => "this key is limited to some source networks, and the client address could not be determined".into(),
    })]
    ForbiddenSource { address: Option<std::net::IpAddr> },
    #[error("this key or its application is over its rate limit of {} requests at once; retry after {} s", .0.limit, .0.retry_after_secs)]
    RateLimited(crate::policy::OverLimit),

    /// Too many request bodies are being received at once (the memory
    /// budget for unverified requests is spent): retry shortly.
    #[error("keygate is receiving too many request bodies at once; retry shortly")]
    Overloaded,

    /// Gateway mode: the upstream could not be reached or did not answer.
    #[error("the upstream service did not answer")]
    UpstreamUnavailable(String),

    // --- admin API ---
    #[error("this call needs Authorization: Bearer <admin token>")]
    AdminTokenMissing,
    #[error("the admin token is not valid")]
    AdminTokenInvalid,
    #[error("the body is not valid JSON for this call: {0}")]
    InvalidJson(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("no application with id {0}")]
    AppNotFound(String),
    #[error("no key with id {0}")]
    KeyNotFound(String),
    #[error("no such route")]
    NotFound,
    #[error("this method is not allowed on this route")]
    MethodNotAllowed,
}

/// Every code `Error::code` gives, for the OpenAPI document's schema of a
/// refusal (`http/openapi.rs`); a test below keeps the two lists alike.
pub const CODES: [&str; 26] = [
    "malformed_request",
    "ambiguous_path",
    "missing_authorization",
    "malformed_authorization",
    "unknown_key",
    "key_revoked",
    "key_expired",
    "timestamp_out_of_range",
    "nonce_reused",
    "forbidden",
    "forbidden_source",
    "rate_limited",
    "signature_mismatch",
    "content_digest_mismatch",
    "body_too_large",
    "unreadable_body",
    "body_timeout",
    "unavailable",
    "invalid_admin_token",
    "upstream_unavailable",
    "invalid_json",
    "invalid_request",
    "app_not_found",
    "key_not_found",
    "not_found",
    "method_not_allowed",
];

impl Error {
    /// The stable, machine-readable code. Partners' code branches on these,
    /// so they never change once released.
    pub fn code(&self) -> &'static str {
        match self {
            Error::MalformedRequest(_) => "malformed_request",
            Error::AmbiguousPath(_) => "ambiguous_path",
            Error::MissingAuthorization | Error::AdminTokenMissing => "missing_authorization",
            Error::MalformedAuthorization(_) => "malformed_authorization",
            Error::UnknownKey => "unknown_key",
            Error::KeyRevoked => "key_revoked",
            Error::KeyExpired => "key_expired",
            Error::TimestampOutOfRange { .. }
            | Error::SignatureExpired { .. }
            | Error::SignedBeforeRestore { .. } => "timestamp_out_of_range",
            Error::NonceReused => "nonce_reused",
            Error::Forbidden { .. } => "forbidden",
            Error::ForbiddenSource { .. } => "forbidden_source",
            Error::RateLimited(_) => "rate_limited",
            Error::SignatureMismatch { .. } => "signature_mismatch",
            Error::ContentDigestMismatch(_) => "content_digest_mismatch",
            Error::BodyTooLarge { .. } => "body_too_large",
            Error::UnreadableBody(_) => "unreadable_body",
            Error::BodyTimeout { .. } => "body_timeout",
            Error::Unavailable(_) | Error::Overloaded => "unavailable",
            Error::AdminTokenInvalid => "invalid_admin_token",
            Error::UpstreamUnavailable(_) => "upstream_unavailable",
            Error::InvalidJson(_) => "invalid_json",
            Error::InvalidRequest(_) => "invalid_request",
            Error::AppNotFound(_) => "app_not_found",
            Error::KeyNotFound(_) => "key_not_found",
            Error::NotFound => "not_found",
            Error::MethodNotAllowed => "method_not_allowed",
        }
    }

    /// Extra fields that help the caller fix the request.
    fn details(&self) -> Map<String, Value> {
        let mut extra = Map::new();
        match self {
            Error::TimestampOutOfRange {
                server_time, skew, ..
            } => {
                extra.insert("server_time".into(), json!(server_time));
                extra.insert("allowed_skew_secs".into(), json!(skew));
            }
            Error::SignatureExpired { server_time, .. }
            | Error::SignedBeforeRestore { server_time, .. } => {
                extra.insert("server_time".into(), json!(server_time));
            }
            Error::SignatureMismatch { string_to_sign } => {
                extra.insert("string_to_sign".into(), json!(string_to_sign));
            }
            Error::BodyTooLarge { limit } => {
                extra.insert("limit_bytes".into(), json!(limit));
            }
            Error::BodyTimeout { secs } => {
                extra.insert("timeout_secs".into(), json!(secs));
            }
            Error::Forbidden { method, path } => {
                extra.insert("method".into(), json!(method));
                extra.insert("path".into(), json!(path));
            }
            Error::ForbiddenSource { address } => {
                extra.insert(
                    "client_address".into(),
                    json!(address.map(|a| a.to_string())),
                );
            }
            Error::RateLimited(over) => {
                extra.insert("retry_after_secs".into(), json!(over.retry_after_secs));
            }
            _ => {}
        }
        extra
    }
}

/// A value an admin sent that its domain type refuses.
impl From<Invalid> for Error {
    fn from(invalid: Invalid) -> Self {
        Error::InvalidRequest(invalid.0)
    }
}

/// Step 2 of the contract's verification: revoked before expired.
impl From<KeyUnusable> for Error {
    fn from(why: KeyUnusable) -> Self {
        match why {
            KeyUnusable::Revoked => Error::KeyRevoked,
            KeyUnusable::Expired => Error::KeyExpired,
        }
    }
}

impl Error {
    /// The refusal for a pair the nonce window did not record. `Recorded`
    /// is not a refusal, and `PolicyChanged` is checked again by the
    /// verifier until it gives up: both land here only as that giving up.
    pub fn not_recorded(outcome: PairOutcome) -> Error {
        match outcome {
            PairOutcome::Replayed => Error::NonceReused,
            PairOutcome::UnknownKey => Error::UnknownKey,
            PairOutcome::KeyRevoked => Error::KeyRevoked,
            PairOutcome::KeyExpired => Error::KeyExpired,
            PairOutcome::Recorded | PairOutcome::PolicyChanged => Error::Unavailable(
                "the access policy kept changing while this request was checked".into(),
            ),
        }
    }
}

/// The one place storage errors become the contract's codes.
impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::AppNotFound(id) => Error::AppNotFound(id),
            StoreError::KeyNotFound(id) => Error::KeyNotFound(id),
            StoreError::Refused(reason) => Error::InvalidRequest(reason),
            StoreError::Unavailable(_) => Error::Unavailable(err.to_string()),
        }
    }
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::MissingAuthorization
            | Error::MalformedAuthorization(_)
            | Error::UnknownKey
            | Error::KeyRevoked
            | Error::KeyExpired
            | Error::TimestampOutOfRange { .. }
            | Error::SignatureExpired { .. }
            | Error::SignedBeforeRestore { .. }
            | Error::NonceReused
            | Error::SignatureMismatch { .. }
            | Error::ContentDigestMismatch(_)
            | Error::AdminTokenMissing
            | Error::AdminTokenInvalid => StatusCode::UNAUTHORIZED,
            Error::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Forbidden { .. } | Error::ForbiddenSource { .. } => StatusCode::FORBIDDEN,
            Error::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Error::MalformedRequest(_)
            | Error::AmbiguousPath(_)
            | Error::UnreadableBody(_)
            | Error::InvalidJson(_)
            | Error::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Error::AppNotFound(_) | Error::KeyNotFound(_) | Error::NotFound => {
                StatusCode::NOT_FOUND
            }
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::Unavailable(_) | Error::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Error::UpstreamUnavailable(_) => StatusCode::BAD_GATEWAY,
        }
    }

    fn error_response(&self) -> HttpResponse {
        self.response_for(None)
    }
}

impl Error {
    /// The refusal as a partner receives it, with the request's id in the
    /// body when there is one (the request-id middleware rebuilds every
    /// refusal with it: `http/request_id.rs`).
    pub fn response_for(&self, request_id: Option<&str>) -> HttpResponse {
        let mut body = Map::new();
        body.insert("code".into(), json!(self.code()));
        body.insert("message".into(), json!(self.to_string()));
        body.extend(self.details());
        if let Some(id) = request_id {
            body.insert("request_id".into(), json!(id));
        }

        let mut response = HttpResponse::build(self.status_code());
        if self.status_code() == StatusCode::UNAUTHORIZED {
            let challenge = match self {
                Error::AdminTokenMissing | Error::AdminTokenInvalid => {
                    HeaderValue::from_static("Bearer realm=\"keygate-admin\"")
                }
                _ => HeaderValue::from_static(SCHEME),
            };
            response.insert_header((header::WWW_AUTHENTICATE, challenge));
        }
        if let Error::Unavailable(_) | Error::Overloaded = self {
            response.insert_header((header::RETRY_AFTER, "1"));
        }
        if let Error::RateLimited(over) = self {
            // Retry-After (RFC 9110), and the IETF httpapi draft's
            // RateLimit-* fields, which clients and SDKs already read.
            let exhausted = crate::policy::Allowance {
                limit: over.limit,
                remaining: 0,
                reset_secs: over.retry_after_secs,
            };
            for field in exhausted.fields() {
                response.insert_header(field);
            }
            response
                .insert_header((header::RETRY_AFTER, over.retry_after_secs.to_string()))
                .insert_header((
                    "RateLimit-Policy",
                    format!("{};w={}", over.limit, over.window_secs),
                ));
        }
        response.json(json!({ "error": body }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One value of every variant: each one's code is in `CODES`, and
    /// every listed code is some variant's (the OpenAPI document lists
    /// exactly what keygate answers with).
    #[test]
    fn codes_lists_every_code() {
        let over = crate::policy::OverLimit {
            retry_after_secs: 1,
            limit: 1,
            window_secs: 1,
        };
        let all = [
            Error::MalformedRequest("*"),
            Error::AmbiguousPath(crate::canonical_path::Ambiguity::EmptySegment),
            Error::MissingAuthorization,
            Error::MalformedAuthorization(String::new()),
            Error::UnknownKey,
            Error::KeyRevoked,
            Error::KeyExpired,
            Error::TimestampOutOfRange {
                server_time: 0,
                offset: 0,
                skew: 0,
            },
            Error::SignedBeforeRestore {
                server_time: 0,
                restored_at: 0,
            },
            Error::NonceReused,
            Error::SignatureExpired {
                server_time: 0,
                expires: 0,
            },
            Error::SignatureMismatch {
                string_to_sign: String::new(),
            },
            Error::ContentDigestMismatch(String::new()),
            Error::BodyTooLarge { limit: 0 },
            Error::UnreadableBody(String::new()),
            Error::BodyTimeout { secs: 0 },
            Error::Unavailable(String::new()),
            Error::Forbidden {
                method: String::new(),
                path: String::new(),
            },
            Error::ForbiddenSource { address: None },
            Error::RateLimited(over),
            Error::Overloaded,
            Error::UpstreamUnavailable(String::new()),
            Error::AdminTokenMissing,
            Error::AdminTokenInvalid,
            Error::InvalidJson(String::new()),
            Error::InvalidRequest(String::new()),
            Error::AppNotFound(String::new()),
            Error::KeyNotFound(String::new()),
            Error::NotFound,
            Error::MethodNotAllowed,
        ];
        let given: std::collections::BTreeSet<&str> = all.iter().map(Error::code).collect();
        let listed: std::collections::BTreeSet<&str> = CODES.iter().copied().collect();
        assert_eq!(given, listed);
        assert_eq!(CODES.len(), listed.len(), "a code listed twice");
    }
}
