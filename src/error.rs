//! The crate's one error type.

use std::fmt;

use crate::status::KeyPackageStatus;

/// A `Result` whose error is this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The raw bytes of a KeyPackageRef, printed as hex in error messages.
///
/// Errors carry the ref so that an application can log or report exactly
/// which KeyPackage an operation failed for.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RefBytes(pub Vec<u8>);

impl RefBytes {
    pub(crate) fn of(keypackage_ref: &[u8]) -> Self {
        Self(keypackage_ref.to_vec())
    }
}

impl fmt::Display for RefBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("<empty ref>");
        }
        for byte in &self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for RefBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RefBytes({self})")
    }
}

/// Everything that can go wrong in this crate.
///
/// Each variant names what failed and, where one KeyPackage is concerned,
/// which one. The enum is `#[non_exhaustive]`: match with a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No metadata row exists for this KeyPackageRef.
    #[error("no KeyPackage metadata for ref {keypackage_ref}")]
    NotFound {
        /// The ref that was looked up.
        keypackage_ref: RefBytes,
    },

    /// A metadata row for this KeyPackageRef already exists.
    #[error("KeyPackage metadata for ref {keypackage_ref} already exists")]
    DuplicateRef {
        /// The ref that was inserted twice.
        keypackage_ref: RefBytes,
    },

    /// A KeyPackageRef passed in is empty or longer than any MLS hash.
    #[error("invalid KeyPackageRef {keypackage_ref}: {reason}")]
    InvalidRef {
        /// The offending bytes.
        keypackage_ref: RefBytes,
        /// Why they were refused.
        reason: &'static str,
    },

    /// A status text that is not one of [`KeyPackageStatus`]'s names.
    #[error("unknown KeyPackage status {text:?}{}", match .keypackage_ref {
        Some(r) => format!(" in the row of ref {r}"),
        None => String::new(),
    })]
    InvalidStatus {
        /// The text that could not be parsed.
        text: String,
        /// The row it was read from, when it came from the database.
        keypackage_ref: Option<RefBytes>,
    },

    /// A withdrawal reason text that is not one of
    /// [`WithdrawalReason`](crate::WithdrawalReason)'s names.
    #[error("unknown withdrawal reason {text:?}")]
    InvalidWithdrawalReason {
        /// The text that could not be parsed.
        text: String,
    },

    /// The lifecycle does not allow this status change.
    #[error("KeyPackage {keypackage_ref} cannot move from {from} to {to}")]
    InvalidTransition {
        /// The KeyPackage whose status was to change.
        keypackage_ref: RefBytes,
        /// Its current status.
        from: KeyPackageStatus,
        /// The status that was asked for.
        to: KeyPackageStatus,
    },

    /// A timestamp does not fit the signed 64-bit Unix seconds the table stores.
    #[error("timestamp {value} of KeyPackage {keypackage_ref} does not fit in i64 Unix seconds")]
    TimestampOverflow {
        /// The KeyPackage the timestamp belongs to.
        keypackage_ref: RefBytes,
        /// The value that did not fit.
        value: u64,
    },

    /// The system clock reads earlier than the Unix epoch.
    #[error("the system clock is set before 1970-01-01")]
    ClockBeforeEpoch,

    /// A stored KeyPackageBundle could not be decoded.
    #[error("the stored KeyPackageBundle of ref {keypackage_ref} cannot be decoded: {source}")]
    CorruptBundle {
        /// The KeyPackage whose bundle is unreadable.
        keypackage_ref: RefBytes,
        /// What the codec reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// Encoding or decoding a value with the storage codec failed.
    #[error("codec error while {context}: {source}")]
    Codec {
        /// What was being encoded or decoded.
        context: &'static str,
        /// What the codec reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A KeyPackage's bundle is missing from OpenMLS storage although its
    /// metadata row exists.
    #[error("KeyPackage {keypackage_ref} has metadata but no stored bundle")]
    MissingBundle {
        /// The KeyPackage whose bundle is gone.
        keypackage_ref: RefBytes,
    },

    /// OpenMLS failed to build a KeyPackage.
    #[error("building a KeyPackage failed: {0}")]
    KeyPackageBuild(#[source] openmls::prelude::KeyPackageNewError),

    /// A KeyPackage could not be TLS-encoded for upload.
    #[error("encoding KeyPackage {keypackage_ref} for upload failed: {source}")]
    KeyPackageEncode {
        /// The KeyPackage that could not be encoded.
        keypackage_ref: RefBytes,
        /// What the TLS codec reported.
        #[source]
        source: tls_codec::Error,
    },

    /// A generation worker thread failed (could not start, panicked, or
    /// delivered too few KeyPackages); nothing of the batch was kept.
    #[error("KeyPackage generation worker failed: {what}; the batch was rolled back")]
    Worker {
        /// What went wrong.
        what: String,
        /// The operating system's error, when a thread could not start.
        #[source]
        source: Option<std::io::Error>,
    },

    /// Storing a KeyPackage the pool built failed; nothing of its batch was
    /// kept.
    #[error("storing KeyPackage {keypackage_ref} failed: {source}")]
    KeyPackageStore {
        /// The KeyPackage whose bundle or metadata could not be written.
        keypackage_ref: RefBytes,
        /// What went wrong.
        #[source]
        source: Box<Error>,
    },

    /// The crypto provider does not implement the pool's ciphersuite;
    /// nothing was written.
    #[error("the crypto provider does not support ciphersuite {name} (0x{code:04x})")]
    UnsupportedCiphersuite {
        /// The ciphersuite's code point.
        code: u16,
        /// OpenMLS's name for it.
        name: String,
    },

    /// A crypto provider could not be set up (for example, its random
    /// generator could not be seeded).
    #[error("the crypto provider could not be set up: {source}")]
    CryptoProvider {
        /// What the provider reported.
        #[source]
        source: openmls_traits::types::CryptoError,
    },

    /// A [`PoolConfig`](crate::PoolConfig) that cannot work.
    #[error("invalid pool configuration: {reason}")]
    InvalidConfig {
        /// What is wrong with it.
        reason: String,
    },

    /// Generating would take the pool past its hard cap.
    #[error(
        "generating {requested} KeyPackages would take the pool from {held} one-time KeyPackages on disk to past its hard cap of {hard_cap}"
    )]
    HardCapExceeded {
        /// How many were asked for.
        requested: usize,
        /// How many one-time KeyPackages the pool holds on disk, whatever
        /// their status.
        held: usize,
        /// The configured cap.
        hard_cap: usize,
    },

    /// A [`StorageOptions`](crate::StorageOptions) busy timeout longer than
    /// SQLite can take.
    #[error("busy timeout {requested:?} is longer than SQLite's limit of {max:?}")]
    BusyTimeoutTooLong {
        /// The timeout asked for.
        requested: std::time::Duration,
        /// The longest SQLite accepts ([`MAX_BUSY_TIMEOUT`](crate::MAX_BUSY_TIMEOUT)).
        max: std::time::Duration,
    },

    /// Running the schema migrations failed.
    #[error("schema migration failed at {step}: {source}")]
    Migration {
        /// Which step failed: `openmls_sqlite_storage`'s migrations, one of
        /// this crate's (`V{n}__{name}`), or the migration lock file.
        step: String,
        /// What that step reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The database was written by a newer version of this crate.
    #[error(
        "the database's pool schema is at version {found}, newer than the {supported} this build knows; refusing to open it"
    )]
    SchemaTooNew {
        /// The newest migration recorded in the database.
        found: i64,
        /// The newest migration this build ships.
        supported: i64,
    },

    /// The database's OpenMLS entities are stored with another codec than
    /// the one it was opened with. Nothing was written.
    #[error(
        "the database's OpenMLS entities are stored with the {found:?} codec, not {expected:?}; open it with the codec it was written with"
    )]
    CodecMismatch {
        /// The codec the database records, or, for a database written
        /// before codecs were recorded, the shipped codec its entities decode
        /// with (`"unknown"` when none does).
        found: String,
        /// The [`PoolCodec::NAME`](crate::codec::PoolCodec::NAME) of the
        /// codec it was opened with.
        expected: &'static str,
    },

    /// [`PoolStorage::repair`](crate::PoolStorage::repair) removed nothing
    /// because stored KeyPackageBundles (or their keys) do not decode: the
    /// database may be read with the wrong codec, or be damaged, and
    /// pairing bundles with metadata rows would then be guesswork.
    #[error(
        "repair removed nothing: {undecodable} stored KeyPackage bundles or bundle keys cannot be decoded with this codec, and SQLite's integrity check reported {integrity_errors} problems"
    )]
    RepairRefused {
        /// How many bundles or bundle keys did not decode.
        undecodable: usize,
        /// How many problems `PRAGMA integrity_check` reported.
        integrity_errors: usize,
    },

    /// An empty passphrase, which SQLCipher would take as "no encryption";
    /// refused before anything is opened.
    #[error("an empty passphrase would leave the database unencrypted")]
    EmptyPassphrase,

    /// A passphrase with a NUL character, which SQLite's parser cannot take;
    /// refused before anything is opened.
    #[error("a passphrase may not contain a NUL character")]
    PassphraseWithNul,

    /// A rekey ran but the database did not change key: it is still under
    /// its old key, and this storage's connection may no longer read it.
    /// Reopen the storage with the old key.
    #[error(
        "the rekey did not take; the database is still under its old key: reopen it with that key"
    )]
    RekeyFailed,

    /// The build was asked to encrypt, but the SQLite it runs on is not
    /// SQLCipher (`PRAGMA cipher_version` answers nothing): refused rather
    /// than writing plaintext.
    #[error("SQLCipher is not linked into this build; refusing to write an unencrypted database")]
    SqlcipherMissing,

    /// [`PoolStorage::rekey`](crate::PoolStorage) could not start; the
    /// database and its key are unchanged.
    #[error("the database cannot be rekeyed now: {reason}")]
    RekeyRefused {
        /// Why.
        reason: &'static str,
    },

    /// The database path is a symbolic link; it is refused rather than
    /// followed, and nothing is written through it.
    #[error("the database path {} is a symbolic link; open the file it points to directly", path.display())]
    SymlinkRefused {
        /// The path given.
        path: std::path::PathBuf,
    },

    /// An encrypted database could not be read with the key given (or the
    /// file is not an encrypted pool database at all).
    #[error("the database cannot be decrypted with this key, or is not an encrypted database")]
    WrongKey,

    /// SQLite rolled back the enclosing transaction by itself (after a full
    /// disk, an I/O error or an interrupt), so the writes made in it so far
    /// are gone; nothing further was written.
    #[error("the enclosing transaction was rolled back by SQLite; its writes are gone")]
    TransactionLost,

    /// Another thread of this process kept the database file's write gate
    /// (for a write transaction or a checkpoint, through this handle or
    /// another on the same file) for longer than the busy timeout; nothing
    /// was written. Like SQLite's "database is busy", it is worth retrying.
    #[error(
        "another thread kept this database file's write gate for {waited:?}; nothing was written"
    )]
    GateBusy {
        /// How long this call waited (the busy timeout).
        waited: std::time::Duration,
    },

    /// [`PoolStorage::close`](crate::PoolStorage::close) released the file,
    /// but another connection kept old copies of secrets in the
    /// write-ahead log past the busy timeout. The erasure stays recorded in
    /// the database; the next open of any process finishes it.
    #[error("closed, but another connection kept old copies of secrets in the write-ahead log; the next open erases them")]
    ErasureIncomplete,

    /// [`PoolProvider::group_transaction`](crate::PoolProvider::group_transaction)
    /// rolled back, and then could not load the group from the store as
    /// the rollback left it. The `MlsGroup` in memory may be ahead of the
    /// store: do not use it; load the group again with `MlsGroup::load`.
    #[error("the transaction rolled back, and group {group_id} could not be reloaded ({reason}); do not use the group in memory")]
    GroupReload {
        /// The group's id, as hex.
        group_id: RefBytes,
        /// Why: the storage error, or that the store holds no such group.
        reason: String,
    },

    /// SQLite reported an error.
    #[error("SQLite error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

impl Error {
    pub(crate) fn not_found(keypackage_ref: &[u8]) -> Self {
        Self::NotFound {
            keypackage_ref: RefBytes::of(keypackage_ref),
        }
    }

    pub(crate) fn migration(
        step: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Migration {
            step: step.into(),
            source: source.into(),
        }
    }

    pub(crate) fn worker(what: impl Into<String>) -> Self {
        Self::Worker {
            what: what.into(),
            source: None,
        }
    }

    /// Whether this is SQLite's transient "locking protocol" error.
    pub(crate) fn is_locking_protocol(&self) -> bool {
        matches!(self, Self::Sqlite(e)
            if e.sqlite_error_code() == Some(rusqlite::ErrorCode::FileLockingProtocolFailed))
    }

    pub(crate) fn codec(
        context: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Codec {
            context,
            source: Box::new(source),
        }
    }
}
