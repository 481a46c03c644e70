//! The `keypackage_pool_metadata` table: one row per pooled KeyPackage.
//!
//! This module owns the table's SQL. It decides what a row holds when a
//! bundle enters the pool ([`PoolEntry::from_bundle`]) and how rows move
//! through the lifecycle ([`transition`]); the storage hook, bulk generation
//! and adoption of existing bundles all go through these two.

use openmls::prelude::{KeyPackageBundle, KeyPackageRef};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::{
    error::{Error, RefBytes, Result},
    keypackage_ref::check_ref,
    status::KeyPackageStatus,
};

/// Everything the pool knows about one KeyPackage.
///
/// Timestamps are Unix seconds. The private keys are not here: they stay in
/// OpenMLS's own table, and are deleted from it in the same transaction as
/// this row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPackageMetadata {
    /// The raw KeyPackageRef ([`KeyPackageRef::as_slice`]), as a server sees it.
    pub keypackage_ref: Vec<u8>,
    /// Where the KeyPackage is in its lifecycle.
    pub status: KeyPackageStatus,
    /// When the row was created.
    pub created_at: i64,
    /// When it was last marked uploaded.
    pub uploaded_at: Option<i64>,
    /// When it was last reserved.
    pub reserved_at: Option<i64>,
    /// When it was marked spent.
    pub spent_at: Option<i64>,
    /// The end of the KeyPackage's lifetime.
    pub not_after: i64,
    /// The server's id for the latest reservation.
    pub reservation_id: Option<String>,
    /// When the latest reservation lapses.
    pub reservation_expires_at: Option<i64>,
    /// Who holds the latest reservation.
    pub reserved_by: Option<String>,
    /// The group the KeyPackage was used to join.
    pub spent_group_id: Option<Vec<u8>>,
    /// Who used it.
    pub spent_by: Option<String>,
    /// Whether it carries the last-resort extension (OpenMLS never deletes
    /// those on join).
    pub last_resort: bool,
}

/// What a stored KeyPackageBundle tells the pool: the facts its metadata
/// row is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolEntry {
    /// The raw KeyPackageRef.
    pub keypackage_ref: Vec<u8>,
    /// The end of the KeyPackage's lifetime, in Unix seconds.
    pub not_after: i64,
    /// Whether it carries the last-resort extension.
    pub last_resort: bool,
}

impl PoolEntry {
    /// Reads a bundle's expiry and last-resort flag; `keypackage_ref` is the
    /// ref OpenMLS stores it under.
    pub(crate) fn from_bundle(keypackage_ref: Vec<u8>, bundle: &KeyPackageBundle) -> Result<Self> {
        let key_package = bundle.key_package();
        let not_after = key_package.life_time().not_after();
        let not_after = i64::try_from(not_after).map_err(|_| Error::TimestampOverflow {
            keypackage_ref: RefBytes::of(&keypackage_ref),
            value: not_after,
        })?;
        Ok(Self {
            keypackage_ref,
            not_after,
            last_resort: key_package.last_resort(),
        })
    }

    /// Like [`from_bundle`](Self::from_bundle), with the ref as OpenMLS's type.
    pub(crate) fn from_ref_and_bundle(
        kp_ref: &KeyPackageRef,
        bundle: &KeyPackageBundle,
    ) -> Result<Self> {
        Self::from_bundle(kp_ref.as_slice().to_vec(), bundle)
    }
}

const COLUMNS: &str = "keypackage_ref, status, created_at, uploaded_at, reserved_at, spent_at, \
     not_after, reservation_id, reservation_expires_at, reserved_by, spent_group_id, spent_by, \
     last_resort";

