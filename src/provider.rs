//! [`PoolProvider`]: what an application passes to OpenMLS.

use std::path::Path;

use openmls_rust_crypto::RustCrypto;
use openmls_traits::OpenMlsProvider;

use crate::{
    codec::{DefaultCodec, PoolCodec},
    error::Result,
    options::StorageOptions,
    storage::PoolStorage,
};

/// An [`OpenMlsProvider`] with `openmls_rust_crypto` for crypto and
/// randomness and [`PoolStorage`] for storage.
///
/// Every KeyPackage OpenMLS builds with this provider gets a pool metadata
/// row in the same transaction as its private keys, and loses it in the same
/// transaction when a Welcome consumes it.
///
/// OpenMLS deletes the KeyPackage while it processes a Welcome, before the
/// new group is stored. To keep the KeyPackage when joining fails (or when
/// the application fails to record the group), run the join inside
/// [`PoolStorage::transaction`]: an `Err` rolls the deletion back with
/// everything else.
///
/// ```
/// use openmls::prelude::*;
/// use openmls_basic_credential::SignatureKeyPair;
/// use openmls_keypackage_pool::{KeyPackageStatus, PoolProvider};
///
/// let dir = tempfile::tempdir()?;
/// let provider = PoolProvider::open(dir.path().join("alice.db"))?;
///
/// let ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
/// let signer = SignatureKeyPair::new(ciphersuite.signature_algorithm())?;
/// let credential = CredentialWithKey {
///     credential: BasicCredential::new(b"alice".to_vec()).into(),
///     signature_key: signer.public().into(),
/// };
///
/// let bundle = KeyPackage::builder().build(ciphersuite, &provider, &signer, credential)?;
/// let kp_ref = bundle.key_package().hash_ref(provider.crypto())?;
///
/// let row = provider.storage().get_metadata(kp_ref.as_slice())?.expect("written with the bundle");
/// assert_eq!(row.status, KeyPackageStatus::Created);
/// assert_eq!(row.not_after as u64, bundle.key_package().life_time().not_after());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct PoolProvider<C: PoolCodec = DefaultCodec> {
    crypto: RustCrypto,
    storage: PoolStorage<C>,
}

impl PoolProvider<DefaultCodec> {
    /// Opens (creating if needed) the database file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Self::new(PoolStorage::open(path)?))
    }

    /// A provider on a fresh in-memory database.
    pub fn open_in_memory() -> Result<Self> {
        Ok(Self::new(PoolStorage::open_in_memory()?))
    }

    /// Opens (creating if needed) a database file encrypted with SQLCipher;
    /// see [`PoolStorage::open_encrypted`].
    #[cfg(feature = "sqlcipher")]
    pub fn open_encrypted(path: impl AsRef<Path>, key: &str) -> Result<Self> {
        Ok(Self::new(PoolStorage::open_encrypted(path, key)?))
    }

    /// Opens (creating if needed) the database file at `path` with
    /// `options`.
    pub fn open_with_options(path: impl AsRef<Path>, options: &StorageOptions) -> Result<Self> {
        Ok(Self::new(PoolStorage::open_with_options(path, options)?))
    }
}

impl<C: PoolCodec> PoolProvider<C> {
    /// A provider over storage opened some other way (another codec, an
    /// existing connection).
    pub fn new(storage: PoolStorage<C>) -> Self {
        Self {
            crypto: RustCrypto::default(),
            storage,
        }
    }

    /// The storage, with the pool's metadata methods.
    pub fn storage(&self) -> &PoolStorage<C> {
        &self.storage
    }

    /// Gives the storage back, dropping the crypto provider.
    pub fn into_storage(self) -> PoolStorage<C> {
        self.storage
    }
}

impl<C: PoolCodec> OpenMlsProvider for PoolProvider<C> {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = PoolStorage<C>;

    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }

    fn crypto(&self) -> &Self::CryptoProvider {
        &self.crypto
    }

    fn rand(&self) -> &Self::RandProvider {
        &self.crypto
    }
}
