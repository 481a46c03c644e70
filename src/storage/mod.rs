//! [`PoolStorage`]: OpenMLS's SQLite storage with the KeyPackage pool beside
//! it, and the write scope that keeps the two in one transaction.
//!
//! This file holds the type, the lock that gives its connection to one
//! thread at a time (a transaction keeps it until it ends), its
//! transactions and write scope, and what its close and drop do. Each area
//! of its public API has a file of its own: [`open`] (constructors),
//! [`openmls_impl`] (the `StorageProvider` hook), [`metadata_store`] (the
//! metadata rows by hand), [`key_packages`] (whole KeyPackages, taking them
//! out of service, and adoption), [`withdrawals`] (the outbox), [`scopes`]
//! (listing and removing pools), [`consistency`] (verify and repair),
//! [`erasure`] (erasing on demand), [`status`] (what the operator needs to
//! know) and [`identities`]. The concepts they compose (the metadata table,
//! scopes, the erasure schedule, ...) live in modules of their own that
//! never name `PoolStorage`.

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
mod status;
mod withdrawals;
mod write_scope;

use batch_cache::BatchCache;

use std::{cell::Cell, marker::PhantomData, sync::Arc};

use parking_lot::{ReentrantMutex, ReentrantMutexGuard};
use rusqlite::Connection;

use crate::{
    codec::{DefaultCodec, PoolCodec},
    erasure::{ErasureSchedule, Leftover},
    error::{Error, Result},
    keying::Keying,
    options::StorageOptions,
    write_gate::{GatePass, WriteGate},
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
/// `C` is the [codec](crate::codec) for OpenMLS's blobs.
///
/// # Sharing it between threads
///
/// `PoolStorage` is `Send` and `Sync`: one handle, in an `Arc`, serves every
/// thread and task of the application. It owns one SQLite connection, which
/// one thread uses at a time. A [`transaction`](Self::transaction) belongs
/// to the thread that began it until it ends: calls from other threads
/// wait for it (they never see or join it), and calls on that thread
/// (OpenMLS's own, nested transactions) go straight through. Outside a
/// transaction each call holds the connection for its own length only.
///
/// So never wait, inside a transaction, for another thread that uses the
/// same storage, and never hold a transaction (or a
/// [`connection`](Self::connection) guard) across network I/O or an
/// `.await`: the guard stays on its thread, and the others wait. Keep one
/// handle per file: two threads each holding one of two handles on the
/// same file (in a transaction, or through a guard) and calling the other
/// wait for each other for good.
///
/// Within the process, the handles on one file share one background eraser
/// and one write gate, which keeps every checkpoint off every write
/// transaction (see the [operations guide](crate::guide::operations) on
/// SQLite's WAL-reset bug).
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
    /// The connection and what goes with it, held by one thread at a time.
    held: ReentrantMutex<Held>,
    /// The file's write gate, shared by the process's handles on it.
    gate: Arc<WriteGate>,
    /// The options the storage was opened with: every connection of its
    /// own is set up by them.
    options: StorageOptions,
    // `fn() -> C` keeps `PoolStorage` `Send` and `Sync` whatever the codec
    // type is.
    _codec: PhantomData<fn() -> C>,
}

/// What one thread at a time may use: the connection, and the state that
/// follows its transactions.
///
/// The fields drop in order: the connection closes before the erasure
/// schedule gives up the process's share of the file, so nothing of this
/// storage touches the file once another handle may have made the file's
/// gate anew.
struct Held {
    conn: Connection,
    /// How many [`WriteScope`]s are open on `conn`.
    scope_depth: Cell<u32>,
    /// When old copies of secrets are erased from the write-ahead log.
    erasure: ErasureSchedule,
    /// How the connections are keyed, for the eraser's connection after a
    /// rekey (zeroed on drop).
    #[cfg_attr(not(feature = "sqlcipher"), allow(dead_code))]
    keying: std::cell::RefCell<Keying>,
    /// Set by [`PoolStorage::close`], which has done what drop would.
    closed: bool,
}

/// The storage's connection, held for the calling thread: what
/// [`PoolStorage::connection`] returns. Other threads' calls on the storage
/// wait until it is dropped. It dereferences to `rusqlite::Connection`.
pub struct ConnectionGuard<'a> {
    held: ReentrantMutexGuard<'a, Held>,
}

impl std::ops::Deref for ConnectionGuard<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.held.conn
    }
}

impl std::fmt::Debug for ConnectionGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionGuard")
            .field("path", &self.held.conn.path())
            .finish_non_exhaustive()
    }
}

