//! From the database URL to a connected client: libpq's URL form and its
//! `sslmode` values, TLS with rustls, and the session settings keygate
//! relies on.
//!
//! `sslmode` as libpq reads it: `disable` (plain TCP), `prefer` (the
//! default: TLS if the server offers it, certificate not checked),
//! `require` (TLS, certificate not checked unless `sslrootcert` is given,
//! then as `verify-ca`), `verify-ca` (the chain must lead to a trusted
//! root), `verify-full` (and the certificate must name the host). The
//! trusted roots are `sslrootcert`'s certificates when given, else the
//! public web roots. Use `verify-full` wherever the network is not yours.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::database::redact_password;

/// Where to connect and how: parsed once from the URL.
pub(crate) struct Target {
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    /// The bound on every call, connecting included.
    pub timeout: Duration,
    /// The URL without its password, for messages.
    pub shown: String,
    /// `sslmode` as given (libpq's default, `prefer`, when absent).
    sslmode: String,
}

impl Target {
    pub(crate) fn parse(url: &str, timeout: Duration) -> Result<Target, String> {
        let shown = redact_password(url);
        let bad = |e: &dyn std::fmt::Display| format!("database URL {shown}: {e}");
        let mut parsed = url::Url::parse(url).map_err(|e| bad(&e))?;
        let mut sslmode = "prefer".to_owned();
        let mut root_cert: Option<PathBuf> = None;
        let mut rest = Vec::new();
        for (name, value) in parsed.query_pairs() {
            match &*name {
                "sslmode" => sslmode = value.into_owned(),
                "sslrootcert" => root_cert = Some(PathBuf::from(&*value)),
                _ => rest.push((name.into_owned(), value.into_owned())),
            }
        }
        parsed.set_query(None);
        if !rest.is_empty() {
            parsed.query_pairs_mut().extend_pairs(rest);
        }
        let mut config = tokio_postgres::Config::from_str(parsed.as_str()).map_err(|e| bad(&e))?;
        let (mode, verify) = match sslmode.as_str() {
            "disable" => (SslMode::Disable, None),
            "allow" | "prefer" => (SslMode::Prefer, Some(Verify::Nothing)),
            "require" if root_cert.is_some() => (SslMode::Require, Some(Verify::Chain)),
            "require" => (SslMode::Require, Some(Verify::Nothing)),
            "verify-ca" => (SslMode::Require, Some(Verify::Chain)),
            "verify-full" => (SslMode::Require, Some(Verify::ChainAndHost)),
            other => {
                return Err(bad(&format!(
                    "sslmode={other}: expected disable, allow, prefer, require, verify-ca or verify-full"
                )))
            }
        };
        config.ssl_mode(mode);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("keygate");
        }
        let tls = verify
            .map(|verify| tls_connector(verify, root_cert.as_deref()).map_err(|e| bad(&e)))
            .transpose()?;
        Ok(Target {
            config,
            tls,
            timeout,
            shown,
            sslmode,
        })
    }

    /// Why the connection could be read or impersonated on the way, when
    /// it can: a host that is not this machine, reached with any `sslmode`
    /// short of `verify-full` (`prefer`, the default, neither checks the
    /// server nor refuses plain TCP). `None` for `verify-full`, and for
    /// loopback and Unix sockets, which never leave the machine.
    pub(crate) fn transport_warning(&self) -> Option<String> {
        if self.sslmode == "verify-full" {
            return None;
        }
        let remote = self.config.get_hosts().iter().find_map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => (!is_loopback(name)).then_some(name),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(_) => None,
        })?;
        Some(format!(
            "the database host {remote} is not on this machine and sslmode={} does not verify              the server: anyone on the path can read or answer for it (nonces, keys, the audit              log). Use sslmode=verify-full (with sslrootcert= for a private CA).",
            self.sslmode
        ))
    }

    /// A new session. `synchronous_commit` is set here rather than trusted
    /// from the server's configuration: an acknowledged nonce must survive
    /// a crash of the database server, and with it `off` it may not.
    /// `statement_timeout` makes the server give up too, releasing its
    /// locks, when keygate has stopped waiting.
    pub(crate) async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        let client = match &self.tls {
            None => {
                let (client, connection) = self.config.connect(NoTls).await?;
                tokio::spawn(drive(connection));
                client
            }
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                tokio::spawn(drive(connection));
                client
            }
        };
        let ms = self.timeout.as_millis().max(1);
        client
            .batch_execute(&format!(
                "SET synchronous_commit = on; SET statement_timeout = {ms}; \
                 SET idle_in_transaction_session_timeout = {}",
                ms * 5
            ))
            .await?;
        Ok(client)
    }
}

