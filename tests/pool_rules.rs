//! The pool's rules in the loops a messaging client runs: the hard cap holds
//! whatever the KeyPackages' statuses, replenish never fails for nothing,
//! health says what to do next, and one bad row never blocks an upload.

mod common;

use std::time::Duration;

use common::{bundle_count, now, sized, PoolFixture, DAY};
use openmls::prelude::*;
use openmls_keypackage_pool::{
    Error, KeyPackageStatus, PoolAction, PoolConfig, PoolStorage, StorageOptions,
};
use tls_codec::Deserialize as _;

/// How many last-resort KeyPackages are on disk, each checked to have its
/// bundle as well as its row.
fn last_resort_bundles(fx: &PoolFixture) -> usize {
    let refs: Vec<Vec<u8>> = common::column(
        &fx.storage().connection(),
        "SELECT keypackage_ref FROM keypackage_pool_metadata WHERE last_resort = 1",
    );
    for r in &refs {
        assert!(fx.storage().key_package_bundle(r).unwrap().is_some());
    }
    assert_eq!(
        bundle_count(fx.storage()) as usize,
        refs.len() + fx.pool(PoolConfig::default()).health(now()).unwrap().held,
        "every bundle is a last-resort or a one-time KeyPackage"
    );
    refs.len()
}

fn all_refs(fx: &PoolFixture) -> Vec<Vec<u8>> {
    let mut refs: Vec<Vec<u8>> = KeyPackageStatus::ALL
        .into_iter()
        .flat_map(|s| fx.storage().get_metadata_by_status(s).unwrap())
        .map(|row| row.keypackage_ref)
        .collect();
    refs.sort();
    refs
}

#[test]
fn replenish_at_above_and_far_above_the_hard_cap_succeeds_and_builds_nothing() {
    // The pool holds 4 (at the cap of 4), 6 (above) or 40 (far above), all
    // still pending upload: a pool that needs nothing.
    for held in [4, 6, 40] {
        let fx = PoolFixture::new();
        fx.pool(sized(held, held, held)).generate(held).unwrap();
        let before = all_refs(&fx);
        let small = fx.pool(sized(2, 2, 4));
        assert_eq!(small.replenish().unwrap(), Vec::<Vec<u8>>::new(), "{held}");
        assert_eq!(small.generate(0).unwrap(), Vec::<Vec<u8>>::new(), "{held}");
        assert_eq!(
            small.generate_parallel(0, 2).unwrap(),
            Vec::<Vec<u8>>::new(),
            "{held}"
        );
        assert_eq!(all_refs(&fx), before, "{held}");
        assert_eq!(bundle_count(fx.storage()), held as i64);
    }
}

#[test]
fn replenish_builds_only_what_fits_under_the_cap() {
    let fx = PoolFixture::new();
    // Three reserved (about to be used, not usable), one uploaded: usable 1
    // of a watermark of 4, but the cap of 5 leaves room for one more.
    let refs = fx.uploaded(&fx.pool(sized(4, 4, 5)), 4);
    for r in &refs[..3] {
        fx.storage()
            .update_reservation_info(r, "res", "peer", now() + 600)
            .unwrap();
    }
    let pool = fx.pool(sized(4, 4, 5));
    assert_eq!(pool.replenish().unwrap().len(), 1);
    assert_eq!(pool.replenish().unwrap().len(), 0);
    assert_eq!(bundle_count(fx.storage()), 5);
}

#[test]
fn failing_uploads_never_take_the_pool_past_its_hard_cap() {
    let fx = PoolFixture::new();
    let pool = fx.pool(sized(4, 2, 8));
    // A client whose server is unreachable: every upload fails.
    for round in 0..5 {
        let pending = pool.replenish().unwrap();
        pool.mark_failed(&pending).unwrap();
        assert!(
            bundle_count(fx.storage()) <= 8,
            "round {round}: {} bundles on disk",
            bundle_count(fx.storage())
        );
    }
    // The same four KeyPackages were retried each time.
    assert_eq!(bundle_count(fx.storage()), 4);
    // Once the server is back, the retried ones are what gets uploaded.
    let pending = pool.replenish().unwrap();
    assert_eq!(pending.len(), 4);
    pool.mark_uploaded(&pending).unwrap();
    assert_eq!(pool.health(now()).unwrap().usable, 4);
    assert_eq!(bundle_count(fx.storage()), 4);
}

