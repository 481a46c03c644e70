//! Raw keys, rekeying and SQLCipher's pinned settings, as the careful
//! clients keep them: `cargo test --features sqlcipher`.
#![cfg(feature = "sqlcipher")]

mod common;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use common::{
    build_key_package, bundle_count, join,
    traces::{private_keys, traces_of_all},
    Identity, PlainClient,
};
use openmls::prelude::*;
use openmls_keypackage_pool::{DatabaseKey, Error, PoolProvider, PoolStorage};

const PASSPHRASE: &str = "the passphrase of an older release";

fn key(byte: u8) -> DatabaseKey {
    DatabaseKey::from_bytes([byte; 32])
}

/// The bytes of every file of the database.
fn files(db: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    common::traces::database_files(db)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

#[test]
fn a_raw_key_opens_what_it_wrote_and_nothing_else() {
    let (_dir, path) = common::temp_db();
    let bob = Identity::new("bob");
    let provider = PoolProvider::open_with_key(&path, &key(1)).unwrap();
    let bundles: Vec<KeyPackageBundle> = (0..3)
        .map(|_| build_key_package(&provider, &bob, false))
        .collect();
    // While open, with the log in place: no SQLite header, no private key
    // in any encoding, in any file.
    let secrets: Vec<Vec<u8>> = bundles
        .iter()
        .flat_map(|b| {
            let (init, encryption) = private_keys(b);
            [init, encryption]
        })
        .collect();
    assert!(path.with_extension("db-wal").exists());
    for (file, bytes) in files(&path) {
        assert!(
            !bytes.windows(16).any(|w| w == b"SQLite format 3\0"),
            "{}",
            file.display()
        );
    }
    assert_eq!(traces_of_all(&path, &secrets), Vec::<String>::new());
    drop(provider);

    let before = files(&path);
    for wrong in [
        PoolStorage::open_with_key(&path, &key(2)),
        PoolStorage::open_encrypted(&path, PASSPHRASE),
    ] {
        assert!(matches!(wrong, Err(Error::WrongKey)), "{wrong:?}");
    }
    assert_eq!(files(&path), before, "a refused key changed a file");
    let reopened = PoolStorage::open_with_key(&path, &key(1)).unwrap();
    assert_eq!(bundle_count(&reopened), 3);

    // And the other way round: a raw key on a passphrase database.
    let (_dir, other) = common::temp_db();
    drop(PoolStorage::open_encrypted(&other, PASSPHRASE).unwrap());
    let before = files(&other);
    assert!(matches!(
        PoolStorage::open_with_key(&other, &key(1)),
        Err(Error::WrongKey)
    ));
    assert_eq!(files(&other), before);
}

#[test]
fn an_empty_passphrase_is_refused_before_anything_is_written() {
    let (_dir, path) = common::temp_db();
    assert!(matches!(
        PoolStorage::open_encrypted(&path, ""),
        Err(Error::EmptyPassphrase)
    ));
    assert!(!path.exists());
    let storage = PoolStorage::open_with_key(&path, &key(3)).unwrap();
    assert!(matches!(
        storage.rekey_passphrase(""),
        Err(Error::EmptyPassphrase)
    ));
}

#[test]
fn the_key_and_the_errors_print_no_key_byte() {
    let bytes: [u8; 32] = std::array::from_fn(|i| 0xa0 + i as u8);
    let secret = DatabaseKey::from_bytes(bytes);
    let hex_upper: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
    let hex_lower = hex_upper.to_lowercase();
    let (_dir, path) = common::temp_db();
    drop(PoolStorage::open_with_key(&path, &key(9)).unwrap());
    let error = PoolStorage::open_with_key(&path, &secret).unwrap_err();
    let printed = [
        format!("{secret:?}"),
        format!("{error:?}"),
        error.to_string(),
        format!("{:?}", Error::EmptyPassphrase),
        format!("{:?}", Error::SqlcipherMissing),
    ];
    for text in &printed {
        for form in [&hex_upper, &hex_lower] {
            assert!(!text.contains(&form[..8]), "{text}");
        }
        assert!(!text.contains("160, 161"), "{text}");
        assert!(!text.contains("a0a1") && !text.contains("A0A1"), "{text}");
    }
}

/// Bob's pool on `provider`, with one group he joined, and two KeyPackages
/// left; returns the group's id.
fn some_state(provider: &PoolProvider) -> GroupId {
    let bob = Identity::new("bob");
    let used = build_key_package(provider, &bob, false);
    build_key_package(provider, &bob, false);
    build_key_package(provider, &bob, false);
    let (_group, welcome) = PlainClient::new("alice").create_group_with(used.key_package());
    join(provider, welcome).unwrap().group_id().clone()
}

/// Copies the database's files into a fresh directory; the copy's path.
fn copy_of(db: &Path, into: &Path) -> PathBuf {
    for (file, bytes) in files(db) {
        std::fs::write(into.join(file.file_name().unwrap()), bytes).unwrap();
    }
    into.join(db.file_name().unwrap())
}

#[test]
fn rekeying_moves_every_page_to_the_new_key() {
    let (dir, path) = common::temp_db();
    let provider = PoolProvider::open_encrypted(&path, PASSPHRASE).unwrap();
    let group_id = some_state(&provider);

    // Passphrase to raw key, then raw key to raw key, then back.
    provider.storage().rekey(&key(4)).unwrap();
    // Still usable at once, and its eraser keyed anew.
    build_key_package(&provider, &Identity::new("bob"), false);
    provider.storage().rekey(&key(5)).unwrap();
    drop(provider);
    let copies = tempfile::tempdir_in(dir.path()).unwrap();
    let copy = copy_of(&path, copies.path());
    assert!(matches!(
        PoolStorage::open_encrypted(&copy, PASSPHRASE),
        Err(Error::WrongKey)
    ));
    assert!(matches!(
        PoolStorage::open_with_key(&copy, &key(4)),
        Err(Error::WrongKey)
    ));

    let storage = PoolStorage::open_with_key(&path, &key(5)).unwrap();
    assert_eq!(bundle_count(&storage), 3);
    assert!(storage.verify().unwrap().is_consistent());
    assert!(MlsGroup::load(&storage, &group_id).unwrap().is_some());
    storage.rekey_passphrase("a new passphrase").unwrap();
    drop(storage);
    assert!(matches!(
        PoolStorage::open_with_key(&path, &key(5)),
        Err(Error::WrongKey)
    ));
    let storage = PoolStorage::open_encrypted(&path, "a new passphrase").unwrap();
    assert_eq!(bundle_count(&storage), 3);
}

#[test]
fn rekeying_is_refused_while_another_connection_is_on_the_file() {
    let (_dir, path) = common::temp_db();
    let storage = PoolStorage::open_with_key(&path, &key(6)).unwrap();
    build_key_package(&PoolProvider::new(storage), &Identity::new("bob"), false);
    let first = PoolStorage::open_with_key(&path, &key(6)).unwrap();
    let second = PoolStorage::open_with_key(&path, &key(6)).unwrap();
    // Another handle of this process is known at once, without waiting out
    // the busy timeout.
    match first.rekey(&key(7)) {
        Err(Error::RekeyRefused { reason }) => {
            assert!(
                reason.contains("another handle of this process"),
                "{reason}"
            )
        }
        other => panic!("expected RekeyRefused, got {other:?}"),
    }
    drop(second);
    // Nothing changed: the old key still opens it.
    drop(first);
    let storage = PoolStorage::open_with_key(&path, &key(6)).unwrap();
    assert_eq!(bundle_count(&storage), 1);
    // A database the storage did not key itself cannot be rekeyed.
    let (_dir, plain) = common::temp_db();
    assert!(matches!(
        PoolStorage::open(&plain).unwrap().rekey(&key(1)),
        Err(Error::RekeyRefused { .. })
    ));
}

#[test]
fn every_connection_pins_sqlciphers_settings() {
    let (_dir, path) = common::temp_db();
    for storage in [
        PoolStorage::open_with_key(&path, &key(8)).unwrap(),
        PoolStorage::open_with_key(&path, &key(8)).unwrap(),
    ] {
        let conn = &*storage.connection();
        let read = |pragma: &str| -> String {
            conn.query_row(&format!("PRAGMA {pragma}"), [], |row| {
                row.get::<_, rusqlite::types::Value>(0)
            })
            .map(|v| match v {
                rusqlite::types::Value::Integer(i) => i.to_string(),
                rusqlite::types::Value::Text(t) => t,
                other => format!("{other:?}"),
            })
            .unwrap()
        };
        assert_eq!(read("cipher_memory_security"), "1");
        assert!(!read("cipher_version").is_empty());
        assert_eq!(read("temp_store"), "2", "MEMORY");
        assert_eq!(read("trusted_schema"), "0");
        // SQLCipher 4's settings, as cipher_compatibility = 4 sets them.
        let settings: Vec<String> = common::column(conn, "PRAGMA cipher_settings");
        for expected in [
            "PRAGMA kdf_iter = 256000;",
            "PRAGMA cipher_page_size = 4096;",
            "PRAGMA cipher_hmac_algorithm = HMAC_SHA512;",
            "PRAGMA cipher_kdf_algorithm = PBKDF2_HMAC_SHA512;",
        ] {
            assert!(settings.iter().any(|s| s == expected), "{settings:?}");
        }
    }
}

/// In a normal run nothing; as a child of the kill test, rekeys the
/// database at `REKEY_DB` from the passphrase to raw key 0x11 and reports.
#[test]
fn rekey_child() {
    let Some(db) = std::env::var_os("REKEY_DB") else {
        return;
    };
    let storage = PoolStorage::open_encrypted(Path::new(&db), PASSPHRASE).unwrap();
    println!("rekey-child-ready");
    let started = std::time::Instant::now();
    storage.rekey(&key(0x11)).unwrap();
    println!("rekey-child-done {}", started.elapsed().as_micros());
    std::thread::sleep(Duration::from_secs(60));
}

/// Runs the rekey child on `db` and kills it `after` its ready line (never,
/// with `None`); returns how long its rekey took when it said so.
fn rekey_child_killed(db: &Path, after: Option<Duration>) -> Option<u64> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["rekey_child", "--exact", "--nocapture", "--test-threads=1"])
        .env("REKEY_DB", db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    assert!(lines.any(|l| l.contains("rekey-child-ready")));
    let took = match after {
        Some(after) => {
            std::thread::sleep(after);
            None
        }
        None => lines.find_map(|l| {
            l.split("rekey-child-done ")
                .nth(1)
                .and_then(|t| t.trim().parse().ok())
        }),
    };
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    took
}

