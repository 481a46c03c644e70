//! `KeyPackagePool` through real OpenMLS KeyPackages on a database file.

mod common;

use std::{
    collections::HashSet,
    sync::{Condvar, Mutex},
};

use common::{
    build_key_package, bundle_count, lifetime_days, metadata_count, now, sized,
    PoolFixture as Fixture, DAY,
};
use openmls::prelude::*;
use openmls_keypackage_pool::{
    key_package_ref_from_bytes, Error, KeyPackagePool, KeyPackageStatus, PoolAction, PoolConfig,
    PoolStorage, MAX_THREADS,
};
use tls_codec::Deserialize as _;

#[test]
fn generate_stores_a_batch_with_bundles_and_rows() {
    let fx = Fixture::new();
    let before = now();
    let refs = fx.pool(PoolConfig::default()).generate(10).unwrap();
    assert_eq!(refs.len(), 10);
    assert_eq!(
        fx.storage()
            .count_by_status(KeyPackageStatus::Created)
            .unwrap(),
        10
    );
    assert_eq!(
        (bundle_count(fx.storage()), metadata_count(fx.storage())),
        (10, 10)
    );
    for r in &refs {
        let bundle = fx.storage().key_package_bundle(r).unwrap().unwrap();
        let row = fx.storage().get_metadata(r).unwrap().unwrap();
        let not_after = bundle.key_package().life_time().not_after() as i64;
        assert_eq!(row.not_after, not_after);
        // 14 days from the moment it was built.
        assert!(not_after >= before + 14 * DAY && not_after <= now() + 14 * DAY);
    }
    drop(fx.provider);
    let reopened = PoolStorage::open(&fx.path).unwrap();
    assert_eq!(
        reopened.count_by_status(KeyPackageStatus::Created).unwrap(),
        10
    );
}

#[test]
fn generate_refuses_to_pass_the_hard_cap() {
    let fx = Fixture::new();
    let pool = fx.pool(sized(4, 2, 8));
    match pool.generate(9) {
        Err(Error::HardCapExceeded {
            requested: 9,
            held: 0,
            hard_cap: 8,
        }) => {}
        other => panic!("expected HardCapExceeded, got {other:?}"),
    }
    assert_eq!(bundle_count(fx.storage()), 0);
    pool.generate(8).unwrap();
    assert!(matches!(
        pool.generate(1),
        Err(Error::HardCapExceeded { held: 8, .. })
    ));
    // An expired one still has its keys on disk, so it still counts...
    let first = fx
        .storage()
        .get_metadata_by_status(KeyPackageStatus::Created)
        .unwrap()[0]
        .keypackage_ref
        .clone();
    fx.storage()
        .update_pool_metadata_status(&first, KeyPackageStatus::Expired)
        .unwrap();
    assert!(matches!(
        pool.generate(1),
        Err(Error::HardCapExceeded { held: 8, .. })
    ));
    // ... until it is deleted.
    fx.storage().remove_key_package(&first).unwrap();
    pool.generate(1).unwrap();
    assert_eq!(bundle_count(fx.storage()), 8);
}

#[test]
fn a_failure_part_way_through_generate_leaves_nothing() {
    let fx = Fixture::new();
    common::fail_metadata(fx.storage(), "INSERT", 2, "injected");
    assert_injected_failure_left_nothing(&fx, fx.pool(PoolConfig::default()).generate(5));
}

/// The batch failed with the injected error, and none of it was kept.
fn assert_injected_failure_left_nothing(fx: &Fixture, result: Result<Vec<Vec<u8>>, Error>) {
    match result {
        Err(Error::KeyPackageStore { source, .. }) => {
            assert!(source.to_string().contains("injected"), "{source}")
        }
        other => panic!("expected the injected failure, got {other:?}"),
    }
    assert_eq!(
        (bundle_count(fx.storage()), metadata_count(fx.storage())),
        (0, 0)
    );
}

#[test]
fn generate_with_progress_reports_each_key_package() {
    let fx = Fixture::new();
    let mut seen = Vec::new();
    fx.pool(PoolConfig::default())
        .generate_with_progress(3, |done| seen.push(done))
        .unwrap();
    assert_eq!(seen, vec![1, 2, 3]);
}