#[test]
fn failed_last_resort_key_packages_are_retried_not_rebuilt() {
    let fx = PoolFixture::new();
    let pool = fx.pool(PoolConfig::default());
    let mut first = None;
    for round in 0..5 {
        let report = pool.ensure_last_resort(now()).unwrap();
        let pending: Vec<Vec<u8>> = fx
            .storage()
            .get_metadata_by_status(KeyPackageStatus::Created)
            .unwrap()
            .into_iter()
            .map(|row| row.keypackage_ref)
            .collect();
        match &first {
            None => first = report.created.clone(),
            // The one built first is retried every time.
            Some(first) => {
                assert_eq!(report.created, None, "round {round}");
                assert_eq!(report.retried.as_ref(), Some(first), "round {round}");
            }
        }
        assert_eq!(pending, [first.clone().unwrap()]);
        pool.mark_failed(&pending).unwrap();
        assert_eq!(last_resort_bundles(&fx), 1, "round {round}");
    }
}

#[test]
fn health_asks_for_the_upload_when_only_pending_key_packages_stand_between_the_pool_and_usable() {
    let fx = PoolFixture::new();
    let pool = fx.pool(sized(4, 2, 8));
    let last_resort = pool.ensure_last_resort(now()).unwrap().created.unwrap();
    pool.mark_uploaded(&[last_resort]).unwrap();
    pool.generate(4).unwrap();
    let health = pool.health(now()).unwrap();
    assert_eq!(health.usable, 0);
    assert_eq!(health.actions, [PoolAction::Upload(4)]);
    assert_eq!(health.recommended, PoolAction::Upload(4));
    // Uploading them is all it takes.
    pool.mark_uploaded(&pool.pending_upload().unwrap().ready_refs())
        .unwrap();
    let health = pool.health(now()).unwrap();
    assert_eq!(health.actions, []);
    assert_eq!(health.recommended, PoolAction::Nothing);
}

#[test]
fn a_never_uploaded_last_resort_key_package_does_not_count_as_present() {
    let fx = PoolFixture::new();
    let pool = fx.pool(sized(4, 2, 8));
    let last_resort = pool.ensure_last_resort(now()).unwrap().created.unwrap();
    fx.uploaded(&pool, 4);
    let health = pool.health(now()).unwrap();
    assert!(!health.has_last_resort);
    assert_eq!(health.actions, [PoolAction::Upload(1)]);
    pool.mark_uploaded(&[last_resort]).unwrap();
    let health = pool.health(now()).unwrap();
    assert!(health.has_last_resort);
    assert_eq!(health.actions, []);
}

/// A pool whose KeyPackages live one hour: built with it, they fall within
/// the default two-day horizon at once.
fn one_hour() -> PoolConfig {
    PoolConfig {
        lifetime_secs: 60 * 60,
        expiry_horizon_secs: 60,
        ..sized(4, 2, 8)
    }
}

#[test]
fn key_packages_expiring_within_the_horizon_are_replaced_before_they_expire() {
    let fx = PoolFixture::new();
    fx.uploaded(&fx.pool(one_hour()), 4);
    let pool = fx.pool(sized(4, 2, 8));
    pool.mark_uploaded(&[pool.ensure_last_resort(now()).unwrap().created.unwrap()])
        .unwrap();
    let health = pool.health(now()).unwrap();
    assert_eq!(health.usable, 4, "still valid");
    assert_eq!(health.expiring_soon, 4);
    assert_eq!(
        health.actions,
        [PoolAction::Replenish(4), PoolAction::Upload(4)]
    );
    assert_eq!(pool.replenish().unwrap().len(), 4);
    assert_eq!(bundle_count(fx.storage()), 4 + 4 + 1);
    // The replacements count; the old ones serve until they expire.
    assert!(pool.replenish().unwrap().is_empty());
    assert_eq!(pool.health(now()).unwrap().actions, [PoolAction::Upload(4)]);
}

#[test]
fn the_last_resort_key_package_is_replaced_before_it_expires_and_the_old_one_stays_until_it_does() {
    let fx = PoolFixture::new();
    let old = fx
        .pool(one_hour())
        .ensure_last_resort(now())
        .unwrap()
        .created
        .unwrap();
    let pool = fx.pool(PoolConfig::default());
    pool.mark_uploaded(&[&old]).unwrap();
    let health = pool.health(now()).unwrap();
    assert!(health.has_last_resort);
    assert!(
        health.actions.contains(&PoolAction::ReplaceLastResort),
        "{:?}",
        health.actions
    );

    let report = pool.ensure_last_resort(now()).unwrap();
    let new = report.created.clone().unwrap();
    // The old one stays published until the new one is up.
    assert!(report.removed.is_empty(), "{report:?}");
    assert_eq!(last_resort_bundles(&fx), 2);
    assert_eq!(pool.ensure_last_resort(now()).unwrap(), Default::default());
    assert!(!pool
        .health(now())
        .unwrap()
        .actions
        .contains(&PoolAction::ReplaceLastResort));

    // Once the new one is up, the old one still stays: the server may hand
    // it out until it expires.
    pool.mark_uploaded(&[&new]).unwrap();
    assert_eq!(pool.ensure_last_resort(now()).unwrap(), Default::default());
    assert_eq!(last_resort_bundles(&fx), 2);
    // Expired, it is pruned, since a newer one exists.
    let later = now() + 2 * 60 * 60;
    assert_eq!(pool.prune_expired(later).unwrap(), vec![old.clone()]);
    assert_eq!(last_resort_bundles(&fx), 1);
    // Looked up the way OpenMLS would for a Welcome: gone.
    assert!(fx.storage().key_package_bundle(&old).unwrap().is_none());
    assert!(fx.storage().key_package_bundle(&new).unwrap().is_some());
}

