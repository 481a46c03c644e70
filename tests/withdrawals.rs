//! The server half of the lifecycle: every path that takes a KeyPackage a
//! server may hold out of service records its withdrawal in the same
//! transaction, the outbox survives crashes and reopening, and a grace
//! window lets a KeyPackage handed to two inviters join both groups.

mod common;

use std::{
    collections::HashSet,
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use common::{
    build_key_package, into_protocol_message, join, now, to_hex,
    traces::{eventually, from_hex, private_keys, traces_of_all, until_none},
    Identity, PlainClient,
};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_keypackage_pool::{
    Error, KeyPackagePool, KeyPackageStatus, PoolAction, PoolConfig, PoolProvider, PoolStorage,
    StorageOptions, WithdrawalReason,
};

/// A database file with one identity, opened with a grace window.
struct Fixture {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    provider: PoolProvider,
    identity: Identity,
}

impl Fixture {
    fn new(grace: Duration) -> Self {
        let (dir, path) = common::temp_db();
        let options = StorageOptions {
            spent_key_package_grace: grace,
            ..StorageOptions::default()
        };
        Self {
            provider: PoolProvider::open_with_options(&path, &options).unwrap(),
            path,
            _dir: dir,
            identity: Identity::new("kim"),
        }
    }

    fn pool(&self, config: PoolConfig) -> KeyPackagePool<'_, SignatureKeyPair> {
        self.identity.pool(&self.provider, config)
    }

    fn storage(&self) -> &PoolStorage {
        self.provider.storage()
    }

    /// The outbox as (ref, reason) pairs, sorted.
    fn outbox(&self) -> Vec<(Vec<u8>, WithdrawalReason)> {
        let mut all: Vec<_> = self
            .storage()
            .pending_withdrawals()
            .unwrap()
            .into_iter()
            .map(|w| (w.keypackage_ref, w.reason))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn has_bundle(&self, keypackage_ref: &[u8]) -> bool {
        self.storage()
            .key_package_bundle(keypackage_ref)
            .unwrap()
            .is_some()
    }
}

fn sorted(mut pairs: Vec<(Vec<u8>, WithdrawalReason)>) -> Vec<(Vec<u8>, WithdrawalReason)> {
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs
}

fn config() -> PoolConfig {
    PoolConfig {
        target_size: 16,
        low_watermark: 4,
        hard_cap: 64,
        ..PoolConfig::default()
    }
}

#[test]
fn every_deleting_path_records_exactly_what_a_server_may_hold() {
    use KeyPackageStatus::*;
    use WithdrawalReason as Why;
    let fx = Fixture::new(Duration::ZERO);
    let pool = fx.pool(config());
    let storage = fx.storage();

    // Handed out by pending_upload, never marked: they may have arrived.
    let offered = pool.generate(3).unwrap();
    assert_eq!(pool.pending_upload().unwrap().ready.len(), 3);
    // Built and never handed out: no server can have them.
    let unseen = pool.generate(2).unwrap();
    for r in &unseen {
        storage.remove_key_package(r).unwrap();
        assert!(!fx.has_bundle(r));
    }
    assert_eq!(fx.outbox(), vec![], "never handed out, never withdrawn");
    let marked = |status: KeyPackageStatus| {
        let r = pool.generate(1).unwrap().remove(0);
        pool.pending_upload().unwrap();
        pool.mark_uploaded(&[&r]).unwrap();
        match status {
            Available => pool.mark_available(&[&r]).unwrap(),
            Reserved => storage
                .update_reservation_info(&r, "res", "peer", now() + 60)
                .unwrap(),
            Failed => storage.update_pool_metadata_status(&r, Failed).unwrap(),
            _ => {}
        }
        assert_eq!(storage.get_metadata(&r).unwrap().unwrap().status, status);
        r
    };
    let uploaded = marked(Uploaded);
    let available = marked(Available);
    let reserved = marked(Reserved);
    let failed = marked(Failed);

    for r in offered
        .iter()
        .chain([&uploaded, &available, &reserved, &failed])
    {
        storage.remove_key_package(r).unwrap();
        assert!(!fx.has_bundle(r));
    }
    let mut expected: Vec<(Vec<u8>, WithdrawalReason)> = offered
        .iter()
        .chain([&uploaded, &available, &reserved, &failed])
        .map(|r| (r.clone(), Why::Removed))
        .collect();
    assert_eq!(fx.outbox(), sorted(expected.clone()), "remove_key_package");

    // Pruning: an expired uploaded one and an expired one never handed out.
    let short = fx.pool(PoolConfig {
        lifetime_secs: 3_600,
        expiry_horizon_secs: 60,
        ..config()
    });
    let expired_uploaded = short.generate(1).unwrap().remove(0);
    short.pending_upload().unwrap();
    short.mark_uploaded(&[&expired_uploaded]).unwrap();
    let expired_unseen = short.generate(1).unwrap().remove(0);
    let pruned = short.prune_expired(now() + 7_200).unwrap();
    assert!(pruned.contains(&expired_uploaded) && pruned.contains(&expired_unseen));
    expected.push((expired_uploaded, Why::Expired));
    assert_eq!(fx.outbox(), sorted(expected.clone()), "prune_expired");

    // Last resort: three published, one beyond what is kept.
    let first = pool.ensure_last_resort(now()).unwrap().created.unwrap();
    let more: Vec<Vec<u8>> = (0..2)
        .map(|_| {
            let bundle = build_key_package(&fx.provider, &fx.identity, true);
            bundle
                .key_package()
                .hash_ref(fx.provider.crypto())
                .unwrap()
                .as_slice()
                .to_vec()
        })
        .collect();
    pool.mark_uploaded(&[&first, &more[0], &more[1]]).unwrap();
    let report = pool.ensure_last_resort(now()).unwrap();
    assert_eq!(report.removed.len(), 1, "{report:?}");
    expected.push((report.removed[0].clone(), Why::SurplusLastResort));
    assert_eq!(fx.outbox(), sorted(expected.clone()), "ensure_last_resort");

    // A Welcome consuming an uploaded one, and one that was never handed out.
    let consumed = pool.generate(1).unwrap().remove(0);
    pool.pending_upload().unwrap();
    pool.mark_uploaded(&[&consumed]).unwrap();
    let bundle = build_key_package(&fx.provider, &fx.identity, false);
    let direct = bundle
        .key_package()
        .hash_ref(fx.provider.crypto())
        .unwrap()
        .as_slice()
        .to_vec();
    for r in [&consumed, &direct] {
        let bundle = storage.key_package_bundle(r).unwrap().unwrap();
        let (_group, welcome) = PlainClient::new("lee").create_group_with(bundle.key_package());
        join(&fx.provider, welcome).unwrap();
        assert!(!fx.has_bundle(r));
    }
    expected.push((consumed, Why::Consumed));
    assert_eq!(fx.outbox(), sorted(expected.clone()), "a Welcome");

    // A scope, then a whole signature key.
    let left = pool.generate(2).unwrap();
    pool.pending_upload().unwrap();
    pool.mark_uploaded(&left).unwrap();
    let other_suite = fx.pool(PoolConfig {
        ciphersuite: Ciphersuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519,
        ..config()
    });
    let other = other_suite.generate(1).unwrap().remove(0);
    other_suite.pending_upload().unwrap();
    let removed_scope = storage.remove_scope(pool.scope()).unwrap();
    for r in &left {
        assert!(removed_scope.contains(r));
        expected.push((r.clone(), Why::ScopeRemoved));
    }
    // The last-resort ones the scope kept, published, go with it.
    for r in removed_scope.iter().filter(|r| !left.contains(r)) {
        expected.push((r.clone(), Why::ScopeRemoved));
    }
    assert_eq!(fx.outbox(), sorted(expected.clone()), "remove_scope");
    storage
        .remove_signature_key(&pool.scope().signature_key)
        .unwrap();
    expected.push((other, Why::KeyRemoved));
    assert_eq!(fx.outbox(), sorted(expected), "remove_signature_key");

    // The pool's own view is its scope's part, and health asks for them.
    assert_eq!(
        pool.pending_withdrawals().unwrap().len()
            + other_suite.pending_withdrawals().unwrap().len(),
        fx.outbox().len()
    );
    let health = pool.health(now()).unwrap();
    assert_eq!(
        health.pending_withdrawals,
        pool.pending_withdrawals().unwrap().len()
    );
    assert!(health
        .actions
        .contains(&PoolAction::Withdraw(health.pending_withdrawals)));
}

#[test]
fn withdrawals_outlive_the_identity_and_leave_only_when_confirmed_all_or_none() {
    let fx = Fixture::new(Duration::ZERO);
    let pool = fx.pool(config());
    let refs = pool.generate(5).unwrap();
    pool.pending_upload().unwrap();
    pool.mark_uploaded(&refs).unwrap();
    let removed = fx
        .storage()
        .remove_signature_key(&pool.scope().signature_key)
        .unwrap();
    assert_eq!(removed.len(), 5);
    let (path, scope) = (fx.path.clone(), pool.scope().clone());
    drop(pool);
    drop(fx.provider);

    let storage = PoolStorage::open(&path).unwrap();
    let listed = storage.pending_withdrawals().unwrap();
    assert_eq!(listed.len(), 5);
    assert!(listed
        .iter()
        .all(|w| { w.reason == WithdrawalReason::KeyRemoved && w.scope.as_ref() == Some(&scope) }));
    // The scope is gone but its withdrawals are still listed under it.
    let scopes = storage.scopes(now()).unwrap();
    assert_eq!(scopes.len(), 1);
    assert_eq!((scopes[0].pending_withdrawals, scopes[0].held), (5, 0));

    // One unknown ref refuses the whole list.
    let unknown = vec![0x42; 32];
    match storage.confirm_withdrawn(&[&refs[0], &unknown]) {
        Err(Error::NotFound { keypackage_ref }) => assert_eq!(keypackage_ref.0, unknown),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_eq!(storage.pending_withdrawals().unwrap().len(), 5);
    storage.withdrawal_failed(&refs[..2], "timed out").unwrap();
    let failed: Vec<_> = storage
        .pending_withdrawals()
        .unwrap()
        .into_iter()
        .filter(|w| w.attempts == 1)
        .collect();
    assert_eq!(failed.len(), 2);
    assert!(failed
        .iter()
        .all(|w| w.last_error.as_deref() == Some("timed out")));

    storage.confirm_withdrawn(&refs[..3]).unwrap();
    storage.abandon_withdrawals(&refs[3..4]).unwrap();
    drop(storage);
    let storage = PoolStorage::open(&path).unwrap();
    let left: Vec<_> = storage
        .pending_withdrawals()
        .unwrap()
        .into_iter()
        .map(|w| w.keypackage_ref)
        .collect();
    assert_eq!(left, vec![refs[4].clone()]);
}

/// Two inviters, each with a group of their own, and Bob's KeyPackage that
/// a relay handed to both.
fn invited_twice(key_package: &KeyPackage) -> [(PlainClient, MlsGroup, Welcome); 2] {
    ["ann", "ben"].map(|name| {
        let client = PlainClient::new(name);
        let (group, welcome) = client.create_group_with(key_package);
        (client, group, welcome)
    })
}

/// A message each way between an inviter and Bob, then Bob replaces his
/// leaf's keys (so the KeyPackage's encryption key is no longer his leaf's).
fn talk(
    fx: &Fixture,
    bob: &Identity,
    inviter: &PlainClient,
    theirs: &mut MlsGroup,
    his: &mut MlsGroup,
) {
    let hello = theirs
        .create_message(&inviter.provider, &inviter.identity.signer, b"hello bob")
        .unwrap();
    let received = his
        .process_message(&fx.provider, into_protocol_message(&hello))
        .unwrap();
    assert!(matches!(
        received.into_content(),
        ProcessedMessageContent::ApplicationMessage(_)
    ));
    let reply = his
        .create_message(&fx.provider, &bob.signer, b"hello back")
        .unwrap();
    let received = theirs
        .process_message(&inviter.provider, into_protocol_message(&reply))
        .unwrap();
    assert!(matches!(
        received.into_content(),
        ProcessedMessageContent::ApplicationMessage(_)
    ));
    let update = his
        .self_update(&fx.provider, &bob.signer, LeafNodeParameters::default())
        .unwrap();
    his.merge_pending_commit(&fx.provider).unwrap();
    let processed = theirs
        .process_message(&inviter.provider, into_protocol_message(update.commit()))
        .unwrap();
    match processed.into_content() {
        ProcessedMessageContent::StagedCommitMessage(staged) => theirs
            .merge_staged_commit(&inviter.provider, *staged)
            .unwrap(),
        other => panic!("expected a commit, got {other:?}"),
    }
}

#[test]
fn within_the_grace_window_a_key_package_handed_out_twice_joins_both_groups() {
    // Four seconds: both joins, in a debug build on a loaded machine, fall
    // inside it (the first one's end and the second one's lookup take well
    // under a second unloaded).
    let fx = Fixture::new(Duration::from_secs(4));
    let bob = &fx.identity;
    let pool = fx.pool(config());
    let kp_ref = pool.generate(1).unwrap().remove(0);
    pool.pending_upload().unwrap();
    pool.mark_uploaded(&[&kp_ref]).unwrap();
    let bundle = fx.storage().key_package_bundle(&kp_ref).unwrap().unwrap();
    let (init_key, encryption_key) = private_keys(&bundle);
    let [(ann, mut ann_group, first), (ben, mut ben_group, second)] =
        invited_twice(bundle.key_package());

    let mut bob_in_ann = join(&fx.provider, first).unwrap();
    assert!(fx.has_bundle(&kp_ref), "the window keeps the bundle");
    let row = fx.storage().get_metadata(&kp_ref).unwrap().unwrap();
    assert_eq!(row.status, KeyPackageStatus::Spent);
    assert!(row.retired_until.is_some());
    let mut bob_in_ben = join(&fx.provider, second).unwrap();
    talk(&fx, bob, &ann, &mut ann_group, &mut bob_in_ann);
    talk(&fx, bob, &ben, &mut ben_group, &mut bob_in_ben);
    assert_eq!(
        fx.outbox(),
        vec![(kp_ref.clone(), WithdrawalReason::Consumed)]
    );

    // The window ends with the storage open and nothing called.
    let keys = [init_key, encryption_key];
    let found = until_none(Duration::from_secs(10), || traces_of_all(&fx.path, &keys));
    assert_eq!(found, Vec::<String>::new());
    assert!(!fx.has_bundle(&kp_ref));
    assert!(fx.storage().get_metadata(&kp_ref).unwrap().is_none());
    assert!(fx.storage().verify().unwrap().is_consistent());

    // A third inviter is too late.
    let (_, third) = PlainClient::new("cat").create_group_with(bundle.key_package());
    let refused = join(&fx.provider, third).unwrap_err();
    assert!(refused.contains("NoMatchingKeyPackage"), "{refused}");
}

#[test]
fn a_window_lasts_its_full_length_whatever_the_millisecond_it_starts_at() {
    let fx = Fixture::new(Duration::from_secs(1));
    let pool = fx.pool(config());
    // A window started in the last tenth of a wall-clock second must still
    // keep the bundle a whole second. Each attempt checks it 400 ms in; an
    // attempt the machine delays past the window proves nothing and is
    // tried again.
    let mut checked = 0;
    for _ in 0..5 {
        let kp_ref = pool.generate(1).unwrap().remove(0);
        pool.pending_upload().unwrap();
        pool.mark_uploaded(&[&kp_ref]).unwrap();
        let into_second = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().subsec_millis();
        while into_second(SystemTime::now()) < 900 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let started = Instant::now();
        fx.storage().remove_key_package(&kp_ref).unwrap();
        std::thread::sleep(Duration::from_millis(400));
        let kept = fx.has_bundle(&kp_ref);
        if started.elapsed() >= Duration::from_millis(900) {
            continue;
        }
        assert!(kept, "the window ended less than 400 ms after it began");
        checked += 1;
        // And it does end, with nothing called.
        assert!(eventually(Duration::from_secs(8), || !fx.has_bundle(&kp_ref)));
        break;
    }
    assert!(checked > 0, "no attempt ran within its window");
}

#[test]
fn without_a_window_the_second_welcome_fails_as_before() {
    let fx = Fixture::new(Duration::ZERO);
    let pool = fx.pool(config());
    let kp_ref = pool.generate(1).unwrap().remove(0);
    let bundle = fx.storage().key_package_bundle(&kp_ref).unwrap().unwrap();
    let [(_, _, first), (_, _, second)] = invited_twice(bundle.key_package());
    join(&fx.provider, first).unwrap();
    assert!(!fx.has_bundle(&kp_ref));
    let refused = join(&fx.provider, second).unwrap_err();
    assert!(refused.contains("NoMatchingKeyPackage"), "{refused}");
}

#[test]
fn key_packages_in_their_window_are_never_usable_nor_uploaded_and_count_in_the_cap() {
    let fx = Fixture::new(Duration::from_secs(3_600));
    let pool = fx.pool(PoolConfig {
        target_size: 4,
        low_watermark: 4,
        hard_cap: 6,
        ..PoolConfig::default()
    });
    let refs = pool.replenish().unwrap();
    assert_eq!(refs.len(), 4);
    pool.pending_upload().unwrap();
    pool.mark_uploaded(&refs).unwrap();
    for r in &refs[..2] {
        fx.storage().remove_key_package(r).unwrap();
        assert!(fx.has_bundle(r));
    }
    let health = pool.health(now()).unwrap();
    assert_eq!(
        (health.usable, health.in_grace, health.held),
        (2, 2, 4),
        "{health:?}"
    );
    assert_eq!(health.count(KeyPackageStatus::Expired), 2);
    // Replacements only up to the cap, which the window's two count in.
    let built = pool.replenish().unwrap();
    assert_eq!(built.len(), 2);
    let uploads = pool.pending_upload().unwrap().ready_refs();
    assert_eq!(
        uploads.iter().collect::<HashSet<_>>(),
        built.iter().collect::<HashSet<_>>()
    );
    pool.mark_uploaded(&uploads).unwrap();
    fx.storage().remove_key_package(&built[0]).unwrap();
    let health = pool.health(now()).unwrap();
    assert_eq!((health.held, health.in_grace), (6, 3));
    assert!(
        health.actions.contains(&PoolAction::CapReached(1)),
        "{:?}",
        health.actions
    );
    assert!(pool.replenish().unwrap().is_empty());
    // Pruning leaves them alone: the window, not the lifetime, ends them.
    assert!(pool.prune_expired(now() + 30 * 86_400).unwrap().len() == 3);
    assert!(refs[..2].iter().all(|r| fx.has_bundle(r)));
}

#[test]
fn a_grace_window_over_seven_days_is_refused_before_the_file_exists() {
    let (_dir, path) = common::temp_db();
    let options = StorageOptions {
        spent_key_package_grace: Duration::from_secs(7 * 86_400 + 1),
        ..StorageOptions::default()
    };
    assert!(matches!(
        PoolStorage::open_with_options(&path, &options),
        Err(Error::InvalidConfig { .. })
    ));
    assert!(!path.exists());
}

/// In a normal run nothing; as the child of the kill test, takes
/// KeyPackages out of service until killed.
#[test]
fn removal_child() {
    let Some(db) = std::env::var_os("WITHDRAWAL_DB") else {
        return;
    };
    let provider = PoolProvider::open(Path::new(&db)).unwrap();
    let identity = Identity::new("kim");
    let pool = identity.pool(
        &provider,
        PoolConfig {
            target_size: 1,
            low_watermark: 0,
            hard_cap: usize::MAX,
            ..PoolConfig::default()
        },
    );
    println!("withdrawal-child-ready");
    loop {
        let refs = pool.generate(4).unwrap();
        // Handed out (so a server may hold them) before anything removes
        // them; reported once that is committed.
        pool.pending_upload().unwrap();
        pool.mark_uploaded(&refs[..2]).unwrap();
        let hex: Vec<String> = refs.iter().map(|r| to_hex(r)).collect();
        println!("withdrawal-child-offered {}", hex.join(","));
        provider.storage().remove_key_package(&refs[0]).unwrap();
        provider
            .storage()
            .transaction(|storage| {
                storage.remove_key_package(&refs[1])?;
                storage.remove_key_package(&refs[2])
            })
            .unwrap();
        pool.prune_expired(now() + 30 * 86_400).unwrap();
    }
}

#[test]
fn a_process_killed_among_removals_leaves_a_withdrawal_for_every_key_gone() {
    let (_dir, path) = common::temp_db();
    drop(PoolStorage::open(&path).unwrap());
    let mut delay = 0x5eed_u64;
    let mut offered: HashSet<Vec<u8>> = HashSet::new();
    for kill in 0..12 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "removal_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("WITHDRAWAL_DB", &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .inspect(|line| {
                    // libtest may have begun the line with the test's name.
                    if line.ends_with("withdrawal-child-ready") {
                        let _ = ready_tx.send(());
                    }
                })
                .filter_map(|line| {
                    line.split("withdrawal-child-offered ")
                        .nth(1)
                        .map(str::to_owned)
                })
                .flat_map(|list| list.split(',').map(from_hex).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        });
        delay = delay
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        // The moment is counted from the child's open, however long a loaded
        // machine takes to start it.
        if let Err(e) = ready.recv_timeout(Duration::from_secs(60)) {
            let _ = child.kill();
            let status = child.wait();
            panic!("kill {kill}: the child was not ready ({e:?}, exit {status:?})");
        }
        std::thread::sleep(Duration::from_millis(150 + (delay >> 33) % 250));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        offered.extend(reader.join().unwrap());

        let storage = PoolStorage::open(&path).unwrap();
        assert!(
            storage.verify().unwrap().is_consistent(),
            "after kill {kill}"
        );
        let outbox: HashSet<Vec<u8>> = storage
            .pending_withdrawals()
            .unwrap()
            .into_iter()
            .map(|w| w.keypackage_ref)
            .collect();
        for r in &offered {
            let keys_there = storage.key_package_bundle(r).unwrap().is_some();
            assert_eq!(
                outbox.contains(r),
                !keys_there,
                "after kill {kill}: a KeyPackage a server may hold, keys there: {keys_there}"
            );
        }
        // Nothing is withdrawn whose keys are still on disk.
        for r in &outbox {
            assert!(storage.key_package_bundle(r).unwrap().is_none());
        }
    }
    assert!(
        offered.len() >= 8,
        "the child never got going: {}",
        offered.len()
    );
}

#[test]
fn repair_records_the_withdrawal_of_a_row_whose_bundle_is_gone() {
    let fx = Fixture::new(Duration::ZERO);
    let pool = fx.pool(config());
    let refs = pool.generate(2).unwrap();
    pool.pending_upload().unwrap();
    pool.mark_uploaded(&refs[..1]).unwrap();
    // Both bundles lost behind the pool's back.
    fx.storage()
        .connection()
        .execute("DELETE FROM openmls_key_packages", [])
        .unwrap();
    let repaired = fx.storage().repair().unwrap();
    assert_eq!(repaired.metadata_without_bundle.len(), 2);
    // Both were handed out, so a server may hold either.
    assert_eq!(
        fx.outbox(),
        sorted(
            refs.iter()
                .map(|r| (r.clone(), WithdrawalReason::Repaired))
                .collect()
        )
    );
}
