//! Application and key ids (CONTRACT.md section 1): a fixed prefix and
//! random alphanumerics, made only by [`AppId::new`] / [`KeyId::new`] or
//! read back by `parse()`. Safe to log.

use std::fmt;

use rand::distr::{Alphanumeric, SampleString};

use super::Invalid;

/// 24 alphanumerics carry 24 * log2(62) = 142 bits, above the contract's 120.
const KEY_ID_RANDOM_CHARS: usize = 24;
const APP_ID_RANDOM_CHARS: usize = 20;
/// The KG1 header bounds a key id at 128 characters (`signature.rs`).
const MAX_ID_LEN: usize = 128;

macro_rules! id_type {
    ($name:ident, $prefix:literal, $random:expr, $what:literal) => {
        #[doc = concat!("The id of ", $what, ": `", $prefix, "` and alphanumerics.")]
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// A fresh random id.
            pub fn new() -> Self {
                $name(format!(
                    "{}{}",
                    $prefix,
                    Alphanumeric.sample_string(&mut rand::rng(), $random)
                ))
            }

            /// An id as written (an admin API path, a CLI argument, a
            /// database row): the prefix, then at least as many
            /// alphanumerics as keygate makes.
            pub fn parse(text: &str) -> Result<Self, Invalid> {
                let random = text.strip_prefix($prefix).unwrap_or("");
                let valid = text.len() <= MAX_ID_LEN
                    && random.len() >= $random
                    && random.bytes().all(|b| b.is_ascii_alphanumeric());
                if valid {
                    Ok($name(text.to_owned()))
                } else {
                    Err(Invalid(format!(
                        "{text:?} is not {} id: {} followed by at least {} letters and digits",
                        $what, $prefix, $random
                    )))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    };
}

id_type!(KeyId, "pk_", KEY_ID_RANDOM_CHARS, "a key");
id_type!(AppId, "app_", APP_ID_RANDOM_CHARS, "an application");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_ids_parse_and_others_do_not() {
        let key = KeyId::new();
        assert_eq!(KeyId::parse(key.as_str()), Ok(key.clone()));
        assert!(key.as_str().starts_with("pk_") && key.as_str().len() == 27);
        let app = AppId::new();
        assert_eq!(AppId::parse(app.as_str()), Ok(app));
        for bad in [
            "",
            "pk_",
            "pk_short",
            "sk_4vQm2R7yXc9LpT3sWd8Zk1Bn",
            "pk_4vQm2R7yXc9LpT3sWd8Zk1B!",
            "app_x",
        ] {
            assert!(KeyId::parse(bad).is_err(), "{bad}");
        }
        assert!(KeyId::parse(&format!("pk_{}", "a".repeat(200))).is_err());
        assert!(AppId::parse(key.as_str()).is_err());
    }
}
