//! A member on a pool database in a group another client created: the
//! secrets OpenMLS overwrites as it decrypts messages and changes epochs,
//! and where old copies of them can still be found on disk.

use std::path::PathBuf;

use openmls::prelude::*;
use openmls_keypackage_pool::{PoolProvider, StorageOptions};

use super::{
    build_key_package, into_protocol_message,
    secrets::msgpack_byte_sequences,
    traces::{encodings, traces_of_all},
    Identity, PlainClient,
};

/// Bob, on a database file, in a group Alice (in memory) created; he keeps
/// the secrets of two past epochs, so that deleting them is something to
/// check.
pub struct Conversation {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub alice: PlainClient,
    pub alice_group: MlsGroup,
    pub bob: PoolProvider,
    pub bob_group: MlsGroup,
}

impl Conversation {
    /// Bob on a new database file opened with `options`.
    pub fn new(options: &StorageOptions) -> Self {
        let (dir, path) = super::temp_db();
        let bob = PoolProvider::open_with_options(&path, options).unwrap();
        Self::with(dir, path, bob)
    }

    /// Bob on `bob`, a provider on the database file `path` in `dir`.
    pub fn with(dir: tempfile::TempDir, path: PathBuf, bob: PoolProvider) -> Self {
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
            dir,
            path,
            alice,
            alice_group,
            bob,
            bob_group,
        }
    }

    /// Bob decrypts `n` application messages from Alice: each one advances
    /// his secret tree and overwrites its stored row.
    pub fn messages(&mut self, n: usize) {
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

    /// Alice updates her leaf and merges; returns her commit, for Bob.
    pub fn alice_commits(&mut self) -> ProtocolMessage {
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
        into_protocol_message(commit.commit())
    }

    /// Alice sends an application message, for Bob.
    pub fn alice_says(&mut self, text: &[u8]) -> ProtocolMessage {
        let message = self
            .alice_group
            .create_message(&self.alice.provider, &self.alice.identity.signer, text)
            .unwrap();
        into_protocol_message(&message)
    }

    /// Alice updates her leaf; Bob moves to the next epoch, keeping the
    /// last one's message secrets.
    pub fn new_epoch(&mut self) {
        let commit = self.alice_commits();
        let processed = self.bob_group.process_message(&self.bob, commit).unwrap();
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
    pub fn stored_message_secrets(&self) -> Vec<u8> {
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
        super::column(
            &self.bob.storage().connection(),
            "SELECT group_data FROM openmls_group_data
             UNION ALL SELECT key_pairs FROM openmls_epoch_keys_pairs
             UNION ALL SELECT key_pair FROM openmls_encryption_keys
             UNION ALL SELECT leaf_node FROM openmls_own_leaf_nodes
             UNION ALL SELECT key_package FROM openmls_key_packages",
        )
    }

    /// The byte sequences that `old` (a stored blob) held and no stored
    /// entity holds any more: the secrets it superseded. (A past epoch's
    /// stored secrets also hold public keys that the current tree still
    /// has: those are live, not superseded.)
    pub fn superseded(&self, old: &[u8]) -> Vec<Vec<u8>> {
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
        gone
    }

    /// Asserts that Bob's messages wrote to the log, then that within
    /// `within`, with nothing committed, the log is emptied and the pending
    /// record cleared: the erasure ran, even where encrypted pages leave no
    /// plaintext to search for. Clearing the record writes the one page
    /// that holds it (no secret) after the checkpoint, so the log holds at
    /// most that one frame afterwards.
    pub fn assert_log_emptied_within(&self, within: std::time::Duration) {
        let wal = PathBuf::from(format!("{}-wal", self.path.display()));
        let frames = || super::wal_frames(&wal);
        assert!(frames() > 1, "the messages wrote nothing to the log");
        let conn = self.bob.storage().connection();
        assert!(
            super::traces::eventually(within, || frames() <= 1 && !super::erasure_pending(&conn)),
            "the log holds {} frames, the record is set: {}",
            frames(),
            super::erasure_pending(&conn)
        );
    }

    /// Where the secrets `old` held and no stored entity holds any more can
    /// still be found in the files, searched while the database is open.
    pub fn traces_of_superseded(&self, old: &[u8]) -> Vec<String> {
        traces_of_all(&self.path, &self.superseded(old))
    }
}
