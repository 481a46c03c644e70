//! Crash points inside one OpenMLS operation, with real groups and real
//! database files.
//!
//! OpenMLS writes an operation (joining from a Welcome, merging a commit,
//! building one, creating a group) through many storage calls. Made as bare
//! calls on `PoolProvider`, each call is a commit of its own, and a process
//! that dies between two of them keeps half of the operation: an invitation
//! whose KeyPackage is gone but whose group was never stored, a group whose
//! tree, secrets and epoch disagree. Inside `PoolProvider::transaction` or
//! `group_transaction` the operation is one commit, so every crash leaves
//! the state from before it or the state after it, and the client goes on
//! from either.
//!
//! The child is this test binary re-run (`operation_child`). It sets up the
//! victim's state from files the parent wrote, installs a commit hook that
//! counts the operation's commits and aborts the process right before the
//! N-th, and runs the operation. The parent first lets it run through
//! (N = 0) to learn the operation's commit count K, then runs it once for
//! every N in 1..=K, each time on a fresh copy of the victim's database,
//! and reopens the copy to check what the crash left.
//!
//! Unix only: the parent tells the abort (SIGABRT) from a panic by the
//! signal that ended the child.
#![cfg(unix)]

mod common;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
    time::Instant,
};

use common::{build_key_package, group_create_config, join, Identity, PlainClient, CIPHERSUITE};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_keypackage_pool::{
    codec::{Codec as _, DefaultCodec},
    PoolProvider,
};
use openmls_traits::{crypto::OpenMlsCrypto, signatures::Signer};
use sha2::Digest as _;
use tempfile::TempDir;
use tls_codec::{Deserialize as _, Serialize as _};

/// OpenMLS's error types do not convert from the crate's `Error`; a boxed
/// error takes both.
type BoxError = Box<dyn std::error::Error>;

/// Which workload the child runs, and how: `<Workload>/<Mode>`.
const WORKLOAD_VAR: &str = "OPERATION_CRASH_WORKLOAD";
/// The directory holding the files the parent shares with the child.
const DIR_VAR: &str = "OPERATION_CRASH_DIR";
/// The victim's database file (a fresh copy of the template).
const DB_VAR: &str = "OPERATION_CRASH_DB";
/// Abort right before this commit of the operation (1-based); 0 never.
const ABORT_VAR: &str = "OPERATION_CRASH_ABORT_AT";
/// Where the child writes what it sent, once the operation that built it
/// has returned.
const OUT_VAR: &str = "OPERATION_CRASH_OUT";

/// Files in the shared directory.
const WELCOME_FILE: &str = "welcome.bin";
const COMMIT_FILE: &str = "commit.bin";
const GROUP_ID_FILE: &str = "group-id.bin";
const SIGNER_FILE: &str = "signer-public-key.bin";

/// The table an erasure's bookkeeping writes: a commit that writes it alone
/// is no part of the operation's data.
const ERASURE_TABLE: &str = "openmls_keypackage_pool_erasure";

/// The tables that hold a group, or secrets of one.
const GROUP_TABLES: [&str; 6] = [
    "openmls_group_data",
    "openmls_own_leaf_nodes",
    "openmls_epoch_keys_pairs",
    "openmls_encryption_keys",
    "openmls_proposals",
    "openmls_psks",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    /// Bob joins from a Welcome.
    Join,
    /// Bob processes and merges a commit of Alice's.
    PeerCommit,
    /// Bob builds a commit, sends it, then merges it: two operations.
    OwnCommit,
    /// Bob creates a group.
    Create,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Each OpenMLS call straight on the provider.
    Bare,
    /// Each operation in `transaction` or `group_transaction`.
    Wrapped,
}

impl Workload {
    fn parse(text: &str) -> (Self, Mode) {
        let (workload, mode) = text.split_once('/').expect("<workload>/<mode>");
        let workload = [Self::Join, Self::PeerCommit, Self::OwnCommit, Self::Create]
            .into_iter()
            .find(|w| format!("{w:?}") == workload)
            .expect("a known workload");
        let mode = [Mode::Bare, Mode::Wrapped]
            .into_iter()
            .find(|m| format!("{m:?}") == mode)
            .expect("a known mode");
        (workload, mode)
    }
}

// ---------------------------------------------------------------------------
// The commit counter.

/// One commit of the connection: the operation it belongs to and the rowid
/// tables it wrote (SQLite's update hook does not see WITHOUT ROWID tables,
/// so a commit that wrote only those shows none).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Commit {
    operation: String,
    tables: BTreeSet<String>,
}

impl Commit {
    /// Whether the commit only records or clears an erasure.
    fn is_erasure_bookkeeping(&self) -> bool {
        self.tables.len() == 1 && self.tables.contains(ERASURE_TABLE)
    }
}

#[derive(Default)]
struct Counted {
    operation: String,
    touched: BTreeSet<String>,
    commits: Vec<Commit>,
}

/// Counts the commits of a provider's connection, and aborts the process
/// right before the `abort_at`-th.
struct CommitCounter(Arc<Mutex<Counted>>);

impl CommitCounter {
    fn install(provider: &PoolProvider, abort_at: usize) -> Self {
        let state = Arc::new(Mutex::new(Counted::default()));
        let conn = provider.storage().connection();
        let on_update = Arc::clone(&state);
        conn.update_hook(Some(
            move |_: rusqlite::hooks::Action, _: &str, table: &str, _: i64| {
                on_update.lock().unwrap().touched.insert(table.to_owned());
            },
        ));
        let on_rollback = Arc::clone(&state);
        conn.rollback_hook(Some(move || on_rollback.lock().unwrap().touched.clear()));
        let on_commit = Arc::clone(&state);
        conn.commit_hook(Some(move || {
            let mut state = on_commit.lock().unwrap();
            if state.commits.len() + 1 == abort_at {
                // Right before the commit reaches the file: what SIGKILL or
                // a power cut at this moment would leave.
                std::process::abort();
            }
            let commit = Commit {
                operation: state.operation.clone(),
                tables: std::mem::take(&mut state.touched),
            };
            state.commits.push(commit);
            false // let the commit proceed
        }));
        Self(state)
    }

    /// The commits from now on belong to `operation`.
    fn operation(&self, operation: &str) {
        operation.clone_into(&mut self.0.lock().unwrap().operation);
    }

    /// Removes the hooks; the commits counted.
    fn remove(self, provider: &PoolProvider) -> Vec<Commit> {
        let conn = provider.storage().connection();
        conn.commit_hook(None::<fn() -> bool>);
        conn.rollback_hook(None::<fn()>);
        conn.update_hook(None::<fn(rusqlite::hooks::Action, &str, &str, i64)>);
        std::mem::take(&mut self.0.lock().unwrap().commits)
    }
}

