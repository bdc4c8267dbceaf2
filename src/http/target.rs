//! The request target, the first step of every signed request (before the
//! Authorization header is read): what the signature covers, the policy
//! judges and the gateway forwards must be one unambiguous path.
//!
//! - origin-form (`/path?query`): its path must pass
//!   [`canonical_path::check`], else 400 `ambiguous_path`;
//! - absolute-form (`http://host/path?query`, which RFC 9112 says a server
//!   must accept): its path and query, checked the same way; the scheme and
//!   authority it names are ignored, and a gateway forwards only to its
//!   configured upstream;
//! - asterisk-form (`*`, for `OPTIONS *`) and authority-form (`host:port`,
//!   for `CONNECT`): there is no path to sign or forward: 400
//!   `malformed_request`. Forwarded as text, `*` once made
//!   `http://127.0.0.1:PORT*`, a URL whose port no longer parsed.

use actix_web::http::Uri;

use crate::canonical_path;
use crate::error::Error;

/// The path and query exactly as sent, once they are known to be
/// unambiguous.
pub fn checked_target(uri: &Uri) -> Result<&str, Error> {
    let Some(path_and_query) = uri.path_and_query() else {
        // Only an authority: `CONNECT host:port` style.
        return Err(Error::MalformedRequest("an authority-form target"));
    };
    let target = path_and_query.as_str();
    if !target.starts_with('/') {
        return Err(Error::MalformedRequest(if target == "*" {
            "the asterisk-form target '*'"
        } else {
            "a target that is not a path"
        }));
    }
    if uri.scheme().is_none() && uri.authority().is_some() {
        return Err(Error::MalformedRequest("an authority-form target"));
    }
    canonical_path::check(target).map_err(Error::AmbiguousPath)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(target: &str) -> Result<&'static str, ()> {
        let uri: Uri = target.parse().map_err(|_| ())?;
        Ok(match checked_target(&uri) {
            Ok(_) => "ok",
            Err(e) => e.code(),
        })
    }

    #[test]
    fn only_paths_pass() {
        assert_eq!(code("/v1/orders/7?x=1"), Ok("ok"));
        assert_eq!(code("http://elsewhere.example/v1/orders/7"), Ok("ok"));
        assert_eq!(code("*"), Ok("malformed_request"));
        assert_eq!(code("127.0.0.1:80"), Ok("malformed_request"));
        assert_eq!(code("example.com:443"), Ok("malformed_request"));
        assert_eq!(code("/v1/orders/..;/admin"), Ok("ambiguous_path"));
        assert_eq!(code("http://h/v1/orders/%2e%2e/x"), Ok("ambiguous_path"));
    }
}
