-- The pool's record of every one-time KeyPackage whose bundle OpenMLS keeps in
-- openmls_key_packages. Rows are written and deleted in the same transaction
-- as those bundles.
CREATE TABLE keypackage_pool_metadata (
    keypackage_ref BLOB PRIMARY KEY NOT NULL,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    uploaded_at INTEGER,
    reserved_at INTEGER,
    spent_at INTEGER,
    not_after INTEGER NOT NULL,
    reservation_id TEXT,
    reservation_expires_at INTEGER,
    reserved_by TEXT,
    spent_group_id BLOB,
    spent_by TEXT,
    last_resort INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX keypackage_pool_metadata_status ON keypackage_pool_metadata (status);
CREATE INDEX keypackage_pool_metadata_not_after ON keypackage_pool_metadata (not_after);
CREATE INDEX keypackage_pool_metadata_created_at ON keypackage_pool_metadata (created_at);

-- Which signature public key is each local user's, so the key pair can be read
-- back from OpenMLS storage after a restart.
CREATE TABLE identities (
    username TEXT PRIMARY KEY NOT NULL,
    signature_public_key BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
