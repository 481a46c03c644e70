//! Opening from several processes at once: creating one new database
//! together, and opening while another process holds a long write
//! transaction.
//!
//! The other processes are this test binary itself, re-run with
//! `POOL_OPEN_DIR` set so that its `open_child` test does one side's work
//! and prints what happened.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use common::{build_key_package, bundle_count, metadata_count, to_hex, Identity};
use openmls_keypackage_pool::{KeyPackageStatus, PoolProvider, PoolStorage};

const PROCESSES: usize = 3;
const FILES: usize = 12;
/// Time between two files' start moments: much longer than one open.
const ROUND: Duration = Duration::from_millis(250);
/// No child may run longer than this.
const CHILD_DEADLINE: Duration = Duration::from_secs(60);

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn file(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("fresh-{i}.db"))
}

/// One process's side of the race: at each round's start moment, open
/// (creating) that round's file and build one KeyPackage in it.
fn race_files(dir: &Path, start_ms: u64) {
    let id = Identity::new("racer");
    for i in 0..FILES {
        let at = start_ms + i as u64 * ROUND.as_millis() as u64;
        while unix_ms() < at {
            std::thread::sleep(Duration::from_micros(200));
        }
        let outcome = PoolProvider::open(file(dir, i)).map(|provider| {
            let bundle = build_key_package(&provider, &id, false);
            use openmls_traits::OpenMlsProvider as _;
            bundle.key_package().hash_ref(provider.crypto()).unwrap()
        });
        match outcome {
            Ok(kp_ref) => println!("pool-open-ok {i} {}", to_hex(kp_ref.as_slice())),
            Err(e) => println!("pool-open-error {i} {e:?}"),
        }
    }
}

/// The other side of a long write transaction: open the current database
/// and read from it.
fn open_while_locked(path: &Path) {
    match PoolStorage::open(path).and_then(|s| s.count_by_status(KeyPackageStatus::Created)) {
        Ok(n) => println!("pool-open-ok {n}"),
        Err(e) => println!("pool-open-error {e}"),
    }
}

/// As a child: one side of a test below. In a normal run: the file race
/// in this process alone.
#[test]
fn open_child() {
    if let Some(dir) = std::env::var_os("POOL_OPEN_DIR") {
        match std::env::var("POOL_OPEN_START") {
            Ok(start) => race_files(Path::new(&dir), start.parse().unwrap()),
            Err(_) => open_while_locked(&Path::new(&dir).join("pool.db")),
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    race_files(dir.path(), unix_ms());
    for i in 0..FILES {
        assert_eq!(
            bundle_count(&PoolStorage::open(file(dir.path(), i)).unwrap()),
            1
        );
    }
}

fn spawn_child(dir: &Path, start_ms: Option<u64>) -> Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["open_child", "--exact", "--nocapture", "--test-threads=1"])
        .env("POOL_OPEN_DIR", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(start) = start_ms {
        command.env("POOL_OPEN_START", start.to_string());
    }
    command.spawn().unwrap()
}

/// The child's output, or a panic naming what hung once `CHILD_DEADLINE`
/// has passed (the child is killed first).
fn output_within_deadline(mut child: Child) -> String {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > CHILD_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a child ran past {CHILD_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "a child failed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn three_processes_creating_twelve_files_at_once_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    // Far enough ahead for every child to be running and waiting.
    let start = unix_ms() + 1_500;
    let children: Vec<Child> = (0..PROCESSES)
        .map(|_| spawn_child(dir.path(), Some(start)))
        .collect();
    let outputs: Vec<String> = children.into_iter().map(output_within_deadline).collect();

    let mut failures = Vec::new();
    let mut built: Vec<Vec<String>> = vec![Vec::new(); FILES];
    for line in outputs.iter().flat_map(|o| o.lines()) {
        if let Some(rest) = line.split("pool-open-ok ").nth(1) {
            let (i, kp_ref) = rest.split_once(' ').unwrap();
            built[i.parse::<usize>().unwrap()].push(kp_ref.to_owned());
        }
        if let Some(rest) = line.split("pool-open-error ").nth(1) {
            failures.push(rest.to_owned());
        }
    }
    assert_eq!(failures, Vec::<String>::new(), "opens failed");
    for (i, refs) in built.iter().enumerate() {
        assert_eq!(
            refs.len(),
            PROCESSES,
            "file {i}: not every process reported"
        );
        let storage = PoolStorage::open(file(dir.path(), i)).unwrap();
        assert_eq!(bundle_count(&storage), PROCESSES as i64, "file {i}");
        assert_eq!(metadata_count(&storage), PROCESSES as i64, "file {i}");
        for kp_ref in refs {
            let raw: Vec<u8> = (0..kp_ref.len())
                .step_by(2)
                .map(|j| u8::from_str_radix(&kp_ref[j..j + 2], 16).unwrap())
                .collect();
            assert!(storage.get_metadata(&raw).unwrap().is_some(), "file {i}");
        }
        assert!(storage.verify().unwrap().is_consistent(), "file {i}");
    }
}

#[test]
fn opening_a_current_database_does_not_wait_for_another_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.db");
    let storage = PoolStorage::open(&path).unwrap();
    // A long batch: the write lock is held for the whole life of the child.
    let child_output = storage
        .transaction(|s| {
            for n in 0..100u8 {
                s.create_pool_metadata(&[n; 32], 1_900_000_000)?;
            }
            Ok::<_, openmls_keypackage_pool::Error>(output_within_deadline(spawn_child(
                dir.path(),
                None,
            )))
        })
        .unwrap();
    assert!(
        child_output.contains("pool-open-ok 0"),
        "the open failed or saw the uncommitted batch:\n{child_output}"
    );
    assert_eq!(
        storage.count_by_status(KeyPackageStatus::Created).unwrap(),
        100
    );
}
