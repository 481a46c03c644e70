//! What a batch writes to the write-ahead log: each page once, though the
//! application keeps its connection's page cache small, and that setting is
//! left as the batch found it.
#![cfg(target_os = "linux")]

mod common;

use common::{sized, wal_writes::WalBatch, wal_writes::Written, PoolFixture};

fn cache_size(fixture: &PoolFixture) -> i64 {
    fixture
        .storage()
        .connection()
        .query_row("PRAGMA cache_size", [], |row| row.get(0))
        .expect("cache_size")
}

/// Empties the log, runs `batch` on this thread, and reads what it wrote.
fn one_batch(fixture: &PoolFixture, batch: impl FnOnce()) -> WalBatch {
    let conn = &*fixture.storage().connection();
    let busy: i64 = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
        .expect("checkpoint");
    assert_eq!(busy, 0, "the log must start empty");
    // Every byte the batch writes then goes to the log.
    conn.query_row("PRAGMA wal_autocheckpoint = 0", [], |_| Ok(()))
        .expect("no automatic checkpoint");
    let before = Written::now().expect("/proc/thread-self/io");
    batch();
    let written = Written::now().expect("/proc/thread-self/io").since(before);
    let wal = std::fs::read(format!("{}-wal", fixture.path.display())).expect("read the log");
    WalBatch::read(&wal, written).expect("a log to read")
}

#[test]
fn a_batch_writes_each_page_once_with_a_small_application_cache() {
    // An application that keeps its connection's cache small: 20 pages, far
    // fewer than the batch fills, so without a larger cache for the batch
    // SQLite spills index pages and writes them again.
    let fixture = small_application_cache();
    let pool = fixture.pool(sized(300, 0, 600));

    let generated = one_batch(&fixture, || {
        pool.generate(300).expect("generate");
    });
    assert!(
        generated.frames > 20,
        "the batch must outgrow the application's cache: {generated:?}"
    );
    assert_eq!(generated.frames, generated.distinct_pages, "{generated:?}");
    assert_eq!(generated.pages_written_again, 0, "{generated:?}");
    assert_eq!(
        cache_size(&fixture),
        20,
        "the application's cache is restored"
    );

    let parallel = one_batch(&fixture, || {
        pool.generate_parallel(300, 2).expect("generate_parallel");
    });
    assert_eq!(parallel.pages_written_again, 0, "{parallel:?}");
    assert_eq!(
        cache_size(&fixture),
        20,
        "the application's cache is restored"
    );
}

/// Builds `n` KeyPackages through OpenMLS's own builder, which stores each
/// through the storage hook, all in one `PoolStorage::transaction`; with
/// `cache_pages`, the page cache is set to that inside the transaction.
fn built_by_openmls(fixture: &PoolFixture, n: usize, cache_pages: Option<i64>) {
    fixture
        .storage()
        .transaction(|storage| {
            if let Some(pages) = cache_pages {
                storage
                    .connection()
                    .execute_batch(&format!("PRAGMA cache_size = {pages}"))
                    .expect("cache inside the transaction");
            }
            for _ in 0..n {
                common::build_key_package(&fixture.provider, &fixture.identity, false);
            }
            Ok::<_, openmls_keypackage_pool::Error>(())
        })
        .expect("a batch through OpenMLS");
}

fn small_application_cache() -> PoolFixture {
    let fixture = PoolFixture::new();
    fixture
        .storage()
        .connection()
        .execute_batch("PRAGMA cache_size = 20")
        .expect("small cache");
    fixture
}

#[test]
fn a_batch_through_openmls_in_one_transaction_writes_each_page_once() {
    let fixture = small_application_cache();
    let written = one_batch(&fixture, || built_by_openmls(&fixture, 300, None));
    assert!(written.frames > 20, "{written:?}");
    assert_eq!(written.pages_written_again, 0, "{written:?}");
    assert_eq!(
        cache_size(&fixture),
        20,
        "the application's cache is restored"
    );
}

#[test]
fn the_measure_sees_pages_written_again() {
    // The same batch with the cache held at 20 pages inside the
    // transaction: the measure must count the rewrites, or the tests above
    // prove nothing.
    let fixture = small_application_cache();
    let written = one_batch(&fixture, || built_by_openmls(&fixture, 300, Some(20)));
    assert!(written.pages_written_again > 0, "{written:?}");
}
