//! [`KeyPackagePool`]: keeps a pool of one-time KeyPackages published,
//! topped up, and free of expired keys.
//!
//! One file per concern: [`config`] the settings, [`health`] the rule that
//! decides what the pool needs and the report built on it, [`generation`]
//! bulk building, [`upload`] the exchange with the server, and
//! [`last_resort`] the fallback KeyPackage.

mod config;
mod generation;
mod health;
mod last_resort;
mod upload;

use openmls::prelude::CredentialWithKey;
use openmls_rust_crypto::RustCrypto;
use openmls_traits::{signatures::Signer, OpenMlsProvider};

pub use config::{PoolConfig, MAX_LIFETIME_SECS};
pub use generation::MAX_THREADS;
use health::Plan;
pub use health::{PoolAction, PoolHealth};
pub use last_resort::LastResortReport;
pub use upload::{PendingUpload, PendingUploads, UnreadableKeyPackage};

use crate::{
    clock::unix_now,
    codec::{DefaultCodec, PoolCodec},
    error::{Error, Result},
    metadata::{self, PoolScope},
    provider::{PoolCrypto, PoolProvider},
    withdrawal::{self, Withdrawal, WithdrawalReason},
};

/// A managed pool of one-time KeyPackages on a [`PoolProvider`].
///
/// Which KeyPackages count where (only unexpired ones count at all: an
/// expired KeyPackage must not be handed out, whether or not it was pruned):
/// - **usable** = `uploaded` + `available`: what the server can hand out.
///   `reserved` ones are about to be consumed, so they do not keep the pool
///   from running dry.
/// - **pending** = `created`: on their way to the server. They do not make
///   the pool usable (health asks for their upload), but
///   [`replenish`](Self::replenish) does not build them again, so calling it
///   twice before an upload does not double the pool.
/// - **fresh**: still valid at the end of the expiry horizon. Only fresh
///   KeyPackages count towards the target, so those about to expire are
///   replaced before they do.
/// - **held** = every one-time KeyPackage with its private keys on disk,
///   whatever its status (`failed`, `spent` and expired-but-unpruned ones
///   included), and whatever its credential. The hard cap bounds this, so a
///   client whose uploads keep failing does not pile up keys (failed ones
///   are retried, not rebuilt), and a renewed credential does not double
///   them.
/// - **stale**: KeyPackages of the pool's signature key and ciphersuite
///   under another credential (the certificate before a renewal, an old
///   identity string). The pool never counts them otherwise, never uploads
///   or hands them out, and [`retire_stale_credentials`](Self::retire_stale_credentials)
///   takes them out of service.
///
/// Last-resort KeyPackages are counted in none of these; they are managed by
/// [`ensure_last_resort`](Self::ensure_last_resort), which keeps their
/// number small on its own.
///
/// The loop a client runs (times are Unix seconds):
/// 1. [`prune_expired`](Self::prune_expired) and
///    [`expire_lapsed_reservations`](Self::expire_lapsed_reservations);
/// 2. [`ensure_last_resort`](Self::ensure_last_resort) and
///    [`replenish`](Self::replenish);
/// 3. upload what [`pending_upload`](Self::pending_upload) lists, then
///    [`mark_uploaded`](Self::mark_uploaded) (or
///    [`mark_failed`](Self::mark_failed));
/// 4. withdraw from the server the refs that pruning and
///    [`LastResortReport::removed`] returned.
///
/// What the server reports about single KeyPackages goes through the
/// storage, by ref: [`mark_available`](Self::mark_available) here, and
/// [`PoolStorage::update_reservation_info`](crate::PoolStorage::update_reservation_info)
/// or [`PoolStorage::mark_spent`](crate::PoolStorage::mark_spent) when one is
/// claimed before its Welcome arrives (once OpenMLS processes the Welcome,
/// the one-time KeyPackage and its row are gone). [`health`](Self::health)
/// says which steps a pool needs.
///
/// Generation holds the database's write lock while it builds (the crypto
/// included), so that the batch is one transaction: for as long as building
/// the batch takes, which depends on the ciphersuite (an X-Wing KeyPackage
/// takes more than twice as long as a classical one; `docs/performance.md`
/// has the figures). Other connections' writes wait
/// meanwhile, up to their busy timeout.
///
/// ```
/// use openmls_basic_credential::SignatureKeyPair;
/// use openmls::prelude::*;
/// use openmls_keypackage_pool::{KeyPackagePool, PoolConfig, PoolProvider};
///
/// let provider = PoolProvider::open_in_memory()?;
/// let config = PoolConfig { target_size: 4, low_watermark: 2, hard_cap: 8, ..Default::default() };
/// let signer = SignatureKeyPair::new(config.ciphersuite.signature_algorithm())?;
/// let credential = CredentialWithKey {
///     credential: BasicCredential::new(b"erin".to_vec()).into(),
///     signature_key: signer.public().into(),
/// };
/// let pool = KeyPackagePool::new(&provider, &signer, credential, config)?;
///
/// pool.generate(4)?;
/// let pending = pool.pending_upload()?;
/// assert_eq!(pending.ready.len(), 4);
/// // ... send each `pending.ready[i].key_package` to the server, then:
/// pool.mark_uploaded(&pending.ready_refs())?;
/// assert_eq!(pool.health(1_700_000_000)?.usable, 4);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct KeyPackagePool<'a, S: Signer, C: PoolCodec = DefaultCodec, P: PoolCrypto = RustCrypto> {
    provider: &'a PoolProvider<C, P>,
    signer: &'a S,
    credential: CredentialWithKey,
    config: PoolConfig,
    scope: PoolScope,
    advertised: config::Advertised,
}

