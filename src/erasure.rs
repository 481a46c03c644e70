//! The erasure policy: when old copies of deleted and overwritten secrets
//! are removed from the write-ahead log, and the record of erasures still
//! pending, in `openmls_keypackage_pool_erasure`.
//!
//! In WAL mode a commit appends new page images to the `-wal` file; the
//! images they replace, which hold the secrets as they were, stay in the log
//! until a checkpoint copies the new pages into the database and the log is
//! truncated. OpenMLS destroys most per-message and per-epoch secrets by
//! overwriting the row that holds them (every message it decrypts rewrites
//! the group's secret tree), so erasing only after deletions leaves
//! superseded message keys readable on disk.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::Result;

/// When old copies of secrets are erased from the database's files.
///
/// Part of [`StorageOptions`](crate::StorageOptions). The age is checked
/// when this storage commits: a storage that goes idle erases at its drop
/// or next open. What it costs, measured on a 2-core machine while a member
/// decrypts 1,000 messages (`cargo bench --bench erasure`): 0.23 ms per
/// message with `Deletions`, 2.3 ms with the default, 15 ms when erasing at
/// every commit; nearly all of it is the truncating checkpoint.
///
/// Commits are counted
/// as this storage makes them (its own writes, and
/// [`PoolStorage::transaction`](crate::PoolStorage::transaction) as one).
/// A transaction the application begins and commits on the raw connection
/// is not seen: the erasure it owes happens at this storage's next commit,
/// its next open or its drop, or when the application calls
/// [`PoolStorage::erase_deleted_key_material`](crate::PoolStorage::erase_deleted_key_material)
/// after committing.
///
/// ```
/// use std::time::Duration;
/// use openmls_keypackage_pool::{ErasurePolicy, StorageOptions};
///
/// // Erase after every commit that replaced a secret: the strictest bound,
/// // and the dearest.
/// let options = StorageOptions {
///     erasure: ErasurePolicy::Overwrites { commits: 1, age: Duration::ZERO },
///     ..StorageOptions::default()
/// };
/// assert_ne!(options, StorageOptions::default());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErasurePolicy {
    /// Erase after each commit that deleted key material (a KeyPackage's
    /// bundle, epoch, encryption, signature or PSK secrets) only. Secrets
    /// that OpenMLS destroys by overwriting them, such as the message keys
    /// of every message it decrypts, stay readable in the log until the
    /// next erasure. The behaviour of earlier versions; cheapest.
    Deletions,
    /// Erase after each commit that deleted key material, and erase
    /// overwritten secrets (message secrets, epoch secrets, the resumption
    /// PSK store, PSKs, epoch key pairs, and the draft features' export
    /// tree and virtual-client state) by the end of the first commit of
    /// this storage that comes `commits` commits after the overwrite, or
    /// `age` or more after it, whichever is first.
    Overwrites {
        /// At most this many further commits of this storage.
        commits: u32,
        /// At most this long, checked at each commit.
        age: Duration,
    },
}

impl Default for ErasurePolicy {
    /// [`Overwrites`](Self::Overwrites) within 16 commits or 2 seconds.
    fn default() -> Self {
        Self::Overwrites {
            commits: 16,
            age: Duration::from_secs(2),
        }
    }
}

/// What a write leaves behind in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leftover {
    /// Deleted key material: erased at the end of its commit.
    Deleted,
    /// Overwritten secrets: erased as the policy allows.
    Overwritten,
}

/// An erasure this storage knows to be due some time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pending {
    /// Unix milliseconds of the first commit waiting.
    since_ms: i64,
    /// Commits of this storage since then.
    commits: u32,
    /// Due at the end of the next commit, whatever the policy.
    urgent: bool,
}

impl Pending {
    pub(crate) fn new(leftover: Leftover) -> Self {
        Self {
            since_ms: now_ms(),
            commits: 0,
            urgent: leftover == Leftover::Deleted,
        }
    }

    /// Joins another leftover to the erasure already waiting.
    pub(crate) fn and(self, leftover: Leftover) -> Self {
        Self {
            urgent: self.urgent || leftover == Leftover::Deleted,
            ..self
        }
    }

    /// One more commit of this storage has passed.
    pub(crate) fn after_commit(self) -> Self {
        Self {
            commits: self.commits.saturating_add(1),
            ..self
        }
    }

    /// Whether `policy` wants the erasure now.
    pub(crate) fn is_due(self, policy: ErasurePolicy) -> bool {
        if self.urgent {
            return true;
        }
        match policy {
            // Only an erasure left by another storage gets here (a deletion
            // of this one is urgent): finish it.
            ErasurePolicy::Deletions => true,
            ErasurePolicy::Overwrites { commits, age } => {
                self.commits >= commits
                    || now_ms().saturating_sub(self.since_ms)
                        >= i64::try_from(age.as_millis()).unwrap_or(i64::MAX)
            }
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Records, in the open transaction, that its commit leaves secrets behind.
pub(crate) fn record(conn: &Connection) -> Result<()> {
    conn.prepare_cached(
        "UPDATE openmls_keypackage_pool_erasure
         SET pending_since = COALESCE(pending_since, ?1), generation = generation + 1
         WHERE id = 1",
    )?
    .execute([now_ms()])?;
    Ok(())
}

/// The erasure the database records as pending, if any, and the generation
/// to clear it with.
pub(crate) fn recorded(conn: &Connection) -> Result<Option<(Pending, i64)>> {
    let row: Option<(Option<i64>, i64)> = conn
        .prepare_cached(
            "SELECT pending_since, generation FROM openmls_keypackage_pool_erasure WHERE id = 1",
        )?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    Ok(row.and_then(|(since, generation)| {
        since.map(|since_ms| {
            (
                Pending {
                    since_ms,
                    commits: 0,
                    urgent: false,
                },
                generation,
            )
        })
    }))
}

/// Clears the record after a checkpoint emptied the log, unless a commit
/// recorded a newer leftover since `generation` was read.
pub(crate) fn clear(conn: &Connection, generation: i64) -> Result<()> {
    conn.prepare_cached(
        "UPDATE openmls_keypackage_pool_erasure SET pending_since = NULL
         WHERE id = 1 AND generation = ?1 AND pending_since IS NOT NULL",
    )?
    .execute(params![generation])?;
    Ok(())
}

/// Checkpoints the log into the database and truncates it, without waiting
/// for other connections. `Ok(true)` when the log is now empty.
pub(crate) fn checkpoint(conn: &Connection) -> Result<bool> {
    // A statement of this connection still stepping holds a read snapshot
    // the checkpoint cannot pass; SQLite reports that as an error.
    if conn.is_busy() {
        return Ok(false);
    }
    match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
        row.get::<_, i64>(0)
    }) {
        Ok(busy) => Ok(busy == 0),
        Err(e) if is_busy_or_locked(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Whether an error only says another connection (or a statement of this
/// one) was in the way.
pub(crate) fn is_busy_or_locked(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}
