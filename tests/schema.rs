//! Schema migrations: this crate's history table, upgrades of older pool
//! schemas, and refusal of newer ones.

mod common;

use openmls_keypackage_pool::{Error, KeyPackageStatus, PoolStorage};
use rusqlite::Connection;
use KeyPackageStatus::*;

/// `(scope/status/last_resort, count)` pairs.
type Counts = Vec<(String, i64)>;

/// The counts per scope and status by brute force, and as the count table
/// keeps them.
fn counts_both_ways(conn: &Connection) -> (Counts, Counts) {
    let read = |sql: &str| -> Counts {
        let mut stmt = conn.prepare(sql).unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        rows.map(Result::unwrap).collect()
    };
    let key = "hex(signature_key) || '/' || ciphersuite || '/' || hex(credential) || '/' \
               || status || '/' || last_resort";
    (
        read(&format!(
            "SELECT {key}, COUNT(*) FROM keypackage_pool_metadata GROUP BY 1 ORDER BY 1"
        )),
        read(&format!(
            "SELECT {key}, count FROM keypackage_pool_counts WHERE count != 0 ORDER BY 1"
        )),
    )
}

/// `count_by_status` gives these figures.
fn assert_counts(storage: &PoolStorage, expected: &[(KeyPackageStatus, usize)]) {
    for (status, count) in expected {
        assert_eq!(
            storage.count_by_status(*status).unwrap(),
            *count,
            "{status}"
        );
    }
}

#[test]
fn a_version_1_pool_schema_is_upgraded_and_its_counts_backfilled() {
    let (_dir, path) = common::temp_db();
    {
        // A database as version 1 of this crate left it.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(include_str!("../migrations/V1__pool_metadata.sql"))
            .unwrap();
        conn.execute_batch(
            "CREATE TABLE openmls_keypackage_pool_migrations (
                 version INTEGER PRIMARY KEY NOT NULL, name TEXT NOT NULL,
                 applied_at INTEGER NOT NULL);
             INSERT INTO openmls_keypackage_pool_migrations VALUES (1, 'pool_metadata', 0);
             INSERT INTO keypackage_pool_metadata (keypackage_ref, status, created_at, not_after, last_resort)
             VALUES (x'01', 'created', 1, 10, 0), (x'02', 'created', 1, 10, 0),
                    (x'03', 'uploaded', 1, 10, 0), (x'04', 'available', 1, 10, 1);",
        )
        .unwrap();
    }
    let storage = PoolStorage::open(&path).unwrap();
    assert_counts(&storage, &[(Created, 2), (Uploaded, 1), (Available, 1)]);
    let versions: Vec<i64> = common::column(
        &storage.connection(),
        "SELECT version FROM openmls_keypackage_pool_migrations ORDER BY version",
    );
    assert_eq!(versions, vec![1, 2, 3, 4, 5, 6, 7, 8]);
}

#[test]
fn the_count_table_follows_every_insert_update_and_delete() {
    let (_dir, path) = common::temp_db();
    let storage = PoolStorage::open(path).unwrap();
    for n in 0..20u8 {
        storage.create_pool_metadata(&[n; 32], 1_000).unwrap();
    }
    for n in 0..12u8 {
        storage
            .update_pool_metadata_status(&[n; 32], KeyPackageStatus::Uploaded)
            .unwrap();
    }
    for n in 0..6u8 {
        storage
            .update_pool_metadata_status(&[n; 32], KeyPackageStatus::Available)
            .unwrap();
    }
    storage.mark_spent(&[0; 32], "x", b"g").unwrap();
    // A no-op move and a refused one must not skew the counts.
    storage
        .update_pool_metadata_status(&[1; 32], KeyPackageStatus::Available)
        .unwrap();
    assert!(storage
        .update_pool_metadata_status(&[1; 32], KeyPackageStatus::Created)
        .is_err());
    for n in 15..20u8 {
        storage.delete_pool_metadata(&[n; 32]).unwrap();
    }
    let (actual, kept) = counts_both_ways(&storage.connection());
    assert_eq!(actual, kept);
    assert_counts(&storage, &[(Created, 3), (Uploaded, 6), (Available, 5)]);
    assert_eq!(storage.count_by_status(KeyPackageStatus::Spent).unwrap(), 1);
}

