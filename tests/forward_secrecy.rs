//! Private keys of consumed and pruned KeyPackages, and the message and
//! epoch secrets OpenMLS has replaced, must not survive in the database file
//! or its write-ahead log. Checked the hard way: by searching the raw bytes
//! of every file SQLite keeps for the secret, in every encoding the codec
//! could have written it in.

mod common;

use std::path::{Path, PathBuf};

use common::{
    build_key_package, into_protocol_message, join, secrets::msgpack_byte_sequences, Identity,
    PlainClient,
};
use openmls::prelude::*;
use openmls_keypackage_pool::{ErasurePolicy, KeyPackagePool, PoolProvider, StorageOptions};

/// The two private keys of a bundle, read from its serde form (OpenMLS only
/// exposes one of them outside its own tests).
fn private_keys(bundle: &KeyPackageBundle) -> (Vec<u8>, Vec<u8>) {
    let value = serde_json::to_value(bundle).unwrap();
    (
        first_byte_array(&value["private_init_key"]).expect("init key"),
        first_byte_array(&value["private_encryption_key"]).expect("encryption key"),
    )
}

fn first_byte_array(value: &serde_json::Value) -> Option<Vec<u8>> {
    match value {
        serde_json::Value::Array(items)
            if !items.is_empty() && items.iter().all(|i| i.is_u64()) =>
        {
            items.iter().map(|i| i.as_u64().map(|b| b as u8)).collect()
        }
        serde_json::Value::Array(items) => items.iter().find_map(first_byte_array),
        serde_json::Value::Object(map) => map.values().find_map(first_byte_array),
        _ => None,
    }
}

/// Every way a codec could have laid `key` out: raw, as MessagePack
/// integers (one byte each below 128, `0xcc` and the byte above), and as the
/// decimal list JSON writes.
fn encodings(key: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let msgpack = key
        .iter()
        .flat_map(|&b| if b < 128 { vec![b] } else { vec![0xcc, b] })
        .collect();
    let json = key
        .iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(",")
        .into_bytes();
    vec![
        ("raw", key.to_vec()),
        ("messagepack", msgpack),
        ("json", json),
    ]
}

/// The files SQLite may keep for a database.
fn database_files(db: &Path) -> Vec<PathBuf> {
    ["", "-wal", "-shm", "-journal"]
        .iter()
        .map(|suffix| PathBuf::from(format!("{}{suffix}", db.display())))
        .filter(|p| p.exists())
        .collect()
}

