//! A post-quantum pool: X-Wing KeyPackages (`0x004D`) built by
//! `openmls_libcrux_crypto` on a database file, added by a peer on
//! libcrux's own provider, and joined on the pool's file.
//!
//! `cargo test --features libcrux,draft-ietf-mls-pq-ciphersuites --test post_quantum`
#![cfg(all(feature = "libcrux", feature = "draft-ietf-mls-pq-ciphersuites"))]

mod common;

use std::path::Path;

use common::{
    bundle_count, into_protocol_message, into_welcome, metadata_count, stored_bundle, Identity,
};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_keypackage_pool::{
    key_package_ref_from_bytes, KeyPackagePool, KeyPackageStatus, LibcruxCrypto, PoolConfig,
    PoolProvider, PoolStorage,
};
use tls_codec::Deserialize as _;

const X_WING: Ciphersuite = Ciphersuite::MLS_256_XWING_CHACHA20POLY1305_SHA256_Ed25519;

/// An X-Wing public key: an ML-KEM-768 key (1,184 bytes) and an X25519 key
/// (32 bytes). A classical X25519 init key is 32 bytes.
const X_WING_PUBLIC_KEY_LEN: usize = 1216;

type LibcruxPoolProvider =
    PoolProvider<openmls_keypackage_pool::codec::DefaultCodec, LibcruxCrypto>;

fn open(path: &Path) -> LibcruxPoolProvider {
    let storage = PoolStorage::open(path).expect("open the pool's database");
    PoolProvider::libcrux(storage).expect("libcrux seeds its generator")
}

/// A peer on `openmls_libcrux_crypto`'s own provider (in-memory storage),
/// as another client would be.
struct Peer {
    provider: openmls_libcrux_crypto::Provider,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
}

impl Peer {
    fn new() -> Self {
        let Identity { signer, credential } = Identity::for_suite("peter", X_WING);
        Self {
            provider: openmls_libcrux_crypto::Provider::new().expect("libcrux provider"),
            signer,
            credential,
        }
    }

    /// Reads a KeyPackage as a server hands it out, the way a peer must:
    /// decoded from its TLS bytes, then validated.
    fn receive(&self, tls_bytes: &[u8]) -> KeyPackage {
        KeyPackageIn::tls_deserialize_exact(tls_bytes)
            .expect("KeyPackage decodes")
            .validate(self.provider.crypto(), ProtocolVersion::Mls10)
            .expect("KeyPackage validates")
    }

    /// Creates an X-Wing group and adds the owner of `key_package`.
    fn invite(&self, key_package: KeyPackage) -> (MlsGroup, Welcome) {
        let config = MlsGroupCreateConfig::builder()
            .ciphersuite(X_WING)
            .use_ratchet_tree_extension(true)
            .build();
        let mut group = MlsGroup::new(
            &self.provider,
            &self.signer,
            &config,
            self.credential.clone(),
        )
        .expect("X-Wing group");
        let (_commit, welcome, _info) = group
            .add_members(&self.provider, &self.signer, &[key_package])
            .expect("add the pool's KeyPackage");
        group
            .merge_pending_commit(&self.provider)
            .expect("merge add");
        (group, into_welcome(&welcome))
    }
}

/// Joins with the pool's provider, so the KeyPackage is consumed from the
/// pool's file.
fn join(provider: &LibcruxPoolProvider, welcome: Welcome) -> MlsGroup {
    let config = MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .build();
    StagedWelcome::new_from_welcome(provider, &config, welcome, None)
        .expect("stage the Welcome")
        .into_group(provider)
        .expect("join")
}

fn kp_ref(raw: &[u8]) -> KeyPackageRef {
    key_package_ref_from_bytes(raw).expect("a valid ref")
}