impl<'a, S: Signer, C: PoolCodec, P: PoolCrypto> KeyPackagePool<'a, S, C, P> {
    /// A pool that builds KeyPackages on `provider`, signed by `signer` for
    /// `credential`. Fails, before anything is written, if `config` does not
    /// [validate](PoolConfig::validate) or the provider's crypto does not
    /// implement its ciphersuite ([`Error::UnsupportedCiphersuite`]).
    pub fn new(
        provider: &'a PoolProvider<C, P>,
        signer: &'a S,
        credential: CredentialWithKey,
        config: PoolConfig,
    ) -> Result<Self> {
        config.validate()?;
        let ciphersuite = config.ciphersuite;
        provider
            .crypto()
            .supports(ciphersuite)
            .map_err(|_| Error::UnsupportedCiphersuite {
                code: u16::from(ciphersuite),
                name: format!("{ciphersuite:?}"),
            })?;
        let advertised = config.advertised(credential.credential.credential_type())?;
        Ok(Self {
            provider,
            signer,
            advertised,
            scope: PoolScope::new(&credential, ciphersuite),
            credential,
            config,
        })
    }

    /// The KeyPackages this pool manages: those carrying its credential and
    /// signed with its key, in its ciphersuite. Every operation of the pool
    /// sees only these; other pools on the same database are invisible to
    /// it, except that the hard cap counts the KeyPackages of its key and
    /// ciphersuite under any credential, and that it retires those under
    /// another credential.
    pub fn scope(&self) -> &PoolScope {
        &self.scope
    }