#[test]
fn a_rekey_killed_at_any_moment_leaves_one_key_that_opens_everything() {
    let (dir, template) = common::temp_db();
    {
        let provider = PoolProvider::open_encrypted(&template, PASSPHRASE).unwrap();
        let bob = Identity::new("bob");
        provider
            .storage()
            .transaction(|_| {
                for _ in 0..300 {
                    build_key_package(&provider, &bob, false);
                }
                Ok::<_, Error>(())
            })
            .unwrap();
    }
    let fresh = |n: u32| {
        let into = tempfile::tempdir_in(dir.path()).unwrap();
        let db = copy_of(&template, into.path());
        (into, db, n)
    };
    // How long a whole rekey takes here, to spread the kills over it.
    let (_keep, db, _) = fresh(0);
    let took = rekey_child_killed(&db, None).expect("the child reported its rekey");
    let span = Duration::from_micros(took).max(Duration::from_millis(5)) * 3 / 2;

    let mut state = 0x5eed_u64;
    let (mut old, mut new) = (0, 0);
    for kill in 1..=16u32 {
        let (_into, db, _) = fresh(kill);
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let at = span.mul_f64((state >> 11) as f64 / (1u64 << 53) as f64);
        rekey_child_killed(&db, Some(at));
        let with_old = PoolStorage::open_encrypted(&db, PASSPHRASE);
        let with_new = PoolStorage::open_with_key(&db, &key(0x11));
        match (with_old, with_new) {
            (Ok(storage), Err(Error::WrongKey)) | (Err(Error::WrongKey), Ok(storage)) => {
                assert_eq!(bundle_count(&storage), 300, "kill {kill} at {at:?}");
                assert!(storage.verify().unwrap().is_consistent(), "kill {kill}");
            }
            other => panic!("kill {kill} at {at:?}: {other:?}"),
        }
        if PoolStorage::open_encrypted(&db, PASSPHRASE).is_ok() {
            old += 1;
        } else {
            new += 1;
        }
    }
    println!("rekey took {took} µs; kills left {old} on the old key, {new} on the new");
}

