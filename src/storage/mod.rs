//! [`PoolStorage`]: OpenMLS's SQLite storage with the KeyPackage pool beside
//! it, and the write scope that keeps the two in one transaction.
//!
//! This file holds the type, its transactions and write scope, and what its
//! drop does. Each area of its public API has a file of its own: [`open`]
//! (constructors), [`openmls_impl`] (the `StorageProvider` hook),
//! [`metadata_store`] (the metadata rows by hand), [`key_packages`] (whole
//! KeyPackages, taking them out of service, and adoption), [`withdrawals`]
//! (the outbox), [`scopes`] (listing and removing pools),
//! [`consistency`] (verify and repair), [`erasure`] (erasing on demand) and
//! [`identities`]. The concepts they compose (the metadata table, scopes,
//! the erasure schedule, ...) live in modules of their own that never name
//! `PoolStorage`.

mod batch_cache;
mod consistency;
#[cfg(feature = "sqlcipher")]
mod encryption;
mod erasure;
mod identities;
mod key_packages;
mod metadata_store;
mod open;
mod openmls_impl;
mod scopes;
mod withdrawals;
mod write_scope;

use batch_cache::BatchCache;

use std::{cell::Cell, marker::PhantomData};

use rusqlite::Connection;

use crate::{
    codec::{DefaultCodec, PoolCodec},
    erasure::{ErasureSchedule, Leftover},
    error::{Error, Result},
    keying::Keying,
    options::StorageOptions,
};
pub(crate) use write_scope::WriteScope;

/// A SQLite-backed OpenMLS storage provider that also keeps the KeyPackage
/// pool's metadata.
///
/// Every OpenMLS entity is stored exactly as `openmls_sqlite_storage` stores
/// it. In addition, whenever OpenMLS writes or deletes a KeyPackageBundle,
/// its row in `keypackage_pool_metadata` is written or deleted in the same
/// SQLite transaction, so the pool can never list a KeyPackage whose private
/// keys are gone, nor hold private keys it does not know about.
///
/// `C` is the [codec](crate::codec) for OpenMLS's blobs. `PoolStorage` is
/// `Send` but not `Sync`: it owns one SQLite connection. Give each thread its
/// own `PoolStorage` on the same file.
///
/// Usually reached through [`PoolProvider::storage`](crate::PoolProvider::storage).
///
/// ```
/// use openmls_keypackage_pool::{KeyPackageStatus, PoolStorage};
///
/// let storage = PoolStorage::open_in_memory()?;
/// storage.create_pool_metadata(b"a 32-byte KeyPackageRef, or so..", 1_900_000_000)?;
/// assert_eq!(storage.count_by_status(KeyPackageStatus::Created)?, 1);
/// # Ok::<(), openmls_keypackage_pool::Error>(())
/// ```
pub struct PoolStorage<C: PoolCodec = DefaultCodec> {
    conn: Connection,
    /// How many [`WriteScope`]s are open on `conn`.
    scope_depth: Cell<u32>,
    /// When old copies of secrets are erased from the write-ahead log.
    erasure: ErasureSchedule,
    /// How the connections are keyed, for the eraser's connection after a
    /// rekey (zeroed on drop).
    #[cfg_attr(not(feature = "sqlcipher"), allow(dead_code))]
    keying: std::cell::RefCell<Keying>,
    /// The options the storage was opened with: every connection of its
    /// own is set up by them.
    options: StorageOptions,
    // `fn() -> C` keeps `PoolStorage` `Send` whatever the codec type is.
    _codec: PhantomData<fn() -> C>,
}

impl<C: PoolCodec> std::fmt::Debug for PoolStorage<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolStorage")
            .field("path", &self.conn.path())
            .finish_non_exhaustive()
    }
}

impl<C: PoolCodec> PoolStorage<C> {
    /// The storage over a connection whose schema is up to date.
    fn new(
        conn: Connection,
        erasure: ErasureSchedule,
        keying: Keying,
        options: StorageOptions,
    ) -> Self {
        Self {
            conn,
            scope_depth: Cell::new(0),
            erasure,
            keying: std::cell::RefCell::new(keying),
            options,
            _codec: PhantomData,
        }
    }

