//! The storage hook: KeyPackageBundles and their metadata rows are written
//! and deleted together, through real OpenMLS, and never one without the
//! other.

mod common;

use common::{
    build_key_package, bundle_count, join, metadata_count, stored_bundle, Identity, PlainClient,
};
use openmls::prelude::*;
use openmls_keypackage_pool::{key_package_ref_from_bytes, Error, KeyPackageStatus, PoolProvider};
use openmls_traits::storage::StorageProvider as _;
use tls_codec::Serialize as _;

fn provider() -> (tempfile::TempDir, PoolProvider) {
    let (dir, path) = common::temp_db();
    (dir, PoolProvider::open(path).unwrap())
}

#[test]
fn building_a_key_package_writes_one_bundle_and_one_created_row() {
    let (_dir, provider) = provider();
    let bob = Identity::new("bob");
    let bundle = build_key_package(&provider, &bob, false);
    let kp_ref = bundle.key_package().hash_ref(provider.crypto()).unwrap();

    let storage = provider.storage();
    assert_eq!(bundle_count(storage), 1);
    assert_eq!(metadata_count(storage), 1);
    let row = storage.get_metadata(kp_ref.as_slice()).unwrap().unwrap();
    assert_eq!(row.keypackage_ref, kp_ref.as_slice());
    assert_eq!(row.status, KeyPackageStatus::Created);
    assert_eq!(
        row.not_after as u64,
        bundle.key_package().life_time().not_after()
    );
    assert!(!row.last_resort);
    assert!(stored_bundle(storage, &kp_ref).is_some());
}

#[test]
fn the_row_is_keyed_by_the_raw_ref_a_server_sees() {
    let (_dir, provider) = provider();
    let bundle = build_key_package(&provider, &Identity::new("bob"), false);
    let kp_ref = bundle.key_package().hash_ref(provider.crypto()).unwrap();
    let stored: Vec<u8> = provider
        .storage()
        .connection()
        .query_row(
            "SELECT keypackage_ref FROM keypackage_pool_metadata",
            [],
            |r| r.get(0),
        )
        .unwrap();
    // SHA-256 output, not the codec's or TLS's encoding of it.
    assert_eq!(stored.len(), 32);
    assert_eq!(stored, kp_ref.as_slice());
}

#[test]
fn a_ref_rebuilt_from_raw_bytes_finds_and_deletes_the_bundle() {
    let (_dir, provider) = provider();
    let bundle = build_key_package(&provider, &Identity::new("bob"), false);
    let original = bundle.key_package().hash_ref(provider.crypto()).unwrap();
    let rebuilt = key_package_ref_from_bytes(original.as_slice()).unwrap();
    assert_eq!(
        rebuilt.tls_serialize_detached().unwrap(),
        original.tls_serialize_detached().unwrap()
    );
    assert_eq!(rebuilt, original);

    let storage = provider.storage();
    assert!(stored_bundle(storage, &rebuilt).is_some());
    storage.delete_key_package(&rebuilt).unwrap();
    assert!(stored_bundle(storage, &original).is_none());
    assert_eq!(storage.get_metadata(original.as_slice()).unwrap(), None);
    assert_eq!((bundle_count(storage), metadata_count(storage)), (0, 0));
}

#[test]
fn last_resort_flag_is_recorded() {
    let (_dir, provider) = provider();
    let bundle = build_key_package(&provider, &Identity::new("bob"), true);
    let kp_ref = bundle.key_package().hash_ref(provider.crypto()).unwrap();
    let row = provider
        .storage()
        .get_metadata(kp_ref.as_slice())
        .unwrap()
        .unwrap();
    assert!(row.last_resort);
}

#[test]
fn joining_from_a_welcome_deletes_bundle_and_row_together() {
    let (_dir, provider) = provider();
    let bob = Identity::new("bob");
    let kept = build_key_package(&provider, &bob, false);
    let used = build_key_package(&provider, &bob, false);
    let used_ref = used.key_package().hash_ref(provider.crypto()).unwrap();
    let kept_ref = kept.key_package().hash_ref(provider.crypto()).unwrap();

    let alice = PlainClient::new("alice");
    let (alice_group, welcome) = alice.create_group_with(used.key_package());
    let bob_group = join(&provider, welcome).unwrap();
    assert_eq!(bob_group.group_id(), alice_group.group_id());

    let storage = provider.storage();
    assert!(stored_bundle(storage, &used_ref).is_none());
    assert_eq!(storage.get_metadata(used_ref.as_slice()).unwrap(), None);
    // The other KeyPackage is untouched.
    assert!(stored_bundle(storage, &kept_ref).is_some());
    assert!(storage.get_metadata(kept_ref.as_slice()).unwrap().is_some());
    assert_eq!((bundle_count(storage), metadata_count(storage)), (1, 1));
}

