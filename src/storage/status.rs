//! What the storage tells its operator: [`PoolStorage::status`].

use super::PoolStorage;
use crate::{
    codec::PoolCodec,
    erasure,
    error::Result,
    storage_status::{self, ErasureStatus, SqliteBuild, StorageStatus},
};

impl<C: PoolCodec> PoolStorage<C> {
    /// The storage's state as its operator needs it: the oldest erasure of
    /// old copies of secrets still owed and whether it is past its bound
    /// (and what keeps it), whether the file's eraser runs, the journal
    /// mode and `synchronous` setting, whether the file is encrypted, and
    /// the SQLite (and SQLCipher) linked, with whether it has the fix for
    /// the WAL-reset bug.
    ///
    /// Only reads: cheap enough for a health endpoint or a periodic log
    /// line (like every call, it waits while another thread holds the
    /// storage in a transaction). The same events are logged as they
    /// happen, through the `log` facade (see the
    /// [operations guide](crate::guide::operations)).
    ///
    /// ```
    /// use openmls_keypackage_pool::PoolStorage;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let storage = PoolStorage::open(dir.path().join("pool.db"))?;
    /// let status = storage.status()?;
    /// if status.erasure.overdue {
    ///     eprintln!(
    ///         "secrets readable on disk for {:?}: {:?}",
    ///         status.erasure.owed_for, status.erasure.blocked_by
    ///     );
    /// }
    /// if !status.sqlite.wal_reset_fixed {
    ///     eprintln!("SQLite {} has the WAL-reset bug", status.sqlite.version);
    /// }
    /// # Ok::<(), openmls_keypackage_pool::Error>(())
    /// ```
    pub fn status(&self) -> Result<StorageStatus> {
        let held = self.held();
        let conn = &held.conn;
        let owed_since_ms = erasure::owed_since(conn)?;
        let owed_for = owed_since_ms.map(erasure::age_of);
        let bound = held.erasure.bound();
        let mut report = held.erasure.eraser_report();
        // An erasure finished elsewhere (by a commit, an open, another
        // process) leaves the eraser's last failed try behind: what blocked
        // it is no longer news once nothing is owed. Its errors stay until
        // one of its own tries finishes.
        if owed_since_ms.is_none() && report.last_error.is_none() {
            report = crate::erasure::EraserReport {
                wakeups: report.wakeups,
                ..Default::default()
            };
        }
        let sqlite = SqliteBuild::of(conn)?;
        let encrypted = storage_status::is_encrypted(conn, &held.keying.borrow(), &sqlite);
        Ok(StorageStatus {
            erasure: ErasureStatus {
                owed_since_ms,
                owed_for,
                bound,
                overdue: owed_for.is_some_and(|owed| owed > bound),
                eraser_running: held.erasure.eraser_running(),
                blocked_by: report.blocker,
                failed_tries: report.failed_tries,
                retry_every: report.retry,
                backing_off: report.backing_off,
                last_error: report.last_error,
                eraser_wakeups: report.wakeups,
            },
            journal_mode: storage_status::journal_mode(conn)?,
            synchronous: storage_status::synchronous(conn)?,
            encrypted,
            sqlite,
        })
    }
}
