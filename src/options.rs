//! How [`PoolStorage`](crate::PoolStorage) sets up each SQLite connection.

use std::time::Duration;

use rusqlite::Connection;

use crate::{
    erasure::ErasurePolicy,
    error::{Error, Result},
};

/// SQLite's journal mode for the database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalMode {
    /// Write-ahead log: readers never block the writer nor the writer the
    /// readers, so an app and its notification extension can share the file.
    Wal,
    /// SQLite's default rollback journal, deleted after each commit.
    Delete,
    /// Rollback journal truncated rather than deleted after each commit.
    Truncate,
}

impl JournalMode {
    /// The mode `conn` is in, if it is one of these (an in-memory database
    /// is in none of them).
    pub(crate) fn in_force(conn: &Connection) -> Option<Self> {
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .ok()?;
        [Self::Wal, Self::Delete, Self::Truncate]
            .into_iter()
            .find(|m| m.as_sql().eq_ignore_ascii_case(&mode))
    }

    fn as_sql(self) -> &'static str {
        match self {
            Self::Wal => "WAL",
            Self::Delete => "DELETE",
            Self::Truncate => "TRUNCATE",
        }
    }
}

/// How hard SQLite works to make each commit survive a power cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// Sync at every commit: a commit that returned survives a power cut
    /// (in [`JournalMode::Delete`], SQLite's `EXTRA`, which syncs the
    /// directory after the journal's deletion too).
    Full,
    /// In WAL mode, sync only at checkpoints: a commit survives the app
    /// crashing or being killed, but the last ones may be lost on power cut.
    Normal,
}

impl Synchronous {
    /// The `synchronous` setting that keeps this promise in `journal_mode`.
    ///
    /// In rollback-journal mode `DELETE` a commit is the deletion of the
    /// journal, and it survives a power cut only once the directory is
    /// synced, which SQLite does only under `EXTRA`: under `FULL` the last
    /// commit comes back undone (`tests/power_loss.rs`,
    /// `delete_journal_needs_extra_to_keep_the_last_commit`). WAL and
    /// `TRUNCATE` sync the file that decides at every commit.
    pub(crate) fn as_sql_in(self, journal_mode: JournalMode) -> &'static str {
        match (self, journal_mode) {
            (Self::Full, JournalMode::Delete) => "EXTRA",
            (Self::Full, _) => "FULL",
            (Self::Normal, _) => "NORMAL",
        }
    }
}

/// Connection settings applied whenever this crate opens or adopts a
/// connection.
///
/// The defaults favour a store of private keys shared by several processes:
/// WAL, `synchronous=FULL` (a KeyPackage the pool reported is on disk), a
/// five-second busy timeout, `secure_delete` on, and temporary files
/// (savepoint journals) kept in memory, never on disk.
///
/// ```
/// use std::time::Duration;
/// use openmls_keypackage_pool::{JournalMode, PoolStorage, StorageOptions, Synchronous};
///
/// let dir = tempfile::tempdir().unwrap();
/// let options = StorageOptions {
///     synchronous: Synchronous::Normal,
///     busy_timeout: Duration::from_secs(30),
///     ..StorageOptions::default()
/// };
/// let storage = PoolStorage::open_with_options(dir.path().join("pool.db"), &options)?;
/// # Ok::<(), openmls_keypackage_pool::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageOptions {
    /// The journal mode; in-memory databases keep their own.
    pub journal_mode: JournalMode,
    /// The sync level.
    pub synchronous: Synchronous,
    /// How long to wait for another connection's lock before failing with
    /// "database is locked".
    pub busy_timeout: Duration,
    /// Overwrite deleted content with zeros (`PRAGMA secure_delete`), so
    /// that the private keys of spent and pruned KeyPackages do not linger in
    /// free space. On by default; turning it off makes deletes a little
    /// cheaper and leaves key material recoverable from the file.
    pub secure_delete: bool,
    /// When old copies of deleted and overwritten secrets are erased from
    /// the write-ahead log: by default deleted ones at the end of the commit
    /// that deleted them, and overwritten ones within 2 seconds of the
    /// commit that overwrote them, by the clock, on a background thread.
    pub erasure: ErasurePolicy,
    /// How long a one-time KeyPackage keeps its private keys after it
    /// leaves service while a peer may still invite with it: consumed by a
    /// Welcome, or withdrawn by pruning, removal or the removal of its scope
    /// or signature key. Within the window a second Welcome naming it still
    /// joins; the KeyPackage is never usable, never uploaded again, and
    /// counts in the hard cap. When the window ends, its bundle and row are
    /// deleted and its keys erased from the files within the erasure bound,
    /// whether or not the application calls anything (on a database file in
    /// WAL mode, by the file's eraser; otherwise at its next commit or
    /// open). The window counts whole seconds (a fraction is dropped) from
    /// the next whole second, so it is never shorter than asked and at most
    /// a second longer; that, plus the erasure bound, is how long a consumed
    /// key stays readable on disk. Zero (the default) deletes the keys at
    /// once; at most [`MAX_GRACE`].
    pub spent_key_package_grace: Duration,
}

