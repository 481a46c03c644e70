//! Whole KeyPackages (bundle and metadata row together), and bundles
//! without a row, adopted into the pool.

use openmls::prelude::KeyPackageBundle;
use openmls_traits::storage::StorageProvider as _;

use super::PoolStorage;
use crate::{
    bundles,
    clock::{unix_now, window_end},
    codec::PoolCodec,
    erasure::Leftover,
    error::{Error, RefBytes, Result},
    grace,
    keypackage_ref::{check_ref, key_package_ref_from_bytes},
    metadata::{self, PoolEntry},
    status::KeyPackageStatus,
    withdrawal::{self, WithdrawalReason},
};

impl<C: PoolCodec> PoolStorage<C> {
    /// The KeyPackageBundle stored under a raw ref, looked up the way OpenMLS
    /// looks it up.
    ///
    /// A bundle that cannot be decoded is [`Error::CorruptBundle`] naming
    /// the ref; other KeyPackages stay readable.
    pub fn key_package_bundle(&self, keypackage_ref: &[u8]) -> Result<Option<KeyPackageBundle>> {
        let kp_ref = key_package_ref_from_bytes(keypackage_ref)?;
        self.sqlite_provider(&self.connection())
            .key_package(&kp_ref)
            .map_err(|e| match e {
                rusqlite::Error::FromSqlConversionFailure(_, _, source) => Error::CorruptBundle {
                    keypackage_ref: RefBytes::of(keypackage_ref),
                    source,
                },
                other => other.into(),
            })
    }

    /// Takes a KeyPackage out of service: deletes its bundle and metadata
    /// row together, and, if a server may hold it, records its withdrawal
    /// ([`WithdrawalReason::Removed`]) in the same transaction. With a grace
    /// window, a one-time KeyPackage keeps its bundle until the window ends
    /// (see [`StorageOptions::spent_key_package_grace`](crate::StorageOptions::spent_key_package_grace)).
    /// Removing a ref that has neither bundle nor row is not an error.
    pub fn remove_key_package(&self, keypackage_ref: &[u8]) -> Result<()> {
        let scope = self.write_scope()?;
        self.take_out_of_service(keypackage_ref, WithdrawalReason::Removed)?;
        self.commit(scope)
    }

    /// The one way a KeyPackage leaves service, which every deleting path
    /// takes (pruning, last-resort surplus, removal of a scope, a signature
    /// key or one KeyPackage, and OpenMLS consuming it): inside the open
    /// write scope, records its withdrawal if a server may hold it; then
    /// either starts the grace window of a one-time KeyPackage that a peer
    /// may still invite with (its bundle stays), or deletes its bundle and
    /// row. A KeyPackage already in its window keeps it. Returns whether the
    /// keys were deleted now.
    pub(crate) fn take_out_of_service(
        &self,
        keypackage_ref: &[u8],
        reason: WithdrawalReason,
    ) -> Result<bool> {
        check_ref(keypackage_ref)?;
        let now = unix_now()?;
        let row = metadata::get(&self.connection(), keypackage_ref)?;
        if row.as_ref().is_some_and(|row| row.retired_until.is_some()) {
            return Ok(false);
        }
        let may_be_held = withdrawal::record(&self.connection(), keypackage_ref, reason, now)?;
        if may_be_held {
            log::info!(
                "recorded a withdrawal ({reason}), to commit with the operation that took \
                 the KeyPackage out of service"
            );
        }
        // A one-time KeyPackage gets the window; so does a last-resort one
        // retired for its credential, which has no successor in its scope
        // (`ensure_last_resort` keeps a replaced last resort itself while
        // its successor is new).
        let windowed = row
            .as_ref()
            .is_some_and(|row| !row.last_resort || reason == WithdrawalReason::CredentialReplaced);
        // A peer may invite with it if a server may have handed it out, or
        // if a Welcome just used it (whoever handed it to that inviter may
        // hand it to another).
        let invitable = may_be_held || reason == WithdrawalReason::Consumed;
        let grace_secs = self.options.grace_secs();
        if grace_secs > 0 && windowed && invitable {
            let status = if reason == WithdrawalReason::Consumed {
                KeyPackageStatus::Spent
            } else {
                KeyPackageStatus::Expired
            };
            let until = window_end(grace_secs)?;
            grace::retire(&self.connection(), keypackage_ref, status, until, now)?;
            self.record_deadline(until);
            return Ok(false);
        }
        let kp_ref = key_package_ref_from_bytes(keypackage_ref)?;
        self.sqlite_provider(&self.connection())
            .delete_key_package(&kp_ref)?;
        // A bundle written before the pool managed this database has no
        // row; deleting it is still a success.
        metadata::delete(&self.connection(), keypackage_ref)?;
        self.record_leftover(Leftover::Deleted)?;
        Ok(true)
    }

    /// KeyPackageBundles in OpenMLS storage that have no metadata row, such
    /// as those written before this crate managed the database.
    pub fn unpooled_key_packages(&self) -> Result<Vec<PoolEntry>> {
        bundles::unpooled::<C>(&self.connection())
    }

    /// Gives every [unpooled](Self::unpooled_key_packages) KeyPackage a
    /// metadata row in `status`, in one transaction, reading each one's ref,
    /// expiry and last-resort flag from its stored bundle. Returns the
    /// adopted refs.
    ///
    /// ```
    /// use openmls::prelude::*;
    /// use openmls_basic_credential::SignatureKeyPair;
    /// use openmls_keypackage_pool::{KeyPackageStatus, PoolProvider};
    ///
    /// let provider = PoolProvider::open_in_memory()?;
    /// let suite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
    /// let signer = SignatureKeyPair::new(suite.signature_algorithm())?;
    /// let credential = CredentialWithKey {
    ///     credential: BasicCredential::new(b"gus".to_vec()).into(),
    ///     signature_key: signer.public().into(),
    /// };
    /// let bundle = KeyPackage::builder().build(suite, &provider, &signer, credential)?;
    /// let kp_ref = bundle.key_package().hash_ref(provider.crypto())?;
    ///
    /// // A bundle without its row, as plain openmls_sqlite_storage leaves them.
    /// let storage = provider.storage();
    /// storage.delete_pool_metadata(kp_ref.as_slice())?;
    /// assert_eq!(storage.unpooled_key_packages()?.len(), 1);
    ///
    /// // Already on the server: adopted as uploaded.
    /// let adopted = storage.adopt_unpooled_key_packages(KeyPackageStatus::Uploaded)?;
    /// assert_eq!(adopted, vec![kp_ref.as_slice().to_vec()]);
    /// assert_eq!(storage.count_by_status(KeyPackageStatus::Uploaded)?, 1);
    /// assert!(storage.unpooled_key_packages()?.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn adopt_unpooled_key_packages(&self, status: KeyPackageStatus) -> Result<Vec<Vec<u8>>> {
        self.transaction(|storage| {
            let now = unix_now()?;
            storage
                .unpooled_key_packages()?
                .into_iter()
                .map(|entry| {
                    metadata::insert(&storage.connection(), &entry, status, now)?;
                    Ok(entry.keypackage_ref)
                })
                .collect()
        })
    }
}
