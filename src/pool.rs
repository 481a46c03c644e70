//! [`KeyPackagePool`]: keeps a pool of one-time KeyPackages published,
//! topped up, and free of expired keys.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    mpsc,
};

use openmls::prelude::{
    Ciphersuite, CredentialWithKey, KeyPackage, KeyPackageBundle, KeyPackageRef, Lifetime,
};
use openmls_traits::{signatures::Signer, OpenMlsProvider};
use tls_codec::Serialize as _;

use crate::{
    clock::unix_now,
    codec::{DefaultCodec, PoolCodec},
    error::{Error, RefBytes, Result},
    metadata::{self, TransitionDetails},
    provider::PoolProvider,
    scratch::ScratchProvider,
    status::KeyPackageStatus,
    storage::PoolStorage,
};

const DAY: u64 = 24 * 60 * 60;

/// The most worker threads [`KeyPackagePool::generate_parallel`] starts.
pub const MAX_THREADS: usize = 64;

/// How far `not_before` is set into the past, for peers whose clocks lag.
const CLOCK_SKEW_SECS: u64 = 60 * 60;

/// The longest KeyPackage lifetime OpenMLS accepts from other clients:
/// 84 days (its `MAX_LEAF_NODE_LIFETIME_RANGE_SECONDS` less the hour it
/// back-dates `not_before` by). A longer one would be refused by peers.
pub const MAX_LIFETIME_SECS: u64 = 84 * DAY;

/// How a [`KeyPackagePool`] sizes and ages its KeyPackages.
///
/// The defaults: keep 32 published, top up when fewer than 8 remain, never
/// hold more than 64 live, 14-day lifetimes, and warn 2 days before expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// How many usable KeyPackages [`replenish`](KeyPackagePool::replenish)
    /// brings the pool back to.
    pub target_size: usize,
    /// Below this many usable KeyPackages, `replenish` tops up.
    pub low_watermark: usize,
    /// The most live one-time KeyPackages the pool may hold;
    /// [`generate`](KeyPackagePool::generate) refuses to pass it.
    pub hard_cap: usize,
    /// Each KeyPackage's lifetime in seconds, at most [`MAX_LIFETIME_SECS`].
    pub lifetime_secs: u64,
    /// How far ahead [`health`](KeyPackagePool::health) looks for expiring
    /// KeyPackages, in seconds.
    pub expiry_horizon_secs: u64,
    /// The ciphersuite of every KeyPackage built.
    pub ciphersuite: Ciphersuite,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            target_size: 32,
            low_watermark: 8,
            hard_cap: 64,
            lifetime_secs: 14 * DAY,
            expiry_horizon_secs: 2 * DAY,
            ciphersuite: Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519,
        }
    }
}

impl PoolConfig {
    /// Checks that the sizes are ordered (`low_watermark <= target_size <=
    /// hard_cap`, `target_size > 0`) and the lifetime is within what peers
    /// accept.
    pub fn validate(&self) -> Result<()> {
        let reason = if self.target_size == 0 {
            "target_size must be at least 1".to_owned()
        } else if self.low_watermark > self.target_size {
            format!(
                "low_watermark {} is above target_size {}",
                self.low_watermark, self.target_size
            )
        } else if self.target_size > self.hard_cap {
            format!(
                "target_size {} is above hard_cap {}",
                self.target_size, self.hard_cap
            )
        } else if self.lifetime_secs == 0 || self.lifetime_secs > MAX_LIFETIME_SECS {
            format!(
                "lifetime_secs {} is outside 1..={MAX_LIFETIME_SECS}, the validity window peers accept",
                self.lifetime_secs
            )
        } else if i64::try_from(self.expiry_horizon_secs).is_err() {
            format!(
                "expiry_horizon_secs {} does not fit in i64",
                self.expiry_horizon_secs
            )
        } else {
            return Ok(());
        };
        Err(Error::InvalidConfig { reason })
    }
}

