//! The words admins and partners use, as types whose `parse()` is the only
//! way in (zero2prod's `SubscriberName`): an invalid id, name, grace period
//! or expiry cannot exist past the edge that read it. The admin API, the
//! CLI, the catalog and both storage backends take these types, so each
//! rule is written once, here.
//!
//! Pure: no I/O. A refusal is an [`Invalid`] with a sentence for the admin;
//! `error.rs` turns it into 400 `invalid_request`.

mod expires_at;
mod grace_period;
mod ids;
mod names;

pub use expires_at::ExpiresAt;
pub use grace_period::GracePeriod;
pub use ids::{AppId, KeyId};
pub use names::{AppName, KeyName};

/// Why a value was refused, in a sentence an admin can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);
