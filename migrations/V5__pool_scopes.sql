-- What each KeyPackage is for: its ciphersuite (the u16 code point), the
-- signature public key of its leaf node, and its credential type. A pool is
-- one (signature key, ciphersuite) pair, its scope. Rows written before this
-- migration are filled in from their stored bundles right after it, in the
-- same transaction; until then, and for rows made by hand without a bundle,
-- 0 and the empty key mean "no scope".
ALTER TABLE keypackage_pool_metadata ADD COLUMN ciphersuite INTEGER NOT NULL DEFAULT 0;
ALTER TABLE keypackage_pool_metadata ADD COLUMN signature_key BLOB NOT NULL DEFAULT x'';
ALTER TABLE keypackage_pool_metadata ADD COLUMN credential_type INTEGER NOT NULL DEFAULT 0;

-- Every pool query reads one scope: its expiry ranges, by status and
-- last-resort flag, without touching the rows (covering). It also serves
-- the last-resort queries V2's partial index was for.
CREATE INDEX keypackage_pool_metadata_scope_expiry
    ON keypackage_pool_metadata
       (signature_key, ciphersuite, last_resort, not_after, status, reservation_expires_at);
DROP INDEX keypackage_pool_metadata_last_resort;

-- The counts, kept per scope as well as per status, so that a pool's counts
-- stay a read of a few rows at any size. Replaces V2's table and triggers.
DROP TRIGGER keypackage_pool_counts_after_insert;
DROP TRIGGER keypackage_pool_counts_after_delete;
DROP TRIGGER keypackage_pool_counts_after_update;
DROP TABLE keypackage_pool_counts;

-- Keyed by scope first: a pool reads its own few rows, and scope listings
-- group in key order. Whole-database counts read every row, a handful per
-- scope.
CREATE TABLE keypackage_pool_counts (
    signature_key BLOB NOT NULL,
    ciphersuite INTEGER NOT NULL,
    status TEXT NOT NULL,
    last_resort INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (signature_key, ciphersuite, status, last_resort)
) WITHOUT ROWID;

INSERT INTO keypackage_pool_counts (status, last_resort, signature_key, ciphersuite, count)
SELECT status, last_resort, signature_key, ciphersuite, COUNT(*)
FROM keypackage_pool_metadata
GROUP BY status, last_resort, signature_key, ciphersuite;

CREATE TRIGGER keypackage_pool_counts_after_insert
AFTER INSERT ON keypackage_pool_metadata
BEGIN
    INSERT INTO keypackage_pool_counts (status, last_resort, signature_key, ciphersuite, count)
    VALUES (NEW.status, NEW.last_resort, NEW.signature_key, NEW.ciphersuite, 1)
    ON CONFLICT (signature_key, ciphersuite, status, last_resort)
    DO UPDATE SET count = count + 1;
END;

CREATE TRIGGER keypackage_pool_counts_after_delete
AFTER DELETE ON keypackage_pool_metadata
BEGIN
    UPDATE keypackage_pool_counts SET count = count - 1
    WHERE status = OLD.status AND last_resort = OLD.last_resort
      AND signature_key = OLD.signature_key AND ciphersuite = OLD.ciphersuite;
END;

CREATE TRIGGER keypackage_pool_counts_after_update
AFTER UPDATE OF status, last_resort, signature_key, ciphersuite ON keypackage_pool_metadata
WHEN OLD.status IS NOT NEW.status OR OLD.last_resort IS NOT NEW.last_resort
  OR OLD.signature_key IS NOT NEW.signature_key OR OLD.ciphersuite IS NOT NEW.ciphersuite
BEGIN
    UPDATE keypackage_pool_counts SET count = count - 1
    WHERE status = OLD.status AND last_resort = OLD.last_resort
      AND signature_key = OLD.signature_key AND ciphersuite = OLD.ciphersuite;
    INSERT INTO keypackage_pool_counts (status, last_resort, signature_key, ciphersuite, count)
    VALUES (NEW.status, NEW.last_resort, NEW.signature_key, NEW.ciphersuite, 1)
    ON CONFLICT (signature_key, ciphersuite, status, last_resort)
    DO UPDATE SET count = count + 1;
END;
