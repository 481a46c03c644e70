//! Private keys of consumed and pruned KeyPackages must not survive in the
//! database file or its write-ahead log. Checked the hard way: by searching
//! the raw bytes of every file SQLite keeps for the key, in every encoding
//! the codec could have written it in.

mod common;

use std::path::{Path, PathBuf};

use common::{build_key_package, join, Identity, PlainClient};
use openmls::prelude::*;
use openmls_keypackage_pool::{KeyPackagePool, PoolProvider, StorageOptions};

/// The two private keys of a bundle, read from its serde form (OpenMLS only
/// exposes one of them outside its own tests).
fn private_keys(bundle: &KeyPackageBundle) -> (Vec<u8>, Vec<u8>) {
    let value = serde_json::to_value(bundle).unwrap();
    (
        first_byte_array(&value["private_init_key"]).expect("init key"),
        first_byte_array(&value["private_encryption_key"]).expect("encryption key"),
    )
}

fn first_byte_array(value: &serde_json::Value) -> Option<Vec<u8>> {
    match value {
        serde_json::Value::Array(items)
            if !items.is_empty() && items.iter().all(|i| i.is_u64()) =>
        {
            items.iter().map(|i| i.as_u64().map(|b| b as u8)).collect()
        }
        serde_json::Value::Array(items) => items.iter().find_map(first_byte_array),
        serde_json::Value::Object(map) => map.values().find_map(first_byte_array),
        _ => None,
    }
}

/// Every way a codec could have laid `key` out: raw, as MessagePack
/// integers (one byte each below 128, `0xcc` and the byte above), and as the
/// decimal list JSON writes.
fn encodings(key: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let msgpack = key
        .iter()
        .flat_map(|&b| if b < 128 { vec![b] } else { vec![0xcc, b] })
        .collect();
    let json = key
        .iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(",")
        .into_bytes();
    vec![
        ("raw", key.to_vec()),
        ("messagepack", msgpack),
        ("json", json),
    ]
}

/// The files SQLite may keep for a database.
fn database_files(db: &Path) -> Vec<PathBuf> {
    ["", "-wal", "-shm", "-journal"]
        .iter()
        .map(|suffix| PathBuf::from(format!("{}{suffix}", db.display())))
        .filter(|p| p.exists())
        .collect()
}

/// Where `key` can still be found, as "file: encoding" lines.
fn traces(db: &Path, key: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for file in database_files(db) {
        let bytes = std::fs::read(&file).unwrap();
        for (encoding, pattern) in encodings(key) {
            if bytes
                .windows(pattern.len())
                .any(|w| w == pattern.as_slice())
            {
                found.push(format!("{}: {encoding}", file.display()));
            }
        }
    }
    found
}

/// Consumes a KeyPackage through a real Welcome and returns where its init
/// key can still be found, searched while the database is still open (so
/// the write-ahead log is still there: closing the last connection would
/// checkpoint and remove it anyway).
fn traces_after_a_welcome(options: &StorageOptions) -> Vec<String> {
    let (dir, path) = common::temp_db();
    let provider = PoolProvider::open_with_options(&path, options).unwrap();
    assert!(
        path.with_extension("db-wal").exists(),
        "the test must run in WAL mode to mean anything"
    );
    let bob = Identity::new("bob");
    let bundle = build_key_package(&provider, &bob, false);
    let (init_key, _) = private_keys(&bundle);
    // Control: while the KeyPackage is live its key is found, so an empty
    // search later means erased, not missed.
    assert!(
        !traces(&path, &init_key).is_empty(),
        "the search cannot see the live key"
    );

    let (_group, welcome) = PlainClient::new("alice").create_group_with(bundle.key_package());
    join(&provider, welcome).unwrap();
    let found = traces(&path, &init_key);
    drop(provider);
    drop(dir);
    found
}

#[test]
fn a_key_package_consumed_by_a_welcome_leaves_no_trace_of_its_init_key() {
    assert_eq!(
        traces_after_a_welcome(&StorageOptions::default()),
        Vec::<String>::new()
    );
}

#[test]
fn without_secure_delete_the_same_search_finds_the_init_key() {
    // The search above is only worth something if it catches a leak.
    let options = StorageOptions {
        secure_delete: false,
        ..StorageOptions::default()
    };
    assert!(!traces_after_a_welcome(&options).is_empty());
}

#[test]
fn a_pruned_key_package_leaves_no_trace_of_either_private_key() {
    let (_dir, path) = common::temp_db();
    let provider = PoolProvider::open(&path).unwrap();
    let erin = Identity::new("erin");
    let pool = KeyPackagePool::new(
        &provider,
        &erin.signer,
        erin.credential.clone(),
        common::lifetime_days(1),
    )
    .unwrap();
    let refs = pool.generate(3).unwrap();
    let keys: Vec<(Vec<u8>, Vec<u8>)> = refs
        .iter()
        .map(|r| private_keys(&provider.storage().key_package_bundle(r).unwrap().unwrap()))
        .collect();
    for (init, encryption) in &keys {
        assert!(!traces(&path, init).is_empty());
        assert!(!traces(&path, encryption).is_empty());
    }

    let two_days_on = common::now() + 2 * 24 * 60 * 60;
    assert_eq!(pool.prune_expired(two_days_on).unwrap().len(), 3);
    // Searched with the database still open: see `traces_after_a_welcome`.
    for (init, encryption) in &keys {
        assert_eq!(traces(&path, init), Vec::<String>::new());
        assert_eq!(traces(&path, encryption), Vec::<String>::new());
    }
}
