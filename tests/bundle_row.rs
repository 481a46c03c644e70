//! The pool writes a built KeyPackage's bundle row itself, with a cached
//! statement; the row must be exactly the one `openmls_sqlite_storage`
//! writes, byte for byte, in every codec, and read back through
//! `openmls_sqlite_storage`'s own lookup. If a future `openmls_sqlite_storage`
//! changes its table, this fails first.

mod common;

use common::{Identity, PoolFixture};
use openmls::prelude::*;
use openmls_keypackage_pool::{
    codec::{JsonCodec, MessagePackCodec, PoolCodec},
    key_package_ref_from_bytes, PoolConfig, PoolProvider, PoolStorage,
};
use openmls_sqlite_storage::SqliteStorageProvider;
use openmls_traits::storage::StorageProvider as _;
use tls_codec::Serialize as _;

/// Every column of every row of `openmls_key_packages`.
fn bundle_rows(conn: &rusqlite::Connection) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
    let mut stmt = conn
        .prepare(
            "SELECT key_package_ref, key_package, provider_version FROM openmls_key_packages
             ORDER BY key_package_ref",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn same_row_as_openmls_sqlite_storage<C: PoolCodec>() {
    let (_dir, path) = common::temp_db();
    let provider = PoolProvider::new(PoolStorage::<C>::open_with_codec(&path).unwrap());
    let id = Identity::new("row");
    let pool = id.pool(&provider, PoolConfig::default());
    let mut refs = pool.generate(2).unwrap();
    refs.extend(pool.generate_parallel(2, 2).unwrap());
    refs.extend(pool.ensure_last_resort(common::now()).unwrap().created);
    let ours = bundle_rows(&provider.storage().connection());
    assert_eq!(ours.len(), 5);

    // The same bundles written by openmls_sqlite_storage into a file of its
    // own.
    let (_other_dir, other_path) = common::temp_db();
    let mut theirs =
        SqliteStorageProvider::<C, _>::new(rusqlite::Connection::open(&other_path).unwrap());
    theirs.run_migrations().unwrap();
    let conn = provider.storage().connection();
    let lookup = SqliteStorageProvider::<C, &rusqlite::Connection>::new(&conn);
    for r in &refs {
        let kp_ref = key_package_ref_from_bytes(r).unwrap();
        // Read back through openmls_sqlite_storage's own lookup.
        let bundle: KeyPackageBundle = lookup.key_package(&kp_ref).unwrap().unwrap();
        assert_eq!(
            bundle.key_package().hash_ref(provider.crypto()).unwrap(),
            kp_ref
        );
        let ours_bundle = provider.storage().key_package_bundle(r).unwrap().unwrap();
        assert_eq!(
            bundle.key_package().tls_serialize_detached().unwrap(),
            ours_bundle.key_package().tls_serialize_detached().unwrap()
        );
        theirs.write_key_package(&kp_ref, &bundle).unwrap();
    }
    let theirs_rows = bundle_rows(&rusqlite::Connection::open(&other_path).unwrap());
    assert_eq!(ours, theirs_rows, "{}", C::NAME);
}

#[test]
fn the_pool_writes_the_row_openmls_sqlite_storage_writes_in_messagepack() {
    same_row_as_openmls_sqlite_storage::<MessagePackCodec>();
}

#[test]
fn the_pool_writes_the_row_openmls_sqlite_storage_writes_in_json() {
    same_row_as_openmls_sqlite_storage::<JsonCodec>();
}

#[test]
fn a_pool_built_key_package_joins_a_group_through_openmls() {
    let fx = PoolFixture::new();
    let r = fx
        .pool(PoolConfig::default())
        .generate(1)
        .unwrap()
        .remove(0);
    let bundle = fx.storage().key_package_bundle(&r).unwrap().unwrap();
    let (_group, welcome) =
        common::PlainClient::new("ines").create_group_with(bundle.key_package());
    common::join(&fx.provider, welcome).unwrap();
    let kp_ref = key_package_ref_from_bytes(&r).unwrap();
    assert!(common::stored_bundle(fx.storage(), &kp_ref).is_none());
    assert_eq!(fx.storage().get_metadata(&r).unwrap(), None);
}
