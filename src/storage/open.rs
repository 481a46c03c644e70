//! Opening a [`PoolStorage`]: on a file, in memory, encrypted, or over a
//! connection the application opened, with a codec and options.

use std::{path::Path, sync::Arc};

use rusqlite::{Connection, OpenFlags};

use super::PoolStorage;
#[cfg(feature = "sqlcipher")]
use crate::keying::DatabaseKey;
use crate::{
    clock::unix_now,
    codec::{DefaultCodec, PoolCodec},
    codec_marker,
    erasure::{ErasureSchedule, FileLease, Sweep},
    error::{Error, Result},
    files, grace,
    keying::Keying,
    options::StorageOptions,
    schema,
    storage_status::{self, SqliteBuild},
};

impl PoolStorage<DefaultCodec> {
    /// Opens (creating if needed) the database file at `path` with the default
    /// codec, and brings its schema up to date.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with_codec(path)
    }

    /// A fresh database in memory, with the default codec.
    pub fn open_in_memory() -> Result<Self> {
        Self::open_in_memory_with_codec()
    }

    /// Opens (creating if needed) the database file at `path` with the
    /// default codec and `options`.
    pub fn open_with_options(path: impl AsRef<Path>, options: &StorageOptions) -> Result<Self> {
        Self::open_with_codec_and_options(path, options)
    }

    /// Opens (creating if needed) a database file encrypted with SQLCipher
    /// under the passphrase `key`, with the default codec and options.
    ///
    /// A wrong key, or a file that is not an encrypted database, is
    /// [`Error::WrongKey`](crate::Error::WrongKey); nothing is written to it. The file's bytes,
    /// header included, are indistinguishable from random.
    ///
    /// ```
    /// # fn main() -> Result<(), openmls_keypackage_pool::Error> {
    /// use openmls_keypackage_pool::{Error, PoolStorage};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("secret.db");
    /// PoolStorage::open_encrypted(&path, "correct horse battery staple")?;
    /// assert!(matches!(PoolStorage::open_encrypted(&path, "wrong"), Err(Error::WrongKey)));
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "sqlcipher")]
    pub fn open_encrypted(path: impl AsRef<Path>, key: &str) -> Result<Self> {
        Self::open_keyed(path.as_ref(), Keying::passphrase(key)?)
    }

    /// Opens (creating if needed) a database file encrypted with SQLCipher
    /// under the raw 32-byte `key`, with no key derivation: the way to use
    /// a key the platform's keystore holds, and much cheaper to open than a
    /// passphrase (see the [options guide](crate::guide::options)).
    ///
    /// A wrong key, a database encrypted under a passphrase, or a file that
    /// is not an encrypted database is
    /// [`Error::WrongKey`](crate::Error::WrongKey); nothing is written to
    /// it. Every connection the storage opens pins SQLCipher 4's settings
    /// and memory wiping, and checks that SQLCipher is linked at all
    /// ([`Error::SqlcipherMissing`](crate::Error::SqlcipherMissing)).
    ///
    /// ```
    /// # fn main() -> Result<(), openmls_keypackage_pool::Error> {
    /// use openmls_keypackage_pool::{DatabaseKey, Error, PoolStorage};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("secret.db");
    /// // In an application, 32 random bytes from the platform keystore.
    /// let key = DatabaseKey::from_bytes([0x5c; 32]);
    /// drop(PoolStorage::open_with_key(&path, &key)?);
    /// let wrong = DatabaseKey::from_bytes([0x5d; 32]);
    /// assert!(matches!(PoolStorage::open_with_key(&path, &wrong), Err(Error::WrongKey)));
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "sqlcipher")]
    pub fn open_with_key(path: impl AsRef<Path>, key: &DatabaseKey) -> Result<Self> {
        Self::open_keyed(path.as_ref(), Keying::raw(key))
    }

    #[cfg(feature = "sqlcipher")]
    fn open_keyed(path: &Path, keying: Keying) -> Result<Self> {
        let options = StorageOptions::default();
        retry_locking_protocol(&options, || {
            let conn = files::open_database(path)?;
            keying.apply(&conn)?;
            Self::assemble(conn, &options, keying.clone())
        })
    }

    /// Takes over an open connection with the default codec and
    /// [`StorageOptions`]; see
    /// [`from_connection_with_codec`](Self::from_connection_with_codec).
    pub fn from_connection(conn: Connection) -> Result<Self> {
        Self::from_connection_with_codec(conn, &StorageOptions::default())
    }
}

impl<C: PoolCodec> PoolStorage<C> {
    /// Opens (creating if needed) the database file at `path` with codec `C`
    /// and the default [`StorageOptions`].
    ///
    /// ```
    /// use openmls_keypackage_pool::{codec::JsonCodec, PoolStorage};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let storage = PoolStorage::<JsonCodec>::open_with_codec(dir.path().join("pool.db"))?;
    /// # Ok::<(), openmls_keypackage_pool::Error>(())
    /// ```
    pub fn open_with_codec(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with_codec_and_options(path, &StorageOptions::default())
    }

