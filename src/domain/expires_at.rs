//! When a key stops working, as an admin sets it: an RFC 3339 time in the
//! future.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::Invalid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiresAt(i64);

impl ExpiresAt {
    /// `text` as RFC 3339 (`2030-01-31T12:00:00Z`), later than `now`
    /// (Unix seconds, from the caller's clock).
    pub fn parse(text: &str, now: i64) -> Result<Self, Invalid> {
        let at = OffsetDateTime::parse(text, &Rfc3339)
            .map(|t| t.unix_timestamp())
            .map_err(|e| {
                Invalid(format!(
                    "expires_at must be an RFC 3339 time such as 2030-01-31T12:00:00Z: {e}"
                ))
            })?;
        if at <= now {
            return Err(Invalid("expires_at must be in the future".into()));
        }
        Ok(ExpiresAt(at))
    }

    /// Unix seconds.
    pub fn unix(self) -> i64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expiry_is_a_future_rfc3339_time() {
        let now = 1_700_000_000;
        assert_eq!(
            ExpiresAt::parse("2030-01-31T12:00:00Z", now)
                .unwrap()
                .unix(),
            1_896_091_200
        );
        assert_eq!(
            ExpiresAt::parse("2030-01-31T13:00:00+01:00", now)
                .unwrap()
                .unix(),
            1_896_091_200
        );
        let past = ExpiresAt::parse("2020-01-01T00:00:00Z", now).unwrap_err();
        assert!(past.0.contains("future"), "{past}");
        let garbled = ExpiresAt::parse("tomorrow", now).unwrap_err();
        assert!(garbled.0.contains("RFC 3339"), "{garbled}");
    }
}