impl<C: PoolCodec> std::fmt::Debug for PoolStorage<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = f.debug_struct("PoolStorage");
        // Never waits: a storage another thread holds shows no path.
        if let Some(held) = self.held.try_lock() {
            debug.field("path", &held.conn.path());
        }
        debug.finish_non_exhaustive()
    }
}

impl<C: PoolCodec> PoolStorage<C> {
    /// The storage over a connection whose schema is up to date.
    fn new(
        conn: Connection,
        erasure: ErasureSchedule,
        gate: Arc<WriteGate>,
        keying: Keying,
        options: StorageOptions,
    ) -> Self {
        Self {
            held: ReentrantMutex::new(Held {
                conn,
                scope_depth: Cell::new(0),
                erasure,
                keying: std::cell::RefCell::new(keying),
                closed: false,
            }),
            gate,
            options,
            _codec: PhantomData,
        }
    }

    /// Holds the connection for the calling thread (again, if it holds it
    /// already).
    fn held(&self) -> ReentrantMutexGuard<'_, Held> {
        self.held.lock()
    }

    /// The underlying connection, held for the calling thread until the
    /// guard is dropped: for the application's own tables.
    ///
    /// Write the application's rows inside a [`transaction`](Self::transaction)
    /// (they then commit or roll back with OpenMLS's), not through the
    /// guard alone: a write outside a transaction commits on its own, and
    /// outside the file's write gate. Writing OpenMLS's or the pool's
    /// tables through it bypasses the guarantees of this type. Drop the
    /// guard soon: other threads' calls on the storage wait for it.
    pub fn connection(&self) -> ConnectionGuard<'_> {
        ConnectionGuard { held: self.held() }
    }

    /// Runs `f` in one transaction: commits when it returns `Ok`, rolls back
    /// when it returns `Err` or panics (the panic then goes on).
    ///
    /// Everything written through this storage inside `f` (what OpenMLS
    /// writes, the pool's rows and withdrawals, and the application's own
    /// rows written through [`connection`](Self::connection)) lands in one
    /// commit, with one sync to disk. The transaction takes the write lock
    /// up front (`BEGIN IMMEDIATE`), so two writers never deadlock
    /// upgrading a read lock. Nested calls become savepoints of the outer
    /// transaction; so does a call inside a transaction the application
    /// began on the raw connection, which then decides the locking.
    ///
    /// The transaction belongs to the calling thread: other threads' calls
    /// on this storage wait until it ends.
    /// [`PoolProvider::transaction`](crate::PoolProvider::transaction) and
    /// [`PoolProvider::group_transaction`](crate::PoolProvider::group_transaction)
    /// are the same with the provider OpenMLS needs.
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
        let held = self.held();
        // Dropped last, after the commit or the rollback. Best effort: a
        // cache that could not be raised makes a batch write more, never
        // write wrong.
        let _cache = (held.scope_depth.get() == 0 && held.conn.is_autocommit())
            .then(|| BatchCache::raise(&held.conn).ok())
            .flatten();
        let scope = self.write_scope()?;
        let value = f(self)?;
        self.commit(scope)?;
        Ok(value)
    }

    /// How a log record ends that says what a call is about to write:
    /// nothing when it commits on its own, and that it waits for the
    /// transaction open around the call otherwise (which may yet roll
    /// back). Asked before the call's own transaction begins.
    pub(crate) fn commit_note(&self) -> &'static str {
        let held = self.held();
        if held.scope_depth.get() > 0 || !held.conn.is_autocommit() {
            ", to commit with the transaction open around it"
        } else {
            ""
        }
    }

    /// Whether a write scope of this storage is open on the calling thread
    /// (which then holds the storage).
    pub(crate) fn in_scope(&self) -> bool {
        self.held().scope_depth.get() > 0
    }

    /// Enters the file's write gate for the calling thread, waiting for
    /// another thread's write or checkpoint as long as the busy timeout.
    fn enter_gate(&self) -> Result<GatePass<'_>> {
        self.gate
            .enter(self.options.busy_timeout)
            .ok_or(Error::GateBusy {
                waited: self.options.busy_timeout,
            })
    }

    /// Opens a write scope on this storage's connection: holds the storage
    /// and the file's write gate for the calling thread until it ends.
    pub(crate) fn write_scope(&self) -> Result<WriteScope<'_>> {
        let held = self.held();
        ensure_not_lost(&held)?;
        let pass = self.enter_gate()?;
        WriteScope::begin(held, pass)
    }

    /// Commits a write scope; when that commit reached the database, runs
    /// what the erasure schedule wants after a commit.
    pub(crate) fn commit(&self, scope: WriteScope<'_>) -> Result<()> {
        // Held across the commit and the erasure after it, so that no other
        // thread's write comes between the two.
        let held = self.held();
        let _pass = self.gate.try_enter();
        if scope.commit()? {
            held.erasure.after_commit(&held.conn);
        }
        Ok(())
    }

    /// Runs `write`, a single write that needs no scope of its own, inside
    /// the file's write gate: refused when SQLite has rolled back an open
    /// scope's transaction by itself, and, when it committed on its own (no
    /// transaction was open), counted as a commit by the erasure schedule,
    /// whether it succeeded or not.
    pub(crate) fn write_alone<T>(&self, write: impl FnOnce() -> Result<T>) -> Result<T> {
        let held = self.held();
        ensure_not_lost(&held)?;
        let _pass = self.enter_gate()?;
        let result = {
            let _span =
                crate::write_gate::probe::Span::begin(crate::write_gate::probe::Work::Write);
            write()
        };
        if held.scope_depth.get() == 0 && held.conn.is_autocommit() {
            held.erasure.after_commit(&held.conn);
        }
        result
    }

    /// Refuses to go on when SQLite has rolled back, by itself, the
    /// transaction a write scope of this storage opened: a write would
    /// otherwise commit on its own, outside the batch it belongs to.
    pub(crate) fn ensure_not_lost(&self) -> Result<()> {
        ensure_not_lost(&self.held())
    }

    /// Records, inside the open write scope, that its commit leaves old
    /// copies of secrets in the write-ahead log to erase.
    pub(crate) fn record_leftover(&self, leftover: Leftover) -> Result<()> {
        let held = self.held();
        held.erasure.record_leftover(&held.conn, leftover)
    }

    /// Notes, inside the open write scope, that the grace sweep has work at
    /// `deadline` (Unix seconds) once the scope commits.
    pub(crate) fn record_deadline(&self, deadline: i64) {
        self.held().erasure.record_deadline(deadline);
    }

    /// Whether this storage's erasure policy erases overwritten secrets.
    pub(crate) fn erases_overwrites(&self) -> bool {
        self.held().erasure.erases_overwrites()
    }

    /// Finishes what erasure is pending, then closes the connection and
    /// releases the file, reporting what dropping the storage can only
    /// swallow.
    ///
    /// Waits for other connections as long as the busy timeout. When one
    /// still keeps old copies of secrets in the write-ahead log, the file
    /// is released all the same and the result is
    /// [`Error::ErasureIncomplete`]: the erasure stays recorded in the
    /// database, and the next open (of any process) finishes it. A mobile
    /// application calls this before it is suspended, so that no handle on
    /// a file in a shared container outlives its time.
    ///
    /// The file's eraser stops when this was the process's last handle on
    /// the file.
    ///
    /// ```
    /// use openmls_keypackage_pool::PoolStorage;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let storage = PoolStorage::open(dir.path().join("pool.db"))?;
    /// storage.close()?;
    /// # Ok::<(), openmls_keypackage_pool::Error>(())
    /// ```
    pub fn close(self) -> Result<()> {
        let mut storage = self;
        let held = storage.held.get_mut();
        held.closed = true;
        // Inside the file's gate, so never alongside the eraser's
        // checkpoint; the eraser stops only when the share of the file is
        // given up, after the connection has closed.
        let erased = if held.conn.is_autocommit() {
            held.erasure.finish_before_close(&held.conn)
        } else {
            Ok(false)
        };
        // A placeholder takes the connection's place, so that it can be
        // closed here and its error reported.
        let closed = Connection::open_in_memory()
            .map_err(Error::from)
            .and_then(|placeholder| {
                std::mem::replace(&mut held.conn, placeholder)
                    .close()
                    .map_err(|(_, e)| Error::from(e))
            });
        held.erasure.release_file();
        closed?;
        match erased? {
            true => Ok(()),
            false => Err(Error::ErasureIncomplete),
        }
    }
}

/// Refuses to go on when scopes are open but SQLite has rolled their
/// transaction back by itself.
fn ensure_not_lost(held: &Held) -> Result<()> {
    write_scope::ensure_not_lost(&held.conn, &held.scope_depth)
}

impl<C: PoolCodec> Drop for PoolStorage<C> {
    /// Finishes a pending erasure before the connection closes (best
    /// effort: what a reader still blocks stays recorded in the database for
    /// the next open or commit). [`close`](PoolStorage::close) does the same
    /// and says how it went.
    fn drop(&mut self) {
        let held = self.held.get_mut();
        if held.closed {
            return;
        }
        // The connection then closes, and only after it the share of the
        // file goes (the fields' order): the file's eraser stops if this
        // was the process's last handle on it.
        let _ = held.erasure.finish_leftover(&held.conn);
    }
}
