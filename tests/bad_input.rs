//! Bad input of every kind the crate can meet: each is a typed error (or a
//! report), never a panic, and no data is lost. `docs/reliability.md` lists
//! these cases with what the user gets.

mod common;

use common::{build_key_package, bundle_count, metadata_count, Identity};
use openmls::prelude::*;
use openmls_keypackage_pool::{
    key_package_ref_from_bytes, Error, KeyPackagePool, KeyPackageStatus, PoolConfig, PoolProvider,
    PoolStorage,
};
use openmls_traits::storage::StorageProvider as _;
use rusqlite::{Connection, OpenFlags};

#[test]
fn a_file_that_is_not_a_database_is_refused_and_left_alone() {
    let (_dir, path) = common::temp_db();
    let text = b"SQLite format 2? no, a shopping list: milk, eggs, KeyPackages".repeat(100);
    std::fs::write(&path, &text).unwrap();
    match PoolStorage::open(&path) {
        Err(Error::Sqlite(e)) => assert_eq!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::NotADatabase)
        ),
        other => panic!("expected NotADatabase, got {other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), text);
}

#[test]
fn a_truncated_database_is_an_error_or_a_failed_check_never_a_panic() {
    let (_dir, path) = common::temp_db();
    {
        let provider = PoolProvider::open(&path).unwrap();
        let id = Identity::new("trunc");
        for _ in 0..20 {
            build_key_package(&provider, &id, false);
        }
    }
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    match PoolStorage::open(&path) {
        Err(Error::Sqlite(_)) | Err(Error::Migration { .. }) => {}
        Err(other) => panic!("unexpected error kind: {other:?}"),
        Ok(storage) => {
            // If it opens at all, the damage must show.
            let report = storage.verify();
            assert!(
                report.as_ref().map_or(true, |r| !r.is_consistent()),
                "{report:?}"
            );
        }
    }
}

#[test]
fn a_corrupt_bundle_names_its_ref_and_the_others_stay_usable() {
    let (_dir, path) = common::temp_db();
    let provider = PoolProvider::open(&path).unwrap();
    let id = Identity::new("corrupt");
    let good = build_key_package(&provider, &id, false);
    let bad = build_key_package(&provider, &id, false);
    let good_ref = good.key_package().hash_ref(provider.crypto()).unwrap();
    let bad_ref = bad.key_package().hash_ref(provider.crypto()).unwrap();
    let storage = provider.storage();
    common::corrupt_latest_bundle(storage);

    match storage.key_package_bundle(bad_ref.as_slice()) {
        Err(Error::CorruptBundle { keypackage_ref, .. }) => {
            assert_eq!(keypackage_ref.0, bad_ref.as_slice())
        }
        other => panic!("expected CorruptBundle, got {other:?}"),
    }
    // OpenMLS's own lookup gets an error, not a panic.
    assert!(storage
        .key_package::<KeyPackageRef, KeyPackageBundle>(&bad_ref)
        .is_err());
    // The other KeyPackage is untouched and joins a group.
    assert!(storage
        .key_package_bundle(good_ref.as_slice())
        .unwrap()
        .is_some());
    let (_g, welcome) = common::PlainClient::new("alice").create_group_with(good.key_package());
    common::join(&provider, welcome).unwrap();
    // The pool names the bad one when listing uploads; removing it clears it.
    let pool = id.pool(&provider, PoolConfig::default());
    let pending = pool.pending_upload().unwrap();
    assert!(pending.ready.is_empty());
    match &pending.unreadable[..] {
        [unreadable] => match &unreadable.error {
            Error::CorruptBundle { keypackage_ref, .. } => {
                assert_eq!(keypackage_ref.0, bad_ref.as_slice())
            }
            other => panic!("expected CorruptBundle, got {other:?}"),
        },
        other => panic!("expected one unreadable KeyPackage, got {other:?}"),
    }
    storage.remove_key_package(bad_ref.as_slice()).unwrap();
    let pending = pool.pending_upload().unwrap();
    assert!(pending.ready.is_empty() && pending.unreadable.is_empty());
    assert_eq!((bundle_count(storage), metadata_count(storage)), (0, 0));
}

