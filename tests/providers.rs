//! A pool refuses, at `KeyPackagePool::new` and before anything is written,
//! a ciphersuite its crypto provider does not implement.

mod common;

use std::path::Path;

use common::{bundle_count, metadata_count, temp_db, Identity};
use openmls::prelude::*;
use openmls_keypackage_pool::{Error, KeyPackagePool, PoolConfig, PoolCrypto, PoolProvider};

/// Every file in `dir` with its bytes, sorted by name: the database, its
/// write-ahead log and anything else SQLite left there. The `-shm` file is
/// only listed: it is SQLite's shared-memory index of the log, whose read
/// marks any connection's reads move (the storage's eraser has one of its
/// own), so its bytes say nothing about what was written.
fn files_in(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| {
            let entry = entry.expect("dir entry");
            if entry.file_name().to_string_lossy().ends_with("-shm") {
                return (entry.file_name().to_string_lossy().into_owned(), Vec::new());
            }
            let bytes = std::fs::read(entry.path()).expect("read file");
            (entry.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    files.sort();
    files
}

/// Asks `provider` for a pool of `ciphersuite`, expects the refusal, and
/// checks that it named the ciphersuite and wrote nothing: no bundle, no
/// metadata row, every file byte for byte as before. Then shows the same
/// provider and file still take a pool of a ciphersuite the provider does
/// implement, so the refusal is about the suite alone.
fn assert_refused<P: PoolCrypto>(
    dir: &Path,
    provider: &PoolProvider<openmls_keypackage_pool::codec::DefaultCodec, P>,
    ciphersuite: Ciphersuite,
    expected_code: u16,
) {
    let identity = Identity::new("grace");
    // The pool's database already holds one KeyPackage, so "unchanged" is
    // not just "still empty".
    let classical = KeyPackagePool::new(
        provider,
        &identity.signer,
        identity.credential.clone(),
        PoolConfig::default(),
    )
    .expect("the default ciphersuite is supported");
    classical.generate(1).expect("generate");
    let before = files_in(dir);
    assert_eq!(bundle_count(provider.storage()), 1);
    assert_eq!(metadata_count(provider.storage()), 1);

    let config = PoolConfig {
        ciphersuite,
        ..PoolConfig::default()
    };
    let refused = KeyPackagePool::new(
        provider,
        &identity.signer,
        identity.credential.clone(),
        config,
    );
    match refused {
        Err(Error::UnsupportedCiphersuite { code, name }) => {
            assert_eq!(code, expected_code);
            assert_eq!(code, u16::from(ciphersuite));
            assert_eq!(name, format!("{ciphersuite:?}"));
        }
        Err(other) => panic!("expected UnsupportedCiphersuite, got {other:?}"),
        Ok(_) => panic!("{ciphersuite:?} was accepted by a provider that does not implement it"),
    }

    assert_eq!(bundle_count(provider.storage()), 1);
    assert_eq!(metadata_count(provider.storage()), 1);
    assert_eq!(files_in(dir), before, "the refusal changed a file");

    // Still usable afterwards.
    classical.generate(1).expect("generate after the refusal");
    assert_eq!(bundle_count(provider.storage()), 2);
    assert_eq!(metadata_count(provider.storage()), 2);
}

#[test]
fn x448_is_refused_by_rust_crypto_before_anything_is_written() {
    let (dir, path) = temp_db();
    let provider = PoolProvider::open(&path).expect("open");
    assert_refused(
        dir.path(),
        &provider,
        Ciphersuite::MLS_256_DHKEMX448_AES256GCM_SHA512_Ed448,
        0x0004,
    );
}

/// `openmls_rust_crypto` knows the X-Wing suite's code point under the
/// post-quantum feature but does not implement it.
#[cfg(feature = "draft-ietf-mls-pq-ciphersuites")]
#[test]
fn x_wing_is_refused_by_rust_crypto_before_anything_is_written() {
    let (dir, path) = temp_db();
    let provider = PoolProvider::open(&path).expect("open");
    assert_refused(
        dir.path(),
        &provider,
        Ciphersuite::MLS_256_XWING_CHACHA20POLY1305_SHA256_Ed25519,
        0x004D,
    );
}

/// `openmls_libcrux_crypto` signs with Ed25519 only, so a P-256 suite that
/// `openmls_rust_crypto` implements is refused on it.
#[cfg(feature = "libcrux")]
#[test]
fn p256_is_refused_by_libcrux_before_anything_is_written() {
    let (dir, path) = temp_db();
    let storage = openmls_keypackage_pool::PoolStorage::open(&path).expect("open");
    let provider = PoolProvider::libcrux(storage).expect("libcrux provider");
    assert_refused(
        dir.path(),
        &provider,
        Ciphersuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256,
        0x0002,
    );

    let on_rust_crypto = PoolProvider::open(dir.path().join("rust-crypto.db")).expect("open");
    let identity = Identity::new("heidi");
    let config = PoolConfig {
        ciphersuite: Ciphersuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256,
        ..PoolConfig::default()
    };
    assert!(
        KeyPackagePool::new(
            &on_rust_crypto,
            &identity.signer,
            identity.credential.clone(),
            config
        )
        .is_ok(),
        "openmls_rust_crypto implements P-256"
    );
}
