-- A pool is for a signature key, a ciphersuite and a credential: the
-- credential can change (a renewed certificate, a new identity string)
-- while the key stays, and a KeyPackage carrying the old one must not be
-- counted, uploaded or handed out as the new one's. Each row records the
-- fingerprint (SHA-256, see PoolScope::credential_fingerprint) of its leaf
-- node's credential. Rows written before this migration are filled in from
-- their stored bundles right after it, in the same transaction; the empty
-- blob means "not known" (no bundle, or one that could not be read).
ALTER TABLE keypackage_pool_metadata ADD COLUMN credential BLOB NOT NULL DEFAULT x'';

-- The scope's covering index gains the credential after the ciphersuite: a
-- pool reads the range of its own credential, and the hard cap and the
-- stale KeyPackages of its signature key and ciphersuite read the range of
-- all of them.
DROP INDEX keypackage_pool_metadata_scope_expiry;
CREATE INDEX keypackage_pool_metadata_scope_expiry
    ON keypackage_pool_metadata
       (signature_key, ciphersuite, credential, last_resort, not_after, status,
        reservation_expires_at, retired_until);

-- The counts gain the credential too. Replaces V5's table and the two
-- triggers V6 left (inserts are counted by this crate's code).
DROP TRIGGER keypackage_pool_counts_after_delete;
DROP TRIGGER keypackage_pool_counts_after_update;
DROP TABLE keypackage_pool_counts;

CREATE TABLE keypackage_pool_counts (
    signature_key BLOB NOT NULL,
    ciphersuite INTEGER NOT NULL,
    credential BLOB NOT NULL,
    status TEXT NOT NULL,
    last_resort INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (signature_key, ciphersuite, credential, status, last_resort)
) WITHOUT ROWID;

INSERT INTO keypackage_pool_counts
    (signature_key, ciphersuite, credential, status, last_resort, count)
SELECT signature_key, ciphersuite, credential, status, last_resort, COUNT(*)
FROM keypackage_pool_metadata
GROUP BY signature_key, ciphersuite, credential, status, last_resort;

CREATE TRIGGER keypackage_pool_counts_after_delete
AFTER DELETE ON keypackage_pool_metadata
BEGIN
    UPDATE keypackage_pool_counts SET count = count - 1
    WHERE signature_key = OLD.signature_key AND ciphersuite = OLD.ciphersuite
      AND credential = OLD.credential AND status = OLD.status
      AND last_resort = OLD.last_resort;
END;

CREATE TRIGGER keypackage_pool_counts_after_update
AFTER UPDATE OF status, last_resort, signature_key, ciphersuite, credential
    ON keypackage_pool_metadata
WHEN OLD.status IS NOT NEW.status OR OLD.last_resort IS NOT NEW.last_resort
  OR OLD.signature_key IS NOT NEW.signature_key OR OLD.ciphersuite IS NOT NEW.ciphersuite
  OR OLD.credential IS NOT NEW.credential
BEGIN
    UPDATE keypackage_pool_counts SET count = count - 1
    WHERE signature_key = OLD.signature_key AND ciphersuite = OLD.ciphersuite
      AND credential = OLD.credential AND status = OLD.status
      AND last_resort = OLD.last_resort;
    INSERT INTO keypackage_pool_counts
        (signature_key, ciphersuite, credential, status, last_resort, count)
    VALUES (NEW.signature_key, NEW.ciphersuite, NEW.credential, NEW.status, NEW.last_resort, 1)
    ON CONFLICT (signature_key, ciphersuite, credential, status, last_resort)
    DO UPDATE SET count = count + 1;
END;

-- A withdrawal records the credential of the KeyPackage it withdraws, so a
-- scope's withdrawals stay listed with it. Those recorded before this
-- migration keep the empty blob: their rows are gone, and with them the
-- credential. A new reason joins V7's list: credential_replaced, for a
-- KeyPackage retired because its key now presents another credential.
ALTER TABLE keypackage_pool_withdrawals ADD COLUMN credential BLOB NOT NULL DEFAULT x'';