    /// The underlying connection, for reads of the application's own.
    ///
    /// Writing OpenMLS's or the pool's tables through it bypasses the
    /// guarantees of this type.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Runs `f` in one transaction: commits when it returns `Ok`, rolls back
    /// when it returns `Err` or panics.
    ///
    /// Everything OpenMLS writes through this storage inside `f` (for example
    /// a batch of KeyPackages) lands in one commit, with one sync to disk.
    /// The transaction takes the write lock up front (`BEGIN IMMEDIATE`), so
    /// two writers never deadlock upgrading a read lock. Nested calls become
    /// savepoints of the outer transaction; so does a call inside a
    /// transaction the application began on the raw connection, which then
    /// decides the locking.
    ///
    /// While the outermost transaction runs, the connection's page cache is
    /// at least 4 MiB, and the connection's own setting is put back after
    /// the commit. A batch inserts under random keys, so it keeps returning
    /// to index pages while its new table pages stream past; a cache too
    /// small to keep those index pages makes SQLite write them to the
    /// write-ahead log more than once. The memory is only taken when a
    /// transaction fills it.
    ///
    /// ```
    /// use openmls_keypackage_pool::{Error, KeyPackageStatus, PoolStorage};
    ///
    /// let storage = PoolStorage::open_in_memory()?;
    /// let failed: Result<(), Error> = storage.transaction(|s| {
    ///     s.create_pool_metadata(&[1; 32], 1_900_000_000)?;
    ///     s.create_pool_metadata(&[1; 32], 1_900_000_000) // duplicate: rolls back both
    /// });
    /// assert!(failed.is_err());
    /// assert_eq!(storage.count_by_status(KeyPackageStatus::Created)?, 0);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn transaction<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&Self) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        // Dropped last, after the commit or the rollback. Best effort: a
        // cache that could not be raised makes a batch write more, never
        // write wrong.
        let _cache = (self.scope_depth.get() == 0 && self.conn.is_autocommit())
            .then(|| BatchCache::raise(&self.conn).ok())
            .flatten();
        let scope = self.write_scope()?;
        let value = f(self)?;
        self.commit(scope)?;
        Ok(value)
    }

    /// Opens a write scope on this storage's connection.
    pub(crate) fn write_scope(&self) -> Result<WriteScope<'_>> {
        WriteScope::begin(&self.conn, &self.scope_depth)
    }

    /// Commits a write scope; when that commit reached the database, runs
    /// what the erasure schedule wants after a commit.
    pub(crate) fn commit(&self, scope: WriteScope<'_>) -> Result<()> {
        if scope.commit()? {
            self.erasure.after_commit(&self.conn);
        }
        Ok(())
    }

    /// Runs `write`, a single write that needs no scope of its own: refused
    /// when SQLite has rolled back an open scope's transaction by itself,
    /// and, when it committed on its own (no transaction was open), counted
    /// as a commit by the erasure schedule, whether it succeeded or not.
    pub(crate) fn write_alone<T>(&self, write: impl FnOnce() -> Result<T>) -> Result<T> {
        self.ensure_not_lost()?;
        let result = write();
        if self.scope_depth.get() == 0 && self.conn.is_autocommit() {
            self.erasure.after_commit(&self.conn);
        }
        result
    }

    /// Refuses to go on when SQLite has rolled back, by itself, the
    /// transaction a write scope of this storage opened: a write would
    /// otherwise commit on its own, outside the batch it belongs to.
    pub(crate) fn ensure_not_lost(&self) -> Result<()> {
        write_scope::ensure_not_lost(&self.conn, &self.scope_depth)
    }

    /// Records, inside the open write scope, that its commit leaves old
    /// copies of secrets in the write-ahead log to erase.
    pub(crate) fn record_leftover(&self, leftover: Leftover) -> Result<()> {
        self.erasure.record_leftover(&self.conn, leftover)
    }
}

impl<C: PoolCodec> Drop for PoolStorage<C> {
    /// Finishes a pending erasure before the connection closes (best
    /// effort: what a reader still blocks stays recorded in the database for
    /// the next open or commit).
    fn drop(&mut self) {
        // The eraser first, so that no checkpoint of its is under way.
        self.erasure.stop();
        self.erasure.finish_leftover(&self.conn);
    }
}