#[test]
fn marking_last_resort_key_packages_spent_never_piles_them_up() {
    let fx = PoolFixture::new();
    let pool = fx.pool(PoolConfig::default());
    for round in 0..5 {
        let report = pool.ensure_last_resort(now()).unwrap();
        let built = report.created.unwrap();
        pool.mark_uploaded(&[&built]).unwrap();
        fx.storage().mark_spent(&built, "peer", b"group").unwrap();
        // The one kept, and the latest spent one until it expires.
        assert!(last_resort_bundles(&fx) <= 2, "round {round}");
    }
}

#[test]
fn pending_upload_skips_expired_key_packages_and_survives_a_corrupt_one() {
    let fx = PoolFixture::new();
    let pool = fx.pool(PoolConfig::default());
    let mut good = pool.generate(2).unwrap();
    // An expired one, built through OpenMLS with a lifetime that has ended.
    let t = now() as u64;
    KeyPackage::builder()
        .key_package_lifetime(Lifetime::init(t - 2 * DAY as u64, t - DAY as u64))
        .build(
            common::CIPHERSUITE,
            &fx.provider,
            &fx.identity.signer,
            fx.identity.credential.clone(),
        )
        .unwrap();
    // And one whose stored bundle no longer decodes, among good ones.
    let corrupt = pool.generate(1).unwrap().remove(0);
    common::corrupt_latest_bundle(fx.storage());
    good.extend(pool.generate(1).unwrap());
    let pending = pool.pending_upload().unwrap();
    assert_eq!(pending.ready_refs(), good);
    assert_eq!(pending.unreadable.len(), 1);
    let unreadable = &pending.unreadable[0];
    assert_eq!(unreadable.keypackage_ref, corrupt);
    match &unreadable.error {
        Error::CorruptBundle { keypackage_ref, .. } => assert_eq!(keypackage_ref.0, corrupt),
        other => panic!("expected CorruptBundle, got {other:?}"),
    }
    // A missing bundle is reported the same way, by ref.
    fx.storage()
        .connection()
        .execute("DELETE FROM openmls_key_packages WHERE rowid = (SELECT MIN(rowid) FROM openmls_key_packages)", [])
        .unwrap();
    let pending = pool.pending_upload().unwrap();
    assert_eq!(pending.ready_refs(), good[1..]);
    assert!(
        matches!(
            &pending.unreadable[..],
            [a, b] if matches!(a.error, Error::MissingBundle { .. }) && b.keypackage_ref == corrupt
        ),
        "{:?}",
        pending.unreadable
    );
}

#[test]
fn an_uploaded_key_package_can_be_reserved_or_spent_directly() {
    let fx = PoolFixture::new();
    let pool = fx.pool(PoolConfig::default());
    let refs = fx.uploaded(&pool, 2);
    fx.storage()
        .update_reservation_info(&refs[0], "res", "peer", now() + 60)
        .unwrap();
    fx.storage().mark_spent(&refs[1], "peer", b"group").unwrap();
    assert_eq!(fx.status(&refs[0]), KeyPackageStatus::Reserved);
    assert_eq!(fx.status(&refs[1]), KeyPackageStatus::Spent);
    let row = fx.storage().get_metadata(&refs[1]).unwrap().unwrap();
    assert_eq!(row.spent_group_id.as_deref(), Some(&b"group"[..]));
}

