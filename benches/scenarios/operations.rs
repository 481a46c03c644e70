//! Whole OpenMLS operations on a member's storage: joining from a Welcome,
//! processing and merging a peer's commit, an own commit (built, then
//! merged), and decrypting an application message; each bare (every
//! storage call its own commit), inside one transaction each, and on
//! OpenMLS's in-memory storage (the floor). The peer is in memory; only the
//! member's side is timed, and its commits are counted with SQLite's commit
//! hook.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_keypackage_pool::PoolProvider;
use openmls_rust_crypto::OpenMlsRustCrypto;
use tls_codec::{Deserialize as _, Serialize as _};

use super::{Env, CIPHERSUITE};

/// One OpenMLS operation, as an application writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `StagedWelcome::new_from_welcome` and `into_group`.
    Join,
    /// `process_message` of a peer's commit, and `merge_staged_commit`.
    PeerCommit,
    /// `self_update`, then (a second operation) `merge_pending_commit`.
    OwnCommit,
    /// `process_message` of an application message.
    Message,
}

impl Operation {
    pub const ALL: [Operation; 4] = [
        Operation::Join,
        Operation::PeerCommit,
        Operation::OwnCommit,
        Operation::Message,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Operation::Join => "join from a Welcome",
            Operation::PeerCommit => "process and merge a peer's commit",
            Operation::OwnCommit => "own commit: build, then merge (two operations)",
            Operation::Message => "decrypt an application message",
        }
    }

    pub fn id(self) -> &'static str {
        match self {
            Operation::Join => "join",
            Operation::PeerCommit => "peer_commit",
            Operation::OwnCommit => "own_commit",
            Operation::Message => "message",
        }
    }
}

/// How the member runs each operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// On OpenMLS's in-memory storage.
    Floor,
    /// On this crate's storage, with bare OpenMLS calls.
    Bare,
    /// On this crate's storage, each operation in `transaction` or
    /// `group_transaction`.
    Wrapped,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Floor, Mode::Bare, Mode::Wrapped];

    pub fn id(self) -> &'static str {
        match self {
            Mode::Floor => "floor",
            Mode::Bare => "bare",
            Mode::Wrapped => "wrapped",
        }
    }

    pub fn from_id(id: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.id() == id)
    }
}

/// What `n` operations cost.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    pub elapsed: Duration,
    /// Commits of the member's connection (0 in memory).
    pub commits: u64,
}

/// Runs an operation on a provider, bare or in a transaction.
trait Runner {
    type Provider: OpenMlsProvider;
    fn provider(&self) -> &Self::Provider;
    fn op<T>(&self, f: impl FnOnce(&Self::Provider) -> T) -> T;
    fn group_op<T>(
        &self,
        group: &mut MlsGroup,
        f: impl FnOnce(&mut MlsGroup, &Self::Provider) -> T,
    ) -> T;
}

struct Bare<P>(P);

impl<P: OpenMlsProvider> Runner for Bare<P> {
    type Provider = P;
    fn provider(&self) -> &P {
        &self.0
    }
    fn op<T>(&self, f: impl FnOnce(&P) -> T) -> T {
        f(&self.0)
    }
    fn group_op<T>(&self, group: &mut MlsGroup, f: impl FnOnce(&mut MlsGroup, &P) -> T) -> T {
        f(group, &self.0)
    }
}

struct Wrapped(PoolProvider);

impl Runner for Wrapped {
    type Provider = PoolProvider;
    fn provider(&self) -> &PoolProvider {
        &self.0
    }
    fn op<T>(&self, f: impl FnOnce(&PoolProvider) -> T) -> T {
        self.0
            .transaction(|p| Ok::<_, openmls_keypackage_pool::Error>(f(p)))
            .expect("transaction")
    }
    fn group_op<T>(
        &self,
        group: &mut MlsGroup,
        f: impl FnOnce(&mut MlsGroup, &PoolProvider) -> T,
    ) -> T {
        self.0
            .group_transaction(group, |g, p| {
                Ok::<_, openmls_keypackage_pool::Error>(f(g, p))
            })
            .expect("group transaction")
    }
}

/// Counts the commits of `provider`'s connection from now on.
pub fn count_commits(provider: &PoolProvider) -> Arc<AtomicU64> {
    let count = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&count);
    provider.storage().connection().commit_hook(Some(move || {
        seen.fetch_add(1, Ordering::Relaxed);
        false
    }));
    count
}

