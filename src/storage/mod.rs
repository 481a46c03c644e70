//! [`PoolStorage`]: OpenMLS's SQLite storage with the KeyPackage pool beside
//! it, and the write scope that keeps the two in one transaction.

mod batch_cache;
mod openmls_impl;
mod write_scope;

use batch_cache::BatchCache;

use std::{cell::Cell, marker::PhantomData, path::Path, time::Duration};

use openmls::prelude::KeyPackageBundle;
use openmls_traits::storage::{StorageProvider, CURRENT_VERSION};
use rusqlite::Connection;

use crate::{
    bundles,
    clock::unix_now,
    codec::{DefaultCodec, PoolCodec},
    codec_marker,
    erasure::{self, ErasurePolicy, Leftover, Pending},
    error::{Error, RefBytes, Result},
    identity,
    keypackage_ref::{check_ref, key_package_ref_from_bytes},
    metadata::{self, KeyPackageMetadata, PoolEntry, TransitionDetails},
    options::StorageOptions,
    schema,
    status::KeyPackageStatus,
    verify::{self, ConsistencyReport},
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
    /// An erasure of old copies of secrets from the write-ahead log that
    /// this storage knows to be due; the database records it as well.
    pending: Cell<Option<Pending>>,
    /// When pending erasures run.
    erasure: ErasurePolicy,
    /// The busy timeout the options set, restored after checkpoints.
    busy_timeout: Duration,
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

impl PoolStorage<DefaultCodec> {
    /// Opens (creating if needed) the database file at `path` with the default
    /// codec, and brings its schema up to date.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with_codec(path)
    }

    /// A fresh database in memory, with the default codec.
    pub fn open_in_memory() -> Result<Self> {
        Self::open_in_memory_with_codec()
    }

    /// Opens (creating if needed) the database file at `path` with the
    /// default codec and `options`.
    pub fn open_with_options(path: impl AsRef<Path>, options: &StorageOptions) -> Result<Self> {
        Self::open_with_codec_and_options(path, options)
    }

    /// Opens (creating if needed) a database file encrypted with SQLCipher
    /// under the passphrase `key`, with the default codec and options.
    ///
    /// A wrong key, or a file that is not an encrypted database, is
    /// [`Error::WrongKey`]; nothing is written to it. The file's bytes,
    /// header included, are indistinguishable from random.
    ///
    /// ```
    /// # fn main() -> Result<(), openmls_keypackage_pool::Error> {
    /// use openmls_keypackage_pool::{Error, PoolStorage};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("secret.db");
    /// PoolStorage::open_encrypted(&path, "correct horse battery staple")?;
    /// assert!(matches!(PoolStorage::open_encrypted(&path, "wrong"), Err(Error::WrongKey)));
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "sqlcipher")]
    pub fn open_encrypted(path: impl AsRef<Path>, key: &str) -> Result<Self> {
        let conn = Connection::open(path)?;
        // The key must be the first thing the connection is told; reading
        // the schema then proves it right before anything is written.
        conn.pragma_update(None, "key", key)?;
        match conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |row| {
            row.get::<_, i64>(0)
        }) {
            Ok(_) => {}
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) => {
                return Err(Error::WrongKey)
            }
            Err(e) => return Err(e.into()),
        }
        Self::from_connection(conn)
    }

    /// Takes over an open connection with the default codec and
    /// [`StorageOptions`]; see
    /// [`from_connection_with_codec`](Self::from_connection_with_codec).
    pub fn from_connection(conn: Connection) -> Result<Self> {
        Self::from_connection_with_codec(conn, &StorageOptions::default())
    }
}

impl<C: PoolCodec> PoolStorage<C> {
    /// Opens (creating if needed) the database file at `path` with codec `C`
    /// and the default [`StorageOptions`].
    ///
    /// ```
    /// use openmls_keypackage_pool::{codec::JsonCodec, PoolStorage};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let storage = PoolStorage::<JsonCodec>::open_with_codec(dir.path().join("pool.db"))?;
    /// # Ok::<(), openmls_keypackage_pool::Error>(())
    /// ```
    pub fn open_with_codec(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with_codec_and_options(path, &StorageOptions::default())
    }

