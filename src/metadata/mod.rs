//! The `keypackage_pool_metadata` table: one row per pooled KeyPackage.
//!
//! This module owns the table's SQL. It decides what a row holds when a
//! bundle enters the pool ([`PoolEntry::from_bundle`]) and how rows move
//! through the lifecycle ([`transition`]); the storage hook, bulk generation
//! and adoption of existing bundles all go through these two. The queries a
//! pool runs on its own scope are in [`pool_queries`].

mod pool_queries;
mod rows;

pub(crate) use pool_queries::*;
pub use rows::{KeyPackageMetadata, PoolEntry, PoolScope};

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::{
    error::{Error, RefBytes, Result},
    keypackage_ref::check_ref,
    status::KeyPackageStatus,
};

pub(crate) const COLUMNS: &str =
    "keypackage_ref, status, created_at, uploaded_at, reserved_at, spent_at, \
     not_after, reservation_id, reservation_expires_at, reserved_by, spent_group_id, spent_by, \
     last_resort, signature_key, ciphersuite, credential_type, offered_at, retired_until, \
     credential";

/// Inserts a new row in `status` and counts it; a second row for the same
/// ref is [`Error::DuplicateRef`].
pub(crate) fn insert(
    conn: &Connection,
    entry: &PoolEntry,
    status: KeyPackageStatus,
    now: i64,
) -> Result<()> {
    insert_uncounted(conn, entry, status, now)?;
    add_count(conn, ScopeColumns::of(entry), status, entry.last_resort, 1)
}

/// The scope columns of a row as stored, empty ones included (a row made
/// by hand has none).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScopeColumns<'a> {
    pub signature_key: &'a [u8],
    pub ciphersuite: u16,
    pub credential: &'a [u8],
}

impl<'a> ScopeColumns<'a> {
    pub(crate) fn of(entry: &'a PoolEntry) -> Self {
        Self {
            signature_key: &entry.signature_key,
            ciphersuite: entry.ciphersuite,
            credential: &entry.credential,
        }
    }

    pub(crate) fn of_scope(scope: &'a PoolScope) -> Self {
        Self {
            signature_key: &scope.signature_key,
            ciphersuite: scope.ciphersuite,
            credential: &scope.credential,
        }
    }
}

/// Adds `n` rows to the count of (scope, `status`, `last_resort`), in the
/// transaction that inserted them: inserts are counted here, not by a
/// trigger (migration V6), so a batch counts its rows once.
pub(crate) fn add_count(
    conn: &Connection,
    scope: ScopeColumns<'_>,
    status: KeyPackageStatus,
    last_resort: bool,
    n: usize,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    conn.prepare_cached(
        "INSERT INTO keypackage_pool_counts
             (signature_key, ciphersuite, credential, status, last_resort, count)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (signature_key, ciphersuite, credential, status, last_resort)
         DO UPDATE SET count = count + excluded.count",
    )?
    .execute(params![
        scope.signature_key,
        scope.ciphersuite,
        scope.credential,
        status.as_str(),
        last_resort,
        n
    ])?;
    Ok(())
}

