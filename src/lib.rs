//! SQLite storage for [OpenMLS](https://docs.rs/openmls) that keeps a tracked
//! pool of one-time KeyPackages.
//!
//! # The problem
//!
//! An MLS client publishes one-time KeyPackages to its server and must know
//! which of them it has created, uploaded, had reserved, seen spent or let
//! expire. OpenMLS stores each KeyPackageBundle (with its private keys) but
//! cannot list them, so applications keep their own list, usually written in
//! a separate transaction. A crash between the two writes leaves private keys
//! nobody tracks, or an advertised KeyPackage whose keys are gone.
//!
//! # What this crate does
//!
//! [`PoolStorage`] is an OpenMLS `StorageProvider` that stores every OpenMLS
//! entity through `openmls_sqlite_storage`, and writes (or deletes) a row in
//! its `keypackage_pool_metadata` table **in the same SQLite transaction** as
//! each KeyPackageBundle. [`PoolProvider`] pairs it with a crypto provider,
//! `openmls_rust_crypto` unless another is given; pass it to OpenMLS wherever
//! a provider is asked for.
//!
//! ```
//! use openmls::prelude::*;
//! use openmls_basic_credential::SignatureKeyPair;
//! use openmls_keypackage_pool::{KeyPackageStatus, PoolProvider};
//!
//! let dir = tempfile::tempdir()?;
//! let provider = PoolProvider::open(dir.path().join("client.db"))?;
//! let ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
//! let signer = SignatureKeyPair::new(ciphersuite.signature_algorithm())?;
//! let credential = CredentialWithKey {
//!     credential: BasicCredential::new(b"bob".to_vec()).into(),
//!     signature_key: signer.public().into(),
//! };
//!
//! // Build three KeyPackages in one transaction: one commit for the batch.
//! provider.transaction(|provider| -> Result<(), Box<dyn std::error::Error>> {
//!     for _ in 0..3 {
//!         KeyPackage::builder().build(ciphersuite, provider, &signer, credential.clone())?;
//!     }
//!     Ok(())
//! })?;
//!
//! let storage = provider.storage();
//! assert_eq!(storage.count_by_status(KeyPackageStatus::Created)?, 3);
//! for row in storage.get_metadata_by_status(KeyPackageStatus::Created)? {
//!     // ... upload the KeyPackage, then:
//!     storage.update_pool_metadata_status(&row.keypackage_ref, KeyPackageStatus::Uploaded)?;
//! }
//! assert_eq!(storage.count_by_status(KeyPackageStatus::Uploaded)?, 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! When a Welcome consumes one of these KeyPackages, OpenMLS deletes its
//! bundle and the pool row goes with it (or, with a grace window, both stay
//! until the window ends, so that a second Welcome naming it still joins);
//! if a server may still hand it out, a withdrawal is recorded in the same
//! transaction. Last-resort KeyPackages are never deleted by OpenMLS, and
//! keep their rows.
//!
//! # One OpenMLS operation, one commit
//!
//! OpenMLS writes each entity through a storage call of its own, and outside
//! a transaction each call is a commit: joining from a Welcome is a dozen
//! commits, the first of which deletes the KeyPackage; merging a commit is
//! about fifteen. A crash between them loses the invitation or tears the
//! group. Run each operation in [`PoolProvider::transaction`] (joining,
//! creating a group, building KeyPackages) or
//! [`PoolProvider::group_transaction`] (processing and merging a commit,
//! an own commit, a message): it is then one commit, all of it or none, and
//! after a rollback the `MlsGroup` in memory is reloaded as the store holds
//! it. The examples there (a join, and a merge rolled back) run as doc
//! tests; `tests/operation_crashes.rs` stops a process before each commit
//! of each operation, bare and in a transaction.
//!
//! # Threads
//!
//! [`PoolProvider`] and [`PoolStorage`] are `Send + Sync`: share one in an
//! `Arc`. A transaction belongs to the thread that began it; other threads'
//! calls wait until it ends. [`PoolStorage::close`] finishes pending
//! erasure and releases the file, reporting what dropping it cannot.
//!
//! # Where to go next
//!
//! - [`KeyPackagePool`]: keep a pool published, topped up and pruned; build
//!   batches in one transaction, or in parallel.
//! - [`KeyPackageStatus`]: the lifecycle and which moves it allows.
//! - [`PoolStorage`]: the metadata store, outer transactions, identities, and
//!   adopting a database written by plain `openmls_sqlite_storage`.
//! - [`PoolStorage::pending_withdrawals`]: the outbox of KeyPackages the
//!   server should stop handing out, and the upload-withdraw-confirm loop;
//!   [`StorageOptions::spent_key_package_grace`] for the grace window.
//! - [`StorageOptions`]: journal mode, sync level, busy timeout,
//!   `secure_delete` and the [`ErasurePolicy`] for old copies of secrets in
//!   the write-ahead log (erased by the clock, on a background thread); with
//!   the `sqlcipher` feature, `PoolStorage::open_with_key` (a raw key from
//!   the platform keystore), `open_encrypted` (a passphrase) and `rekey`.
//! - [`PoolStorage::verify`] and [`PoolStorage::repair`]: checks for
//!   start-up.
//! - [`PoolProvider::with_crypto`]: another crypto provider. With the
//!   `libcrux` feature, `PoolProvider::libcrux` uses `openmls_libcrux_crypto`,
//!   which alone implements the X-Wing post-quantum ciphersuite (feature
//!   `draft-ietf-mls-pq-ciphersuites`, which an application enabling OpenMLS's
//!   feature of that name must enable here too).
//! - [`codec`]: the on-disk format of OpenMLS's entities.
//! - [`Error`]: what can fail, and for which ref.
//! - [`guide`]: the guides, one page per part of the crate, with examples;
//!   the full performance and reliability tables are `docs/performance.md`
//!   and `docs/reliability.md` in the repository.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod guide;

