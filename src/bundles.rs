//! Reads of OpenMLS's own `openmls_key_packages` table that the pool needs:
//! finding bundles that have no metadata row.
//!
//! The table's schema belongs to `openmls_sqlite_storage`; this module only
//! reads it, and decodes its keys and bundles with the storage codec.

use openmls::prelude::{KeyPackageBundle, KeyPackageRef};
use openmls_sqlite_storage::Codec;
use rusqlite::Connection;

use crate::{
    error::{Error, RefBytes, Result},
    metadata::{self, PoolEntry},
};

/// The storage provider version `openmls_sqlite_storage` writes rows with.
const PROVIDER_VERSION: u16 = openmls_traits::storage::CURRENT_VERSION;

/// Calls `f` with the stored key and bundle of every row of
/// `openmls_key_packages`, in storage order, and collects what it returns.
fn map_rows<T>(
    conn: &Connection,
    mut f: impl FnMut(Vec<u8>, Vec<u8>) -> Result<Option<T>>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare(
        "SELECT key_package_ref, key_package FROM openmls_key_packages
         WHERE provider_version = ?1 ORDER BY rowid",
    )?;
    let rows = stmt.query_map([PROVIDER_VERSION], |row| Ok((row.get(0)?, row.get(1)?)))?;
    let mut found = Vec::new();
    for row in rows {
        let (stored_key, stored_bundle) = row?;
        found.extend(f(stored_key, stored_bundle)?);
    }
    Ok(found)
}

/// Every stored bundle without a metadata row, in storage order.
pub(crate) fn unpooled<C: Codec>(conn: &Connection) -> Result<Vec<PoolEntry>> {
    map_rows(conn, |stored_key, stored_bundle| {
        let entry = decode_entry::<C>(&stored_key, &stored_bundle)?;
        Ok(metadata::get(conn, &entry.keypackage_ref)?
            .is_none()
            .then_some(entry))
    })
}

/// Decodes one `openmls_key_packages` row into the facts of its metadata row.
fn decode_entry<C: Codec>(stored_key: &[u8], stored_bundle: &[u8]) -> Result<PoolEntry> {
    let kp_ref: KeyPackageRef = C::from_slice(stored_key).map_err(|e| Error::CorruptBundle {
        keypackage_ref: RefBytes::of(stored_key),
        source: Box::new(e),
    })?;
    let bundle: KeyPackageBundle =
        C::from_slice(stored_bundle).map_err(|e| Error::CorruptBundle {
            keypackage_ref: RefBytes::of(kp_ref.as_slice()),
            source: Box::new(e),
        })?;
    PoolEntry::from_ref_and_bundle(&kp_ref, &bundle)
}

/// One row of `openmls_key_packages`, as the storage codec reads it.
pub(crate) enum StoredBundle {
    /// Key and bundle decode; the raw ref.
    Decodes(Vec<u8>),
    /// The key decodes (the raw ref) but the bundle does not.
    UndecodableBundle(Vec<u8>),
    /// The key does not decode; its stored bytes.
    UndecodableKey(Vec<u8>),
}

/// Every stored bundle, decoded key and bundle both, in storage order.
pub(crate) fn all_stored<C: Codec>(conn: &Connection) -> Result<Vec<StoredBundle>> {
    map_rows(conn, |key, bundle| {
        Ok(Some(match C::from_slice::<KeyPackageRef>(&key) {
            Err(_) => StoredBundle::UndecodableKey(key),
            Ok(kp_ref) => {
                let raw = kp_ref.as_slice().to_vec();
                match C::from_slice::<KeyPackageBundle>(&bundle) {
                    Ok(_) => StoredBundle::Decodes(raw),
                    Err(_) => StoredBundle::UndecodableBundle(raw),
                }
            }
        }))
    })
}
