-- The codec that stores this database's OpenMLS entities (its
-- PoolCodec::NAME), so that the file is never read with another one: every
-- entity would then look damaged, and every KeyPackage orphaned. One row,
-- written when this crate creates the database or first opens it.
CREATE TABLE openmls_keypackage_pool_codec (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    name TEXT NOT NULL,
    recorded_at INTEGER NOT NULL
);
