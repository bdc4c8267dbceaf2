//! `keygate key create | list | rotate | revoke | policy`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use super::db_args::DbArgs;
use super::policy_args::PolicyArgs;
use super::terminal::{cli_actor, new_key_text, print_out, when};
use crate::domain::{AppId, ExpiresAt, GracePeriod, KeyId, KeyName};
use crate::policy::Holder;

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Create a key for an application; prints the secret, once.
    Create {
        app_id: String,
        /// RFC 3339 time after which the key stops working.
        #[arg(long)]
        expires_at: Option<String>,
        /// A label for humans, e.g. "ERP sync, prod".
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        db: DbArgs,
        #[arg(long)]
        json: bool,
    },
    /// List an application's keys (never their secrets).
    List {
        app_id: String,
        #[command(flatten)]
        db: DbArgs,
        #[arg(long)]
        json: bool,
    },
    /// Create a new key for the same application; the old one keeps working for the grace period.
    Rotate {
        key_id: String,
        /// How long the old key keeps working, e.g. 24h, 90m, 3600s [default: 24h].
        #[arg(long, value_parser = humantime::parse_duration)]
        grace: Option<Duration>,
        #[command(flatten)]
        db: DbArgs,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: refused from the next request on.
    Revoke {
        key_id: String,
        #[command(flatten)]
        db: DbArgs,
        #[arg(long)]
        json: bool,
    },
    /// Show or set a key's access policy (its application's applies too).
    Policy {
        key_id: String,
        #[command(flatten)]
        policy: PolicyArgs,
        #[command(flatten)]
        db: DbArgs,
        /// Accepted for symmetry with the other commands: the policy is always printed as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: KeyCommand) -> Result<ExitCode, String> {
    let err = |e: crate::store::StoreError| e.to_string();
    let invalid = |e: crate::domain::Invalid| e.to_string();
    match cmd {
        KeyCommand::Create {
            app_id,
            expires_at,
            name,
            db,
            json,
        } => {
            let app_id = AppId::parse(&app_id).map_err(invalid)?;
            let name = name
                .as_deref()
                .map(KeyName::parse)
                .transpose()
                .map_err(invalid)?;
            let catalog = db.open()?;
            let now = catalog.clock().now();
            let expires_at = expires_at
                .as_deref()
                .map(|at| ExpiresAt::parse(at, now))
                .transpose()
                .map_err(invalid)?;
            let key = catalog
                .create_key(&app_id, expires_at, name.as_ref(), &cli_actor())
                .map_err(err)?;
            print_out(json, &key, || new_key_text(&key));
        }
        KeyCommand::List { app_id, db, json } => {
            let app_id = AppId::parse(&app_id).map_err(invalid)?;
            let keys = db.open()?.list_keys(&app_id).map_err(err)?;
            print_out(json, &serde_json::json!({ "keys": keys }), || {
                keys.iter()
                    .map(|k| {
                        let status = serde_json::to_value(k.status).expect("status serialises");
                        format!(
                            "{}  {:<8}  created {}  expires {}  last used {}  name {}  policy {}",
                            k.key_id,
                            status.as_str().unwrap_or("?"),
                            when(k.created_at),
                            k.expires_at.map_or_else(|| "never".into(), when),
                            k.last_used_at.map_or_else(|| "never".into(), when),
                            k.name
                                .as_deref()
                                .map_or_else(|| "-".into(), |n| format!("{n:?}")),
                            k.policy,
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        KeyCommand::Rotate {
            key_id,
            grace,
            db,
            json,
        } => {
            let key_id = KeyId::parse(&key_id).map_err(invalid)?;
            let grace = grace
                .map_or(Ok(GracePeriod::DEFAULT), GracePeriod::from_duration)
                .map_err(invalid)?;
            let key = db
                .open()?
                .rotate_key(&key_id, grace, &cli_actor())
                .map_err(err)?;
            print_out(json, &key, || {
                format!(
                    "{}\n\nThe old key {key_id} keeps working for {} s.",
                    new_key_text(&key),
                    grace.seconds()
                )
            });
        }
        KeyCommand::Revoke { key_id, db, json } => {
            let key_id = KeyId::parse(&key_id).map_err(invalid)?;
            let key = db.open()?.revoke_key(&key_id, &cli_actor()).map_err(err)?;
            print_out(json, &key, || format!("revoked {}", key.key_id));
        }
        KeyCommand::Policy {
            key_id, policy, db, ..
        } => {
            let key_id = KeyId::parse(&key_id).map_err(invalid)?;
            let catalog = db.open()?;
            let shown = match policy.policy(Holder::Key)? {
                None => catalog.key_policy(&key_id),
                Some(policy) => catalog.set_key_policy(&key_id, &policy, &cli_actor()),
            }
            .map_err(err)?;
            print_out(true, &shown, String::new);
        }
    }
    Ok(ExitCode::SUCCESS)
}