#[test]
fn extreme_timestamps_are_stored_and_compared_without_overflow() {
    let (_dir, path) = common::temp_db();
    let provider = PoolProvider::open(&path).unwrap();
    let storage = provider.storage();
    storage.create_pool_metadata(&[1; 32], i64::MAX).unwrap();
    storage.create_pool_metadata(&[2; 32], i64::MIN).unwrap();
    assert_eq!(
        storage.get_metadata(&[1; 32]).unwrap().unwrap().not_after,
        i64::MAX
    );
    assert_eq!(
        storage.get_expired_refs(i64::MIN).unwrap(),
        Vec::<Vec<u8>>::new()
    );
    assert_eq!(
        storage.get_expired_refs(i64::MAX).unwrap(),
        vec![vec![2; 32]]
    );
    storage
        .update_pool_metadata_status(&[1; 32], KeyPackageStatus::Uploaded)
        .unwrap();
    storage
        .update_pool_metadata_status(&[1; 32], KeyPackageStatus::Available)
        .unwrap();
    storage
        .update_reservation_info(&[1; 32], "r", "p", i64::MIN)
        .unwrap();

    let id = Identity::new("time");
    let pool = id.pool(&provider, PoolConfig::default());
    for r in [[1; 32], [2; 32]] {
        common::assign_scope(storage, &r, pool.scope());
    }
    // The reserved one never expires; the created one has expired at any
    // moment after i64::MIN.
    for (now, live) in [(i64::MIN, 2), (-1, 1), (0, 1), (i64::MAX, 1)] {
        let health = pool.health(now).unwrap();
        assert_eq!(health.live, live, "at {now}: {health:?}");
        assert_eq!(health.usable, 0, "at {now}");
    }
    assert_eq!(
        pool.expire_lapsed_reservations(0).unwrap(),
        vec![vec![1; 32]]
    );
    assert_eq!(pool.prune_expired(i64::MAX).unwrap(), vec![vec![2; 32]]);
}

#[test]
fn a_lifetime_past_i64_is_refused_before_anything_is_written() {
    let (_dir, path) = common::temp_db();
    let provider = PoolProvider::open(&path).unwrap();
    let id = Identity::new("forever");
    let scratch = openmls_rust_crypto::OpenMlsRustCrypto::default();
    let bundle = KeyPackage::builder()
        .key_package_lifetime(Lifetime::init(0, u64::MAX))
        .build(
            common::CIPHERSUITE,
            &scratch,
            &id.signer,
            id.credential.clone(),
        )
        .unwrap();
    let kp_ref = bundle.key_package().hash_ref(provider.crypto()).unwrap();
    match provider.storage().write_key_package(&kp_ref, &bundle) {
        Err(Error::TimestampOverflow {
            keypackage_ref,
            value,
        }) => {
            assert_eq!(keypackage_ref.0, kp_ref.as_slice());
            assert_eq!(value, u64::MAX);
        }
        other => panic!("expected TimestampOverflow, got {other:?}"),
    }
    // Through OpenMLS's builder the same KeyPackage is refused too.
    assert!(KeyPackage::builder()
        .key_package_lifetime(Lifetime::init(0, u64::MAX))
        .build(
            common::CIPHERSUITE,
            &provider,
            &id.signer,
            id.credential.clone()
        )
        .is_err());
    assert_eq!(
        (
            bundle_count(provider.storage()),
            metadata_count(provider.storage())
        ),
        (0, 0)
    );
    // And a pool lifetime that does not fit is a configuration error.
    let config = PoolConfig {
        lifetime_secs: u64::MAX,
        ..PoolConfig::default()
    };
    assert!(matches!(
        KeyPackagePool::new(&provider, &id.signer, id.credential.clone(), config),
        Err(Error::InvalidConfig { .. })
    ));
}

#[test]
fn a_ref_that_is_not_a_key_package_ref_is_refused_everywhere() {
    let (_dir, path) = common::temp_db();
    let storage = PoolStorage::open(&path).unwrap();
    for bad in [Vec::new(), vec![0xab; 65], vec![0; 10_000]] {
        assert!(matches!(
            key_package_ref_from_bytes(&bad),
            Err(Error::InvalidRef { .. })
        ));
        assert!(matches!(
            storage.get_metadata(&bad),
            Err(Error::InvalidRef { .. })
        ));
        assert!(matches!(
            storage.key_package_bundle(&bad),
            Err(Error::InvalidRef { .. })
        ));
        assert!(matches!(
            storage.remove_key_package(&bad),
            Err(Error::InvalidRef { .. })
        ));
        assert!(matches!(
            storage.mark_spent(&bad, "x", b"g"),
            Err(Error::InvalidRef { .. })
        ));
    }
}

#[test]
fn a_read_only_database_refuses_writes_with_a_typed_error() {
    let (_dir, path) = common::temp_db();
    {
        let storage = PoolStorage::open(&path).unwrap();
        storage.create_pool_metadata(&[3; 32], 100).unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    // An up-to-date schema needs no writes, so it opens for reading.
    let storage = PoolStorage::from_connection(conn).unwrap();
    assert!(storage.get_metadata(&[3; 32]).unwrap().is_some());
    assert_eq!(
        storage.count_by_status(KeyPackageStatus::Created).unwrap(),
        1
    );
    match storage.create_pool_metadata(&[4; 32], 1) {
        Err(Error::Sqlite(e)) => {
            assert_eq!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::ReadOnly))
        }
        other => panic!("expected a read-only error, got {other:?}"),
    }
    assert!(matches!(
        storage.update_pool_metadata_status(&[3; 32], KeyPackageStatus::Uploaded),
        Err(Error::Sqlite(_))
    ));
    drop(storage);
    assert_eq!(std::fs::read(&path).unwrap(), before);
}
