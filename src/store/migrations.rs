//! Both backends keep their schema as one SQL file split into versions at
//! lines `-- version N` (`schema.sql` for SQLite, `schema-postgres.sql`).
//! A database records the version it has reached; start-up applies the
//! newer blocks in order, each in its own transaction. Never edit a
//! released block: add a new one beneath it.

/// The versions of `schema` in order, as (version, SQL).
pub(crate) fn versions(schema: &str) -> Vec<(i64, String)> {
    let mut out: Vec<(i64, String)> = Vec::new();
    for line in schema.lines() {
        if let Some(number) = line.strip_prefix("-- version ") {
            let number = number
                .trim()
                .parse()
                .expect("schema: `-- version N` needs a number");
            out.push((number, String::new()));
        } else if let Some((_, sql)) = out.last_mut() {
            sql.push_str(line);
            sql.push('\n');
        }
    }
    out
}

/// The newest version in `schema`.
pub(crate) fn latest_version(schema: &str) -> i64 {
    versions(schema).last().map(|(v, _)| *v).unwrap_or(0)
}

/// Refuses a database that a newer keygate has already upgraded.
pub(crate) fn check_not_newer(current: i64, schema: &str) -> Result<(), String> {
    let latest = latest_version(schema);
    if current > latest {
        return Err(format!(
            "the database has schema version {current}, newer than this keygate knows ({latest}); upgrade keygate"
        ));
    }
    Ok(())
}