#[test]
fn replenish_tops_up_only_below_the_watermark() {
    // target 10, watermark 4.
    for (usable, expected) in [(0, 10), (3, 7), (4, 0), (6, 0)] {
        let fx = Fixture::new();
        let pool = fx.pool(sized(10, 4, 40));
        fx.uploaded(&pool, usable);
        let made = pool.replenish().unwrap();
        assert_eq!(made.len(), expected, "with {usable} usable");
        assert_eq!(
            fx.storage()
                .count_by_status(KeyPackageStatus::Created)
                .unwrap(),
            expected
        );
    }
}

#[test]
fn replenish_counts_usable_and_pending_but_not_reserved() {
    let fx = Fixture::new();
    let pool = fx.pool(sized(10, 4, 40));
    let refs = fx.uploaded(&pool, 5);
    // One available (still usable), two reserved (not usable): 3 usable.
    for r in &refs[..3] {
        fx.storage()
            .update_pool_metadata_status(r, KeyPackageStatus::Available)
            .unwrap();
    }
    for r in &refs[..2] {
        fx.storage()
            .update_reservation_info(r, "res", "peer", now() + 60)
            .unwrap();
    }
    // Two created ones are on their way: 10 - (3 usable + 2 pending) = 5.
    pool.generate(2).unwrap();
    assert_eq!(pool.replenish().unwrap().len(), 5);
}

#[test]
fn replenishing_twice_before_an_upload_builds_nothing_more() {
    let fx = Fixture::new();
    let pool = fx.pool(sized(10, 4, 40));
    assert_eq!(pool.replenish().unwrap().len(), 10);
    assert!(pool.replenish().unwrap().is_empty());
    assert_eq!(
        pool.health(now()).unwrap().recommended,
        PoolAction::CreateLastResort
    );
    pool.ensure_last_resort(now()).unwrap();
    // Nothing more to build: everything waits for the upload.
    assert_eq!(
        pool.health(now()).unwrap().actions,
        [PoolAction::Upload(11)]
    );
}

#[test]
fn expired_key_packages_do_not_count_as_usable_even_before_pruning() {
    let fx = Fixture::new();
    let pool = fx.pool(sized(10, 4, 40));
    // Five uploaded KeyPackages whose lifetime ended a minute ago.
    for n in 0..5u8 {
        let r = [n; 32];
        fx.storage().create_pool_metadata(&r, now() - 60).unwrap();
        common::assign_scope(fx.storage(), &r, pool.scope());
        fx.storage()
            .update_pool_metadata_status(&r, KeyPackageStatus::Uploaded)
            .unwrap();
    }
    assert_eq!(pool.health(now()).unwrap().usable, 0);
    assert_eq!(pool.replenish().unwrap().len(), 10);
}

#[test]
fn a_storage_failure_while_generating_names_the_key_package() {
    let fx = Fixture::new();
    common::fail_metadata(fx.storage(), "INSERT", 0, "disk says no");
    match fx.pool(PoolConfig::default()).generate(1) {
        Err(Error::KeyPackageStore {
            keypackage_ref,
            source,
        }) => {
            assert_eq!(keypackage_ref.0.len(), 32);
            assert!(matches!(*source, Error::Sqlite(_)), "{source:?}");
            assert!(source.to_string().contains("disk says no"), "{source}");
        }
        other => panic!("expected KeyPackageStore, got {other:?}"),
    }
}

#[test]
fn pending_upload_gives_verifiable_key_packages_and_marking_moves_them() {
    let fx = Fixture::new();
    let pool = fx.pool(PoolConfig::default());
    let refs = pool.generate(3).unwrap();
    let pending = pool.pending_upload().unwrap();
    assert_eq!(pending.ready.len(), 3);
    assert!(pending.unreadable.is_empty());
    for p in &pending.ready {
        assert!(refs.contains(&p.keypackage_ref));
        // What a server would do: decode and verify, then compute the ref.
        let key_package = KeyPackageIn::tls_deserialize_exact(&p.key_package)
            .unwrap()
            .validate(fx.provider.crypto(), ProtocolVersion::Mls10)
            .unwrap();
        assert_eq!(
            key_package
                .hash_ref(fx.provider.crypto())
                .unwrap()
                .as_slice(),
            p.keypackage_ref
        );
        assert_eq!(key_package.life_time().not_after() as i64, p.not_after);
    }

    pool.mark_uploaded(&refs[..2]).unwrap();
    pool.mark_failed(&refs[2..]).unwrap();
    assert!(pool.pending_upload().unwrap().ready.is_empty());
    assert_eq!(
        fx.storage()
            .count_by_status(KeyPackageStatus::Uploaded)
            .unwrap(),
        2
    );
    assert_eq!(
        fx.storage()
            .count_by_status(KeyPackageStatus::Failed)
            .unwrap(),
        1
    );
}

