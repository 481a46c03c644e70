//! Private keys of consumed and pruned KeyPackages, and the message and
//! epoch secrets OpenMLS has replaced, must not survive in the database file
//! or its write-ahead log. Checked the hard way: by searching the raw bytes
//! of every file SQLite keeps for the secret, in every encoding the codec
//! could have written it in.

mod common;

use std::time::Duration;

use common::{
    build_key_package,
    conversation::Conversation,
    join,
    secrets::msgpack_byte_sequences,
    traces::{private_keys, traces, until_none},
    Identity, PlainClient,
};
use openmls::prelude::*;
use openmls_keypackage_pool::{ErasurePolicy, KeyPackagePool, PoolProvider, StorageOptions};

/// How long after the default bound (2 seconds) a test waits for an
/// erasure before it calls the secrets found: the eraser's thread must be
/// scheduled on a loaded machine.
const SLACK: Duration = Duration::from_secs(3);

/// How long secrets may stay under `options`' policy, with [`SLACK`]: how
/// long a test waits for them to go.
fn bound(options: &StorageOptions) -> Duration {
    match options.erasure {
        ErasurePolicy::Overwrites { within } => within + SLACK,
        // Nothing erases overwrites: a control waits as long as the default.
        _ => Duration::from_secs(2) + SLACK,
    }
}

/// Consumes a KeyPackage through a real Welcome and returns where its init
/// key can still be found, searched while the database is still open (so
/// the write-ahead log is still there: closing the last connection would
/// checkpoint and remove it anyway).
fn traces_after_a_welcome(options: &StorageOptions) -> Vec<String> {
    let (dir, path) = common::temp_db();
    let provider = PoolProvider::open_with_options(&path, options).unwrap();
    assert!(
        path.with_extension("db-wal").exists(),
        "the test must run in WAL mode to mean anything"
    );
    let bob = Identity::new("bob");
    let bundle = build_key_package(&provider, &bob, false);
    let (init_key, _) = private_keys(&bundle);
    // Control: while the KeyPackage is live its key is found, so an empty
    // search later means erased, not missed.
    assert!(
        !traces(&path, &init_key).is_empty(),
        "the search cannot see the live key"
    );

    let (_group, welcome) = PlainClient::new("alice").create_group_with(bundle.key_package());
    join(&provider, welcome).unwrap();
    let found = traces(&path, &init_key);
    drop(provider);
    drop(dir);
    found
}

#[test]
fn a_key_package_consumed_by_a_welcome_leaves_no_trace_of_its_init_key() {
    assert_eq!(
        traces_after_a_welcome(&StorageOptions::default()),
        Vec::<String>::new()
    );
}

#[test]
fn without_secure_delete_the_same_search_finds_the_init_key() {
    // The search above is only worth something if it catches a leak.
    let options = StorageOptions {
        secure_delete: false,
        ..StorageOptions::default()
    };
    assert!(!traces_after_a_welcome(&options).is_empty());
}

#[test]
fn a_pruned_key_package_leaves_no_trace_of_either_private_key() {
    let (_dir, path) = common::temp_db();
    let provider = PoolProvider::open(&path).unwrap();
    let erin = Identity::new("erin");
    let pool = KeyPackagePool::new(
        &provider,
        &erin.signer,
        erin.credential.clone(),
        common::lifetime_days(1),
    )
    .unwrap();
    let refs = pool.generate(3).unwrap();
    let keys: Vec<(Vec<u8>, Vec<u8>)> = refs
        .iter()
        .map(|r| private_keys(&provider.storage().key_package_bundle(r).unwrap().unwrap()))
        .collect();
    for (init, encryption) in &keys {
        assert!(!traces(&path, init).is_empty());
        assert!(!traces(&path, encryption).is_empty());
    }

    let two_days_on = common::now() + 2 * 24 * 60 * 60;
    assert_eq!(pool.prune_expired(two_days_on).unwrap().len(), 3);
    // Searched with the database still open: see `traces_after_a_welcome`.
    for (init, encryption) in &keys {
        assert_eq!(traces(&path, init), Vec::<String>::new());
        assert_eq!(traces(&path, encryption), Vec::<String>::new());
    }
}

