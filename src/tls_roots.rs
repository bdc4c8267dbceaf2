//! The certificates keygate's TLS clients trust: the public web roots, and
//! the CA certificates of a PEM file an operator names (`keygate request
//! --cacert`, PostgreSQL's `sslrootcert`). One loader for both.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

/// The public web roots (Mozilla's, as webpki-roots ships them).
pub fn public_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// Adds every certificate of the PEM file at `path` to `store`. A file
/// with none is an error: an operator who names a file means to trust
/// something in it.
pub fn add_pem_file(store: &mut RootCertStore, path: &Path) -> Result<(), String> {
    let mut added = 0;
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| e.to_string())? {
        store
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        added += 1;
    }
    if added == 0 {
        return Err("no PEM certificate in the file".into());
    }
    Ok(())
}
