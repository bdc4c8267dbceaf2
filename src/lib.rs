//! keygate: issues key id / secret pairs to partner applications and accepts
//! a request only when it carries a valid HMAC-SHA256 signature.
//!
//! - [`signature`]: the KG1 scheme itself, pure (no I/O); shared by the
//!   server, the CLI and the client examples.
//! - [`rfc9421`]: RFC 9421 HTTP Message Signatures (hmac-sha256), pure too.
//! - [`canonical_path`]: the one form of path keygate forwards and judges,
//!   pure: what common servers would read differently is refused.
//! - [`domain`]: ids, names, grace periods and expiry times, each with a
//!   `parse()` that is the only way in.
//! - [`clock`]: the one clock, the system's or a test's manual one.
//! - [`credentials`]: secrets, the admin token and the master key.
//! - [`store`]: SQLite: applications, keys, the nonce window, the audit log.
//! - [`http`]: the public and admin listeners (actix-web).
//! - [`error`]: the one error type and its mapping to HTTP answers.
//! - [`cli`]: the `keygate` command line, one file per command.
//! - [`load_generator`]: `keygate bench`, signed vs unauthenticated load.
//! - [`metrics`]: what `GET /admin/metrics` reports to an operator.
//! - [`policy`]: access policies (routes, source networks, rate limits), pure.

pub mod canonical_path;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod domain;
pub mod error;
pub mod http;
pub mod load_generator;
pub mod metrics;
pub mod policy;
pub mod rfc9421;
pub mod signature;
pub mod store;
pub mod tls_roots;

pub use config::Config;
pub use error::Error;
