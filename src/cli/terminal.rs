//! What the commands print and read: JSON with `--json`, a human summary
//! otherwise; times as the admin API writes them; `@FILE` data.

use std::io::Read;

use serde::Serialize;

use crate::store::NewKey;

/// `--json` prints the API's JSON; otherwise a human summary.
pub fn print_out(json: bool, value: &impl Serialize, human: impl FnOnce() -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("serialisable")
        );
    } else {
        let text = human();
        if !text.is_empty() {
            println!("{text}");
        }
    }
}

/// Who the audit log names for a CLI change.
pub fn cli_actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

pub fn new_key_text(key: &NewKey) -> String {
    format!(
        "key_id:  {}\nsecret:  {}\napp_id:  {}\nname:    {}\nexpires: {}\n\nThe secret is shown only this once; store it now.",
        key.key_id,
        key.secret.expose(),
        key.app_id,
        key.name.as_deref().unwrap_or("-"),
        key.expires_at.map_or_else(|| "never".to_owned(), when),
    )
}

/// Times as the admin API writes them (RFC 3339, UTC), so what an admin
/// reads in the terminal can be pasted into `--expires-at` or a query.
pub fn when(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// A data argument: `@FILE` reads a file, `@-` standard input, anything
/// else is the data itself.
pub fn read_data(data: &str) -> Result<Vec<u8>, String> {
    match data.strip_prefix('@') {
        Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| e.to_string())?;
            Ok(buf)
        }
        Some(path) => std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}")),
        None => Ok(data.as_bytes().to_vec()),
    }
}
