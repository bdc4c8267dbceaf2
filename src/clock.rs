//! The one clock keygate reads: Unix seconds, as timestamps are signed.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        // A clock before 1970 is broken; 0 makes every signature "out of
        // range", failing closed, rather than panicking.
        .unwrap_or(0)
}
