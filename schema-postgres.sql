-- keygate's PostgreSQL schema, applied at start-up by
-- src/store/postgres/schema.rs (SQLite has its own: schema.sql).
--
-- Each block below is one schema version; `keygate_schema_version` records
-- the version a database has reached. Start-up takes an advisory lock, so
-- instances starting at once apply each version exactly once, and applies
-- every newer block in one transaction (PostgreSQL's DDL is transactional:
-- an upgrade happens whole or not at all). Never edit a released block: add
-- a new one beneath it. Blocks start at lines of the form `-- version N`.
-- Times are Unix seconds, as on SQLite.

-- version 1
-- Partners. One application holds any number of keys.
CREATE TABLE apps (
    app_id      text PRIMARY KEY,
    name        text NOT NULL,
    created_at  bigint NOT NULL
);

-- Keys. The secret is never stored: only its AEAD ciphertext under the
-- master key, bound to the key id so a ciphertext cannot be moved to another
-- row. Every instance must hold the same master key.
CREATE TABLE keys (
    key_id            text PRIMARY KEY,
    app_id            text NOT NULL REFERENCES apps(app_id),
    secret_nonce      bytea NOT NULL,
    secret_ciphertext bytea NOT NULL,
    created_at        bigint NOT NULL,
    expires_at        bigint,                -- NULL: no expiry
    revoked_at        bigint,                -- NULL: not revoked
    last_used_at      bigint                 -- written in batches, not per request
);
CREATE INDEX keys_by_app ON keys(app_id, created_at);

-- The replay window: one row per accepted (key_id, nonce) pair. The primary
-- key is what makes a pair acceptable once across every instance: the nonce
-- ledger inserts a batch with ON CONFLICT DO NOTHING and accepts exactly the
-- rows the insert returns. A logged table (never UNLOGGED): a crash of the
-- server must not forget an acknowledged pair. `expires_at` is
-- ts + skew + 1; the purge deletes rows past it in small chunks, so the
-- table stays near rate x window.
CREATE TABLE nonces (
    key_id      text NOT NULL,
    nonce       text NOT NULL,
    expires_at  bigint NOT NULL,
    PRIMARY KEY (key_id, nonce)
);
CREATE INDEX nonces_by_expiry ON nonces(expires_at);

-- Every admin change: who asked (actor), which keygate process made it
-- (instance), what, when, which ids; never a secret.
CREATE TABLE audit_events (
    id          bigserial PRIMARY KEY,
    at          bigint NOT NULL,
    actor       text NOT NULL,
    instance    text,
    action      text NOT NULL,
    app_id      text,
    key_id      text,
    detail      text                         -- JSON, never secrets
);

-- Small named values: the master key check.
CREATE TABLE meta (
    name   text PRIMARY KEY,
    value  bytea NOT NULL
);

-- A counter that moves whenever a key is created, revoked or has its
-- expiry changed, by any instance or the CLI: every instance polls it to
-- refresh its key cache. last_used_at updates do not move it.
CREATE TABLE keys_version (
    only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    value     bigint NOT NULL
);
INSERT INTO keys_version(value) VALUES (0);
CREATE FUNCTION keygate_bump_keys_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE keys_version SET value = value + 1;
    RETURN NULL;
END
$$;
CREATE TRIGGER keys_insert_bumps_version AFTER INSERT ON keys
    FOR EACH STATEMENT EXECUTE FUNCTION keygate_bump_keys_version();
CREATE TRIGGER keys_status_bumps_version AFTER UPDATE OF expires_at, revoked_at ON keys
    FOR EACH STATEMENT EXECUTE FUNCTION keygate_bump_keys_version();

-- version 2
-- Access policies (CONTRACT.md section 8) as validated JSON; NULL: none.
-- A key's `name` is for humans ("ERP sync, prod"). `policy_seq` moves
-- whenever the key's policy or its application's is replaced: the batch
-- statement records a pair only if its request was checked against the
-- current one (the row is read FOR SHARE, so a policy change and a batch
-- are ordered like a revocation and a batch), and the change moves
-- keys_version so every instance's cache reloads it.
ALTER TABLE apps ADD COLUMN policy text;
ALTER TABLE keys ADD COLUMN name text;
ALTER TABLE keys ADD COLUMN policy text;
ALTER TABLE keys ADD COLUMN policy_seq bigint NOT NULL DEFAULT 0;
CREATE TRIGGER keys_policy_bumps_version AFTER UPDATE OF policy_seq ON keys
    FOR EACH STATEMENT EXECUTE FUNCTION keygate_bump_keys_version();

-- version 3
-- The replay window, rebuilt to cost PostgreSQL less for each accepted
-- pair (BENCHMARKS.md, round 9):
-- * a row names its key by `keys.key_ref`, a small integer, not by the
--   27-character key id: the primary key compares an integer first, and
--   its entries, the rows and their WAL are smaller;
-- * the nonce compares bytewise (COLLATE "C") whatever the database's
--   locale: a linguistic collation made every index comparison a strcoll;
-- * no index on expires_at: maintaining it cost about a tenth of each
--   insert. The purge sweeps the table in page ranges instead (TID range
--   scans, src/store/postgres/purge.rs), a whole pass a minute at most.
-- The primary key (key_ref, nonce) is still what accepts a pair once
-- across every instance. Keys are never deleted, so a key_ref is never
-- reused.
ALTER TABLE keys ADD COLUMN key_ref bigint GENERATED ALWAYS AS IDENTITY;
ALTER TABLE keys ADD CONSTRAINT keys_key_ref_key UNIQUE (key_ref);
CREATE TABLE nonces_by_ref (
    key_ref     bigint NOT NULL,
    nonce       text COLLATE "C" NOT NULL,
    expires_at  bigint NOT NULL
);
INSERT INTO nonces_by_ref (key_ref, nonce, expires_at)
    SELECT k.key_ref, n.nonce, n.expires_at FROM nonces n JOIN keys k ON k.key_id = n.key_id;
DROP TABLE nonces;
ALTER TABLE nonces_by_ref RENAME TO nonces;
-- Built after the copy: three times faster than growing it row by row
-- (1.5 s a million pairs).
ALTER TABLE nonces ADD CONSTRAINT nonces_pair PRIMARY KEY (key_ref, nonce);