#[test]
fn marking_is_all_or_nothing() {
    let fx = Fixture::new();
    let pool = fx.pool(PoolConfig::default());
    let mut refs = pool.generate(2).unwrap();
    refs.push(vec![9; 32]);
    assert!(matches!(
        pool.mark_uploaded(&refs),
        Err(Error::NotFound { .. })
    ));
    assert_eq!(
        fx.storage()
            .count_by_status(KeyPackageStatus::Created)
            .unwrap(),
        2
    );
}

#[test]
fn prune_removes_bundle_and_row_of_expired_key_packages() {
    let fx = Fixture::new();
    let short = fx.pool(lifetime_days(1)).generate(3).unwrap();
    let long = fx.pool(lifetime_days(14)).generate(2).unwrap();
    fx.storage()
        .update_pool_metadata_status(&short[0], KeyPackageStatus::Uploaded)
        .unwrap();

    let at = now() + 2 * DAY;
    let mut removed = fx.pool(PoolConfig::default()).prune_expired(at).unwrap();
    removed.sort();
    let mut expected = short.clone();
    expected.sort();
    assert_eq!(removed, expected);

    for r in &short {
        // Looked up exactly as OpenMLS would look it up for a Welcome.
        let kp_ref = key_package_ref_from_bytes(r).unwrap();
        assert!(common::stored_bundle(fx.storage(), &kp_ref).is_none());
        assert_eq!(fx.storage().get_metadata(r).unwrap(), None);
    }
    for r in &long {
        let kp_ref = key_package_ref_from_bytes(r).unwrap();
        assert!(common::stored_bundle(fx.storage(), &kp_ref).is_some());
    }
    assert_eq!(
        (bundle_count(fx.storage()), metadata_count(fx.storage())),
        (2, 2)
    );
    assert!(fx
        .pool(PoolConfig::default())
        .prune_expired(at)
        .unwrap()
        .is_empty());
}

#[test]
fn prune_keeps_the_only_last_resort_key_package_until_a_newer_one_exists() {
    let fx = Fixture::new();
    let short_pool = fx.pool(lifetime_days(1));
    let old = short_pool
        .ensure_last_resort(now())
        .unwrap()
        .created
        .unwrap();
    let later = now() + 2 * DAY;

    // Expired, but the only fallback: kept.
    assert!(short_pool.prune_expired(later).unwrap().is_empty());
    let health = short_pool.health(later).unwrap();
    assert!(!health.has_last_resort);
    assert_eq!(health.recommended, PoolAction::CreateLastResort);

    // Rotation: a new valid one is made, and then the old one goes.
    let long_pool = fx.pool(lifetime_days(14));
    let report = long_pool.ensure_last_resort(later).unwrap();
    let new = report.created.unwrap();
    assert!(report.removed.is_empty());
    assert_eq!(long_pool.prune_expired(later).unwrap(), vec![old.clone()]);
    assert!(fx.storage().key_package_bundle(&old).unwrap().is_none());
    assert!(fx.storage().key_package_bundle(&new).unwrap().is_some());
    assert!(
        fx.storage()
            .get_metadata(&new)
            .unwrap()
            .unwrap()
            .last_resort
    );
}

#[test]
fn ensure_last_resort_keeps_exactly_one() {
    let fx = Fixture::new();
    let pool = fx.pool(lifetime_days(14));
    let first = pool.ensure_last_resort(now()).unwrap();
    let kept = first.created.clone().unwrap();
    assert_eq!(pool.ensure_last_resort(now()).unwrap(), Default::default());

    // A second valid last-resort KeyPackage with a longer life (OpenMLS's
    // default of 84 days) appears: the shorter-lived one is removed.
    let longer = build_key_package(&fx.provider, &fx.identity, true);
    let longer_ref = longer.key_package().hash_ref(fx.provider.crypto()).unwrap();
    let report = pool.ensure_last_resort(now()).unwrap();
    assert_eq!(report.created, None);
    assert_eq!(report.removed, vec![kept.clone()]);
    assert!(fx.storage().key_package_bundle(&kept).unwrap().is_none());
    assert!(fx
        .storage()
        .key_package_bundle(longer_ref.as_slice())
        .unwrap()
        .is_some());
    // One-time KeyPackages are never counted as last-resort ones.
    pool.generate(3).unwrap();
    assert_eq!(pool.ensure_last_resort(now()).unwrap(), Default::default());
}

