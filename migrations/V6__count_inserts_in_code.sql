-- The per-status counts no longer follow inserts by trigger: running the
-- trigger's upsert for every new row cost as much as a third of what storing
-- a KeyPackage costs. This crate now counts what it inserts itself, in the
-- same transaction: each row written alone, and each batch of generated
-- KeyPackages once. Updates and deletes are still counted by their triggers.
-- A row inserted by another writer is not counted: verify() reports the
-- difference and repair() recounts.
DROP TRIGGER keypackage_pool_counts_after_insert;
