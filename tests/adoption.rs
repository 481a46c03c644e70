//! A database written by plain `openmls_sqlite_storage` opens with
//! `PoolStorage`, keeps its data, and its KeyPackages can be adopted.

mod common;

use common::{
    build_key_package, bundle_count, join, metadata_count, plain_sqlite::PlainSqliteProvider,
    Identity, PlainClient,
};
use openmls::prelude::*;
use openmls_keypackage_pool::{codec::JsonCodec, KeyPackageStatus, PoolProvider, PoolStorage};

#[test]
fn a_plain_openmls_sqlite_database_is_adopted_with_its_data() {
    let (_dir, path) = common::temp_db();
    let carol = Identity::new("carol");

    // Before: the application used openmls_sqlite_storage directly.
    let (group_id, epoch, refs) = {
        let provider = PlainSqliteProvider::<JsonCodec>::open(&path);
        let group = MlsGroup::new(
            &provider,
            &carol.signer,
            &common::group_create_config(),
            carol.credential.clone(),
        )
        .unwrap();
        let refs: Vec<(KeyPackageRef, u64, bool)> = [false, false, true]
            .into_iter()
            .map(|last_resort| {
                let bundle = build_key_package(&provider, &carol, last_resort);
                let kp = bundle.key_package();
                (
                    kp.hash_ref(provider.crypto()).unwrap(),
                    kp.life_time().not_after(),
                    last_resort,
                )
            })
            .collect();
        (group.group_id().clone(), group.epoch(), refs)
    };

    // After: the same file through PoolStorage, same codec.
    let storage = PoolStorage::<JsonCodec>::open_with_codec(&path).unwrap();
    let group = MlsGroup::load(&storage, &group_id)
        .unwrap()
        .expect("group kept");
    assert_eq!(group.epoch(), epoch);
    assert_eq!(bundle_count(&storage), 3);
    assert_eq!(metadata_count(&storage), 0);

    let unpooled = storage.unpooled_key_packages().unwrap();
    assert_eq!(unpooled.len(), 3);
    for (kp_ref, not_after, last_resort) in &refs {
        let found = unpooled
            .iter()
            .find(|u| u.keypackage_ref == kp_ref.as_slice())
            .expect("listed");
        assert_eq!(found.not_after as u64, *not_after);
        assert_eq!(found.last_resort, *last_resort);
    }

    let adopted = storage
        .adopt_unpooled_key_packages(KeyPackageStatus::Available)
        .unwrap();
    assert_eq!(adopted.len(), 3);
    assert!(storage.unpooled_key_packages().unwrap().is_empty());
    assert_eq!(
        storage
            .count_by_status(KeyPackageStatus::Available)
            .unwrap(),
        3
    );
    for (kp_ref, not_after, last_resort) in &refs {
        let row = storage.get_metadata(kp_ref.as_slice()).unwrap().unwrap();
        assert_eq!(row.not_after as u64, *not_after);
        assert_eq!(row.last_resort, *last_resort);
    }
    // Adopting again finds nothing left to adopt.
    assert!(storage
        .adopt_unpooled_key_packages(KeyPackageStatus::Available)
        .unwrap()
        .is_empty());

    // An adopted KeyPackage is consumed like any other: bundle and row go.
    let provider = PoolProvider::new(storage);
    let (first_ref, ..) = &refs[0];
    let bundle = common::stored_bundle(provider.storage(), first_ref).unwrap();
    let (_g, welcome) = PlainClient::new("dave").create_group_with(bundle.key_package());
    join(&provider, welcome).unwrap();
    assert_eq!(
        provider
            .storage()
            .get_metadata(first_ref.as_slice())
            .unwrap(),
        None
    );
    assert_eq!(bundle_count(provider.storage()), 2);
    assert_eq!(metadata_count(provider.storage()), 2);
}

#[test]
fn new_key_packages_and_legacy_ones_are_told_apart() {
    let (_dir, path) = common::temp_db();
    let carol = Identity::new("carol");
    let legacy_ref = {
        let provider = PlainSqliteProvider::<JsonCodec>::open(&path);
        let bundle = build_key_package(&provider, &carol, false);
        bundle.key_package().hash_ref(provider.crypto()).unwrap()
    };
    let provider = PoolProvider::new(PoolStorage::<JsonCodec>::open_with_codec(&path).unwrap());
    build_key_package(&provider, &carol, false);
    let unpooled = provider.storage().unpooled_key_packages().unwrap();
    assert_eq!(unpooled.len(), 1);
    assert_eq!(unpooled[0].keypackage_ref, legacy_ref.as_slice());
}
