//! The database records its codec: opened with another one it is refused
//! before anything is written, and `repair()` never mistakes a misread
//! database for orphans.

mod common;

use std::path::Path;

use common::{
    build_key_package, bundle_count, metadata_count, plain_sqlite::PlainSqliteProvider, Identity,
};
use openmls_keypackage_pool::{
    codec::{JsonCodec, MessagePackCodec},
    Error, PoolProvider, PoolStorage,
};

/// Three KeyPackages built through the pool with the JSON codec.
fn json_pool_with_three_key_packages(path: &Path) {
    let provider = PoolProvider::new(PoolStorage::<JsonCodec>::open_with_codec(path).unwrap());
    let id = Identity::new("json");
    for _ in 0..3 {
        build_key_package(&provider, &id, false);
    }
}

/// Every file SQLite keeps for the database, with its bytes.
fn files(path: &Path) -> Vec<(String, Vec<u8>)> {
    ["", "-wal", "-shm"]
        .iter()
        .map(|s| format!("{}{s}", path.display()))
        .filter(|p| Path::new(p).exists())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

fn recorded_codec<C: openmls_keypackage_pool::codec::PoolCodec>(
    storage: &PoolStorage<C>,
) -> String {
    storage
        .connection()
        .query_row("SELECT name FROM openmls_keypackage_pool_codec", [], |r| {
            r.get(0)
        })
        .unwrap()
}

fn assert_mismatch<T: std::fmt::Debug>(result: Result<T, Error>, found: &str, expected: &str) {
    match result {
        Err(Error::CodecMismatch {
            found: f,
            expected: e,
        }) => assert_eq!((f.as_str(), e), (found, expected)),
        other => panic!("expected CodecMismatch, got {other:?}"),
    }
}

#[test]
fn a_pool_written_with_json_is_refused_by_messagepack_and_loses_nothing() {
    let (_dir, path) = common::temp_db();
    json_pool_with_three_key_packages(&path);
    let before = files(&path);

    // What a user would do: open with the default codec and repair at
    // start-up. The open is refused, so repair never runs on a misread file.
    let opened = PoolStorage::open(&path);
    if let Ok(storage) = &opened {
        let _ = storage.repair();
    }
    assert_mismatch(opened, "json", "messagepack");
    assert_eq!(files(&path), before, "the refused open wrote to the file");

    let storage = PoolStorage::<JsonCodec>::open_with_codec(&path).unwrap();
    assert_eq!(bundle_count(&storage), 3);
    assert_eq!(metadata_count(&storage), 3);
    assert!(storage.verify().unwrap().is_consistent());
}

#[test]
fn a_new_database_records_the_codec_that_created_it() {
    let (_dir, path) = common::temp_db();
    let storage = PoolStorage::<JsonCodec>::open_with_codec(&path).unwrap();
    assert_eq!(recorded_codec(&storage), "json");
    drop(storage);
    assert_mismatch(PoolStorage::open(&path), "json", "messagepack");

    let (_dir, path) = common::temp_db();
    assert_eq!(
        recorded_codec(&PoolStorage::open(&path).unwrap()),
        "messagepack"
    );
    assert_mismatch(
        PoolStorage::<JsonCodec>::open_with_codec(&path),
        "messagepack",
        "json",
    );
}

#[test]
fn a_plain_openmls_database_is_probed_and_recorded_only_when_its_entities_decode() {
    let (_dir, path) = common::temp_db();
    {
        let provider = PlainSqliteProvider::<JsonCodec>::open(&path);
        build_key_package(&provider, &Identity::new("plain"), false);
    }
    let before = files(&path);
    assert_mismatch(PoolStorage::open(&path), "json", "messagepack");
    assert_eq!(files(&path), before, "the refused open wrote to the file");

    let storage = PoolStorage::<JsonCodec>::open_with_codec(&path).unwrap();
    assert_eq!(recorded_codec(&storage), "json");
    assert_eq!(storage.unpooled_key_packages().unwrap().len(), 1);
}

#[test]
fn an_empty_plain_openmls_database_takes_the_codec_that_first_opens_it() {
    let (_dir, path) = common::temp_db();
    drop(PlainSqliteProvider::<MessagePackCodec>::open(&path));
    let storage = PoolStorage::<JsonCodec>::open_with_codec(&path).unwrap();
    assert_eq!(recorded_codec(&storage), "json");
}

#[test]
fn repair_removes_nothing_while_a_bundle_does_not_decode() {
    let (_dir, path) = common::temp_db();
    let provider = PoolProvider::open(&path).unwrap();
    let id = Identity::new("damaged");
    for _ in 0..3 {
        build_key_package(&provider, &id, false);
    }
    let storage = provider.storage();
    // A metadata row without a bundle, which repair would otherwise remove,
    // and one bundle damaged in place.
    storage
        .create_pool_metadata(&[7; 32], 1_900_000_000)
        .unwrap();
    storage
        .connection()
        .execute(
            "UPDATE openmls_key_packages SET key_package = x'c1c1c1'
             WHERE rowid = (SELECT MIN(rowid) FROM openmls_key_packages)",
            [],
        )
        .unwrap();
    let report = storage.verify().unwrap();
    assert_eq!(report.undecodable_bundles.len(), 1);
    assert_eq!(report.metadata_without_bundle, vec![vec![7; 32]]);

    match storage.repair() {
        Err(Error::RepairRefused {
            undecodable: 1,
            integrity_errors: 0,
        }) => {}
        other => panic!("expected RepairRefused, got {other:?}"),
    }
    assert_eq!(bundle_count(storage), 3);
    assert_eq!(metadata_count(storage), 4);

    // An undecodable key stops it just the same.
    storage
        .connection()
        .execute(
            "UPDATE openmls_key_packages SET key_package_ref = x'c1'
             WHERE rowid = (SELECT MAX(rowid) FROM openmls_key_packages)",
            [],
        )
        .unwrap();
    assert!(matches!(
        storage.repair(),
        Err(Error::RepairRefused {
            undecodable: 2,
            integrity_errors: 0,
        })
    ));
    assert_eq!(metadata_count(storage), 4);
}

/// A plain `openmls_sqlite_storage` database written with JSON.
fn plain_json(path: &Path) -> PlainSqliteProvider<JsonCodec> {
    PlainSqliteProvider::<JsonCodec>::open(path)
}

fn has_record(path: &Path) -> bool {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM openmls_keypackage_pool_codec)",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn one_damaged_key_package_does_not_lock_the_database_out() {
    let (_dir, path) = common::temp_db();
    {
        let plain = plain_json(&path);
        let id = Identity::new("plain");
        for _ in 0..3 {
            build_key_package(&plain, &id, false);
        }
    }
    // The first stored bundle no longer decodes; the other two do.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE openmls_key_packages SET key_package = x'c1c1'
             WHERE rowid = (SELECT MIN(rowid) FROM openmls_key_packages)",
            [],
        )
        .unwrap();
    let storage = PoolStorage::<JsonCodec>::open_with_codec(&path).unwrap();
    assert_eq!(recorded_codec(&storage), "json");
    assert_eq!(storage.verify().unwrap().undecodable_bundles.len(), 1);
}

#[test]
fn a_database_holding_nothing_the_probe_can_check_is_not_recorded() {
    let (_dir, path) = common::temp_db();
    {
        // Only a signature key pair, stored as OpenMLS's basic credential
        // crate stores it.
        let plain = plain_json(&path);
        let id = Identity::new("keys-only");
        id.signer
            .store(openmls_traits::OpenMlsProvider::storage(&plain))
            .unwrap();
    }
    let storage = PoolStorage::open(&path).unwrap();
    drop(storage);
    assert!(
        !has_record(&path),
        "no codec was confirmed, so none is recorded"
    );
    // The right codec still opens it, and records itself once it can check.
    let storage = PoolStorage::<JsonCodec>::open_with_codec(&path).unwrap();
    let provider = PoolProvider::new(storage);
    build_key_package(&provider, &Identity::new("later"), false);
    drop(provider);
    let storage = PoolStorage::<JsonCodec>::open_with_codec(&path).unwrap();
    assert_eq!(recorded_codec(&storage), "json");
    drop(storage);
    assert_mismatch(PoolStorage::open(&path), "json", "messagepack");
}