#[test]
fn joining_with_a_last_resort_key_package_keeps_bundle_and_row() {
    let (_dir, provider) = provider();
    let bundle = build_key_package(&provider, &Identity::new("bob"), true);
    let kp_ref = bundle.key_package().hash_ref(provider.crypto()).unwrap();
    let (_group, welcome) = PlainClient::new("alice").create_group_with(bundle.key_package());
    join(&provider, welcome).unwrap();

    let storage = provider.storage();
    assert!(stored_bundle(storage, &kp_ref).is_some());
    let row = storage.get_metadata(kp_ref.as_slice()).unwrap().unwrap();
    assert!(row.last_resort);
    assert_eq!((bundle_count(storage), metadata_count(storage)), (1, 1));
}

fn fail_metadata(provider: &PoolProvider, event: &str) {
    common::fail_metadata(
        provider.storage(),
        event,
        0,
        &format!("injected {event} failure"),
    );
}

#[test]
fn a_failing_metadata_insert_rolls_back_the_bundle() {
    let (_dir, provider) = provider();
    let bob = Identity::new("bob");
    fail_metadata(&provider, "INSERT");
    let result = KeyPackage::builder().build(
        common::CIPHERSUITE,
        &provider,
        &bob.signer,
        bob.credential.clone(),
    );
    assert!(result.is_err());
    let storage = provider.storage();
    assert_eq!((bundle_count(storage), metadata_count(storage)), (0, 0));
}

#[test]
fn a_failing_metadata_delete_keeps_the_bundle() {
    let (_dir, provider) = provider();
    let bundle = build_key_package(&provider, &Identity::new("bob"), false);
    let kp_ref = bundle.key_package().hash_ref(provider.crypto()).unwrap();
    fail_metadata(&provider, "DELETE");

    let storage = provider.storage();
    let err = storage.delete_key_package(&kp_ref).unwrap_err();
    assert!(matches!(err, Error::Sqlite(_)), "{err:?}");
    assert!(stored_bundle(storage, &kp_ref).is_some());
    assert!(storage.get_metadata(kp_ref.as_slice()).unwrap().is_some());

    // The same through a Welcome: the join fails and nothing is lost.
    let (_group, welcome) = PlainClient::new("alice").create_group_with(bundle.key_package());
    assert!(join(&provider, welcome).is_err());
    assert!(stored_bundle(storage, &kp_ref).is_some());
    assert_eq!((bundle_count(storage), metadata_count(storage)), (1, 1));
}

#[test]
fn an_outer_transaction_that_fails_leaves_nothing() {
    let (_dir, provider) = provider();
    let bob = Identity::new("bob");
    let result: Result<(), Error> = provider.storage().transaction(|storage| {
        for _ in 0..3 {
            build_key_package(&provider, &bob, false);
        }
        assert_eq!(bundle_count(storage), 3, "visible inside the transaction");
        Err(Error::InvalidConfig {
            reason: "the application gave up".into(),
        })
    });
    assert!(result.is_err());
    let storage = provider.storage();
    assert_eq!((bundle_count(storage), metadata_count(storage)), (0, 0));
}

#[test]
fn an_outer_transaction_that_panics_leaves_nothing() {
    let (_dir, provider) = provider();
    let bob = Identity::new("bob");
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _: Result<(), Error> = provider.storage().transaction(|_| {
            build_key_package(&provider, &bob, false);
            panic!("application bug");
        });
    }));
    assert!(outcome.is_err());
    let storage = provider.storage();
    assert_eq!((bundle_count(storage), metadata_count(storage)), (0, 0));
    // The connection is usable afterwards.
    build_key_package(&provider, &bob, false);
    assert_eq!((bundle_count(storage), metadata_count(storage)), (1, 1));
}