/// Inserts a new row in `status`; a second row for the same ref is
/// [`Error::DuplicateRef`].
pub(crate) fn insert(
    conn: &Connection,
    entry: &PoolEntry,
    status: KeyPackageStatus,
    now: i64,
) -> Result<()> {
    check_ref(&entry.keypackage_ref)?;
    let mut stmt = conn.prepare_cached(
        "INSERT INTO keypackage_pool_metadata
             (keypackage_ref, status, created_at, not_after, last_resort)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    match stmt.execute(params![
        entry.keypackage_ref,
        status.as_str(),
        now,
        entry.not_after,
        entry.last_resort
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

/// How many rows are in `status`, from the trigger-kept counts.
pub(crate) fn count_by_status(conn: &Connection, status: KeyPackageStatus) -> Result<usize> {
    let mut stmt = conn.prepare_cached(
        "SELECT COALESCE(SUM(count), 0) FROM keypackage_pool_counts WHERE status = ?1",
    )?;
    let count: i64 = stmt.query_row([status.as_str()], |row| row.get(0))?;
    Ok(non_negative(count))
}

/// A count read back from SQLite as `usize`; counts are never negative.
fn non_negative(count: i64) -> usize {
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
    #[default]
    None,
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
        TransitionDetails::None => (None, None, None, None, None),
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

/// A row as SQLite returns it, before its status text is parsed.
///
/// Parsing happens outside rusqlite's row callback so that a bad status is
/// this crate's [`Error::InvalidStatus`] naming the ref, not a generic
/// conversion error.
struct RawRow {
    metadata: KeyPackageMetadata,
    status_text: String,
}

impl RawRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
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
            },
        })
    }

    fn parse(self) -> Result<KeyPackageMetadata> {
        Ok(KeyPackageMetadata {
            status: parse_status(self.status_text, &self.metadata.keypackage_ref)?,
            ..self.metadata
        })
    }
}

/// A status read from the row of `keypackage_ref`; unknown text is
/// [`Error::InvalidStatus`] naming the ref.
fn parse_status(text: String, keypackage_ref: &[u8]) -> Result<KeyPackageStatus> {
    text.parse().map_err(|_| Error::InvalidStatus {
        text,
        keypackage_ref: Some(RefBytes::of(keypackage_ref)),
    })
}

/// Statuses whose KeyPackages are still in play: their private keys may yet
/// be needed for a Welcome.
const LIVE: &str = "'created', 'uploaded', 'available', 'reserved'";

/// Statuses whose one-time KeyPackages a server can hand out.
const USABLE: &str = "'uploaded', 'available'";

/// Statuses of a last-resort KeyPackage the server holds.
const PUBLISHED: &str = "'uploaded', 'available', 'reserved'";

// In the statements below `+status` keeps SQLite from choosing the status
// index for an IN list, which would visit every row of those statuses; the
// covering indexes on (not_after, status, last_resort) and
// (last_resort, not_after, status) then bound each scan by time.

/// Whether a row (columns prefixed with `table`, such as `"m."`) is free to
/// prune once expired at `?1`: a reserved KeyPackage is held until its
/// reservation has lapsed too, so a Welcome built from it can still be
/// processed.
fn not_held(table: &str) -> String {
    format!(
        "NOT ({table}status = 'reserved'
              AND COALESCE({table}reservation_expires_at, {table}not_after) >= ?1)"
    )
}

/// A one-row CTE `soon` over the one-time KeyPackages that are not valid past
/// the horizon's end `?2`: per role, how many of them have expired at `?1`
/// (`*_expired`) and how many in all, expired or expiring (`*_soon`), and
/// how many expired ones may be pruned. One scan of the covering expiry
/// index, as long as what expires before the horizon's end.
fn soon_cte() -> String {
    format!(
        "soon AS (
             SELECT COALESCE(SUM(not_after < ?1 AND status = 'created'), 0) AS created_expired,
                    COALESCE(SUM(not_after < ?1 AND status IN ({USABLE})), 0) AS usable_expired,
                    COALESCE(SUM(not_after < ?1 AND status IN ({LIVE})), 0) AS live_expired,
                    COALESCE(SUM(status = 'created'), 0) AS created_soon,
                    COALESCE(SUM(status IN ({USABLE})), 0) AS usable_soon,
                    COALESCE(SUM(status = 'failed'), 0) AS failed_soon,
                    COALESCE(SUM(not_after < ?1 AND {}), 0) AS prunable
             FROM keypackage_pool_metadata
             WHERE last_resort = 0 AND not_after < ?2)",
        not_held("")
    )
}

/// How many one-time KeyPackages are in `statuses` (every status when
/// `None`), from the trigger-kept count table.
fn one_time_total(statuses: Option<&str>) -> String {
    let filter = statuses.map_or(String::new(), |s| format!(" AND status IN ({s})"));
    format!(
        "(SELECT COALESCE(SUM(count), 0) FROM keypackage_pool_counts
          WHERE last_resort = 0{filter})"
    )
}

