//! Building KeyPackages in bulk: one transaction per batch, the crypto on
//! one thread or several, and the hard cap checked before any of it.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    mpsc,
};

use openmls::prelude::{CredentialWithKey, KeyPackage, KeyPackageBundle, KeyPackageRef, Lifetime};
use openmls_traits::{signatures::Signer, OpenMlsProvider};

use super::{config::Advertised, KeyPackagePool, PoolConfig};
use crate::{
    clock::unix_now,
    codec::PoolCodec,
    error::{Error, RefBytes, Result},
    metadata,
    provider::PoolCrypto,
    scratch::ScratchProvider,
    status::KeyPackageStatus,
    storage::PoolStorage,
};

/// The most worker threads [`KeyPackagePool::generate_parallel`] starts.
pub const MAX_THREADS: usize = 64;

/// How far `not_before` is set into the past, for peers whose clocks lag.
const CLOCK_SKEW_SECS: u64 = 60 * 60;

impl<S: Signer, C: PoolCodec, P: PoolCrypto> KeyPackagePool<'_, S, C, P> {
    /// Builds `n` one-time KeyPackages in one transaction (one commit for the
    /// batch) and returns their refs.
    ///
    /// Refuses with [`Error::HardCapExceeded`] when the one-time KeyPackages
    /// on disk plus `n` would pass the hard cap. Any failure part-way leaves
    /// none of the batch behind. `generate(0)` does nothing and succeeds,
    /// however full the pool.
    ///
    /// The batch is one [`PoolStorage::transaction`], which raises the page
    /// cache for its length.
    pub fn generate(&self, n: usize) -> Result<Vec<Vec<u8>>> {
        self.build_batch(n, |_| ())
    }

    /// [`generate`](Self::generate), calling `progress` with the number built
    /// so far after each KeyPackage (for a progress bar). Still one
    /// transaction.
    pub fn generate_with_progress(
        &self,
        n: usize,
        progress: impl FnMut(usize),
    ) -> Result<Vec<Vec<u8>>> {
        self.build_batch(n, progress)
    }

    /// [`generate`](Self::generate) with the crypto spread over `threads`
    /// threads: the calling thread and `threads - 1` workers.
    ///
    /// Every thread builds KeyPackages with the pool's one crypto provider
    /// (hence `P: Sync`; its random generator is behind a lock, held briefly)
    /// and no storage. The calling thread writes every bundle and its metadata row,
    /// through the same code as OpenMLS's storage hook and all in one
    /// transaction, and builds KeyPackages itself whenever no finished one is
    /// waiting, so `threads` busy threads share `threads` cores without a
    /// writer thread competing for them. A failure anywhere stops the workers
    /// and leaves nothing behind. `threads` is clamped to `1..=n` (and at
    /// most [`MAX_THREADS`]). The page cache is raised for the batch as in
    /// [`generate`](Self::generate).
    pub fn generate_parallel(&self, n: usize, threads: usize) -> Result<Vec<Vec<u8>>>
    where
        S: Sync,
        P: Sync,
    {
        if n == 0 {
            return Ok(Vec::new());
        }
        let threads = threads.clamp(1, n.min(MAX_THREADS));
        self.provider.storage().transaction(|storage| {
            self.check_cap(n)?;
            let claimed = AtomicUsize::new(0);
            let claim = || claimed.fetch_add(1, Ordering::Relaxed) < n;
            // A small bound keeps memory flat: workers wait for the writer
            // rather than pile up built bundles.
            let (sender, receiver) = mpsc::sync_channel(threads.saturating_mul(4));
            let (signer, credential, config, advertised) = (
                self.signer,
                &self.credential,
                &self.config,
                &self.advertised,
            );
            // One crypto provider for every thread, as the pool's own.
            let crypto = self.provider.crypto();
            std::thread::scope(|scope| {
                let mut workers = Vec::with_capacity(threads - 1);
                for i in 1..threads {
                    let sender = sender.clone();
                    let spawned = std::thread::Builder::new()
                        .name(format!("keypackage-worker-{i}"))
                        .spawn_scoped(scope, move || {
                            let scratch = ScratchProvider::new(crypto);
                            while claim() {
                                let built = build_key_package(
                                    &scratch, signer, credential, config, advertised, false,
                                );
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
                        Err(e) => {
                            return Err(Error::Worker {
                                what: "cannot start a thread".into(),
                                source: Some(e),
                            })
                        }
                    }
                }
                drop(sender);
                let written = (|| {
                    let scratch = ScratchProvider::new(crypto);
                    let mut batch = Batch::default();
                    while batch.refs.len() < n {
                        let built = match receiver.try_recv() {
                            Ok(built) => built,
                            Err(_) if claim() => build_key_package(
                                &scratch, signer, credential, config, advertised, false,
                            ),
                            // Everything is claimed: wait for the workers.
                            Err(_) => match receiver.recv() {
                                Ok(built) => built,
                                Err(_) => break,
                            },
                        };
                        let (kp_ref, bundle) = built?;
                        batch.push(store(storage, &kp_ref, &bundle)?);
                    }
                    Ok(batch)
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
                    Ok(_) if panicked => Err(Error::worker("a worker thread panicked")),
                    Ok(batch) if batch.refs.len() != n => Err(Error::worker(format!(
                        "workers delivered {} of {n} KeyPackages",
                        batch.refs.len()
                    ))),
                    Ok(batch) => self.count(batch, false),
                }
            })
        })
    }

    /// Builds `n` one-time KeyPackages and stores them in one transaction.
    pub(super) fn build_batch(
        &self,
        n: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<Vec<u8>>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        self.provider.storage().transaction(|_| {
            self.check_cap(n)?;
            let scratch = ScratchProvider::new(self.provider.crypto());
            let mut batch = Batch::default();
            for done in 1..=n {
                batch.push(self.build_one(&scratch, false)?);
                progress(done);
            }
            self.count(batch, false)
        })
    }

    /// Counts a batch's new rows, once, in the batch's transaction (inserts
    /// are not counted by a trigger, see migration V6); returns its refs.
    fn count(&self, batch: Batch, last_resort: bool) -> Result<Vec<Vec<u8>>> {
        metadata::add_count(
            &self.provider.storage().connection(),
            metadata::ScopeColumns::of_scope(&self.scope),
            KeyPackageStatus::Created,
            last_resort,
            batch.inserted,
        )?;
        Ok(batch.refs)
    }

    /// Builds one last-resort KeyPackage and stores it; the hard cap does
    /// not apply (see [`ensure_last_resort`](Self::ensure_last_resort) for
    /// what bounds them).
    pub(super) fn build_one_last_resort(&self) -> Result<Vec<u8>> {
        self.provider.storage().transaction(|_| {
            let mut batch = Batch::default();
            batch.push(self.build_one(&ScratchProvider::new(self.provider.crypto()), true)?);
            let mut refs = self.count(batch, true)?;
            refs.pop()
                .ok_or_else(|| Error::worker("no last-resort KeyPackage was built"))
        })
    }

    /// Builds one KeyPackage with `scratch` and stores it, bundle and
    /// metadata row together.
    fn build_one(&self, scratch: &ScratchProvider<'_, P>, last_resort: bool) -> Result<Stored> {
        let (kp_ref, bundle) = build_key_package(
            scratch,
            self.signer,
            &self.credential,
            &self.config,
            &self.advertised,
            last_resort,
        )?;
        store(self.provider.storage(), &kp_ref, &bundle)
    }

    /// Refuses a batch of `n` that would take the one-time KeyPackages on
    /// disk (of the pool's signature key and ciphersuite, stale ones
    /// included) past the hard cap.
    fn check_cap(&self, n: usize) -> Result<()> {
        let held = metadata::held_one_time(&self.provider.storage().connection(), &self.scope)?;
        if held.saturating_add(n) > self.config.hard_cap {
            return Err(Error::HardCapExceeded {
                requested: n,
                held,
                hard_cap: self.config.hard_cap,
            });
        }
        Ok(())
    }
}

/// Stores a built KeyPackage, bundle and metadata row together; a failure
/// names the KeyPackage.
fn store<C: PoolCodec>(
    storage: &PoolStorage<C>,
    kp_ref: &KeyPackageRef,
    bundle: &KeyPackageBundle,
) -> Result<Stored> {
    let inserted = storage
        .store_bundle(kp_ref, bundle)
        .map_err(|e| Error::KeyPackageStore {
            keypackage_ref: RefBytes::of(kp_ref.as_slice()),
            source: Box::new(e),
        })?;
    Ok(Stored {
        keypackage_ref: kp_ref.as_slice().to_vec(),
        inserted,
    })
}

/// A KeyPackage just stored: its ref, and whether its metadata row is new
/// (and so still to be counted).
struct Stored {
    keypackage_ref: Vec<u8>,
    inserted: bool,
}

/// The refs of a batch just stored, and how many new rows it made.
#[derive(Default)]
struct Batch {
    refs: Vec<Vec<u8>>,
    inserted: usize,
}

impl Batch {
    fn push(&mut self, stored: Stored) {
        self.inserted += usize::from(stored.inserted);
        self.refs.push(stored.keypackage_ref);
    }
}

/// Builds one KeyPackage with the pool's ciphersuite and lifetime.
fn build_key_package(
    scratch: &ScratchProvider<'_, impl PoolCrypto>,
    signer: &impl Signer,
    credential: &CredentialWithKey,
    config: &PoolConfig,
    advertised: &Advertised,
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
    let mut builder = KeyPackage::builder()
        .key_package_lifetime(lifetime)
        .key_package_extensions(config.extensions.clone())
        .leaf_node_capabilities(if last_resort {
            advertised.last_resort.clone()
        } else {
            advertised.one_time.clone()
        });
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
