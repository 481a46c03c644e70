//! Concurrency: two processes with several threads each build, mark and
//! consume KeyPackages on one database file at once. No "database is
//! locked" may reach the caller, and the final counts must add up exactly.
//!
//! The second process is this test binary itself, re-run with
//! `POOL_CONCURRENCY_DB` set so that its `churn_threads` test does the work
//! and prints its totals.

mod common;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::{bundle_count, metadata_count, Identity};
use openmls_keypackage_pool::{
    KeyPackagePool, KeyPackageStatus, PoolConfig, PoolProvider, PoolStorage,
};

const THREADS: usize = 3;
const RUN_FOR: Duration = Duration::from_millis(1500);

/// What one process did: KeyPackages built and consumed, and any error.
#[derive(Debug, Default)]
struct Totals {
    built: u64,
    consumed: u64,
    operations: u64,
    errors: Vec<String>,
}

/// One thread: on its own connection, build two KeyPackages, mark both
/// uploaded then available, and consume one, until `deadline`.
fn churn_thread(path: &Path, deadline: Instant) -> Totals {
    let mut totals = Totals::default();
    let provider = match PoolProvider::open(path) {
        Ok(provider) => provider,
        Err(e) => {
            totals.errors.push(format!("open: {e}"));
            return totals;
        }
    };
    let identity = Identity::new("concurrent");
    let config = PoolConfig {
        target_size: 1,
        low_watermark: 0,
        hard_cap: usize::MAX,
        ..PoolConfig::default()
    };
    let pool = match KeyPackagePool::new(
        &provider,
        &identity.signer,
        identity.credential.clone(),
        config,
    ) {
        Ok(pool) => pool,
        Err(e) => {
            totals.errors.push(format!("pool: {e}"));
            return totals;
        }
    };
    let storage = provider.storage();
    // At least one round, however late the setup ended.
    loop {
        let round = || -> openmls_keypackage_pool::Result<u64> {
            let refs = pool.generate(2)?;
            pool.mark_uploaded(&refs)?;
            for r in &refs {
                storage.update_pool_metadata_status(r, KeyPackageStatus::Available)?;
            }
            pool.health(common::now())?;
            storage.remove_key_package(&refs[0])?;
            Ok(6)
        };
        match round() {
            Ok(operations) => {
                totals.built += 2;
                totals.consumed += 1;
                totals.operations += operations;
            }
            Err(e) => {
                totals.errors.push(e.to_string());
                break;
            }
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    totals
}

/// All threads of one process.
fn churn_process(path: &Path, run_for: Duration) -> Totals {
    let deadline = Instant::now() + run_for;
    let results: Vec<Totals> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| scope.spawn(|| churn_thread(path, deadline)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    results.into_iter().fold(Totals::default(), |mut sum, t| {
        sum.built += t.built;
        sum.consumed += t.consumed;
        sum.operations += t.operations;
        sum.errors.extend(t.errors);
        sum
    })
}

/// Checks the database against what the processes say they did.
fn assert_counts_add_up(path: &Path, totals: &Totals) {
    assert!(
        totals.errors.is_empty(),
        "errors reached the caller: {:?}",
        totals.errors
    );
    assert!(totals.built > 0);
    let storage = PoolStorage::open(path).unwrap();
    let left = (totals.built - totals.consumed) as i64;
    assert_eq!(bundle_count(&storage), left);
    assert_eq!(metadata_count(&storage), left);
    assert_eq!(
        storage
            .count_by_status(KeyPackageStatus::Available)
            .unwrap() as i64,
        left
    );
    assert!(storage.verify().unwrap().is_consistent());
}

/// In a normal run: several threads of this process on one file. As a child
/// of `two_processes_lose_nothing`: the same, reporting totals.
#[test]
fn churn_threads() {
    if let Some(path) = std::env::var_os("POOL_CONCURRENCY_DB") {
        let totals = churn_process(Path::new(&path), RUN_FOR);
        println!(
            "pool-concurrency-totals {} {} {} {}",
            totals.built,
            totals.consumed,
            totals.operations,
            totals.errors.len()
        );
        for e in &totals.errors {
            println!("pool-concurrency-error {e}");
        }
        return;
    }
    let (_dir, path) = common::temp_db();
    drop(PoolStorage::open(&path).unwrap());
    let totals = churn_process(&path, Duration::from_millis(500));
    assert_counts_add_up(&path, &totals);
}

#[test]
fn two_processes_lose_nothing() {
    let (_dir, path) = common::temp_db();
    // The schema is created once, before the writers start.
    drop(PoolStorage::open(&path).unwrap());
    let children: Vec<_> = (0..2)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "churn_threads",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("POOL_CONCURRENCY_DB", &path)
                .output_async()
        })
        .collect();
    let mut totals = Totals::default();
    for child in children {
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "child failed ({}):\n{stdout}",
            output.status
        );
        for line in stdout.lines() {
            if let Some(rest) = line.split("pool-concurrency-totals ").nth(1) {
                let n: Vec<u64> = rest
                    .split_whitespace()
                    .map(|x| x.parse().unwrap())
                    .collect();
                totals.built += n[0];
                totals.consumed += n[1];
                totals.operations += n[2];
            }
            if let Some(e) = line.split("pool-concurrency-error ").nth(1) {
                totals.errors.push(e.to_owned());
            }
        }
    }
    assert_counts_add_up(&path, &totals);
    println!(
        "2 processes x {THREADS} threads: {} KeyPackages built, {} consumed, {} operations",
        totals.built, totals.consumed, totals.operations
    );
}