/// A KeyPackage waiting to be uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    /// The raw KeyPackageRef.
    pub keypackage_ref: Vec<u8>,
    /// The TLS-encoded `KeyPackage` (public part only), as a server takes it.
    pub key_package: Vec<u8>,
    /// The end of its lifetime, in Unix seconds.
    pub not_after: i64,
}

/// What the pool should do next, most urgent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolAction {
    /// Nothing: the pool is healthy.
    None,
    /// Delete this many expired KeyPackages ([`KeyPackagePool::prune_expired`]).
    Prune(usize),
    /// There is no valid last-resort KeyPackage
    /// ([`KeyPackagePool::ensure_last_resort`]).
    CreateLastResort,
    /// Generate this many KeyPackages ([`KeyPackagePool::replenish`]).
    Replenish(usize),
}

/// A snapshot of the pool, read in one SQL statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolHealth {
    counts: [usize; KeyPackageStatus::ALL.len()],
    /// Unexpired one-time KeyPackages waiting for upload (`created`).
    pub pending_upload: usize,
    /// Unexpired one-time KeyPackages a server can hand out (uploaded or
    /// available).
    pub usable: usize,
    /// Unexpired live one-time KeyPackages (created, uploaded, available or
    /// reserved), the figure the hard cap limits.
    pub live: usize,
    /// Whether a live last-resort KeyPackage is valid now.
    pub has_last_resort: bool,
    /// Live KeyPackages (last-resort included) whose `not_after` falls within
    /// the configured horizon.
    pub expiring_soon: usize,
    /// The oldest `not_after` among live KeyPackages that have not expired:
    /// when the next one will.
    pub next_expiry: Option<i64>,
    /// Expired KeyPackages [`prune_expired`](KeyPackagePool::prune_expired)
    /// would delete now.
    pub prunable: usize,
    /// What to do next.
    pub recommended: PoolAction,
}

impl PoolHealth {
    /// How many KeyPackages (last-resort and expired ones included) are in
    /// `status`.
    pub fn count(&self, status: KeyPackageStatus) -> usize {
        KeyPackageStatus::ALL
            .iter()
            .position(|s| *s == status)
            .map_or(0, |i| self.counts[i])
    }
}

/// What [`KeyPackagePool::ensure_last_resort`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LastResortReport {
    /// The ref of the last-resort KeyPackage it built, if it built one.
    pub created: Option<Vec<u8>>,
    /// Refs of surplus valid last-resort KeyPackages it deleted; tell the
    /// server.
    pub removed: Vec<Vec<u8>>,
}

/// A managed pool of one-time KeyPackages on a [`PoolProvider`].
///
/// Which KeyPackages count where (only unexpired ones count at all: an
/// expired KeyPackage must not be handed out, whether or not it was pruned):
/// - **usable** = `uploaded` + `available`: what the server can hand out.
///   `reserved` ones are about to be consumed, so they do not keep the pool
///   from running dry.
/// - **pending** = `created`: on their way to the server. They do not make
///   the pool usable, but [`replenish`](Self::replenish) does not build them
///   again, so calling it twice before an upload does not double the pool.
/// - **live** = `created` + `uploaded` + `available` + `reserved`: every
///   one-time KeyPackage whose private keys may still be needed. The hard cap
///   bounds this, so a client whose uploads keep failing does not pile up
///   keys.
///
/// Last-resort KeyPackages are counted in none of these; they are managed by
/// [`ensure_last_resort`](Self::ensure_last_resort).
///
/// Generation holds the database's write lock while it builds (the crypto
/// included), so that the batch is one transaction: about 0.2 ms per
/// KeyPackage, during which other connections' writes wait (up to their
/// busy timeout).
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
/// assert_eq!(pending.len(), 4);
/// // ... send `pending[i].key_package` to the server, then:
/// let refs: Vec<_> = pending.into_iter().map(|p| p.keypackage_ref).collect();
/// pool.mark_uploaded(&refs)?;
/// assert_eq!(pool.health(1_700_000_000)?.usable, 4);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct KeyPackagePool<'a, S: Signer, C: PoolCodec = DefaultCodec> {
    provider: &'a PoolProvider<C>,
    signer: &'a S,
    credential: CredentialWithKey,
    config: PoolConfig,
}

