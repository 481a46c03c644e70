//! The last-resort KeyPackage: one kept valid on the server at all times,
//! replaced before it expires, and never piled up.

use openmls_traits::signatures::Signer;

use super::KeyPackagePool;
use crate::{
    codec::Codec,
    error::Result,
    metadata::{self, LastResortRow, TransitionDetails},
    status::KeyPackageStatus,
};

/// What [`KeyPackagePool::ensure_last_resort`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
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

fn is_published(status: KeyPackageStatus) -> bool {
    matches!(
        status,
        KeyPackageStatus::Uploaded | KeyPackageStatus::Available | KeyPackageStatus::Reserved
    )
}

fn is_live(status: KeyPackageStatus) -> bool {
    status == KeyPackageStatus::Created || is_published(status)
}

impl<S: Signer, C: Codec> KeyPackagePool<'_, S, C> {
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
    /// and reported for withdrawal from the server, except:
    /// - while the one kept is not yet uploaded, the best published one it
    ///   replaces stays, so the server never goes without;
    /// - a reserved one stays, since a Welcome built from it may be on its
    ///   way; it goes once it expires and is pruned.
    ///
    /// So at most two unreserved last-resort KeyPackages are on disk at any
    /// time (one while no replacement is pending), plus reserved ones and
    /// expired ones awaiting [`prune_expired`](Self::prune_expired).
    pub fn ensure_last_resort(&self, now: i64) -> Result<LastResortReport> {
        self.provider.storage().transaction(|storage| {
            let conn = storage.connection();
            let horizon_end = self.config.horizon_end(now);
            let rows = metadata::last_resort_rows(conn, now)?;
            let fresh = |row: &&LastResortRow| row.not_after >= horizon_end;
            let mut report = LastResortReport::default();

            // Rows come longest-lived first, and `min_by_key` keeps the first
            // of equals: published first, then the longest-lived.
            let kept = rows
                .iter()
                .filter(fresh)
                .filter(|row| is_live(row.status))
                .min_by_key(|row| !is_published(row.status));
            let (kept, kept_published) = match kept {
                Some(row) => (row.keypackage_ref.clone(), is_published(row.status)),
                None => {
                    let retry = rows
                        .iter()
                        .filter(fresh)
                        .find(|row| row.status == KeyPackageStatus::Failed);
                    let kept = match retry {
                        Some(row) => {
                            metadata::transition(
                                conn,
                                &row.keypackage_ref,
                                KeyPackageStatus::Created,
                                now,
                                TransitionDetails::None,
                            )?;
                            report.retried = Some(row.keypackage_ref.clone());
                            row.keypackage_ref.clone()
                        }
                        None => {
                            let built = self.build_one_last_resort()?;
                            report.created = Some(built.clone());
                            built
                        }
                    };
                    (kept, false)
                }
            };
            // Until the new one is uploaded, the one it replaces stays.
            let replaced = (!kept_published)
                .then(|| {
                    rows.iter()
                        .find(|row| is_published(row.status) && row.keypackage_ref != kept)
                })
                .flatten()
                .map(|row| row.keypackage_ref.clone());

            for row in &rows {
                let stays = row.keypackage_ref == kept
                    || Some(&row.keypackage_ref) == replaced.as_ref()
                    || row.status == KeyPackageStatus::Reserved;
                if !stays {
                    storage.remove_key_package(&row.keypackage_ref)?;
                    report.removed.push(row.keypackage_ref.clone());
                }
            }
            Ok(report)
        })
    }
}
