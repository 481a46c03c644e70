//! A disk that fills up in the middle of a batch: the batch fails with a
//! typed error, keeps nothing, leaves a clean pool, and generation works
//! again once there is room.
//!
//! SQLite's `max_page_count` makes the database full on demand, exactly as
//! a full file system would: the write that needs one more page fails with
//! `SQLITE_FULL`.

mod common;

use common::{bundle_count, metadata_count, Identity};
use openmls_keypackage_pool::{Error, KeyPackagePool, PoolConfig, PoolProvider};

/// Whether `error`, or an error it wraps, is SQLite's "database or disk is
/// full".
fn is_disk_full(error: &Error) -> bool {
    match error {
        Error::Sqlite(e) => e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull),
        Error::KeyPackageStore { source, .. } => is_disk_full(source),
        _ => false,
    }
}

fn page_count(provider: &PoolProvider) -> i64 {
    provider
        .storage()
        .connection()
        .query_row("PRAGMA page_count", [], |row| row.get(0))
        .unwrap()
}

#[test]
fn a_disk_that_fills_mid_batch_keeps_none_of_it_and_recovers() {
    let (_dir, path) = common::temp_db();
    let provider = PoolProvider::open(&path).unwrap();
    let id = Identity::new("full");
    let pool = KeyPackagePool::new(
        &provider,
        &id.signer,
        id.credential.clone(),
        PoolConfig {
            hard_cap: 1_000,
            ..PoolConfig::default()
        },
    )
    .unwrap();
    pool.generate(4).unwrap();
    let conn = &*provider.storage().connection();

    // Room for a few more pages only: a batch of 60 KeyPackages (several
    // KB each) runs out part-way.
    let limit = page_count(&provider) + 4;
    let set: i64 = conn
        .query_row(&format!("PRAGMA max_page_count = {limit}"), [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(set, limit);
    match pool.generate(60) {
        Err(e) => assert!(is_disk_full(&e), "not a disk-full error: {e:?}"),
        Ok(refs) => panic!("{} KeyPackages fitted in 4 pages", refs.len()),
    }

    // All or nothing: only the first batch, and a pool that checks clean.
    assert_eq!(bundle_count(provider.storage()), 4);
    assert_eq!(metadata_count(provider.storage()), 4);
    assert!(provider.storage().verify().unwrap().is_consistent());
    assert!(page_count(&provider) <= limit);

    // Room again: the same batch succeeds on the same storage.
    conn.query_row("PRAGMA max_page_count = 1073741823", [], |row| {
        row.get::<_, i64>(0)
    })
    .unwrap();
    assert_eq!(pool.generate(60).unwrap().len(), 60);
    assert_eq!(bundle_count(provider.storage()), 64);
    assert_eq!(metadata_count(provider.storage()), 64);
    assert!(provider.storage().verify().unwrap().is_consistent());
}
