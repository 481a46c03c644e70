//! Changing the key of an encrypted database (the `sqlcipher` feature).

use rusqlite::Connection;

use super::{open::eraser_connection, PoolStorage};
use crate::{
    codec::PoolCodec,
    erasure,
    error::{Error, Result},
    keying::{DatabaseKey, Keying},
    options::JournalMode,
};

impl<C: PoolCodec> PoolStorage<C> {
    /// Re-encrypts the database under the raw key `key`, from a passphrase
    /// or another raw key: when the application moves its key into the
    /// platform keystore, or rotates it.
    ///
    /// Crash-safe: the log is emptied under the old key first, and the
    /// pages are rewritten in one transaction of SQLite's rollback journal
    /// (the database leaves WAL mode for it and goes back), so a crash at
    /// any moment leaves a database that opens with exactly one of the two
    /// keys, with nothing lost; once it has returned `Ok`, a power cut
    /// leaves the new one (the rewrite's commit, the journal's deletion, is
    /// synced to the directory: `synchronous=EXTRA`). Afterwards no file of
    /// the database holds a page the old key decrypts: every page is
    /// rewritten, and the journal and the log are emptied.
    ///
    /// The storage needs the file to itself: a transaction of its own, or
    /// another connection still on the file (another process, another
    /// storage), is [`Error::RekeyRefused`] with the database and its key
    /// unchanged. A database this storage did not key itself (opened with
    /// [`open`](Self::open) or taken over from the application) is refused
    /// the same way. The outcome is checked with a fresh connection under
    /// the new key: SQLCipher can answer "ok" to a rewrite it rolled back
    /// (a full disk, say), and that is [`Error::RekeyFailed`]: the database
    /// is still under the old key, and the storage must be reopened with
    /// it. If the database cannot go back to WAL mode at once (another
    /// connection came in), it stays in rollback-journal mode until it is
    /// next opened (under [`Synchronous::Full`](crate::Synchronous::Full),
    /// each commit durable on its own); the new key stands.
    ///
    /// ```
    /// # fn main() -> Result<(), openmls_keypackage_pool::Error> {
    /// use openmls_keypackage_pool::{DatabaseKey, Error, PoolStorage};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("secret.db");
    /// let storage = PoolStorage::open_encrypted(&path, "an old passphrase")?;
    /// storage.rekey(&DatabaseKey::from_bytes([0x42; 32]))?;
    /// drop(storage);
    ///
    /// assert!(matches!(PoolStorage::open_encrypted(&path, "an old passphrase"), Err(Error::WrongKey)));
    /// PoolStorage::open_with_key(&path, &DatabaseKey::from_bytes([0x42; 32]))?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn rekey(&self, key: &DatabaseKey) -> Result<()> {
        self.rekey_to(Keying::raw(key))
    }

    /// [`rekey`](Self::rekey) to a passphrase; an empty one is
    /// [`Error::EmptyPassphrase`], before anything changes.
    pub fn rekey_passphrase(&self, passphrase: &str) -> Result<()> {
        self.rekey_to(Keying::passphrase(passphrase)?)
    }

    fn rekey_to(&self, new: Keying) -> Result<()> {
        let held = self.held();
        if matches!(*held.keying.borrow(), Keying::Plain) {
            return Err(Error::RekeyRefused {
                reason: "the storage did not key this database (open it with a key)",
            });
        }
        // Refused at once rather than after the busy timeout that leaving
        // WAL mode would wait out.
        if held.erasure.other_handles() > 0 {
            return Err(Error::RekeyRefused {
                reason: "another handle of this process has the database open",
            });
        }
        if held.scope_depth.get() > 0 || !held.conn.is_autocommit() {
            return Err(Error::RekeyRefused {
                reason: "a transaction of this storage is open",
            });
        }
        // The whole rekey is one write, and a checkpoint: inside the file's
        // write gate.
        let _pass = self.enter_gate()?;
        // Empty the log under the old key, waiting for readers as long as
        // the busy timeout allows.
        if !erasure::erase(&held.conn)? {
            return Err(Error::RekeyRefused {
                reason: "another connection keeps the write-ahead log",
            });
        }
        // The rewrite is a rollback-journal commit: the journal's deletion,
        // durable only once the directory is synced, which SQLite does only
        // under EXTRA. Without it, the rewrite was made durable only by the
        // journal of the switch back to WAL; when that switch failed, a
        // power cut after `rekey` returned brought the old key back.
        held.conn.pragma_update(None, "synchronous", "EXTRA")?;
        // The eraser's connection is keyed the old way, and leaving WAL
        // mode needs the file to this connection alone.
        held.erasure.stop();
        let result = self
            .rekey_in_rollback_mode(&held.conn, &new)
            .and_then(|()| {
                // SQLCipher reports success even when its rewrite was rolled
                // back: only a fresh connection under the new key tells.
                if self.opens_with(&new) {
                    Ok(())
                } else {
                    Err(Error::RekeyFailed)
                }
            });
        if result.is_ok() {
            *held.keying.borrow_mut() = new;
            // Back to WAL, now that the key has changed. If another
            // connection got in meanwhile, the database stays in rollback
            // mode until the next open sets WAL again; the rekey stands.
            let _ = held.conn.query_row("PRAGMA journal_mode = WAL", [], |row| {
                row.get::<_, String>(0)
            });
        }
        // Back to the options' level for the journal mode in force (in
        // rollback mode, under `Full`, EXTRA: each later commit durable on
        // its own until the next open). Best effort: if this fails, the
        // connection stays at EXTRA, which is the safe side.
        if let Some(mode) = JournalMode::in_force(&held.conn) {
            let _ = held.conn.pragma_update(
                None,
                "synchronous",
                self.options.synchronous.as_sql_in(mode),
            );
        }
        let keying = held.keying.borrow();
        held.erasure
            .start(eraser_connection(&held.conn, &keying, &self.options));
        match &result {
            Ok(()) => log::info!(
                "re-encrypted the database under a new {}; journal mode now {}",
                keying.kind(),
                crate::storage_status::journal_mode(&held.conn).unwrap_or_default()
            ),
            Err(e) => log::warn!("re-encrypting the database failed; the old key stands: {e}"),
        }
        result
    }

    /// Whether a fresh connection keyed with `keying` reads the database.
    fn opens_with(&self, keying: &Keying) -> bool {
        crate::files::probe(&self.connection()).is_some_and(|probe| keying.apply(&probe).is_ok())
    }

    /// Rewrites every page under `new` in one rollback-journal transaction;
    /// on failure, puts WAL mode back.
    fn rekey_in_rollback_mode(&self, conn: &Connection, new: &Keying) -> Result<()> {
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |row| row.get(0))?;
        let in_wal = mode.eq_ignore_ascii_case("wal");
        if in_wal {
            let now: String = conn
                .query_row("PRAGMA journal_mode = DELETE", [], |row| row.get(0))
                .map_err(|_| Error::RekeyRefused {
                    reason: "another connection has the database open",
                })?;
            if !now.eq_ignore_ascii_case("delete") {
                return Err(Error::RekeyRefused {
                    reason: "another connection has the database open",
                });
            }
        }
        let rekeyed = new.rekey(conn);
        if in_wal && rekeyed.is_err() {
            let _ = conn.query_row("PRAGMA journal_mode = WAL", [], |row| {
                row.get::<_, String>(0)
            });
        }
        rekeyed
    }
}
