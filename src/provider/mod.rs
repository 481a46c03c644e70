//! [`PoolProvider`]: what an application passes to OpenMLS. Its
//! transactions, which make one OpenMLS operation one commit, are in
//! [`transactions`].

mod transactions;

use std::path::Path;

use openmls_rust_crypto::RustCrypto;
use openmls_traits::{crypto::OpenMlsCrypto, random::OpenMlsRand, OpenMlsProvider};

use crate::{
    codec::{DefaultCodec, PoolCodec},
    error::Result,
    options::StorageOptions,
    storage::PoolStorage,
};

/// A crypto and randomness provider OpenMLS can build with: any type that
/// implements both `OpenMlsCrypto` and `OpenMlsRand`, such as
/// `openmls_rust_crypto::RustCrypto` (the default) or, with the `libcrux`
/// feature, `LibcruxCrypto`.
///
/// Implemented for every such type; there is nothing to implement by hand.
/// [`KeyPackagePool::generate_parallel`](crate::KeyPackagePool::generate_parallel)
/// shares one instance between its threads, so it asks for `Sync` as well.
pub trait PoolCrypto: OpenMlsCrypto + OpenMlsRand {}

impl<T: OpenMlsCrypto + OpenMlsRand> PoolCrypto for T {}

/// An [`OpenMlsProvider`] with a crypto and randomness provider `P`
/// (`openmls_rust_crypto` unless named; see [`with_crypto`](Self::with_crypto)
/// and, with the `libcrux` feature, `PoolProvider::libcrux`) and
/// [`PoolStorage`] for storage.
///
/// Every KeyPackage OpenMLS builds with this provider gets a pool metadata
/// row in the same transaction as its private keys, and loses it in the same
/// transaction when a Welcome consumes it.
///
/// It is `Send` and `Sync` when its crypto provider is (both built-in ones
/// are): share one in an `Arc` between threads and tasks; see
/// [`PoolStorage`] for how the threads take turns.
///
/// Each storage call OpenMLS makes commits on its own, so one OpenMLS
/// operation (joining from a Welcome, merging a commit) is a dozen commits
/// or more, and a crash between two of them loses an invitation or tears a
/// group. Run each operation inside [`transaction`](Self::transaction), or
/// [`group_transaction`](Self::group_transaction) for an existing group:
/// the operation is then one commit, and all of it or none of it is kept.
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
pub struct PoolProvider<C: PoolCodec = DefaultCodec, P = RustCrypto> {
    crypto: P,
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

    /// Opens (creating if needed) a database file encrypted with SQLCipher
    /// under a raw key; see [`PoolStorage::open_with_key`].
    #[cfg(feature = "sqlcipher")]
    pub fn open_with_key(path: impl AsRef<Path>, key: &crate::DatabaseKey) -> Result<Self> {
        Ok(Self::new(PoolStorage::open_with_key(path, key)?))
    }

    /// Opens (creating if needed) the database file at `path` with
    /// `options`.
    pub fn open_with_options(path: impl AsRef<Path>, options: &StorageOptions) -> Result<Self> {
        Ok(Self::new(PoolStorage::open_with_options(path, options)?))
    }
}

impl<C: PoolCodec> PoolProvider<C> {
    /// A provider over storage opened some other way (another codec, an
    /// existing connection), with `openmls_rust_crypto`.
    pub fn new(storage: PoolStorage<C>) -> Self {
        Self::with_crypto(storage, RustCrypto::default())
    }
}

#[cfg(feature = "libcrux")]
impl<C: PoolCodec> PoolProvider<C, crate::LibcruxCrypto> {
    /// A provider over `storage` with `openmls_libcrux_crypto`, the one
    /// OpenMLS crypto provider that implements the X-Wing post-quantum
    /// ciphersuite. Its random generator is seeded from the operating
    /// system, which can fail: [`Error::CryptoProvider`](crate::Error::CryptoProvider).
    ///
    /// With the `draft-ietf-mls-pq-ciphersuites` feature as well, a pool of
    /// X-Wing KeyPackages (`0x004D`; the suite signs with Ed25519):
    ///
    #[cfg_attr(feature = "draft-ietf-mls-pq-ciphersuites", doc = "```")]
    #[cfg_attr(not(feature = "draft-ietf-mls-pq-ciphersuites"), doc = "```text")]
    /// use openmls::prelude::*;
    /// use openmls_basic_credential::SignatureKeyPair;
    /// use openmls_keypackage_pool::{KeyPackagePool, PoolConfig, PoolProvider, PoolStorage};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let storage = PoolStorage::open(dir.path().join("pq.db"))?;
    /// let provider = PoolProvider::libcrux(storage)?;
    ///
    /// let config = PoolConfig {
    ///     ciphersuite: Ciphersuite::MLS_256_XWING_CHACHA20POLY1305_SHA256_Ed25519,
    ///     ..PoolConfig::default()
    /// };
    /// let signer = SignatureKeyPair::new(config.ciphersuite.signature_algorithm())?;
    /// let credential = CredentialWithKey {
    ///     credential: BasicCredential::new(b"alice".to_vec()).into(),
    ///     signature_key: signer.public().into(),
    /// };
    /// let pool = KeyPackagePool::new(&provider, &signer, credential, config)?;
    /// pool.generate_parallel(8, 2)?;
    /// assert_eq!(pool.pending_upload()?.ready.len(), 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn libcrux(storage: PoolStorage<C>) -> Result<Self> {
        let crypto = crate::LibcruxCrypto::new()
            .map_err(|source| crate::Error::CryptoProvider { source })?;
        Ok(Self::with_crypto(storage, crypto))
    }
}

impl<C: PoolCodec, P: PoolCrypto> PoolProvider<C, P> {
    /// A provider over `storage` with the crypto and randomness provider
    /// `crypto`: any OpenMLS crypto provider, such as
    /// `openmls_rust_crypto::RustCrypto` (what [`new`](PoolProvider::new)
    /// uses) or, with the `libcrux` feature,
    /// `LibcruxCrypto` (what `PoolProvider::libcrux`
    /// uses).
    ///
    /// ```
    /// use openmls_keypackage_pool::{PoolProvider, PoolStorage};
    /// use openmls_rust_crypto::RustCrypto;
    /// use openmls_traits::{crypto::OpenMlsCrypto, OpenMlsProvider};
    ///
    /// let storage = PoolStorage::open_in_memory()?;
    /// let provider = PoolProvider::with_crypto(storage, RustCrypto::default());
    /// assert!(!provider.crypto().supported_ciphersuites().is_empty());
    /// # Ok::<(), openmls_keypackage_pool::Error>(())
    /// ```
    pub fn with_crypto(storage: PoolStorage<C>, crypto: P) -> Self {
        Self { crypto, storage }
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

impl<C: PoolCodec, P: PoolCrypto> OpenMlsProvider for PoolProvider<C, P> {
    type CryptoProvider = P;
    type RandProvider = P;
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
