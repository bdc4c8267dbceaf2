//! Refusals as a typed error.

use std::fmt;
use std::time::Duration;

/// A request keygate refused, with the contract's error code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: String,
    pub status: u16,
    pub message: String,
    pub request_id: Option<String>,
    /// With `timestamp_out_of_range`: the server's Unix time.
    pub server_time: Option<i64>,
    /// With 429 and 503.
    pub retry_after: Option<Duration>,
    /// With `signature_mismatch`: what the server signed over.
    pub server_string_to_sign: Option<String>,
    /// What this client signed over.
    pub string_to_sign: Option<String>,
}

impl Refusal {
    /// The refusal in an answer, or `None` when it is not one.
    /// `retry_after` and `request_id` are the answer's header values.
    pub fn parse(
        status: u16,
        retry_after: Option<&str>,
        request_id: Option<&str>,
        body: &[u8],
        string_to_sign: Option<&str>,
    ) -> Option<Refusal> {
        if status < 400 {
            return None;
        }
        let parsed: serde_json::Value = serde_json::from_slice(body).ok()?;
        let error = parsed.get("error")?;
        let code = error.get("code")?.as_str()?;
        let text = |name: &str| error.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        Some(Refusal {
            code: code.to_owned(),
            status,
            message: text("message").unwrap_or_default(),
            request_id: text("request_id").or_else(|| request_id.map(str::to_owned)),
            server_time: error.get("server_time").and_then(|v| v.as_i64()),
            retry_after: retry_after.and_then(parse_retry_after),
            server_string_to_sign: text("string_to_sign"),
            string_to_sign: string_to_sign.map(str::to_owned),
        })
    }

    /// Both strings to sign, the first differing line marked, when the
    /// server sent its own.
    pub fn diff(&self) -> Option<String> {
        Some(diff_lines(
            self.string_to_sign.as_deref()?,
            self.server_string_to_sign.as_deref()?,
        ))
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)?;
        if let Some(id) = &self.request_id {
            write!(f, " (request id {id})")?;
        }
        if let Some(diff) = self.diff() {
            write!(f, "\n{diff}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Refusal {}

/// Seconds; an HTTP date is treated as absent.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

/// Both strings to sign side by side, the first differing line marked with `>`.
pub fn diff_lines(ours: &str, theirs: &str) -> String {
    let a: Vec<&str> = ours.split('\n').collect();
    let b: Vec<&str> = theirs.split('\n').collect();
    let width = a
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    let mut out = format!("  {:width$} | server's", "ours");
    let mut marked = false;
    for i in 0..a.len().max(b.len()) {
        let left = a.get(i).copied().unwrap_or("");
        let right = b.get(i).copied().unwrap_or("");
        let mut mark = ' ';
        if left != right && !marked {
            mark = '>';
            marked = true;
        }
        out.push_str(&format!("\n{mark} {left:width$} | {right}"));
    }
    if !marked {
        out.push_str("\n  (the lines are equal: the secret differs)");
    }
    out
}