/// The [`OneTimeCounts`] columns, in field order, over the `soon` CTE.
fn one_time_columns() -> [String; 7] {
    let created = one_time_total(Some("'created'"));
    let usable = one_time_total(Some(USABLE));
    [
        format!("{created} - soon.created_expired"),
        format!("{usable} - soon.usable_expired"),
        format!("{} - soon.live_expired", one_time_total(Some(LIVE))),
        one_time_total(None),
        format!("{created} - soon.created_soon"),
        format!("{usable} - soon.usable_soon"),
        format!("{} - soon.failed_soon", one_time_total(Some("'failed'"))),
    ]
}

/// The partial index of last-resort rows, named in queries because SQLite's
/// planner cannot tell how few rows it holds.
const BY_LAST_RESORT: &str = "INDEXED BY keypackage_pool_metadata_last_resort";

/// `FROM … WHERE …` selecting, as alias `m`, the rows [`prunable_refs`]
/// removes at `?1`, among one-time (`last_resort` false) or last-resort
/// (true) KeyPackages.
///
/// Expired means `not_after` before `?1`, and a reserved KeyPackage is held
/// (see [`not_held`]). An expired last-resort KeyPackage only goes once a
/// newer live one exists (later `not_after`, or the same and written later),
/// so the client never lacks a fallback.
fn prunable(last_resort: bool) -> String {
    let expired = format!("m.not_after < ?1 AND {}", not_held("m."));
    if last_resort {
        format!(
            "FROM keypackage_pool_metadata m {BY_LAST_RESORT}
             WHERE m.last_resort = 1 AND {expired} AND EXISTS (
                 SELECT 1 FROM keypackage_pool_metadata n {BY_LAST_RESORT}
                 WHERE n.last_resort = 1 AND +n.status IN ({LIVE})
                   AND (n.not_after > m.not_after
                        OR (n.not_after = m.not_after AND n.rowid > m.rowid)))"
        )
    } else {
        format!("FROM keypackage_pool_metadata m WHERE m.last_resort = 0 AND {expired}")
    }
}

/// The figures behind a pool health report, read in one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Summary {
    pub by_status: [usize; KeyPackageStatus::ALL.len()],
    pub counts: OneTimeCounts,
    pub last_resort: LastResortCounts,
    pub expiring_soon: usize,
    pub next_expiry: Option<i64>,
    pub prunable: usize,
}

/// One-time KeyPackages by role, at a moment `now` and a horizon's end.
///
/// "Fresh" ones are still valid at the horizon's end: only they count
/// towards the pool's target, so that KeyPackages about to expire are
/// replaced before they do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct OneTimeCounts {
    /// Unexpired and built, not yet uploaded.
    pub pending: usize,
    /// Unexpired and uploaded or available.
    pub usable: usize,
    /// Unexpired and created, uploaded, available or reserved.
    pub live: usize,
    /// Every one-time KeyPackage with a row (and so its private keys on
    /// disk), whatever its status or expiry: what the hard cap bounds.
    pub held: usize,
    /// Pending and still valid at the horizon's end.
    pub fresh_pending: usize,
    /// Usable and still valid at the horizon's end.
    pub fresh_usable: usize,
    /// Failed and still valid at the horizon's end: worth retrying.
    pub fresh_failed: usize,
}

impl OneTimeCounts {
    fn read(row: &Row<'_>, first: usize) -> rusqlite::Result<Self> {
        let count = |i: usize| row.get::<_, i64>(first + i).map(non_negative);
        Ok(Self {
            pending: count(0)?,
            usable: count(1)?,
            live: count(2)?,
            held: count(3)?,
            fresh_pending: count(4)?,
            fresh_usable: count(5)?,
            fresh_failed: count(6)?,
        })
    }
}

/// Last-resort KeyPackages by role, at a moment `now` and a horizon's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct LastResortCounts {
    /// Unexpired and live (created, uploaded, available or reserved).
    pub valid: usize,
    /// Unexpired and held by the server (uploaded, available or reserved).
    pub published: usize,
    /// Not yet uploaded and still valid at the horizon's end (one that
    /// expires sooner is replaced rather than uploaded).
    pub pending: usize,
    /// Live and still valid at the horizon's end.
    pub fresh: usize,
}