/// `n` operations `op` by a member on storage of `mode`, marked before and
/// after the timed part with `mark` (a system call a tracer can see).
pub fn measure(env: &Env, op: Operation, mode: Mode, n: usize, mark: &dyn Fn()) -> Measured {
    match mode {
        Mode::Floor => run(env, &Bare(OpenMlsRustCrypto::default()), op, n, None, mark),
        Mode::Bare => {
            let provider = PoolProvider::open(env.fresh_path("member")).expect("open");
            let commits = count_commits(&provider);
            run(env, &Bare(provider), op, n, Some(commits), mark)
        }
        Mode::Wrapped => {
            let provider = PoolProvider::open(env.fresh_path("member")).expect("open");
            let commits = count_commits(&provider);
            run(env, &Wrapped(provider), op, n, Some(commits), mark)
        }
    }
}

fn over_the_wire(message: &MlsMessageOut) -> MlsMessageIn {
    MlsMessageIn::tls_deserialize_exact(message.tls_serialize_detached().expect("encode"))
        .expect("decode")
}

fn protocol(message: &MlsMessageOut) -> ProtocolMessage {
    over_the_wire(message)
        .try_into_protocol_message()
        .expect("protocol message")
}

/// The peer, in memory.
struct Alice {
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
}

impl Alice {
    fn new() -> Self {
        let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).expect("key pair");
        let credential = CredentialWithKey {
            credential: BasicCredential::new(b"alice".to_vec()).into(),
            signature_key: signer.public().into(),
        };
        Self {
            provider: OpenMlsRustCrypto::default(),
            signer,
            credential,
        }
    }

    /// A group with the owner of `key_package`; the Welcome for it.
    fn invite(&self, key_package: &KeyPackage) -> (MlsGroup, Welcome) {
        let create = MlsGroupCreateConfig::builder()
            .ciphersuite(CIPHERSUITE)
            .use_ratchet_tree_extension(true)
            .build();
        let mut group = MlsGroup::new(
            &self.provider,
            &self.signer,
            &create,
            self.credential.clone(),
        )
        .expect("group");
        let (_, welcome, _) = group
            .add_members(
                &self.provider,
                &self.signer,
                std::slice::from_ref(key_package),
            )
            .expect("add");
        group.merge_pending_commit(&self.provider).expect("merge");
        let MlsMessageBodyIn::Welcome(welcome) = over_the_wire(&welcome).extract() else {
            panic!("not a Welcome");
        };
        (group, welcome)
    }
}

impl Alice {
    /// `n` application messages in `group`, as they arrive.
    fn messages(&self, group: &mut MlsGroup, n: usize) -> Vec<ProtocolMessage> {
        (0..n)
            .map(|_| {
                protocol(
                    &group
                        .create_message(&self.provider, &self.signer, b"a short message")
                        .expect("message"),
                )
            })
            .collect()
    }
}

fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .build()
}

fn join<P: OpenMlsProvider>(provider: &P, welcome: Welcome) -> MlsGroup {
    StagedWelcome::new_from_welcome(provider, &join_config(), welcome, None)
        .expect("welcome")
        .into_group(provider)
        .expect("join")
}

fn run<R: Runner>(
    env: &Env,
    bob: &R,
    op: Operation,
    n: usize,
    commits: Option<Arc<AtomicU64>>,
    mark: &dyn Fn(),
) -> Measured {
    let alice = Alice::new();
    let provider = bob.provider();
    let key_packages: Vec<KeyPackageBundle> = (0..if op == Operation::Join { n } else { 1 })
        .map(|_| {
            KeyPackage::builder()
                .build(CIPHERSUITE, provider, &env.signer, env.credential.clone())
                .expect("key package")
        })
        .collect();
    let timed = |f: &mut dyn FnMut()| {
        if let Some(c) = &commits {
            c.store(0, Ordering::Relaxed);
        }
        mark();
        let start = Instant::now();
        f();
        let elapsed = start.elapsed();
        mark();
        Measured {
            elapsed,
            commits: commits.as_ref().map_or(0, |c| c.load(Ordering::Relaxed)),
        }
    };
    if op == Operation::Join {
        let welcomes: Vec<Welcome> = key_packages
            .iter()
            .map(|kp| alice.invite(kp.key_package()).1)
            .collect();
        let mut welcomes = welcomes.into_iter();
        return timed(&mut || {
            for welcome in welcomes.by_ref() {
                bob.op(|p| join(p, welcome));
            }
        });
    }
    let (mut alice_group, welcome) = alice.invite(key_packages[0].key_package());
    let mut group = join(provider, welcome);
    match op {
        Operation::Join => unreachable!(),
        Operation::PeerCommit => {
            let commits: Vec<ProtocolMessage> = (0..n)
                .map(|_| {
                    let bundle = alice_group
                        .self_update(
                            &alice.provider,
                            &alice.signer,
                            LeafNodeParameters::default(),
                        )
                        .expect("update");
                    alice_group
                        .merge_pending_commit(&alice.provider)
                        .expect("merge");
                    protocol(bundle.commit())
                })
                .collect();
            let mut commits = commits.into_iter();
            timed(&mut || {
                for commit in commits.by_ref() {
                    bob.group_op(&mut group, |group, p| {
                        let processed = group.process_message(p, commit).expect("process");
                        let ProcessedMessageContent::StagedCommitMessage(staged) =
                            processed.into_content()
                        else {
                            panic!("not a commit");
                        };
                        group.merge_staged_commit(p, *staged).expect("merge");
                    });
                }
            })
        }
        Operation::OwnCommit => timed(&mut || {
            for _ in 0..n {
                bob.group_op(&mut group, |group, p| {
                    group
                        .self_update(p, &env.signer, LeafNodeParameters::default())
                        .expect("update");
                });
                // ... the delivery service accepts it ...
                bob.group_op(&mut group, |group, p| {
                    group.merge_pending_commit(p).expect("merge");
                });
            }
        }),
        Operation::Message => {
            let messages: Vec<ProtocolMessage> = alice.messages(&mut alice_group, n);
            let mut messages = messages.into_iter();
            timed(&mut || {
                for message in messages.by_ref() {
                    bob.group_op(&mut group, |group, p| {
                        group.process_message(p, message).expect("process");
                    });
                }
            })
        }
    }
}

