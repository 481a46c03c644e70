//! A guard for one atomic group of writes on a shared connection.

use rusqlite::Connection;

use crate::error::Result;

/// One atomic group of writes: a transaction of its own, or a savepoint when
/// the connection is already inside one.
///
/// Dropping the guard without [`commit`](Self::commit) rolls back, so an
/// early `?` or a panic never leaves half of the group behind. A transaction
/// of its own starts with `BEGIN IMMEDIATE`, taking the write lock before the
/// first read so that two writers cannot deadlock upgrading their locks.
pub(crate) struct WriteScope<'c> {
    conn: &'c Connection,
    nested: bool,
    open: bool,
}

impl<'c> WriteScope<'c> {
    /// Starts a transaction, or a savepoint inside the current one.
    pub(crate) fn begin(conn: &'c Connection) -> Result<Self> {
        // SQLite matches ROLLBACK TO / RELEASE with the most recent savepoint
        // of that name, so nesting under one fixed name is well defined.
        let nested = !conn.is_autocommit();
        conn.execute_batch(if nested {
            "SAVEPOINT openmls_keypackage_pool"
        } else {
            "BEGIN IMMEDIATE"
        })?;
        Ok(Self {
            conn,
            nested,
            open: true,
        })
    }

    /// Makes the writes permanent (or, nested, part of the outer transaction).
    pub(crate) fn commit(mut self) -> Result<()> {
        self.conn.execute_batch(if self.nested {
            "RELEASE openmls_keypackage_pool"
        } else {
            "COMMIT"
        })?;
        self.open = false;
        Ok(())
    }
}

impl Drop for WriteScope<'_> {
    fn drop(&mut self) {
        if self.open {
            // Nothing useful can be done with a failed rollback here: SQLite
            // has then already rolled back on its own (for example after an
            // I/O error), which is the outcome wanted.
            let _ = self.conn.execute_batch(if self.nested {
                "ROLLBACK TO openmls_keypackage_pool; RELEASE openmls_keypackage_pool"
            } else {
                "ROLLBACK"
            });
        }
    }
}
