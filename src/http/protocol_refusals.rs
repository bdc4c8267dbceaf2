//! The refusals actix-http writes itself, as JSON with a stable code like
//! every other refusal (CONTRACT.md section 4).
//!
//! A request actix cannot parse (400), whose head is too large (431), or
//! whose head does not arrive in time (408) never reaches keygate's
//! handlers: actix-http's HTTP/1 dispatcher writes a bare response with an
//! empty body and closes the connection, with no hook to change it. So each
//! connection's stream is wrapped ([`JsonRefusals`]) and such a response,
//! recognised by its head (one of those statuses, `content-length: 0`, no
//! `content-type`: keygate's own refusals always have a JSON body), is
//! rewritten on its way out:
//!
//! | status | code | when |
//! | --- | --- | --- |
//! | 400 | `malformed_request` | not valid HTTP/1.1: request line, header syntax, framing |
//! | 408 | `request_timeout` | the request head did not arrive in full in time |
//! | 431 | `header_too_large` | the request head is over actix's limits |
//!
//! Such a response is always the last one on its connection (actix closes
//! it right after), so it is looked for at the end of what is written.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What replaces each bare refusal: status line, code, message.
const REFUSALS: [(&[u8], &str, &str); 3] = [
    (
        b"HTTP/1.1 400 ",
        "malformed_request",
        "the request is not valid HTTP/1.1 (request line, header syntax or message framing); \
         keygate closed the connection",
    ),
    (
        b"HTTP/1.1 408 ",
        "request_timeout",
        "the request line and headers did not arrive in full in time; keygate closed the connection",
    ),
    (
        b"HTTP/1.1 431 ",
        "header_too_large",
        "the request line and headers are larger than keygate accepts (at most 128 KiB and 96 \
         header fields); keygate closed the connection",
    ),
];

/// If `written` ends with one of actix's bare refusals, `written` with
/// that response replaced by its JSON form.
pub fn rewrite(written: &[u8]) -> Option<Vec<u8>> {
    if !written.ends_with(b"\r\n\r\n") {
        return None;
    }
    let start = find_last(written, b"HTTP/1.1 ")?;
    let head = &written[start..];
    let (status_line_prefix, code, message) = REFUSALS
        .iter()
        .find(|(prefix, _, _)| head.starts_with(prefix))?;
    let lower = head.to_ascii_lowercase();
    if find_last(&lower, b"\r\ncontent-length: 0\r\n").is_none()
        || find_last(&lower, b"\r\ncontent-type:").is_some()
        || find_last(&lower[..lower.len() - 4], b"\r\n\r\n").is_some()
    {
        return None;
    }
    let status_line_end = find_last(&head[..head.len() - 2], b"\r\n")
        .and_then(|_| head.windows(2).position(|w| w == b"\r\n"))?;
    let status_line = &head[..status_line_end];
    debug_assert!(status_line.starts_with(status_line_prefix));
    let date = lower
        .windows(8)
        .position(|w| w == b"\r\ndate: ")
        .and_then(|at| {
            let line = &head[at + 2..];
            line.windows(2)
                .position(|w| w == b"\r\n")
                .map(|end| &line[..end])
        });
    let body = serde_json::json!({ "error": { "code": code, "message": message } }).to_string();
    let mut out = Vec::with_capacity(start + 160 + body.len());
    out.extend_from_slice(&written[..start]);
    out.extend_from_slice(status_line);
    out.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\nconnection: close\r\n");
    if let Some(date) = date {
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    Some(out)
}

fn find_last(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// A connection's stream, with actix's bare refusals rewritten (see the
/// module comment). Reads pass through untouched.
pub struct JsonRefusals<T> {
    inner: T,
    /// A rewritten refusal not yet written to `inner`, and how much of it
    /// was.
    pending: Vec<u8>,
    sent: usize,
}

impl<T> JsonRefusals<T> {
    pub fn new(inner: T) -> Self {
        JsonRefusals {
            inner,
            pending: Vec::new(),
            sent: 0,
        }
    }
}

impl<T: AsyncWrite + Unpin> JsonRefusals<T> {
    /// Writes what is pending; `Ready(Ok)` once nothing is.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.pending = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonRefusals<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonRefusals<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        // Cheap for every other write: a refusal's head is short and ends
        // the buffer, so only a buffer ending with a blank line is looked at.
        if buf.ends_with(b"\r\n\r\n") {
            if let Some(rewritten) = rewrite(buf) {
                this.pending = rewritten;
                // The whole buffer counts as written: what replaces it is
                // written by the next calls, `poll_flush` at the latest.
                let _ = this.drain(cx)?;
                return Poll::Ready(Ok(buf.len()));
            }
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BARE_400: &[u8] =
        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\ndate: Wed, 02 Dec 2026 16:00:00 GMT\r\n\r\n";

    fn json_of(response: &[u8]) -> serde_json::Value {
        let text = std::str::from_utf8(response).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len());
        assert!(head.contains("content-type: application/json"));
        assert!(head.contains("date: Wed, 02 Dec 2026 16:00:00 GMT"));
        serde_json::from_str(body).unwrap()
    }

    #[test]
    fn bare_refusals_become_json() {
        let rewritten = rewrite(BARE_400).unwrap();
        assert!(rewritten.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
        assert_eq!(json_of(&rewritten)["error"]["code"], "malformed_request");
        for (status, code) in [
            ("408 Request Timeout", "request_timeout"),
            ("431 Request Header Fields Too Large", "header_too_large"),
        ] {
            let bare = String::from_utf8(BARE_400.to_vec())
                .unwrap()
                .replace("400 Bad Request", status);
            let rewritten = rewrite(bare.as_bytes()).unwrap();
            assert_eq!(json_of(&rewritten)["error"]["code"], code);
        }
    }

    #[test]
    fn an_earlier_pipelined_response_is_kept_as_it_was() {
        let earlier =
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}";
        let both = [earlier.as_slice(), BARE_400].concat();
        let rewritten = rewrite(&both).unwrap();
        assert!(rewritten.starts_with(earlier));
        assert_eq!(
            json_of(&rewritten[earlier.len()..])["error"]["code"],
            "malformed_request"
        );
    }

    #[test]
    fn everything_else_passes_untouched() {
        for other in [
            // keygate's own refusals: a JSON body.
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 60\r\ncontent-type: application/json\r\n\r\n".as_slice(),
            // Success, and a 404 with an empty body that is not actix's.
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            // A body that happens to end like a blank line.
            b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n\r\n\r\n",
            b"",
            b"\r\n\r\n",
        ] {
            assert_eq!(rewrite(other), None, "{}", String::from_utf8_lossy(other));
        }
    }
}
