//! `StorageProvider` for [`PoolStorage`]: every method is
//! `openmls_sqlite_storage`'s, except the two KeyPackage writes, which also
//! keep the pool's metadata row in the same transaction.

use openmls::prelude::{KeyPackageBundle, KeyPackageRef};
use openmls_sqlite_storage::SqliteStorageProvider;
use openmls_traits::storage::{traits, StorageProvider, CURRENT_VERSION as V};
use rusqlite::Connection;

use super::PoolStorage;
use crate::{
    clock::unix_now,
    codec::{transcode, PoolCodec},
    erasure::Leftover,
    error::{Error, Result},
    keypackage_ref::raw_ref_of,
    metadata::{self, PoolEntry},
    status::KeyPackageStatus,
};

impl<C: PoolCodec> PoolStorage<C> {
    /// `openmls_sqlite_storage`'s provider as a view over this connection;
    /// free to make, so one is made per call.
    pub(super) fn sqlite_provider<'c>(
        &self,
        conn: &'c Connection,
    ) -> SqliteStorageProvider<C, &'c Connection> {
        SqliteStorageProvider::new(conn)
    }

    /// Reads the facts of a metadata row from what OpenMLS passed to
    /// `write_key_package`.
    ///
    /// The trait hands over the ref and bundle as opaque `serde` values;
    /// OpenMLS only ever passes its own `KeyPackageRef` and
    /// `KeyPackageBundle`, so they are moved into those types through the
    /// storage codec.
    fn pool_entry_of(
        hash_ref: &impl traits::HashReference<V>,
        key_package: &impl traits::KeyPackage<V>,
    ) -> Result<PoolEntry> {
        let keypackage_ref = raw_ref_of::<C>(hash_ref)?;
        let bundle: KeyPackageBundle =
            transcode::<C, _>(key_package, "reading a KeyPackageBundle")?;
        PoolEntry::from_bundle(keypackage_ref, &bundle)
    }

    /// Stores a bundle OpenMLS built elsewhere (with a scratch provider) and
    /// its metadata row, as the hook does, for a batch.
    ///
    /// The bundle's row is written here rather than through
    /// `openmls_sqlite_storage`, with a statement prepared once per
    /// connection instead of once per KeyPackage, but it is the very row
    /// `openmls_sqlite_storage` writes: same table, columns, provider
    /// version and codec bytes (a test compares the two byte for byte and
    /// reads the row back through `openmls_sqlite_storage`).
    ///
    /// Runs inside the batch's write scope, which must be open. The new
    /// metadata row is not counted here: the batch counts all of its rows
    /// once ([`metadata::add_count`]), in the same transaction. Returns
    /// whether a row was inserted (a ref that already had one keeps it).
    pub(crate) fn store_bundle(
        &self,
        kp_ref: &KeyPackageRef,
        bundle: &KeyPackageBundle,
    ) -> Result<bool> {
        // The pair needs no savepoint of its own: the batch abandons its
        // whole transaction on any error. But if SQLite has rolled that
        // transaction back (or none is open), the two writes would each
        // commit alone, so that is refused first.
        if !self.in_scope() {
            return Err(Error::TransactionLost);
        }
        self.ensure_not_lost()?;
        let entry = PoolEntry::from_ref_and_bundle(kp_ref, bundle)?;
        self.insert_bundle_row(kp_ref, bundle)?;
        self.insert_entry_row(&entry, Counted::ByCaller)
    }

    /// The row `openmls_sqlite_storage`'s `write_key_package` writes for
    /// this bundle, written with a cached statement.
    fn insert_bundle_row(&self, kp_ref: &KeyPackageRef, bundle: &KeyPackageBundle) -> Result<()> {
        let key = C::to_vec(kp_ref).map_err(|e| Error::codec("encoding a KeyPackageRef", e))?;
        let value =
            C::to_vec(bundle).map_err(|e| Error::codec("encoding a KeyPackageBundle", e))?;
        self.connection()
            .prepare_cached(
                "INSERT OR REPLACE INTO openmls_key_packages
                     (key_package_ref, key_package, provider_version)
                 VALUES (?1, ?2, ?3)",
            )?
            .execute(rusqlite::params![key, value, V])?;
        Ok(())
    }

    /// The `created` metadata row of a bundle just stored; returns whether
    /// a row was inserted.
    ///
    /// A bundle stored again under a ref that already has a row keeps that
    /// row (the ref is a hash of the KeyPackage, so it is the same one); if
    /// the row was made by hand, it learns its scope from the bundle.
    fn insert_entry_row(&self, entry: &PoolEntry, counted: Counted) -> Result<bool> {
        let now = unix_now()?;
        let inserted = match counted {
            Counted::Here => {
                metadata::insert(&self.connection(), entry, KeyPackageStatus::Created, now)
            }
            Counted::ByCaller => metadata::insert_uncounted(
                &self.connection(),
                entry,
                KeyPackageStatus::Created,
                now,
            ),
        };
        match inserted {
            Ok(()) => Ok(true),
            Err(Error::DuplicateRef { .. }) => {
                metadata::fill_scope(&self.connection(), entry).map(|_| false)
            }
            Err(e) => Err(e),
        }
    }
}