impl Default for StorageOptions {
    fn default() -> Self {
        Self {
            journal_mode: JournalMode::Wal,
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            secure_delete: true,
            erasure: ErasurePolicy::default(),
            spent_key_package_grace: Duration::ZERO,
        }
    }
}

/// The longest grace window
/// ([`StorageOptions::spent_key_package_grace`]): 7 days.
pub const MAX_GRACE: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The longest busy timeout SQLite can take: `i32::MAX` milliseconds, a
/// little under 25 days.
pub const MAX_BUSY_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

impl StorageOptions {
    /// Checks that SQLite can take these settings: the busy timeout is at
    /// most [`MAX_BUSY_TIMEOUT`] ([`Error::BusyTimeoutTooLong`] otherwise),
    /// and the grace window at most [`MAX_GRACE`]
    /// ([`Error::InvalidConfig`] otherwise). Opening with options that fail
    /// this is the same error, before anything is written.
    ///
    /// ```
    /// use std::time::Duration;
    /// use openmls_keypackage_pool::{Error, StorageOptions};
    ///
    /// let forever = StorageOptions { busy_timeout: Duration::MAX, ..Default::default() };
    /// assert!(matches!(forever.validate(), Err(Error::BusyTimeoutTooLong { .. })));
    /// ```
    pub fn validate(&self) -> Result<()> {
        if self.busy_timeout > MAX_BUSY_TIMEOUT {
            return Err(Error::BusyTimeoutTooLong {
                requested: self.busy_timeout,
                max: MAX_BUSY_TIMEOUT,
            });
        }
        if self.spent_key_package_grace > MAX_GRACE {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "spent_key_package_grace {:?} is longer than the {:?} allowed",
                    self.spent_key_package_grace, MAX_GRACE
                ),
            });
        }
        Ok(())
    }

    /// The grace window in whole seconds (it is at most [`MAX_GRACE`]).
    pub(crate) fn grace_secs(&self) -> i64 {
        i64::try_from(self.spent_key_package_grace.as_secs()).unwrap_or(i64::MAX)
    }

    /// Applies the settings to `conn`, after [validating](Self::validate)
    /// them.
    pub(crate) fn apply(&self, conn: &Connection) -> Result<()> {
        self.validate()?;
        conn.busy_timeout(self.busy_timeout)?;
        // Savepoint journals go to temporary files; in memory they cost a
        // copy instead of a write per page.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // The schema's own SQL (views, triggers, defaults) may not call
        // functions with side effects: a file another program altered
        // cannot run them with this connection's rights.
        conn.pragma_update(None, "trusted_schema", false)?;
        // Returns the mode in force, which stays "memory" for an in-memory
        // database: that is fine.
        let _mode: String = conn.pragma_update_and_check(
            None,
            "journal_mode",
            self.journal_mode.as_sql(),
            |row| row.get(0),
        )?;
        // The level for the mode in force, which is the one asked for
        // unless the file could not switch (an in-memory database).
        let mode = JournalMode::in_force(conn).unwrap_or(self.journal_mode);
        conn.pragma_update(None, "synchronous", self.synchronous.as_sql_in(mode))?;
        conn.pragma_update(None, "secure_delete", self.secure_delete)?;
        Ok(())
    }
}
