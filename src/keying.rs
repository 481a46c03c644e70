//! How the storage's connections are keyed. Without the `sqlcipher`
//! feature there is nothing to key. With it: a raw 32-byte key
//! ([`DatabaseKey`]) or a passphrase, SQLCipher's settings pinned on every
//! connection (memory wiping before the key, the format right after it,
//! before anything is read), and the statements that carry a key built in
//! memory that is zeroed once they have run.

use rusqlite::Connection;

#[cfg(feature = "sqlcipher")]
use crate::error::Error;
use crate::error::Result;
#[cfg(feature = "sqlcipher")]
use zeroize::Zeroizing;

/// A raw 256-bit SQLCipher key, as platform keystores hold them (the
/// Android Keystore, the iOS Keychain): used as it is, with no key
/// derivation, so opening costs no PBKDF2 rounds.
///
/// Zeroed when dropped, never printed (its `Debug` shows no byte of it),
/// and not `Clone`: one copy, where the application put it.
///
/// ```
/// use openmls_keypackage_pool::DatabaseKey;
///
/// let key = DatabaseKey::from_bytes([7; 32]);
/// assert_eq!(format!("{key:?}"), "DatabaseKey(..)");
/// ```
#[cfg(feature = "sqlcipher")]
pub struct DatabaseKey(Zeroizing<[u8; 32]>);

#[cfg(feature = "sqlcipher")]
impl DatabaseKey {
    /// The key made of these 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }
}

#[cfg(feature = "sqlcipher")]
impl std::fmt::Debug for DatabaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseKey(..)")
    }
}

/// How a storage's connections are keyed. The storage keeps it, in memory
/// zeroed on drop, to key the connection of its eraser again after a
/// rekey. A clone is zeroed on drop too.
#[derive(Clone)]
pub(crate) enum Keying {
    /// Not encrypted, or keyed by the application before it handed the
    /// connection over (then no second connection can read the file).
    Plain,
    /// SQLCipher, with a passphrase (PBKDF2 at every open).
    #[cfg(feature = "sqlcipher")]
    Passphrase(Zeroizing<String>),
    /// SQLCipher, with a raw key.
    #[cfg(feature = "sqlcipher")]
    Raw(Zeroizing<[u8; 32]>),
}

impl Keying {
    /// A passphrase; an empty one (which SQLCipher takes as "no
    /// encryption") is refused.
    #[cfg(feature = "sqlcipher")]
    pub(crate) fn passphrase(passphrase: &str) -> Result<Self> {
        if passphrase.is_empty() {
            return Err(Error::EmptyPassphrase);
        }
        // SQLite's tokenizer stops at a NUL, and its error would quote the
        // statement, passphrase and all.
        if passphrase.contains('\0') {
            return Err(Error::PassphraseWithNul);
        }
        Ok(Self::Passphrase(Zeroizing::new(passphrase.to_owned())))
    }

    /// A raw key.
    #[cfg(feature = "sqlcipher")]
    pub(crate) fn raw(key: &DatabaseKey) -> Self {
        Self::Raw(Zeroizing::new(*key.0))
    }

    /// What kind of key this is, to log (never the key).
    #[cfg(feature = "sqlcipher")]
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Plain => "no key",
            Self::Passphrase(_) => "passphrase",
            Self::Raw(_) => "raw key",
        }
    }

    /// Keys a freshly opened connection before anything else is asked of
    /// it: SQLCipher's memory wiping and compatibility pinned, the key, a
    /// check that SQLCipher is really there, and a read of the schema,
    /// which proves the key right before anything is written. A wrong key
    /// is [`Error::WrongKey`](crate::Error::WrongKey).
    pub(crate) fn apply(&self, conn: &Connection) -> Result<()> {
        #[cfg(feature = "sqlcipher")]
        if !matches!(self, Self::Plain) {
            // Wipes every allocation SQLCipher frees, the key's included.
            conn.execute_batch("PRAGMA cipher_memory_security = ON")?;
            run_statement(conn, &self.statement("key"))?;
            // SQLCipher 4's format, whatever a later SQLCipher defaults to.
            conn.execute_batch("PRAGMA cipher_compatibility = 4")?;
            check_sqlcipher(conn)?;
            return match conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |row| {
                row.get::<_, i64>(0)
            }) {
                Ok(_) => Ok(()),
                Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) => {
                    Err(Error::WrongKey)
                }
                Err(e) => Err(e.into()),
            };
        }
        let _ = conn;
        Ok(())
    }

    /// Re-encrypts the database `conn` is open on under this key
    /// (`PRAGMA rekey`).
    #[cfg(feature = "sqlcipher")]
    pub(crate) fn rekey(&self, conn: &Connection) -> Result<()> {
        run_statement(conn, &self.statement("rekey"))
    }

    /// `PRAGMA {pragma} = …` with this key, in a buffer zeroed on drop.
    #[cfg(feature = "sqlcipher")]
    fn statement(&self, pragma: &str) -> Zeroizing<String> {
        // Sized for the longest form up front: a buffer that grew would
        // leave a copy of the key behind in the memory it gave back.
        let key_len = match self {
            Self::Plain => 0,
            Self::Passphrase(passphrase) => 2 * passphrase.len(),
            Self::Raw(bytes) => 2 * bytes.len(),
        };
        let mut sql = Zeroizing::new(String::with_capacity(pragma.len() + key_len + 24));
        sql.push_str("PRAGMA ");
        sql.push_str(pragma);
        sql.push_str(" = ");
        match self {
            Self::Plain => sql.push_str("''"),
            Self::Passphrase(passphrase) => {
                sql.push('\'');
                for c in passphrase.chars() {
                    if c == '\'' {
                        sql.push('\'');
                    }
                    sql.push(c);
                }
                sql.push('\'');
            }
            Self::Raw(bytes) => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                sql.push_str("\"x'");
                for byte in bytes.iter() {
                    sql.push(char::from(HEX[usize::from(byte >> 4)]));
                    sql.push(char::from(HEX[usize::from(byte & 0x0f)]));
                }
                sql.push_str("'\"");
            }
        }
        sql
    }
}

/// Runs one statement that carries a key and may return a row (`PRAGMA
/// key` answers "ok"). An error never quotes the statement: rusqlite's
/// input errors carry the SQL text, key included, and are replaced by
/// SQLite's bare error.
#[cfg(feature = "sqlcipher")]
fn run_statement(conn: &Connection, sql: &str) -> Result<()> {
    let run = || -> rusqlite::Result<()> {
        let mut stmt = conn.prepare(sql)?;
        let mut rows = stmt.query([])?;
        while rows.next()?.is_some() {}
        Ok(())
    };
    run().map_err(|e| match e {
        rusqlite::Error::SqlInputError { error, .. } => {
            Error::Sqlite(rusqlite::Error::SqliteFailure(error, None))
        }
        other => other.into(),
    })
}

/// Fails loudly when the build has no SQLCipher: plain SQLite takes the
/// key pragma silently and would write plaintext.
#[cfg(feature = "sqlcipher")]
fn check_sqlcipher(conn: &Connection) -> Result<()> {
    let version: Option<String> = conn
        .query_row("PRAGMA cipher_version", [], |row| row.get(0))
        .ok();
    match version {
        Some(v) if !v.is_empty() => Ok(()),
        _ => Err(Error::SqlcipherMissing),
    }
}
