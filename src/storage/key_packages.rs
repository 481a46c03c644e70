//! Whole KeyPackages (bundle and metadata row together), and bundles
//! without a row, adopted into the pool.

use openmls::prelude::KeyPackageBundle;
use openmls_traits::storage::{StorageProvider, CURRENT_VERSION};

use super::PoolStorage;
use crate::{
    bundles,
    clock::unix_now,
    codec::PoolCodec,
    error::{Error, RefBytes, Result},
    keypackage_ref::key_package_ref_from_bytes,
    metadata::{self, PoolEntry},
    status::KeyPackageStatus,
};

impl<C: PoolCodec> PoolStorage<C> {
    /// The KeyPackageBundle stored under a raw ref, looked up the way OpenMLS
    /// looks it up.
    ///
    /// A bundle that cannot be decoded is [`Error::CorruptBundle`] naming
    /// the ref; other KeyPackages stay readable.
    pub fn key_package_bundle(&self, keypackage_ref: &[u8]) -> Result<Option<KeyPackageBundle>> {
        let kp_ref = key_package_ref_from_bytes(keypackage_ref)?;
        self.sqlite_provider()
            .key_package(&kp_ref)
            .map_err(|e| match e {
                rusqlite::Error::FromSqlConversionFailure(_, _, source) => Error::CorruptBundle {
                    keypackage_ref: RefBytes::of(keypackage_ref),
                    source,
                },
                other => other.into(),
            })
    }

    /// Deletes a KeyPackage's bundle and metadata row together, as OpenMLS
    /// does when a Welcome consumes it. Deleting a ref that has neither is
    /// not an error.
    pub fn remove_key_package(&self, keypackage_ref: &[u8]) -> Result<()> {
        let kp_ref = key_package_ref_from_bytes(keypackage_ref)?;
        <Self as StorageProvider<CURRENT_VERSION>>::delete_key_package(self, &kp_ref)
    }

    /// KeyPackageBundles in OpenMLS storage that have no metadata row, such
    /// as those written before this crate managed the database.
    pub fn unpooled_key_packages(&self) -> Result<Vec<PoolEntry>> {
        bundles::unpooled::<C>(&self.conn)
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
                    metadata::insert(&storage.conn, &entry, status, now)?;
                    Ok(entry.keypackage_ref)
                })
                .collect()
        })
    }
}