    /// Opens (creating if needed) the database file at `path` with codec `C`
    /// and `options`.
    pub fn open_with_codec_and_options(
        path: impl AsRef<Path>,
        options: &StorageOptions,
    ) -> Result<Self> {
        // Checked before the file is opened, so bad options create nothing.
        options.validate()?;
        retry_locking_protocol(options, || {
            Self::from_connection_with_codec(files::open_database(path.as_ref())?, options)
        })
    }

    /// A fresh in-memory database with codec `C`.
    pub fn open_in_memory_with_codec() -> Result<Self> {
        Self::from_connection_with_codec(Connection::open_in_memory()?, &StorageOptions::default())
    }

    /// Takes over an open connection with codec `C` and `options` (replacing
    /// the connection's busy timeout, journal mode and sync level), and runs
    /// whatever `openmls_sqlite_storage`'s migrations and this crate's have
    /// not yet applied.
    ///
    /// When the schema is current this only reads: no write lock is taken,
    /// so opening does not wait for another process's long transaction.
    /// Several processes may create or upgrade one file at once; one
    /// migrates while the others wait (up to the busy timeout) and then find
    /// the schema current.
    ///
    /// The database records the [codec](crate::codec) it is stored with: a
    /// database written with another codec is [`Error::CodecMismatch`](crate::Error::CodecMismatch), and
    /// a pool schema newer than this build [`Error::SchemaTooNew`](crate::Error::SchemaTooNew), both
    /// before anything (even the journal mode) is written to the file.
    ///
    /// On a file in WAL mode the storage opens a second connection of its
    /// own for its background eraser (see [`ErasurePolicy`](crate::ErasurePolicy)).
    /// A connection the application keyed for SQLCipher itself cannot be
    /// copied that way: the storage then has no eraser, and an erasure that
    /// falls due runs at its next commit, open or drop instead. Open such a
    /// database with `open_encrypted` to keep the bound by the clock.
    ///
    /// A database written by a plain `openmls_sqlite_storage`
    /// `SqliteStorageProvider` keeps all its data; its KeyPackages are listed
    /// by [`unpooled_key_packages`](Self::unpooled_key_packages) until
    /// adopted. Open it with the codec it was written with: its codec is
    /// recorded once a stored entity decodes with the one given, and a
    /// database whose entities do not is refused.
    ///
    /// ```
    /// use openmls_keypackage_pool::{codec::JsonCodec, Error, PoolStorage};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("pool.db");
    /// drop(PoolStorage::<JsonCodec>::open_with_codec(&path)?);
    /// match PoolStorage::open(&path) {
    ///     Err(Error::CodecMismatch { found, expected }) => {
    ///         assert_eq!((found.as_str(), expected), ("json", "messagepack"));
    ///     }
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), Error>(())
    /// ```
    pub fn from_connection_with_codec(conn: Connection, options: &StorageOptions) -> Result<Self> {
        Self::assemble(conn, options, Keying::Plain)
    }

    /// Brings the schema of `conn`, keyed as `keying` says, up to date, and
    /// sets up the storage over it.
    fn assemble(mut conn: Connection, options: &StorageOptions, keying: Keying) -> Result<Self> {
        let path = conn
            .path()
            .filter(|p| !p.is_empty())
            .map(std::path::PathBuf::from);
        // Files an earlier build (or the application) left looser.
        if let Some(path) = &path {
            files::tighten(path);
        }
        // The process's share of the file: its write gate and its eraser.
        let lease = FileLease::of(path.as_deref());
        let gate = Arc::clone(lease.gate());
        {
            // Migrations write, and the finished erasure checkpoints: both
            // inside the file's gate.
            let _pass = gate.enter(options.busy_timeout).ok_or(Error::GateBusy {
                waited: options.busy_timeout,
            })?;
            // Refuse a newer schema, or another codec, before anything (even
            // the journal mode) is written to the file.
            schema::check_not_newer(&conn)?;
            codec_marker::check::<C>(&conn)?;
            schema::bring_up_to_date::<C>(&mut conn, options)?;
        }
        // KeyPackages whose grace window ended are deleted by whichever
        // connection erases, the eraser's included.
        let sweep: Sweep = Arc::new(|conn: &Connection| grace::purge::<C>(conn, unix_now()?));
        let erasure = ErasureSchedule::new(
            options.erasure,
            options.busy_timeout,
            lease,
            || eraser_connection(&conn, &keying, options),
            sweep,
        );
        // Finish an erasure that another storage left pending (a reader was
        // in its way, or it was killed). Best effort: the open has succeeded
        // either way, and the next commit tries again.
        // One a reader still blocks is due for the eraser at once, so that
        // it is finished by the clock rather than at the next commit.
        if !erasure.finish_leftover(&conn) {
            erasure.due_now();
        }
        log_open::<C>(&conn, &keying);
        // Windows still running (or ended while no storage was open) are
        // the eraser's to close; finding them only reads.
        if let Ok(Some(next)) = grace::next_end(&conn) {
            erasure.schedule_deadline(next);
        }
        Ok(Self::new(conn, erasure, gate, keying, options.clone()))
    }
}

