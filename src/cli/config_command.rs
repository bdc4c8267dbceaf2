//! `keygate config show`: the settings `keygate serve` would run with, given
//! the same flags, variables and config file, each with where it came from
//! (flag, env, file or default); secrets redacted.

use std::process::ExitCode;

use clap::{ArgMatches, Args, Subcommand};

use super::serve::ServeArgs;
use super::settings;
use super::terminal::print_out;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Print the effective settings of `keygate serve` and where each comes from.
    Show(ShowArgs),
}

#[derive(Args)]
pub struct ShowArgs {
    #[command(flatten)]
    serve: ServeArgs,
    #[arg(long)]
    json: bool,
}

pub fn run(command: ConfigCommand, matches: &ArgMatches) -> Result<ExitCode, String> {
    let ConfigCommand::Show(args) = command;
    let (_, shown) = settings::resolve(args.serve, matches)?;
    let json: serde_json::Map<String, serde_json::Value> = shown
        .iter()
        .map(|s| {
            (
                s.name.to_owned(),
                serde_json::json!({ "value": s.value, "source": s.source }),
            )
        })
        .collect();
    print_out(args.json, &json, || {
        shown
            .iter()
            .map(|s| format!("{:<20} {:<40} ({})", s.name, s.value, s.source))
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(ExitCode::SUCCESS)
}
