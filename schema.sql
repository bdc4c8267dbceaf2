-- keygate's one SQLite schema, applied at start-up by src/store/schema.rs.
--
-- Each block below is one schema version. A database records the version it
-- has reached in `PRAGMA user_version`; start-up applies the blocks above it,
-- in order, each in its own transaction. Never edit a released block: add a
-- new one beneath it. Blocks are separated by lines of the form
-- `-- version N`.

-- version 1
-- Partners. One application holds any number of keys.
CREATE TABLE apps (
    app_id      TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL              -- Unix seconds
);

-- Keys. The secret is never stored: only its AEAD ciphertext under the master
-- key, bound to the key id so a ciphertext cannot be moved to another row.
CREATE TABLE keys (
    key_id            TEXT PRIMARY KEY,
    app_id            TEXT NOT NULL REFERENCES apps(app_id),
    secret_nonce      BLOB NOT NULL,
    secret_ciphertext BLOB NOT NULL,
    created_at        INTEGER NOT NULL,
    expires_at        INTEGER,                -- NULL: no expiry
    revoked_at        INTEGER,                -- NULL: not revoked
    last_used_at      INTEGER                 -- written in batches, not per request
);
CREATE INDEX keys_by_app ON keys(app_id, created_at);

-- The replay window, as an append-only log: one row per accepted
-- (key_id, nonce) pair. Rows are only ever appended at the end of the id
-- order, so a commit dirties a page or two instead of one page per row (with
-- a unique index on random nonces, signed throughput under load was halved:
-- see BENCHMARKS.md).
-- Uniqueness is enforced by the nonce writer (src/store/nonce_window.rs):
-- inside its write transaction, which SQLite serialises across every
-- process, it first reads all rows appended since its last transaction,
-- then checks and appends. AUTOINCREMENT keeps ids strictly increasing even
-- after a purge empties the table, which that catch-up relies on.
-- `expires_at` is ts + skew + 1: until then the timestamp check alone would
-- not refuse a replay; after it the row may be purged.
CREATE TABLE nonce_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id      TEXT NOT NULL,
    nonce       TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);

-- Every admin change: who, what, when, which ids; never a secret.
CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,                -- "admin-api" or "cli"
    action      TEXT NOT NULL,                -- e.g. "key.revoke"
    app_id      TEXT,
    key_id      TEXT,
    detail      TEXT                          -- JSON, never secrets
);

-- Small named values: the master key check and the key-status version that
-- other keygate processes poll to see revocations and rotations.
CREATE TABLE meta (
    name   TEXT PRIMARY KEY,
    value  BLOB
);
INSERT INTO meta(name, value) VALUES ('keys_version', 0);

-- Any change a verifier must notice (new key, revocation, expiry change)
-- bumps keys_version; last_used_at updates do not.
CREATE TRIGGER keys_insert_bumps_version AFTER INSERT ON keys BEGIN
    UPDATE meta SET value = value + 1 WHERE name = 'keys_version';
END;
CREATE TRIGGER keys_status_bumps_version AFTER UPDATE OF expires_at, revoked_at ON keys BEGIN
    UPDATE meta SET value = value + 1 WHERE name = 'keys_version';
END;

-- version 2
-- The replay window, one row per commit instead of one row per pair: the
-- nonce writer puts every pair its shared transaction accepted into one row,
-- a line each in `entries` (`key_id TAB nonce TAB expires_at`), so a commit
-- costs one insert however many requests share it (the per-row inserts were
-- the writer's largest cost under load: see BENCHMARKS.md). `expires_at` is
-- the latest expiry in the batch; the row may be purged once it has passed.
-- Catch-up works as in version 1 (each writer reads every batch appended
-- since its last transaction before it checks and appends), which needs ids
-- that only grow: a new row gets max(id) + 1 and the purge never deletes the
-- newest batch, so no AUTOINCREMENT (and no sqlite_sequence write per
-- commit) is needed.
CREATE TABLE nonce_batches (
    id          INTEGER PRIMARY KEY,
    expires_at  INTEGER NOT NULL,
    entries     TEXT NOT NULL
);
-- Pairs recorded by a version-1 keygate stay in the window.
INSERT INTO nonce_batches(expires_at, entries)
    SELECT expires_at, key_id || char(9) || nonce || char(9) || expires_at || char(10)
    FROM nonce_log ORDER BY id;
DROP TABLE nonce_log;

-- version 3
-- Which keygate process made each change (`serve@host:pid`, `cli@host`),
-- beside who asked (`actor`): with several instances on one database an
-- operator needs both.
ALTER TABLE audit_events ADD COLUMN instance TEXT;

-- version 4
-- Access policies (CONTRACT.md section 8) as validated JSON; NULL: none.
-- A key's `name` is for humans ("ERP sync, prod"). `policy_seq` moves
-- whenever the key's policy or its application's is replaced: the nonce
-- writer records a pair only if the request was checked against the
-- current one, and the change bumps keys_version so every process's cache
-- reloads it.
ALTER TABLE apps ADD COLUMN policy TEXT;
ALTER TABLE keys ADD COLUMN name TEXT;
ALTER TABLE keys ADD COLUMN policy TEXT;
ALTER TABLE keys ADD COLUMN policy_seq INTEGER NOT NULL DEFAULT 0;
CREATE TRIGGER keys_policy_bumps_version AFTER UPDATE OF policy_seq ON keys BEGIN
    UPDATE meta SET value = value + 1 WHERE name = 'keys_version';
END;