#[test]
fn the_commit_counter_sees_each_commit_of_the_connection_once() {
    let (_dir, path) = common::temp_db();
    let provider = PoolProvider::open(&path).unwrap();
    let conn = provider.storage().connection();
    conn.execute_batch("CREATE TABLE app (x INTEGER)").unwrap();
    drop(conn);

    let counter = CommitCounter::install(&provider, 0);
    counter.operation("bare");
    for x in 1..=2 {
        let conn = provider.storage().connection();
        conn.execute("INSERT INTO app VALUES (?1)", [x]).unwrap();
    }
    counter.operation("wrapped");
    provider
        .transaction(|p| -> Result<(), BoxError> {
            let conn = p.storage().connection();
            conn.execute("INSERT INTO app VALUES (3)", [])?;
            conn.execute("INSERT INTO app VALUES (4)", [])?;
            Ok(())
        })
        .unwrap();
    let commits = counter.remove(&provider);

    let app = BTreeSet::from(["app".to_owned()]);
    let expected: Vec<Commit> = ["bare", "bare", "wrapped"]
        .into_iter()
        .map(|operation| Commit {
            operation: operation.to_owned(),
            tables: app.clone(),
        })
        .collect();
    assert_eq!(commits, expected);
}

// ---------------------------------------------------------------------------
// The child.

/// As a child of a sweep: sets up the victim, runs one workload with the
/// commit counter on, and prints the commits it made (when it was not
/// aborted). In a normal run: nothing to do.
#[test]
fn operation_child() {
    let Ok(workload) = std::env::var(WORKLOAD_VAR) else {
        return;
    };
    let (workload, mode) = Workload::parse(&workload);
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is set"));
    let dir = PathBuf::from(var(DIR_VAR));
    let out = PathBuf::from(var(OUT_VAR));
    let abort_at: usize = var(ABORT_VAR).parse().unwrap();
    let provider = PoolProvider::open(var(DB_VAR)).unwrap();

    let commits = match workload {
        Workload::Join => child_join(&provider, &dir, mode, abort_at),
        Workload::PeerCommit => child_peer_commit(&provider, &dir, mode, abort_at),
        Workload::OwnCommit => child_own_commit(&provider, &dir, &out, mode, abort_at),
        Workload::Create => child_create(&provider, &dir, mode, abort_at),
    };
    for commit in &commits {
        let tables: Vec<&str> = commit.tables.iter().map(String::as_str).collect();
        // libtest may print "test operation_child ... " before this on the
        // same line: the parent looks for the token anywhere in a line.
        println!(
            "operation-commit {} {}",
            commit.operation,
            if tables.is_empty() {
                "-".to_owned()
            } else {
                tables.join(",")
            }
        );
    }
    println!("operation-done {}", commits.len());
}

fn child_join(provider: &PoolProvider, dir: &Path, mode: Mode, abort_at: usize) -> Vec<Commit> {
    let welcome = welcome_from(&std::fs::read(dir.join(WELCOME_FILE)).unwrap());
    let counter = CommitCounter::install(provider, abort_at);
    counter.operation("join");
    match mode {
        Mode::Bare => {
            join(provider, welcome).unwrap();
        }
        Mode::Wrapped => {
            provider
                .transaction(|p| -> Result<_, BoxError> { Ok(join(p, welcome)?) })
                .unwrap();
        }
    }
    report_state(provider, "join");
    counter.remove(provider)
}

fn child_peer_commit(
    provider: &PoolProvider,
    dir: &Path,
    mode: Mode,
    abort_at: usize,
) -> Vec<Commit> {
    let mut group = load_shared_group(provider, dir);
    let commit = protocol_message(&std::fs::read(dir.join(COMMIT_FILE)).unwrap());
    let counter = CommitCounter::install(provider, abort_at);
    counter.operation("process+merge");
    match mode {
        Mode::Bare => {
            let processed = group.process_message(provider, commit).unwrap();
            let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content()
            else {
                panic!("expected a commit");
            };
            group.merge_staged_commit(provider, *staged).unwrap();
        }
        Mode::Wrapped => {
            provider
                .group_transaction(&mut group, |group, p| -> Result<(), BoxError> {
                    let processed = group.process_message(p, commit)?;
                    let ProcessedMessageContent::StagedCommitMessage(staged) =
                        processed.into_content()
                    else {
                        return Err("expected a commit".into());
                    };
                    Ok(group.merge_staged_commit(p, *staged)?)
                })
                .unwrap();
        }
    }
    report_state(provider, "process+merge");
    counter.remove(provider)
}

fn child_own_commit(
    provider: &PoolProvider,
    dir: &Path,
    out: &Path,
    mode: Mode,
    abort_at: usize,
) -> Vec<Commit> {
    let mut group = load_shared_group(provider, dir);
    let signer = shared_signer(provider, dir);
    let counter = CommitCounter::install(provider, abort_at);

    counter.operation("build");
    let commit = match mode {
        Mode::Bare => group
            .self_update(provider, &signer, LeafNodeParameters::default())
            .unwrap()
            .commit()
            .clone(),
        Mode::Wrapped => provider
            .group_transaction(&mut group, |group, p| -> Result<_, BoxError> {
                let bundle = group.self_update(p, &signer, LeafNodeParameters::default())?;
                Ok(bundle.commit().clone())
            })
            .unwrap(),
    };
    report_state(provider, "build");
    // The delivery service accepts it: written only once the operation
    // that built it has returned, as an application sends only then.
    std::fs::write(out, commit.tls_serialize_detached().unwrap()).unwrap();

    counter.operation("merge");
    match mode {
        Mode::Bare => group.merge_pending_commit(provider).unwrap(),
        Mode::Wrapped => provider
            .group_transaction(&mut group, |group, p| -> Result<(), BoxError> {
                Ok(group.merge_pending_commit(p)?)
            })
            .unwrap(),
    }
    report_state(provider, "merge");
    counter.remove(provider)
}

fn child_create(provider: &PoolProvider, dir: &Path, mode: Mode, abort_at: usize) -> Vec<Commit> {
    let signer = shared_signer(provider, dir);
    let credential = CredentialWithKey {
        credential: BasicCredential::new(b"bob".to_vec()).into(),
        signature_key: signer.public().into(),
    };
    let counter = CommitCounter::install(provider, abort_at);
    counter.operation("create");
    match mode {
        Mode::Bare => {
            MlsGroup::new(provider, &signer, &group_create_config(), credential).unwrap();
        }
        Mode::Wrapped => {
            provider
                .transaction(|p| -> Result<_, BoxError> {
                    Ok(MlsGroup::new(
                        p,
                        &signer,
                        &group_create_config(),
                        credential,
                    )?)
                })
                .unwrap();
        }
    }
    report_state(provider, "create");
    counter.remove(provider)
}