/// Inserts a new row without counting it: the caller counts it, with
/// [`add_count`], in the same transaction (once for a whole batch).
pub(crate) fn insert_uncounted(
    conn: &Connection,
    entry: &PoolEntry,
    status: KeyPackageStatus,
    now: i64,
) -> Result<()> {
    check_ref(&entry.keypackage_ref)?;
    let mut stmt = conn.prepare_cached(
        "INSERT INTO keypackage_pool_metadata
             (keypackage_ref, status, created_at, not_after, last_resort,
              signature_key, ciphersuite, credential_type, credential)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    match stmt.execute(params![
        entry.keypackage_ref,
        status.as_str(),
        now,
        entry.not_after,
        entry.last_resort,
        entry.signature_key,
        entry.ciphersuite,
        entry.credential_type,
        entry.credential
    ]) {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            Err(Error::DuplicateRef {
                keypackage_ref: RefBytes::of(&entry.keypackage_ref),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether a row's scope is not (fully) known: no signature key, or no
/// credential.
const UNSCOPED: &str = "(signature_key = x'' OR credential = x'')";

/// Gives the row of `entry`'s ref the scope (credential included) and
/// credential type read from its bundle, if it lacks any of it (a row made
/// by hand before its bundle was stored, or one the scope or credential
/// migration could not read); returns whether it did.
pub(crate) fn fill_scope(conn: &Connection, entry: &PoolEntry) -> Result<bool> {
    let mut stmt = conn.prepare_cached(&format!(
        "UPDATE keypackage_pool_metadata
         SET signature_key = ?2, ciphersuite = ?3, credential_type = ?4, credential = ?5
         WHERE keypackage_ref = ?1 AND {UNSCOPED}"
    ))?;
    Ok(stmt.execute(params![
        entry.keypackage_ref,
        entry.signature_key,
        entry.ciphersuite,
        entry.credential_type,
        entry.credential
    ])? > 0)
}

/// Refs of rows whose scope is not fully known (stored as blobs, as every
/// ref this crate writes is).
pub(crate) fn unscoped_refs(conn: &Connection) -> Result<Vec<Vec<u8>>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT keypackage_ref FROM keypackage_pool_metadata
         WHERE {UNSCOPED} AND typeof(keypackage_ref) = 'blob'"
    ))?;
    let rows = stmt.query_map([], |row| row.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The row for `keypackage_ref`, if there is one.
pub(crate) fn get(conn: &Connection, keypackage_ref: &[u8]) -> Result<Option<KeyPackageMetadata>> {
    check_ref(keypackage_ref)?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM keypackage_pool_metadata WHERE keypackage_ref = ?1"
    ))?;
    stmt.query_row([keypackage_ref], RawRow::read)
        .optional()?
        .map(RawRow::parse)
        .transpose()
}

/// Every row in `status`, oldest first.
pub(crate) fn by_status(
    conn: &Connection,
    status: KeyPackageStatus,
) -> Result<Vec<KeyPackageMetadata>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM keypackage_pool_metadata
         WHERE status = ?1 ORDER BY created_at, rowid"
    ))?;
    let rows = stmt.query_map([status.as_str()], RawRow::read)?;
    rows.map(|row| row?.parse()).collect()
}

/// How many rows are in `status`, from the count table (which this crate
/// keeps: see [`add_count`]).
pub(crate) fn count_by_status(conn: &Connection, status: KeyPackageStatus) -> Result<usize> {
    let mut stmt = conn.prepare_cached(
        "SELECT COALESCE(SUM(count), 0) FROM keypackage_pool_counts WHERE status = ?1",
    )?;
    let count: i64 = stmt.query_row([status.as_str()], |row| row.get(0))?;
    Ok(non_negative(count))
}

/// A count read back from SQLite as `usize`; counts are never negative.
pub(crate) fn non_negative(count: i64) -> usize {
    usize::try_from(count).unwrap_or_default()
}

