//! What a storage tells its operator: [`StorageStatus`], read by
//! [`PoolStorage::status`](crate::PoolStorage::status), and the SQLite
//! build it runs on.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension};

use crate::{erasure::ErasureBlocker, error::Result, keying::Keying};

/// The state of a storage as its operator needs it: whether old copies of
/// secrets are still readable and why, how the file is set up, and which
/// SQLite it runs on. Returned by
/// [`PoolStorage::status`](crate::PoolStorage::status).
///
/// ```
/// use openmls_keypackage_pool::PoolStorage;
///
/// let dir = tempfile::tempdir().unwrap();
/// let storage = PoolStorage::open(dir.path().join("pool.db"))?;
/// let status = storage.status()?;
/// assert!(!status.erasure.overdue);
/// assert!(status.erasure.eraser_running);
/// assert_eq!(status.journal_mode, "wal");
/// assert_eq!(status.synchronous, "FULL");
/// assert!(!status.encrypted);
/// println!("SQLite {}", status.sqlite.version);
/// # Ok::<(), openmls_keypackage_pool::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StorageStatus {
    /// The erasure of old copies of secrets from the write-ahead log.
    pub erasure: ErasureStatus,
    /// The journal mode SQLite reports for the connection, lowercase
    /// (`wal`, `delete`, `truncate`, or `memory` for an in-memory
    /// database).
    pub journal_mode: String,
    /// The connection's `synchronous` setting as SQLite names it (`OFF`,
    /// `NORMAL`, `FULL` or `EXTRA`).
    pub synchronous: String,
    /// Whether the file is encrypted (SQLCipher, keyed by this storage or
    /// by the application before it handed the connection over, which a
    /// connection without a key then cannot read).
    pub encrypted: bool,
    /// The SQLite linked into the process.
    pub sqlite: SqliteBuild,
}

/// Whether old copies of secrets are still in the write-ahead log, for how
/// long, and what the file's eraser makes of it: part of [`StorageStatus`].
///
/// An erasure is owed from the first commit that left secrets behind (it
/// is recorded in the database, so it counts across processes and
/// restarts) until a checkpoint empties the log. Its bound is the
/// [`ErasurePolicy`](crate::ErasurePolicy)'s `within`, zero under
/// `Deletions` (which erases deleted key material at the end of its
/// commit). Past it, the usual cause is another connection holding a read
/// transaction: a backup, or another process on the same file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ErasureStatus {
    /// When the oldest erasure still owed was first owed (Unix
    /// milliseconds); `None` when none is.
    pub owed_since_ms: Option<i64>,
    /// How long it has been owed.
    pub owed_for: Option<Duration>,
    /// How long an erasure may stay owed under the storage's policy.
    pub bound: Duration,
    /// Whether the erasure owed is past its bound.
    pub overdue: bool,
    /// Whether the file's eraser thread runs. Without it (a rollback
    /// journal mode, an in-memory database, a connection the application
    /// keyed itself, or an eraser that stopped), erasures run at the
    /// storage's commits.
    pub eraser_running: bool,
    /// What kept the eraser's last try from emptying the log, while its
    /// tries fail.
    pub blocked_by: Option<ErasureBlocker>,
    /// How many of the eraser's tries failed since the last one that
    /// finished.
    pub failed_tries: u32,
    /// How long the eraser waits between its tries now, while they fail.
    pub retry_every: Option<Duration>,
    /// Whether the eraser is backing off: the erasure is past its bound
    /// and another connection keeps it, or its tries have failed with an
    /// error for longer than the bound. It then waits a quarter of the time
    /// past the bound (or spent failing) between tries, at least a second
    /// and at most a minute, unless a commit of this process deletes key
    /// material first.
    pub backing_off: bool,
    /// The last error the eraser met since its last try that finished.
    pub last_error: Option<String>,
    /// How many times the file's eraser has woken to run what was due,
    /// since this process's handles on the file opened it (the count
    /// starts again after the last of them closes).
    pub eraser_wakeups: u64,
}

