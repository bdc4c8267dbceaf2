//! The database setting (`--db` / `KEYGATE_DB`, CONTRACT.md section 7): a
//! `postgres://` or `postgresql://` URL selects PostgreSQL; anything else
//! is the path of a SQLite file.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    Sqlite(PathBuf),
    /// The URL as given; it may hold a password, so it is never printed
    /// whole (see `Display`).
    Postgres(String),
}

impl Database {
    pub fn parse(text: &str) -> Database {
        let lower = text.get(..13).unwrap_or(text).to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            Database::Postgres(text.to_owned())
        } else {
            Database::Sqlite(PathBuf::from(text))
        }
    }

    /// The SQLite file, for the files keygate keeps beside it.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Database::Sqlite(path) => Some(path),
            Database::Postgres(_) => None,
        }
    }
}

impl From<PathBuf> for Database {
    fn from(path: PathBuf) -> Self {
        Database::Sqlite(path)
    }
}

impl From<&PathBuf> for Database {
    fn from(path: &PathBuf) -> Self {
        Database::Sqlite(path.clone())
    }
}

impl From<&Path> for Database {
    fn from(path: &Path) -> Self {
        Database::Sqlite(path.to_owned())
    }
}

/// The path, or the URL with any password replaced by `***`: safe to log.
impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "{}", path.display()),
            Database::Postgres(url) => f.write_str(&redact_password(url)),
        }
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Database({self})")
    }
}

pub fn redact_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            // `password=` may also come as a query parameter.
            let pairs: Vec<(String, String)> = parsed
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == "password" {
                        "***".into()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            if !pairs.is_empty() {
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        Err(_) => "postgres://<unparseable URL>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_select_postgres_and_never_print_their_password() {
        assert_eq!(
            Database::parse("./keygate.db"),
            Database::Sqlite("./keygate.db".into())
        );
        assert_eq!(
            Database::parse("postgresql.db"),
            Database::Sqlite("postgresql.db".into())
        );
        let db =
            Database::parse("postgres://kg:s3cret@db.internal:5432/keygate?sslmode=verify-full");
        assert!(matches!(db, Database::Postgres(_)));
        let shown = db.to_string();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("kg:***@db.internal:5432/keygate"), "{shown}");
        let db = Database::parse("POSTGRESQL://kg@h/db?password=hunter2&sslmode=require");
        assert!(matches!(db, Database::Postgres(_)));
        assert!(!format!("{db:?}").contains("hunter2"));
    }
}
