//! Schema set-up: `openmls_sqlite_storage`'s migrations, then this crate's.
//!
//! This crate's migrations are the numbered files under `migrations/`,
//! recorded in their own history table (`openmls_keypackage_pool_migrations`)
//! so they never touch the one `openmls_sqlite_storage` keeps. A schema change
//! is always a new file, never an edit of an applied one.

use openmls_sqlite_storage::{Codec, SqliteStorageProvider};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::error::{Error, Result};

/// This crate's migrations, in order: (version, name, SQL).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "pool_metadata",
        include_str!("../migrations/V1__pool_metadata.sql"),
    ),
    (
        2,
        "pool_counts",
        include_str!("../migrations/V2__pool_counts.sql"),
    ),
];

/// The newest schema version this build knows.
pub(crate) const LATEST_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Brings `conn` up to date: OpenMLS's tables first, then the pool's.
///
/// A database whose pool schema is newer than this build is refused with
/// [`Error::SchemaTooNew`] before anything is written.
pub(crate) fn migrate<C: Codec>(conn: &mut Connection) -> Result<()> {
    check_not_newer(conn)?;
    SqliteStorageProvider::<C, &mut Connection>::new(conn)
        .run_migrations()
        .map_err(|e| Error::Migration(format!("openmls_sqlite_storage: {e}")))?;

    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS openmls_keypackage_pool_migrations (
             version INTEGER PRIMARY KEY NOT NULL,
             name TEXT NOT NULL,
             applied_at INTEGER NOT NULL
         )",
    )?;
    // Read again under the write lock: another process may have migrated
    // since the first check.
    let applied = applied_version(&tx)?.unwrap_or(0);
    if applied > LATEST_VERSION {
        return Err(Error::SchemaTooNew {
            found: applied,
            supported: LATEST_VERSION,
        });
    }
    let now = crate::clock::unix_now()?;
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, ..)| *v > applied) {
        tx.execute_batch(sql)
            .map_err(|e| Error::Migration(format!("V{version}__{name}: {e}")))?;
        tx.execute(
            "INSERT INTO openmls_keypackage_pool_migrations (version, name, applied_at)
             VALUES (?1, ?2, ?3)",
            params![version, name, now],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Refuses a database whose pool schema is newer than this build.
pub(crate) fn check_not_newer(conn: &Connection) -> Result<()> {
    let history_exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master
                        WHERE type = 'table' AND name = 'openmls_keypackage_pool_migrations')",
        [],
        |row| row.get(0),
    )?;
    if !history_exists {
        return Ok(());
    }
    match applied_version(conn)? {
        Some(found) if found > LATEST_VERSION => Err(Error::SchemaTooNew {
            found,
            supported: LATEST_VERSION,
        }),
        _ => Ok(()),
    }
}

fn applied_version(conn: &Connection) -> Result<Option<i64>> {
    Ok(conn
        .query_row(
            "SELECT MAX(version) FROM openmls_keypackage_pool_migrations",
            [],
            |row| row.get::<_, Option<i64>>(0),
        )
        .optional()?
        .flatten())
}