/// The SQLite linked into the process, and whether it has the fix for the
/// WAL-reset bug (see the [operations guide](crate::guide::operations)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteBuild {
    /// SQLite's version, `3.50.2` say.
    pub version: String,
    /// SQLCipher's version, when SQLCipher is what is linked.
    pub sqlcipher: Option<String>,
    /// Whether this SQLite has the fix for the WAL-reset bug (3.51.3 and
    /// later, and 3.50.7 on the 3.50 line).
    pub wal_reset_fixed: bool,
}

impl SqliteBuild {
    /// The build `conn` runs on.
    pub(crate) fn of(conn: &Connection) -> Result<Self> {
        let version = rusqlite::version().to_owned();
        let sqlcipher: Option<String> = conn
            .query_row("PRAGMA cipher_version", [], |row| row.get(0))
            .optional()?;
        Ok(Self {
            wal_reset_fixed: wal_reset_fixed(&version),
            version,
            sqlcipher,
        })
    }
}

/// Whether SQLite `version` has the fix for the WAL-reset bug, which came
/// with WAL itself in 3.7.0 and was fixed in 3.51.3 and in 3.50.7.
fn wal_reset_fixed(version: &str) -> bool {
    let mut parts = version
        .split('.')
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let (major, minor, patch) = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    match (major, minor) {
        (3, 0..=6) => true,
        (3, 50) => patch >= 7,
        (3, 51) => patch >= 3,
        (3, 52..) => true,
        (3, _) => false,
        (major, _) => major > 3,
    }
}

/// The journal mode SQLite reports for `conn`, lowercase.
pub(crate) fn journal_mode(conn: &Connection) -> Result<String> {
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |row| row.get(0))?;
    Ok(mode.to_ascii_lowercase())
}

/// The `synchronous` setting of `conn`, as SQLite names it.
pub(crate) fn synchronous(conn: &Connection) -> Result<String> {
    let level: i64 = conn.query_row("PRAGMA synchronous", [], |row| row.get(0))?;
    Ok(match level {
        0 => "OFF",
        1 => "NORMAL",
        2 => "FULL",
        3 => "EXTRA",
        _ => "unknown",
    }
    .to_owned())
}

/// Whether the database file `conn`, keyed as `keying` says, is encrypted.
pub(crate) fn is_encrypted(conn: &Connection, keying: &Keying, build: &SqliteBuild) -> bool {
    !matches!(keying, Keying::Plain) || file_is_encrypted(conn, build)
}

/// Whether the database file `conn` is open on is encrypted, for a
/// connection this crate did not key: only when SQLCipher is linked, and a
/// fresh connection without a key cannot read the file. An in-memory
/// database is not encrypted.
fn file_is_encrypted(conn: &Connection, build: &SqliteBuild) -> bool {
    if build.sqlcipher.is_none() {
        return false;
    }
    let Some(probe) = crate::files::probe(conn) else {
        return false;
    };
    // In a rollback-journal mode a writer locks readers out for a moment.
    if probe.busy_timeout(Duration::from_millis(500)).is_err() {
        return false;
    }
    matches!(
        probe.query_row("SELECT COUNT(*) FROM sqlite_master", [], |row| row.get::<_, i64>(0)),
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase)
    )
}

#[cfg(test)]
mod tests {
    use super::wal_reset_fixed;

    #[test]
    fn the_wal_reset_fix_is_recognised_by_version() {
        for fixed in [
            "3.51.3", "3.51.10", "3.52.0", "3.53.1", "3.50.7", "3.50.9", "3.6.23", "4.0.0",
        ] {
            assert!(wal_reset_fixed(fixed), "{fixed}");
        }
        for affected in [
            "3.50.2", "3.50.6", "3.51.0", "3.51.2", "3.46.1", "3.7.0", "3.44.0", "", "x",
        ] {
            assert!(!wal_reset_fixed(affected), "{affected}");
        }
    }
}