#[test]
fn x_wing_pool_on_libcrux_generates_joins_and_reopens() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("pq-pool.db");
    let provider = open(&path);
    let Identity { signer, credential } = Identity::for_suite("quinn", X_WING);
    let config = PoolConfig {
        ciphersuite: X_WING,
        target_size: 8,
        low_watermark: 2,
        hard_cap: 16,
        ..PoolConfig::default()
    };
    let pool = KeyPackagePool::new(&provider, &signer, credential, config)
        .expect("libcrux implements X-Wing");

    // Both generation paths: one transaction each.
    let batch = pool.generate(3).expect("generate");
    let parallel = pool.generate_parallel(4, 2).expect("generate_parallel");
    assert_eq!((batch.len(), parallel.len()), (3, 4));
    let mut all: Vec<_> = batch.iter().chain(&parallel).cloned().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 7, "every ref is distinct");
    assert_eq!(bundle_count(provider.storage()), 7);
    assert_eq!(metadata_count(provider.storage()), 7);
    for raw in &all {
        let bundle = stored_bundle(provider.storage(), &kp_ref(raw)).expect("bundle stored");
        let key_package = bundle.key_package();
        assert_eq!(key_package.ciphersuite(), X_WING);
        assert_eq!(
            key_package.hpke_init_key().as_slice().len(),
            X_WING_PUBLIC_KEY_LEN,
            "an X-Wing init key"
        );
        let row = provider
            .storage()
            .get_metadata(raw)
            .expect("read metadata")
            .expect("a row with the bundle");
        assert_eq!(row.status, KeyPackageStatus::Created);
        assert_eq!(row.not_after as u64, key_package.life_time().not_after());
    }

    // Upload, as a client would.
    let pending = pool.pending_upload().expect("pending upload");
    assert!(pending.unreadable.is_empty());
    assert_eq!(pending.ready.len(), 7);
    pool.mark_uploaded(&pending.ready_refs())
        .expect("mark uploaded");
    let uploaded = |raw: &Vec<u8>| {
        pending
            .ready
            .iter()
            .find(|p| &p.keypackage_ref == raw)
            .expect("listed for upload")
            .key_package
            .clone()
    };

    // A peer adds one KeyPackage from each generation path, in two groups.
    let peer = Peer::new();
    let mut joined = Vec::new();
    for (consumed, raw) in [&batch[0], &parallel[0]].into_iter().enumerate() {
        let key_package = peer.receive(&uploaded(raw));
        assert_eq!(
            key_package
                .hash_ref(peer.provider.crypto())
                .expect("ref")
                .as_slice(),
            raw.as_slice(),
            "the peer computes the ref the pool recorded"
        );
        let (peer_group, welcome) = peer.invite(key_package);
        assert_eq!(welcome.ciphersuite(), X_WING);
        assert!(stored_bundle(provider.storage(), &kp_ref(raw)).is_some());

        let group = join(&provider, welcome);
        assert_eq!(group.ciphersuite(), X_WING);
        assert_eq!(group.epoch(), peer_group.epoch());

        // The bundle and its row went together, and nothing else did.
        assert!(
            stored_bundle(provider.storage(), &kp_ref(raw)).is_none(),
            "OpenMLS no longer finds the bundle"
        );
        assert_eq!(provider.storage().get_metadata(raw).expect("read"), None);
        let left = 7 - (consumed as i64 + 1);
        assert_eq!(bundle_count(provider.storage()), left);
        assert_eq!(metadata_count(provider.storage()), left);
        joined.push((peer_group, group.group_id().clone()));
    }
    let untouched = [
        &batch[1],
        &batch[2],
        &parallel[1],
        &parallel[2],
        &parallel[3],
    ];
    for raw in untouched {
        assert!(stored_bundle(provider.storage(), &kp_ref(raw)).is_some());
        let row = provider.storage().get_metadata(raw).expect("read");
        assert_eq!(row.map(|r| r.status), Some(KeyPackageStatus::Uploaded));
    }
    drop(pool);
    drop(provider);

    // Reopened from the file: each group loads and reads the peer's message.
    let provider = open(&path);
    let report = provider.storage().verify().expect("verify");
    assert!(report.is_consistent(), "{report:?}");
    assert_eq!(bundle_count(provider.storage()), 5);
    for (mut peer_group, group_id) in joined {
        let mut group = MlsGroup::load(provider.storage(), &group_id)
            .expect("load")
            .expect("the group was stored in the pool's file");
        assert_eq!(group.ciphersuite(), X_WING);
        assert_eq!(group.epoch(), peer_group.epoch());

        let message = peer_group
            .create_message(&peer.provider, &peer.signer, b"post-quantum hello")
            .expect("encrypt");
        let processed = group
            .process_message(&provider, into_protocol_message(&message))
            .expect("decrypt on the reopened group");
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(m) => {
                assert_eq!(m.into_bytes(), b"post-quantum hello")
            }
            other => panic!("expected an application message, got {other:?}"),
        }
    }
}
