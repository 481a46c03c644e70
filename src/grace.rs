//! Grace windows: a one-time KeyPackage that leaves service while a peer
//! may still invite with it keeps its bundle until its window ends
//! (`retired_until`), so that a second Welcome naming it still joins; then
//! its bundle and metadata row are deleted together. A last-resort
//! KeyPackage retired because its key now presents another credential gets
//! a window too: nothing else in its scope replaces it.
//!
//! A KeyPackage in its window is `spent` (consumed by a Welcome) or
//! `expired` (withdrawn by any other path): never usable, never uploaded,
//! and, if one-time, counted in the hard cap like every one-time KeyPackage
//! whose keys are on disk.

use openmls::prelude::KeyPackageRef;
use openmls_sqlite_storage::{Codec, SqliteStorageProvider};
use openmls_traits::storage::StorageProvider as _;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::{
    erasure, error::Result, keypackage_ref::key_package_ref_from_bytes, metadata,
    status::KeyPackageStatus,
};

/// Puts the KeyPackage of `keypackage_ref` into its grace window, ending at
/// `until`, as `status` (`spent` or `expired`), in the open transaction. A
/// KeyPackage already in its window keeps the window it has.
pub(crate) fn retire(
    conn: &Connection,
    keypackage_ref: &[u8],
    status: KeyPackageStatus,
    until: i64,
    now: i64,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE keypackage_pool_metadata
         SET status = ?2, retired_until = ?3,
             spent_at = CASE WHEN ?2 = 'spent' THEN ?4 ELSE spent_at END
         WHERE keypackage_ref = ?1 AND retired_until IS NULL",
    )?
    .execute(params![keypackage_ref, status.as_str(), until, now])?;
    Ok(())
}

/// The earliest end of a window, if any KeyPackage is in one.
pub(crate) fn next_end(conn: &Connection) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached(
            "SELECT MIN(retired_until) FROM keypackage_pool_metadata
             WHERE retired_until IS NOT NULL",
        )?
        .query_row([], |row| row.get::<_, Option<i64>>(0))
        .optional()?
        .flatten())
}

/// Deletes, in one transaction of its own on `conn`, the bundle and row of
/// every KeyPackage whose window ended before or at `now` (Unix seconds),
/// and records the erasure their keys are owed in the same commit. Returns
/// how many went, and the end of the next window still running.
///
/// Works on any connection to the file, the eraser's included: the bundles
/// are deleted as `openmls_sqlite_storage` deletes them, under the key the
/// codec `C` gives their ref.
pub(crate) fn purge<C: Codec>(conn: &Connection, now: i64) -> Result<(usize, Option<i64>)> {
    // Most wakes of the eraser find no window ended: that is a read, and
    // takes no write lock from the storage.
    let next = next_end(conn)?;
    if next.is_none_or(|end| end > now) {
        return Ok((0, next));
    }
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let ended: Vec<Vec<u8>> = {
        let mut stmt = tx.prepare_cached(
            "SELECT keypackage_ref FROM keypackage_pool_metadata
             WHERE retired_until IS NOT NULL AND retired_until <= ?1",
        )?;
        let rows = stmt.query_map([now], |row| row.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    if !ended.is_empty() {
        let storage = SqliteStorageProvider::<C, &Connection>::new(&tx);
        for keypackage_ref in &ended {
            // A ref that is not a KeyPackageRef has no bundle to delete.
            if let Ok(kp_ref) = key_package_ref_from_bytes(keypackage_ref) {
                storage
                    .delete_key_package::<KeyPackageRef>(&kp_ref)
                    .map_err(crate::Error::from)?;
            }
            metadata::delete(&tx, keypackage_ref)?;
        }
        erasure::record(&tx)?;
    }
    let next = next_end(&tx)?;
    tx.commit()?;
    Ok((ended.len(), next))
}