impl<'a, S: Signer, C: PoolCodec> KeyPackagePool<'a, S, C> {
    /// A pool that builds KeyPackages on `provider`, signed by `signer` for
    /// `credential`. Fails if `config` does not [validate](PoolConfig::validate).
    pub fn new(
        provider: &'a PoolProvider<C>,
        signer: &'a S,
        credential: CredentialWithKey,
        config: PoolConfig,
    ) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            provider,
            signer,
            credential,
            config,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// The provider the pool builds on.
    pub fn provider(&self) -> &'a PoolProvider<C> {
        self.provider
    }

    /// Builds `n` one-time KeyPackages in one transaction (one commit for the
    /// batch) and returns their refs.
    ///
    /// Refuses with [`Error::HardCapExceeded`] when the live KeyPackages plus
    /// `n` would pass the hard cap. Any failure part-way leaves none of the
    /// batch behind.
    pub fn generate(&self, n: usize) -> Result<Vec<Vec<u8>>> {
        self.build_batch(n, false, |_| ())
    }

    /// [`generate`](Self::generate), calling `progress` with the number built
    /// so far after each KeyPackage (for a progress bar). Still one
    /// transaction.
    pub fn generate_with_progress(
        &self,
        n: usize,
        progress: impl FnMut(usize),
    ) -> Result<Vec<Vec<u8>>> {
        self.build_batch(n, false, progress)
    }

    /// [`generate`](Self::generate) with the crypto spread over `threads`
    /// threads: the calling thread and `threads - 1` workers.
    ///
    /// Each worker builds KeyPackages with its own crypto provider and no
    /// storage. The calling thread writes every bundle and its metadata row,
    /// through the same code as OpenMLS's storage hook and all in one
    /// transaction, and builds KeyPackages itself whenever no finished one is
    /// waiting, so `threads` busy threads share `threads` cores without a
    /// writer thread competing for them. A failure anywhere stops the workers
    /// and leaves nothing behind. `threads` is clamped to `1..=n` (and at
    /// most [`MAX_THREADS`]).
    pub fn generate_parallel(&self, n: usize, threads: usize) -> Result<Vec<Vec<u8>>>
    where
        S: Sync,
    {
        let threads = threads.clamp(1, n.clamp(1, MAX_THREADS));
        self.provider.storage().transaction(|storage| {
            self.check_cap(n)?;
            let claimed = AtomicUsize::new(0);
            let claim = || claimed.fetch_add(1, Ordering::Relaxed) < n;
            // A small bound keeps memory flat: workers wait for the writer
            // rather than pile up built bundles.
            let (sender, receiver) = mpsc::sync_channel(threads.saturating_mul(4));
            let (signer, credential, config) = (self.signer, &self.credential, &self.config);
            std::thread::scope(|scope| {
                let mut workers = Vec::with_capacity(threads - 1);
                for i in 1..threads {
                    let sender = sender.clone();
                    let spawned = std::thread::Builder::new()
                        .name(format!("keypackage-worker-{i}"))
                        .spawn_scoped(scope, move || {
                            let scratch = ScratchProvider::default();
                            while claim() {
                                let built =
                                    build_key_package(&scratch, signer, credential, config, false);
                                let failed = built.is_err();
                                if sender.send(built).is_err() || failed {
                                    break;
                                }
                            }
                        });
                    match spawned {
                        Ok(worker) => workers.push(worker),
                        // Workers already started see the closed channel
                        // when the receiver drops, and stop.
                        Err(e) => return Err(Error::Worker(format!("cannot start a thread: {e}"))),
                    }
                }
                drop(sender);
                let written = (|| {
                    let scratch = ScratchProvider::default();
                    let mut refs = Vec::new();
                    while refs.len() < n {
                        let built = match receiver.try_recv() {
                            Ok(built) => built,
                            Err(_) if claim() => {
                                build_key_package(&scratch, signer, credential, config, false)
                            }
                            // Everything is claimed: wait for the workers.
                            Err(_) => match receiver.recv() {
                                Ok(built) => built,
                                Err(_) => break,
                            },
                        };
                        let (kp_ref, bundle) = built?;
                        refs.push(store(storage, &kp_ref, &bundle)?);
                    }
                    Ok(refs)
                })();
                // Dropped before joining: a worker blocked on a full channel
                // then fails its send and stops.
                drop(receiver);
                // Joining every worker turns a panic in one into an error
                // here instead of a panic out of the scope. (`any` would stop
                // at the first and leave the rest unjoined.)
                let mut panicked = false;
                for worker in workers {
                    panicked |= worker.join().is_err();
                }
                match written {
                    Err(e) => Err(e),
                    Ok(_) if panicked => Err(Error::Worker("a worker thread panicked".into())),
                    Ok(refs) if refs.len() != n => Err(Error::Worker(format!(
                        "workers delivered {} of {n} KeyPackages",
                        refs.len()
                    ))),
                    Ok(refs) => Ok(refs),
                }
            })
        })
    }

    /// When fewer than `low_watermark` usable KeyPackages remain, builds
    /// enough to bring usable plus pending ones back to `target_size`, and
    /// returns their refs (none when the pool is at or above the watermark,
    /// or when pending uploads already cover the gap).
    ///
    /// Never passes the hard cap: if the cap binds, it builds what fits.
    pub fn replenish(&self) -> Result<Vec<Vec<u8>>> {
        self.replenish_with_progress(|_, _| ())
    }

    /// [`replenish`](Self::replenish), calling `progress(done, total)` after
    /// each KeyPackage.
    pub fn replenish_with_progress(
        &self,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Vec<Vec<u8>>> {
        self.provider.storage().transaction(|storage| {
            let counts = metadata::one_time_counts(storage.connection(), unix_now()?)?;
            let n = self.replenish_need(counts);
            self.build_batch(n, false, |done| progress(done, n))
        })
    }

    /// How many KeyPackages [`replenish`](Self::replenish) builds for these
    /// counts; the one rule both it and [`health`](Self::health) follow.
    fn replenish_need(&self, counts: metadata::OneTimeCounts) -> usize {
        if counts.usable >= self.config.low_watermark {
            return 0;
        }
        let gap = self
            .config
            .target_size
            .saturating_sub(counts.usable.saturating_add(counts.created));
        gap.min(self.config.hard_cap.saturating_sub(counts.live))
    }

    /// The `created` KeyPackages, oldest first, TLS-encoded for the server.
    pub fn pending_upload(&self) -> Result<Vec<PendingUpload>> {
        let storage = self.provider.storage();
        storage
            .get_metadata_by_status(KeyPackageStatus::Created)?
            .into_iter()
            .map(|row| {
                let bundle = storage
                    .key_package_bundle(&row.keypackage_ref)?
                    .ok_or_else(|| Error::MissingBundle {
                        keypackage_ref: RefBytes::of(&row.keypackage_ref),
                    })?;
                let key_package = bundle.key_package().tls_serialize_detached().map_err(|e| {
                    Error::KeyPackageEncode {
                        keypackage_ref: RefBytes::of(&row.keypackage_ref),
                        message: e.to_string(),
                    }
                })?;
                Ok(PendingUpload {
                    keypackage_ref: row.keypackage_ref,
                    key_package,
                    not_after: row.not_after,
                })
            })
            .collect()
    }

    /// Marks KeyPackages `uploaded`, all or none.
    pub fn mark_uploaded<R: AsRef<[u8]>>(&self, refs: &[R]) -> Result<()> {
        self.move_all(refs, KeyPackageStatus::Uploaded)
    }

    /// Marks KeyPackages `failed` (their upload did not go through), all or
    /// none.
    pub fn mark_failed<R: AsRef<[u8]>>(&self, refs: &[R]) -> Result<()> {
        self.move_all(refs, KeyPackageStatus::Failed)
    }

    /// Deletes, in one transaction, the bundle and metadata of every
    /// KeyPackage whose `not_after` is before `now`, and returns their refs
    /// so the application can withdraw them from its server.
    ///
    /// An expired last-resort KeyPackage is deleted only when a newer
    /// last-resort one exists, so the client always keeps a fallback.
    pub fn prune_expired(&self, now: i64) -> Result<Vec<Vec<u8>>> {
        self.provider.storage().transaction(|storage| {
            let refs = metadata::prunable_refs(storage.connection(), now)?;
            for keypackage_ref in &refs {
                storage.remove_key_package(keypackage_ref)?;
            }
            Ok(refs)
        })
    }

    /// Puts reserved KeyPackages whose reservation expired before `now` back
    /// to `available`; returns their refs.
    pub fn expire_lapsed_reservations(&self, now: i64) -> Result<Vec<Vec<u8>>> {
        let storage = self.provider.storage();
        storage.guard()?;
        metadata::release_lapsed_reservations(storage.connection(), now)
    }

    /// Counts, expiry and a recommended action, in one SQL statement.
    ///
    /// The recommendation goes by urgency: prune expired KeyPackages first
    /// (they must not be advertised), then create a missing last-resort
    /// KeyPackage, then replenish what [`replenish`](Self::replenish) would
    /// build.
    pub fn health(&self, now: i64) -> Result<PoolHealth> {
        // `validate` ensured the horizon fits in i64.
        let horizon = i64::try_from(self.config.expiry_horizon_secs).unwrap_or(i64::MAX);
        let summary = metadata::summary(
            self.provider.storage().connection(),
            now,
            now.saturating_add(horizon),
        )?;
        let need = self.replenish_need(summary.counts);
        let recommended = if summary.prunable > 0 {
            PoolAction::Prune(summary.prunable)
        } else if summary.valid_last_resort == 0 {
            PoolAction::CreateLastResort
        } else if need > 0 {
            PoolAction::Replenish(need)
        } else {
            PoolAction::None
        };
        Ok(PoolHealth {
            counts: summary.by_status,
            pending_upload: summary.counts.created,
            usable: summary.counts.usable,
            live: summary.counts.live,
            has_last_resort: summary.valid_last_resort > 0,
            expiring_soon: summary.expiring_soon,
            next_expiry: summary.next_expiry,
            prunable: summary.prunable,
            recommended,
        })
    }

    /// Keeps exactly one valid last-resort KeyPackage at `now`: builds one
    /// when none is valid, and when there are several keeps the best
    /// (published before unpublished, then the longest-lived) and deletes the
    /// others. A reserved one is never deleted here, since a Welcome built
    /// from it may be on its way; it goes once it expires. Expired ones are
    /// left to [`prune_expired`](Self::prune_expired).
    pub fn ensure_last_resort(&self, now: i64) -> Result<LastResortReport> {
        self.provider.storage().transaction(|storage| {
            let valid = metadata::valid_last_resort_refs(storage.connection(), now)?;
            let mut report = LastResortReport::default();
            match valid.split_first() {
                None => report.created = self.build_batch(1, true, |_| ())?.pop(),
                Some((_kept, surplus)) => {
                    // A reserved one may be in a Welcome on its way; it
                    // stays until it expires and is pruned.
                    for (keypackage_ref, _) in surplus.iter().filter(|(_, reserved)| !reserved) {
                        storage.remove_key_package(keypackage_ref)?;
                        report.removed.push(keypackage_ref.clone());
                    }
                }
            }
            Ok(report)
        })
    }

    /// Builds `n` KeyPackages and stores them in one transaction.
    fn build_batch(
        &self,
        n: usize,
        last_resort: bool,
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<Vec<u8>>> {
        self.provider.storage().transaction(|_| {
            if !last_resort {
                self.check_cap(n)?;
            }
            let scratch = ScratchProvider::default();
            let mut refs = Vec::new();
            for done in 1..=n {
                refs.push(self.build_one(&scratch, last_resort)?);
                progress(done);
            }
            Ok(refs)
        })
    }

    /// Builds one KeyPackage with `scratch` and stores it, bundle and
    /// metadata row together.
    fn build_one(&self, scratch: &ScratchProvider, last_resort: bool) -> Result<Vec<u8>> {
        let (kp_ref, bundle) = build_key_package(
            scratch,
            self.signer,
            &self.credential,
            &self.config,
            last_resort,
        )?;
        store(self.provider.storage(), &kp_ref, &bundle)
    }

    /// Refuses a batch of `n` that would take the unexpired live one-time
    /// KeyPackages past the hard cap.
    fn check_cap(&self, n: usize) -> Result<()> {
        let conn = self.provider.storage().connection();
        let live = metadata::one_time_counts(conn, unix_now()?)?.live;
        if live.saturating_add(n) > self.config.hard_cap {
            return Err(Error::HardCapExceeded {
                requested: n,
                live,
                hard_cap: self.config.hard_cap,
            });
        }
        Ok(())
    }

    fn move_all<R: AsRef<[u8]>>(&self, refs: &[R], to: KeyPackageStatus) -> Result<()> {
        self.provider.storage().transaction(|storage| {
            let now = unix_now()?;
            refs.iter().try_for_each(|r| {
                metadata::transition(
                    storage.connection(),
                    r.as_ref(),
                    to,
                    now,
                    TransitionDetails::None,
                )
            })
        })
    }
}

/// Stores a built KeyPackage, bundle and metadata row together; a failure
/// names the KeyPackage.
fn store<C: PoolCodec>(
    storage: &PoolStorage<C>,
    kp_ref: &KeyPackageRef,
    bundle: &KeyPackageBundle,
) -> Result<Vec<u8>> {
    storage
        .store_bundle(kp_ref, bundle)
        .map_err(|e| Error::KeyPackageStore {
            keypackage_ref: RefBytes::of(kp_ref.as_slice()),
            source: Box::new(e),
        })?;
    Ok(kp_ref.as_slice().to_vec())
}

/// Builds one KeyPackage with the pool's ciphersuite and lifetime.
fn build_key_package(
    scratch: &ScratchProvider,
    signer: &impl Signer,
    credential: &CredentialWithKey,
    config: &PoolConfig,
    last_resort: bool,
) -> Result<(KeyPackageRef, KeyPackageBundle)> {
    // Built from this crate's clock rather than `Lifetime::new`, which
    // panics on a clock before 1970. Back-dated an hour for skewed peers,
    // as OpenMLS does.
    let now = u64::try_from(unix_now()?).unwrap_or_default();
    let lifetime = Lifetime::init(
        now.saturating_sub(CLOCK_SKEW_SECS),
        now.saturating_add(config.lifetime_secs),
    );
    let mut builder = KeyPackage::builder().key_package_lifetime(lifetime);
    if last_resort {
        builder = builder.mark_as_last_resort();
    }
    let bundle = builder
        .build(config.ciphersuite, scratch, signer, credential.clone())
        .map_err(Error::KeyPackageBuild)?;
    let kp_ref = match scratch.take_last_ref() {
        Some(kp_ref) => kp_ref,
        None => bundle
            .key_package()
            .hash_ref(scratch.crypto())
            .map_err(|e| Error::KeyPackageBuild(e.into()))?,
    };
    Ok((kp_ref, bundle))
}
