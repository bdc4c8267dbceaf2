//! Sign requests to keygate-protected APIs.
//!
//! [`sign`] signs one request for any HTTP client. With the `reqwest`
//! feature, [`KeygateClient`] sends `reqwest` requests signed over the exact
//! bytes sent, retries 503 and 429 safely (signed afresh each time), corrects
//! clock skew from the server's `server_time`, and returns refusals as a
//! typed [`Refusal`] that shows both strings to sign.
//!
//! ```
//! let signed = keygate_client::sign(&keygate_client::SignRequest {
//!     key_id: "pk_4vQm2R7yXc9LpT3sWd8Zk1Bn",
//!     secret: "sk_Zq3vX9mR2tY7uW1pL8sK4dF6gH0jB5nC2xV7bM9aQeE",
//!     method: "GET",
//!     target: "/v1/whoami",
//!     body: b"",
//!     timestamp: 1700000000,
//!     nonce: Some("9f86d081884c7d659a2feaa0c55ad015"),
//!     scheme: keygate_client::Scheme::Kg1,
//! });
//! assert!(signed.headers[0].1.starts_with("KG1-HMAC-SHA256 KeyId=pk_4vQm"));
//! ```

mod refusal;
mod signer;
mod signing;

#[cfg(feature = "reqwest")]
mod reqwest_client;

pub use refusal::{diff_lines, Refusal};
pub use signer::{Attempts, RetryPolicy, Signer, IDEMPOTENT_METHODS};
pub use signing::{new_nonce, sign, string_to_sign, Scheme, SignRequest, Signed, KG1};

#[cfg(feature = "reqwest")]
pub use reqwest_client::{Error, KeygateClient};
