//! The metadata store on its own: rows, the lifecycle, queries, identities.

mod common;

use common::now;

use openmls_keypackage_pool::{Error, KeyPackageStatus, PoolStorage};
use KeyPackageStatus::*;

fn kp_ref(n: u8) -> Vec<u8> {
    vec![n; 32]
}

fn storage() -> (tempfile::TempDir, PoolStorage) {
    let (dir, path) = common::temp_db();
    (dir, PoolStorage::open(path).unwrap())
}

/// The moves the lifecycle allows, written out independently of the crate's
/// own table.
const ALLOWED: &[(KeyPackageStatus, KeyPackageStatus)] = &[
    (Created, Uploaded),
    (Created, Failed),
    (Created, Expired),
    (Uploaded, Available),
    (Uploaded, Reserved),
    (Uploaded, Spent),
    (Uploaded, Failed),
    (Uploaded, Expired),
    (Available, Reserved),
    (Available, Spent),
    (Available, Expired),
    (Reserved, Spent),
    (Reserved, Available),
    (Reserved, Expired),
    (Failed, Created),
    (Failed, Expired),
];

/// A path of allowed moves from `created` to each status.
fn path_to(status: KeyPackageStatus) -> &'static [KeyPackageStatus] {
    match status {
        Created => &[],
        Uploaded => &[Uploaded],
        Available => &[Uploaded, Available],
        Reserved => &[Uploaded, Available, Reserved],
        Spent => &[Uploaded, Available, Spent],
        Expired => &[Expired],
        Failed => &[Failed],
    }
}

fn put_in(storage: &PoolStorage, r: &[u8], status: KeyPackageStatus) {
    storage.create_pool_metadata(r, now() + 3600).unwrap();
    for step in path_to(status) {
        storage.update_pool_metadata_status(r, *step).unwrap();
    }
    assert_eq!(storage.get_metadata(r).unwrap().unwrap().status, status);
}

#[test]
fn create_writes_a_created_row() {
    let (_dir, storage) = storage();
    let before = now();
    storage
        .create_pool_metadata(&kp_ref(1), 1_900_000_000)
        .unwrap();
    let row = storage.get_metadata(&kp_ref(1)).unwrap().unwrap();
    assert_eq!(row.keypackage_ref, kp_ref(1));
    assert_eq!(row.status, Created);
    assert!(row.created_at >= before && row.created_at <= now());
    assert_eq!(row.not_after, 1_900_000_000);
    assert!(!row.last_resort);
    assert_eq!(
        (row.uploaded_at, row.reserved_at, row.spent_at),
        (None, None, None)
    );
    assert_eq!(row.reservation_id, None);
    assert_eq!(row.spent_group_id, None);
}

#[test]
fn duplicate_create_is_refused_and_keeps_the_first_row() {
    let (_dir, storage) = storage();
    storage.create_pool_metadata(&kp_ref(1), 100).unwrap();
    let err = storage.create_pool_metadata(&kp_ref(1), 200).unwrap_err();
    match &err {
        Error::DuplicateRef { keypackage_ref } => assert_eq!(keypackage_ref.0, kp_ref(1)),
        other => panic!("expected DuplicateRef, got {other:?}"),
    }
    assert!(err.to_string().contains(&"01".repeat(32)), "{err}");
    assert_eq!(
        storage.get_metadata(&kp_ref(1)).unwrap().unwrap().not_after,
        100
    );
}

