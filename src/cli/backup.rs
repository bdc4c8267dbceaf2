//! `keygate backup --to FILE` and `keygate restore --from FILE`: a copy of
//! the SQLite database taken while keygate serves, and putting one back
//! (`store/sqlite/backup.rs` says how, and why a restore refuses older
//! signatures). With PostgreSQL, use the database's own tools.

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
pub struct RestoreArgs {
    /// A file written by `keygate backup`.
    #[arg(long, value_name = "FILE")]
    from: PathBuf,
    #[command(flatten)]
    db: DbArgs,
}

fn sqlite_path(db: &DbArgs) -> Result<PathBuf, String> {
    match db.store_config().database {
        Database::Sqlite(path) => Ok(path),
        Database::Postgres(_) => Err(
            "backup and restore are for the SQLite database; with PostgreSQL use pg_dump and \
             pg_restore (and keep the master key file with the dump)"
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
    let db = sqlite_path(&args.db)?;
    let now = Clock::system().now();
    backup::restore(&db, &args.from, now)?;
    eprintln!(
        "restored {} from {}. Signatures made before now ({now}) are refused from here on, so \
         nothing signed before the restore can be replayed.",
        db.display(),
        args.from.display()
    );
    Ok(ExitCode::SUCCESS)
}
