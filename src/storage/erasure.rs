//! Erasing old copies of secrets on demand; the schedule that erases them
//! by itself is [`ErasureSchedule`](crate::erasure::ErasureSchedule).

use super::PoolStorage;
use crate::{codec::PoolCodec, error::Result};

impl<C: PoolCodec> PoolStorage<C> {
    /// Removes old copies of deleted and overwritten rows from the
    /// database's files, so that the private keys of spent and pruned
    /// KeyPackages, and the secrets OpenMLS has replaced, cannot be read
    /// back from them.
    ///
    /// With `secure_delete` on (the default, see [`StorageOptions`](crate::StorageOptions)) SQLite
    /// overwrites deleted content in the database pages; in WAL mode the
    /// pages as they were before still sit in the `-wal` file until a
    /// checkpoint copies the new ones back and the log is truncated. This
    /// runs that checkpoint, without waiting for other connections. It runs
    /// by itself as the [`ErasurePolicy`](crate::ErasurePolicy) says: by default after each commit
    /// of this storage that deleted key material (a KeyPackage's bundle, or
    /// OpenMLS's epoch, encryption, signature or PSK secrets), and for one
    /// that overwrote secrets (every message OpenMLS decrypts rewrites its
    /// message secrets) at the 16th commit after it or the first commit 2
    /// seconds after it, whichever comes first. A pending erasure is
    /// recorded in the database; when a reader is in the way it is retried
    /// at the next commit of any storage on the file, at the next open, and
    /// when this storage is dropped. Call it directly after committing a
    /// transaction the application began on the raw connection, or once
    /// another connection has finished reading.
    ///
    /// This erases the content of the files; what the file system keeps of
    /// truncated or deleted blocks is beyond SQLite's reach. In the rollback
    /// journal modes there is no log to empty and it returns `Ok(true)`.
    ///
    /// Returns `Ok(true)` when the log was emptied, `Ok(false)` when another
    /// connection (or a statement of this one still being stepped) kept
    /// part of it, or a transaction of this one is open, so that the
    /// erasure is incomplete for now.
    ///
    /// ```
    /// use openmls_keypackage_pool::PoolStorage;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let storage = PoolStorage::open(dir.path().join("pool.db"))?;
    /// let mut stmt = storage.connection().prepare("SELECT 1 UNION ALL SELECT 2")?;
    /// let mut rows = stmt.query([])?;
    /// rows.next()?; // a statement in progress holds a read snapshot
    /// assert!(!storage.erase_deleted_key_material()?);
    /// drop(rows);
    /// assert!(storage.erase_deleted_key_material()?);
    /// # Ok::<(), openmls_keypackage_pool::Error>(())
    /// ```
    pub fn erase_deleted_key_material(&self) -> Result<bool> {
        // Inside a scope of this storage the erasure belongs to its commit.
        if self.scope_depth.get() > 0 {
            return Ok(false);
        }
        self.erasure.erase_now(&self.conn)
    }
}
