//! The erasure policy: when old copies of deleted and overwritten secrets
//! are removed from the write-ahead log; the schedule a storage keeps to
//! follow it ([`ErasureSchedule`]); and the record of erasures still
//! pending, in `openmls_keypackage_pool_erasure`.
//!
//! In WAL mode a commit appends new page images to the `-wal` file; the
//! images they replace, which hold the secrets as they were, stay in the log
//! until a checkpoint copies the new pages into the database and the log is
//! truncated. OpenMLS destroys most per-message and per-epoch secrets by
//! overwriting the row that holds them (every message it decrypts rewrites
//! the group's secret tree), so erasing only after deletions leaves
//! superseded message keys readable on disk.

use std::{cell::Cell, time::Duration};

use rusqlite::{params, Connection, OptionalExtension};

use crate::{clock::unix_now_ms, error::Result};

/// When old copies of secrets are erased from the database's files.
///
/// Part of [`StorageOptions`](crate::StorageOptions). The age is checked
/// when this storage commits: a storage that goes idle erases at its drop
/// or next open. What each policy costs per decrypted message is measured
/// by `cargo bench --bench erasure`; nearly all of the difference is the
/// truncating checkpoint.
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
struct Pending {
    /// Unix milliseconds of the first commit waiting.
    since_ms: i64,
    /// Commits of this storage since then.
    commits: u32,
    /// Due at the end of the next commit, whatever the policy.
    urgent: bool,
}

impl Pending {
    fn new(leftover: Leftover) -> Self {
        Self {
            since_ms: now_ms(),
            commits: 0,
            urgent: leftover == Leftover::Deleted,
        }
    }

    /// The erasure already waiting, now also owed for `leftover`.
    fn with_leftover(self, leftover: Leftover) -> Self {
        Self {
            urgent: self.urgent || leftover == Leftover::Deleted,
            ..self
        }
    }

    /// One more commit of this storage has passed.
    fn after_commit(self) -> Self {
        Self {
            commits: self.commits.saturating_add(1),
            ..self
        }
    }

    /// Whether `policy` wants the erasure now.
    fn is_due(self, policy: ErasurePolicy) -> bool {
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

/// When a storage's connection erases: the erasure this storage knows to be
/// pending, counted against the policy at each of its commits.
///
/// The database records a pending erasure as well ([`record`]), so that any
/// storage on the file finishes one another left behind, at its next commit,
/// its open or its drop.
#[derive(Debug)]
pub(crate) struct ErasureSchedule {
    /// An erasure this storage knows to be due; the database records it too.
    pending: Cell<Option<Pending>>,
    policy: ErasurePolicy,
    /// The busy timeout the options set, restored after checkpoints.
    busy_timeout: Duration,
}

impl ErasureSchedule {
    pub(crate) fn new(policy: ErasurePolicy, busy_timeout: Duration) -> Self {
        Self {
            pending: Cell::new(None),
            policy,
            busy_timeout,
        }
    }

    /// Whether overwrites of secrets must go through a write scope to be
    /// recorded.
    pub(crate) fn erases_overwrites(&self) -> bool {
        self.policy != ErasurePolicy::Deletions
    }

    /// Notes, inside the open write scope, that its commit leaves old copies
    /// of secrets in the log: in the database, so that any later open or
    /// commit finishes the erasure, and here. Overwrites count only under a
    /// policy that erases them.
    pub(crate) fn record_leftover(&self, conn: &Connection, leftover: Leftover) -> Result<()> {
        if leftover == Leftover::Overwritten && !self.erases_overwrites() {
            return Ok(());
        }
        record(conn)?;
        self.pending.set(Some(match self.pending.get() {
            Some(pending) => pending.with_leftover(leftover),
            None => Pending::new(leftover),
        }));
        Ok(())
    }

    /// Counts a commit of the connection against the pending erasure
    /// (adopting one the database records, left by another storage), and
    /// erases when the policy says it is due. Best effort: the commit has
    /// succeeded either way, and an erasure that could not finish stays
    /// pending.
    pub(crate) fn after_commit(&self, conn: &Connection) {
        let pending = match self.pending.get() {
            Some(pending) => Some(pending.after_commit()),
            None => recorded(conn).ok().flatten().map(|(pending, _)| pending),
        };
        self.pending.set(pending);
        if pending.is_some_and(|p| p.is_due(self.policy)) {
            let _ = self.erase_now(conn);
        }
    }

    /// Finishes an erasure that this storage or another left pending, when
    /// the connection opens or closes. Best effort, and never waits for
    /// another connection: what a reader still blocks stays recorded in the
    /// database for the next open or commit.
    pub(crate) fn finish_leftover(&self, conn: &Connection) {
        let _ = self.without_waiting(conn, || {
            if self.pending.get().is_some() || recorded(conn)?.is_some() {
                self.checkpoint_and_clear(conn)?;
            }
            Ok(())
        });
    }

    /// Checkpoints and truncates the log without waiting for anyone, and on
    /// success clears the pending erasure, here and in the database.
    /// `Ok(false)` while a transaction of the connection is open, or another
    /// connection keeps part of the log.
    pub(crate) fn erase_now(&self, conn: &Connection) -> Result<bool> {
        self.without_waiting(conn, || self.checkpoint_and_clear(conn))
    }

    /// Runs `f` with the connection's busy timeout at zero, then puts the
    /// options' timeout back. Erasure runs right after commits (in the
    /// middle of processing a message, say) and on drop: a reader elsewhere
    /// must not stall it, and what cannot be done now is retried. Set before
    /// the first read, since in the rollback journal modes even a read
    /// queues behind a writer.
    fn without_waiting<T>(&self, conn: &Connection, f: impl FnOnce() -> Result<T>) -> Result<T> {
        conn.busy_timeout(Duration::ZERO)?;
        let result = f();
        conn.busy_timeout(self.busy_timeout)?;
        result
    }

    fn checkpoint_and_clear(&self, conn: &Connection) -> Result<bool> {
        // A transaction of this connection is still open: its commit, not
        // this, is where the erasure belongs.
        if !conn.is_autocommit() {
            return Ok(false);
        }
        // Read before the checkpoint: a leftover recorded after it bumps the
        // generation, and clearing then leaves it pending.
        let generation = recorded(conn)?.map(|(_, generation)| generation);
        let erased = checkpoint(conn)?;
        if erased {
            self.pending.set(None);
            if let Some(generation) = generation {
                // The log is empty; if clearing the record fails (another
                // writer, a read-only file), a later commit only checkpoints
                // once more.
                let _ = clear(conn, generation);
            }
        }
        Ok(erased)
    }
}

/// Unix milliseconds; a clock set before 1970 reads as the epoch, which
/// only makes a pending erasure due sooner.
fn now_ms() -> i64 {
    unix_now_ms().unwrap_or(0)
}

/// Records, in the open transaction, that its commit leaves secrets behind.
fn record(conn: &Connection) -> Result<()> {
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
fn recorded(conn: &Connection) -> Result<Option<(Pending, i64)>> {
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
fn clear(conn: &Connection, generation: i64) -> Result<()> {
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
