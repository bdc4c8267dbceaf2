//! The `keygate` command line (CONTRACT.md section 7), one idea a file:
//!
//! - this file: the command tree and `main`'s dispatch;
//! - [`serve`]: `keygate serve`; [`settings`]: its flags, variables and
//!   config file laid over `Config`'s defaults; [`config_command`]:
//!   `keygate config show`;
//! - [`db_args`]: the database flags every command shares;
//! - [`logging`]: how the server logs;
//! - [`app_commands`], [`key_commands`], [`policy_args`], [`audit`]: the
//!   admin commands, which work on the database directly;
//! - [`request`]: a curl that signs;
//! - [`backup`]: `keygate backup` and `keygate restore`;
//! - [`bench`]: the load generator's command;
//! - [`terminal`]: what the commands print and read.

mod app_commands;
mod audit;
mod backup;
mod bench;
mod config_command;
mod db_args;
mod key_commands;
mod logging;
mod policy_args;
mod request;
mod serve;
mod settings;
mod terminal;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "keygate",
    version,
    about = "HMAC-signed partner API keys: issue, verify, rotate, revoke"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the public and admin listeners.
    Serve(serve::ServeArgs),
    /// Manage partner applications (works on the database directly).
    #[command(subcommand)]
    App(app_commands::AppCommand),
    /// Manage keys (works on the database directly).
    #[command(subcommand)]
    Key(key_commands::KeyCommand),
    /// Show the audit log, newest first.
    Audit(audit::AuditArgs),
    /// Send one KG1-signed request and print the answer, like curl.
    Request(request::RequestArgs),
    /// Load-test a running keygate: unauthenticated vs signed throughput and latency.
    Bench(bench::BenchArgs),
    /// The effective settings of `keygate serve` (flags, environment, config file, defaults).
    #[command(subcommand)]
    Config(config_command::ConfigCommand),
    /// Copy the SQLite database to a new file, while keygate serves.
    Backup(backup::BackupArgs),
    /// Put a backup in place of the SQLite database (keygate stopped); signatures made
    /// before the restore are refused from then on.
    Restore(backup::RestoreArgs),
    /// Print shell completions for bash, zsh or fish.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    Man,
}

pub fn main() -> ExitCode {
    // A file-size limit (ulimit -f, systemd's LimitFSIZE) reached while
    // writing the database would otherwise kill the process (SIGXFSZ's
    // default action) in the middle of a commit. Ignored, the write fails
    // with EFBIG, SQLite reports the database full, and keygate refuses
    // requests with 503 until there is room again: fail closed, alive.
    // SAFETY: setting a signal's disposition to SIG_IGN runs no handler
    // code, and happens before any other thread exists.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // The subcommand's own matches: which values came from a flag and
    // which from the environment, for the settings' sources.
    let sub = |name: &str| {
        matches
            .subcommand_matches(name)
            .cloned()
            .unwrap_or_default()
    };
    let result = match cli.command {
        Command::Serve(args) => serve::run(args, &sub("serve")),
        Command::Config(cmd) => {
            let config = sub("config");
            let show = config
                .subcommand_matches("show")
                .cloned()
                .unwrap_or_default();
            config_command::run(cmd, &show)
        }
        Command::App(cmd) => app_commands::run(cmd),
        Command::Key(cmd) => key_commands::run(cmd),
        Command::Audit(args) => audit::run(args),
        Command::Request(args) => request::run(args),
        Command::Backup(args) => backup::run_backup(args),
        Command::Restore(args) => backup::run_restore(args),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "keygate",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| e.to_string()),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("keygate: {message}");
            ExitCode::from(2)
        }
    }
}
