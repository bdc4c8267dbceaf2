//! `--set`, `--allow`, `--source-cidr`, `--rate`, `--burst`, `--clear`: the
//! access policy `keygate app policy` and `keygate key policy` set.

use clap::Args;

use super::terminal::read_data;
use crate::policy::{AccessPolicy, Holder};

/// A policy to set, as JSON or as flags; none of them: show the policy.
/// Setting replaces the whole policy, as `PUT .../policy` does.
#[derive(Args)]
pub struct PolicyArgs {
    /// The whole policy as JSON (CONTRACT.md section 8); @FILE reads a file, @- standard input.
    #[arg(long, value_name = "JSON", conflicts_with_all = ["allow", "source_cidr", "rate", "burst", "clear"])]
    set: Option<String>,
    /// An allowed route, "METHODS PATH": "GET,POST /v1/orders/*", "* /v1/whoami" (repeatable).
    #[arg(long, value_name = "METHODS PATH")]
    allow: Vec<String>,
    /// A network the key may be used from, e.g. 203.0.113.0/24 or 2001:db8::/32 (repeatable; keys only).
    #[arg(long, value_name = "CIDR")]
    source_cidr: Vec<String>,
    /// Requests per second allowed.
    #[arg(long, value_name = "PER_SECOND")]
    rate: Option<f64>,
    /// Requests allowed at once after a quiet spell [default: one second's worth].
    #[arg(long, requires = "rate")]
    burst: Option<u32>,
    /// Remove every restriction.
    #[arg(long, conflicts_with_all = ["allow", "source_cidr", "rate", "burst"])]
    clear: bool,
}

impl PolicyArgs {
    /// The policy document the flags describe; `None` when none was given.
    fn document(&self) -> Result<Option<Vec<u8>>, String> {
        if let Some(json) = &self.set {
            return read_data(json).map(Some);
        }
        if self.clear {
            return Ok(Some(b"{}".to_vec()));
        }
        if self.allow.is_empty() && self.source_cidr.is_empty() && self.rate.is_none() {
            return Ok(None);
        }
        let mut document = serde_json::Map::new();
        if !self.allow.is_empty() {
            let rules = self
                .allow
                .iter()
                .map(|rule| {
                    let (methods, path) = rule.trim().split_once(char::is_whitespace).ok_or_else(
                        || format!("--allow {rule:?}: write \"METHODS PATH\", e.g. \"GET,POST /v1/orders/*\""),
                    )?;
                    let methods: Vec<&str> = methods.split(',').map(str::trim).collect();
                    Ok(serde_json::json!({ "methods": methods, "path": path.trim() }))
                })
                .collect::<Result<Vec<_>, String>>()?;
            document.insert("rules".into(), rules.into());
        }
        if !self.source_cidr.is_empty() {
            let cidrs: Vec<&str> = self
                .source_cidr
                .iter()
                .flat_map(|c| c.split(','))
                .map(str::trim)
                .collect();
            document.insert("source_cidrs".into(), cidrs.into());
        }
        if let Some(per_second) = self.rate {
            let mut limit = serde_json::json!({ "per_second": per_second });
            if let Some(burst) = self.burst {
                limit["burst"] = burst.into();
            }
            document.insert("rate_limit".into(), limit);
        }
        Ok(Some(
            serde_json::Value::Object(document).to_string().into_bytes(),
        ))
    }

    pub fn policy(&self, holder: Holder) -> Result<Option<AccessPolicy>, String> {
        self.document()?
            .map(|document| AccessPolicy::parse(&document, holder))
            .transpose()
    }
}
