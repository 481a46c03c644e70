//! The queries a [`KeyPackagePool`](crate::KeyPackagePool) runs on its own
//! scope: counts, health, pruning, the last-resort KeyPackages, uploads,
//! retries and reservations.
//!
//! Every statement here names one scope (`:key`, `:suite`, `:credential`)
//! and reads it through the scope's expiry index or the count table, so its
//! cost follows how many of that pool's KeyPackages are expired or
//! expiring, not the database's size. The hard cap and the stale
//! KeyPackages (another credential on the same key and ciphersuite) read
//! the range of the key and ciphersuite. Times are `:now` and
//! `:horizon_end`.

use rusqlite::{Connection, Row, ToSql};

use super::{non_negative, parse_status, KeyPackageMetadata, PoolScope, RawRow, COLUMNS};
use crate::{error::Result, status::KeyPackageStatus};

/// Statuses whose KeyPackages are still in play: their private keys may yet
/// be needed for a Welcome.
pub(crate) const LIVE: &str = "'created', 'uploaded', 'available', 'reserved'";

/// Statuses whose one-time KeyPackages a server can hand out.
pub(crate) const USABLE: &str = "'uploaded', 'available'";

/// Statuses of a last-resort KeyPackage the server holds.
pub(crate) const PUBLISHED: &str = "'uploaded', 'available', 'reserved'";

/// The scope's expiry index, named because the planner may otherwise pick
/// the whole-database one.
const BY_SCOPE: &str = "INDEXED BY keypackage_pool_metadata_scope_expiry";

/// The named parameters of a statement here: the scope (`:key`, `:suite`,
/// `:credential`) and the times or limits it reads at (such as `:now`).
fn bind<'a>(
    scope: &'a PoolScope,
    values: &'a [(&'static str, i64)],
) -> Vec<(&'static str, &'a dyn ToSql)> {
    let mut params: Vec<(&'static str, &'a dyn ToSql)> = vec![
        (":key", &scope.signature_key),
        (":suite", &scope.ciphersuite),
        (":credential", &scope.credential),
    ];
    params.extend(
        values
            .iter()
            .map(|(name, value)| (*name, value as &dyn ToSql)),
    );
    params
}

/// The named parameters of a statement over the scope's signature key and
/// ciphersuite only ([`of_key_and_suite`]).
fn bind_key_and_suite(scope: &PoolScope) -> [(&'static str, &dyn ToSql); 2] {
    [
        (":key", &scope.signature_key),
        (":suite", &scope.ciphersuite),
    ]
}

/// `table`'s rows (columns prefixed with `table`, such as `"m."`) in the
/// scope `:key`, `:suite`, `:credential`.
fn in_scope(table: &str) -> String {
    format!(
        "{} AND {table}credential = :credential",
        of_key_and_suite(table)
    )
}

/// `table`'s rows of the scope's signature key and ciphersuite, whatever
/// their credential: what the hard cap bounds.
fn of_key_and_suite(table: &str) -> String {
    format!("{table}signature_key = :key AND {table}ciphersuite = :suite")
}

/// `table`'s rows of the scope's signature key and ciphersuite under
/// another credential (or one not known), not yet retired: stale for the
/// scope's pool. The credential is excluded as two ranges of the scope
/// index, so the pool's own KeyPackages are never read.
fn stale(table: &str) -> String {
    format!(
        "{} AND ({table}credential < :credential OR {table}credential > :credential)
         AND {table}retired_until IS NULL",
        of_key_and_suite(table)
    )
}

/// How many KeyPackages are stale ([`stale`]) for the scope whose signature
/// key, ciphersuite and credential are the SQL expressions `key`, `suite`
/// and `credential` (named parameters, or an outer query's columns): those
/// of its key and ciphersuite the count table holds under other
/// credentials, less those of them in their grace window (a few, read
/// through the window's index). Reads no row of the scope's own. Nothing is
/// stale for a scope whose credential is not known (the empty blob, under
/// which withdrawals recorded before credentials are listed).
pub(crate) fn stale_total(key: &str, suite: &str, credential: &str) -> String {
    format!(
        "(CASE WHEN {credential} = x'' THEN 0 ELSE
          (SELECT COALESCE(SUM(count), 0) FROM keypackage_pool_counts
           WHERE signature_key = {key} AND ciphersuite = {suite}
             AND credential != {credential})
          - (SELECT COUNT(*) FROM keypackage_pool_metadata
                 INDEXED BY keypackage_pool_metadata_retired
             WHERE retired_until IS NOT NULL
               AND signature_key = {key} AND ciphersuite = {suite}
               AND credential != {credential}) END)"
    )
}

