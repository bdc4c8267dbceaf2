//! `keygate backup --to FILE` and `keygate restore --from FILE`: a copy of
//! the SQLite database taken while keygate serves, and putting one back
//! (`store/sqlite/backup.rs` says how, and why a restore refuses older
//! signatures). With PostgreSQL, restore with the database's own tools,
//! then `keygate restore --watermark`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::db_args::DbArgs;
use crate::clock::Clock;
use crate::store::sqlite::backup;
use crate::store::Database;

#[derive(Args)]
pub struct BackupArgs {
    /// The new file to write (it must not exist).
    #[arg(long, value_name = "FILE")]
    to: PathBuf,
    #[command(flatten)]
    db: DbArgs,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["from", "watermark"])))]
pub struct RestoreArgs {
    /// A file written by `keygate backup` (SQLite).
    #[arg(long, value_name = "FILE")]
    from: Option<PathBuf>,
    /// Only record the restore's time, so signatures made before it are refused: after
    /// restoring a PostgreSQL database with pg_restore or point-in-time recovery (any backend).
    #[arg(long)]
    watermark: bool,
    #[command(flatten)]
    db: DbArgs,
}

fn sqlite_path(db: &DbArgs) -> Result<PathBuf, String> {
    match db.store_config().database {
        Database::Sqlite(path) => Ok(path),
        Database::Postgres(_) => Err(
            "backup and restore --from are for the SQLite database; with PostgreSQL use pg_dump \
             and pg_restore or point-in-time recovery (and keep the master key file with the \
             dump), then run keygate restore --watermark"
                .into(),
        ),
    }
}

pub fn run_backup(args: BackupArgs) -> Result<ExitCode, String> {
    let db = sqlite_path(&args.db)?;
    backup::backup(&db, &args.to)?;
    eprintln!(
        "backed up {} to {} (mode 0600). Keep the master key file ({}.master-key unless \
         KEYGATE_MASTER_KEY_FILE says otherwise) safe too, but not beside it.",
        db.display(),
        args.to.display(),
        db.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn run_restore(args: RestoreArgs) -> Result<ExitCode, String> {
    let now = Clock::system().now();
    match &args.from {
        Some(from) => {
            let db = sqlite_path(&args.db)?;
            backup::restore(&db, from, now)?;
            eprintln!("restored {} from {}.", db.display(), from.display());
        }
        None => {
            args.db
                .open()?
                .backend()
                .set_signed_not_before(now)
                .map_err(|e| e.to_string())?;
            eprintln!("recorded the restore's time; (re)start every keygate instance now.");
        }
    }
    eprintln!(
        "Signatures made before now ({now}) are refused from here on, so nothing signed before \
         the restore can be replayed."
    );
    Ok(ExitCode::SUCCESS)
}
