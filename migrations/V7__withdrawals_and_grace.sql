-- The withdrawal outbox: KeyPackages a server may still hand out whose
-- private keys this client has deleted (or is about to, at the end of a
-- grace window). Written in the transaction that deletes or retires the
-- keys; a row leaves only when the application confirms the server has
-- withdrawn the KeyPackage, or abandons it. Deliberately not tied to the
-- metadata row: it outlives the KeyPackage, its scope and its signature key.
CREATE TABLE keypackage_pool_withdrawals (
    keypackage_ref BLOB PRIMARY KEY NOT NULL,
    signature_key BLOB NOT NULL,
    ciphersuite INTEGER NOT NULL,
    -- expired, surplus_last_resort, scope_removed, key_removed, consumed,
    -- removed, repaired: why the KeyPackage left service.
    reason TEXT NOT NULL,
    recorded_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_attempt_at INTEGER,
    last_error TEXT
) WITHOUT ROWID;

CREATE INDEX keypackage_pool_withdrawals_scope
    ON keypackage_pool_withdrawals (signature_key, ciphersuite);

-- When pending_upload() first handed a created KeyPackage to the
-- application: an upload may have reached the server before the client
-- recorded it, so from then on the server may hold it.
ALTER TABLE keypackage_pool_metadata ADD COLUMN offered_at INTEGER;

-- The end (Unix seconds) of the grace window of a one-time KeyPackage that
-- left service while a peer may still invite with it: its bundle stays
-- until then, so that a second Welcome naming it still joins. NULL while
-- the KeyPackage is in service.
ALTER TABLE keypackage_pool_metadata ADD COLUMN retired_until INTEGER;

CREATE INDEX keypackage_pool_metadata_retired
    ON keypackage_pool_metadata (retired_until) WHERE retired_until IS NOT NULL;

-- The scope's covering index gains the window's end, so that the pool's
-- queries can leave KeyPackages in their window alone without reading rows.
DROP INDEX keypackage_pool_metadata_scope_expiry;
CREATE INDEX keypackage_pool_metadata_scope_expiry
    ON keypackage_pool_metadata
       (signature_key, ciphersuite, last_resort, not_after, status, reservation_expires_at,
        retired_until);
