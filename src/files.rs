//! The database's files on disk: readable and writable by their owner
//! alone, whatever the process umask, and never reached through a symbolic
//! link.
//!
//! SQLite creates the `-wal`, `-shm` and `-journal` files with the mode of
//! the database file, so creating the database file owner-only before
//! SQLite opens it is enough for those; the migration lock is this crate's
//! own and is created owner-only too. Files an earlier build left looser
//! are tightened whenever a storage opens. The directory belongs to the
//! application: its mode is left alone.

use std::{
    fs::OpenOptions,
    io,
    path::{Path, PathBuf},
};

use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result};

/// What SQLite and this crate may keep beside a database file.
const SIDECARS: [&str; 4] = ["-wal", "-shm", "-journal", "-migration-lock"];

/// Whether `path` names a file on disk, rather than SQLite's in-memory
/// name or a URI (whose files are the application's to set up).
fn is_plain_file(path: &Path) -> bool {
    let text = path.to_string_lossy();
    !text.is_empty() && text != ":memory:" && !text.starts_with("file:")
}

/// Refuses a database path that is a symbolic link: the file it points to
/// is not where the application asked for its keys to be.
fn refuse_symlink(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(Error::SymlinkRefused {
            path: path.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Opens (creating if needed) the database file at `path` the way this
/// crate keeps its files: refused when `path` is a symbolic link, created
/// owner-only, and opened with SQLite's no-follow flag.
pub(crate) fn open_database(path: &Path) -> Result<Connection> {
    if is_plain_file(path) {
        refuse_symlink(path)?;
        // Best effort: if the file cannot be made here, SQLite's own open
        // reports why, in its terms.
        let _ = create_owner_only(path);
        tighten(path);
    }
    let flags = OpenFlags::default() | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    Connection::open_with_flags(path, flags).map_err(|e| match e.sqlite_error_code() {
        // A symbolic link made between the check above and the open.
        Some(rusqlite::ErrorCode::CannotOpen) if is_symlink(path) => Error::SymlinkRefused {
            path: path.to_owned(),
        },
        _ => e.into(),
    })
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// The database's files that exist now, sidecars included.
fn existing_files(db: &Path) -> Vec<PathBuf> {
    std::iter::once(db.to_owned())
        .chain(
            SIDECARS
                .iter()
                .map(|suffix| PathBuf::from(format!("{}{suffix}", db.display()))),
        )
        .filter(|p| p.exists())
        .collect()
}

/// Makes the database at `db` and every file beside it owner-only, where
/// any is looser. Best effort: a file owned by another user, or on a file
/// system without modes, is left as it is.
pub(crate) fn tighten(db: &Path) {
    if !is_plain_file(db) {
        return;
    }
    for file in existing_files(db) {
        let _ = make_owner_only(&file);
    }
}

/// Opens (creating if needed, owner-only) a file of this crate's beside the
/// database, such as the migration lock.
/// A symbolic link in its place is refused, not followed.
pub(crate) fn open_owned(path: &Path) -> io::Result<std::fs::File> {
    let mut options = OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    let file = options.open(path)?;
    restrict(&file)?;
    Ok(file)
}

#[cfg(unix)]
fn create_owner_only(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // `create_new` (O_EXCL) never follows a symbolic link, dangling or not.
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(not(unix))]
fn create_owner_only(_path: &Path) -> io::Result<()> {
    Ok(())
}

/// Makes the file at `path` owner-only, through a handle opened without
/// following a symbolic link, so the mode changed is that file's.
///
/// The mode is read by path first, and the file opened only when it is
/// looser: closing any descriptor of a file drops every POSIX lock this
/// process holds on it, and SQLite's connections in this process (other
/// storages on the same database, their erasers) keep their locks on the
/// database and its `-shm` file that way. Lost, another process could
/// truncate the log under their reads or take the shared memory over.
#[cfg(unix)]
fn make_owner_only(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() || meta.permissions().mode() & 0o077 == 0 {
        return Ok(());
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    restrict(&file)
}

#[cfg(not(unix))]
fn make_owner_only(_path: &Path) -> io::Result<()> {
    Ok(())
}

/// Sets an open file's mode to 0600 where it is looser.
#[cfg(unix)]
fn restrict(file: &std::fs::File) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if file.metadata()?.permissions().mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict(_file: &std::fs::File) -> io::Result<()> {
    Ok(())
}

/// The file `conn` is open on; `None` for an in-memory or temporary
/// database (which rusqlite reports as an empty path).
pub(crate) fn path_of(conn: &Connection) -> Option<&str> {
    conn.path().filter(|p| !p.is_empty())
}

/// The file `conn` is open on, to name in the log (`:memory:` for an
/// in-memory database).
pub(crate) fn name_of(conn: &Connection) -> &str {
    path_of(conn).unwrap_or(":memory:")
}

/// A fresh read-only connection, not yet keyed, on the file `conn` is open
/// on, never through a symbolic link; `None` for an in-memory database or
/// when it cannot be opened. The file is reached through SQLite, never
/// opened directly: closing a descriptor of the file would drop every POSIX
/// lock the process's connections hold on it.
pub(crate) fn probe(conn: &Connection) -> Option<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    Connection::open_with_flags(path_of(conn)?, flags).ok()
}
