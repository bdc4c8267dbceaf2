//! Starting the real server (in-process on random loopback ports, or the
//! real binary) and talking to it over real HTTP, one idea a file:
//!
//! - [`http`]: keys, signing, answers, raw sockets;
//! - [`database`]: SQLite and PostgreSQL test databases, `on_both_backends!`;
//! - [`app`]: the in-process `Application` (optionally on a manual clock);
//! - [`binary`]: the real binary as a child process;
//! - [`concurrency`]: simultaneous copies and steady load;
//! - [`tls`]: throwaway certificates.

pub mod app;
pub mod binary;
pub mod concurrency;
pub mod database;
pub mod http;
pub mod tls;

pub use app::*;
pub use binary::*;
pub use concurrency::*;
pub use database::*;
pub use http::*;
pub use tls::*;