/// Runs a connection until it closes. Its errors reach the caller through
/// the client (every later call fails), so they are not logged here.
async fn drive<F>(connection: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>>,
{
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "PostgreSQL connection closed");
    }
}

#[derive(Clone, Copy)]
enum Verify {
    /// libpq's `prefer` and `require`: encrypted, but anyone can answer.
    Nothing,
    Chain,
    ChainAndHost,
}

fn tls_connector(
    verify: Verify,
    root_cert: Option<&std::path::Path>,
) -> Result<MakeRustlsConnect, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = match verify {
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoCertificateCheck(provider)))
            .with_no_client_auth(),
        Verify::ChainAndHost => builder
            .with_root_certificates(roots(root_cert)?)
            .with_no_client_auth(),
        Verify::Chain => {
            let inner =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots(root_cert)?), provider)
                    .build()
                    .map_err(|e| e.to_string())?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
                .with_no_client_auth()
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

/// `sslrootcert`'s certificates when given (and only those, as libpq
/// does), else the public web roots.
fn roots(root_cert: Option<&std::path::Path>) -> Result<rustls::RootCertStore, String> {
    let Some(path) = root_cert else {
        return Ok(crate::tls_roots::public_roots());
    };
    let mut store = rustls::RootCertStore::empty();
    crate::tls_roots::add_pem_file(&mut store, path)
        .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
    Ok(store)
}

/// `verify-ca`: the usual chain check, with a certificate for another name
/// accepted.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `prefer` / `require` without a root certificate, as libpq has them:
/// the handshake's signatures are still checked, the certificate is not.
#[derive(Debug)]
struct NoCertificateCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_url_parameters_are_understood_and_bad_ones_refused() {
        let timeout = Duration::from_secs(2);
        let target = Target::parse(
            "postgres://kg:pw@127.0.0.1:5433/keygate?sslmode=verify-full&application_name=x",
            timeout,
        )
        .unwrap();
        assert_eq!(target.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(target.config.get_application_name(), Some("x"));
        assert_eq!(target.config.get_connect_timeout(), Some(&timeout));
        assert!(!target.shown.contains("pw"));
        let plain =
            Target::parse("postgresql://kg@localhost/keygate?sslmode=disable", timeout).unwrap();
        assert!(plain.tls.is_none());
        assert!(Target::parse("postgres://h/db?sslmode=sometimes", timeout).is_err());
        let warning = |url: &str| Target::parse(url, timeout).unwrap().transport_warning();
        assert!(warning("postgres://kg@db.internal/keygate").is_some());
        assert!(warning("postgres://kg@10.0.0.5/keygate?sslmode=require").is_some());
        assert!(warning("postgres://kg@127.0.0.1/keygate").is_none());
        assert!(warning("postgres://kg@localhost/keygate?sslmode=disable").is_none());
        assert!(warning("postgres://kg@[::1]:5432/keygate").is_none());
        assert!(warning("postgres://kg@db.internal/keygate?sslmode=verify-full").is_none());
        assert!(Target::parse(
            "postgres://h/db?sslmode=verify-ca&sslrootcert=/nonexistent",
            timeout
        )
        .is_err());
    }
}