#[test]
fn lapsed_reservations_return_to_available() {
    let fx = Fixture::new();
    let pool = fx.pool(PoolConfig::default());
    let refs = fx.uploaded(&pool, 3);
    let t = now() + 100;
    for (r, expires_at) in refs.iter().zip([t - 1, t, t + 1]) {
        fx.storage()
            .update_pool_metadata_status(r, KeyPackageStatus::Available)
            .unwrap();
        fx.storage()
            .update_reservation_info(r, "res", "peer", expires_at)
            .unwrap();
    }
    assert_eq!(
        pool.expire_lapsed_reservations(t).unwrap(),
        vec![refs[0].clone()]
    );
    let status = |r: &Vec<u8>| fx.storage().get_metadata(r).unwrap().unwrap().status;
    assert_eq!(status(&refs[0]), KeyPackageStatus::Available);
    assert_eq!(status(&refs[1]), KeyPackageStatus::Reserved);
    assert_eq!(status(&refs[2]), KeyPackageStatus::Reserved);
    // The reservation's record is kept.
    let row = fx.storage().get_metadata(&refs[0]).unwrap().unwrap();
    assert_eq!(row.reservation_expires_at, Some(t - 1));
}

#[test]
fn health_reports_counts_expiry_and_the_next_action() {
    let fx = Fixture::new();
    let pool = fx.pool(sized(6, 3, 20));
    let t = now();

    let empty = pool.health(t).unwrap();
    assert_eq!((empty.usable, empty.live, empty.prunable), (0, 0, 0));
    assert_eq!(empty.next_expiry, None);
    assert_eq!(
        empty.actions,
        [
            PoolAction::CreateLastResort,
            PoolAction::Replenish(6),
            PoolAction::Upload(7)
        ]
    );
    assert_eq!(empty.recommended, PoolAction::CreateLastResort);

    let last_resort = pool.ensure_last_resort(t).unwrap().created.unwrap();
    assert_eq!(
        pool.health(t).unwrap().actions,
        [PoolAction::Replenish(6), PoolAction::Upload(7)]
    );

    // Two 1-day KeyPackages uploaded, four 14-day ones created, one of which
    // is then uploaded and reserved.
    let soon = fx.pool(PoolConfig {
        lifetime_secs: DAY as u64,
        expiry_horizon_secs: 60 * 60,
        ..sized(6, 3, 20)
    });
    let short = fx.uploaded(&soon, 2);
    let long = pool.generate(4).unwrap();
    fx.storage()
        .update_pool_metadata_status(&long[0], KeyPackageStatus::Uploaded)
        .unwrap();
    fx.storage()
        .update_reservation_info(&long[0], "r", "p", t + 60)
        .unwrap();

    let health = pool.health(t).unwrap();
    assert_eq!(
        health.count(KeyPackageStatus::Created),
        3 + 1,
        "3 + last resort"
    );
    assert_eq!(health.count(KeyPackageStatus::Uploaded), 2);
    assert_eq!(health.count(KeyPackageStatus::Reserved), 1);
    assert_eq!(health.count(KeyPackageStatus::Spent), 0);
    assert_eq!(health.pending_upload, 3);
    assert_eq!(health.usable, 2);
    assert_eq!(health.live, 6);
    assert_eq!(health.held, 6);
    assert!(!health.has_last_resort, "built, not uploaded");
    assert_eq!(health.expiring_soon, 2, "the 1-day ones, within 2 days");
    let short_not_after = fx
        .storage()
        .get_metadata(&short[0])
        .unwrap()
        .unwrap()
        .not_after;
    assert_eq!(health.next_expiry, Some(short_not_after));
    assert_eq!(health.prunable, 0);
    // The 1-day ones expire within the horizon, so none of the usable ones
    // counts: 6 - (0 usable + 3 pending) = 3 to build, then everything
    // pending (3 + the last resort + those 3) to upload.
    assert_eq!(
        health.actions,
        [PoolAction::Replenish(3), PoolAction::Upload(7)]
    );

    // Three days on, the 1-day ones have expired and must be pruned first.
    let later = pool.health(t + 3 * DAY).unwrap();
    assert_eq!(later.prunable, 2);
    assert_eq!(later.usable, 0, "expired ones are not usable");
    assert_eq!(later.held, 6, "their keys are on disk until pruned");
    assert_eq!(
        later.actions,
        [
            PoolAction::Prune(2),
            PoolAction::Replenish(3),
            PoolAction::Upload(7)
        ]
    );
    assert_eq!(later.recommended, PoolAction::Prune(2));

    // Uploaded, the long-lived ones and the last resort make a healthy pool.
    pool.mark_uploaded(&[&last_resort, &long[1], &long[2], &long[3]])
        .unwrap();
    let healthy = pool.health(t).unwrap();
    assert!(healthy.has_last_resort);
    assert_eq!(healthy.actions, []);
    assert_eq!(healthy.recommended, PoolAction::Nothing);
}

