//! Checking that every KeyPackageBundle and every metadata row has its
//! partner, and removing those that do not.

use std::collections::HashSet;

use openmls_sqlite_storage::Codec;
use rusqlite::Connection;

use crate::{
    bundles::{self, StoredBundle},
    error::Result,
    metadata,
};

/// What [`PoolStorage::verify`](crate::PoolStorage::verify) found, or what
/// [`PoolStorage::repair`](crate::PoolStorage::repair) removed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ConsistencyReport {
    /// Refs of bundles in OpenMLS storage with no metadata row: private keys
    /// the pool does not track.
    pub bundles_without_metadata: Vec<Vec<u8>>,
    /// Refs of metadata rows whose bundle is gone: KeyPackages the pool would
    /// advertise but could not use to join a group.
    pub metadata_without_bundle: Vec<Vec<u8>>,
    /// Stored keys of bundles whose KeyPackageRef cannot be decoded with the
    /// storage codec (written with another codec, or damaged). Reported,
    /// never removed.
    pub undecodable_bundle_keys: Vec<Vec<u8>>,
    /// Refs of bundles whose stored KeyPackageBundle cannot be decoded with
    /// the storage codec. Reported, never removed.
    pub undecodable_bundles: Vec<Vec<u8>>,
    /// Refs of metadata rows that belong to no pool scope although their
    /// bundle is stored and decodes (a row made by hand): no pool counts,
    /// prunes or uploads them until [`repair`](crate::PoolStorage::repair)
    /// reads their scope from the bundle.
    pub metadata_without_scope: Vec<Vec<u8>>,
    /// Whether the per-status counts the pool keeps (and reads for
    /// `count_by_status`, `health`, the hard cap and `replenish`) disagree
    /// with the rows, as they can after writes that bypass this crate.
    pub counts_out_of_date: bool,
    /// What `PRAGMA integrity_check` reported, when it was not `ok`.
    pub integrity_errors: Vec<String>,
}

impl ConsistencyReport {
    /// Whether nothing at all was found.
    pub fn is_consistent(&self) -> bool {
        self.bundles_without_metadata.is_empty()
            && self.metadata_without_bundle.is_empty()
            && self.undecodable_bundle_keys.is_empty()
            && self.undecodable_bundles.is_empty()
            && self.metadata_without_scope.is_empty()
            && !self.counts_out_of_date
            && self.integrity_errors.is_empty()
    }
}

/// Pairs bundles with metadata rows, checks the counts and runs SQLite's
/// integrity check, all from one snapshot: inside a read transaction when
/// none is open, so another process's writes cannot show up half-seen.
pub(crate) fn check<C: Codec>(conn: &Connection) -> Result<ConsistencyReport> {
    if conn.is_autocommit() {
        // Dropped at the end, which ends the read transaction; it wrote
        // nothing, so rolling back loses nothing.
        let snapshot = conn.unchecked_transaction()?;
        return check_in_snapshot::<C>(&snapshot);
    }
    check_in_snapshot::<C>(conn)
}

fn check_in_snapshot<C: Codec>(conn: &Connection) -> Result<ConsistencyReport> {
    let mut report = ConsistencyReport::default();
    let mut bundle_refs = HashSet::new();
    for stored in bundles::all_stored::<C>(conn)? {
        match stored {
            StoredBundle::Decodes(kp_ref) => {
                bundle_refs.insert(kp_ref);
            }
            StoredBundle::UndecodableBundle(kp_ref) => {
                bundle_refs.insert(kp_ref.clone());
                report.undecodable_bundles.push(kp_ref);
            }
            StoredBundle::UndecodableKey(key) => report.undecodable_bundle_keys.push(key),
        }
    }
    let metadata_refs: HashSet<Vec<u8>> = metadata::all_refs(conn)?.into_iter().collect();
    report.bundles_without_metadata = bundle_refs.difference(&metadata_refs).cloned().collect();
    report.metadata_without_bundle = metadata_refs.difference(&bundle_refs).cloned().collect();
    let undecodable: HashSet<&Vec<u8>> = report.undecodable_bundles.iter().collect();
    report.metadata_without_scope = metadata::unscoped_refs(conn)?
        .into_iter()
        .filter(|r| bundle_refs.contains(r) && !undecodable.contains(r))
        .collect();
    report.metadata_without_scope.sort();
    report.bundles_without_metadata.sort();
    report.metadata_without_bundle.sort();
    report.counts_out_of_date = !metadata::counts_agree(conn)?;

    let mut stmt = conn.prepare("PRAGMA integrity_check")?;
    let lines = stmt.query_map([], |row| row.get::<_, String>(0))?;
    for line in lines {
        let line = line?;
        if line != "ok" {
            report.integrity_errors.push(line);
        }
    }
    Ok(report)
}
