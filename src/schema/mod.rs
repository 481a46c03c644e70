//! Schema set-up: `openmls_sqlite_storage`'s migrations, then this crate's.
//!
//! This crate's migrations are the numbered files under `migrations/`,
//! recorded in their own history table (`openmls_keypackage_pool_migrations`)
//! so they never touch the one `openmls_sqlite_storage` keeps. A schema change
//! is always a new file, never an edit of an applied one.
//!
//! Opening a database whose schema is current takes no write lock: it only
//! reads both histories (and the codec marker). When something must be
//! written, the opener takes the migration lock, checks again under it, and
//! migrates. `openmls_sqlite_storage` runs its migrations through refinery,
//! one transaction per migration, each planned from a history read in an
//! earlier one; two processes running it at once both try to apply the same
//! migration, and one fails. SQLite's own locks cannot span those separate
//! transactions (an exclusive locking mode would need every other
//! connection closed), so the lock is an advisory file lock on
//! `<database>-migration-lock`, a file that stays empty beside the database.
//!
//! On a new file, `openmls_sqlite_storage`'s tables are made with this
//! crate's in one transaction ([`upstream`]), so that a power cut during the
//! first open leaves either a file without any schema (at most its journal
//! mode set) or a complete one.

mod upstream;

use std::{
    fs::{File, TryLockError},
    time::{Duration, Instant},
};

use openmls_sqlite_storage::SqliteStorageProvider;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::{
    catalog::table_exists,
    codec::PoolCodec,
    codec_marker::{self, Marker},
    error::{Error, Result},
    files,
    options::StorageOptions,
    scope,
};
use upstream::UpstreamSchema;

/// This crate's migrations, in order: (version, name, SQL).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "pool_metadata",
        include_str!("../../migrations/V1__pool_metadata.sql"),
    ),
    (
        2,
        "pool_counts",
        include_str!("../../migrations/V2__pool_counts.sql"),
    ),
    (
        3,
        "codec_marker",
        include_str!("../../migrations/V3__codec_marker.sql"),
    ),
    (
        4,
        "erase_pending",
        include_str!("../../migrations/V4__erase_pending.sql"),
    ),
    (
        5,
        "pool_scopes",
        include_str!("../../migrations/V5__pool_scopes.sql"),
    ),
    (
        6,
        "count_inserts_in_code",
        include_str!("../../migrations/V6__count_inserts_in_code.sql"),
    ),
    (
        7,
        "withdrawals_and_grace",
        include_str!("../../migrations/V7__withdrawals_and_grace.sql"),
    ),
    (
        8,
        "pool_credentials",
        include_str!("../../migrations/V8__pool_credentials.sql"),
    ),
];

/// The migration that adds each KeyPackage's credential, the last part of
/// its scope to be recorded.
const CREDENTIALS_VERSION: i64 = 8;

/// The newest schema version this build knows.
pub(crate) const LATEST_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Brings `conn` up to date (OpenMLS's tables first, then the pool's) and
/// records codec `C` if the database has no codec record yet.
///
/// When the schema is current and the codec recorded, this only reads. A
/// database whose pool schema is newer than this build is
/// [`Error::SchemaTooNew`], and one stored with another codec
/// [`Error::CodecMismatch`], both before anything is written. `options` are
/// applied to the connection on the way; their busy timeout also bounds the
/// wait for another process's migration.
pub(crate) fn bring_up_to_date<C: PoolCodec>(
    conn: &mut Connection,
    options: &StorageOptions,
) -> Result<()> {
    check_not_newer(conn)?;
    if codec_marker::check::<C>(conn)? == Marker::Recorded && is_current::<C>(conn)? {
        return options.apply(conn);
    }
    let _lock = MigrationLock::acquire(conn, options.busy_timeout)?;
    // Another process may have migrated, or recorded its codec, while this
    // one waited: checked again before anything (even the journal mode) is
    // written.
    check_not_newer(conn)?;
    let marker = codec_marker::check::<C>(conn)?;
    // A new file gets its journal mode here, under the lock: switching to
    // WAL needs an exclusive lock that SQLite does not wait for when another
    // connection is switching the same file at that moment.
    options.apply(conn)?;
    let upstream = upstream::for_new_file::<C>(conn)?;
    if upstream.is_none() {
        upstream::upgrade::<C>(conn)?;
    }
    apply_own::<C>(conn, marker, upstream)
}