#[test]
fn a_passphrase_with_a_nul_is_refused_without_quoting_it() {
    let (_dir, path) = common::temp_db();
    let error = PoolStorage::open_encrypted(&path, "before\0after").unwrap_err();
    assert!(matches!(error, Error::PassphraseWithNul), "{error:?}");
    assert!(!format!("{error:?}{error}").contains("before"));
    assert!(!path.exists());
}

#[test]
fn after_a_rekey_the_eraser_still_empties_the_log_within_the_bound() {
    use common::conversation::Conversation;
    let (dir, path) = common::temp_db();
    let bob = PoolProvider::open_with_key(&path, &key(0x21)).unwrap();
    let mut chat = Conversation::with(dir, path.clone(), bob);
    chat.bob.storage().rekey(&key(0x22)).unwrap();
    chat.messages(4);
    // Without an eraser keyed anew, nothing empties it.
    chat.assert_log_emptied_within(Duration::from_secs(5));
}

/// `rekey` runs its rewrite under `synchronous=EXTRA` (its commit is a
/// rollback journal's deletion); once the database is back in WAL mode the
/// connection is back at the options' level (`FULL`, 2), with WAL mode and
/// its eraser as before.
#[test]
fn after_a_rekey_the_connection_is_back_in_wal_at_full() {
    let (_dir, path) = common::temp_db();
    let storage = PoolStorage::open_with_key(&path, &key(8)).unwrap();
    let level = |s: &PoolStorage| -> (String, i64) {
        let conn = s.connection();
        (
            conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap(),
            conn.query_row("PRAGMA synchronous", [], |r| r.get(0))
                .unwrap(),
        )
    };
    assert_eq!(level(&storage), ("wal".to_owned(), 2));
    storage.rekey(&key(9)).unwrap();
    assert_eq!(level(&storage), ("wal".to_owned(), 2));
}