/// The secrets Bob's messages and a past-epoch deletion replaced, found in
/// the files once the policy's bound has passed: after 20 further messages
/// in one epoch, and after an epoch change and `delete_past_epoch_secrets`
/// followed by 16 messages. Nothing is committed while the test waits.
fn superseded_secret_traces(options: &StorageOptions) -> (Vec<String>, Vec<String>) {
    let mut chat = Conversation::new(options);
    chat.messages(1);
    let before_messages = chat.stored_message_secrets();
    // Control: the search sees the secrets while they are live.
    let live = msgpack_byte_sequences(&before_messages);
    assert!(
        !traces(&chat.path, &live[0]).is_empty(),
        "the search cannot see live secrets"
    );
    chat.messages(20);
    let after_messages = wait_for_erasure(&chat, &before_messages, options);

    chat.new_epoch();
    chat.messages(1);
    let with_past_epoch = chat.stored_message_secrets();
    chat.bob_group
        .delete_past_epoch_secrets(&chat.bob, PastEpochDeletion::delete_all())
        .unwrap();
    chat.messages(16);
    let after_deletion = wait_for_erasure(&chat, &with_past_epoch, options);
    (after_messages, after_deletion)
}

/// The traces of what `old` held and Bob's storage no longer does, once
/// none are left or the policy's bound (with slack) has passed; a policy
/// that never erases overwrites waits the whole time.
fn wait_for_erasure(chat: &Conversation, old: &[u8], options: &StorageOptions) -> Vec<String> {
    let superseded = chat.superseded(old);
    let found = || common::traces::traces_of_all(&chat.path, &superseded);
    if options.erasure == ErasurePolicy::Deletions {
        std::thread::sleep(bound(options));
        return found();
    }
    until_none(bound(options), found)
}

#[test]
fn message_and_past_epoch_secrets_replaced_by_openmls_leave_no_trace() {
    let (after_messages, after_deletion) = superseded_secret_traces(&StorageOptions::default());
    assert_eq!(after_messages, Vec::<String>::new());
    assert_eq!(after_deletion, Vec::<String>::new());
}

#[test]
fn erasing_after_deletions_only_leaves_replaced_secrets_in_the_log() {
    // The search above is only worth something if it catches a leak: with
    // the erasure of overwrites turned off, the replaced secrets are found.
    let options = StorageOptions {
        erasure: ErasurePolicy::Deletions,
        ..StorageOptions::default()
    };
    let (after_messages, after_deletion) = superseded_secret_traces(&options);
    assert!(!after_messages.is_empty());
    assert!(!after_deletion.is_empty());
}

#[test]
fn an_erasure_a_reader_blocked_is_finished_by_the_next_open() {
    let (_dir, path) = common::temp_db();
    let provider = PoolProvider::open(&path).unwrap();
    let bundle = build_key_package(&provider, &Identity::new("bob"), false);
    let (init_key, _) = private_keys(&bundle);
    let kp_ref = bundle.key_package().hash_ref(provider.crypto()).unwrap();

    // Another connection's read transaction keeps the log from being
    // truncated while the KeyPackage is deleted, and while the storage is
    // dropped.
    let reader = rusqlite::Connection::open(&path).unwrap();
    reader
        .execute_batch("BEGIN; SELECT COUNT(*) FROM openmls_key_packages;")
        .unwrap();
    provider
        .storage()
        .remove_key_package(kp_ref.as_slice())
        .unwrap();
    assert!(!provider.storage().erase_deleted_key_material().unwrap());
    drop(provider);
    assert!(
        !traces(&path, &init_key).is_empty(),
        "the reader did not block the erasure"
    );
    let pending = common::erasure_pending(&reader);
    reader.execute_batch("COMMIT").unwrap();
    assert!(!pending, "the reader's snapshot predates the record");

    // The record outlived the storage: the next open erases.
    let storage = openmls_keypackage_pool::PoolStorage::open(&path).unwrap();
    assert_eq!(traces(&path, &init_key), Vec::<String>::new());
    assert!(
        !common::erasure_pending(&storage.connection()),
        "the record is cleared once erased"
    );
}
