//! The metadata store by hand: rows created, moved through the lifecycle,
//! read and deleted by ref, for applications that keep the books
//! themselves.

use super::PoolStorage;
use crate::{
    clock::unix_now,
    codec::PoolCodec,
    error::{Error, Result},
    keypackage_ref::check_ref,
    metadata::{self, KeyPackageMetadata, PoolEntry, TransitionDetails},
    status::KeyPackageStatus,
};

impl<C: PoolCodec> PoolStorage<C> {
    /// Adds a `created` metadata row for a KeyPackage with no last-resort
    /// extension. Rows for KeyPackages built through OpenMLS are added by
    /// the storage hook; this is for bookkeeping done by hand. The row
    /// belongs to no pool scope until its bundle is stored (then it takes
    /// the bundle's), unless the bundle is already there.
    pub fn create_pool_metadata(&self, keypackage_ref: &[u8], not_after: i64) -> Result<()> {
        let by_hand = PoolEntry::by_hand(keypackage_ref.to_vec(), not_after);
        // A bundle already stored under the ref gives the row its scope; one
        // that cannot be read leaves it without, as for any row.
        let entry = match self.key_package_bundle(keypackage_ref) {
            Ok(Some(bundle)) => PoolEntry {
                not_after,
                ..PoolEntry::from_bundle(keypackage_ref.to_vec(), &bundle)
                    .unwrap_or(by_hand.clone())
            },
            _ => by_hand,
        };
        self.write_alone(|| {
            metadata::insert(
                &self.connection(),
                &entry,
                KeyPackageStatus::Created,
                unix_now()?,
            )
        })
    }

    /// Moves a KeyPackage to `status`, stamping `uploaded_at`, `reserved_at`
    /// or `spent_at` as the status calls for.
    ///
    /// Setting the status a row already has changes nothing. A move the
    /// lifecycle does not allow (see [`KeyPackageStatus`]) is
    /// [`Error::InvalidTransition`]; a ref with no row is [`Error::NotFound`].
    pub fn update_pool_metadata_status(
        &self,
        keypackage_ref: &[u8],
        status: KeyPackageStatus,
    ) -> Result<()> {
        self.transition(keypackage_ref, status, TransitionDetails::StatusOnly)
    }

    /// How many KeyPackages are in `status`.
    ///
    /// Read from the per-status counts this crate keeps as it writes, not by
    /// counting rows: a row another writer inserts with raw SQL is not
    /// counted until [`repair`](Self::repair) recounts
    /// ([`verify`](Self::verify) reports the difference).
    pub fn count_by_status(&self, status: KeyPackageStatus) -> Result<usize> {
        metadata::count_by_status(&self.connection(), status)
    }

    /// The refs whose `not_after` is before `current_time` (a KeyPackage is
    /// still valid in the second its `not_after` names), soonest first.
    pub fn get_expired_refs(&self, current_time: i64) -> Result<Vec<Vec<u8>>> {
        metadata::expired_refs(&self.connection(), current_time)
    }

    /// Every KeyPackage in `status`, oldest created first.
    pub fn get_metadata_by_status(
        &self,
        status: KeyPackageStatus,
    ) -> Result<Vec<KeyPackageMetadata>> {
        metadata::by_status(&self.connection(), status)
    }

    /// Deletes a metadata row, leaving any bundle in OpenMLS storage alone
    /// and recording no withdrawal: bookkeeping by hand. A bundle left
    /// without its row (one in its grace window included, which then no
    /// longer ends by itself) stays until [`repair`](Self::repair) removes
    /// it.
    ///
    /// To take a KeyPackage out of service, use
    /// [`remove_key_package`](Self::remove_key_package), which handles both
    /// and the withdrawal.
    pub fn delete_pool_metadata(&self, keypackage_ref: &[u8]) -> Result<()> {
        check_ref(keypackage_ref)?;
        if self.write_alone(|| metadata::delete(&self.connection(), keypackage_ref))? {
            Ok(())
        } else {
            Err(Error::not_found(keypackage_ref))
        }
    }

    /// Marks a KeyPackage `reserved` and records the server's reservation.
    ///
    /// On a row that is already reserved this is a no-op that keeps the
    /// first reservation's details.
    pub fn update_reservation_info(
        &self,
        keypackage_ref: &[u8],
        reservation_id: &str,
        reserved_by: &str,
        expires_at: i64,
    ) -> Result<()> {
        self.transition(
            keypackage_ref,
            KeyPackageStatus::Reserved,
            TransitionDetails::Reservation {
                reservation_id,
                reserved_by,
                expires_at,
            },
        )
    }

    /// Marks a KeyPackage `spent`, recording who used it in which group.
    ///
    /// On a row that is already spent this is a no-op that keeps the first
    /// record.
    pub fn mark_spent(&self, keypackage_ref: &[u8], spent_by: &str, group_id: &[u8]) -> Result<()> {
        self.transition(
            keypackage_ref,
            KeyPackageStatus::Spent,
            TransitionDetails::Spend { spent_by, group_id },
        )
    }

    /// The metadata of one KeyPackage, if it has a row.
    pub fn get_metadata(&self, keypackage_ref: &[u8]) -> Result<Option<KeyPackageMetadata>> {
        metadata::get(&self.connection(), keypackage_ref)
    }

    /// Moves a row to `to` now, as a write of its own.
    fn transition(
        &self,
        keypackage_ref: &[u8],
        to: KeyPackageStatus,
        details: TransitionDetails<'_>,
    ) -> Result<()> {
        self.write_alone(|| {
            metadata::transition(&self.connection(), keypackage_ref, to, unix_now()?, details)
        })
    }
}