/// Whether a row is free to prune once expired at `:now`: a reserved
/// KeyPackage is held until its reservation has lapsed too, so a Welcome
/// built from it can still be processed; one in its grace window stays
/// until the window ends, when it goes by itself.
fn not_held(table: &str) -> String {
    format!(
        "NOT ({table}status = 'reserved'
              AND COALESCE({table}reservation_expires_at, {table}not_after) >= :now)
         AND {table}retired_until IS NULL"
    )
}

/// A one-row CTE `soon` over the scope's one-time KeyPackages that are not
/// valid past `:horizon_end`: per role, how many have expired at `:now`
/// (`*_expired`) and how many in all, expired or expiring (`*_soon`), and
/// how many expired ones may be pruned.
fn soon_cte() -> String {
    format!(
        "soon AS (
             SELECT COALESCE(SUM(not_after < :now AND status = 'created'), 0) AS created_expired,
                    COALESCE(SUM(not_after < :now AND status IN ({USABLE})), 0) AS usable_expired,
                    COALESCE(SUM(not_after < :now AND status IN ({LIVE})), 0) AS live_expired,
                    COALESCE(SUM(status = 'created'), 0) AS created_soon,
                    COALESCE(SUM(status IN ({USABLE})), 0) AS usable_soon,
                    COALESCE(SUM(status = 'failed'), 0) AS failed_soon,
                    COALESCE(SUM(not_after < :now AND {}), 0) AS prunable
             FROM keypackage_pool_metadata {BY_SCOPE}
             WHERE {} AND last_resort = 0 AND not_after < :horizon_end)",
        not_held(""),
        in_scope("")
    )
}

/// How many of the scope's one-time KeyPackages are in `statuses`, from the
/// count table.
fn one_time_total(statuses: &str) -> String {
    format!(
        "(SELECT COALESCE(SUM(count), 0) FROM keypackage_pool_counts
          WHERE {} AND last_resort = 0 AND status IN ({statuses}))",
        in_scope("")
    )
}

/// How many one-time KeyPackages of the scope's signature key and
/// ciphersuite have their keys on disk, whatever their credential, status
/// or expiry, from the count table: what the hard cap bounds, so that a
/// renewed credential cannot double the keys on disk.
fn held_total() -> String {
    format!(
        "(SELECT COALESCE(SUM(count), 0) FROM keypackage_pool_counts
          WHERE {} AND last_resort = 0)",
        of_key_and_suite("")
    )
}

/// The [`OneTimeCounts`] columns over the `soon` CTE, each named after its
/// field ([`OneTimeCounts::read`] reads them by name).
fn one_time_columns() -> [String; 7] {
    let created = one_time_total("'created'");
    let usable = one_time_total(USABLE);
    [
        format!("{created} - soon.created_expired AS pending"),
        format!("{usable} - soon.usable_expired AS usable"),
        format!("{} - soon.live_expired AS live", one_time_total(LIVE)),
        format!("{} AS held", held_total()),
        format!("{created} - soon.created_soon AS fresh_pending"),
        format!("{usable} - soon.usable_soon AS fresh_usable"),
        format!(
            "{} - soon.failed_soon AS fresh_failed",
            one_time_total("'failed'")
        ),
    ]
}