/// Says, once a storage is open, what it runs on: the SQLite (and
/// SQLCipher) linked and whether it has the WAL-reset fix, the journal
/// mode, the `synchronous` setting, the codec and the encryption.
fn log_open<C: PoolCodec>(conn: &Connection, keying: &Keying) {
    if !log::log_enabled!(log::Level::Info) {
        return;
    }
    let Ok(build) = SqliteBuild::of(conn) else {
        return;
    };
    let sqlcipher = build
        .sqlcipher
        .as_deref()
        .map(|v| format!(" (SQLCipher {v})"))
        .unwrap_or_default();
    let mode = storage_status::journal_mode(conn).unwrap_or_default();
    let fix = if !build.wal_reset_fixed && mode == "wal" {
        ", without the WAL-reset fix (checkpoints kept off writes within this process)"
    } else {
        ""
    };
    let encrypted = storage_status::is_encrypted(conn, keying, &build);
    let version = &build.version;
    log::info!(
        "opened {}: SQLite {version}{sqlcipher}{fix}; journal mode {mode}, synchronous {}, \
         codec {}, {}",
        files::name_of(conn),
        storage_status::synchronous(conn).unwrap_or_default(),
        C::NAME,
        if encrypted {
            "encrypted"
        } else {
            "not encrypted"
        },
    );
}

/// Runs `open` again, on a fresh connection, while it fails with SQLite's
/// "locking protocol" error, for as long as the busy timeout. SQLite gives
/// up on a read of the WAL index with that error, without calling the busy
/// handler, when other connections keep resetting the log under it (several
/// processes and their erasers checkpointing at once); it is transient, and
/// SQLite leaves the retry to the application.
fn retry_locking_protocol<T>(
    options: &StorageOptions,
    mut open: impl FnMut() -> Result<T>,
) -> Result<T> {
    let deadline = std::time::Instant::now() + options.busy_timeout;
    loop {
        match open() {
            Err(e) if e.is_locking_protocol() && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// A second connection on the file `conn` is open on, keyed and set up the
/// same way (`secure_delete` above all: the eraser deletes KeyPackages whose
/// grace window ended), for the background eraser. `None` for an in-memory
/// database, outside WAL mode (there is no log to empty), and when the file
/// cannot be read that way (a connection the application keyed itself).
pub(super) fn eraser_connection(
    conn: &Connection,
    keying: &Keying,
    options: &StorageOptions,
) -> Option<Connection> {
    let path = files::path_of(conn)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .ok()?;
    if !mode.eq_ignore_ascii_case("wal") {
        return None;
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    let eraser = Connection::open_with_flags(path, flags).ok()?;
    keying.apply(&eraser).ok()?;
    options.apply(&eraser).ok()?;
    eraser
        .query_row("SELECT COUNT(*) FROM sqlite_master", [], |row| {
            row.get::<_, i64>(0)
        })
        .ok()?;
    Some(eraser)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(conn: &Connection, pragma: &str) -> String {
        conn.query_row(&format!("PRAGMA {pragma}"), [], |row| {
            row.get::<_, rusqlite::types::Value>(0)
        })
        .map(|value| match value {
            rusqlite::types::Value::Integer(i) => i.to_string(),
            rusqlite::types::Value::Text(text) => text,
            other => format!("{other:?}"),
        })
        .unwrap()
    }

    #[test]
    fn the_erasers_connection_is_set_up_like_the_storages() {
        let dir = tempfile::tempdir().unwrap();
        let storage = PoolStorage::open(dir.path().join("pool.db")).unwrap();
        let conn = storage.connection();
        let eraser = eraser_connection(&conn, &Keying::Plain, &storage.options)
            .expect("a file in WAL mode gets one");
        for conn in [&*conn, &eraser] {
            assert_eq!(read(conn, "secure_delete"), "1");
            assert_eq!(read(conn, "temp_store"), "2");
            assert_eq!(read(conn, "trusted_schema"), "0");
        }
    }

    #[cfg(feature = "sqlcipher")]
    #[test]
    fn the_erasers_connection_is_keyed_and_pinned_like_the_storages() {
        let dir = tempfile::tempdir().unwrap();
        let key = DatabaseKey::from_bytes([0x33; 32]);
        let storage = PoolStorage::open_with_key(dir.path().join("pool.db"), &key).unwrap();
        let eraser = eraser_connection(&storage.connection(), &Keying::raw(&key), &storage.options)
            .expect("a keyed file in WAL mode gets one");
        assert_eq!(read(&eraser, "cipher_memory_security"), "1");
        assert_eq!(read(&eraser, "trusted_schema"), "0");
        let settings: Vec<String> = eraser
            .prepare("PRAGMA cipher_settings")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(
            settings.iter().any(|s| s == "PRAGMA kdf_iter = 256000;"),
            "{settings:?}"
        );
    }
}
