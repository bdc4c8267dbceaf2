//! `keygate app create | list | policy`.

use std::process::ExitCode;

use clap::Subcommand;

use super::db_args::DbArgs;
use super::policy_args::PolicyArgs;
use super::terminal::{cli_actor, print_out, when};
use crate::domain::{AppId, AppName};
use crate::policy::Holder;

#[derive(Subcommand)]
pub enum AppCommand {
    /// Create an application (a partner).
    Create {
        name: String,
        #[command(flatten)]
        db: DbArgs,
        #[arg(long)]
        json: bool,
    },
    /// List applications.
    List {
        #[command(flatten)]
        db: DbArgs,
        #[arg(long)]
        json: bool,
    },
    /// Show or set an application's access policy (its keys' policies narrow it further).
    Policy {
        app_id: String,
        #[command(flatten)]
        policy: PolicyArgs,
        #[command(flatten)]
        db: DbArgs,
        /// Accepted for symmetry with the other commands: the policy is always printed as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: AppCommand) -> Result<ExitCode, String> {
    match cmd {
        AppCommand::Create { name, db, json } => {
            let name = AppName::parse(&name).map_err(|e| e.to_string())?;
            let app = db
                .open()?
                .create_app(&name, &cli_actor())
                .map_err(|e| e.to_string())?;
            print_out(json, &app, || {
                format!("created app {} ({})", app.app_id, app.name)
            });
        }
        AppCommand::List { db, json } => {
            let apps = db.open()?.list_apps().map_err(|e| e.to_string())?;
            print_out(json, &serde_json::json!({ "apps": apps }), || {
                apps.iter()
                    .map(|a| {
                        format!(
                            "{}  {}  {}  keys {} live / {}  last used {}  policy {}",
                            a.app_id,
                            when(a.created_at),
                            a.name,
                            a.live_key_count,
                            a.key_count,
                            a.last_used_at.map_or_else(|| "never".into(), when),
                            a.policy
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        AppCommand::Policy {
            app_id, policy, db, ..
        } => {
            let app_id = AppId::parse(&app_id).map_err(|e| e.to_string())?;
            let catalog = db.open()?;
            let shown = match policy.policy(Holder::App)? {
                None => catalog.app_policy(&app_id),
                Some(policy) => catalog.set_app_policy(&app_id, &policy, &cli_actor()),
            }
            .map_err(|e| e.to_string())?;
            print_out(true, &shown, String::new);
        }
    }
    Ok(ExitCode::SUCCESS)
}