#[test]
fn an_outer_transaction_commits_the_whole_batch() {
    let (_dir, path) = common::temp_db();
    let bob = Identity::new("bob");
    {
        let provider = PoolProvider::open(&path).unwrap();
        provider
            .storage()
            .transaction(|_| {
                for _ in 0..5 {
                    build_key_package(&provider, &bob, false);
                }
                // Nothing is committed until the closure returns: another
                // connection still sees an empty table.
                let other = rusqlite::Connection::open(&path).unwrap();
                let seen: i64 = other
                    .query_row("SELECT COUNT(*) FROM openmls_key_packages", [], |r| {
                        r.get(0)
                    })
                    .unwrap();
                assert_eq!(seen, 0);
                Ok::<_, Error>(())
            })
            .unwrap();
    }
    let provider = PoolProvider::open(&path).unwrap();
    let storage = provider.storage();
    assert_eq!((bundle_count(storage), metadata_count(storage)), (5, 5));
    assert_eq!(
        storage.count_by_status(KeyPackageStatus::Created).unwrap(),
        5
    );
}

#[test]
fn a_failed_inner_transaction_rolls_back_only_its_own_writes() {
    let (_dir, provider) = provider();
    let bob = Identity::new("bob");
    provider
        .storage()
        .transaction(|storage| {
            build_key_package(&provider, &bob, false);
            let inner: Result<(), Error> = storage.transaction(|_| {
                build_key_package(&provider, &bob, false);
                Err(Error::InvalidConfig {
                    reason: "inner fails".into(),
                })
            });
            assert!(inner.is_err());
            Ok::<_, Error>(())
        })
        .unwrap();
    let storage = provider.storage();
    assert_eq!((bundle_count(storage), metadata_count(storage)), (1, 1));
}

#[test]
fn a_transaction_sqlite_rolled_back_is_reported_not_half_kept() {
    let (_dir, provider) = provider();
    let bob = Identity::new("bob");
    let result: Result<(), Error> = provider.storage().transaction(|storage| {
        build_key_package(&provider, &bob, false);
        // What SQLite does by itself after a full disk or an I/O error.
        storage.connection().execute_batch("ROLLBACK").unwrap();
        // The application carries on; the next write must not quietly
        // commit on its own.
        let next = KeyPackage::builder().build(
            common::CIPHERSUITE,
            &provider,
            &bob.signer,
            bob.credential.clone(),
        );
        assert!(next.is_err());
        // Nor may any other write, pool bookkeeping or OpenMLS's own.
        assert!(matches!(
            storage.create_pool_metadata(&[9; 32], 1),
            Err(Error::TransactionLost)
        ));
        assert!(matches!(
            storage.save_identity("bob", b"pk"),
            Err(Error::TransactionLost)
        ));
        assert!(matches!(
            storage.write_own_leaf_index(&GroupId::from_slice(b"g"), &LeafNodeIndex::new(0)),
            Err(Error::TransactionLost)
        ));
        Ok(())
    });
    assert!(matches!(result, Err(Error::TransactionLost)), "{result:?}");
    let storage = provider.storage();
    assert_eq!((bundle_count(storage), metadata_count(storage)), (0, 0));
    assert_eq!(storage.load_public_key("bob").unwrap(), None);
    // And the storage works normally afterwards.
    build_key_package(&provider, &bob, false);
    assert_eq!((bundle_count(storage), metadata_count(storage)), (1, 1));
}

#[test]
fn a_join_inside_a_transaction_that_fails_keeps_the_key_package() {
    // OpenMLS deletes the KeyPackage while it processes the Welcome, before
    // the group is stored; an application that wants a failed join to keep
    // the KeyPackage runs the join in one transaction.
    let (_dir, provider) = provider();
    let bundle = build_key_package(&provider, &Identity::new("bob"), false);
    let kp_ref = bundle.key_package().hash_ref(provider.crypto()).unwrap();
    let (_group, welcome) = PlainClient::new("alice").create_group_with(bundle.key_package());
    let result: Result<(), Error> = provider.storage().transaction(|storage| {
        join(&provider, welcome).unwrap();
        assert!(stored_bundle(storage, &kp_ref).is_none(), "consumed inside");
        // Say the application fails to record the new group.
        Err(Error::TransactionLost)
    });
    assert!(result.is_err());
    let storage = provider.storage();
    assert!(stored_bundle(storage, &kp_ref).is_some());
    assert!(storage.get_metadata(kp_ref.as_slice()).unwrap().is_some());
}