/// Refs whose `not_after` is strictly before `now`.
pub(crate) fn expired_refs(conn: &Connection, now: i64) -> Result<Vec<Vec<u8>>> {
    let mut stmt = conn.prepare_cached(
        "SELECT keypackage_ref FROM keypackage_pool_metadata
         WHERE not_after < ?1 ORDER BY not_after, rowid",
    )?;
    let rows = stmt.query_map([now], |row| row.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Deletes the row; returns whether there was one.
pub(crate) fn delete(conn: &Connection, keypackage_ref: &[u8]) -> Result<bool> {
    let mut stmt =
        conn.prepare_cached("DELETE FROM keypackage_pool_metadata WHERE keypackage_ref = ?1")?;
    Ok(stmt.execute([keypackage_ref])? > 0)
}

/// What a transition records besides the status and its timestamp.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) enum TransitionDetails<'a> {
    /// Nothing but the status and its timestamp.
    #[default]
    StatusOnly,
    Reservation {
        reservation_id: &'a str,
        reserved_by: &'a str,
        expires_at: i64,
    },
    Spend {
        spent_by: &'a str,
        group_id: &'a [u8],
    },
}

/// Moves a row to `to`, stamping the transition's timestamp with `now`.
///
/// One conditional `UPDATE` does the move, so no other writer can slip in
/// between checking the current status and changing it. When it changes
/// nothing, the row is read to tell the caller why: no row is
/// [`Error::NotFound`], a row already in `to` is an idempotent success, and
/// anything else is [`Error::InvalidTransition`].
pub(crate) fn transition(
    conn: &Connection,
    keypackage_ref: &[u8],
    to: KeyPackageStatus,
    now: i64,
    details: TransitionDetails<'_>,
) -> Result<()> {
    check_ref(keypackage_ref)?;
    // The status names are this crate's own constants, so inlining them is safe.
    let from_list = to
        .predecessors()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    let (reservation_id, reserved_by, expires_at, spent_by, group_id) = match details {
        TransitionDetails::StatusOnly => (None, None, None, None, None),
        TransitionDetails::Reservation {
            reservation_id,
            reserved_by,
            expires_at,
        } => (
            Some(reservation_id),
            Some(reserved_by),
            Some(expires_at),
            None,
            None,
        ),
        TransitionDetails::Spend { spent_by, group_id } => {
            (None, None, None, Some(spent_by), Some(group_id))
        }
    };
    // Timestamps are only ever set, never cleared: a column keeps its old
    // value unless this transition is the one that writes it. Reservation and
    // spend details describe the latest reservation or spend, so a move to
    // `reserved` or `spent` replaces all of them (with NULL where not given):
    // a lapsed reservation's expiry must not cut a new one short.
    let sql = format!(
        "UPDATE keypackage_pool_metadata SET
             status = ?2,
             uploaded_at = CASE WHEN ?2 = 'uploaded' THEN ?3 ELSE uploaded_at END,
             reserved_at = CASE WHEN ?2 = 'reserved' THEN ?3 ELSE reserved_at END,
             spent_at = CASE WHEN ?2 = 'spent' THEN ?3 ELSE spent_at END,
             reservation_id = CASE WHEN ?2 = 'reserved' THEN ?4 ELSE reservation_id END,
             reserved_by = CASE WHEN ?2 = 'reserved' THEN ?5 ELSE reserved_by END,
             reservation_expires_at =
                 CASE WHEN ?2 = 'reserved' THEN ?6 ELSE reservation_expires_at END,
             spent_by = CASE WHEN ?2 = 'spent' THEN ?7 ELSE spent_by END,
             spent_group_id = CASE WHEN ?2 = 'spent' THEN ?8 ELSE spent_group_id END
         WHERE keypackage_ref = ?1 AND status IN ({from_list})"
    );
    let changed = conn.prepare_cached(&sql)?.execute(params![
        keypackage_ref,
        to.as_str(),
        now,
        reservation_id,
        reserved_by,
        expires_at,
        spent_by,
        group_id
    ])?;
    if changed > 0 {
        return Ok(());
    }
    match get(conn, keypackage_ref)? {
        None => Err(Error::not_found(keypackage_ref)),
        Some(row) if row.status == to => Ok(()),
        Some(row) => Err(Error::InvalidTransition {
            keypackage_ref: RefBytes::of(keypackage_ref),
            from: row.status,
            to,
        }),
    }
}

/// [`transition`] for a pool: a row of another scope is [`Error::NotFound`],
/// as if it were not there.
pub(crate) fn transition_in_scope(
    conn: &Connection,
    scope: &PoolScope,
    keypackage_ref: &[u8],
    to: KeyPackageStatus,
    now: i64,
) -> Result<()> {
    match get(conn, keypackage_ref)? {
        Some(row) if row.scope.as_ref() == Some(scope) => {
            transition(conn, keypackage_ref, to, now, TransitionDetails::StatusOnly)
        }
        _ => Err(Error::not_found(keypackage_ref)),
    }
}

/// A row as SQLite returns it, before its status text is parsed.
///
/// Parsing happens outside rusqlite's row callback so that a bad status is
/// this crate's [`Error::InvalidStatus`] naming the ref, not a generic
/// conversion error.
pub(crate) struct RawRow {
    metadata: KeyPackageMetadata,
    status_text: String,
}

impl RawRow {
    pub(crate) fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            status_text: row.get(1)?,
            metadata: KeyPackageMetadata {
                keypackage_ref: row.get(0)?,
                // Replaced by the parsed text in `parse`.
                status: KeyPackageStatus::Created,
                created_at: row.get(2)?,
                uploaded_at: row.get(3)?,
                reserved_at: row.get(4)?,
                spent_at: row.get(5)?,
                not_after: row.get(6)?,
                reservation_id: row.get(7)?,
                reservation_expires_at: row.get(8)?,
                reserved_by: row.get(9)?,
                spent_group_id: row.get(10)?,
                spent_by: row.get(11)?,
                last_resort: row.get(12)?,
                scope: PoolScope::from_columns(row.get(13)?, row.get(14)?, row.get(18)?),
                credential_type: Some(row.get::<_, u16>(15)?).filter(|t| *t != 0),
                offered_at: row.get(16)?,
                retired_until: row.get(17)?,
            },
        })
    }

    pub(crate) fn parse(self) -> Result<KeyPackageMetadata> {
        Ok(KeyPackageMetadata {
            status: parse_status(self.status_text, &self.metadata.keypackage_ref)?,
            ..self.metadata
        })
    }
}