/// Where `key` can still be found, as "file: encoding" lines.
fn traces(db: &Path, key: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for file in database_files(db) {
        let bytes = std::fs::read(&file).unwrap();
        for (encoding, pattern) in encodings(key) {
            if bytes
                .windows(pattern.len())
                .any(|w| w == pattern.as_slice())
            {
                found.push(format!("{}: {encoding}", file.display()));
            }
        }
    }
    found
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

/// Bob, on a database file with `options`, in a group Alice (in memory)
/// created; he keeps the secrets of two past epochs, so that deleting them
/// is something to check.
struct Conversation {
    _dir: tempfile::TempDir,
    path: PathBuf,
    alice: PlainClient,
    alice_group: MlsGroup,
    bob: PoolProvider,
    bob_group: MlsGroup,
}

impl Conversation {
    fn new(options: &StorageOptions) -> Self {
        let (dir, path) = common::temp_db();
        let bob = PoolProvider::open_with_options(&path, options).unwrap();
        let bundle = build_key_package(&bob, &Identity::new("bob"), false);
        let alice = PlainClient::new("alice");
        let (alice_group, welcome) = alice.create_group_with(bundle.key_package());
        let config = MlsGroupJoinConfig::builder()
            .use_ratchet_tree_extension(true)
            .max_past_epochs(2)
            .build();
        let bob_group = StagedWelcome::new_from_welcome(&bob, &config, welcome, None)
            .unwrap()
            .into_group(&bob)
            .unwrap();
        Self {
            _dir: dir,
            path,
            alice,
            alice_group,
            bob,
            bob_group,
        }
    }

    /// Bob decrypts `n` application messages from Alice: each one advances
    /// his secret tree and overwrites its stored row.
    fn messages(&mut self, n: usize) {
        for _ in 0..n {
            let message = self
                .alice_group
                .create_message(&self.alice.provider, &self.alice.identity.signer, b"hi")
                .unwrap();
            let processed = self
                .bob_group
                .process_message(&self.bob, into_protocol_message(&message))
                .unwrap();
            assert!(matches!(
                processed.into_content(),
                ProcessedMessageContent::ApplicationMessage(_)
            ));
        }
    }

    /// Alice updates her leaf; Bob moves to the next epoch, keeping the
    /// last one's message secrets.
    fn new_epoch(&mut self) {
        let commit = self
            .alice_group
            .self_update(
                &self.alice.provider,
                &self.alice.identity.signer,
                LeafNodeParameters::default(),
            )
            .unwrap();
        self.alice_group
            .merge_pending_commit(&self.alice.provider)
            .unwrap();
        let processed = self
            .bob_group
            .process_message(&self.bob, into_protocol_message(commit.commit()))
            .unwrap();
        match processed.into_content() {
            ProcessedMessageContent::StagedCommitMessage(staged) => self
                .bob_group
                .merge_staged_commit(&self.bob, *staged)
                .unwrap(),
            other => panic!("expected a commit, got {other:?}"),
        }
    }

    /// Bob's stored message secrets (the secret trees of this epoch and the
    /// past ones he keeps), as the codec wrote them.
    fn stored_message_secrets(&self) -> Vec<u8> {
        self.bob
            .storage()
            .connection()
            .query_row(
                "SELECT group_data FROM openmls_group_data WHERE data_type = 'message_secrets'",
                [],
                |row| row.get(0),
            )
            .unwrap()
    }

    /// Every entity OpenMLS has stored for Bob, as stored.
    fn live_entities(&self) -> Vec<Vec<u8>> {
        let conn = self.bob.storage().connection();
        let mut stmt = conn
            .prepare(
                "SELECT group_data FROM openmls_group_data
                 UNION ALL SELECT key_pairs FROM openmls_epoch_keys_pairs
                 UNION ALL SELECT key_pair FROM openmls_encryption_keys
                 UNION ALL SELECT leaf_node FROM openmls_own_leaf_nodes
                 UNION ALL SELECT key_package FROM openmls_key_packages",
            )
            .unwrap();
        let rows = stmt.query_map([], |row| row.get(0)).unwrap();
        rows.map(Result::unwrap).collect()
    }

    /// Where the byte sequences that `old` held and no stored entity holds
    /// any more can still be found in the files, searched while the database
    /// is open. (A past epoch's stored secrets also hold public keys that
    /// the current tree still has: those are live, not superseded.)
    fn traces_of_superseded(&self, old: &[u8]) -> Vec<String> {
        let live = self.live_entities();
        let held = |secret: &Vec<u8>| {
            let stored = &encodings(secret)[1].1;
            live.iter()
                .any(|entity| entity.windows(stored.len()).any(|w| w == stored.as_slice()))
        };
        let mut gone: Vec<Vec<u8>> = msgpack_byte_sequences(old)
            .into_iter()
            .filter(|secret| !held(secret))
            .collect();
        gone.sort();
        gone.dedup();
        assert!(
            !gone.is_empty(),
            "nothing was superseded: the check is void"
        );
        gone.iter()
            .flat_map(|secret| traces(&self.path, secret))
            .collect()
    }
}

/// The secrets Bob's messages and a past-epoch deletion replaced, found in
/// the files: after 20 further messages in one epoch, and after
/// `delete_past_epoch_secrets` followed by 16 commits (the default policy's
/// bound).
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
    let after_messages = chat.traces_of_superseded(&before_messages);

    chat.new_epoch();
    chat.messages(1);
    let with_past_epoch = chat.stored_message_secrets();
    chat.bob_group
        .delete_past_epoch_secrets(&chat.bob, PastEpochDeletion::delete_all())
        .unwrap();
    chat.messages(16);
    let after_deletion = chat.traces_of_superseded(&with_past_epoch);
    (after_messages, after_deletion)
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
    let pending: Option<i64> = reader
        .query_row(
            "SELECT pending_since FROM openmls_keypackage_pool_erasure",
            [],
            |row| row.get(0),
        )
        .unwrap_or(None);
    reader.execute_batch("COMMIT").unwrap();
    assert!(
        pending.is_none(),
        "the reader's snapshot predates the record"
    );

    // The record outlived the storage: the next open erases.
    let storage = openmls_keypackage_pool::PoolStorage::open(&path).unwrap();
    assert_eq!(traces(&path, &init_key), Vec::<String>::new());
    let pending: Option<i64> = storage
        .connection()
        .query_row(
            "SELECT pending_since FROM openmls_keypackage_pool_erasure",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(pending, None, "the record is cleared once erased");
}
