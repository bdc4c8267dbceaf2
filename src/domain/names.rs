//! Names admins give applications and keys ("Acme Corp", "ERP sync,
//! prod"): shown in terminals, logs and the console, so bounded and free
//! of control characters.

use std::fmt;

use super::Invalid;

const MAX_NAME_CHARS: usize = 200;

fn checked(text: &str) -> Result<String, Invalid> {
    let name = text.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(Invalid(format!(
            "name must be 1 to {MAX_NAME_CHARS} characters with no control characters"
        )));
    }
    Ok(name.to_owned())
}

macro_rules! name_type {
    ($name:ident, $what:literal) => {
        #[doc = concat!("The name of ", $what, ": trimmed, 1 to 200 characters, no control characters.")]
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            pub fn parse(text: &str) -> Result<Self, Invalid> {
                checked(text).map($name)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(AppName, "an application");
name_type!(KeyName, "a key");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            AppName::parse("  Acme Corp ").unwrap().as_str(),
            "Acme Corp"
        );
        assert_eq!(
            KeyName::parse("ERP sync, prod").unwrap().as_str(),
            "ERP sync, prod"
        );
        assert!(AppName::parse(&"é".repeat(200)).is_ok());
        for bad in ["", "   ", "a\nb", "tab\there", &"x".repeat(201)] {
            assert!(AppName::parse(bad).is_err(), "{bad:?}");
            assert!(KeyName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