#[test]
fn every_pair_of_statuses_is_allowed_exactly_when_the_lifecycle_says() {
    let (_dir, storage) = storage();
    let mut n = 0u8;
    for from in KeyPackageStatus::ALL {
        for to in KeyPackageStatus::ALL {
            n += 1;
            let r = kp_ref(n);
            put_in(&storage, &r, from);
            let result = storage.update_pool_metadata_status(&r, to);
            let row = storage.get_metadata(&r).unwrap().unwrap();
            if from == to {
                assert!(result.is_ok(), "{from} -> {to} should be a no-op");
                assert_eq!(row.status, from);
            } else if ALLOWED.contains(&(from, to)) {
                assert!(
                    result.is_ok(),
                    "{from} -> {to} should be allowed: {result:?}"
                );
                assert_eq!(row.status, to);
            } else {
                match result {
                    Err(Error::InvalidTransition {
                        keypackage_ref,
                        from: f,
                        to: t,
                    }) => {
                        assert_eq!((f, t), (from, to));
                        assert_eq!(keypackage_ref.0, r);
                    }
                    other => panic!("{from} -> {to} should be refused, got {other:?}"),
                }
                assert_eq!(row.status, from, "a refused move changes nothing");
            }
        }
    }
}

#[test]
fn the_lifecycle_rule_refuses_some_move_from_every_status() {
    // A lifecycle that allows every move from some status is no lifecycle.
    // The rule asked is the crate's own (`can_transition_to`), and the store
    // must refuse every move that rule refuses.
    let (_dir, storage) = storage();
    for (i, from) in KeyPackageStatus::ALL.into_iter().enumerate() {
        let refused: Vec<_> = KeyPackageStatus::ALL
            .into_iter()
            .filter(|to| *to != from && !from.can_transition_to(*to))
            .collect();
        assert!(!refused.is_empty(), "the rule lets {from} move anywhere");
        let r = kp_ref(200 + i as u8);
        put_in(&storage, &r, from);
        for to in refused {
            assert!(
                matches!(
                    storage.update_pool_metadata_status(&r, to),
                    Err(Error::InvalidTransition { .. })
                ),
                "{from} -> {to} is refused by the rule but not by the store"
            );
            assert_eq!(storage.get_metadata(&r).unwrap().unwrap().status, from);
        }
    }
}

#[test]
fn transitions_stamp_their_timestamps_and_never_clear_them() {
    let (_dir, storage) = storage();
    let r = kp_ref(1);
    storage.create_pool_metadata(&r, now() + 3600).unwrap();
    let start = now();
    storage.update_pool_metadata_status(&r, Uploaded).unwrap();
    storage.update_pool_metadata_status(&r, Available).unwrap();
    storage
        .update_reservation_info(&r, "res-1", "carol", start + 60)
        .unwrap();
    let reserved = storage.get_metadata(&r).unwrap().unwrap();
    assert_eq!(reserved.status, Reserved);
    assert_eq!(reserved.reservation_id.as_deref(), Some("res-1"));
    assert_eq!(reserved.reserved_by.as_deref(), Some("carol"));
    assert_eq!(reserved.reservation_expires_at, Some(start + 60));
    let uploaded_at = reserved.uploaded_at.unwrap();
    let reserved_at = reserved.reserved_at.unwrap();
    assert!(uploaded_at >= start && uploaded_at <= now());
    assert!(reserved_at >= uploaded_at && reserved_at <= now());

    // The reservation lapses, and the KeyPackage is used later.
    storage.update_pool_metadata_status(&r, Available).unwrap();
    storage.mark_spent(&r, "dave", b"group-7").unwrap();
    let spent = storage.get_metadata(&r).unwrap().unwrap();
    assert_eq!(spent.status, Spent);
    assert_eq!(spent.spent_by.as_deref(), Some("dave"));
    assert_eq!(spent.spent_group_id.as_deref(), Some(&b"group-7"[..]));
    assert!(spent.spent_at.unwrap() >= reserved_at);
    // Earlier stamps and details survive.
    assert_eq!(spent.uploaded_at, Some(uploaded_at));
    assert_eq!(spent.reserved_at, Some(reserved_at));
    assert_eq!(spent.reservation_id.as_deref(), Some("res-1"));
    assert_eq!(spent.created_at, reserved.created_at);
}

