//! A whole group's life on `PoolProvider`, once per shipped codec: create,
//! add, join, messages both ways, update, remove, and reopening the database
//! file between steps.

mod common;

use std::path::Path;

use common::{build_key_package, into_protocol_message, join, Identity, PlainClient};
use openmls::prelude::*;
use openmls_keypackage_pool::{
    codec::{JsonCodec, MessagePackCodec, PoolCodec},
    KeyPackageStatus, PoolProvider, PoolStorage,
};
use openmls_traits::signatures::Signer;

fn open<C: PoolCodec>(path: &Path) -> PoolProvider<C> {
    PoolProvider::new(PoolStorage::<C>::open_with_codec(path).unwrap())
}

/// Sends an application message from `sender` and checks `receiver` reads it.
fn send(
    text: &[u8],
    (sender, sender_provider, sender_signer): (&mut MlsGroup, &impl OpenMlsProvider, &impl Signer),
    (receiver, receiver_provider): (&mut MlsGroup, &impl OpenMlsProvider),
) {
    let message = sender
        .create_message(sender_provider, sender_signer, text)
        .unwrap();
    let processed = receiver
        .process_message(receiver_provider, into_protocol_message(&message))
        .unwrap();
    match processed.into_content() {
        ProcessedMessageContent::ApplicationMessage(app) => assert_eq!(app.into_bytes(), text),
        other => panic!("expected an application message, got {other:?}"),
    }
}

/// Applies a commit that `receiver` did not author.
fn apply_commit(receiver: &mut MlsGroup, provider: &impl OpenMlsProvider, commit: &MlsMessageOut) {
    let processed = receiver
        .process_message(provider, into_protocol_message(commit))
        .unwrap();
    match processed.into_content() {
        ProcessedMessageContent::StagedCommitMessage(staged) => {
            receiver.merge_staged_commit(provider, *staged).unwrap()
        }
        other => panic!("expected a commit, got {other:?}"),
    }
}

fn full_lifecycle<C: PoolCodec>() {
    let (_dir, path) = common::temp_db();
    let bob = Identity::new("bob");
    let alice = PlainClient::new("alice");

    // Bob publishes a KeyPackage; Alice creates a group and adds him.
    let bundle = {
        let provider = open::<C>(&path);
        build_key_package(&provider, &bob, false)
    };
    let (mut alice_group, welcome) = alice.create_group_with(bundle.key_package());

    // Bob joins after reopening the file: the KeyPackage is found on disk.
    let group_id = {
        let provider = open::<C>(&path);
        let bob_group = join(&provider, welcome).unwrap();
        assert_eq!(
            provider
                .storage()
                .count_by_status(KeyPackageStatus::Created)
                .unwrap(),
            0
        );
        bob_group.group_id().clone()
    };

    // Messages both ways, each step on a freshly opened database.
    let provider = open::<C>(&path);
    let mut bob_group = MlsGroup::load(provider.storage(), &group_id)
        .unwrap()
        .unwrap();
    let alice_ctx = (&alice.provider, &alice.identity.signer);
    send(
        b"hello bob",
        (&mut alice_group, alice_ctx.0, alice_ctx.1),
        (&mut bob_group, &provider),
    );
    send(
        b"hello alice",
        (&mut bob_group, &provider, &bob.signer),
        (&mut alice_group, alice_ctx.0),
    );
    drop(provider);

    // Bob updates his leaf; Alice applies it.
    let provider = open::<C>(&path);
    let mut bob_group = MlsGroup::load(provider.storage(), &group_id)
        .unwrap()
        .unwrap();
    let epoch_before = bob_group.epoch();
    let update = bob_group
        .self_update(&provider, &bob.signer, LeafNodeParameters::default())
        .unwrap();
    bob_group.merge_pending_commit(&provider).unwrap();
    apply_commit(&mut alice_group, alice_ctx.0, update.commit());
    assert_eq!(bob_group.epoch(), alice_group.epoch());
    assert!(bob_group.epoch() > epoch_before);
    drop(provider);

    // After reopening, the updated state is what loads, and messages flow.
    let provider = open::<C>(&path);
    let mut bob_group = MlsGroup::load(provider.storage(), &group_id)
        .unwrap()
        .unwrap();
    assert_eq!(bob_group.epoch(), alice_group.epoch());
    send(
        b"after the update",
        (&mut alice_group, alice_ctx.0, alice_ctx.1),
        (&mut bob_group, &provider),
    );

    // Alice removes Bob.
    let (remove, _, _) = alice_group
        .remove_members(alice_ctx.0, alice_ctx.1, &[bob_group.own_leaf_index()])
        .unwrap();
    alice_group.merge_pending_commit(alice_ctx.0).unwrap();
    apply_commit(&mut bob_group, &provider, &remove);
    assert!(!bob_group.is_active());
    assert_eq!(alice_group.members().count(), 1);
    drop(provider);

    let provider = open::<C>(&path);
    let bob_group = MlsGroup::load(provider.storage(), &group_id)
        .unwrap()
        .unwrap();
    assert!(!bob_group.is_active(), "the removal was persisted");
}

#[test]
fn full_group_lifecycle_with_the_messagepack_codec() {
    full_lifecycle::<MessagePackCodec>();
}

#[test]
fn full_group_lifecycle_with_the_json_codec() {
    full_lifecycle::<JsonCodec>();
}

#[test]
fn the_default_provider_uses_a_codec_that_survives_the_lifecycle() {
    // PoolProvider::open uses the default codec; the lifecycle above is run
    // with it by name, and this pins the default to one of the two.
    let (_dir, path) = common::temp_db();
    let default = PoolProvider::open(&path).unwrap();
    let bundle = build_key_package(&default, &Identity::new("bob"), false);
    drop(default);
    let as_msgpack = open::<MessagePackCodec>(&path);
    let kp_ref = bundle.key_package().hash_ref(as_msgpack.crypto()).unwrap();
    assert!(common::stored_bundle(as_msgpack.storage(), &kp_ref).is_some());
}