/// The group whose id the parent wrote, as the victim's database holds it.
fn load_shared_group(provider: &PoolProvider, dir: &Path) -> MlsGroup {
    let group_id = GroupId::from_slice(&std::fs::read(dir.join(GROUP_ID_FILE)).unwrap());
    MlsGroup::load(provider.storage(), &group_id)
        .unwrap()
        .expect("the template holds the group")
}

/// Bob's signer, which the template database holds under the public key
/// the parent wrote.
fn shared_signer(provider: &PoolProvider, dir: &Path) -> SignatureKeyPair {
    let public = std::fs::read(dir.join(SIGNER_FILE)).unwrap();
    SignatureKeyPair::read(
        provider.storage(),
        &public,
        CIPHERSUITE.signature_algorithm(),
    )
    .expect("the template holds Bob's signer")
}

/// Each table's rows, as a count and a digest of their contents: the
/// state before and after each operation, which a crash point must match.
/// The erasure record is left out: whether a crash came before or after the
/// commit that clears it, the next open or commit erases and clears again.
fn table_digests(provider: &PoolProvider) -> BTreeMap<String, String> {
    let conn = provider.storage().connection();
    let tables: Vec<String> = common::column(
        &conn,
        &format!(
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite_%' AND name <> '{ERASURE_TABLE}'"
        ),
    );
    tables
        .into_iter()
        .map(|table| {
            let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
            let columns = stmt.column_count();
            let mut rows: Vec<String> = stmt
                .query_map([], |row| {
                    (0..columns)
                        .map(|i| row.get::<_, rusqlite::types::Value>(i))
                        .collect::<Result<Vec<_>, _>>()
                })
                .unwrap()
                .map(|row| format!("{:?}", row.unwrap()))
                .collect();
            rows.sort();
            let digest = sha2::Sha256::digest(rows.join("\n").as_bytes());
            let digest = format!("{}:{}", rows.len(), common::to_hex(&digest[..8]));
            (table, digest)
        })
        .collect()
}

/// Prints the tables' digests once `operation` has returned (reads only:
/// no commit for the counter).
fn report_state(provider: &PoolProvider, operation: &str) {
    let digests: Vec<String> = table_digests(provider)
        .into_iter()
        .map(|(table, digest)| format!("{table}={digest}"))
        .collect();
    println!("operation-state {operation} {}", digests.join(","));
}

// ---------------------------------------------------------------------------
// The parent: fixtures, the sweep, and what a crash may leave.

fn welcome_from(bytes: &[u8]) -> Welcome {
    match MlsMessageIn::tls_deserialize_exact(bytes)
        .unwrap()
        .extract()
    {
        MlsMessageBodyIn::Welcome(welcome) => welcome,
        other => panic!("expected a Welcome, got {other:?}"),
    }
}

fn protocol_message(bytes: &[u8]) -> ProtocolMessage {
    MlsMessageIn::tls_deserialize_exact(bytes)
        .unwrap()
        .try_into_protocol_message()
        .unwrap()
}

/// Alice, on OpenMLS's in-memory provider, in the parent. Her store is
/// saved once her side is set up, and put back before each check, so that
/// every crash point meets the same Alice.
struct Peer {
    client: PlainClient,
    group_id: GroupId,
    saved: HashMap<Vec<u8>, Vec<u8>>,
}

impl Peer {
    /// Alice creates a group and adds the owner of `key_package`; the
    /// Welcome for it, encoded.
    fn invites(key_package: &KeyPackage) -> (Self, Vec<u8>) {
        let client = PlainClient::new("alice");
        let mut group = MlsGroup::new(
            &client.provider,
            &client.identity.signer,
            &group_create_config(),
            client.identity.credential.clone(),
        )
        .unwrap();
        let (_commit, welcome, _info) = group
            .add_members(
                &client.provider,
                &client.identity.signer,
                std::slice::from_ref(key_package),
            )
            .unwrap();
        group.merge_pending_commit(&client.provider).unwrap();
        let mut peer = Self {
            client,
            group_id: group.group_id().clone(),
            saved: HashMap::new(),
        };
        peer.save();
        (peer, welcome.tls_serialize_detached().unwrap())
    }

    fn save(&mut self) {
        self.saved = self
            .client
            .provider
            .storage()
            .values
            .read()
            .unwrap()
            .clone();
    }

    /// Alice's group as it was when saved.
    fn restore(&self) -> MlsGroup {
        *self.client.provider.storage().values.write().unwrap() = self.saved.clone();
        MlsGroup::load(self.client.provider.storage(), &self.group_id)
            .unwrap()
            .expect("Alice's group")
    }

    fn signer(&self) -> &SignatureKeyPair {
        &self.client.identity.signer
    }

    /// Alice, as saved, and Bob's `group` on `bob` agree and go on (see
    /// [`carries_on`]); the finding is `found` unless they do not.
    fn talks_with(
        &self,
        bob: &PoolProvider,
        bob_signer: &SignatureKeyPair,
        group: &mut MlsGroup,
        found: impl Into<String>,
    ) -> Finding {
        let mut alice = self.restore();
        Finding::unless_failed(
            found,
            carries_on(
                (group, bob, bob_signer),
                (&mut alice, &self.client.provider, self.signer()),
            ),
        )
    }
}

/// Bob's side before the operation: his database, closed cleanly, and what
/// the child needs beside it.
struct Fixture {
    dir: TempDir,
    template: PathBuf,
    bob: Identity,
}

/// Closes Bob's database, which must leave no write-ahead log behind: the
/// template is copied without one.
fn close_template(provider: PoolProvider, path: &Path) {
    provider.close().unwrap();
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "{} is left behind",
        wal.display()
    );
}

impl Fixture {
    /// Bob's database with his signer in it.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let template = dir.path().join("bob-template.db");
        let bob = Identity::new("bob");
        let provider = PoolProvider::open(&template).unwrap();
        bob.signer.store(provider.storage()).unwrap();
        close_template(provider, &template);
        std::fs::write(dir.path().join(SIGNER_FILE), bob.signer.public()).unwrap();
        Self { dir, template, bob }
    }

    /// A KeyPackage of Bob's, stored in his database.
    fn key_package(&self) -> KeyPackageBundle {
        let provider = PoolProvider::open(&self.template).unwrap();
        let bundle = build_key_package(&provider, &self.bob, false);
        close_template(provider, &self.template);
        bundle
    }

    /// Bob joins from `welcome` in his database; the group's id is shared
    /// with the child.
    fn join(&self, welcome: &[u8]) -> GroupId {
        let provider = PoolProvider::open(&self.template).unwrap();
        let group = provider
            .transaction(|p| -> Result<_, BoxError> { Ok(join(p, welcome_from(welcome))?) })
            .unwrap();
        close_template(provider, &self.template);
        let group_id = group.group_id().clone();
        self.share(GROUP_ID_FILE, group_id.as_slice());
        group_id
    }

    fn share(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.dir.path().join(name), bytes).unwrap();
    }

    fn bob_signer(&self) -> &SignatureKeyPair {
        &self.bob.signer
    }
}