/// `FROM … WHERE …` selecting, as alias `m`, the scope's rows
/// [`prunable_refs`] removes at `:now`, among one-time (`last_resort` false)
/// or last-resort (true) KeyPackages.
///
/// Expired means `not_after` before `:now`, and a reserved KeyPackage is
/// held (see [`not_held`]). An expired last-resort KeyPackage only goes once
/// a newer live one of the scope exists (later `not_after`, or the same and
/// written later), so the client never lacks a fallback.
fn prunable(last_resort: bool) -> String {
    let expired = format!(
        "{} AND m.not_after < :now AND {}",
        in_scope("m."),
        not_held("m.")
    );
    if last_resort {
        format!(
            "FROM keypackage_pool_metadata m {BY_SCOPE}
             WHERE m.last_resort = 1 AND {expired} AND EXISTS (
                 SELECT 1 FROM keypackage_pool_metadata n {BY_SCOPE}
                 WHERE {} AND n.last_resort = 1 AND +n.status IN ({LIVE})
                   AND (n.not_after > m.not_after
                        OR (n.not_after = m.not_after AND n.rowid > m.rowid)))",
            in_scope("n.")
        )
    } else {
        format!("FROM keypackage_pool_metadata m {BY_SCOPE} WHERE m.last_resort = 0 AND {expired}")
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
    pub stale: usize,
}

/// One-time KeyPackages of a scope by role, at a moment `now` and a
/// horizon's end.
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
    /// Every one-time KeyPackage of the scope's signature key and
    /// ciphersuite with a row (and so its private keys on disk), whatever
    /// its credential, status or expiry: what the hard cap bounds.
    pub held: usize,
    /// Pending and still valid at the horizon's end.
    pub fresh_pending: usize,
    /// Usable and still valid at the horizon's end.
    pub fresh_usable: usize,
    /// Failed and still valid at the horizon's end: worth retrying.
    pub fresh_failed: usize,
}

impl OneTimeCounts {
    /// Reads the columns [`one_time_columns`] names.
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        let count = |name: &str| count_named(row, name);
        Ok(Self {
            pending: count("pending")?,
            usable: count("usable")?,
            live: count("live")?,
            held: count("held")?,
            fresh_pending: count("fresh_pending")?,
            fresh_usable: count("fresh_usable")?,
            fresh_failed: count("fresh_failed")?,
        })
    }
}

/// The count in the column named `name`.
fn count_named(row: &Row<'_>, name: &str) -> rusqlite::Result<usize> {
    row.get::<_, i64>(name).map(non_negative)
}

/// The name of the column that counts a scope's KeyPackages in `status`.
fn status_column(status: KeyPackageStatus) -> String {
    format!("status_{}", status.as_str())
}

/// Last-resort KeyPackages of a scope by role, at a moment `now` and a
/// horizon's end.
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