#[test]
fn invalid_configurations_are_refused() {
    let fx = Fixture::new();
    let bad = [
        sized(0, 0, 10),
        sized(10, 11, 20),
        sized(10, 5, 9),
        PoolConfig {
            lifetime_secs: 0,
            ..PoolConfig::default()
        },
        PoolConfig {
            lifetime_secs: 85 * DAY as u64,
            ..PoolConfig::default()
        },
        PoolConfig {
            lifetime_secs: u64::MAX,
            ..PoolConfig::default()
        },
        PoolConfig {
            expiry_horizon_secs: u64::MAX,
            ..PoolConfig::default()
        },
        // The last-resort extension on every KeyPackage.
        PoolConfig {
            extensions: Extensions::single(Extension::LastResort(LastResortExtension::default()))
                .unwrap(),
            ..PoolConfig::default()
        },
        // A horizon as long as the lifetime: every KeyPackage is due for
        // replacement as soon as it is built.
        PoolConfig {
            expiry_horizon_secs: 14 * DAY as u64,
            ..PoolConfig::default()
        },
    ];
    for config in bad {
        let result = KeyPackagePool::new(
            &fx.provider,
            &fx.identity.signer,
            fx.identity.credential.clone(),
            config.clone(),
        );
        assert!(
            matches!(result, Err(Error::InvalidConfig { .. })),
            "{config:?} was accepted"
        );
    }
    assert!(PoolConfig::default().validate().is_ok());
}

#[test]
fn generate_parallel_writes_every_bundle_and_row() {
    let fx = Fixture::new();
    let pool = fx.pool(PoolConfig::default());
    let mut refs = pool.generate_parallel(20, 2).unwrap();
    assert_eq!(refs.len(), 20);
    refs.sort();
    refs.dedup();
    assert_eq!(refs.len(), 20, "every ref distinct");
    assert_eq!(
        (bundle_count(fx.storage()), metadata_count(fx.storage())),
        (20, 20)
    );
    for r in &refs {
        let bundle = fx.storage().key_package_bundle(r).unwrap().unwrap();
        let row = fx.storage().get_metadata(r).unwrap().unwrap();
        assert_eq!(row.status, KeyPackageStatus::Created);
        assert_eq!(
            row.not_after,
            bundle.key_package().life_time().not_after() as i64
        );
    }
    // Zero threads means one; the cap still holds.
    assert_eq!(pool.generate_parallel(3, 0).unwrap().len(), 3);
    assert!(matches!(
        pool.generate_parallel(64, 2),
        Err(Error::HardCapExceeded { held: 23, .. })
    ));
}

#[test]
fn a_key_package_built_by_a_worker_joins_a_group() {
    let fx = Fixture::new();
    let refs = fx
        .pool(PoolConfig::default())
        .generate_parallel(2, 2)
        .unwrap();
    let bundle = fx.storage().key_package_bundle(&refs[1]).unwrap().unwrap();
    let (_group, welcome) =
        common::PlainClient::new("gina").create_group_with(bundle.key_package());
    common::join(&fx.provider, welcome).unwrap();
    assert_eq!(fx.storage().get_metadata(&refs[1]).unwrap(), None);
    assert!(fx.storage().key_package_bundle(&refs[1]).unwrap().is_none());
}

#[test]
fn a_failure_part_way_through_generate_parallel_leaves_nothing() {
    let fx = Fixture::new();
    common::fail_metadata(fx.storage(), "INSERT", 5, "injected");
    assert_injected_failure_left_nothing(
        &fx,
        fx.pool(PoolConfig::default()).generate_parallel(30, 2),
    );
}