    /// The configuration in force.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// The provider the pool builds on.
    pub fn provider(&self) -> &'a PoolProvider<C, P> {
        self.provider
    }

    /// Tops the pool up, and returns the refs of the KeyPackages it made
    /// pending upload: none when the pool needs nothing, however full it is.
    ///
    /// The rule (the one [`health`](Self::health) reports by): a KeyPackage
    /// counts only while it is still valid at the end of the expiry horizon,
    /// so those about to expire are replaced in time. When fewer than
    /// `low_watermark` of those are usable (uploaded or available), the gap
    /// to `target_size`, less those already pending upload, is filled:
    /// first by moving `failed` ones back to `created` (retrying them costs
    /// no new keys), then by building new ones in one transaction, as many
    /// as the hard cap leaves room for. The returned refs are the retried
    /// ones, then the new ones; upload them all.
    ///
    /// ```
    /// use openmls::prelude::*;
    /// use openmls_basic_credential::SignatureKeyPair;
    /// use openmls_keypackage_pool::{KeyPackagePool, PoolConfig, PoolProvider};
    ///
    /// let provider = PoolProvider::open_in_memory()?;
    /// let config = PoolConfig { target_size: 4, low_watermark: 2, hard_cap: 8, ..Default::default() };
    /// let signer = SignatureKeyPair::new(config.ciphersuite.signature_algorithm())?;
    /// let credential = CredentialWithKey {
    ///     credential: BasicCredential::new(b"ida".to_vec()).into(),
    ///     signature_key: signer.public().into(),
    /// };
    /// let pool = KeyPackagePool::new(&provider, &signer, credential, config)?;
    ///
    /// assert_eq!(pool.replenish()?.len(), 4);
    /// // The four waiting for upload already fill the gap.
    /// assert!(pool.replenish()?.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn replenish(&self) -> Result<Vec<Vec<u8>>> {
        self.replenish_with_progress(|_, _| ())
    }

    /// [`replenish`](Self::replenish), calling `progress(done, total)` after
    /// each KeyPackage built.
    pub fn replenish_with_progress(
        &self,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Vec<Vec<u8>>> {
        self.provider.storage().transaction(|storage| {
            let conn = &*storage.connection();
            let now = unix_now()?;
            let horizon_end = self.config.horizon_end(now);
            let counts = metadata::one_time_counts(conn, &self.scope, now, horizon_end)?;
            let plan = Plan::for_counts(&self.config, &counts);
            let mut refs = metadata::retry_failed(conn, &self.scope, plan.retry, horizon_end)?;
            refs.extend(self.build_batch(plan.build, |done| progress(done, plan.build))?);
            Ok(refs)
        })
    }

    /// Deletes, in one transaction, the bundle and metadata of every
    /// KeyPackage of this pool whose `not_after` is before `now` (Unix
    /// seconds), and returns their refs so the application can withdraw them
    /// from its server.
    ///
    /// A reserved KeyPackage is held until its reservation has lapsed too,
    /// so a Welcome built from it can still be processed. An expired
    /// last-resort KeyPackage is deleted only when a newer last-resort one
    /// exists, so the client always keeps a fallback.
    ///
    /// ```
    /// use openmls::prelude::*;
    /// use openmls_basic_credential::SignatureKeyPair;
    /// use openmls_keypackage_pool::{KeyPackagePool, PoolConfig, PoolProvider};
    ///
    /// let provider = PoolProvider::open_in_memory()?;
    /// let config = PoolConfig { target_size: 4, low_watermark: 2, hard_cap: 8, ..Default::default() };
    /// let signer = SignatureKeyPair::new(config.ciphersuite.signature_algorithm())?;
    /// let credential = CredentialWithKey {
    ///     credential: BasicCredential::new(b"ida".to_vec()).into(),
    ///     signature_key: signer.public().into(),
    /// };
    /// let pool = KeyPackagePool::new(&provider, &signer, credential, config)?;
    ///
    /// let refs = pool.generate(2)?;
    /// // In 2023 (Unix seconds) nothing had expired.
    /// assert!(pool.prune_expired(1_700_000_000)?.is_empty());
    /// // In 2096 both have: private keys and rows go; withdraw them.
    /// assert_eq!(pool.prune_expired(4_000_000_000)?, refs);
    /// assert!(provider.storage().key_package_bundle(&refs[0])?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn prune_expired(&self, now: i64) -> Result<Vec<Vec<u8>>> {
        self.provider.storage().transaction(|storage| {
            let refs = metadata::prunable_refs(&storage.connection(), &self.scope, now)?;
            for keypackage_ref in &refs {
                storage.take_out_of_service(keypackage_ref, WithdrawalReason::Expired)?;
            }
            Ok(refs)
        })
    }

    /// Takes every KeyPackage of this pool's signature key and ciphersuite
    /// that carries another credential out of service, in one transaction,
    /// and returns their refs: after a credential renewal on the same key,
    /// the KeyPackages carrying the old credential must not be handed out
    /// any more.
    ///
    /// Each one a server may hold gets a withdrawal
    /// ([`WithdrawalReason::CredentialReplaced`], listed by
    /// [`pending_withdrawals`](Self::pending_withdrawals)). With a grace
    /// window ([`StorageOptions::spent_key_package_grace`](crate::StorageOptions::spent_key_package_grace)),
    /// a KeyPackage a peer may still invite with (one-time or last-resort)
    /// keeps its keys until the window ends, so a Welcome already on its way
    /// still joins; the others are deleted at once, as all of them are
    /// without a window. Build and upload this pool's own last-resort
    /// KeyPackage ([`ensure_last_resort`](Self::ensure_last_resort)) before
    /// the server drops the old one.
    ///
    /// A signature key presents one credential at a time: two pools of the
    /// same key and ciphersuite under two credentials each see the other's
    /// KeyPackages as stale, and each one's `health` asks to retire them.
    /// Run the pool of the credential the client presents now.
    ///
    /// ```
    /// use openmls::prelude::*;
    /// use openmls_basic_credential::SignatureKeyPair;
    /// use openmls_keypackage_pool::{KeyPackagePool, PoolAction, PoolConfig, PoolProvider};
    ///
    /// let provider = PoolProvider::open_in_memory()?;
    /// let config = PoolConfig { target_size: 4, low_watermark: 2, hard_cap: 8, ..Default::default() };
    /// let signer = SignatureKeyPair::new(config.ciphersuite.signature_algorithm())?;
    /// let with_identity = |identity: &str| CredentialWithKey {
    ///     credential: BasicCredential::new(identity.as_bytes().to_vec()).into(),
    ///     signature_key: signer.public().into(),
    /// };
    /// let old = KeyPackagePool::new(&provider, &signer, with_identity("ada@2025"), config.clone())?;
    /// let old_refs = old.replenish()?;
    /// old.mark_uploaded(&old_refs)?;
    ///
    /// // The identity is renewed; the signature key stays.
    /// let renewed = KeyPackagePool::new(&provider, &signer, with_identity("ada@2026"), config)?;
    /// let now = 1_900_000_000;
    /// assert_eq!(renewed.health(now)?.recommended, PoolAction::RetireStaleCredential(4));
    /// assert_eq!(renewed.retire_stale_credentials()?, old_refs);
    /// // The server held them: ask it to stop handing them out.
    /// assert_eq!(renewed.pending_withdrawals()?.len(), 4);
    /// // The renewed pool builds its own.
    /// assert_eq!(renewed.replenish()?.len(), 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn retire_stale_credentials(&self) -> Result<Vec<Vec<u8>>> {
        self.provider.storage().transaction(|storage| {
            let refs = metadata::stale_refs(&storage.connection(), &self.scope)?;
            for keypackage_ref in &refs {
                storage
                    .take_out_of_service(keypackage_ref, WithdrawalReason::CredentialReplaced)?;
            }
            Ok(refs)
        })
    }

    /// The withdrawals not yet confirmed of the KeyPackages of this pool's
    /// signature key and ciphersuite, under any credential (the retired
    /// stale ones included), oldest first (see
    /// [`PoolStorage::pending_withdrawals`](crate::PoolStorage::pending_withdrawals)
    /// for the loop, and for confirming them).
    pub fn pending_withdrawals(&self) -> Result<Vec<Withdrawal>> {
        withdrawal::pending(&self.provider.storage().connection(), Some(&self.scope))
    }

    /// Puts this pool's reserved KeyPackages whose reservation expired before
    /// `now` (Unix seconds) back to `available`; returns their refs.
    pub fn expire_lapsed_reservations(&self, now: i64) -> Result<Vec<Vec<u8>>> {
        let storage = self.provider.storage();
        storage.write_alone(|| {
            metadata::release_lapsed_reservations(&storage.connection(), &self.scope, now)
        })
    }
}