/// Makes `upstream` (`openmls_sqlite_storage`'s schema, on a new file),
/// applies this crate's missing migrations and records the codec, in one
/// transaction.
fn apply_own<C: PoolCodec>(
    conn: &mut Connection,
    marker: Marker,
    upstream: Option<UpstreamSchema>,
) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let installs_upstream = upstream.is_some();
    if let Some(schema) = upstream {
        schema.install(&tx)?;
    }
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS openmls_keypackage_pool_migrations (
             version INTEGER PRIMARY KEY NOT NULL,
             name TEXT NOT NULL,
             applied_at INTEGER NOT NULL
         )",
    )?;
    let applied = applied_version(&tx)?.unwrap_or(0);
    if applied > LATEST_VERSION {
        return Err(Error::SchemaTooNew {
            found: applied,
            supported: LATEST_VERSION,
        });
    }
    let now = crate::clock::unix_now()?;
    let missing: Vec<_> = MIGRATIONS.iter().filter(|(v, ..)| *v > applied).collect();
    for (version, name, sql) in &missing {
        tx.execute_batch(sql)
            .map_err(|e| Error::migration(format!("V{version}__{name}"), e))?;
        tx.execute(
            "INSERT INTO openmls_keypackage_pool_migrations (version, name, applied_at)
             VALUES (?1, ?2, ?3)",
            params![version, name, now],
        )?;
    }
    if applied < CREDENTIALS_VERSION {
        // The scope columns (V5) and the credential (V8) are filled in from
        // the bundles already stored, once every column exists, in the same
        // transaction: no pool ever sees a row without the scope it could
        // have.
        scope::backfill::<C>(&tx)?;
    }
    if marker == Marker::Missing {
        codec_marker::record::<C>(&tx, now)?;
    }
    tx.commit()?;
    if installs_upstream {
        log::info!("created openmls_sqlite_storage's schema");
    }
    for (version, name, _) in missing {
        log::info!("applied the pool's schema migration V{version}__{name}");
    }
    if marker == Marker::Missing {
        log::info!("recorded the {} codec as the database's", C::NAME);
    }
    Ok(())
}

/// Whether both schemas are current, found by reading only.
fn is_current<C: PoolCodec>(conn: &mut Connection) -> Result<bool> {
    if !history_exists(conn)? || applied_version(conn)? != Some(LATEST_VERSION) {
        return Ok(false);
    }
    // openmls_sqlite_storage does not publish its list of migrations, only a
    // runner that applies whatever is missing. Run with the connection unable
    // to write, it succeeds exactly when nothing is missing (creating its
    // history table "if not exists" writes nothing when it exists).
    let query_only: bool = conn.query_row("PRAGMA query_only", [], |row| row.get(0))?;
    conn.pragma_update(None, "query_only", true)?;
    let dry_run = SqliteStorageProvider::<C, &mut Connection>::new(conn).run_migrations();
    conn.pragma_update(None, "query_only", query_only)?;
    Ok(dry_run.is_ok())
}

/// Serialises migrations between processes: an exclusive advisory lock on
/// `<database>-migration-lock`, held until dropped (or the process ends).
/// An in-memory database is private to its connection and needs none.
struct MigrationLock {
    _held: Option<File>,
}

impl MigrationLock {
    fn acquire(conn: &Connection, wait: Duration) -> Result<Self> {
        let Some(path) = crate::files::path_of(conn) else {
            return Ok(Self { _held: None });
        };
        let lock_path = format!("{path}-migration-lock");
        let io_error = |e: std::io::Error| Error::migration(lock_path.as_str(), e);
        // Never deleted: a process waiting on the old file would otherwise
        // hold a lock nobody else sees.
        let file = files::open_owned(std::path::Path::new(&lock_path)).map_err(io_error)?;
        let deadline = Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Self { _held: Some(file) }),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(io_error(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "another process held the lock for longer than the busy timeout",
                    )))
                }
                Err(TryLockError::Error(e)) => return Err(io_error(e)),
            }
        }
    }
}

/// Refuses a database whose pool schema is newer than this build.
pub(crate) fn check_not_newer(conn: &Connection) -> Result<()> {
    if !history_exists(conn)? {
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

fn history_exists(conn: &Connection) -> Result<bool> {
    table_exists(conn, "openmls_keypackage_pool_migrations")
}