#[test]
fn a_new_reservation_replaces_the_lapsed_one() {
    let fx = Fixture::new();
    let pool = fx.pool(PoolConfig::default());
    let r = fx.uploaded(&pool, 1).remove(0);
    let t = now() + 100;
    fx.storage()
        .update_pool_metadata_status(&r, KeyPackageStatus::Available)
        .unwrap();
    fx.storage()
        .update_reservation_info(&r, "first", "peer-1", t - 1)
        .unwrap();
    pool.expire_lapsed_reservations(t).unwrap();
    // Reserved again without details (say, the server said so without
    // terms): the first reservation's expiry must not release it at once.
    fx.storage()
        .update_pool_metadata_status(&r, KeyPackageStatus::Reserved)
        .unwrap();
    assert!(pool.expire_lapsed_reservations(t).unwrap().is_empty());
    let row = fx.storage().get_metadata(&r).unwrap().unwrap();
    assert_eq!(row.status, KeyPackageStatus::Reserved);
    assert_eq!(
        (
            row.reservation_id,
            row.reserved_by,
            row.reservation_expires_at
        ),
        (None, None, None)
    );
}

#[test]
fn prune_keeps_a_reserved_key_package_until_its_reservation_lapses() {
    let fx = Fixture::new();
    let pool = fx.pool(lifetime_days(1));
    let r = fx.uploaded(&pool, 1).remove(0);
    fx.storage()
        .update_pool_metadata_status(&r, KeyPackageStatus::Available)
        .unwrap();
    let at = now() + 2 * DAY;
    fx.storage()
        .update_reservation_info(&r, "res", "peer", at + 60)
        .unwrap();
    assert!(pool.prune_expired(at).unwrap().is_empty());
    assert!(fx.storage().key_package_bundle(&r).unwrap().is_some());
    assert_eq!(pool.prune_expired(at + 61).unwrap(), vec![r.clone()]);
    assert!(fx.storage().key_package_bundle(&r).unwrap().is_none());
}

#[test]
fn an_expired_last_resort_is_kept_when_the_newer_one_is_not_live() {
    let fx = Fixture::new();
    let old = fx
        .pool(lifetime_days(1))
        .ensure_last_resort(now())
        .unwrap()
        .created
        .unwrap();
    let newer = build_key_package(&fx.provider, &fx.identity, true);
    let newer_ref = newer.key_package().hash_ref(fx.provider.crypto()).unwrap();
    fx.storage()
        .update_pool_metadata_status(newer_ref.as_slice(), KeyPackageStatus::Failed)
        .unwrap();
    let at = now() + 2 * DAY;
    assert!(fx
        .pool(PoolConfig::default())
        .prune_expired(at)
        .unwrap()
        .is_empty());
    assert!(fx.storage().key_package_bundle(&old).unwrap().is_some());
}

#[test]
fn ensure_last_resort_keeps_the_published_one() {
    let fx = Fixture::new();
    let pool = fx.pool(lifetime_days(14));
    let published = pool.ensure_last_resort(now()).unwrap().created.unwrap();
    pool.mark_uploaded(&[&published]).unwrap();
    // A longer-lived but unpublished one appears; the published one stays.
    let unpublished = build_key_package(&fx.provider, &fx.identity, true);
    let unpublished_ref = unpublished
        .key_package()
        .hash_ref(fx.provider.crypto())
        .unwrap();
    let report = pool.ensure_last_resort(now()).unwrap();
    assert_eq!(report.removed, vec![unpublished_ref.as_slice().to_vec()]);
    assert!(fx
        .storage()
        .key_package_bundle(&published)
        .unwrap()
        .is_some());
}

/// A signer that notes the name of every thread it signs on. Worker
/// threads wait to sign until the calling thread has signed once, which it
/// does only after it has started every worker: so every worker started
/// takes a KeyPackage to build before the first one is finished, and signs.
struct ThreadNotingSigner<'a> {
    signer: &'a openmls_basic_credential::SignatureKeyPair,
    threads: Mutex<HashSet<String>>,
    caller_signed: (Mutex<bool>, Condvar),
}