// Every Rust block of the README compiles (and runs, unless marked) as a doc
// test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod bundles;
mod catalog;
mod clock;
pub mod codec;
mod codec_marker;
mod erasure;
mod error;
mod files;
mod grace;
mod identity;
mod keying;
mod keypackage_ref;
mod metadata;
mod options;
mod pool;
mod provider;
mod schema;
mod scope;
mod scratch;
mod status;
mod storage;
mod storage_methods;
mod storage_status;
mod verify;
mod withdrawal;
mod write_gate;

pub use erasure::{ErasureBlocker, ErasurePolicy};
pub use error::{Error, RefBytes, Result};
#[cfg(feature = "sqlcipher")]
pub use keying::DatabaseKey;
pub use keypackage_ref::{key_package_ref_from_bytes, MAX_REF_LEN};
pub use metadata::{KeyPackageMetadata, PoolEntry, PoolScope};
/// `openmls_libcrux_crypto`'s crypto and randomness provider, the one that
/// implements the X-Wing post-quantum ciphersuite (with the
/// `draft-ietf-mls-pq-ciphersuites` feature).
#[cfg(feature = "libcrux")]
pub use openmls_libcrux_crypto::CryptoProvider as LibcruxCrypto;
pub use options::{JournalMode, StorageOptions, Synchronous, MAX_BUSY_TIMEOUT, MAX_GRACE};
pub use pool::{
    KeyPackagePool, LastResortReport, PendingUpload, PendingUploads, PoolAction, PoolConfig,
    PoolHealth, UnreadableKeyPackage, MAX_LIFETIME_SECS, MAX_THREADS,
};
pub use provider::{PoolCrypto, PoolProvider};
pub use scope::ScopeSummary;
pub use status::KeyPackageStatus;
pub use storage::{ConnectionGuard, PoolStorage};
pub use storage_status::{ErasureStatus, SqliteBuild, StorageStatus};
pub use verify::ConsistencyReport;
pub use withdrawal::{Withdrawal, WithdrawalReason};

/// For this crate's own tests: counts of the write transactions and
/// checkpoints it runs, and of any that overlapped within the process.
#[doc(hidden)]
pub mod __probe {
    pub use crate::write_gate::probe::{counts, start, ProbeCounts};
}
