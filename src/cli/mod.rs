//! The `keygate` command line (CONTRACT.md section 7), one idea a file:
//!
//! - this file: the command tree and `main`'s dispatch;
//! - [`serve`]: `keygate serve`, its flags laid over `Config`'s defaults;
//! - [`db_args`]: the database flags every command shares;
//! - [`logging`]: how the server logs;
//! - [`app_commands`], [`key_commands`], [`policy_args`], [`audit`]: the
//!   admin commands, which work on the database directly;
//! - [`request`]: a curl that signs;
//! - [`bench`]: the load generator's command;
//! - [`terminal`]: what the commands print and read.

mod app_commands;
mod audit;
mod bench;
mod db_args;
mod key_commands;
mod logging;
mod policy_args;
mod request;
mod serve;
mod terminal;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::App(cmd) => app_commands::run(cmd),
        Command::Key(cmd) => key_commands::run(cmd),
        Command::Audit(args) => audit::run(args),
        Command::Request(args) => request::run(args),
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