#[test]
fn mark_available_moves_uploaded_key_packages_all_or_none() {
    let fx = PoolFixture::new();
    let pool = fx.pool(PoolConfig::default());
    let uploaded = fx.uploaded(&pool, 2);
    let created = pool.generate(1).unwrap();
    // A created one cannot become available before it is uploaded.
    let mut mixed = uploaded.clone();
    mixed.extend(created.iter().cloned());
    match pool.mark_available(&mixed) {
        Err(Error::InvalidTransition {
            keypackage_ref,
            from,
            to,
        }) => {
            assert_eq!(keypackage_ref.0, created[0]);
            assert_eq!(
                (from, to),
                (KeyPackageStatus::Created, KeyPackageStatus::Available)
            );
        }
        other => panic!("expected InvalidTransition, got {other:?}"),
    }
    assert_eq!(fx.status(&uploaded[0]), KeyPackageStatus::Uploaded);
    pool.mark_available(&uploaded).unwrap();
    for r in &uploaded {
        assert_eq!(fx.status(r), KeyPackageStatus::Available);
    }
    assert_eq!(pool.health(now()).unwrap().usable, 2);
}

#[test]
fn a_busy_timeout_sqlite_cannot_take_is_a_typed_error() {
    let (_dir, path) = common::temp_db();
    let options = StorageOptions {
        busy_timeout: Duration::MAX,
        ..StorageOptions::default()
    };
    match PoolStorage::open_with_options(&path, &options) {
        Err(Error::BusyTimeoutTooLong { requested, max }) => {
            assert_eq!(requested, Duration::MAX);
            assert_eq!(max, openmls_keypackage_pool::MAX_BUSY_TIMEOUT);
        }
        other => panic!("expected BusyTimeoutTooLong, got {other:?}"),
    }
    assert!(!path.exists(), "nothing was created");
    // The longest SQLite takes is fine.
    let longest = StorageOptions {
        busy_timeout: openmls_keypackage_pool::MAX_BUSY_TIMEOUT,
        ..StorageOptions::default()
    };
    PoolStorage::open_with_options(&path, &longest).unwrap();
}

#[test]
fn failed_key_packages_that_expire_within_the_horizon_still_count_against_the_cap() {
    let fx = PoolFixture::new();
    // Four one-hour KeyPackages whose upload failed: not worth retrying,
    // but their keys are on disk.
    let short = fx.pool(one_hour());
    let failed = short.generate(4).unwrap();
    short.mark_failed(&failed).unwrap();
    let pool = fx.pool(sized(4, 2, 6));
    // Room for two only; the other two needed are reported, not built.
    assert_eq!(pool.replenish().unwrap().len(), 2);
    assert_eq!(bundle_count(fx.storage()), 6);
    let health = pool.health(now()).unwrap();
    assert_eq!(health.held, 6);
    assert!(
        health.actions.contains(&PoolAction::CapReached(2)),
        "{:?}",
        health.actions
    );
    assert!(matches!(
        pool.generate(1),
        Err(Error::HardCapExceeded { held: 6, .. })
    ));
}

#[test]
fn a_pool_the_cap_keeps_short_is_not_reported_healthy() {
    let fx = PoolFixture::new();
    let pool = fx.pool(sized(4, 4, 4));
    let last_resort = pool.ensure_last_resort(now()).unwrap().created.unwrap();
    pool.mark_uploaded(&[last_resort]).unwrap();
    // Every KeyPackage was reported spent by the server, but no Welcome has
    // come yet: their keys stay on disk and fill the cap.
    for r in fx.uploaded(&pool, 4) {
        fx.storage().mark_spent(&r, "peer", b"group").unwrap();
    }
    assert!(pool.replenish().unwrap().is_empty());
    let health = pool.health(now()).unwrap();
    assert_eq!((health.usable, health.held), (0, 4));
    assert_eq!(health.actions, [PoolAction::CapReached(4)]);
    assert_eq!(health.recommended, PoolAction::CapReached(4));
}

#[test]
fn a_last_resort_key_package_passes_a_peers_checks_and_joins_a_group() {
    let fx = PoolFixture::new();
    let pool = fx.pool(PoolConfig::default());
    let last_resort = pool.ensure_last_resort(now()).unwrap().created.unwrap();
    let pending = pool.pending_upload().unwrap();
    assert_eq!(pending.ready_refs(), std::slice::from_ref(&last_resort));
    assert!(pending.ready[0].last_resort);
    // What a server or a peer does with the uploaded bytes: its extensions
    // must be listed in its capabilities, or it is refused.
    let key_package = KeyPackageIn::tls_deserialize_exact(&pending.ready[0].key_package)
        .unwrap()
        .validate(fx.provider.crypto(), ProtocolVersion::Mls10)
        .unwrap();
    assert!(key_package.last_resort());
    let (_group, welcome) = common::PlainClient::new("gail").create_group_with(&key_package);
    common::join(&fx.provider, welcome).unwrap();
    // OpenMLS keeps a last-resort KeyPackage after a join.
    assert!(fx
        .storage()
        .key_package_bundle(&last_resort)
        .unwrap()
        .is_some());
}