/// Who adds a new metadata row to the per-status counts.
#[derive(Clone, Copy)]
enum Counted {
    /// The insert itself, for a row written alone.
    Here,
    /// The batch the row belongs to, once for all of its rows.
    ByCaller,
}

/// Writes trait methods that forward to `openmls_sqlite_storage` and turn its
/// error into this crate's. Each first refuses to run in a transaction SQLite
/// has rolled back by itself. `read` methods only read. `plain` writes that
/// commit on their own count as commits for the erasure policy. `atomic`
/// methods run in a write scope: they issue several statements that
/// openmls_sqlite_storage asks callers to keep in one transaction.
/// `erasing` methods delete key material and `superseding` ones overwrite
/// secrets: both run in a write scope that records, in the same commit,
/// that old copies wait in the write-ahead log to be erased.
macro_rules! delegate {
    (@call read, $storage:ident, $call:expr) => {{
        let conn = $storage.connection();
        $storage.ensure_not_lost()?;
        $call(&*conn).map_err(Error::from)
    }};
    (@call plain, $storage:ident, $call:expr) => {
        $storage.write_alone(|| $call(&*$storage.connection()).map_err(Error::from))
    };
    (@call atomic, $storage:ident, $call:expr) => {{
        let scope = $storage.write_scope()?;
        let value = $call(&*$storage.connection())?;
        $storage.commit(scope)?;
        Ok(value)
    }};
    (@call erasing, $storage:ident, $call:expr) => {{
        let scope = $storage.write_scope()?;
        let value = $call(&*$storage.connection())?;
        $storage.record_leftover(Leftover::Deleted)?;
        $storage.commit(scope)?;
        Ok(value)
    }};
    (@call superseding, $storage:ident, $call:expr) => {{
        if $storage.erases_overwrites() {
            let scope = $storage.write_scope()?;
            let value = $call(&*$storage.connection())?;
            $storage.record_leftover(Leftover::Overwritten)?;
            $storage.commit(scope)?;
            Ok(value)
        } else {
            // Some of these issue several statements that
            // openmls_sqlite_storage asks to keep in one transaction.
            delegate!(@call atomic, $storage, $call)
        }
    }};
    ($(
        $(#[$attr:meta])*
        $mode:ident fn $name:ident<$($generic:ident: $bound:path),+ $(,)?>(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty;
    )*) => {$(
        $(#[$attr])*
        fn $name<$($generic: $bound),+>(&self $(, $arg: $ty)*) -> Result<$ret> {
            delegate!(@call $mode, self, |conn: &Connection| {
                self.sqlite_provider(conn).$name::<$($generic),+>($($arg),*)
            })
        }
    )*};
}

impl<C: PoolCodec> StorageProvider<V> for PoolStorage<C> {
    type Error = Error;

    /// Stores the bundle and inserts its `created` metadata row in one
    /// transaction (a savepoint inside an open one): both are written, or
    /// neither.
    fn write_key_package<
        HashReference: traits::HashReference<V>,
        KeyPackage: traits::KeyPackage<V>,
    >(
        &self,
        hash_ref: &HashReference,
        key_package: &KeyPackage,
    ) -> Result<()> {
        let entry = Self::pool_entry_of(hash_ref, key_package)?;
        let scope = self.write_scope()?;
        self.sqlite_provider(&self.connection())
            .write_key_package(hash_ref, key_package)?;
        self.insert_entry_row(&entry, Counted::Here)?;
        self.commit(scope)
    }

    /// Takes the KeyPackage out of service in one transaction (a savepoint
    /// inside an open one): its withdrawal recorded, as
    /// [`WithdrawalReason::Consumed`](crate::WithdrawalReason::Consumed), if
    /// a server may hold it, and its bundle and metadata row deleted, or,
    /// with a grace window, kept until the window ends so that another
    /// Welcome naming it still joins. OpenMLS calls this when a Welcome
    /// consumes a KeyPackage (never for last-resort ones), while staging
    /// the Welcome.
    fn delete_key_package<KeyPackageRef: traits::HashReference<V>>(
        &self,
        hash_ref: &KeyPackageRef,
    ) -> Result<()> {
        let keypackage_ref = raw_ref_of::<C>(hash_ref)?;
        let scope = self.write_scope()?;
        self.take_out_of_service(&keypackage_ref, crate::WithdrawalReason::Consumed)?;
        self.commit(scope)
    }

    crate::storage_methods::storage_methods!(delegate);
}
