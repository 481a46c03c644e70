//! Pool scopes: which signature key, credential and ciphersuite each
//! KeyPackage is for.
//!
//! A messaging client publishes KeyPackages per identity and per
//! ciphersuite, so a database holds one pool per (signature key,
//! ciphersuite, credential), its [`PoolScope`]. Every
//! [`KeyPackagePool`](crate::KeyPackagePool) operation sees only its own
//! scope. This module holds the SQL that lists the scopes present, finds the
//! KeyPackages of a scope or a whole signature key (for removing them), and
//! fills in the scope of rows written before the database knew about
//! scopes.

use openmls::prelude::{KeyPackageBundle, KeyPackageRef};
use openmls_sqlite_storage::SqliteStorageProvider;
use openmls_traits::storage::StorageProvider as _;
use rusqlite::{named_params, params, Connection};

use crate::{
    codec::PoolCodec,
    error::Result,
    keypackage_ref::key_package_ref_from_bytes,
    metadata::{self, non_negative, PoolEntry, PoolScope, LIVE, PUBLISHED, USABLE},
};

/// One scope present in the database, with its counts, as
/// [`PoolStorage::scopes`](crate::PoolStorage::scopes) lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeSummary {
    /// Which pool. Withdrawals recorded before the database kept
    /// credentials (their KeyPackages gone, and the credential with them)
    /// are listed under their key and ciphersuite with an empty
    /// `credential`, a scope no pool has; its `stale` is 0.
    pub scope: PoolScope,
    /// One-time KeyPackages of this scope's credential with their keys on
    /// disk, whatever their status. The pool's hard cap bounds these
    /// together with the one-time ones of its key and ciphersuite under
    /// other credentials, so the pool's
    /// [`PoolHealth::held`](crate::PoolHealth::held) is the sum over the
    /// scopes of its key and ciphersuite.
    pub held: usize,
    /// Unexpired one-time KeyPackages waiting for upload.
    pub pending: usize,
    /// Unexpired one-time KeyPackages a server can hand out (uploaded or
    /// available).
    pub usable: usize,
    /// Whether a server holds a valid last-resort KeyPackage of the scope.
    pub has_last_resort: bool,
    /// The earliest `not_after` among its unexpired live KeyPackages.
    pub next_expiry: Option<i64>,
    /// Withdrawals of its KeyPackages the server has not yet confirmed
    /// (listed even after the scope's KeyPackages are all gone).
    pub pending_withdrawals: usize,
    /// One-time KeyPackages in their grace window, counted in `held`.
    pub in_grace: usize,
    /// KeyPackages (last-resort ones included) of the same signature key
    /// and ciphersuite under another credential, not yet retired: stale for
    /// this scope's pool, which never hands them out and retires them
    /// ([`KeyPackagePool::retire_stale_credentials`](crate::KeyPackagePool::retire_stale_credentials)).
    /// After a renewal, the old credential's KeyPackages are stale for the
    /// new credential's scope (and the new ones for the old scope, which
    /// nobody manages any more).
    pub stale: usize,
}