impl openmls_traits::signatures::Signer for ThreadNotingSigner<'_> {
    fn sign(&self, payload: &[u8]) -> Result<Vec<u8>, openmls_traits::signatures::SignerError> {
        let name = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_owned();
        let (signed, changed) = &self.caller_signed;
        if name.starts_with("keypackage-worker-") {
            // Bounded, so that a pool that never builds on the calling thread
            // fails the test instead of hanging it.
            let wait = std::time::Duration::from_secs(30);
            drop(changed.wait_timeout_while(signed.lock().unwrap(), wait, |s| !*s));
        } else {
            *signed.lock().unwrap() = true;
            changed.notify_all();
        }
        self.threads.lock().unwrap().insert(name);
        self.signer.sign(payload)
    }

    fn signature_scheme(&self) -> SignatureScheme {
        self.signer.signature_scheme()
    }
}

#[test]
fn generate_parallel_takes_any_thread_count() {
    let fx = Fixture::new();
    let pool = fx.pool(PoolConfig::default());
    assert_eq!(pool.generate_parallel(1, 1_000_000).unwrap().len(), 1);
    assert_eq!(pool.generate_parallel(0, 4).unwrap().len(), 0);
    assert_eq!(bundle_count(fx.storage()), 1);
}

#[test]
fn generate_parallel_starts_at_most_max_threads() {
    let fx = Fixture::new();
    let signer = ThreadNotingSigner {
        signer: &fx.identity.signer,
        threads: Mutex::default(),
        caller_signed: Default::default(),
    };
    // Enough KeyPackages that every thread asked for would get work.
    let n = 4 * MAX_THREADS;
    let config = PoolConfig {
        target_size: n,
        hard_cap: n,
        ..PoolConfig::default()
    };
    let pool = KeyPackagePool::new(
        &fx.provider,
        &signer,
        fx.identity.credential.clone(),
        config,
    )
    .unwrap();
    assert_eq!(pool.generate_parallel(n, 1_000_000).unwrap().len(), n);
    assert_eq!(bundle_count(fx.storage()), n as i64);
    // Workers are named keypackage-worker-1, -2, ...; the calling thread
    // counts as one of the threads.
    let threads = signer.threads.into_inner().unwrap();
    let workers: Vec<usize> = threads
        .iter()
        .filter_map(|name| name.strip_prefix("keypackage-worker-"))
        .map(|i| i.parse().unwrap())
        .collect();
    assert!(
        !workers.is_empty(),
        "no worker thread built anything: {threads:?}"
    );
    assert!(
        workers.iter().all(|i| *i < MAX_THREADS),
        "a worker beyond MAX_THREADS ({MAX_THREADS}) ran: {workers:?}"
    );
}

#[test]
fn ensure_last_resort_never_deletes_a_reserved_one() {
    let fx = Fixture::new();
    let pool = fx.pool(lifetime_days(14));
    let reserved = pool.ensure_last_resort(now()).unwrap().created.unwrap();
    pool.mark_uploaded(&[&reserved]).unwrap();
    fx.storage()
        .update_pool_metadata_status(&reserved, KeyPackageStatus::Available)
        .unwrap();
    fx.storage()
        .update_reservation_info(&reserved, "r", "peer", now() + 60)
        .unwrap();
    // A better one (published, longer-lived) appears.
    let better = build_key_package(&fx.provider, &fx.identity, true);
    let better_ref = better.key_package().hash_ref(fx.provider.crypto()).unwrap();
    pool.mark_uploaded(&[better_ref.as_slice()]).unwrap();
    let report = pool.ensure_last_resort(now()).unwrap();
    assert!(report.removed.is_empty(), "{report:?}");
    assert!(fx
        .storage()
        .key_package_bundle(&reserved)
        .unwrap()
        .is_some());
}

#[test]
fn of_two_expired_last_resort_key_packages_with_one_expiry_the_later_written_stays() {
    let fx = Fixture::new();
    let pool = fx.pool(PoolConfig::default());
    for n in 1..=2u8 {
        fx.storage().create_pool_metadata(&[n; 32], 100).unwrap();
        common::assign_scope(fx.storage(), &[n; 32], pool.scope());
        fx.storage()
            .connection()
            .execute(
                "UPDATE keypackage_pool_metadata SET last_resort = 1 WHERE keypackage_ref = ?1",
                [vec![n; 32]],
            )
            .unwrap();
    }
    assert_eq!(pool.prune_expired(1_000).unwrap(), vec![vec![1; 32]]);
    assert!(pool.prune_expired(1_000).unwrap().is_empty());
}