/// What one crash point left: what was found, and what was lost if any.
#[derive(Debug, Clone)]
struct Finding {
    found: String,
    lost: Option<String>,
}

impl Finding {
    fn kept(found: impl Into<String>) -> Self {
        Self {
            found: found.into(),
            lost: None,
        }
    }

    fn lost(found: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            found: found.into(),
            lost: Some(why.into()),
        }
    }

    /// `found`, or lost with `found` when `check` fails.
    fn unless_failed(found: impl Into<String>, check: Result<(), String>) -> Self {
        match check {
            Ok(()) => Self::kept(found),
            Err(why) => Self::lost(found, why),
        }
    }
}

/// A workload swept over every crash point in one mode.
struct Sweep {
    /// The commits of the run that was never aborted.
    commits: Vec<Commit>,
    /// The finding of each crash point, by N (1-based), with the state its
    /// tables match ("before", "after <operation>" for an operation that
    /// had returned, or `None` for none of them).
    findings: Vec<(usize, Finding, Option<String>)>,
}

impl Sweep {
    fn losing(&self) -> usize {
        self.findings
            .iter()
            .filter(|(_, f, _)| f.lost.is_some())
            .count()
    }

    fn data_commits(&self) -> usize {
        self.commits
            .iter()
            .filter(|c| !c.is_erasure_bookkeeping())
            .count()
    }

    /// "K commits" with the erasure bookkeeping named.
    fn describe_commits(&self) -> String {
        let bookkeeping = self.commits.len() - self.data_commits();
        let commits = match self.commits.len() {
            1 => "1 commit".to_owned(),
            n => format!("{n} commits"),
        };
        if bookkeeping == 0 {
            commits
        } else {
            format!(
                "{commits} ({} + {bookkeeping} writing only {ERASURE_TABLE})",
                self.data_commits()
            )
        }
    }

    /// Every crash point kept the state before or after, and each
    /// operation (by name) was one commit besides erasure bookkeeping.
    fn assert_all_or_nothing(&self, name: &str, operations: &[&str]) {
        for (n, finding, state) in &self.findings {
            assert!(
                finding.lost.is_none(),
                "{name}, wrapped: the crash before commit {n} lost data: found {}: {}",
                finding.found,
                finding.lost.as_deref().unwrap_or_default()
            );
            assert!(
                state.is_some(),
                "{name}, wrapped: the crash before commit {n} left tables in no state \
                 between operations ({})",
                finding.found
            );
        }
        for operation in operations {
            let data: Vec<&Commit> = self
                .commits
                .iter()
                .filter(|c| c.operation == *operation && !c.is_erasure_bookkeeping())
                .collect();
            assert_eq!(
                data.len(),
                1,
                "{name}, wrapped: operation {operation} made {} commits besides erasure \
                 bookkeeping: {:?}",
                data.len(),
                self.commits
            );
        }
    }

    /// The bare operation was many commits and some crash point lost data.
    fn assert_some_crash_loses(&self, name: &str) {
        assert!(
            self.commits.len() > 1,
            "{name}, bare: only {} commit(s): {:?}",
            self.commits.len(),
            self.commits
        );
        assert!(
            self.losing() > 0,
            "{name}, bare: no crash point lost data: {:?}",
            self.findings
        );
    }
}

