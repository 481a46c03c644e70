//! Checking and repairing the pairing of bundles and metadata rows.

use super::PoolStorage;
use crate::{
    clock::unix_now,
    codec::PoolCodec,
    error::{Error, Result},
    metadata, scope,
    verify::{self, ConsistencyReport},
    withdrawal::{self, WithdrawalReason},
};

impl<C: PoolCodec> PoolStorage<C> {
    /// Checks that every KeyPackageBundle has a metadata row and every row
    /// its bundle, and runs SQLite's integrity check; changes nothing.
    ///
    /// Meant for start-up: bundles written and deleted through this crate's
    /// storage always keep their rows, even across a crash, so anything
    /// found points at another writer, at damage, or at hand-made rows
    /// (`create_pool_metadata` makes a row without a bundle and
    /// `delete_pool_metadata` leaves a bundle without its row).
    pub fn verify(&self) -> Result<ConsistencyReport> {
        verify::check::<C>(&self.connection())
    }

    /// Removes, in one transaction, every bundle without a metadata row and
    /// every metadata row without a bundle, recounts the per-status counts if
    /// they disagree, reads back the scope of rows that lost it, and returns
    /// what it found.
    ///
    /// When any stored bundle, or the ref it is stored under, does not
    /// decode with this storage's codec, or SQLite's integrity check fails,
    /// repair removes nothing and returns [`Error::RepairRefused`]: the
    /// database is then misread (another codec) or damaged, and every row
    /// paired with such a bundle would look orphaned.
    /// [`verify`](Self::verify) lists them.
    ///
    /// To keep bundles written before this crate managed the database, adopt
    /// them first ([`adopt_unpooled_key_packages`](Self::adopt_unpooled_key_packages)).
    ///
    /// ```
    /// use openmls_keypackage_pool::PoolStorage;
    ///
    /// let storage = PoolStorage::open_in_memory()?;
    /// // A row made by hand, with no bundle behind it.
    /// storage.create_pool_metadata(&[7; 32], 1_900_000_000)?;
    /// assert_eq!(storage.verify()?.metadata_without_bundle, vec![vec![7; 32]]);
    ///
    /// let removed = storage.repair()?;
    /// assert_eq!(removed.metadata_without_bundle, vec![vec![7; 32]]);
    /// assert!(storage.verify()?.is_consistent());
    /// assert!(storage.get_metadata(&[7; 32])?.is_none());
    /// # Ok::<(), openmls_keypackage_pool::Error>(())
    /// ```
    pub fn repair(&self) -> Result<ConsistencyReport> {
        let note = self.commit_note();
        let found = self.transaction(|storage| {
            let found = verify::check::<C>(&storage.connection())?;
            let undecodable = found.undecodable_bundle_keys.len() + found.undecodable_bundles.len();
            // Pairing rows in a file SQLite finds damaged is guesswork too.
            if undecodable > 0 || !found.integrity_errors.is_empty() {
                return Err(Error::RepairRefused {
                    undecodable,
                    integrity_errors: found.integrity_errors.len(),
                });
            }
            for keypackage_ref in &found.bundles_without_metadata {
                storage.remove_key_package(keypackage_ref)?;
            }
            let now = unix_now()?;
            for keypackage_ref in &found.metadata_without_bundle {
                // Its keys are gone; a server may still hand it out.
                withdrawal::record(
                    &storage.connection(),
                    keypackage_ref,
                    WithdrawalReason::Repaired,
                    now,
                )?;
                metadata::delete(&storage.connection(), keypackage_ref)?;
            }
            if !found.metadata_without_scope.is_empty() {
                scope::backfill::<C>(&storage.connection())?;
            }
            if found.counts_out_of_date {
                metadata::rebuild_counts(&storage.connection())?;
            }
            Ok(found)
        })?;
        log_repair(&found, note);
        Ok(found)
    }
}

/// Says what [`PoolStorage::repair`] did, once it committed.
fn log_repair(found: &ConsistencyReport, commit_note: &str) {
    let (orphans, lost) = (
        found.bundles_without_metadata.len(),
        found.metadata_without_bundle.len(),
    );
    let unscoped = found.metadata_without_scope.len();
    if orphans + lost + unscoped > 0 || found.counts_out_of_date {
        log::info!(
            "repair: deleted {orphans} KeyPackage bundles without a metadata row and {lost} \
             metadata rows without a bundle (their withdrawals recorded), gave {unscoped} \
             rows their scope{}{commit_note}",
            if found.counts_out_of_date {
                ", rebuilt the status counts"
            } else {
                ""
            }
        );
    }
}
