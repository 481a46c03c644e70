//! The example pool generator, run as a user runs it: the compiled binary
//! that `cargo test` builds alongside the tests.

mod common;

use std::{
    path::PathBuf,
    process::{Command, Output},
};

use openmls_keypackage_pool::{KeyPackageStatus, PoolStorage};

fn generator() -> Command {
    // Test binaries live in target/<profile>/deps; examples in
    // target/<profile>/examples.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path: PathBuf = profile_dir
        .join("examples")
        .join(format!("pool_generator{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run the suite with `cargo test`, which builds the examples",
        path.display()
    );
    Command::new(path)
}

fn run(args: &[&str]) -> Output {
    generator().args(args).output().unwrap()
}

/// The reports of a successful `--json` run: one per pool.
fn reports(output: &Output) -> Vec<serde_json::Value> {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    match serde_json::from_slice(&output.stdout).unwrap() {
        serde_json::Value::Array(reports) => reports,
        other => panic!("expected an array of reports, got {other}"),
    }
}

/// The report of a successful `--json` run of one pool.
fn json(output: &Output) -> serde_json::Value {
    let mut reports = reports(output);
    assert_eq!(reports.len(), 1);
    reports.remove(0)
}

#[test]
fn running_twice_reuses_the_pool() {
    let (_dir, db) = common::temp_db();
    let db = db.to_str().unwrap();

    let first = json(&run(&["--db", db, "--count", "6", "--json"]));
    assert_eq!(first["generated"], 6);
    assert_eq!(first["live"], 6);
    assert_eq!(first["identity_reused"], false);
    // Built, but not yet on a server.
    assert_eq!(first["has_last_resort"], false);
    assert_eq!(first["last_resort_pending"], true);
    assert_eq!(first["actions"], serde_json::json!(["Upload(7)"]));

    let second = json(&run(&["--db", db, "--count", "6", "--json"]));
    assert_eq!(second["generated"], 0);
    assert_eq!(second["live"], 6);
    assert_eq!(second["identity_reused"], true);
    assert_eq!(second["last_resort"], "kept");

    // The database agrees with what was printed: 6 one-time KeyPackages and
    // one last-resort one, each with its bundle.
    let storage = PoolStorage::open(db).unwrap();
    assert_eq!(
        storage.count_by_status(KeyPackageStatus::Created).unwrap(),
        7
    );
    assert_eq!(common::bundle_count(&storage), 7);
    assert_eq!(common::metadata_count(&storage), 7);
}

#[test]
fn a_larger_count_tops_up_and_upload_marking_moves_everything() {
    let (_dir, db) = common::temp_db();
    let db = db.to_str().unwrap();
    json(&run(&["--db", db, "--count", "3", "--json"]));
    let grown = json(&run(&[
        "--db",
        db,
        "--count",
        "5",
        "--json",
        "--mark-uploaded",
    ]));
    assert_eq!(grown["generated"], 2);
    assert_eq!(grown["counts"]["uploaded"], 6);
    assert_eq!(grown["counts"]["created"], 0);
    assert_eq!(grown["usable"], 5);
    assert_eq!(grown["has_last_resort"], true);
    assert_eq!(grown["actions"], serde_json::json!([]));
    assert_eq!(grown["recommended"], "Nothing");
}

#[test]
fn the_table_shows_the_counts_in_the_database() {
    let (_dir, db) = common::temp_db();
    let output = run(&[
        "--db",
        db.to_str().unwrap(),
        "--count",
        "3",
        "--mark-uploaded",
    ]);
    assert!(output.status.success());
    let table = String::from_utf8(output.stdout).unwrap();
    let storage = PoolStorage::open(&db).unwrap();
    for status in KeyPackageStatus::ALL {
        // Each status has a row of its own: "<status>   <count>".
        let shown: usize = table
            .lines()
            .find_map(|line| {
                let mut words = line.split_whitespace();
                (words.next() == Some(status.as_str()))
                    .then(|| words.next()?.parse().ok())
                    .flatten()
            })
            .unwrap_or_else(|| panic!("no row for {status} in\n{table}"));
        assert_eq!(shown, storage.count_by_status(status).unwrap(), "{status}");
    }
    assert_eq!(
        storage.count_by_status(KeyPackageStatus::Uploaded).unwrap(),
        4
    );
}

fn assert_one_line_failure(output: &Output) {
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_file_that_is_not_a_database_is_a_one_line_error() {
    let (_dir, db) = common::temp_db();
    std::fs::write(&db, b"these are not the pages you are looking for").unwrap();
    let output = run(&["--db", db.to_str().unwrap()]);
    assert_one_line_failure(&output);
    // The file is left as it was.
    assert_eq!(
        std::fs::read(&db).unwrap(),
        b"these are not the pages you are looking for"
    );
}

#[test]
fn an_unopenable_path_and_bad_flags_are_one_line_errors() {
    let (dir, _) = common::temp_db();
    let missing_dir = dir.path().join("no/such/dir/pool.db");
    assert_one_line_failure(&run(&["--db", missing_dir.to_str().unwrap()]));
    assert_one_line_failure(&run(&["--count", "zero"]));
    assert_one_line_failure(&run(&["--no-such-flag"]));
    let help = run(&["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--count"));
}

#[test]
fn a_smaller_count_than_the_pool_holds_succeeds_and_changes_nothing() {
    let (_dir, db) = common::temp_db();
    let db = db.to_str().unwrap();
    json(&run(&["--db", db, "--count", "6", "--json"]));
    let refs = |storage: &PoolStorage| {
        let mut refs: Vec<Vec<u8>> = KeyPackageStatus::ALL
            .into_iter()
            .flat_map(|s| storage.get_metadata_by_status(s).unwrap())
            .map(|row| row.keypackage_ref)
            .collect();
        refs.sort();
        refs
    };
    let before = refs(&PoolStorage::open(db).unwrap());

    let output = run(&["--db", db, "--count", "2"]);
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(table.contains("nothing needed building"), "{table}");
    // What the pool needs instead: the upload of what was built.
    assert!(
        table.contains("next steps                     upload 7"),
        "{table}"
    );
    let second = json(&run(&["--db", db, "--count", "2", "--json"]));
    assert_eq!(second["generated"], 0);
    assert_eq!(refs(&PoolStorage::open(db).unwrap()), before);
}

#[test]
fn each_user_and_ciphersuite_gets_a_pool_of_its_own() {
    let (_dir, db) = common::temp_db();
    let db = db.to_str().unwrap();
    let alice = json(&run(&[
        "--db", db, "--user", "alice", "--count", "4", "--json",
    ]));
    assert_eq!(alice["generated"], 4);
    let bob = json(&run(&[
        "--db", db, "--user", "bob", "--count", "4", "--json",
    ]));
    assert_eq!(bob["generated"], 4, "bob's pool is not alice's");
    assert_eq!(bob["last_resort"], "created");
    // Two ciphersuites for bob: the 0x0001 pool exists, the other is new.
    let pools = reports(&run(&[
        "--db",
        db,
        "--user",
        "bob",
        "--count",
        "4",
        "--ciphersuite",
        "0x0001",
        "--ciphersuite",
        "MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519",
        "--json",
    ]));
    assert_eq!(pools.len(), 2);
    assert_eq!(pools[0]["ciphersuite_code"], 1);
    assert_eq!(pools[0]["generated"], 0);
    assert_eq!(pools[1]["ciphersuite_code"], 3);
    assert_eq!(pools[1]["generated"], 4);
    let storage = PoolStorage::open(db).unwrap();
    let scopes = storage.scopes(common::now()).unwrap();
    assert_eq!(scopes.len(), 3);
    assert!(scopes.iter().all(|s| s.held == 4 && s.pending == 4));
    assert_eq!(common::bundle_count(&storage), 3 * 5);
}

#[test]
fn ciphersuites_are_listed_and_unknown_ones_refused() {
    let listed = run(&["--list-ciphersuites"]);
    assert!(listed.status.success());
    let text = String::from_utf8(listed.stdout).unwrap();
    assert!(
        text.contains("0x0001  MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519"),
        "{text}"
    );
    assert_one_line_failure(&run(&["--ciphersuite", "MLS_NOT_A_SUITE"]));
    assert_one_line_failure(&run(&["--user", "carol/ECDSA_SECP256R1_SHA256"]));
    // Known to OpenMLS but not to the default crypto provider.
    let (_dir, db) = common::temp_db();
    let x448 = run(&[
        "--db",
        db.to_str().unwrap(),
        "--ciphersuite",
        "0x0001",
        "--ciphersuite",
        "MLS_256_DHKEMX448_AES256GCM_SHA512_Ed448",
    ]);
    assert_one_line_failure(&x448);
    assert!(String::from_utf8_lossy(&x448.stderr).contains("does not support"));
    // Refused before anything was done, the supported suite's pool included.
    assert!(!db.exists());
    // Listing needs no database either.
    let listed = run(&["--db", db.to_str().unwrap(), "--list-ciphersuites"]);
    assert!(listed.status.success());
    assert!(!db.exists());
}

#[test]
fn withdrawals_and_grace_windows_are_shown_and_withdrawals_confirmed() {
    let (_dir, db) = common::temp_db();
    let path = db.clone();
    let db = db.to_str().unwrap();
    json(&run(&[
        "--db",
        db,
        "--count",
        "4",
        "--json",
        "--mark-uploaded",
    ]));
    // The application takes two uploaded KeyPackages out of service, with a
    // grace window.
    {
        let options = openmls_keypackage_pool::StorageOptions {
            spent_key_package_grace: std::time::Duration::from_secs(3_600),
            ..Default::default()
        };
        let storage = PoolStorage::open_with_options(&path, &options).unwrap();
        let uploaded = storage
            .get_metadata_by_status(KeyPackageStatus::Uploaded)
            .unwrap();
        let one_time: Vec<_> = uploaded.iter().filter(|m| !m.last_resort).take(2).collect();
        for row in one_time {
            storage.remove_key_package(&row.keypackage_ref).unwrap();
        }
    }
    let shown = json(&run(&["--db", db, "--count", "4", "--json"]));
    assert_eq!(shown["pending_withdrawals"], 2);
    assert_eq!(shown["in_grace"], 2);
    assert!(shown["actions"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("Withdraw(2)")));
    let table = String::from_utf8(run(&["--db", db, "--count", "4"]).stdout).unwrap();
    assert!(
        table.contains("withdrawals waiting            2"),
        "{table}"
    );
    assert!(
        table.contains("in their grace window          2"),
        "{table}"
    );

    let confirmed = json(&run(&[
        "--db",
        db,
        "--count",
        "4",
        "--json",
        "--confirm-withdrawn",
    ]));
    assert_eq!(confirmed["confirmed_withdrawals"], 2);
    assert_eq!(confirmed["pending_withdrawals"], 0);
    // Still in the window: the keys stay until it ends.
    assert_eq!(confirmed["in_grace"], 2);
}

#[test]
fn a_new_identity_for_the_same_user_retires_the_old_credentials_key_packages() {
    let (_dir, db) = common::temp_db();
    let path = db.clone();
    let db = db.to_str().unwrap();
    let first = json(&run(&[
        "--db",
        db,
        "--user",
        "dana",
        "--count",
        "3",
        "--json",
        "--mark-uploaded",
    ]));
    assert_eq!(first["credential_identity"], "dana");
    assert_eq!(
        (first["generated"].clone(), first["stale"].clone()),
        (3.into(), 0.into())
    );

    // The same user's key, presenting a renewed credential.
    let renewed = json(&run(&[
        "--db",
        db,
        "--user",
        "dana",
        "--identity",
        "dana@2027",
        "--count",
        "3",
        "--json",
    ]));
    assert_eq!(renewed["identity_reused"], true);
    assert_eq!(renewed["credential_identity"], "dana@2027");
    // Three one-time KeyPackages and the last-resort one carried the old
    // credential; all were on the server.
    assert_eq!(renewed["stale_before"], 4);
    assert_eq!(renewed["retired_stale"], 4);
    assert_eq!(renewed["stale"], 0);
    assert_eq!(renewed["generated"], 3);
    assert_eq!(renewed["last_resort"], "created");
    assert_eq!(renewed["pending_withdrawals"], 4);

    // Every KeyPackage left on disk carries the new credential.
    let storage = PoolStorage::open(&path).unwrap();
    let mut identities = std::collections::BTreeSet::new();
    for status in KeyPackageStatus::ALL {
        for row in storage.get_metadata_by_status(status).unwrap() {
            let bundle = storage
                .key_package_bundle(&row.keypackage_ref)
                .unwrap()
                .unwrap();
            let credential = bundle.key_package().leaf_node().credential().clone();
            let basic = openmls::prelude::BasicCredential::try_from(credential).unwrap();
            identities.insert(String::from_utf8(basic.identity().to_vec()).unwrap());
        }
    }
    assert_eq!(
        identities.into_iter().collect::<Vec<_>>(),
        vec!["dana@2027"]
    );
    assert_eq!(common::bundle_count(&storage), 4);
    drop(storage);

    // Going back to the old identity shows the renewed ones as stale in the
    // table, and retires them.
    let table =
        String::from_utf8(run(&["--db", db, "--user", "dana", "--count", "3"]).stdout).unwrap();
    assert!(
        table.contains(
            "stale          4 of the key's KeyPackages carried another credential, retired 4"
        ),
        "{table}"
    );
    assert!(
        table.contains("of another credential          0"),
        "{table}"
    );
}

#[test]
fn the_storage_status_follows_the_health_table_and_shows_an_overdue_erasure() {
    let (_dir, path) = common::temp_db();
    let db = path.to_str().unwrap();

    let report = json(&run(&["--db", db, "--count", "2", "--json"]));
    let storage = &report["storage"];
    assert_eq!(storage["journal_mode"], "wal");
    assert_eq!(storage["synchronous"], "FULL");
    assert_eq!(storage["encrypted"], false);
    assert_eq!(storage["sqlite"]["version"], rusqlite::version());
    assert_eq!(storage["erasure"]["eraser_running"], true);
    assert_eq!(storage["erasure"]["owed_since_ms"], serde_json::Value::Null);
    assert_eq!(storage["erasure"]["overdue"], false);
    let table = run(&["--db", db, "--count", "2"]);
    let text = String::from_utf8(table.stdout).unwrap();
    let (health, status) = text.split_once("\nstorage\n").expect("a storage section");
    assert!(health.contains("next steps"));
    assert!(status.contains("erasure        nothing owed"), "{status}");
    assert!(
        status.contains("journal        wal, synchronous FULL"),
        "{status}"
    );

    // A reader in this process holds the log, and an erasure has been owed
    // for an hour: the generator cannot finish it, and says so.
    let reader = rusqlite::Connection::open(&path).unwrap();
    reader
        .execute_batch("BEGIN; SELECT COUNT(*) FROM sqlite_master;")
        .unwrap();
    let writer = rusqlite::Connection::open(&path).unwrap();
    let an_hour_ago = common::now() * 1000 - 3_600_000;
    writer
        .execute(
            "UPDATE openmls_keypackage_pool_erasure SET pending_since = ?1",
            [an_hour_ago],
        )
        .unwrap();
    let report = json(&run(&["--db", db, "--count", "2", "--json"]));
    let erasure = &report["storage"]["erasure"];
    assert_eq!(erasure["owed_since_ms"], an_hour_ago, "{erasure}");
    assert_eq!(erasure["overdue"], true, "{erasure}");
    let table = run(&["--db", db, "--count", "2"]);
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.contains("OVERDUE"), "{text}");
    drop(reader);

    let report = json(&run(&["--db", db, "--count", "2", "--json"]));
    assert_eq!(
        report["storage"]["erasure"]["owed_since_ms"],
        serde_json::Value::Null
    );
    assert_eq!(report["storage"]["erasure"]["overdue"], false);
}
