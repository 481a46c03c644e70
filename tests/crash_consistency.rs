//! Crash consistency: a process building KeyPackages is killed with SIGKILL
//! at seeded random moments, and after each kill the pool must be whole.
//!
//! The child is this test binary itself, re-run with `POOL_CHURN_DB` set so
//! that its `churn` test builds batches until it is killed.

mod common;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{bundle_count, metadata_count, to_hex, traces::from_hex, Identity};
use openmls_keypackage_pool::{KeyPackagePool, PoolConfig, PoolProvider, PoolStorage};

/// KeyPackages per transaction in the child.
const BATCH: usize = 4;
/// How many times the child is killed.
const KILLS: u32 = 50;
/// The seed of the kill delays, so a failure can be replayed.
const SEED: u64 = 0x5eed_2026_1125;
/// A child that is never killed stops by itself after this long.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);

/// Builds `BATCH` KeyPackages per transaction, then marks them uploaded in a
/// second one, for `batches` rounds or (when `None`) until killed.
fn churn(path: &Path, batches: Option<usize>) {
    let provider = PoolProvider::open(path).unwrap();
    let identity = Identity::new("churn");
    let pool = KeyPackagePool::new(
        &provider,
        &identity.signer,
        identity.credential.clone(),
        PoolConfig {
            target_size: 1,
            low_watermark: 0,
            hard_cap: usize::MAX,
            ..PoolConfig::default()
        },
    )
    .unwrap();
    // libtest prints its own "test churn_child ... " before this on the
    // same line, so the parent looks for the token anywhere in a line.
    println!("pool-churn-ready");
    let started = Instant::now();
    let mut done = 0;
    while batches.is_none_or(|b| done < b) && started.elapsed() < CHILD_LIFETIME {
        let refs = pool.generate(BATCH).unwrap();
        // Reported only once committed: the parent checks that every
        // reported KeyPackage survives the kill.
        let hex: Vec<String> = refs.iter().map(|r| to_hex(r)).collect();
        println!("pool-churn-committed {}", hex.join(","));
        pool.mark_uploaded(&refs).unwrap();
        done += 1;
    }
}

/// In a normal run: a short churn that must leave a whole pool. As a child
/// of `fifty_kills_leave_a_whole_pool`: churn until killed.
#[test]
fn churn_child() {
    if let Some(path) = std::env::var_os("POOL_CHURN_DB") {
        churn(Path::new(&path), None);
        return;
    }
    let (_dir, path) = common::temp_db();
    churn(&path, Some(3));
    let storage = PoolStorage::open(&path).unwrap();
    assert!(storage.verify().unwrap().is_consistent());
    assert_eq!(bundle_count(&storage), 3 * BATCH as i64);
}

/// Kills the child when dropped, so a failing assertion never leaves one
/// running.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A small deterministic generator for the kill delays.
struct Lcg(u64);

impl Lcg {
    fn next_below(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

#[test]
fn fifty_kills_leave_a_whole_pool() {
    let (_dir, path) = common::temp_db();
    drop(PoolStorage::open(&path).unwrap());
    let mut delays = Lcg(SEED);
    let mut survived = 0i64;
    let mut kills_mid_batch = 0;
    let mut reported = 0;
    for kill in 0..KILLS {
        let mut child = Killed(
            Command::new(std::env::current_exe().unwrap())
                .args(["churn_child", "--exact", "--nocapture", "--test-threads=1"])
                .env("POOL_CHURN_DB", &path)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let stdout = child.0.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        let ready = lines.any(|line| line.contains("pool-churn-ready"));
        assert!(ready, "kill {kill}: the child never became ready");
        std::thread::sleep(Duration::from_millis(delays.next_below(60)));
        let _ = child.0.kill(); // SIGKILL
        let _ = child.0.wait();
        // What the child reported committed before it died.
        let committed: Vec<Vec<u8>> = lines
            .filter_map(|line| {
                line.split("pool-churn-committed ")
                    .nth(1)
                    .map(str::to_owned)
            })
            .flat_map(|list| list.split(',').map(from_hex).collect::<Vec<_>>())
            .collect();
        drop(child);

        let storage = PoolStorage::open(&path).unwrap();
        let report = storage.verify().unwrap();
        assert!(report.is_consistent(), "after kill {kill}: {report:?}");
        let bundles = bundle_count(&storage);
        assert_eq!(bundles, metadata_count(&storage), "after kill {kill}");
        assert_eq!(
            bundles % BATCH as i64,
            0,
            "after kill {kill}: a batch was split"
        );
        assert!(
            bundles >= survived,
            "after kill {kill}: committed KeyPackages were lost"
        );
        for kp_ref in &committed {
            assert!(
                storage.key_package_bundle(kp_ref).unwrap().is_some(),
                "after kill {kill}: a reported KeyPackage is gone"
            );
        }
        // Marking a batch uploaded is one transaction too.
        let uploaded = storage
            .count_by_status(openmls_keypackage_pool::KeyPackageStatus::Uploaded)
            .unwrap();
        assert_eq!(
            uploaded % BATCH,
            0,
            "after kill {kill}: an upload mark was split"
        );
        reported += committed.len();
        if bundles == survived {
            kills_mid_batch += 1;
        }
        survived = bundles;
    }
    // The kills must have landed while the child was writing, not only
    // before its first batch.
    assert!(
        survived >= (KILLS as i64 / 5) * BATCH as i64,
        "only {survived} survived"
    );
    assert!(reported > 0, "no child ever reported a commit");
    println!(
        "{KILLS} kills survived, {survived} KeyPackages kept ({reported} reported committed and all found), \
         {kills_mid_batch} kills before the child's first commit"
    );
}