/// Unexpired one-time KeyPackages at `now`, with the horizon ending at
/// `horizon_end`, in one statement.
pub(crate) fn one_time_counts(
    conn: &Connection,
    now: i64,
    horizon_end: i64,
) -> Result<OneTimeCounts> {
    let sql = format!(
        "WITH {} SELECT {} FROM soon",
        soon_cte(),
        one_time_columns().join(", ")
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    Ok(stmt.query_row(params![now, horizon_end], |row| OneTimeCounts::read(row, 0))?)
}

/// How many one-time KeyPackages have a row, whatever their status or
/// expiry: what the hard cap bounds.
pub(crate) fn held_one_time(conn: &Connection) -> Result<usize> {
    let count: i64 = conn
        .prepare_cached(&format!("SELECT {}", one_time_total(None)))?
        .query_row([], |row| row.get(0))?;
    Ok(non_negative(count))
}

/// Reads every health figure at once. `horizon_end` bounds "expiring soon":
/// live rows with `now <= not_after < horizon_end`.
///
/// Counts come from the trigger-kept count table; the time-dependent
/// figures are range scans of the expiry indexes, so the statement's cost
/// follows how many KeyPackages are expired or expiring, not the pool's size.
pub(crate) fn summary(conn: &Connection, now: i64, horizon_end: i64) -> Result<Summary> {
    let mut columns: Vec<String> = KeyPackageStatus::ALL
        .iter()
        .map(|s| {
            format!(
                "(SELECT COALESCE(SUM(count), 0) FROM keypackage_pool_counts WHERE status = '{}')",
                s.as_str()
            )
        })
        .collect();
    columns.extend(one_time_columns());
    columns
        .extend(["valid", "published", "pending", "fresh"].map(|c| format!("COALESCE(lr.{c}, 0)")));
    columns.push(format!(
        "(SELECT COUNT(*) FROM keypackage_pool_metadata
          WHERE not_after >= ?1 AND not_after < ?2 AND +status IN ({LIVE}))"
    ));
    columns.push(format!(
        "(SELECT MIN(not_after) FROM keypackage_pool_metadata
          WHERE not_after >= ?1 AND +status IN ({LIVE}))"
    ));
    columns.push(format!(
        "soon.prunable + (SELECT COUNT(*) {})",
        prunable(true)
    ));
    let sql = format!(
        "WITH {}, lr AS (
             SELECT SUM(status IN ({LIVE})) AS valid,
                    SUM(status IN ({PUBLISHED})) AS published,
                    SUM(status = 'created' AND not_after >= ?2) AS pending,
                    SUM(status IN ({LIVE}) AND not_after >= ?2) AS fresh
             FROM keypackage_pool_metadata {BY_LAST_RESORT}
             WHERE last_resort = 1 AND not_after >= ?1)
         SELECT {} FROM soon, lr",
        soon_cte(),
        columns.join(",\n       ")
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    Ok(stmt.query_row(params![now, horizon_end], |row| {
        let count = |i: usize| row.get::<_, i64>(i).map(non_negative);
        let n = KeyPackageStatus::ALL.len();
        let mut by_status = [0; KeyPackageStatus::ALL.len()];
        for (i, slot) in by_status.iter_mut().enumerate() {
            *slot = count(i)?;
        }
        let lr = n + 7;
        Ok(Summary {
            by_status,
            counts: OneTimeCounts::read(row, n)?,
            last_resort: LastResortCounts {
                valid: count(lr)?,
                published: count(lr + 1)?,
                pending: count(lr + 2)?,
                fresh: count(lr + 3)?,
            },
            expiring_soon: count(lr + 4)?,
            next_expiry: row.get(lr + 5)?,
            prunable: count(lr + 6)?,
        })
    })?)
}

/// The refs [`prunable`] selects at `now`, soonest expired first.
pub(crate) fn prunable_refs(conn: &Connection, now: i64) -> Result<Vec<Vec<u8>>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT keypackage_ref FROM (
             SELECT m.keypackage_ref, m.not_after, m.rowid AS id {}
             UNION ALL
             SELECT m.keypackage_ref, m.not_after, m.rowid {})
         ORDER BY not_after, id",
        prunable(false),
        prunable(true)
    ))?;
    let rows = stmt.query_map([now], |row| row.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A last-resort KeyPackage as [`last_resort_rows`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LastResortRow {
    pub keypackage_ref: Vec<u8>,
    pub status: KeyPackageStatus,
    pub not_after: i64,
}

/// Last-resort KeyPackages still valid at `now` that are live, failed or
/// spent, longest-lived first (the later written first among equals).
pub(crate) fn last_resort_rows(conn: &Connection, now: i64) -> Result<Vec<LastResortRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT keypackage_ref, status, not_after FROM keypackage_pool_metadata {BY_LAST_RESORT}
         WHERE last_resort = 1 AND not_after >= ?1 AND +status IN ({LIVE}, 'failed', 'spent')
         ORDER BY not_after DESC, rowid DESC"
    ))?;
    let rows = stmt.query_map([now], |row| {
        Ok((
            row.get::<_, Vec<u8>>(0)?,
            row.get::<_, String>(1)?,
            row.get(2)?,
        ))
    })?;
    rows.map(|row| {
        let (keypackage_ref, status_text, not_after) = row?;
        Ok(LastResortRow {
            status: parse_status(status_text, &keypackage_ref)?,
            keypackage_ref,
            not_after,
        })
    })
    .collect()
}