/// The scope's one-time KeyPackages at `now`, with the horizon ending at
/// `horizon_end`, in one statement.
pub(crate) fn one_time_counts(
    conn: &Connection,
    scope: &PoolScope,
    now: i64,
    horizon_end: i64,
) -> Result<OneTimeCounts> {
    let sql = format!(
        "WITH {} SELECT {} FROM soon",
        soon_cte(),
        one_time_columns().join(", ")
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    Ok(stmt.query_row(
        &*bind(scope, &[(":now", now), (":horizon_end", horizon_end)]),
        OneTimeCounts::read,
    )?)
}

/// How many one-time KeyPackages of the scope's signature key and
/// ciphersuite have a row, whatever their credential, status or expiry:
/// what the hard cap bounds.
pub(crate) fn held_one_time(conn: &Connection, scope: &PoolScope) -> Result<usize> {
    let count: i64 = conn
        .prepare_cached(&format!("SELECT {}", held_total()))?
        .query_row(&bind_key_and_suite(scope), |row| row.get(0))?;
    Ok(non_negative(count))
}

/// Reads every health figure of the scope at once. `horizon_end` bounds
/// "expiring soon": live rows with `now <= not_after < horizon_end`.
pub(crate) fn summary(
    conn: &Connection,
    scope: &PoolScope,
    now: i64,
    horizon_end: i64,
) -> Result<Summary> {
    // Every column is named, and read back by its name below.
    let mut columns: Vec<String> = KeyPackageStatus::ALL
        .iter()
        .map(|s| {
            format!(
                "(SELECT COALESCE(SUM(count), 0) FROM keypackage_pool_counts
                  WHERE {} AND status = '{}') AS {}",
                in_scope(""),
                s.as_str(),
                status_column(*s)
            )
        })
        .collect();
    columns.extend(one_time_columns());
    columns.extend(
        ["valid", "published", "pending", "fresh"]
            .map(|c| format!("COALESCE(lr.{c}, 0) AS lr_{c}")),
    );
    columns.push(format!(
        "(SELECT COUNT(*) FROM keypackage_pool_metadata {BY_SCOPE}
          WHERE {} AND last_resort IN (0, 1) AND not_after >= :now AND not_after < :horizon_end
            AND +status IN ({LIVE})) AS expiring_soon",
        in_scope("")
    ));
    columns.push(format!(
        "(SELECT MIN(not_after) FROM keypackage_pool_metadata {BY_SCOPE}
          WHERE {} AND last_resort IN (0, 1) AND not_after >= :now AND +status IN ({LIVE}))
          AS next_expiry",
        in_scope("")
    ));
    columns.push(format!(
        "soon.prunable + (SELECT COUNT(*) {}) AS prunable",
        prunable(true)
    ));
    columns.push(format!(
        "{} AS stale",
        stale_total(":key", ":suite", ":credential")
    ));
    let sql = format!(
        "WITH {}, lr AS (
             SELECT SUM(status IN ({LIVE})) AS valid,
                    SUM(status IN ({PUBLISHED})) AS published,
                    SUM(status = 'created' AND not_after >= :horizon_end) AS pending,
                    SUM(status IN ({LIVE}) AND not_after >= :horizon_end) AS fresh
             FROM keypackage_pool_metadata {BY_SCOPE}
             WHERE {} AND last_resort = 1 AND not_after >= :now)
         SELECT {} FROM soon, lr",
        soon_cte(),
        in_scope(""),
        columns.join(",\n       ")
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    Ok(stmt.query_row(
        &*bind(scope, &[(":now", now), (":horizon_end", horizon_end)]),
        |row| {
            let count = |name: &str| count_named(row, name);
            let mut by_status = [0; KeyPackageStatus::ALL.len()];
            for (slot, status) in by_status.iter_mut().zip(KeyPackageStatus::ALL) {
                *slot = count(&status_column(status))?;
            }
            Ok(Summary {
                by_status,
                counts: OneTimeCounts::read(row)?,
                last_resort: LastResortCounts {
                    valid: count("lr_valid")?,
                    published: count("lr_published")?,
                    pending: count("lr_pending")?,
                    fresh: count("lr_fresh")?,
                },
                expiring_soon: count("expiring_soon")?,
                next_expiry: row.get("next_expiry")?,
                prunable: count("prunable")?,
                stale: count("stale")?,
            })
        },
    )?)
}

/// The refs [`prunable`] selects in the scope at `now`, soonest expired
/// first.
pub(crate) fn prunable_refs(
    conn: &Connection,
    scope: &PoolScope,
    now: i64,
) -> Result<Vec<Vec<u8>>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT keypackage_ref FROM (
             SELECT m.keypackage_ref, m.not_after, m.rowid AS id {}
             UNION ALL
             SELECT m.keypackage_ref, m.not_after, m.rowid {})
         ORDER BY not_after, id",
        prunable(false),
        prunable(true)
    ))?;
    let rows = stmt.query_map(&*bind(scope, &[(":now", now)]), |row| row.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A last-resort KeyPackage as [`last_resort_rows`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LastResortRow {
    pub keypackage_ref: Vec<u8>,
    pub status: KeyPackageStatus,
    pub not_after: i64,
}

/// The scope's last-resort KeyPackages still valid at `now` that are live,
/// failed or spent, longest-lived first (the later written first among
/// equals).
pub(crate) fn last_resort_rows(
    conn: &Connection,
    scope: &PoolScope,
    now: i64,
) -> Result<Vec<LastResortRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT keypackage_ref, status, not_after FROM keypackage_pool_metadata {BY_SCOPE}
         WHERE {} AND last_resort = 1 AND not_after >= :now
           AND +status IN ({LIVE}, 'failed', 'spent')
         ORDER BY not_after DESC, rowid DESC",
        in_scope("")
    ))?;
    let rows = stmt.query_map(&*bind(scope, &[(":now", now)]), |row| {
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

/// The scope's `created` KeyPackages (last-resort ones included) still
/// valid at `now`, oldest first: what may be uploaded.
pub(crate) fn uploadable(
    conn: &Connection,
    scope: &PoolScope,
    now: i64,
) -> Result<Vec<KeyPackageMetadata>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM keypackage_pool_metadata {BY_SCOPE}
         WHERE {} AND last_resort IN (0, 1) AND not_after >= :now AND status = 'created'
         ORDER BY created_at, rowid",
        in_scope("")
    ))?;
    let rows = stmt.query_map(&*bind(scope, &[(":now", now)]), RawRow::read)?;
    rows.map(|row| row?.parse()).collect()
}