#[test]
fn a_newer_pool_schema_is_refused_without_writing() {
    let (_dir, path) = common::temp_db();
    {
        // A database a future version of this crate wrote, with nothing of
        // OpenMLS's in it yet: any migration run first would show.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE openmls_keypackage_pool_migrations (
                 version INTEGER PRIMARY KEY NOT NULL, name TEXT NOT NULL,
                 applied_at INTEGER NOT NULL);
             INSERT INTO openmls_keypackage_pool_migrations VALUES (99, 'from_the_future', 0);",
        )
        .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    match PoolStorage::open(&path) {
        Err(Error::SchemaTooNew {
            found: 99,
            supported,
        }) => assert!(supported < 99),
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let tables: i64 = Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 1);
}

#[test]
fn opening_twice_applies_nothing_twice() {
    // Each history, the column saying when a migration was applied, and a
    // stamp in that column's format (refinery reads RFC 3339 back).
    const HISTORIES: [(&str, &str, &str); 2] = [
        ("openmls_keypackage_pool_migrations", "applied_at", "0"),
        (
            "openmls_sqlite_storage_migrations",
            "applied_on",
            "'2001-02-03T04:05:06Z'",
        ),
    ];
    // Every row of both histories: (table, version, name, when applied).
    fn histories(conn: &Connection) -> Vec<(String, i64, String, String)> {
        let mut rows = Vec::new();
        for (table, applied, _) in HISTORIES {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT version, name, CAST({applied} AS TEXT) FROM {table} ORDER BY version"
                ))
                .unwrap();
            let found = stmt
                .query_map([], |r| {
                    Ok((table.to_owned(), r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .unwrap();
            rows.extend(found.map(Result::unwrap));
        }
        rows
    }
    let count = |rows: &[(String, i64, String, String)], table: &str| {
        rows.iter().filter(|(t, ..)| t == table).count()
    };

    let (_dir, path) = common::temp_db();
    drop(PoolStorage::open(&path).unwrap());
    // Stamp every row, so that a second open that applies or records any
    // migration again, even within the same second, shows.
    let conn = Connection::open(&path).unwrap();
    for (table, applied, stamp) in HISTORIES {
        conn.execute(&format!("UPDATE {table} SET {applied} = {stamp}"), [])
            .unwrap();
    }
    let first = histories(&conn);
    drop(conn);
    let storage = PoolStorage::open(&path).unwrap();
    let second = histories(&storage.connection());
    // This crate's eight migrations, and the six openmls_sqlite_storage 0.3
    // embeds, each recorded once.
    assert_eq!(count(&first, "openmls_keypackage_pool_migrations"), 8);
    assert_eq!(count(&first, "openmls_sqlite_storage_migrations"), 6);
    assert_eq!(first, second, "the second open changed a history row");
}

#[test]
fn counts_changed_behind_the_pools_back_are_found_and_rebuilt() {
    let (_dir, path) = common::temp_db();
    let storage = PoolStorage::open(path).unwrap();
    for n in 0..4u8 {
        storage.create_pool_metadata(&[n; 32], 1_000).unwrap();
    }
    // Rows written around the triggers, as a careless second writer might.
    storage
        .connection()
        .execute_batch("UPDATE keypackage_pool_counts SET count = 40 WHERE status = 'created'")
        .unwrap();
    assert_counts(&storage, &[(Created, 40)]);
    let report = storage.verify().unwrap();
    assert!(report.counts_out_of_date);
    // The rows have no bundles either, which repair removes; the counts are
    // rebuilt from what is left.
    assert_eq!(report.metadata_without_bundle.len(), 4);
    storage.repair().unwrap();
    assert!(storage.verify().unwrap().is_consistent());
    assert_counts(&storage, &[(Created, 0)]);
}

#[test]
fn every_way_a_key_package_enters_the_pool_is_counted_once() {
    let fx = common::PoolFixture::new();
    let storage = fx.storage();
    let pool = fx.pool(openmls_keypackage_pool::PoolConfig::default());
    // A batch, a parallel batch, a last-resort KeyPackage, one built by
    // OpenMLS through the storage hook, and a row made by hand.
    pool.generate(5).unwrap();
    pool.generate_parallel(4, 2).unwrap();
    pool.ensure_last_resort(common::now()).unwrap();
    common::build_key_package(&fx.provider, &fx.identity, false);
    storage.create_pool_metadata(&[7; 32], 1_000).unwrap();
    // A batch that fails part-way is not counted either.
    common::fail_metadata(storage, "INSERT", 13, "injected");
    assert!(pool.generate(3).is_err());
    let (actual, kept) = counts_both_ways(&storage.connection());
    assert_eq!(actual, kept);
    assert_eq!(storage.count_by_status(Created).unwrap(), 12);
    assert!(!storage.verify().unwrap().counts_out_of_date);
    assert_eq!(pool.health(common::now()).unwrap().held, 10);

    // A row another writer inserts directly is not counted: verify says so
    // and repair recounts.
    storage
        .connection()
        .execute_batch("DROP TRIGGER temp.fail_metadata_INSERT")
        .unwrap();
    storage
        .connection()
        .execute(
            "INSERT INTO keypackage_pool_metadata (keypackage_ref, status, created_at, not_after)
             VALUES (x'0808080808080808080808080808080808080808080808080808080808080808', 'created', 0, 1000)",
            [],
        )
        .unwrap();
    assert!(storage.verify().unwrap().counts_out_of_date);
    assert_eq!(storage.count_by_status(Created).unwrap(), 12);
    // Repair recounts (and, since neither row by hand has a bundle, removes
    // both: 13 rows less 2).
    storage.repair().unwrap();
    assert!(storage.verify().unwrap().is_consistent());
    assert_eq!(storage.count_by_status(Created).unwrap(), 11);
    let (actual, kept) = counts_both_ways(&storage.connection());
    assert_eq!(actual, kept);
}

/// An object of `sqlite_master`: its type, name and SQL.
type SchemaObject = (String, String, String);
/// A row of a migration history: version, name, checksum.
type HistoryRow = (i64, String, String);

/// Every object `openmls_sqlite_storage` owns in `conn` (all but the pool's
/// tables and `identities`), and its history without the time of each row.
fn upstream_schema(conn: &Connection) -> (Vec<SchemaObject>, Vec<HistoryRow>) {
    let mut objects = conn
        .prepare(
            "SELECT type, name, sql FROM sqlite_master
             WHERE sql IS NOT NULL AND tbl_name NOT LIKE 'keypackage_pool%'
               AND tbl_name NOT LIKE 'openmls_keypackage_pool%' AND tbl_name != 'identities'
             ORDER BY name",
        )
        .unwrap();
    let objects = objects
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut history = conn
        .prepare("SELECT version, name, checksum FROM openmls_sqlite_storage_migrations ORDER BY version")
        .unwrap();
    let history = history
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    (objects, history)
}

/// A new file gets `openmls_sqlite_storage`'s tables in the same commit as
/// the pool's (copied from a private in-memory run of its migrations): they
/// must be exactly what its own runner makes, history included, so that the
/// runner finds nothing to do on the file later.
#[test]
fn a_new_file_gets_exactly_the_schema_openmls_sqlite_storage_makes() {
    use openmls_keypackage_pool::codec::MessagePackCodec;
    use openmls_sqlite_storage::SqliteStorageProvider;

    let (_dir, path) = common::temp_db();
    let storage = PoolStorage::open(&path).unwrap();
    let ours = upstream_schema(&storage.connection());
    drop(storage);

    let (_dir2, theirs_path) = common::temp_db();
    let mut theirs = Connection::open(&theirs_path).unwrap();
    SqliteStorageProvider::<MessagePackCodec, &mut Connection>::new(&mut theirs)
        .run_migrations()
        .unwrap();
    let expected = upstream_schema(&theirs);
    assert_eq!(
        expected.1.len(),
        6,
        "openmls_sqlite_storage 0.3 has six migrations"
    );
    assert!(expected.0.len() >= 8, "{:?}", expected.0);
    assert_eq!(ours, expected);

    // Its runner, on the file this crate made, applies nothing.
    let mut conn = Connection::open(&path).unwrap();
    let before: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM openmls_sqlite_storage_migrations",
            [],
            |r| r.get(0),
        )
        .unwrap();
    SqliteStorageProvider::<MessagePackCodec, &mut Connection>::new(&mut conn)
        .run_migrations()
        .unwrap();
    assert_eq!(upstream_schema(&conn), expected);
    assert_eq!(before, 6);
}

/// A file that already has `openmls_sqlite_storage`'s history (made by that
/// crate, at an older version: here its last migrations undone by hand)
/// is brought up to date by its runner, as before.
#[test]
fn a_file_with_an_older_openmls_sqlite_storage_schema_is_upgraded() {
    use openmls_keypackage_pool::codec::MessagePackCodec;
    use openmls_sqlite_storage::SqliteStorageProvider;

    let (_dir, path) = common::temp_db();
    let mut conn = Connection::open(&path).unwrap();
    SqliteStorageProvider::<MessagePackCodec, &mut Connection>::new(&mut conn)
        .run_migrations()
        .unwrap();
    let expected = upstream_schema(&conn);
    conn.execute_batch(
        "DROP TABLE registered_vc_emulation_epochs;
         DELETE FROM openmls_sqlite_storage_migrations WHERE version = 6;",
    )
    .unwrap();
    drop(conn);
    let storage = PoolStorage::open(&path).unwrap();
    assert_eq!(upstream_schema(&storage.connection()), expected);
}

/// A file `openmls_sqlite_storage`'s runner made, with its history cut
/// back to version 5, then `edit` run on it.
fn upstream_file_cut_to_v5(edit: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    use openmls_keypackage_pool::codec::MessagePackCodec;
    use openmls_sqlite_storage::SqliteStorageProvider;

    let (dir, path) = common::temp_db();
    let mut conn = Connection::open(&path).unwrap();
    SqliteStorageProvider::<MessagePackCodec, &mut Connection>::new(&mut conn)
        .run_migrations()
        .unwrap();
    conn.execute_batch(&format!(
        "DELETE FROM openmls_sqlite_storage_migrations WHERE version = 6; {edit}"
    ))
    .unwrap();
    (dir, path)
}

/// What a power cut between the runner's two transactions leaves (the
/// last migration applied, not recorded) is finished at the next open: the
/// migration is recorded as the runner records it, and nothing is applied
/// twice.
#[test]
fn a_migration_applied_and_not_recorded_is_recorded_at_the_next_open() {
    let (_dir, path) = upstream_file_cut_to_v5("");
    let expected = fresh_upstream_schema();
    let storage = PoolStorage::open(&path).unwrap();
    assert_eq!(upstream_schema(&storage.connection()), expected);
}

/// The same with migrations still to apply after the one not recorded:
/// migration 4 applied and unrecorded, 5 and 6 not applied at all.
#[test]
fn a_migration_applied_and_not_recorded_before_others_missing_is_finished() {
    let (_dir, path) = upstream_file_cut_to_v5(
        "DELETE FROM openmls_sqlite_storage_migrations WHERE version >= 4;
         DROP TABLE vc_retained_key_package_material;
         DROP TABLE vc_operation_trees;
         DROP TABLE registered_vc_emulation_epochs;",
    );
    let expected = fresh_upstream_schema();
    let storage = PoolStorage::open(&path).unwrap();
    assert_eq!(upstream_schema(&storage.connection()), expected);
}

/// `openmls_sqlite_storage`'s schema on a new file this crate made.
fn fresh_upstream_schema() -> (Vec<SchemaObject>, Vec<HistoryRow>) {
    let (_dir, fresh) = common::temp_db();
    let storage = PoolStorage::open(&fresh).unwrap();
    let conn = storage.connection();
    upstream_schema(&conn)
}

/// A table in the way of the next migration that is not what the
/// migration makes (here: the application's own, under the same name) is
/// not taken for the migration: the open fails with the runner's error,
/// and the history is left as it was.
#[test]
fn a_table_that_is_not_the_migrations_is_not_recorded_as_it() {
    let (_dir, path) = upstream_file_cut_to_v5(
        "DROP TABLE registered_vc_emulation_epochs;
         CREATE TABLE registered_vc_emulation_epochs (mine BLOB);",
    );
    match PoolStorage::open(&path) {
        Err(Error::Migration { step, .. }) => assert_eq!(step, "openmls_sqlite_storage"),
        other => panic!("expected the runner's error, got {other:?}"),
    }
    let conn = Connection::open(&path).unwrap();
    let versions: Vec<i64> = common::column(
        &conn,
        "SELECT version FROM openmls_sqlite_storage_migrations ORDER BY version",
    );
    assert_eq!(versions, [1, 2, 3, 4, 5]);
}

/// A database made by `openmls_sqlite_storage`'s deprecated `initialize()`
/// has its tables under another history table (refinery's default name):
/// it is not a new file, and opening it keeps what it holds.
#[test]
fn a_database_from_the_deprecated_initialize_opens() {
    use openmls_keypackage_pool::codec::MessagePackCodec;
    use openmls_sqlite_storage::SqliteStorageProvider;

    let (_dir, path) = common::temp_db();
    let mut conn = Connection::open(&path).unwrap();
    #[allow(deprecated)]
    SqliteStorageProvider::<MessagePackCodec, &mut Connection>::new(&mut conn)
        .initialize()
        .unwrap();
    conn.execute(
        "INSERT INTO openmls_psks (provider_version, psk_id, psk_bundle) VALUES (1, x'01', x'02')",
        [],
    )
    .unwrap();
    drop(conn);
    let storage = PoolStorage::open(&path).unwrap();
    let psks: Vec<Vec<u8>> =
        common::column(&storage.connection(), "SELECT psk_id FROM openmls_psks");
    assert_eq!(psks, [vec![1u8]]);
}