/// `Command::spawn` with piped output, waited on later.
trait SpawnPiped {
    fn output_async(&mut self) -> std::process::Child;
}

impl SpawnPiped for Command {
    fn output_async(&mut self) -> std::process::Child {
        // The child's standard error goes where the parent's does: a child
        // that dies without a word from libtest (a signal, an abort) says
        // why there.
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap()
    }
}

/// As a child of `opening_again_keeps_the_locks_of_the_storage_already_open`:
/// tries to checkpoint and truncate the log of the file at
/// `POOL_CHECKPOINT_DB`, and prints SQLite's "busy" flag (1 when a reader
/// elsewhere held it back).
#[test]
fn checkpoint_child() {
    let Some(path) = std::env::var_os("POOL_CHECKPOINT_DB") else {
        return;
    };
    let conn = rusqlite::Connection::open(path).unwrap();
    let busy: i64 = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
        .unwrap();
    println!("pool-checkpoint-busy {busy}");
}

/// POSIX drops every lock a process holds on a file when any of the
/// process's descriptors of that file is closed. Opening a second storage
/// on a file this process already has open must not close one: the first
/// storage's read would lose its lock, and another process could then
/// truncate the log under it (or take the shared memory for its own).
#[test]
fn opening_again_keeps_the_locks_of_the_storage_already_open() {
    let (_dir, path) = common::temp_db();
    let first = PoolStorage::open(&path).unwrap();
    let conn = &*first.connection();
    // Frames in the log that a reader's snapshot needs.
    conn.execute_batch("CREATE TABLE scratch (x); INSERT INTO scratch VALUES (1);")
        .unwrap();
    conn.execute_batch("BEGIN").unwrap();
    let rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM scratch", [], |row| row.get(0))
        .unwrap();
    assert_eq!(rows, 1);

    let second = PoolStorage::open(&path).unwrap();

    let output = Command::new(std::env::current_exe().unwrap())
        .args(["checkpoint_child", "--exact", "--nocapture"])
        .env("POOL_CHECKPOINT_DB", &path)
        .output_async()
        .wait_with_output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let busy = stdout
        .lines()
        .find_map(|line| line.split("pool-checkpoint-busy ").nth(1))
        .unwrap_or_else(|| panic!("no result from the child:\n{stdout}"));
    assert_eq!(
        busy, "1",
        "another process truncated the log under this one's open read"
    );
    conn.execute_batch("COMMIT").unwrap();
    drop(second);
}
