//! Encryption at rest with the `sqlcipher` feature: `cargo test --features
//! sqlcipher`.
#![cfg(feature = "sqlcipher")]

mod common;

use std::time::Duration;

use common::{
    build_key_package, bundle_count, conversation::Conversation, join, Identity, PlainClient,
};
use openmls_keypackage_pool::{Error, KeyPackageStatus, PoolProvider, PoolStorage};

const KEY: &str = "a passphrase only the app knows";

#[test]
fn an_encrypted_pool_works_like_a_plain_one_and_shows_no_sqlite_header() {
    let (_dir, path) = common::temp_db();
    let bob = Identity::new("bob");
    let bundle = {
        let provider = PoolProvider::open_encrypted(&path, KEY).unwrap();
        build_key_package(&provider, &bob, false);
        build_key_package(&provider, &bob, false)
    };
    let bytes = std::fs::read(&path).unwrap();
    assert!(!bytes.starts_with(b"SQLite format 3\0"));
    assert!(!bytes
        .windows(b"keypackage_pool_metadata".len())
        .any(|w| w == b"keypackage_pool_metadata"));

    // Reopened with the key: the pool is there, and a Welcome consumes a
    // KeyPackage as usual.
    let provider = PoolProvider::open_encrypted(&path, KEY).unwrap();
    assert_eq!(
        provider
            .storage()
            .count_by_status(KeyPackageStatus::Created)
            .unwrap(),
        2
    );
    let (_group, welcome) = PlainClient::new("alice").create_group_with(bundle.key_package());
    join(&provider, welcome).unwrap();
    assert_eq!(bundle_count(provider.storage()), 1);
}

#[test]
fn a_wrong_key_is_a_clear_error_and_changes_nothing() {
    let (_dir, path) = common::temp_db();
    drop(PoolStorage::open_encrypted(&path, KEY).unwrap());
    let before = std::fs::read(&path).unwrap();
    assert!(matches!(
        PoolStorage::open_encrypted(&path, "not the passphrase"),
        Err(Error::WrongKey)
    ));
    // Without any key the file is not a database at all.
    assert!(matches!(PoolStorage::open(&path), Err(Error::Sqlite(_))));
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn a_plain_database_is_not_opened_as_an_encrypted_one() {
    let (_dir, path) = common::temp_db();
    drop(PoolStorage::open(&path).unwrap());
    assert!(matches!(
        PoolStorage::open_encrypted(&path, KEY),
        Err(Error::WrongKey)
    ));
}

#[test]
fn an_idle_encrypted_storage_empties_its_log_within_the_bound() {
    // The pages are encrypted, so no plaintext secret can be searched for;
    // what shows the erasure ran is the log emptied while nothing is
    // committed, which takes a keyed connection of the eraser's own.
    let (dir, path) = common::temp_db();
    let bob = PoolProvider::open_encrypted(&path, KEY).unwrap();
    let mut chat = Conversation::with(dir, path.clone(), bob);
    chat.messages(4);
    chat.assert_log_emptied_within(Duration::from_secs(5));
}
