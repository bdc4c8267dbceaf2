//! What can go wrong in storage, in the store's own words. `error.rs` is the
//! one place that turns these into the contract's codes; nothing above the
//! store sees a rusqlite or tokio-postgres error.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no application with id {0}")]
    AppNotFound(String),
    #[error("no key with id {0}")]
    KeyNotFound(String),
    /// A change the data's rules refuse (rotating a revoked key).
    #[error("{0}")]
    Refused(String),
    /// The database could not answer: locked past the busy timeout,
    /// unreachable, restarting, out of disk, or an I/O error. Callers fail
    /// closed on it.
    #[error("database: {0}")]
    Unavailable(String),
}
