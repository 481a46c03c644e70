-- Per-status counts kept current by triggers, so that counting the pool and
-- reading its health cost the same at a million rows as at ten.
CREATE TABLE keypackage_pool_counts (
    status TEXT NOT NULL,
    last_resort INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (status, last_resort)
) WITHOUT ROWID;

INSERT INTO keypackage_pool_counts (status, last_resort, count)
SELECT status, last_resort, COUNT(*) FROM keypackage_pool_metadata
GROUP BY status, last_resort;

CREATE TRIGGER keypackage_pool_counts_after_insert
AFTER INSERT ON keypackage_pool_metadata
BEGIN
    INSERT INTO keypackage_pool_counts (status, last_resort, count)
    VALUES (NEW.status, NEW.last_resort, 1)
    ON CONFLICT (status, last_resort) DO UPDATE SET count = count + 1;
END;

CREATE TRIGGER keypackage_pool_counts_after_delete
AFTER DELETE ON keypackage_pool_metadata
BEGIN
    UPDATE keypackage_pool_counts SET count = count - 1
    WHERE status = OLD.status AND last_resort = OLD.last_resort;
END;

CREATE TRIGGER keypackage_pool_counts_after_update
AFTER UPDATE OF status, last_resort ON keypackage_pool_metadata
WHEN OLD.status IS NOT NEW.status OR OLD.last_resort IS NOT NEW.last_resort
BEGIN
    UPDATE keypackage_pool_counts SET count = count - 1
    WHERE status = OLD.status AND last_resort = OLD.last_resort;
    INSERT INTO keypackage_pool_counts (status, last_resort, count)
    VALUES (NEW.status, NEW.last_resort, 1)
    ON CONFLICT (status, last_resort) DO UPDATE SET count = count + 1;
END;

-- Listing by status is always oldest first, so one (status, created_at)
-- index serves both columns; counting by status now reads the count table.
DROP INDEX keypackage_pool_metadata_status;
DROP INDEX keypackage_pool_metadata_created_at;
CREATE INDEX keypackage_pool_metadata_status_created_at
    ON keypackage_pool_metadata (status, created_at);

-- Expiry queries filter on status, the last-resort flag and (for reserved
-- KeyPackages) the reservation's end as well; with all of them in the index
-- they never read the table rows.
DROP INDEX keypackage_pool_metadata_not_after;
CREATE INDEX keypackage_pool_metadata_expiry
    ON keypackage_pool_metadata (not_after, status, last_resort, reservation_expires_at);

-- The few last-resort KeyPackages, found without scanning the one-time ones.
-- Partial, so one-time KeyPackages cost it nothing; queries name it with
-- INDEXED BY, as the planner cannot tell how few rows it holds.
CREATE INDEX keypackage_pool_metadata_last_resort
    ON keypackage_pool_metadata (not_after, status) WHERE last_resort = 1;
