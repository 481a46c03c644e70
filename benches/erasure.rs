//! What erasing overwritten secrets costs: a member on a database file
//! decrypts 1,000 application messages in one epoch (each one rewrites its
//! stored secret tree in a commit of its own), under each erasure policy.
//!
//! `cargo bench --bench erasure`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_keypackage_pool::{ErasurePolicy, PoolProvider, StorageOptions};
use openmls_rust_crypto::OpenMlsRustCrypto;
use tls_codec::{Deserialize as _, Serialize as _};

const MESSAGES: usize = 1_000;
const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

fn identity(name: &str) -> (SignatureKeyPair, CredentialWithKey) {
    let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).expect("key pair");
    let credential = CredentialWithKey {
        credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
        signature_key: signer.public().into(),
    };
    (signer, credential)
}

fn over_the_wire(message: &MlsMessageOut) -> MlsMessageIn {
    MlsMessageIn::tls_deserialize_exact(message.tls_serialize_detached().expect("encode"))
        .expect("decode")
}

/// Bob on a fresh file with `policy`, joined to a group Alice created in
/// memory, and `MESSAGES` messages from her; then the time Bob takes to
/// decrypt them all.
fn process_messages(policy: ErasurePolicy) -> Duration {
    let dir = tempfile::tempdir().expect("dir");
    let options = StorageOptions {
        erasure: policy,
        ..StorageOptions::default()
    };
    let bob = PoolProvider::open_with_options(dir.path().join("bob.db"), &options).expect("open");
    let (bob_signer, bob_credential) = identity("bob");
    let bundle = KeyPackage::builder()
        .build(CIPHERSUITE, &bob, &bob_signer, bob_credential)
        .expect("key package");

    let alice = OpenMlsRustCrypto::default();
    let (alice_signer, alice_credential) = identity("alice");
    let create = MlsGroupCreateConfig::builder()
        .ciphersuite(CIPHERSUITE)
        .use_ratchet_tree_extension(true)
        .build();
    let mut alice_group =
        MlsGroup::new(&alice, &alice_signer, &create, alice_credential).expect("group");
    let (_, welcome, _) = alice_group
        .add_members(&alice, &alice_signer, &[bundle.key_package().clone()])
        .expect("add");
    alice_group.merge_pending_commit(&alice).expect("merge");
    let welcome = match over_the_wire(&welcome).extract() {
        MlsMessageBodyIn::Welcome(welcome) => welcome,
        _ => unreachable!("a Welcome"),
    };
    let join = MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .build();
    let mut bob_group = StagedWelcome::new_from_welcome(&bob, &join, welcome, None)
        .expect("welcome")
        .into_group(&bob)
        .expect("join");

    let messages: Vec<ProtocolMessage> = (0..MESSAGES)
        .map(|_| {
            let message = alice_group
                .create_message(&alice, &alice_signer, b"a short message")
                .expect("message");
            over_the_wire(&message)
                .try_into_protocol_message()
                .expect("protocol message")
        })
        .collect();

    let started = Instant::now();
    for message in messages {
        bob_group.process_message(&bob, message).expect("process");
    }
    started.elapsed()
}

fn policies(c: &mut Criterion) {
    let mut group = c.benchmark_group("process_1000_messages");
    group.sample_size(10);
    group.throughput(Throughput::Elements(MESSAGES as u64));
    let every_commit = ErasurePolicy::Overwrites {
        within: Duration::ZERO,
    };
    for (name, policy) in [
        ("deletions_only", ErasurePolicy::Deletions),
        ("overwrites_16_commits_2s", ErasurePolicy::default()),
        ("overwrites_every_commit", every_commit),
    ] {
        group.bench_function(BenchmarkId::new(name, MESSAGES), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| process_messages(policy))
                    .sum::<Duration>()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, policies);
criterion_main!(benches);
