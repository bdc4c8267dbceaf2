//! The reqwest adapter.

use std::fmt;
use std::sync::Arc;

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::ResponseBuilderExt;

use crate::refusal::Refusal;
use crate::signer::{Attempts, Signer};

/// Sends `reqwest` requests signed over the exact bytes sent and the target
/// reqwest puts on the request line (the URL's path and query as
/// serialized), retried as the signer's [`crate::RetryPolicy`] says (signed
/// afresh each time: new nonce, new timestamp), with clock skew corrected.
///
/// ```no_run
/// # async fn demo() -> Result<(), keygate_client::Error> {
/// use keygate_client::{KeygateClient, Signer};
/// let client = KeygateClient::new(reqwest::Client::new(), Signer::new("pk_...", "sk_..."));
/// let request = client.http().get("https://api.example.com/v1/whoami").build()?;
/// let answer = client.execute_checked(request).await?; // a refusal is Err(Error::Refused)
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct KeygateClient {
    http: reqwest::Client,
    signer: Arc<Signer>,
}

/// What can go wrong sending a signed request.
#[derive(Debug)]
pub enum Error {
    /// keygate refused the request: its code, and both strings to sign
    /// for `signature_mismatch`.
    Refused(Refusal),
    /// The body is a stream (it must be bytes to be signed) or over the
    /// signer's `max_body_bytes`.
    Body(String),
    Http(reqwest::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Refused(refusal) => refusal.fmt(f),
            Error::Body(why) => f.write_str(why),
            Error::Http(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Refused(refusal) => Some(refusal),
            Error::Body(_) => None,
            Error::Http(e) => Some(e),
        }
    }
}

impl From<reqwest::Error> for Error {
    fn from(e: reqwest::Error) -> Self {
        Error::Http(e)
    }
}

impl KeygateClient {
    pub fn new(http: reqwest::Client, signer: Signer) -> KeygateClient {
        KeygateClient {
            http,
            signer: Arc::new(signer),
        }
    }

    /// The reqwest client, to build requests with.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// Signs, sends and retries; a refusal comes back as the response it is.
    pub async fn execute(&self, request: reqwest::Request) -> Result<reqwest::Response, Error> {
        Ok(self.send(request).await?.0)
    }

    /// As [`KeygateClient::execute`], but a refusal with a code is
    /// `Err(Error::Refused)`, carrying what this client signed over.
    pub async fn execute_checked(
        &self,
        request: reqwest::Request,
    ) -> Result<reqwest::Response, Error> {
        let (response, signed_over) = self.send(request).await?;
        if response.status().as_u16() < 400 {
            return Ok(response);
        }
        let (response, body) = buffered(response).await?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        match Refusal::parse(
            response.status().as_u16(),
            header("retry-after").as_deref(),
            header("x-request-id").as_deref(),
            &body,
            Some(&signed_over),
        ) {
            Some(refusal) => Err(Error::Refused(refusal)),
            None => Ok(response),
        }
    }

    async fn send(&self, request: reqwest::Request) -> Result<(reqwest::Response, String), Error> {
        let body = match request.body() {
            None => Vec::new(),
            Some(body) => body
                .as_bytes()
                .ok_or_else(|| {
                    Error::Body(
                        "a streamed body cannot be signed before it is sent: give reqwest bytes"
                            .into(),
                    )
                })?
                .to_vec(),
        };
        if body.len() > self.signer.max_body_bytes {
            return Err(Error::Body(format!(
                "the body is over max_body_bytes ({})",
                self.signer.max_body_bytes
            )));
        }
        let url = request.url();
        let target = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        let method = request.method().as_str().to_owned();
        let mut attempts = Attempts::default();
        loop {
            let signed = self.signer.sign(&method, &target, &body);
            let mut attempt = request
                .try_clone()
                .expect("a request with a body in memory can be cloned");
            for (name, value) in &signed.headers {
                let value = HeaderValue::from_str(value).expect("signature headers are ASCII");
                attempt
                    .headers_mut()
                    .insert(HeaderName::from_static(name), value);
            }
            let response = self.http.execute(attempt).await?;
            if !matches!(response.status().as_u16(), 401 | 429 | 503) {
                return Ok((response, signed.string_to_sign));
            }
            let (response, answer) = buffered(response).await?;
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok());
            let Some(wait) = self.signer.next_step(
                &mut attempts,
                &method,
                response.status().as_u16(),
                retry_after,
                &answer,
            ) else {
                return Ok((response, signed.string_to_sign));
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// Reads a response's body and gives back an equal response holding it.
async fn buffered(response: reqwest::Response) -> Result<(reqwest::Response, Vec<u8>), Error> {
    let mut builder = http::Response::builder()
        .status(response.status())
        .version(response.version())
        .url(response.url().clone());
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    let body = response.bytes().await?.to_vec();
    let rebuilt = builder
        .body(body.clone())
        .expect("parts of a valid response");
    Ok((reqwest::Response::from(rebuilt), body))
}