/// A status read from the row of `keypackage_ref`; unknown text is
/// [`Error::InvalidStatus`] naming the ref.
pub(crate) fn parse_status(text: String, keypackage_ref: &[u8]) -> Result<KeyPackageStatus> {
    text.parse().map_err(|_| Error::InvalidStatus {
        text,
        keypackage_ref: Some(RefBytes::of(keypackage_ref)),
    })
}

/// Every ref with a metadata row.
pub(crate) fn all_refs(conn: &Connection) -> Result<Vec<Vec<u8>>> {
    let mut stmt = conn.prepare("SELECT keypackage_ref FROM keypackage_pool_metadata")?;
    let rows = stmt.query_map([], |row| row.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Whether the count table matches the rows.
pub(crate) fn counts_agree(conn: &Connection) -> Result<bool> {
    let disagreements: i64 = conn.query_row(
        "SELECT (SELECT COUNT(*) FROM (
                     SELECT status, last_resort, signature_key, ciphersuite, credential, COUNT(*)
                     FROM keypackage_pool_metadata
                     GROUP BY status, last_resort, signature_key, ciphersuite, credential
                     EXCEPT
                     SELECT status, last_resort, signature_key, ciphersuite, credential, count
                     FROM keypackage_pool_counts WHERE count != 0))
              + (SELECT COUNT(*) FROM (
                     SELECT status, last_resort, signature_key, ciphersuite, credential, count
                     FROM keypackage_pool_counts WHERE count != 0
                     EXCEPT
                     SELECT status, last_resort, signature_key, ciphersuite, credential, COUNT(*)
                     FROM keypackage_pool_metadata
                     GROUP BY status, last_resort, signature_key, ciphersuite, credential))",
        [],
        |row| row.get(0),
    )?;
    Ok(disagreements == 0)
}

/// Recounts the count table from the rows.
pub(crate) fn rebuild_counts(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "DELETE FROM keypackage_pool_counts;
         INSERT INTO keypackage_pool_counts
             (status, last_resort, signature_key, ciphersuite, credential, count)
         SELECT status, last_resort, signature_key, ciphersuite, credential, COUNT(*)
         FROM keypackage_pool_metadata
         GROUP BY status, last_resort, signature_key, ciphersuite, credential;",
    )?;
    Ok(())
}

/// Notes that `pending_upload` has handed the KeyPackage of
/// `keypackage_ref` to the application, unless it did before.
pub(crate) fn mark_offered(conn: &Connection, keypackage_ref: &[u8], now: i64) -> Result<()> {
    conn.prepare_cached(
        "UPDATE keypackage_pool_metadata SET offered_at = ?2
         WHERE keypackage_ref = ?1 AND offered_at IS NULL",
    )?
    .execute(params![keypackage_ref, now])?;
    Ok(())
}
