//! Credentials and the other secrets keygate makes: key secrets, the admin
//! token and the master key that encrypts key
//! secrets at rest (CONTRACT.md section 1).
//!
//! All randomness comes from `rand::rng()`, a CSPRNG seeded and periodically
//! reseeded from the operating system.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// 32 random bytes: 43 characters of base64url.
const SECRET_RANDOM_BYTES: usize = 32;
/// The contract's floor for an operator-chosen admin token.
pub const MIN_ADMIN_TOKEN_LEN: usize = 32;

pub fn new_secret() -> Secret {
    Secret(format!("sk_{}", random_base64url(SECRET_RANDOM_BYTES)))
}

/// A fresh request nonce for a signing client: 16 random bytes in hex, as
/// the contract recommends.
pub fn new_nonce() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    const_hex::encode(bytes)
}

fn random_base64url(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// A key secret. `Debug` does not print it, so a stray `{:?}` in a log line
/// cannot leak one.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: String) -> Self {
        Secret(text)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The bearer token for the admin API.
#[derive(Clone)]
pub struct AdminToken(String);

impl AdminToken {
    /// An operator-chosen token; short ones are refused because the admin
    /// API can mint credentials for every partner.
    pub fn new(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.len() < MIN_ADMIN_TOKEN_LEN {
            return Err(format!(
                "the admin token must be at least {MIN_ADMIN_TOKEN_LEN} characters (got {}); \
                 generate one with: openssl rand -base64 32",
                text.len()
            ));
        }
        Ok(AdminToken(text.to_owned()))
    }

    /// Reads the token file beside the database, creating it (mode 0600)
    /// on first start.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), String> {
        let created = write_new_file_0600(path, &random_base64url(32))
            .map_err(|e| format!("cannot create admin token file {}: {e}", path.display()))?;
        let text = fs::read_to_string(path)
            .map_err(|e| format!("cannot read admin token file {}: {e}", path.display()))?;
        Ok((AdminToken::new(&text)?, created))
    }

    /// Constant-time: both sides are hashed first so that neither the
    /// content nor the length of the real token shows in the timing.
    pub fn matches(&self, presented: &str) -> bool {
        let expected = Sha256::digest(self.0.as_bytes());
        let presented = Sha256::digest(presented.as_bytes());
        expected.ct_eq(&presented).into()
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Creates `path` with mode 0600 holding `content` unless it already exists,
/// and returns whether it did. Servers and CLIs may start at once on a
/// fresh database, so nobody may ever see the file half-written: the
/// content is written and synced in a temporary file beside it, which is
/// then linked into place only if `path` still does not exist. Whoever
/// loses that race reads the winner's complete file. A crash leaves at
/// worst a stray temporary file, never an empty key file.
fn write_new_file_0600(path: &Path, content: &str) -> io::Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut file = tempfile::Builder::new()
        .prefix(".keygate-new-")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    file.write_all(content.as_bytes())?;
    file.write_all(b"\n")?;
    file.as_file().sync_all()?;
    match file.persist_noclobber(path) {
        Ok(_) => {
            // The new name must survive a power cut too: a key sealed with
            // this master key is useless without it.
            fs::File::open(dir)?.sync_all()?;
            Ok(true)
        }
        // The temporary file is removed when `lost.file` drops.
        Err(lost) if lost.error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(failed) => Err(failed.error),
    }
}

/// The master key: encrypts key secrets at rest with XChaCha20-Poly1305.
/// Each secret gets a random 24-byte nonce (safe to pick at random at that
/// size) and is bound to its key id as associated data, so a ciphertext
/// copied into another row does not decrypt.
pub struct MasterKey(XChaCha20Poly1305);

#[derive(Clone)]
pub struct Sealed {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl MasterKey {
    /// Reads the key file (43 characters of base64url, or 64 hex digits),
    /// creating it with mode 0600 on first start.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), String> {
        let created = write_new_file_0600(path, &random_base64url(32))
            .map_err(|e| format!("cannot create master key file {}: {e}", path.display()))?;
        Ok((Self::load(path)?, created))
    }

    /// Reads an existing key file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = fs::read_to_string(path)
            .map_err(|e| format!("cannot read master key file {}: {e}", path.display()))?;
        let bytes = Self::decode(text.trim()).ok_or_else(|| {
            format!(
                "master key file {} must hold 32 bytes as base64url (43 characters) or hex (64 characters)",
                path.display()
            )
        })?;
        Ok(MasterKey(
            XChaCha20Poly1305::new_from_slice(&bytes).expect("32-byte key"),
        ))
    }

    /// Either documented form. Hex first, by length: 64 hex digits are also
    /// valid base64url (of 48 bytes), so trying base64url first refused
    /// every hex key file.
    fn decode(text: &str) -> Option<Vec<u8>> {
        let bytes = if text.len() == 64 {
            const_hex::decode(text).ok()?
        } else {
            URL_SAFE_NO_PAD.decode(text).ok()?
        };
        (bytes.len() == 32).then_some(bytes)
    }

    pub fn seal(&self, plaintext: &[u8], bound_to: &str) -> Sealed {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .0
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: bound_to.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory input");
        Sealed {
            nonce: nonce.to_vec(),
            ciphertext,
        }
    }

    /// `None` when the ciphertext was not made by this key for this id.
    pub fn open(&self, sealed: &Sealed, bound_to: &str) -> Option<Vec<u8>> {
        if sealed.nonce.len() != 24 {
            return None;
        }
        self.0
            .decrypt(
                XNonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: bound_to.as_bytes(),
                },
            )
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_follow_the_contract() {
        let key_id = crate::domain::KeyId::new().into_string();
        assert!(key_id.starts_with("pk_") && key_id.len() == 27);
        assert!(key_id[3..].bytes().all(|b| b.is_ascii_alphanumeric()));
        let secret = new_secret();
        assert!(secret.expose().starts_with("sk_") && secret.expose().len() == 46);
        assert!(URL_SAFE_NO_PAD.decode(&secret.expose()[3..]).unwrap().len() == 32);
        assert_ne!(new_secret(), new_secret());
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
    }

    /// Both documented forms load, and mean the same key: the hex form was
    /// refused, because its 64 digits also decode as base64url (48 bytes).
    #[test]
    fn master_key_files_load_as_hex_and_as_base64url() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0u8..32).map(|b| b.wrapping_mul(37)).collect();
        let hex_file = dir.path().join("hex");
        fs::write(&hex_file, format!("{}\n", const_hex::encode(&bytes))).unwrap();
        let b64_file = dir.path().join("b64");
        fs::write(&b64_file, URL_SAFE_NO_PAD.encode(&bytes)).unwrap();
        let from_hex = MasterKey::load(&hex_file).unwrap();
        let from_b64 = MasterKey::load(&b64_file).unwrap();
        let sealed = from_hex.seal(b"sk_x", "pk_a");
        assert_eq!(from_b64.open(&sealed, "pk_a").unwrap(), b"sk_x");
        let short = dir.path().join("short");
        fs::write(&short, "abcd").unwrap();
        assert!(MasterKey::load(&short).is_err());
    }

    #[test]
    fn master_key_seals_bound_to_an_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mk");
        let (key, created) = MasterKey::load_or_create(&path).unwrap();
        assert!(created);
        let mode = fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let sealed = key.seal(b"sk_x", "pk_a");
        assert_eq!(key.open(&sealed, "pk_a").unwrap(), b"sk_x");
        assert!(key.open(&sealed, "pk_b").is_none());
        let (again, created) = MasterKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(again.open(&sealed, "pk_a").unwrap(), b"sk_x");
    }

    /// Servers and CLIs started at once on a fresh database race to create
    /// these files: every one of them must get the whole file, the same one.
    #[test]
    fn concurrent_first_starts_all_read_the_same_complete_file() {
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let master_key = dir.path().join("mk");
            let admin_token = dir.path().join("token");
            let start = std::sync::Barrier::new(8);
            let results: Vec<_> = std::thread::scope(|s| {
                let threads: Vec<_> = (0..8)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            let key = MasterKey::load_or_create(&master_key);
                            let token = AdminToken::load_or_create(&admin_token);
                            (key, token)
                        })
                    })
                    .collect();
                threads.into_iter().map(|t| t.join().unwrap()).collect()
            });
            let sealed = MasterKey::load_or_create(&master_key)
                .unwrap()
                .0
                .seal(b"sk_x", "pk_a");
            let mut created = (0, 0);
            for (key, token) in results {
                let (key, key_created) = key.unwrap_or_else(|e| panic!("round {round}: {e}"));
                let (token, token_created) = token.unwrap_or_else(|e| panic!("round {round}: {e}"));
                assert_eq!(key.open(&sealed, "pk_a").as_deref(), Some(&b"sk_x"[..]));
                assert!(token.matches(fs::read_to_string(&admin_token).unwrap().trim()));
                created.0 += usize::from(key_created);
                created.1 += usize::from(token_created);
            }
            assert_eq!(created, (1, 1), "round {round}: exactly one creator each");
            let leftovers = fs::read_dir(dir.path()).unwrap().count();
            assert_eq!(
                leftovers, 2,
                "round {round}: no temporary files left behind"
            );
        }
    }

    #[test]
    fn admin_token_rules() {
        assert!(AdminToken::new("short").is_err());
        let token = AdminToken::new(&"t".repeat(32)).unwrap();
        assert!(token.matches(&"t".repeat(32)));
        assert!(!token.matches(&"t".repeat(31)));
        assert!(!token.matches(""));
    }
}
