//! How long a rotated key keeps working beside its successor, so partners
//! can deploy the new secret without an outage.

use std::time::Duration;

use super::Invalid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracePeriod(i64);

impl GracePeriod {
    /// A day: the contract's default for the admin API and the CLI alike.
    pub const DEFAULT: GracePeriod = GracePeriod(86_400);
    /// A year: a longer overlap is a second key, not a rotation.
    pub const MAX_SECONDS: i64 = 365 * 24 * 3600;

    /// Whole seconds, 0 (the old key stops at once) to a year.
    pub fn parse(seconds: i64) -> Result<Self, Invalid> {
        if (0..=Self::MAX_SECONDS).contains(&seconds) {
            Ok(GracePeriod(seconds))
        } else {
            Err(Invalid(format!(
                "grace_seconds must be between 0 and {}",
                Self::MAX_SECONDS
            )))
        }
    }

    /// The CLI's `--grace 24h`.
    pub fn from_duration(duration: Duration) -> Result<Self, Invalid> {
        Self::parse(i64::try_from(duration.as_secs()).unwrap_or(i64::MAX))
    }

    pub fn seconds(self) -> i64 {
        self.0
    }
}

impl Default for GracePeriod {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grace_period_is_zero_to_a_year() {
        assert_eq!(GracePeriod::parse(0).unwrap().seconds(), 0);
        assert_eq!(GracePeriod::default().seconds(), 86_400);
        assert!(GracePeriod::parse(GracePeriod::MAX_SECONDS).is_ok());
        assert!(GracePeriod::parse(GracePeriod::MAX_SECONDS + 1).is_err());
        assert!(GracePeriod::parse(-1).is_err());
        assert!(GracePeriod::from_duration(Duration::from_secs(u64::MAX)).is_err());
    }
}
