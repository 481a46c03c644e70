//! Decrypting messages: a member on each kind of storage receives `n`
//! application messages in one epoch from a member in memory; each one
//! rewrites the receiver's secret tree in a commit of its own. Only the
//! decryption is timed; the group and the messages are made beforehand.

use std::{io::Write as _, time::Duration};

use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_keypackage_pool::{
    codec::MessagePackCodec, ErasurePolicy, PoolProvider, StorageOptions,
};
use openmls_rust_crypto::OpenMlsRustCrypto;
use tls_codec::{Deserialize as _, Serialize as _};

use super::{plain_sqlite::PlainSqliteProvider, timed, Env, CIPHERSUITE};

/// Where the receiving member keeps its state, and what a message costs
/// there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receiver {
    /// OpenMLS's in-memory storage: the cost of the crypto alone.
    InMemory,
    /// Not a member: one 4 KiB append and `fdatasync` per message on the
    /// same disk, the cost of one durable commit.
    AppendAndSync,
    /// `openmls_sqlite_storage` on a file, as usually set up (SQLite's
    /// default rollback journal).
    Sqlite,
    /// This crate with [`ErasurePolicy::Deletions`].
    PoolDeletions,
    /// This crate with the default policy: overwrites erased within 2 s.
    PoolDefault,
    /// This crate erasing right after every commit that overwrote secrets.
    PoolEveryCommit,
}

impl Receiver {
    pub const ALL: [Receiver; 6] = [
        Receiver::InMemory,
        Receiver::AppendAndSync,
        Receiver::Sqlite,
        Receiver::PoolDeletions,
        Receiver::PoolDefault,
        Receiver::PoolEveryCommit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Receiver::InMemory => "OpenMLS in memory (floor)",
            Receiver::AppendAndSync => "one 4 KiB append + `fdatasync` (one durable commit)",
            Receiver::Sqlite => "`openmls_sqlite_storage` on a file, as usually set up",
            Receiver::PoolDeletions => "this crate, `ErasurePolicy::Deletions`",
            Receiver::PoolDefault => "this crate, default policy (within 2 s)",
            Receiver::PoolEveryCommit => "this crate, `Overwrites { within: 0 }`",
        }
    }

    pub fn id(self) -> &'static str {
        match self {
            Receiver::InMemory => "in_memory",
            Receiver::AppendAndSync => "append_fdatasync",
            Receiver::Sqlite => "openmls_sqlite_storage",
            Receiver::PoolDeletions => "pool_deletions",
            Receiver::PoolDefault => "pool_default",
            Receiver::PoolEveryCommit => "pool_every_commit",
        }
    }

    /// The id `examples/scenario.rs` knows it by.
    pub fn scenario_id(self) -> &'static str {
        match self {
            Receiver::InMemory => "message_in_memory",
            Receiver::AppendAndSync => "message_append_fdatasync",
            Receiver::Sqlite => "message_openmls_sqlite_storage",
            Receiver::PoolDeletions => "message_pool_deletions",
            Receiver::PoolDefault => "message_pool_default",
            Receiver::PoolEveryCommit => "message_pool_every_commit",
        }
    }

    /// The time to receive `n` messages on fresh storage.
    pub fn run(self, env: &Env, n: usize) -> Duration {
        let pool = |erasure| {
            let options = StorageOptions {
                erasure,
                ..StorageOptions::default()
            };
            PoolProvider::open_with_options(env.fresh_path("member"), &options).expect("open")
        };
        match self {
            Receiver::InMemory => receive(env, &OpenMlsRustCrypto::default(), n),
            Receiver::AppendAndSync => append_and_sync(env, n),
            Receiver::Sqlite => receive(
                env,
                &PlainSqliteProvider::<MessagePackCodec>::open(&env.fresh_path("plain")),
                n,
            ),
            Receiver::PoolDeletions => receive(env, &pool(ErasurePolicy::Deletions), n),
            Receiver::PoolDefault => receive(env, &pool(ErasurePolicy::default()), n),
            Receiver::PoolEveryCommit => receive(
                env,
                &pool(ErasurePolicy::Overwrites {
                    within: Duration::ZERO,
                }),
                n,
            ),
        }
    }
}

fn over_the_wire(message: &MlsMessageOut) -> MlsMessageIn {
    MlsMessageIn::tls_deserialize_exact(message.tls_serialize_detached().expect("encode"))
        .expect("decode")
}

/// The member on `bob` joins a group a member in memory made, which then
/// sends `n` messages; the time `bob` takes to decrypt them.
fn receive<P: OpenMlsProvider>(env: &Env, bob: &P, n: usize) -> Duration {
    let bundle = KeyPackage::builder()
        .build(CIPHERSUITE, bob, &env.signer, env.credential.clone())
        .expect("key package");
    let alice = OpenMlsRustCrypto::default();
    let alice_signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).expect("key pair");
    let alice_credential = CredentialWithKey {
        credential: BasicCredential::new(b"alice".to_vec()).into(),
        signature_key: alice_signer.public().into(),
    };
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
    let MlsMessageBodyIn::Welcome(welcome) = over_the_wire(&welcome).extract() else {
        panic!("not a Welcome");
    };
    let join = MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .build();
    let mut bob_group = StagedWelcome::new_from_welcome(bob, &join, welcome, None)
        .expect("welcome")
        .into_group(bob)
        .expect("join");
    let messages: Vec<ProtocolMessage> = (0..n)
        .map(|_| {
            let message = alice_group
                .create_message(&alice, &alice_signer, b"a short message")
                .expect("message");
            over_the_wire(&message)
                .try_into_protocol_message()
                .expect("protocol message")
        })
        .collect();
    timed(|| {
        for message in messages {
            bob_group.process_message(bob, message).expect("process");
        }
    })
}

/// `n` appends of 4 KiB to a fresh file, each followed by `fdatasync`.
fn append_and_sync(env: &Env, n: usize) -> Duration {
    let mut file = std::fs::File::create(env.fresh_path("append")).expect("create");
    let page = [0x5a_u8; 4096];
    timed(|| {
        for _ in 0..n {
            file.write_all(&page).expect("append");
            file.sync_data().expect("fdatasync");
        }
    })
}