// The statement below moves failed rows back to created without going
// through `transition`; the lifecycle must allow that move.
const _: () = assert!(KeyPackageStatus::Failed.can_transition_to(KeyPackageStatus::Created));

/// Moves up to `limit` of the scope's failed one-time KeyPackages still
/// valid at `valid_at` back to `created`, the longest-lived first, so they
/// are uploaded again rather than replaced; returns their refs.
pub(crate) fn retry_failed(
    conn: &Connection,
    scope: &PoolScope,
    limit: usize,
    valid_at: i64,
) -> Result<Vec<Vec<u8>>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare_cached(&format!(
        "UPDATE keypackage_pool_metadata SET status = 'created'
         WHERE keypackage_ref IN (
             SELECT keypackage_ref FROM keypackage_pool_metadata {BY_SCOPE}
             WHERE {} AND last_resort = 0 AND not_after >= :now AND status = 'failed'
             ORDER BY not_after DESC, rowid DESC LIMIT :limit)
         RETURNING keypackage_ref",
        in_scope("")
    ))?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(
        &*bind(scope, &[(":now", valid_at), (":limit", limit)]),
        |row| row.get(0),
    )?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

// The statement below moves reserved rows to available without going through
// `transition`; the lifecycle must allow that move.
const _: () = assert!(KeyPackageStatus::Reserved.can_transition_to(KeyPackageStatus::Available));

/// Puts the scope's reserved rows whose reservation lapsed before `now`
/// back to `available`; returns their refs. A reservation recorded without
/// an expiry never lapses.
pub(crate) fn release_lapsed_reservations(
    conn: &Connection,
    scope: &PoolScope,
    now: i64,
) -> Result<Vec<Vec<u8>>> {
    let mut stmt = conn.prepare_cached(&format!(
        "UPDATE keypackage_pool_metadata SET status = 'available'
         WHERE keypackage_ref IN (
             SELECT keypackage_ref FROM keypackage_pool_metadata
                 INDEXED BY keypackage_pool_metadata_status_created_at
             WHERE status = 'reserved' AND {} AND reservation_expires_at < :now)
         RETURNING keypackage_ref",
        in_scope("")
    ))?;
    let rows = stmt.query_map(&*bind(scope, &[(":now", now)]), |row| row.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// How many one-time KeyPackages of the scope's signature key and
/// ciphersuite, under any credential, are in their grace window: all of
/// them count in the hard cap.
pub(crate) fn in_grace(conn: &Connection, scope: &PoolScope) -> Result<usize> {
    let count: i64 = conn
        .prepare_cached(&format!(
            "SELECT COUNT(*) FROM keypackage_pool_metadata
                 INDEXED BY keypackage_pool_metadata_retired
             WHERE retired_until IS NOT NULL AND last_resort = 0 AND {}",
            of_key_and_suite("")
        ))?
        .query_row(&bind_key_and_suite(scope), |row| row.get(0))?;
    Ok(non_negative(count))
}

/// The refs of the KeyPackages stale for the scope's pool (another
/// credential on its signature key and ciphersuite, not yet retired),
/// one-time ones first, soonest expiring first.
pub(crate) fn stale_refs(conn: &Connection, scope: &PoolScope) -> Result<Vec<Vec<u8>>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT keypackage_ref FROM keypackage_pool_metadata {BY_SCOPE}
         WHERE {}
         ORDER BY last_resort, not_after, rowid",
        stale("")
    ))?;
    let rows = stmt.query_map(&*bind(scope, &[]), |row| row.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
