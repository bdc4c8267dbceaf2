//! Databases made by an earlier release: start-up applies the schema's
//! later versions, and what the earlier one held is still there.

use crate::helpers::{cli, Backend, TestDb};
use crate::postgres_server;

/// The PostgreSQL schema before version `next`: what a release that
/// stopped at `next - 1` created.
fn postgres_schema_before(next: u32) -> String {
    let schema = include_str!("../../schema-postgres.sql");
    let marker = format!("-- version {next}\n");
    schema[..schema.find(&marker).expect("that version exists")].to_owned()
}

/// Version 3 keys the replay window by `keys.key_ref`, in a new table.
/// Pairs recorded before the upgrade move over: each still belongs to its
/// key and still cannot be recorded again, and a nonce one key used is
/// still new for another.
#[test]
fn postgres_pairs_recorded_before_version_3_are_kept() {
    let server = postgres_server::shared();
    let name = server.create_database();
    server.psql(&name, &postgres_schema_before(3));
    server.psql(
        &name,
        "CREATE TABLE keygate_schema_version (version bigint NOT NULL);
         INSERT INTO keygate_schema_version VALUES (2);
         INSERT INTO apps (app_id, name, created_at) VALUES ('app_1', 'one', 0);
         INSERT INTO keys (key_id, app_id, secret_nonce, secret_ciphertext, created_at)
             VALUES ('pk_a', 'app_1', '\\x00', '\\x00', 0), ('pk_b', 'app_1', '\\x00', '\\x00', 0);
         INSERT INTO nonces VALUES ('pk_a', 'nonce-one', 4102444800),
             ('pk_a', 'nonce-two', 4102444800), ('pk_b', 'nonce-three', 4102444800)",
    );
    let db = TestDb {
        backend: Backend::Postgres,
        setting: server.url(&name),
        dir: tempfile::tempdir().unwrap(),
    };
    std::fs::write(db.master_key_file().unwrap(), "ab".repeat(32)).unwrap();

    // Any command opens the store, and so upgrades it.
    cli(&db, &["app", "list"]);

    assert_eq!(
        server.psql(&name, "SELECT version FROM keygate_schema_version"),
        "3"
    );
    assert_eq!(
        server.psql(
            &name,
            "SELECT string_agg(k.key_id || ' ' || n.nonce || ' ' || n.expires_at, ', '
                 ORDER BY k.key_id, n.nonce)
             FROM nonces n JOIN keys k ON k.key_ref = n.key_ref"
        ),
        "pk_a nonce-one 4102444800, pk_a nonce-two 4102444800, pk_b nonce-three 4102444800"
    );
    let insert = |key_id: &str, nonce: &str| {
        server.psql(
            &name,
            &format!(
                "WITH i AS (INSERT INTO nonces SELECT key_ref, '{nonce}', 4102444800
                     FROM keys WHERE key_id = '{key_id}' ON CONFLICT DO NOTHING RETURNING 1)
                 SELECT count(*) FROM i"
            ),
        )
    };
    assert_eq!(
        insert("pk_a", "nonce-one"),
        "0",
        "a recorded pair is new again"
    );
    assert_eq!(
        insert("pk_b", "nonce-one"),
        "1",
        "another key's nonce is not new"
    );
}
