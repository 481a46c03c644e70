//! A guard for one atomic group of writes on a shared connection.

use std::cell::Cell;

use parking_lot::ReentrantMutexGuard;
use rusqlite::Connection;

use super::Held;
use crate::{
    error::{Error, Result},
    write_gate::{
        probe::{Span, Work},
        GatePass,
    },
};

/// One atomic group of writes: a transaction of its own, or a savepoint when
/// one of this connection's scopes is already open.
///
/// Dropping the guard without [`commit`](Self::commit) rolls back, so an
/// early `?` or a panic never leaves half of the group behind. A transaction
/// of its own starts with `BEGIN IMMEDIATE`, taking the write lock before the
/// first read so that two writers cannot deadlock upgrading their locks.
///
/// `depth` counts the open scopes. SQLite rolls a transaction back by itself
/// after some errors (a full disk, an I/O error, an interrupt); a nested
/// scope that then found no transaction would silently start and commit one
/// of its own, keeping part of a batch the caller expects to be all or
/// nothing. The count catches that and reports [`Error::TransactionLost`].
///
/// While it lives, the scope holds the storage and the file's write gate
/// for its thread.
pub(crate) struct WriteScope<'c> {
    held: ReentrantMutexGuard<'c, Held>,
    nested: bool,
    open: bool,
    /// The outermost scope's write, for the test probe.
    _span: Option<Span>,
    // Dropped after the rollback above it may run.
    _pass: GatePass<'c>,
}

/// Refuses to go on when scopes are open (`depth` > 0) but SQLite has
/// rolled their transaction back by itself: anything written now would
/// commit on its own, outside the batch it belongs to.
pub(crate) fn ensure_not_lost(conn: &Connection, depth: &Cell<u32>) -> Result<()> {
    if depth.get() > 0 && conn.is_autocommit() {
        return Err(Error::TransactionLost);
    }
    Ok(())
}

impl<'c> WriteScope<'c> {
    /// Starts a transaction, or a savepoint inside the current one, on the
    /// connection `held`, inside the file's write gate (`pass`).
    pub(super) fn begin(held: ReentrantMutexGuard<'c, Held>, pass: GatePass<'c>) -> Result<Self> {
        let (conn, depth) = (&held.conn, &held.scope_depth);
        ensure_not_lost(conn, depth)?;
        // A transaction the application began on the raw connection is
        // joined as well.
        let nested = !conn.is_autocommit();
        // SQLite matches ROLLBACK TO / RELEASE with the most recent savepoint
        // of that name, so nesting under one fixed name is well defined.
        let sql = if nested {
            "SAVEPOINT openmls_keypackage_pool"
        } else {
            "BEGIN IMMEDIATE"
        };
        let span = (!nested).then(|| Span::begin(Work::Write));
        conn.prepare_cached(sql)?.execute([])?;
        depth.set(depth.get() + 1);
        Ok(Self {
            held,
            nested,
            open: true,
            _span: span,
            _pass: pass,
        })
    }

    /// Makes the writes permanent (or, nested, part of the outer
    /// transaction). Returns whether this was the outermost scope, whose
    /// commit reached the database.
    pub(crate) fn commit(mut self) -> Result<bool> {
        if self.held.conn.is_autocommit() {
            return Err(Error::TransactionLost);
        }
        let sql = if self.nested {
            "RELEASE openmls_keypackage_pool"
        } else {
            "COMMIT"
        };
        self.held.conn.prepare_cached(sql)?.execute([])?;
        self.open = false;
        Ok(!self.nested)
    }
}

impl Drop for WriteScope<'_> {
    fn drop(&mut self) {
        let depth = &self.held.scope_depth;
        depth.set(depth.get().saturating_sub(1));
        if self.open && !self.held.conn.is_autocommit() {
            // A failed rollback leaves nothing better to do: SQLite has then
            // already rolled back on its own, which is the outcome wanted.
            let _ = self.held.conn.execute_batch(if self.nested {
                "ROLLBACK TO openmls_keypackage_pool; RELEASE openmls_keypackage_pool"
            } else {
                "ROLLBACK"
            });
        }
    }
}