/// The `created` KeyPackages (last-resort ones included) still valid at
/// `now`, oldest first: what may be uploaded.
pub(crate) fn uploadable(conn: &Connection, now: i64) -> Result<Vec<KeyPackageMetadata>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM keypackage_pool_metadata
         WHERE status = 'created' AND not_after >= ?1 ORDER BY created_at, rowid"
    ))?;
    let rows = stmt.query_map([now], RawRow::read)?;
    rows.map(|row| row?.parse()).collect()
}

// The statement below moves failed rows back to created without going
// through `transition`; the lifecycle must allow that move.
const _: () = assert!(KeyPackageStatus::Failed.can_transition_to(KeyPackageStatus::Created));

/// Moves up to `limit` failed one-time KeyPackages still valid at `valid_at`
/// back to `created`, the longest-lived first, so they are uploaded again
/// rather than replaced; returns their refs.
pub(crate) fn retry_failed(conn: &Connection, limit: usize, valid_at: i64) -> Result<Vec<Vec<u8>>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare_cached(
        "UPDATE keypackage_pool_metadata SET status = 'created'
         WHERE keypackage_ref IN (
             SELECT keypackage_ref FROM keypackage_pool_metadata
             WHERE status = 'failed' AND last_resort = 0 AND not_after >= ?1
             ORDER BY not_after DESC, rowid DESC LIMIT ?2)
         RETURNING keypackage_ref",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![valid_at, limit], |row| row.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

// The statement below moves reserved rows to available without going through
// `transition`; the lifecycle must allow that move.
const _: () = assert!(KeyPackageStatus::Reserved.can_transition_to(KeyPackageStatus::Available));

/// Puts reserved rows whose reservation lapsed before `now` back to
/// `available`; returns their refs. A reservation recorded without an expiry
/// never lapses.
pub(crate) fn release_lapsed_reservations(conn: &Connection, now: i64) -> Result<Vec<Vec<u8>>> {
    let mut stmt = conn.prepare_cached(
        "UPDATE keypackage_pool_metadata SET status = 'available'
         WHERE status = 'reserved' AND reservation_expires_at < ?1
         RETURNING keypackage_ref",
    )?;
    let rows = stmt.query_map([now], |row| row.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Every ref with a metadata row.
pub(crate) fn all_refs(conn: &Connection) -> Result<Vec<Vec<u8>>> {
    let mut stmt = conn.prepare("SELECT keypackage_ref FROM keypackage_pool_metadata")?;
    let rows = stmt.query_map([], |row| row.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Whether the trigger-kept count table matches the rows.
pub(crate) fn counts_agree(conn: &Connection) -> Result<bool> {
    let disagreements: i64 = conn.query_row(
        "SELECT (SELECT COUNT(*) FROM (
                     SELECT status, last_resort, COUNT(*) FROM keypackage_pool_metadata
                     GROUP BY status, last_resort
                     EXCEPT
                     SELECT status, last_resort, count FROM keypackage_pool_counts
                     WHERE count != 0))
              + (SELECT COUNT(*) FROM (
                     SELECT status, last_resort, count FROM keypackage_pool_counts
                     WHERE count != 0
                     EXCEPT
                     SELECT status, last_resort, COUNT(*) FROM keypackage_pool_metadata
                     GROUP BY status, last_resort))",
        [],
        |row| row.get(0),
    )?;
    Ok(disagreements == 0)
}

/// Recounts the count table from the rows.
pub(crate) fn rebuild_counts(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "DELETE FROM keypackage_pool_counts;
         INSERT INTO keypackage_pool_counts (status, last_resort, count)
         SELECT status, last_resort, COUNT(*) FROM keypackage_pool_metadata
         GROUP BY status, last_resort;",
    )?;
    Ok(())
}
