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
    /// With `secure_delete` on (the default, see
    /// [`StorageOptions`](crate::StorageOptions)) SQLite overwrites deleted
    /// content in the database pages; in WAL mode the pages as they were
    /// before still sit in the `-wal` file until a checkpoint copies the new
    /// ones back and the log is truncated. This runs that checkpoint now, on
    /// this storage's connection, without waiting for other connections.
    ///
    /// It also runs by itself, as the [`ErasurePolicy`](crate::ErasurePolicy)
    /// says: at the end of each commit of this storage that deleted key
    /// material (a KeyPackage's bundle, or OpenMLS's epoch, encryption,
    /// signature or PSK secrets), and, by default, within 2 seconds of a
    /// commit that overwrote secrets (every message OpenMLS decrypts rewrites
    /// its message secrets), on the file's background eraser, whether or
    /// not anything else is committed. A pending erasure is recorded in the
    /// database; when a reader is in the way the eraser tries again until it
    /// is done, and the next open of any process finishes one a crash
    /// interrupted. Call this directly after committing a transaction the
    /// application began on the raw connection, or when the files must be
    /// clean right now (before a backup, say).
    ///
    /// This erases the content of the files; what the file system keeps of
    /// truncated or deleted blocks is beyond SQLite's reach. In the rollback
    /// journal modes there is no log to empty and it returns `Ok(true)`.
    ///
    /// Returns `Ok(true)` when the checkpoint emptied the log (clearing the
    /// pending record afterwards leaves its one page, which holds no
    /// secret, in the log), `Ok(false)` when another connection (or a
    /// statement of this one still being stepped) kept part of it, a
    /// transaction of this one is open, or another thread of the process is
    /// writing to the file or checkpointing it (the file's eraser among
    /// them), so that the erasure is incomplete for now.
    ///
    /// ```
    /// use openmls_keypackage_pool::PoolStorage;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let storage = PoolStorage::open(dir.path().join("pool.db"))?;
    /// let conn = storage.connection();
    /// let mut stmt = conn.prepare("SELECT 1 UNION ALL SELECT 2")?;
    /// let mut rows = stmt.query([])?;
    /// rows.next()?; // a statement in progress holds a read snapshot
    /// assert!(!storage.erase_deleted_key_material()?);
    /// drop(rows);
    /// assert!(storage.erase_deleted_key_material()?);
    /// # Ok::<(), openmls_keypackage_pool::Error>(())
    /// ```
    pub fn erase_deleted_key_material(&self) -> Result<bool> {
        // Inside a scope of this storage the erasure belongs to its commit.
        let held = self.held();
        if held.scope_depth.get() > 0 {
            return Ok(false);
        }
        held.erasure.erase_now(&held.conn)
    }
}