/// Runs `workload` in `mode` in a child once through, then once per crash
/// point, each on a fresh copy of the template; reopens the copy and lets
/// `check` judge what the crash left (with the child's output file, if it
/// wrote one). The run that was never aborted must pass the check too.
fn sweep(
    fixture: &Fixture,
    workload: Workload,
    mode: Mode,
    check: impl Fn(&PoolProvider, &Path) -> Finding,
) -> Sweep {
    let name = format!("{workload:?}/{mode:?}");
    let run = |abort_at: usize| -> (PathBuf, PathBuf, std::process::Output) {
        let tag = format!("{workload:?}-{mode:?}-{abort_at}");
        let db = fixture.dir.path().join(format!("{tag}.db"));
        let out = fixture.dir.path().join(format!("{tag}.out"));
        std::fs::copy(&fixture.template, &db).unwrap();
        let output = Command::new(std::env::current_exe().unwrap())
            .args([
                "operation_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WORKLOAD_VAR, &name)
            .env(DIR_VAR, fixture.dir.path())
            .env(DB_VAR, &db)
            .env(ABORT_VAR, abort_at.to_string())
            .env(OUT_VAR, &out)
            .output()
            .unwrap();
        (db, out, output)
    };
    // The lines that follow a token; libtest may print "test
    // operation_child ... " before one on the same line.
    let after = |stdout: &str, token: &str| -> Vec<String> {
        stdout
            .lines()
            .filter_map(|line| line.split(token).nth(1).map(str::to_owned))
            .collect()
    };

    // The states a crash may leave: before the first operation, and after
    // each one that returned in that child. Each child reports its own:
    // the bytes OpenMLS stores for the same operation on the same input
    // differ from one process to the next (a join's and a peer commit's
    // group rows too, not only a new group's or an own commit's).
    let before = {
        let copy = fixture
            .dir
            .path()
            .join(format!("{workload:?}-{mode:?}-before.db"));
        std::fs::copy(&fixture.template, &copy).unwrap();
        table_digests(&PoolProvider::open(&copy).unwrap())
    };
    let states = |stdout: &str| -> Vec<(String, BTreeMap<String, String>)> {
        let reported = after(stdout, "operation-state ").into_iter().map(|rest| {
            let (operation, digests) = rest.split_once(' ').unwrap();
            let digests = digests
                .split(',')
                .map(|pair| {
                    let (table, digest) = pair.split_once('=').unwrap();
                    (table.to_owned(), digest.to_owned())
                })
                .collect();
            (format!("after {operation}"), digests)
        });
        std::iter::once(("before".to_owned(), before.clone()))
            .chain(reported)
            .collect()
    };

    let (db, out, output) = run(0);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{name}: the child that was never aborted failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let commits: Vec<Commit> = after(&stdout, "operation-commit ")
        .iter()
        .map(|rest| {
            let (operation, tables) = rest.split_once(' ').unwrap();
            Commit {
                operation: operation.to_owned(),
                tables: tables
                    .split(',')
                    .filter(|t| *t != "-")
                    .map(str::to_owned)
                    .collect(),
            }
        })
        .collect();
    assert_eq!(
        after(&stdout, "operation-done "),
        [commits.len().to_string()],
        "{name}: {stdout}"
    );
    for (i, commit) in commits.iter().enumerate() {
        let tables: Vec<&str> = commit.tables.iter().map(String::as_str).collect();
        println!(
            "{name} commit {} ({}): {}",
            i + 1,
            commit.operation,
            if tables.is_empty() {
                "no rowid table".to_owned()
            } else {
                tables.join(", ")
            }
        );
    }
    let bob = PoolProvider::open(&db).unwrap();
    // The digests see what the parent sees after reopening.
    assert_eq!(
        Some(table_digests(&bob)),
        states(&stdout).pop().map(|(_, digests)| digests),
        "{name}: the reopened database differs from what the child saw"
    );
    let through = check(&bob, &out);
    assert!(
        through.lost.is_none(),
        "{name}: the operation without a crash left a broken state: {through:?}"
    );

    let mut findings = Vec::new();
    for abort_at in 1..=commits.len() {
        let (db, out, output) = run(abort_at);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            output.status.signal(),
            Some(libc::SIGABRT),
            "{name}: the child meant to abort before commit {abort_at} ended otherwise \
             ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let bob = PoolProvider::open(&db).expect("the database reopens after the crash");
        let digests = table_digests(&bob);
        let states = states(&stdout);
        // A crash before an operation's erasure bookkeeping, with none of
        // its data commits left, comes after the operation in all but the
        // erasure record the digests leave out, though the operation never
        // returned to report it.
        let operation = &commits[abort_at - 1].operation;
        let only_bookkeeping_left = commits[abort_at - 1..]
            .iter()
            .filter(|c| &c.operation == operation)
            .all(Commit::is_erasure_bookkeeping);
        let state = states
            .iter()
            .find(|(_, state)| *state == digests)
            .map(|(label, _)| label.clone())
            .or_else(|| {
                only_bookkeeping_left
                    .then(|| format!("after {operation}, but for its erasure bookkeeping"))
            });
        // For the log: the tables in which the crash left a state of its own.
        let differing = |state: &BTreeMap<String, String>| -> String {
            let tables: Vec<&str> = digests
                .iter()
                .filter(|(table, digest)| state.get(*table) != Some(*digest))
                .map(|(table, _)| table.as_str())
                .collect();
            tables.join(", ")
        };
        let rows = state
            .as_ref()
            .map(|label| format!("as {label}"))
            .unwrap_or_else(|| {
                let mut text = format!(
                    "in no state between operations (differ from before in {}",
                    differing(&states[0].1)
                );
                if let Some((last, last_state)) = states[1..].last() {
                    text += &format!("; from {last} in {}", differing(last_state));
                }
                text + ")"
            });
        let finding = check(&bob, &out);
        println!(
            "{name} crash before commit {abort_at}: tables {rows}; {}{}",
            finding.found,
            finding
                .lost
                .as_deref()
                .map(|why| format!(" -> LOST: {why}"))
                .unwrap_or_default()
        );
        findings.push((abort_at, finding, state));
    }
    Sweep { commits, findings }
}

/// Sweeps `workload` bare, where some crash point must lose data, and in
/// its transactions (one per operation named in `operations`), where none
/// may; prints the summary line and returns the bare sweep for checks of
/// its own.
fn bare_then_wrapped(
    fixture: &Fixture,
    workload: Workload,
    check: impl Fn(&PoolProvider, &Path) -> Finding + Copy,
    (short, long): (&str, &str),
    operations: &[&str],
) -> Sweep {
    let started = Instant::now();
    let bare = sweep(fixture, workload, Mode::Bare, check);
    bare.assert_some_crash_loses(short);
    let wrapped = sweep(fixture, workload, Mode::Wrapped, check);
    wrapped.assert_all_or_nothing(short, operations);
    summary(long, &bare, &wrapped);
    println!("{short}: {:.1?}", started.elapsed());
    bare
}

fn summary(workload: &str, bare: &Sweep, wrapped: &Sweep) {
    let side = |sweep: &Sweep| {
        format!(
            "{}, {} of {} crash points lose data",
            sweep.describe_commits(),
            sweep.losing(),
            sweep.findings.len(),
        )
    };
    println!(
        "SUMMARY {workload}: bare {}; wrapped {}",
        side(bare),
        side(wrapped)
    );
}

// ---------------------------------------------------------------------------
// What the client does after the crash, as checks that report rather than
// panic.

/// Bob's group as the reopened database holds it.
fn load(provider: &PoolProvider, group_id: &GroupId) -> Result<Option<MlsGroup>, String> {
    MlsGroup::load(provider.storage(), group_id)
        .map_err(|e| format!("loading the group fails: {e}"))
}

/// Bob's group as the reopened database holds it, or the loss found: no
/// group (with what rows of it are stored), or one that fails to load.
fn stored_group(bob: &PoolProvider, group_id: &GroupId) -> Result<MlsGroup, Finding> {
    match load(bob, group_id) {
        Ok(Some(group)) => Ok(group),
        Ok(None) => {
            let rows = group_rows(bob, group_id);
            Err(Finding::lost(
                "no group",
                format!("no group loads (rows stored: {})", rows.join(", ")),
            ))
        }
        Err(e) => Err(Finding::lost("group fails to load", e)),
    }
}

/// `group_id` as the storage writes it in its key columns: encoded with
/// the database's codec.
fn stored_key(group_id: &GroupId) -> Vec<u8> {
    DefaultCodec::to_vec(group_id).unwrap()
}

/// The kinds of OpenMLS group rows stored for `group_id`.
fn group_rows(provider: &PoolProvider, group_id: &GroupId) -> Vec<String> {
    let conn = provider.storage().connection();
    let mut stmt = conn
        .prepare("SELECT data_type FROM openmls_group_data WHERE group_id = ?1 ORDER BY data_type")
        .unwrap();
    let rows = stmt
        .query_map([stored_key(group_id)], |row| row.get(0))
        .unwrap();
    rows.map(Result::unwrap).collect()
}

/// Processes `commit` and merges it.
fn apply_commit(
    group: &mut MlsGroup,
    provider: &impl OpenMlsProvider,
    commit: ProtocolMessage,
) -> Result<(), String> {
    let processed = group
        .process_message(provider, commit)
        .map_err(|e| format!("processing the commit fails: {e:?}"))?;
    match processed.into_content() {
        ProcessedMessageContent::StagedCommitMessage(staged) => group
            .merge_staged_commit(provider, *staged)
            .map_err(|e| format!("merging the commit fails: {e:?}")),
        other => Err(format!("expected a commit, got {other:?}")),
    }
}

/// Bob applies `commit` in one `group_transaction`, as the client goes on.
fn bob_applies(
    bob: &PoolProvider,
    group: &mut MlsGroup,
    commit: ProtocolMessage,
) -> Result<(), String> {
    bob.group_transaction(group, |group, p| -> Result<(), BoxError> {
        Ok(apply_commit(group, p, commit)?)
    })
    .map_err(|e| e.to_string())
}

/// Bob updates his leaf and merges, in one `group_transaction`: the commit.
fn bob_commits(
    bob: &PoolProvider,
    group: &mut MlsGroup,
    signer: &SignatureKeyPair,
) -> Result<ProtocolMessage, String> {
    let commit = bob
        .group_transaction(group, |group, p| -> Result<_, BoxError> {
            let bundle = group.self_update(p, signer, LeafNodeParameters::default())?;
            group.merge_pending_commit(p)?;
            Ok(bundle.commit().clone())
        })
        .map_err(|e| format!("Bob cannot commit: {e}"))?;
    Ok(protocol_message(&commit.tls_serialize_detached().unwrap()))
}

/// `from` sends `text`, `to` reads it.
fn send(
    text: &[u8],
    (from, from_provider, signer): (&mut MlsGroup, &impl OpenMlsProvider, &impl Signer),
    (to, to_provider): (&mut MlsGroup, &impl OpenMlsProvider),
) -> Result<(), String> {
    let message = from
        .create_message(from_provider, signer, text)
        .map_err(|e| format!("encrypting fails: {e:?}"))?;
    let message = protocol_message(&message.tls_serialize_detached().unwrap());
    let processed = to
        .process_message(to_provider, message)
        .map_err(|e| format!("decrypting fails: {e:?}"))?;
    match processed.into_content() {
        ProcessedMessageContent::ApplicationMessage(app) => {
            let bytes = app.into_bytes();
            if bytes == text {
                Ok(())
            } else {
                Err(format!("read {bytes:?} for {text:?}"))
            }
        }
        other => Err(format!("expected the application message, got {other:?}")),
    }
}

/// Bob and Alice are at the same epoch with the same view of it, and each
/// reads what the other sends.
fn in_step(
    (bob, bob_provider, bob_signer): (&mut MlsGroup, &PoolProvider, &SignatureKeyPair),
    (alice, alice_provider, alice_signer): (
        &mut MlsGroup,
        &impl OpenMlsProvider,
        &SignatureKeyPair,
    ),
) -> Result<(), String> {
    if bob.epoch() != alice.epoch() {
        return Err(format!(
            "Bob is at epoch {}, Alice at {}",
            bob.epoch().as_u64(),
            alice.epoch().as_u64()
        ));
    }
    if bob.epoch_authenticator().as_slice() != alice.epoch_authenticator().as_slice() {
        return Err("the epoch authenticators differ".into());
    }
    let tree = |g: &MlsGroup| g.export_ratchet_tree().tls_serialize_detached().unwrap();
    if tree(bob) != tree(alice) {
        return Err("the ratchet trees differ".into());
    }
    if export(bob, bob_provider.crypto())? != export(alice, alice_provider.crypto())? {
        return Err("the exported secrets differ".into());
    }
    send(
        b"from alice",
        (alice, alice_provider, alice_signer),
        (bob, bob_provider),
    )
    .map_err(|e| format!("Alice to Bob: {e}"))?;
    send(
        b"from bob",
        (bob, bob_provider, bob_signer),
        (alice, alice_provider),
    )
    .map_err(|e| format!("Bob to Alice: {e}"))
}

/// After the crash the two go on: they agree and talk, Alice commits and
/// Bob follows (which takes his leaf's private key for the epoch), Bob
/// commits and Alice follows, and they agree and talk again.
fn carries_on(
    (bob, bob_provider, bob_signer): (&mut MlsGroup, &PoolProvider, &SignatureKeyPair),
    (alice, alice_provider, alice_signer): (
        &mut MlsGroup,
        &impl OpenMlsProvider,
        &SignatureKeyPair,
    ),
) -> Result<(), String> {
    let step = |bob: &mut MlsGroup, alice: &mut MlsGroup| {
        in_step(
            (bob, bob_provider, bob_signer),
            (alice, alice_provider, alice_signer),
        )
    };
    step(bob, alice)?;
    let commit = peer_commits(alice, alice_provider, alice_signer)?;
    bob_applies(bob_provider, bob, commit)
        .map_err(|e| format!("Bob cannot follow Alice's commit: {e}"))?;
    step(bob, alice)?;
    let commit = bob_commits(bob_provider, bob, bob_signer)?;
    apply_commit(alice, alice_provider, commit)
        .map_err(|e| format!("Alice cannot follow Bob's commit: {e}"))?;
    step(bob, alice)
}

/// Alice (or any member on OpenMLS's in-memory provider) updates her leaf
/// and merges: the commit.
fn peer_commits(
    group: &mut MlsGroup,
    provider: &impl OpenMlsProvider,
    signer: &SignatureKeyPair,
) -> Result<ProtocolMessage, String> {
    let bundle = group
        .self_update(provider, signer, LeafNodeParameters::default())
        .map_err(|e| format!("Alice cannot commit: {e:?}"))?;
    group
        .merge_pending_commit(provider)
        .map_err(|e| format!("Alice cannot merge her commit: {e:?}"))?;
    Ok(protocol_message(
        &bundle.commit().tls_serialize_detached().unwrap(),
    ))
}

fn export(group: &MlsGroup, crypto: &impl OpenMlsCrypto) -> Result<Vec<u8>, String> {
    group
        .export_secret(crypto, "operation crashes", b"", 32)
        .map_err(|e| format!("exporting a secret fails: {e:?}"))
}

// ---------------------------------------------------------------------------
// Workload 1: joining from a Welcome.

struct JoinSetup {
    fixture: Fixture,
    alice: Peer,
    kp_ref: Vec<u8>,
    welcome: Vec<u8>,
}

impl JoinSetup {
    fn new() -> Self {
        let fixture = Fixture::new();
        let bundle = fixture.key_package();
        let kp_ref = bundle
            .key_package()
            .hash_ref(&openmls_rust_crypto::RustCrypto::default())
            .unwrap()
            .as_slice()
            .to_vec();
        let (alice, welcome) = Peer::invites(bundle.key_package());
        fixture.share(WELCOME_FILE, &welcome);
        Self {
            fixture,
            alice,
            kp_ref,
            welcome,
        }
    }

    /// Either Bob is in the group, or his KeyPackage is still there and
    /// the same Welcome joins now; then he and Alice talk.
    fn check(&self, bob: &PoolProvider) -> Finding {
        let kp_kept = bob
            .storage()
            .key_package_bundle(&self.kp_ref)
            .unwrap()
            .is_some();
        let kp = if kp_kept {
            "KeyPackage kept"
        } else {
            "KeyPackage gone"
        };
        let mut group = match load(bob, &self.alice.group_id) {
            Ok(Some(group)) => group,
            Ok(None) => {
                let rows = group_rows(bob, &self.alice.group_id);
                let found = if rows.is_empty() {
                    format!("{kp}, no group")
                } else {
                    format!("{kp}, no group (rows stored: {})", rows.join(", "))
                };
                match bob.transaction(|p| -> Result<_, BoxError> {
                    Ok(join(p, welcome_from(&self.welcome))?)
                }) {
                    Ok(group) => {
                        let mut group = group;
                        return self.talk(bob, &mut group, format!("{found}; joined again"));
                    }
                    Err(e) => {
                        return Finding::lost(
                            found,
                            format!("the same Welcome no longer joins: {e}"),
                        )
                    }
                }
            }
            Err(e) => return Finding::lost(format!("{kp}, group fails to load"), e),
        };
        self.talk(bob, &mut group, format!("{kp}, group stored"))
    }

    fn talk(&self, bob: &PoolProvider, group: &mut MlsGroup, found: String) -> Finding {
        self.alice
            .talks_with(bob, self.fixture.bob_signer(), group, found)
    }
}

#[test]
fn a_join_loses_its_invitation_to_a_crash_between_bare_calls_and_never_inside_a_transaction() {
    let setup = JoinSetup::new();
    let check = |bob: &PoolProvider, _: &Path| setup.check(bob);
    let bare = bare_then_wrapped(
        &setup.fixture,
        Workload::Join,
        check,
        ("join", "join from a Welcome"),
        &["join"],
    );
    // The invitation itself is lost: the KeyPackage is gone, no group was
    // stored, and the Welcome cannot be joined again (`check` tried).
    assert!(
        bare.findings.iter().any(|(_, f, _)| f.lost.is_some()
            && f.found.starts_with("KeyPackage gone, no group")
            && f.lost
                .as_deref()
                .is_some_and(|why| why.starts_with("the same Welcome no longer joins"))),
        "no crash point lost the invitation: {:?}",
        bare.findings
    );
}

// ---------------------------------------------------------------------------
// Workload 2: a peer's commit, processed and merged.

struct PeerCommitSetup {
    fixture: Fixture,
    /// Alice after her commit.
    alice: Peer,
    group_id: GroupId,
    commit: Vec<u8>,
    old_epoch: u64,
    new_epoch: u64,
}

impl PeerCommitSetup {
    fn new() -> Self {
        let fixture = Fixture::new();
        let bundle = fixture.key_package();
        let (mut alice, welcome) = Peer::invites(bundle.key_package());
        let group_id = fixture.join(&welcome);
        let mut alice_group = alice.restore();
        let old_epoch = alice_group.epoch().as_u64();
        let bundle = alice_group
            .self_update(
                &alice.client.provider,
                alice.signer(),
                LeafNodeParameters::default(),
            )
            .unwrap();
        alice_group
            .merge_pending_commit(&alice.client.provider)
            .unwrap();
        alice.save();
        let commit = bundle.commit().tls_serialize_detached().unwrap();
        fixture.share(COMMIT_FILE, &commit);
        Self {
            fixture,
            alice,
            group_id,
            commit,
            old_epoch,
            new_epoch: alice_group.epoch().as_u64(),
        }
    }

    /// Bob's group is at the old epoch and the same commit applies again,
    /// or at the new one; then he is in step with Alice.
    fn check(&self, bob: &PoolProvider) -> Finding {
        let mut group = match stored_group(bob, &self.group_id) {
            Ok(group) => group,
            Err(finding) => return finding,
        };
        let epoch = group.epoch().as_u64();
        let found = if epoch == self.old_epoch {
            if let Err(e) = bob_applies(bob, &mut group, protocol_message(&self.commit)) {
                return Finding::lost(
                    "old epoch",
                    format!("the same commit no longer applies: {e}"),
                );
            }
            "old epoch; the same commit applied again"
        } else if epoch == self.new_epoch {
            "new epoch"
        } else {
            return Finding::lost(
                format!("epoch {epoch}"),
                "neither the old nor the new epoch",
            );
        };
        self.alice
            .talks_with(bob, self.fixture.bob_signer(), &mut group, found)
    }
}

#[test]
fn a_peer_commit_merged_with_bare_calls_can_tear_the_group_and_never_inside_a_group_transaction() {
    let setup = PeerCommitSetup::new();
    let check = |bob: &PoolProvider, _: &Path| setup.check(bob);
    bare_then_wrapped(
        &setup.fixture,
        Workload::PeerCommit,
        check,
        ("peer commit", "a peer's commit processed and merged"),
        &["process+merge"],
    );
}

// ---------------------------------------------------------------------------
// Workload 3: an own commit, built (and sent), then merged.

struct OwnCommitSetup {
    fixture: Fixture,
    /// Alice before Bob's commit.
    alice: Peer,
    group_id: GroupId,
    old_epoch: u64,
}

impl OwnCommitSetup {
    fn new() -> Self {
        let fixture = Fixture::new();
        let bundle = fixture.key_package();
        let (alice, welcome) = Peer::invites(bundle.key_package());
        let group_id = fixture.join(&welcome);
        let old_epoch = alice.restore().epoch().as_u64();
        Self {
            fixture,
            alice,
            group_id,
            old_epoch,
        }
    }

    /// Alice gets the commit if the child sent it. Bob's group is at the
    /// new epoch, or at the old one with the commit pending (merged now if
    /// it was sent, dropped and made again if not), or at the old one with
    /// nothing pending and nothing sent (he commits again); then he is in
    /// step with Alice.
    fn check(&self, bob: &PoolProvider, sent: &Path) -> Finding {
        let signer = self.fixture.bob_signer();
        let sent = std::fs::read(sent).ok();
        let mut group = match stored_group(bob, &self.group_id) {
            Ok(group) => group,
            Err(finding) => return finding,
        };
        let mut alice = self.alice.restore();
        let alice_provider = &self.alice.client.provider;
        let epoch = group.epoch().as_u64();
        let pending = group.pending_commit().is_some();
        let (found, steps) = match (epoch == self.old_epoch, pending, sent) {
            (false, _, Some(commit)) if epoch == self.old_epoch + 1 => (
                "new epoch",
                apply_commit(&mut alice, alice_provider, protocol_message(&commit)),
            ),
            (false, _, _) => {
                return Finding::lost(
                    format!("epoch {epoch}"),
                    "not the old epoch, and not the new one with the commit sent",
                )
            }
            (true, true, Some(commit)) => (
                "old epoch, commit pending and sent; merged now",
                apply_commit(&mut alice, alice_provider, protocol_message(&commit)).and_then(
                    |()| {
                        bob.group_transaction(&mut group, |group, p| -> Result<(), BoxError> {
                            Ok(group.merge_pending_commit(p)?)
                        })
                        .map_err(|e| format!("merging the pending commit fails: {e}"))
                    },
                ),
            ),
            (true, true, None) => (
                "old epoch, commit pending but never sent; dropped and committed again",
                bob.group_transaction(&mut group, |group, p| -> Result<(), BoxError> {
                    Ok(group.clear_pending_commit(p.storage())?)
                })
                .map_err(|e| format!("clearing the pending commit fails: {e}"))
                .and_then(|()| bob_commits(bob, &mut group, signer))
                .and_then(|commit| apply_commit(&mut alice, alice_provider, commit)),
            ),
            (true, false, None) => (
                "old epoch, nothing pending or sent; committed again",
                bob_commits(bob, &mut group, signer)
                    .and_then(|commit| apply_commit(&mut alice, alice_provider, commit)),
            ),
            (true, false, Some(_)) => {
                return Finding::lost(
                    "old epoch, nothing pending, commit sent",
                    "the commit went out, but Bob can neither merge it nor process it",
                )
            }
        };
        Finding::unless_failed(
            found,
            steps.and_then(|()| {
                carries_on(
                    (&mut group, bob, signer),
                    (&mut alice, alice_provider, self.alice.signer()),
                )
            }),
        )
    }
}

#[test]
fn an_own_commit_built_and_merged_with_bare_calls_can_tear_the_group_and_never_in_group_transactions(
) {
    let setup = OwnCommitSetup::new();
    let check = |bob: &PoolProvider, out: &Path| setup.check(bob, out);
    bare_then_wrapped(
        &setup.fixture,
        Workload::OwnCommit,
        check,
        ("own commit", "an own commit built, then merged"),
        &["build", "merge"],
    );
}

// ---------------------------------------------------------------------------
// Workload 4: creating a group.

struct CreateSetup {
    fixture: Fixture,
}

impl CreateSetup {
    /// No trace of a group (Bob creates it now), or a whole group, with
    /// which Bob goes on.
    fn check(&self, bob: &PoolProvider) -> Finding {
        let signer = self.fixture.bob_signer();
        let traces: Vec<String> = {
            let conn = bob.storage().connection();
            GROUP_TABLES
                .iter()
                .filter_map(|table| {
                    let rows: i64 = conn
                        .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
                            row.get(0)
                        })
                        .unwrap();
                    (rows > 0).then(|| format!("{table} ({rows})"))
                })
                .collect()
        };
        let group_ids: Vec<Vec<u8>> = common::column(
            &bob.storage().connection(),
            "SELECT DISTINCT group_id FROM openmls_group_data",
        );
        let (mut group, found) = if traces.is_empty() {
            match bob.transaction(|p| -> Result<_, BoxError> {
                Ok(MlsGroup::new(
                    p,
                    signer,
                    &group_create_config(),
                    self.fixture.bob.credential.clone(),
                )?)
            }) {
                Ok(group) => (group, "no trace; created again".to_owned()),
                Err(e) => return Finding::lost("no trace", format!("creating fails: {e}")),
            }
        } else {
            let found = format!("rows in {}", traces.join(", "));
            let [group_id] = group_ids.as_slice() else {
                return Finding::lost(found, format!("{} groups stored", group_ids.len()));
            };
            let group_id: GroupId = DefaultCodec::from_slice(group_id).unwrap();
            match load(bob, &group_id) {
                Ok(Some(group)) => (group, format!("{found}; group loads")),
                Ok(None) => {
                    let rows = group_rows(bob, &group_id);
                    return Finding::lost(
                        found,
                        format!("no group loads (group data: {})", rows.join(", ")),
                    );
                }
                Err(e) => return Finding::lost(found, e),
            }
        };
        Finding::unless_failed(found, self.goes_on(bob, &mut group))
    }

    /// Alice joins by an external commit, which encrypts a path secret to
    /// Bob's leaf: Bob follows it only with his leaf's private key from the
    /// creation. Then the two carry on.
    fn goes_on(&self, bob: &PoolProvider, group: &mut MlsGroup) -> Result<(), String> {
        let signer = self.fixture.bob_signer();
        let group_info = group
            .export_group_info(bob.crypto(), signer, true)
            .map_err(|e| format!("Bob cannot export the GroupInfo: {e:?}"))?;
        let MlsMessageBodyIn::GroupInfo(group_info) =
            MlsMessageIn::tls_deserialize_exact(group_info.tls_serialize_detached().unwrap())
                .unwrap()
                .extract()
        else {
            return Err("expected a GroupInfo".into());
        };
        let alice = PlainClient::new("alice");
        let (mut alice_group, bundle) = MlsGroup::external_commit_builder()
            .with_config(
                MlsGroupJoinConfig::builder()
                    .use_ratchet_tree_extension(true)
                    .build(),
            )
            .build_group(
                &alice.provider,
                group_info,
                alice.identity.credential.clone(),
            )
            .map_err(|e| format!("Alice cannot join by an external commit: {e:?}"))?
            .load_psks(alice.provider.storage())
            .map_err(|e| format!("{e:?}"))?
            .build(
                alice.provider.rand(),
                alice.provider.crypto(),
                &alice.identity.signer,
                |_| true,
            )
            .map_err(|e| format!("Alice cannot build her external commit: {e:?}"))?
            .finalize(&alice.provider)
            .map_err(|e| format!("Alice cannot finalize her external commit: {e:?}"))?;
        let commit = protocol_message(&bundle.commit().tls_serialize_detached().unwrap());
        bob_applies(bob, group, commit)
            .map_err(|e| format!("Bob cannot follow Alice's external commit: {e}"))?;
        carries_on(
            (group, bob, signer),
            (&mut alice_group, &alice.provider, &alice.identity.signer),
        )
    }
}

#[test]
fn a_group_created_with_bare_calls_can_be_left_partial_and_inside_a_transaction_is_all_or_nothing()
{
    let setup = CreateSetup {
        fixture: Fixture::new(),
    };
    let check = |bob: &PoolProvider, _: &Path| setup.check(bob);
    bare_then_wrapped(
        &setup.fixture,
        Workload::Create,
        check,
        ("create", "group creation"),
        &["create"],
    );
}
