//! `keygate audit`: the audit log, newest first.

use std::process::ExitCode;

use clap::Args;

use super::db_args::DbArgs;
use super::terminal::{print_out, when};

#[derive(Args)]
pub struct AuditArgs {
    #[command(flatten)]
    db: DbArgs,
    #[arg(long, default_value_t = 50)]
    limit: u32,
    #[arg(long)]
    json: bool,
}

pub fn run(args: AuditArgs) -> Result<ExitCode, String> {
    let events = args
        .db
        .open()?
        .audit_events(args.limit)
        .map_err(|e| e.to_string())?;
    print_out(args.json, &serde_json::json!({ "events": events }), || {
        events
            .iter()
            .map(|e| {
                format!(
                    "{}  {:<10} {:<22} app={} key={} {}",
                    when(e.at),
                    e.action,
                    e.actor,
                    e.app_id.as_deref().unwrap_or("-"),
                    e.key_id.as_deref().unwrap_or("-"),
                    e.detail
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(ExitCode::SUCCESS)
}