/// Every scope with at least one row or pending withdrawal, in one
/// statement: counts from the count table, per scope a range read of its
/// expiry index for what has expired at `now`, its withdrawals, and its
/// KeyPackages in their grace window.
pub(crate) fn list(conn: &Connection, now: i64) -> Result<Vec<ScopeSummary>> {
    // Correlated on the grouped scope; each subquery is a range of the
    // scope's expiry index.
    let in_scope = "m.signature_key = c.signature_key AND m.ciphersuite = c.ciphersuite
                    AND m.credential = c.credential";
    let stale = metadata::stale_total("s.signature_key", "s.ciphersuite", "s.credential");
    let sql = format!(
        "WITH counted AS (
             SELECT c.signature_key, c.ciphersuite, c.credential,
                    SUM(CASE WHEN c.last_resort = 0 THEN c.count ELSE 0 END) AS held,
                    SUM(CASE WHEN c.last_resort = 0 AND c.status = 'created'
                             THEN c.count ELSE 0 END)
                      - (SELECT COUNT(*) FROM keypackage_pool_metadata m
                         WHERE {in_scope} AND m.last_resort = 0 AND m.not_after < :now
                           AND m.status = 'created') AS pending,
                    SUM(CASE WHEN c.last_resort = 0 AND c.status IN ({USABLE})
                             THEN c.count ELSE 0 END)
                      - (SELECT COUNT(*) FROM keypackage_pool_metadata m
                         WHERE {in_scope} AND m.last_resort = 0 AND m.not_after < :now
                           AND m.status IN ({USABLE})) AS usable,
                    EXISTS (SELECT 1 FROM keypackage_pool_metadata m
                            WHERE {in_scope} AND m.last_resort = 1 AND m.not_after >= :now
                              AND m.status IN ({PUBLISHED})) AS has_last_resort,
                    (SELECT MIN(m.not_after) FROM keypackage_pool_metadata m
                     WHERE {in_scope} AND m.last_resort IN (0, 1) AND m.not_after >= :now
                       AND m.status IN ({LIVE})) AS next_expiry
             FROM keypackage_pool_counts c
             WHERE c.signature_key != x'' AND c.ciphersuite != 0 AND c.credential != x''
             GROUP BY c.signature_key, c.ciphersuite, c.credential
             HAVING SUM(c.count) > 0),
         outbox AS (
             SELECT signature_key, ciphersuite, credential, COUNT(*) AS withdrawals
             FROM keypackage_pool_withdrawals
             WHERE signature_key != x'' AND ciphersuite != 0
             GROUP BY signature_key, ciphersuite, credential),
         scopes AS (
             SELECT signature_key, ciphersuite, credential FROM counted
             UNION SELECT signature_key, ciphersuite, credential FROM outbox)
         SELECT s.signature_key, s.ciphersuite, s.credential,
                COALESCE(c.held, 0) AS held, COALESCE(c.pending, 0) AS pending,
                COALESCE(c.usable, 0) AS usable,
                COALESCE(c.has_last_resort, 0) AS has_last_resort,
                c.next_expiry AS next_expiry,
                COALESCE(o.withdrawals, 0) AS withdrawals,
                (SELECT COUNT(*) FROM keypackage_pool_metadata m
                     INDEXED BY keypackage_pool_metadata_retired
                 WHERE m.retired_until IS NOT NULL AND m.last_resort = 0
                   AND m.signature_key = s.signature_key AND m.ciphersuite = s.ciphersuite
                   AND m.credential = s.credential)
                  AS in_grace,
                {stale} AS stale
         FROM scopes s
         LEFT JOIN counted c USING (signature_key, ciphersuite, credential)
         LEFT JOIN outbox o USING (signature_key, ciphersuite, credential)
         ORDER BY s.signature_key, s.ciphersuite, s.credential"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(named_params! {":now": now}, |row| {
        let count = |name: &str| row.get::<_, i64>(name).map(non_negative);
        Ok(ScopeSummary {
            scope: PoolScope {
                signature_key: row.get("signature_key")?,
                ciphersuite: row.get("ciphersuite")?,
                credential: row.get("credential")?,
            },
            held: count("held")?,
            pending: count("pending")?,
            usable: count("usable")?,
            has_last_resort: row.get("has_last_resort")?,
            next_expiry: row.get("next_expiry")?,
            pending_withdrawals: count("withdrawals")?,
            in_grace: count("in_grace")?,
            stale: count("stale")?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The refs of every KeyPackage in `scope`, or of every scope of
/// `signature_key` when `scope` is `None`.
pub(crate) fn refs_of(
    conn: &Connection,
    signature_key: &[u8],
    scope: Option<&PoolScope>,
) -> Result<Vec<Vec<u8>>> {
    let (suite, credential) = scope.map_or((None, None), |s| {
        (Some(s.ciphersuite), Some(s.credential.as_slice()))
    });
    let mut stmt = conn.prepare_cached(
        "SELECT keypackage_ref FROM keypackage_pool_metadata
         WHERE signature_key = ?1 AND (?2 IS NULL OR (ciphersuite = ?2 AND credential = ?3))
         ORDER BY ciphersuite, credential, not_after",
    )?;
    let rows = stmt.query_map(params![signature_key, suite, credential], |row| row.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Fills in the scope (credential included) and credential type of every
/// row that lacks any of it, from its stored bundle; returns the refs filled. A row whose bundle is missing
/// or cannot be decoded keeps no scope: it is never guessed, and
/// [`PoolStorage::verify`] reports the bundle. Any other failure (the
/// database itself) is an error.
pub(crate) fn backfill<C: PoolCodec>(conn: &Connection) -> Result<Vec<Vec<u8>>> {
    let storage = SqliteStorageProvider::<C, &Connection>::new(conn);
    let mut filled = Vec::new();
    for raw in metadata::unscoped_refs(conn)? {
        // A ref that is not a KeyPackageRef has no bundle to read.
        let Ok(kp_ref) = key_package_ref_from_bytes(&raw) else {
            continue;
        };
        let bundle = match storage.key_package::<KeyPackageRef, KeyPackageBundle>(&kp_ref) {
            Ok(Some(bundle)) => bundle,
            Ok(None) | Err(rusqlite::Error::FromSqlConversionFailure(..)) => continue,
            Err(e) => return Err(e.into()),
        };
        // A lifetime past i64 is refused the same way everywhere else.
        let Ok(entry) = PoolEntry::from_bundle(raw, &bundle) else {
            continue;
        };
        if metadata::fill_scope(conn, &entry)? {
            filled.push(entry.keypackage_ref);
        }
    }
    Ok(filled)
}