#[test]
fn reservation_and_spend_follow_the_lifecycle() {
    let (_dir, storage) = storage();
    let r = kp_ref(1);
    storage.create_pool_metadata(&r, now() + 3600).unwrap();
    // A created KeyPackage was never published: it cannot be reserved or spent.
    assert!(matches!(
        storage.update_reservation_info(&r, "x", "y", 1),
        Err(Error::InvalidTransition {
            from: Created,
            to: Reserved,
            ..
        })
    ));
    assert!(matches!(
        storage.mark_spent(&r, "y", b"g"),
        Err(Error::InvalidTransition {
            from: Created,
            to: Spent,
            ..
        })
    ));
    let row = storage.get_metadata(&r).unwrap().unwrap();
    assert_eq!((row.reservation_id, row.spent_by), (None, None));
}

#[test]
fn repeating_a_spend_keeps_the_first_record() {
    let (_dir, storage) = storage();
    let r = kp_ref(1);
    put_in(&storage, &r, Available);
    storage.mark_spent(&r, "first", b"g1").unwrap();
    storage.mark_spent(&r, "second", b"g2").unwrap();
    let row = storage.get_metadata(&r).unwrap().unwrap();
    assert_eq!(row.spent_by.as_deref(), Some("first"));
    assert_eq!(row.spent_group_id.as_deref(), Some(&b"g1"[..]));
}

#[test]
fn counts_cover_every_status() {
    let (_dir, storage) = storage();
    let mut n = 0u8;
    for (i, status) in KeyPackageStatus::ALL.into_iter().enumerate() {
        // i + 1 rows in the i-th status, so that no two counts are equal.
        for _ in 0..=i {
            n += 1;
            put_in(&storage, &kp_ref(n), status);
        }
    }
    for (i, status) in KeyPackageStatus::ALL.into_iter().enumerate() {
        assert_eq!(storage.count_by_status(status).unwrap(), i + 1, "{status}");
    }
}

#[test]
fn expiry_is_strictly_after_not_after() {
    let (_dir, storage) = storage();
    let t = 1_800_000_000;
    storage.create_pool_metadata(&kp_ref(1), t - 1).unwrap();
    storage.create_pool_metadata(&kp_ref(2), t).unwrap();
    storage.create_pool_metadata(&kp_ref(3), t + 1).unwrap();
    assert_eq!(storage.get_expired_refs(t).unwrap(), vec![kp_ref(1)]);
    assert_eq!(
        storage.get_expired_refs(t + 1).unwrap(),
        vec![kp_ref(1), kp_ref(2)]
    );
    assert!(storage.get_expired_refs(i64::MIN).unwrap().is_empty());
    assert_eq!(storage.get_expired_refs(i64::MAX).unwrap().len(), 3);
}

#[test]
fn rows_by_status_come_oldest_first() {
    let (_dir, storage) = storage();
    // Rows created in one second share created_at; set distinct ones by hand
    // so the order is decided by the timestamp, not the insertion order.
    for (n, created_at) in [(1u8, 300i64), (2, 100), (3, 200)] {
        storage
            .create_pool_metadata(&kp_ref(n), 2_000_000_000)
            .unwrap();
        storage
            .connection()
            .execute(
                "UPDATE keypackage_pool_metadata SET created_at = ?1 WHERE keypackage_ref = ?2",
                rusqlite::params![created_at, kp_ref(n)],
            )
            .unwrap();
    }
    put_in(&storage, &kp_ref(9), Uploaded);
    let refs: Vec<_> = storage
        .get_metadata_by_status(Created)
        .unwrap()
        .into_iter()
        .map(|row| row.keypackage_ref)
        .collect();
    assert_eq!(refs, vec![kp_ref(2), kp_ref(3), kp_ref(1)]);
}

#[test]
fn delete_removes_only_that_row() {
    let (_dir, storage) = storage();
    storage.create_pool_metadata(&kp_ref(1), 100).unwrap();
    storage.create_pool_metadata(&kp_ref(2), 100).unwrap();
    storage.delete_pool_metadata(&kp_ref(1)).unwrap();
    assert_eq!(storage.get_metadata(&kp_ref(1)).unwrap(), None);
    assert!(storage.get_metadata(&kp_ref(2)).unwrap().is_some());
}

