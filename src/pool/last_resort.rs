//! The last-resort KeyPackage: one kept valid on the server at all times,
//! replaced before it expires, and never piled up.

use openmls_traits::signatures::Signer;

use super::KeyPackagePool;
use crate::{
    codec::PoolCodec,
    error::Result,
    metadata::{self, LastResortRow, TransitionDetails},
    provider::PoolCrypto,
    status::KeyPackageStatus,
    withdrawal::WithdrawalReason,
};

/// What [`KeyPackagePool::ensure_last_resort`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct LastResortReport {
    /// The ref of the last-resort KeyPackage it built, if it built one.
    pub created: Option<Vec<u8>>,
    /// The ref of a `failed` last-resort KeyPackage it moved back to
    /// `created` to be uploaded again, instead of building a new one.
    pub retried: Option<Vec<u8>>,
    /// Refs of last-resort KeyPackages it deleted, bundle and row; withdraw
    /// them from the server.
    pub removed: Vec<Vec<u8>>,
}

impl<S: Signer, C: PoolCodec, P: PoolCrypto> KeyPackagePool<'_, S, C, P> {
    /// Keeps one valid last-resort KeyPackage at `now`, replaced before it
    /// expires, and removes the rest.
    ///
    /// The one kept is the best that is still valid at the end of the
    /// expiry horizon: published (uploaded, available or reserved) before
    /// unpublished, then the longest-lived. When there is none, a `failed`
    /// one still valid then is retried (moved back to `created`), and only
    /// failing that is a new one built; so one that expires within the
    /// horizon is replaced while it still works, and a failed upload never
    /// leads to a second set of keys.
    ///
    /// Every other valid last-resort KeyPackage is deleted, bundle and row,
    /// and reported for withdrawal from the server, except these, which
    /// stay until they expire and [`prune_expired`](Self::prune_expired)
    /// removes them (a server may still hand them out, or a Welcome built
    /// from them may be on its way):
    /// - the longest-lived unreserved published one besides the one kept:
    ///   the one being replaced;
    /// - the longest-lived `spent` one;
    /// - reserved ones.
    ///
    /// So besides reserved ones at most three valid last-resort KeyPackages
    /// are on disk (the one kept, the one it replaces and the latest spent
    /// one), plus expired ones awaiting `prune_expired`, however often
    /// uploads fail or the application marks them spent.
    ///
    /// `now` (Unix seconds) decides what is valid and what falls within the
    /// horizon: pass the current time. A KeyPackage built here gets its
    /// lifetime from the system clock.
    ///
    /// ```
    /// use openmls::prelude::*;
    /// use openmls_basic_credential::SignatureKeyPair;
    /// use openmls_keypackage_pool::{KeyPackagePool, KeyPackageStatus, PoolConfig, PoolProvider};
    ///
    /// let provider = PoolProvider::open_in_memory()?;
    /// let config = PoolConfig { target_size: 4, low_watermark: 2, hard_cap: 8, ..Default::default() };
    /// let signer = SignatureKeyPair::new(config.ciphersuite.signature_algorithm())?;
    /// let credential = CredentialWithKey {
    ///     credential: BasicCredential::new(b"ida".to_vec()).into(),
    ///     signature_key: signer.public().into(),
    /// };
    /// let pool = KeyPackagePool::new(&provider, &signer, credential, config)?;
    /// let now = || std::time::UNIX_EPOCH.elapsed().map(|d| d.as_secs() as i64);
    ///
    /// let built = pool.ensure_last_resort(now()?)?.created.expect("none yet");
    /// // Upload it with the one-time KeyPackages, then:
    /// pool.mark_uploaded(&[&built])?;
    /// // A valid one is on the server: nothing to build or remove.
    /// let report = pool.ensure_last_resort(now()?)?;
    /// assert_eq!((report.created, report.removed.len()), (None, 0));
    /// let row = provider.storage().get_metadata(&built)?.expect("a row");
    /// assert!(row.last_resort && row.status == KeyPackageStatus::Uploaded);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ensure_last_resort(&self, now: i64) -> Result<LastResortReport> {
        self.provider.storage().transaction(|storage| {
            let conn = &*storage.connection();
            let horizon_end = self.config.horizon_end(now);
            let rows = metadata::last_resort_rows(conn, &self.scope, now)?;
            let fresh = |row: &&LastResortRow| row.not_after >= horizon_end;
            let mut report = LastResortReport::default();

            // Rows come longest-lived first, and `min_by_key` keeps the first
            // of equals: published first, then the longest-lived.
            let kept = rows
                .iter()
                .filter(fresh)
                .filter(|row| row.status.is_live())
                .min_by_key(|row| !row.status.is_published());
            let kept = match kept {
                Some(row) => row.keypackage_ref.clone(),
                None => {
                    let retry = rows
                        .iter()
                        .filter(fresh)
                        .find(|row| row.status == KeyPackageStatus::Failed);
                    match retry {
                        Some(row) => {
                            metadata::transition(
                                conn,
                                &row.keypackage_ref,
                                KeyPackageStatus::Created,
                                now,
                                TransitionDetails::StatusOnly,
                            )?;
                            report.retried = Some(row.keypackage_ref.clone());
                            row.keypackage_ref.clone()
                        }
                        None => {
                            let built = self.build_one_last_resort()?;
                            report.created = Some(built.clone());
                            built
                        }
                    }
                }
            };
            // The server may still hand out the one being replaced, and a
            // Welcome may be on its way for the latest spent one. Rows come
            // longest-lived first.
            let first_other = |wanted: &[KeyPackageStatus]| {
                rows.iter()
                    .find(|row| wanted.contains(&row.status) && row.keypackage_ref != kept)
                    .map(|row| row.keypackage_ref.clone())
            };
            let replaced = first_other(&[KeyPackageStatus::Uploaded, KeyPackageStatus::Available]);
            let latest_spent = first_other(&[KeyPackageStatus::Spent]);

            for row in &rows {
                let stays = row.keypackage_ref == kept
                    || Some(&row.keypackage_ref) == replaced.as_ref()
                    || Some(&row.keypackage_ref) == latest_spent.as_ref()
                    || row.status == KeyPackageStatus::Reserved;
                if !stays {
                    storage.take_out_of_service(
                        &row.keypackage_ref,
                        WithdrawalReason::SurplusLastResort,
                    )?;
                    report.removed.push(row.keypackage_ref.clone());
                }
            }
            Ok(report)
        })
    }
}
