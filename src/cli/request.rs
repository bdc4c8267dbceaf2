//! `keygate request`: one KG1-signed request, printed the way curl would.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::terminal::read_data;
use crate::clock::Clock;
use crate::signature::{self, BodyHash, SignedParts, StringToSign};

#[derive(Args)]
pub struct RequestArgs {
    /// Key id [env: KEYGATE_KEY_ID].
    #[arg(long, env = "KEYGATE_KEY_ID")]
    key_id: String,
    /// Secret [env: KEYGATE_SECRET]; prefer the environment variable, which `ps` does not show.
    #[arg(long, env = "KEYGATE_SECRET", hide_env_values = true)]
    secret: String,
    /// HTTP method, e.g. GET or POST.
    method: String,
    /// Full URL, e.g. http://127.0.0.1:8080/v1/whoami?x=1
    url: String,
    /// Request body; @FILE reads a file, @- standard input.
    #[arg(long, short = 'd')]
    data: Option<String>,
    /// Extra header, "Name: value" (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Print the string to sign and the response headers.
    #[arg(long, short = 'v')]
    verbose: bool,
    /// For https URLs: also trust the CA certificates in this PEM file
    /// (a private CA, a test certificate), besides the public roots.
    #[arg(long, value_name = "PEM_FILE")]
    cacert: Option<PathBuf>,
}

pub fn run(args: RequestArgs) -> Result<ExitCode, String> {
    let method = args.method.to_ascii_uppercase();
    let body = args
        .data
        .as_deref()
        .map(read_data)
        .transpose()?
        .unwrap_or_default();
    // Sign exactly the target the HTTP client will put on the request line:
    // parse the URL the way it does, then take its path and query.
    let url = url::Url::parse(&args.url).map_err(|e| format!("bad URL {}: {e}", args.url))?;
    let target = match url.query() {
        Some(q) => format!("{}?{}", url.path(), q),
        None => url.path().to_owned(),
    };
    let timestamp = Clock::system().now().to_string();
    let nonce = crate::credentials::new_nonce();
    let parts = SignedParts {
        key_id: &args.key_id,
        timestamp: &timestamp,
        nonce: &nonce,
        method: &method,
        request_target: &target,
        body_hash: BodyHash::of(&body),
    };
    let authorization = signature::authorization_header(&args.secret, &parts);
    if args.verbose {
        eprintln!(
            "* string to sign:\n{}\n",
            StringToSign::new(&parts).as_str()
        );
        eprintln!("> {method} {target}\n> Authorization: {authorization}");
    }

    // A server that never answers must not leave the command waiting
    // forever (keygate's own body timeout is 30 s by default).
    let mut agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60));
    if let Some(path) = &args.cacert {
        agent = agent.tls_config(tls_trusting(path)?);
    }
    let agent = agent.build();
    let mut req = agent
        .request_url(&method, &url)
        .set("Authorization", &authorization);
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| format!("header {header:?} is not \"Name: value\""))?;
        req = req.set(name.trim(), value.trim());
    }
    let response = if body.is_empty() && args.data.is_none() {
        req.call()
    } else {
        req.send_bytes(&body)
    };
    let response = match response {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(format!("request failed: {e}")),
    };
    let status = response.status();
    if args.verbose {
        eprintln!("< {} {}", status, response.status_text());
        for name in response.headers_names() {
            eprintln!("< {}: {}", name, response.header(&name).unwrap_or(""));
        }
    }
    let mut text = Vec::new();
    response
        .into_reader()
        .take(64 * 1024 * 1024)
        .read_to_end(&mut text)
        .map_err(|e| format!("reading the answer: {e}"))?;
    println!("{}", String::from_utf8_lossy(&text));
    Ok(if status >= 400 {
        ExitCode::from(22)
    } else {
        ExitCode::SUCCESS
    })
}

/// TLS that trusts the public roots (what ureq trusts by default) and the
/// certificates of `pem_file`.
fn tls_trusting(pem_file: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let bad = |e: &dyn std::fmt::Display| format!("--cacert {}: {e}", pem_file.display());
    let mut roots = crate::tls_roots::public_roots();
    crate::tls_roots::add_pem_file(&mut roots, pem_file).map_err(|e| bad(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