    /// Opens (creating if needed) the database file at `path` with codec `C`
    /// and `options`.
    pub fn open_with_codec_and_options(
        path: impl AsRef<Path>,
        options: &StorageOptions,
    ) -> Result<Self> {
        // Checked before the file is opened, so bad options create nothing.
        options.validate()?;
        Self::from_connection_with_codec(Connection::open(path)?, options)
    }

    /// A fresh in-memory database with codec `C`.
    pub fn open_in_memory_with_codec() -> Result<Self> {
        Self::from_connection_with_codec(Connection::open_in_memory()?, &StorageOptions::default())
    }

    /// Takes over an open connection with codec `C` and `options` (replacing
    /// the connection's busy timeout, journal mode and sync level), and runs
    /// whatever `openmls_sqlite_storage`'s migrations and this crate's have
    /// not yet applied.
    ///
    /// When the schema is current this only reads: no write lock is taken,
    /// so opening does not wait for another process's long transaction.
    /// Several processes may create or upgrade one file at once; one
    /// migrates while the others wait (up to the busy timeout) and then find
    /// the schema current.
    ///
    /// The database records the [codec](crate::codec) it is stored with: a
    /// database written with another codec is [`Error::CodecMismatch`], and
    /// a pool schema newer than this build [`Error::SchemaTooNew`], both
    /// before anything (even the journal mode) is written to the file.
    ///
    /// A database written by a plain `openmls_sqlite_storage`
    /// `SqliteStorageProvider` keeps all its data; its KeyPackages are listed
    /// by [`unpooled_key_packages`](Self::unpooled_key_packages) until
    /// adopted. Open it with the codec it was written with: its codec is
    /// recorded once a stored entity decodes with the one given, and a
    /// database whose entities do not is refused.
    ///
    /// ```
    /// use openmls_keypackage_pool::{codec::JsonCodec, Error, PoolStorage};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("pool.db");
    /// drop(PoolStorage::<JsonCodec>::open_with_codec(&path)?);
    /// match PoolStorage::open(&path) {
    ///     Err(Error::CodecMismatch { found, expected }) => {
    ///         assert_eq!((found.as_str(), expected), ("json", "messagepack"));
    ///     }
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), Error>(())
    /// ```
    pub fn from_connection_with_codec(
        mut conn: Connection,
        options: &StorageOptions,
    ) -> Result<Self> {
        // Refuse a newer schema, or another codec, before anything (even the
        // journal mode) is written to the file.
        schema::check_not_newer(&conn)?;
        codec_marker::check::<C>(&conn)?;
        schema::bring_up_to_date::<C>(&mut conn, options)?;
        let storage = Self {
            conn,
            scope_depth: Cell::new(0),
            pending: Cell::new(None),
            erasure: options.erasure,
            busy_timeout: options.busy_timeout,
            _codec: PhantomData,
        };
        // Finish an erasure that another storage left pending (a reader was
        // in its way, or it was killed). Best effort: the open has succeeded
        // either way, and the next commit tries again.
        if matches!(erasure::recorded(&storage.conn), Ok(Some(_))) {
            let _ = storage.erase_now();
        }
        Ok(storage)
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
        self.finish(scope)?;
        Ok(value)
    }

    /// Opens a write scope on this storage's connection.
    pub(crate) fn write_scope(&self) -> Result<WriteScope<'_>> {
        WriteScope::begin(&self.conn, &self.scope_depth)
    }

    /// Commits a write scope; when that commit reached the database, runs
    /// what the erasure policy wants after a commit.
    pub(crate) fn finish(&self, scope: WriteScope<'_>) -> Result<()> {
        if scope.commit()? {
            self.after_commit();
        }
        Ok(())
    }

    /// After a write outside any write scope: when it committed on its own,
    /// runs what the erasure policy wants after a commit.
    pub(crate) fn after_write(&self) {
        if self.scope_depth.get() == 0 && self.conn.is_autocommit() {
            self.after_commit();
        }
    }

    /// Counts a commit against the pending erasure (adopting one the
    /// database records, left by another storage), and erases when the
    /// policy says it is due. Best effort: the commit has succeeded either
    /// way, and an erasure that could not finish stays pending.
    fn after_commit(&self) {
        let pending = match self.pending.get() {
            Some(pending) => Some(pending.after_commit()),
            None => erasure::recorded(&self.conn)
                .ok()
                .flatten()
                .map(|(pending, _)| pending),
        };
        self.pending.set(pending);
        if pending.is_some_and(|p| p.is_due(self.erasure)) {
            let _ = self.erase_now();
        }
    }

    /// Notes, inside the open write scope, that its commit leaves old copies
    /// of secrets in the log: in the database, so that any later open or
    /// commit finishes the erasure, and here. Overwrites count only under a
    /// policy that erases them.
    pub(crate) fn left_behind(&self, leftover: Leftover) -> Result<()> {
        if leftover == Leftover::Overwritten && self.erasure == ErasurePolicy::Deletions {
            return Ok(());
        }
        erasure::record(&self.conn)?;
        self.pending.set(Some(match self.pending.get() {
            Some(pending) => pending.and(leftover),
            None => Pending::new(leftover),
        }));
        Ok(())
    }

    /// Whether overwrites of secrets must go through a write scope to be
    /// recorded.
    pub(crate) fn erases_overwrites(&self) -> bool {
        self.erasure != ErasurePolicy::Deletions
    }

    /// Checkpoints and truncates the log without waiting for anyone, and on
    /// success clears the pending erasure, here and in the database.
    fn erase_now(&self) -> Result<bool> {
        if self.scope_depth.get() > 0 || !self.conn.is_autocommit() {
            return Ok(false);
        }
        // Read before the checkpoint: a leftover recorded after it bumps the
        // generation, and clearing then leaves it pending.
        let generation = erasure::recorded(&self.conn)?.map(|(_, generation)| generation);
        // Never wait for other connections here: this runs right after
        // commits (in the middle of processing a message, say), and a reader
        // elsewhere must not stall it. What cannot be done now is retried.
        self.conn.busy_timeout(Duration::ZERO)?;
        let erased = erasure::checkpoint(&self.conn);
        if matches!(erased, Ok(true)) {
            self.pending.set(None);
            if let Some(generation) = generation {
                // The log is empty; if clearing the record fails (another
                // writer, a read-only file), a later commit only checkpoints
                // once more.
                let _ = erasure::clear(&self.conn, generation);
            }
        }
        self.conn.busy_timeout(self.busy_timeout)?;
        erased
    }

    /// Refuses to write when SQLite has rolled back, by itself, the
    /// transaction a write scope of this storage opened: the write would
    /// otherwise commit on its own, outside the batch it belongs to.
    pub(crate) fn guard(&self) -> Result<()> {
        write_scope::ensure_not_lost(&self.conn, &self.scope_depth)
    }

    /// Removes old copies of deleted and overwritten rows from the
    /// database's files, so that the private keys of spent and pruned
    /// KeyPackages, and the secrets OpenMLS has replaced, cannot be read
    /// back from them.
    ///
    /// With `secure_delete` on (the default, see [`StorageOptions`]) SQLite
    /// overwrites deleted content in the database pages; in WAL mode the
    /// pages as they were before still sit in the `-wal` file until a
    /// checkpoint copies the new ones back and the log is truncated. This
    /// runs that checkpoint, without waiting for other connections. It runs
    /// by itself as the [`ErasurePolicy`] says: by default after each commit
    /// of this storage that deleted key material (a KeyPackage's bundle, or
    /// OpenMLS's epoch, encryption, signature or PSK secrets), and for one
    /// that overwrote secrets (every message OpenMLS decrypts rewrites its
    /// message secrets) at the 16th commit after it or the first commit 2
    /// seconds after it, whichever comes first. A pending erasure is
    /// recorded in the database; when a reader is in the way it is retried
    /// at the next commit of any storage on the file, at the next open, and
    /// when this storage is dropped. Call it directly after committing a
    /// transaction the application began on the raw connection, or once
    /// another connection has finished reading.
    ///
    /// This erases the content of the files; what the file system keeps of
    /// truncated or deleted blocks is beyond SQLite's reach. In the rollback
    /// journal modes there is no log to empty and it returns `Ok(true)`.
    ///
    /// Returns `Ok(true)` when the log was emptied, `Ok(false)` when another
    /// connection (or a statement of this one still being stepped) kept
    /// part of it, or a transaction of this one is open, so that the
    /// erasure is incomplete for now.
    ///
    /// ```
    /// use openmls_keypackage_pool::PoolStorage;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let storage = PoolStorage::open(dir.path().join("pool.db"))?;
    /// let mut stmt = storage.connection().prepare("SELECT 1 UNION ALL SELECT 2")?;
    /// let mut rows = stmt.query([])?;
    /// rows.next()?; // a statement in progress holds a read snapshot
    /// assert!(!storage.erase_deleted_key_material()?);
    /// drop(rows);
    /// assert!(storage.erase_deleted_key_material()?);
    /// # Ok::<(), openmls_keypackage_pool::Error>(())
    /// ```
    pub fn erase_deleted_key_material(&self) -> Result<bool> {
        self.erase_now()
    }

    /// Checks that every KeyPackageBundle has a metadata row and every row
    /// its bundle, and runs SQLite's integrity check; changes nothing.
    ///
    /// Meant for start-up: bundles written and deleted through this crate's
    /// storage always keep their rows, even across a crash, so anything
    /// found points at another writer, at damage, or at hand-made rows
    /// (`create_pool_metadata` makes a row without a bundle and
    /// `delete_pool_metadata` leaves a bundle without its row).
    pub fn verify(&self) -> Result<ConsistencyReport> {
        verify::check::<C>(&self.conn)
    }

    /// Removes, in one transaction, every bundle without a metadata row and
    /// every metadata row without a bundle, recounts the per-status counts if
    /// they disagree, reads back the scope of rows that lost it, and returns
    /// what it found.
    ///
    /// When any stored bundle, or the ref it is stored under, does not
    /// decode with this storage's codec, or SQLite's integrity check fails,
    /// repair removes nothing and returns [`Error::RepairRefused`]: the
    /// database is then misread (another codec) or damaged, and every row
    /// paired with such a bundle would look orphaned.
    /// [`verify`](Self::verify) lists them.
    ///
    /// To keep bundles written before this crate managed the database, adopt
    /// them first ([`adopt_unpooled_key_packages`](Self::adopt_unpooled_key_packages)).
    pub fn repair(&self) -> Result<ConsistencyReport> {
        self.transaction(|storage| {
            let found = verify::check::<C>(&storage.conn)?;
            let undecodable = found.undecodable_bundle_keys.len() + found.undecodable_bundles.len();
            // Pairing rows in a file SQLite finds damaged is guesswork too.
            if undecodable > 0 || !found.integrity_errors.is_empty() {
                return Err(Error::RepairRefused {
                    undecodable,
                    integrity_errors: found.integrity_errors.len(),
                });
            }
            for keypackage_ref in &found.bundles_without_metadata {
                storage.remove_key_package(keypackage_ref)?;
            }
            for keypackage_ref in &found.metadata_without_bundle {
                metadata::delete(&storage.conn, keypackage_ref)?;
            }
            if !found.metadata_without_scope.is_empty() {
                crate::scope::backfill::<C>(&storage.conn)?;
            }
            if found.counts_out_of_date {
                metadata::rebuild_counts(&storage.conn)?;
            }
            Ok(found)
        })
    }

    // --- the metadata store ---

    /// Adds a `created` metadata row for a KeyPackage with no last-resort
    /// extension. Rows for KeyPackages built through OpenMLS are added by
    /// the storage hook; this is for bookkeeping done by hand. The row
    /// belongs to no pool scope until its bundle is stored (then it takes
    /// the bundle's), unless the bundle is already there.
    pub fn create_pool_metadata(&self, keypackage_ref: &[u8], not_after: i64) -> Result<()> {
        self.guard()?;
        let by_hand = PoolEntry::by_hand(keypackage_ref.to_vec(), not_after);
        // A bundle already stored under the ref gives the row its scope; one
        // that cannot be read leaves it without, as for any row.
        let entry = match self.key_package_bundle(keypackage_ref) {
            Ok(Some(bundle)) => PoolEntry {
                not_after,
                ..PoolEntry::from_bundle(keypackage_ref.to_vec(), &bundle)
                    .unwrap_or(by_hand.clone())
            },
            _ => by_hand,
        };
        let result = metadata::insert(&self.conn, &entry, KeyPackageStatus::Created, unix_now()?);
        self.after_write();
        result
    }

    /// Moves a KeyPackage to `status`, stamping `uploaded_at`, `reserved_at`
    /// or `spent_at` as the status calls for.
    ///
    /// Setting the status a row already has changes nothing. A move the
    /// lifecycle does not allow (see [`KeyPackageStatus`]) is
    /// [`Error::InvalidTransition`]; a ref with no row is [`Error::NotFound`].
    pub fn update_pool_metadata_status(
        &self,
        keypackage_ref: &[u8],
        status: KeyPackageStatus,
    ) -> Result<()> {
        self.guard()?;
        let result = metadata::transition(
            &self.conn,
            keypackage_ref,
            status,
            unix_now()?,
            TransitionDetails::None,
        );
        self.after_write();
        result
    }

    /// How many KeyPackages are in `status`.
    pub fn count_by_status(&self, status: KeyPackageStatus) -> Result<usize> {
        metadata::count_by_status(&self.conn, status)
    }

    /// The refs whose `not_after` is before `current_time` (a KeyPackage is
    /// still valid in the second its `not_after` names), soonest first.
    pub fn get_expired_refs(&self, current_time: i64) -> Result<Vec<Vec<u8>>> {
        metadata::expired_refs(&self.conn, current_time)
    }

    /// Every KeyPackage in `status`, oldest created first.
    pub fn get_metadata_by_status(
        &self,
        status: KeyPackageStatus,
    ) -> Result<Vec<KeyPackageMetadata>> {
        metadata::by_status(&self.conn, status)
    }

    /// Deletes a metadata row, leaving any bundle in OpenMLS storage alone.
    ///
    /// To remove a KeyPackage entirely, delete it through OpenMLS's
    /// `StorageProvider::delete_key_package`, which removes both.
    pub fn delete_pool_metadata(&self, keypackage_ref: &[u8]) -> Result<()> {
        self.guard()?;
        check_ref(keypackage_ref)?;
        let deleted = metadata::delete(&self.conn, keypackage_ref);
        self.after_write();
        if deleted? {
            Ok(())
        } else {
            Err(Error::not_found(keypackage_ref))
        }
    }

    /// Marks a KeyPackage `reserved` and records the server's reservation.
    ///
    /// On a row that is already reserved this is a no-op that keeps the
    /// first reservation's details.
    pub fn update_reservation_info(
        &self,
        keypackage_ref: &[u8],
        reservation_id: &str,
        reserved_by: &str,
        expires_at: i64,
    ) -> Result<()> {
        self.guard()?;
        let result = metadata::transition(
            &self.conn,
            keypackage_ref,
            KeyPackageStatus::Reserved,
            unix_now()?,
            TransitionDetails::Reservation {
                reservation_id,
                reserved_by,
                expires_at,
            },
        );
        self.after_write();
        result
    }

    /// Marks a KeyPackage `spent`, recording who used it in which group.
    ///
    /// On a row that is already spent this is a no-op that keeps the first
    /// record.
    pub fn mark_spent(&self, keypackage_ref: &[u8], spent_by: &str, group_id: &[u8]) -> Result<()> {
        self.guard()?;
        let result = metadata::transition(
            &self.conn,
            keypackage_ref,
            KeyPackageStatus::Spent,
            unix_now()?,
            TransitionDetails::Spend { spent_by, group_id },
        );
        self.after_write();
        result
    }

    /// The metadata of one KeyPackage, if it has a row.
    pub fn get_metadata(&self, keypackage_ref: &[u8]) -> Result<Option<KeyPackageMetadata>> {
        metadata::get(&self.conn, keypackage_ref)
    }

    // --- whole KeyPackages: bundle and metadata ---

    /// The KeyPackageBundle stored under a raw ref, looked up the way OpenMLS
    /// looks it up.
    ///
    /// A bundle that cannot be decoded is [`Error::CorruptBundle`] naming
    /// the ref; other KeyPackages stay readable.
    pub fn key_package_bundle(&self, keypackage_ref: &[u8]) -> Result<Option<KeyPackageBundle>> {
        let kp_ref = key_package_ref_from_bytes(keypackage_ref)?;
        self.delegate().key_package(&kp_ref).map_err(|e| match e {
            rusqlite::Error::FromSqlConversionFailure(_, _, source) => Error::CorruptBundle {
                keypackage_ref: RefBytes::of(keypackage_ref),
                source,
            },
            other => other.into(),
        })
    }

    /// Deletes a KeyPackage's bundle and metadata row together, as OpenMLS
    /// does when a Welcome consumes it. Deleting a ref that has neither is
    /// not an error.
    pub fn remove_key_package(&self, keypackage_ref: &[u8]) -> Result<()> {
        let kp_ref = key_package_ref_from_bytes(keypackage_ref)?;
        <Self as StorageProvider<CURRENT_VERSION>>::delete_key_package(self, &kp_ref)
    }

    // --- bundles without metadata ---

    /// KeyPackageBundles in OpenMLS storage that have no metadata row, such
    /// as those written before this crate managed the database.
    pub fn unpooled_key_packages(&self) -> Result<Vec<PoolEntry>> {
        bundles::unpooled::<C>(&self.conn)
    }

    /// Gives every [unpooled](Self::unpooled_key_packages) KeyPackage a
    /// metadata row in `status`, in one transaction, reading each one's ref,
    /// expiry and last-resort flag from its stored bundle. Returns the
    /// adopted refs.
    pub fn adopt_unpooled_key_packages(&self, status: KeyPackageStatus) -> Result<Vec<Vec<u8>>> {
        self.transaction(|storage| {
            let now = unix_now()?;
            storage
                .unpooled_key_packages()?
                .into_iter()
                .map(|entry| {
                    metadata::insert(&storage.conn, &entry, status, now)?;
                    Ok(entry.keypackage_ref)
                })
                .collect()
        })
    }

    // --- identities ---

    /// Records `signature_public_key` as `username`'s, replacing any earlier
    /// one.
    pub fn save_identity(&self, username: &str, signature_public_key: &[u8]) -> Result<()> {
        self.guard()?;
        let result = identity::save(&self.conn, username, signature_public_key, unix_now()?);
        self.after_write();
        result
    }

    /// The signature public key saved for `username`, if any.
    pub fn load_public_key(&self, username: &str) -> Result<Option<Vec<u8>>> {
        identity::load_public_key(&self.conn, username)
    }
}

impl<C: PoolCodec> Drop for PoolStorage<C> {
    /// Finishes a pending erasure before the connection closes (best
    /// effort: what a reader still blocks stays recorded in the database for
    /// the next open or commit).
    fn drop(&mut self) {
        // Never wait for another connection while dropping: in the rollback
        // journal modes even this read would queue behind a writer.
        let _ = self.conn.busy_timeout(Duration::ZERO);
        let recorded = || matches!(erasure::recorded(&self.conn), Ok(Some(_)));
        if self.pending.get().is_some() || recorded() {
            let _ = self.erase_now();
        }
    }
}