#[test]
fn every_mutating_method_reports_a_missing_ref() {
    let (_dir, storage) = storage();
    let missing = kp_ref(42);
    let results = [
        (
            "update_pool_metadata_status",
            storage.update_pool_metadata_status(&missing, Uploaded),
        ),
        (
            "delete_pool_metadata",
            storage.delete_pool_metadata(&missing),
        ),
        (
            "update_reservation_info",
            storage.update_reservation_info(&missing, "r", "b", 1),
        ),
        ("mark_spent", storage.mark_spent(&missing, "b", b"g")),
    ];
    for (method, result) in results {
        match result {
            Err(Error::NotFound { keypackage_ref }) => {
                assert_eq!(keypackage_ref.0, missing, "{method}")
            }
            other => panic!("{method}: expected NotFound, got {other:?}"),
        }
    }
    assert_eq!(storage.get_metadata(&missing).unwrap(), None);
}

#[test]
fn empty_and_oversized_refs_are_refused() {
    let (_dir, storage) = storage();
    for bad in [vec![], vec![7u8; 65]] {
        assert!(matches!(
            storage.create_pool_metadata(&bad, 1),
            Err(Error::InvalidRef { .. })
        ));
        assert!(matches!(
            storage.update_pool_metadata_status(&bad, Uploaded),
            Err(Error::InvalidRef { .. })
        ));
        assert!(matches!(
            storage.delete_pool_metadata(&bad),
            Err(Error::InvalidRef { .. })
        ));
    }
    assert_eq!(common::metadata_count(&storage), 0);
}

#[test]
fn identities_save_load_and_replace() {
    let (_dir, storage) = storage();
    assert_eq!(storage.load_public_key("alice").unwrap(), None);
    storage.save_identity("alice", b"key-1").unwrap();
    storage.save_identity("bob", b"key-b").unwrap();
    assert_eq!(
        storage.load_public_key("alice").unwrap().as_deref(),
        Some(&b"key-1"[..])
    );
    storage.save_identity("alice", b"key-2").unwrap();
    assert_eq!(
        storage.load_public_key("alice").unwrap().as_deref(),
        Some(&b"key-2"[..])
    );
    assert_eq!(
        storage.load_public_key("bob").unwrap().as_deref(),
        Some(&b"key-b"[..])
    );
    assert_eq!(storage.load_public_key("carol").unwrap(), None);
}

#[test]
fn metadata_and_identities_survive_reopening_the_file() {
    let (_dir, path) = common::temp_db();
    {
        let storage = PoolStorage::open(&path).unwrap();
        storage.create_pool_metadata(&kp_ref(1), 123).unwrap();
        storage
            .update_pool_metadata_status(&kp_ref(1), Uploaded)
            .unwrap();
        storage.save_identity("alice", b"pk").unwrap();
    }
    let storage = PoolStorage::open(&path).unwrap();
    let row = storage.get_metadata(&kp_ref(1)).unwrap().unwrap();
    assert_eq!((row.status, row.not_after), (Uploaded, 123));
    assert_eq!(
        storage.load_public_key("alice").unwrap().as_deref(),
        Some(&b"pk"[..])
    );
}

#[test]
fn invalid_status_text_in_the_table_is_a_typed_error_naming_the_ref() {
    let (_dir, storage) = storage();
    storage.create_pool_metadata(&kp_ref(5), 1).unwrap();
    storage
        .connection()
        .execute("UPDATE keypackage_pool_metadata SET status = 'lost'", [])
        .unwrap();
    match storage.get_metadata(&kp_ref(5)) {
        Err(Error::InvalidStatus {
            text,
            keypackage_ref,
        }) => {
            assert_eq!(text, "lost");
            assert_eq!(keypackage_ref.unwrap().0, kp_ref(5));
        }
        other => panic!("expected InvalidStatus, got {other:?}"),
    }
    // A transition from an unknown status is refused the same way.
    assert!(matches!(
        storage.update_pool_metadata_status(&kp_ref(5), Uploaded),
        Err(Error::InvalidStatus { .. })
    ));
}