/// A backlog of `n` messages: in one `transaction`, each in a
/// `group_transaction` of its own (`Some(provider)`), or on the in-memory
/// floor (`None`).
pub fn backlog(env: &Env, n: usize, on_pool: bool) -> Duration {
    let alice = Alice::new();
    let pool = on_pool.then(|| PoolProvider::open(env.fresh_path("backlog")).expect("open"));
    let memory = OpenMlsRustCrypto::default();
    let bundle = match &pool {
        Some(p) => KeyPackage::builder().build(CIPHERSUITE, p, &env.signer, env.credential.clone()),
        None => {
            KeyPackage::builder().build(CIPHERSUITE, &memory, &env.signer, env.credential.clone())
        }
    }
    .expect("key package");
    let (mut alice_group, welcome) = alice.invite(bundle.key_package());
    let mut group = match &pool {
        Some(p) => join(p, welcome),
        None => join(&memory, welcome),
    };
    let messages: Vec<ProtocolMessage> = alice.messages(&mut alice_group, n);
    let start = Instant::now();
    match &pool {
        Some(pool) => pool
            .transaction(|pool| -> Result<(), Box<dyn std::error::Error>> {
                for message in messages {
                    pool.group_transaction(
                        &mut group,
                        |group, p| -> Result<(), Box<dyn std::error::Error>> {
                            group.process_message(p, message)?;
                            Ok(())
                        },
                    )?;
                }
                Ok(())
            })
            .expect("backlog"),
        None => {
            for message in messages {
                group.process_message(&memory, message).expect("process");
            }
        }
    }
    start.elapsed()
}

/// `threads` members, each in a group of its own, each decrypting
/// `messages` messages in a `group_transaction` apiece, all on one file:
/// through one shared provider (`shared`), or a provider each. The wall
/// time until all are done.
pub fn threads(env: &Env, threads: usize, messages: usize, shared: bool) -> Duration {
    let path = env.fresh_path("threads");
    let one = Arc::new(PoolProvider::open(&path).expect("open"));
    let providers: Vec<Arc<PoolProvider>> = (0..threads)
        .map(|_| {
            if shared {
                Arc::clone(&one)
            } else {
                Arc::new(PoolProvider::open(&path).expect("open"))
            }
        })
        .collect();
    // Everything but the decryption is made first, on the calling thread.
    let members: Vec<(Arc<PoolProvider>, MlsGroup, Vec<ProtocolMessage>)> = providers
        .into_iter()
        .map(|bob| {
            let alice = Alice::new();
            let bundle = KeyPackage::builder()
                .build(CIPHERSUITE, &*bob, &env.signer, env.credential.clone())
                .expect("key package");
            let (mut alice_group, welcome) = alice.invite(bundle.key_package());
            let group = join(&*bob, welcome);
            let sent = alice.messages(&mut alice_group, messages);
            (bob, group, sent)
        })
        .collect();
    let start = Instant::now();
    let workers: Vec<_> = members
        .into_iter()
        .map(|(bob, mut group, sent)| {
            std::thread::spawn(move || {
                for message in sent {
                    bob.group_transaction(
                        &mut group,
                        |group, p| -> Result<(), Box<dyn std::error::Error>> {
                            group.process_message(p, message)?;
                            Ok(())
                        },
                    )
                    .expect("message");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker");
    }
    start.elapsed()
}
