//! Power loss, simulated: a child process (this test binary, re-run with
//! `POWER_LOSS_CHILD` set) writes through the crash VFS of
//! `common/crash_vfs.rs`, which at a chosen sync or write rewrites the
//! files as a power cut could have left them and ends the process. The
//! parent, on the stock VFS, then checks that every commit the child
//! reported (printed after `COMMIT` returned) is still there, and that the
//! database is whole.
//!
//! The harness is first shown able to fail: `synchronous=OFF` loses
//! reported commits, WAL with `synchronous=NORMAL` loses the ones after the
//! last checkpoint (as SQLite documents), the rollback journal with
//! `synchronous=FULL` loses a commit when the journal's deletion had not
//! reached the directory (what `synchronous=EXTRA` is for), and a commit
//! under `synchronous=OFF` right after a `wal_checkpoint(TRUNCATE)` lets
//! reordered writes replay a stale log (what SQLite's sync of a restarted
//! log's header prevents). Then WAL with `FULL`, two connections at once,
//! and this crate's own storage are swept over every sync point (and write
//! points): nothing reported may be lost.
//!
//! The storage's workloads, each swept from where it begins: the first
//! open of a new file; the migration of a pool schema V7 database, and the
//! upgrade of an `openmls_sqlite_storage` schema 3 one; batches built,
//! uploaded and removed (WAL, and the rollback journal); a client's life
//! (`pending_upload` and `mark_uploaded`, a Welcome joined in
//! `transaction`, a commit merged in `group_transaction`, `prune_expired`
//! recording withdrawals), with the deleted keys searched on the disk as
//! the crash left it; a grace window purged by the eraser thread and its
//! truncating checkpoint; and, under `sqlcipher`, `rekey` from a passphrase
//! and from a raw key. What they found, each now a test that failed before
//! its fix: the erasure record's clearing commit replaying a stale log; the
//! first open and an upgrade of `openmls_sqlite_storage`'s schema leaving a
//! migration applied and unrecorded (`src/schema/upstream.rs`); `rekey`'s
//! rewrite, and every commit under `JournalMode::Delete`, durable only once
//! the next commit began (`synchronous=EXTRA` now); the erasure clearing
//! its record under `synchronous=NORMAL` in a rollback-journal mode, where
//! torn writes could then corrupt the database (WAL mode only now).
//!
//! Every crash point has a seed derived from a base seed, printed with any
//! failure; `POWER_LOSS_SEED=<seed>` reruns the sweeps with that base, and
//! `POWER_LOSS_ONLY=sync:N` (or `write:N`, `truncate:N`, `delete:N`, or
//! `end`) restricts them to one point. `POWER_LOSS_LONG=n` is the long
//! sweep: every point `n` times, every second random one under the hostile
//! model. The plain workloads repeat exactly; those with two connections or
//! the storage's eraser thread may sync in another order from run to run.

#[path = "common/crash_vfs.rs"]
mod crash_vfs;

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use crash_vfs::{Config, CrashAt, Fate, Op, Policy, SplitMix, CRASH_EXIT_CODE};
use openmls_keypackage_pool::{
    JournalMode, KeyPackageStatus, PoolProvider, PoolStorage, StorageOptions,
};

/// The base seed when `POWER_LOSS_SEED` is not set.
const DEFAULT_SEED: u64 = 0x009a_110f_2026_1206;
/// How many children run at once in a sweep.
const WORKERS: usize = 2;
/// A child that has not ended by then is killed (and the point fails).
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// The child side.

/// Does nothing in a normal run. As a child (`POWER_LOSS_CHILD` set):
/// installs the crash VFS as the default and runs the workload named.
#[test]
fn power_loss_child() {
    let Ok(workload) = std::env::var("POWER_LOSS_CHILD") else {
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"));
    let config = Config {
        at: CrashAt::parse(&var("POWER_LOSS_AT")).expect("POWER_LOSS_AT"),
        policy: Policy::parse(&var("POWER_LOSS_POLICY")).expect("POWER_LOSS_POLICY"),
        seed: var("POWER_LOSS_CRASH_SEED").parse().expect("seed"),
        psow: var("POWER_LOSS_PSOW") == "1",
        real_sync: false,
    };
    crash_vfs::install(config, true);
    let path = PathBuf::from(var("POWER_LOSS_DB"));
    let size: u32 = var("POWER_LOSS_SIZE").parse().expect("size");
    match workload.as_str() {
        "plain" | "offclear" | "normalclear" => plain_child(
            &path,
            &var("POWER_LOSS_JOURNAL"),
            &var("POWER_LOSS_SYNC"),
            size,
            match workload.as_str() {
                "offclear" => Some("OFF"),
                "normalclear" => Some("NORMAL"),
                _ => None,
            },
        ),
        "two" => two_connections_child(&path, size),
        "pool" => pool_child(&path, &var("POWER_LOSS_JOURNAL"), size),
        "client" => client::child(&path),
        "grace" => grace::child(&path),
        "migration" => migration_child(&path),
        "upstream-upgrade" => upstream_upgrade_child(&path),
        #[cfg(feature = "sqlcipher")]
        "rekey-passphrase" | "rekey-raw" => rekey::child(&path, &workload, size),
        other => panic!("unknown workload {other}"),
    }
    if config.at == CrashAt::End {
        crash_vfs::crash_now();
    }
    let stats = crash_vfs::stats();
    println!(
        "pl-done syncs={} writes={} truncates={} deletes={} dir_syncs={} unlinked_writes={}",
        stats.syncs,
        stats.writes,
        stats.truncates,
        stats.deletes,
        stats.dir_syncs,
        stats.unlinked_writes
    );
}

/// A row body that depends on the row only, so that runs repeat exactly.
fn body(id: u32) -> Vec<u8> {
    SplitMix(u64::from(id)).bytes(1500)
}

/// One connection: `commits` transactions, each inserting row `id` into
/// `t`, rewriting an older row, and setting `meta.n = id`; in WAL mode a
/// `wal_checkpoint(TRUNCATE)` after every fourth, as the crate's erasure
/// runs. With `clear` (a sync level), each transaction also sets
/// `erasure.pending`, and each checkpoint is followed by what the crate's
/// `erase` does next: a commit clearing it under `synchronous=<clear>`
/// (the crate uses `OFF`), the setting then put back; the first commit
/// after it also fills `bulk` with `id` rows.
fn plain_child(path: &Path, journal: &str, sync: &str, commits: u32, clear: Option<&str>) {
    let conn = rusqlite::Connection::open(path).unwrap();
    // The sync level first: switching to WAL is itself a transaction.
    conn.execute_batch(&format!("PRAGMA synchronous={sync}"))
        .unwrap();
    let mode: String = conn
        .query_row(&format!("PRAGMA journal_mode={journal}"), [], |r| r.get(0))
        .unwrap();
    assert!(mode.eq_ignore_ascii_case(journal), "journal mode {mode}");
    conn.execute_batch(
        "BEGIN;
         CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, body BLOB NOT NULL);
         CREATE TABLE IF NOT EXISTS meta(k INTEGER PRIMARY KEY, n INTEGER NOT NULL);
         INSERT OR IGNORE INTO meta VALUES (1, 0);
         CREATE TABLE IF NOT EXISTS bulk(id INTEGER PRIMARY KEY, body BLOB NOT NULL);
         CREATE TABLE IF NOT EXISTS erasure(k INTEGER PRIMARY KEY, pending INTEGER);
         INSERT OR IGNORE INTO erasure VALUES (1, NULL);
         COMMIT;",
    )
    .unwrap();
    for id in 1..=commits {
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        conn.execute(
            "INSERT INTO t(id, body) VALUES (?1, ?2)",
            rusqlite::params![id, body(id)],
        )
        .unwrap();
        conn.execute(
            "UPDATE t SET body = ?2 WHERE id = ?1",
            rusqlite::params![id / 2, body(id + 1000)],
        )
        .unwrap();
        conn.execute("UPDATE meta SET n = ?1", [id]).unwrap();
        if clear.is_some() {
            conn.execute(
                "UPDATE erasure SET pending = ?1 WHERE pending IS NULL",
                [id],
            )
            .unwrap();
            // The first commit after each clear grows with the run, so
            // that its frames reach past the previous generation's.
            if id % 4 == 1 {
                for n in 0..id {
                    conn.execute(
                        "INSERT INTO bulk(id, body) VALUES (?1, ?2)",
                        rusqlite::params![id * 100 + n, body(id * 100 + n)],
                    )
                    .unwrap();
                }
            }
        }
        conn.execute_batch("COMMIT").unwrap();
        println!("pl-committed t:{id}");
        if journal.eq_ignore_ascii_case("wal") && id % 4 == 0 {
            let busy: i64 = conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
                .unwrap();
            if busy == 0 {
                println!("pl-checkpointed {id}");
            }
            if let Some(clear) = clear {
                conn.execute_batch(&format!(
                    "PRAGMA synchronous = {clear};
                     BEGIN IMMEDIATE;
                     UPDATE erasure SET pending = NULL;
                     COMMIT;"
                ))
                .unwrap();
                conn.execute_batch(&format!("PRAGMA synchronous = {sync}"))
                    .unwrap();
            }
        }
    }
}

/// Two connections on two threads, WAL, `FULL`, committing to tables `a`
/// and `b` at once; `a`'s also checkpoints (PASSIVE) every third commit.
fn two_connections_child(path: &Path, commits: u32) {
    let setup = |conn: &rusqlite::Connection| {
        conn.busy_timeout(Duration::from_secs(20)).unwrap();
        conn.execute_batch("PRAGMA synchronous=FULL").unwrap();
    };
    let a = rusqlite::Connection::open(path).unwrap();
    setup(&a);
    let _: String = a
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .unwrap();
    a.execute_batch(
        "BEGIN;
         CREATE TABLE IF NOT EXISTS a(id INTEGER PRIMARY KEY, body BLOB NOT NULL);
         CREATE TABLE IF NOT EXISTS b(id INTEGER PRIMARY KEY, body BLOB NOT NULL);
         COMMIT;",
    )
    .unwrap();
    let writer = |conn: rusqlite::Connection, table: &'static str| {
        for id in 1..=commits {
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            conn.execute(
                &format!("INSERT INTO {table}(id, body) VALUES (?1, ?2)"),
                rusqlite::params![id, body(id)],
            )
            .unwrap();
            conn.execute_batch("COMMIT").unwrap();
            println!("pl-committed {table}:{id}");
            if table == "a" && id % 3 == 0 {
                let _: i64 = conn
                    .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(0))
                    .unwrap();
            }
        }
    };
    let b = rusqlite::Connection::open(path).unwrap();
    setup(&b);
    std::thread::scope(|s| {
        s.spawn(|| writer(b, "b"));
        writer(a, "a");
    });
}

/// The crate's storage with default options (WAL, `FULL`, its eraser
/// thread on a connection of its own): `batches` batches of two
/// KeyPackages, each marked uploaded, and every second batch's first one
/// removed (a deletion: the storage checkpoints and truncates the log at
/// the end of that commit).
fn pool_child(path: &Path, journal: &str, batches: u32) {
    let options = StorageOptions {
        journal_mode: match journal {
            "WAL" => JournalMode::Wal,
            "DELETE" => JournalMode::Delete,
            "TRUNCATE" => JournalMode::Truncate,
            other => panic!("journal mode {other}"),
        },
        ..StorageOptions::default()
    };
    let provider = PoolProvider::open_with_options(path, &options).unwrap();
    let identity = common::Identity::new("power-loss");
    let pool = identity.pool(&provider, common::sized(1, 0, usize::MAX));
    let opened = crash_vfs::stats();
    println!("pl-opened {},{}", opened.syncs, opened.writes);
    for batch in 0..batches {
        let (refs, hex) = build_reported(&pool, 2);
        pool.mark_uploaded(&refs).unwrap();
        println!("pl-uploaded {}", hex.join(","));
        if batch % 2 == 1 {
            // Between these two lines the removal may or may not be there.
            println!("pl-removing {}", hex[0]);
            provider.storage().remove_key_package(&refs[0]).unwrap();
            println!("pl-removed {}", hex[0]);
        }
    }
}

/// A database of the release before credentials (pool schema V7), with
/// KeyPackages built and some uploaded, made and closed first (every write
/// synced); then the first open of this build migrates it (V8, and the
/// credentials filled in from the bundles, in one transaction), and builds
/// one more batch.
fn migration_child(path: &Path) {
    {
        let provider = PoolProvider::open(path).unwrap();
        let identity = common::Identity::new("migrated");
        let pool = identity.pool(&provider, common::sized(1, 0, usize::MAX));
        let (refs, hex) = build_reported(&pool, 3);
        pool.mark_uploaded(&refs[..2]).unwrap();
        println!("pl-uploaded {},{}", hex[0], hex[1]);
        provider.close().unwrap();
    }
    common::downgrade_to_v7(path);
    open_prepared_and_build(path, "migrated");
}

/// A database `openmls_sqlite_storage` made at its schema version 3 (its
/// migrations 4 to 6 undone); then the first open of this crate's storage,
/// whose runner applies the three missing migrations (one transaction
/// each, and one more to record each), and a batch built.
fn upstream_upgrade_child(path: &Path) {
    use openmls_keypackage_pool::codec::MessagePackCodec;
    use openmls_sqlite_storage::SqliteStorageProvider;
    {
        let mut conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL").unwrap();
        SqliteStorageProvider::<MessagePackCodec, &mut rusqlite::Connection>::new(&mut conn)
            .run_migrations()
            .unwrap();
        conn.execute_batch(
            "DROP TABLE vc_emulation_bindings;
             DROP TABLE vc_operation_trees;
             DROP TABLE vc_retained_key_package_material;
             DROP TABLE registered_vc_emulation_epochs;
             DELETE FROM openmls_sqlite_storage_migrations WHERE version > 3;
             PRAGMA wal_checkpoint(TRUNCATE);",
        )
        .unwrap();
    }
    open_prepared_and_build(path, "upgraded");
}

/// Reports the counts so far as `prepared`; then the first open of the
/// prepared file (the part the workload is about), reported as `migrated`,
/// and a batch of two built under `name`.
fn open_prepared_and_build(path: &Path, name: &str) {
    let prepared = crash_vfs::stats();
    println!("pl-prepared {},{}", prepared.syncs, prepared.writes);
    let provider = PoolProvider::open(path).unwrap();
    println!("pl-migrated {name}");
    let identity = common::Identity::new(name);
    let pool = identity.pool(&provider, common::sized(1, 0, usize::MAX));
    build_reported(&pool, 2);
}

/// Builds `n` KeyPackages in one batch and reports them committed; returns
/// their refs, raw and in hex.
fn build_reported(
    pool: &openmls_keypackage_pool::KeyPackagePool<'_, openmls_basic_credential::SignatureKeyPair>,
    n: usize,
) -> (Vec<Vec<u8>>, Vec<String>) {
    let refs = pool.generate(n).unwrap();
    let hex: Vec<String> = refs.iter().map(|r| common::to_hex(r)).collect();
    println!("pl-committed {}", hex.join(","));
    (refs, hex)
}

// ---------------------------------------------------------------------------
// The parent side: running children.

/// A scenario: which workload, on what settings.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    workload: &'static str,
    journal: &'static str,
    sync: &'static str,
    size: u32,
    /// `rekey` workloads: the n-th rollback journal the rekey opens fails
    /// to open (0: none).
    fail_journal: u64,
    /// `rekey` workloads: the power is cut as soon as `rekey` returns.
    crash_after_rekey: bool,
}

/// One crash point: where, and what the crash keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Point {
    at: CrashAt,
    policy: Policy,
    psow: bool,
    /// Tells apart runs of one point with other seeds.
    rep: u32,
}

impl Point {
    fn label(&self) -> String {
        format!(
            "{} policy={} psow={} rep={}",
            self.at.to_arg(),
            self.policy.to_arg(),
            self.psow,
            self.rep
        )
    }
}

/// What a child printed and how it ended.
#[derive(Debug, Default)]
struct ChildRun {
    /// `Some(CRASH_EXIT_CODE)` when it crashed.
    status: Option<i32>,
    /// Every token the child reported under each key, in order.
    reported: BTreeMap<String, Vec<String>>,
    /// `(syncs, writes)` when it finished without crashing.
    done: Option<(u64, u64)>,
    /// `(truncates, deletes)` when it finished without crashing.
    truncates_deletes: (u64, u64),
    stdout: String,
    stderr: String,
}

impl ChildRun {
    fn crashed(&self) -> bool {
        self.status == Some(CRASH_EXIT_CODE)
    }

    fn list(&self, key: &str) -> Vec<String> {
        self.reported.get(key).cloned().unwrap_or_default()
    }
}

fn base_seed() -> u64 {
    match std::env::var("POWER_LOSS_SEED") {
        Ok(text) => {
            let text = text.trim();
            match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
                None => text.parse(),
            }
            .expect("POWER_LOSS_SEED: a number, decimal or 0x-hex")
        }
        Err(_) => DEFAULT_SEED,
    }
}

fn run_child(scenario: &Scenario, db: &Path, point: Point, seed: u64) -> ChildRun {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "power_loss_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("POWER_LOSS_CHILD", scenario.workload)
        .env("POWER_LOSS_DB", db)
        .env("POWER_LOSS_JOURNAL", scenario.journal)
        .env("POWER_LOSS_SYNC", scenario.sync)
        .env("POWER_LOSS_SIZE", scenario.size.to_string())
        .env("POWER_LOSS_FAIL_JOURNAL", scenario.fail_journal.to_string())
        .env(
            "POWER_LOSS_CRASH_AFTER_REKEY",
            if scenario.crash_after_rekey { "1" } else { "0" },
        )
        .env("POWER_LOSS_AT", point.at.to_arg())
        .env("POWER_LOSS_POLICY", point.policy.to_arg())
        .env("POWER_LOSS_CRASH_SEED", seed.to_string())
        .env("POWER_LOSS_PSOW", if point.psow { "1" } else { "0" })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if started.elapsed() > CHILD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let stdout = out.join().unwrap();
    let stderr = err.join().unwrap();
    let mut run = ChildRun {
        status,
        stdout,
        stderr,
        ..ChildRun::default()
    };
    for line in run.stdout.lines() {
        for key in [
            "committed",
            "checkpointed",
            "uploaded",
            "removing",
            "removed",
            "opened",
            "rekeying",
            "rekeyed",
            "mode",
            "journals",
            "stage",
            "group",
            "secrets",
            "retired",
            "purged",
            "prepared",
            "migrated",
        ] {
            if let Some(rest) = line.split(&format!("pl-{key} ")).nth(1) {
                let tokens = rest.split_whitespace().next().unwrap_or("");
                run.reported
                    .entry(key.to_owned())
                    .or_default()
                    .extend(tokens.split(',').map(str::to_owned));
            }
        }
        if let Some(rest) = line.split("pl-done ").nth(1) {
            let field = |name: &str| -> u64 {
                rest.split_whitespace()
                    .find_map(|f| f.strip_prefix(name))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            run.done = Some((field("syncs="), field("writes=")));
            run.truncates_deletes = (field("truncates="), field("deletes="));
        }
    }
    run
}

/// What the parent found after one crash.
#[derive(Debug, Default)]
struct Found {
    /// Reported committed, not there.
    lost: Vec<String>,
    /// Anything wrong with the database itself (integrity, a torn
    /// transaction, an inconsistent pool, a removal undone).
    damage: Vec<String>,
    /// For the plain workload: lost ids that a reported checkpoint had
    /// already covered.
    lost_checkpointed: Vec<String>,
}

/// One crash point's outcome.
#[derive(Debug)]
struct Outcome {
    point: Point,
    seed: u64,
    run: ChildRun,
    found: Found,
}

impl Outcome {
    fn describe(&self) -> String {
        format!(
            "crash point {} (seed {:#x}; rerun with POWER_LOSS_SEED={:#x} POWER_LOSS_ONLY={}): \
             exit {:?}, lost {:?}, damage {:?}\n--- child stderr ---\n{}",
            self.point.label(),
            self.seed,
            base_seed(),
            self.point.at.to_arg(),
            self.run.status,
            self.found.lost,
            self.found.damage,
            self.run
                .stderr
                .lines()
                .filter(|l| !l.trim().is_empty())
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        )
    }
}

/// Runs every point of `points` (those `POWER_LOSS_ONLY` allows), each in
/// a fresh directory, `WORKERS` at a time, and inspects what each left.
fn sweep(
    name: &str,
    scenario: Scenario,
    points: &[Point],
    inspect: impl Fn(&Path, &ChildRun) -> Found + Sync,
) -> Vec<Outcome> {
    let only = std::env::var("POWER_LOSS_ONLY")
        .ok()
        .and_then(|t| CrashAt::parse(&t));
    let points: Vec<Point> = lengthened(points)
        .into_iter()
        .filter(|p| only.is_none_or(|at| at == p.at))
        .collect();
    let next = AtomicUsize::new(0);
    let outcomes = Mutex::new(Vec::new());
    let inspect = &inspect;
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(&point) = points.get(i) else { break };
                let seed =
                    crash_vfs::derive_seed(base_seed(), &format!("{name} {}", point.label()));
                let dir = tempfile::tempdir().unwrap();
                let db = dir.path().join("power.db");
                let run = run_child(&scenario, &db, point, seed);
                let found = inspect(&db, &run);
                outcomes.lock().unwrap().push(Outcome {
                    point,
                    seed,
                    run,
                    found,
                });
            });
        }
    });
    let mut outcomes = outcomes.into_inner().unwrap();
    outcomes.sort_by_key(|o| points.iter().position(|p| *p == o.point));
    outcomes
}

/// `points`, or with `POWER_LOSS_LONG=n` (the long sweep, by hand) each
/// one `n` times with its own seed; every second copy of a random crash at
/// a sync (or at the end) also drops power-safe overwrites, so that a torn
/// write fills whole sectors with garbage, neighbours included: the
/// hostile model everywhere. (Write points keep theirs: without it SQLite
/// pads its writes, and the point would fall elsewhere.)
fn lengthened(points: &[Point]) -> Vec<Point> {
    let copies: u32 = std::env::var("POWER_LOSS_LONG")
        .ok()
        .map_or(1, |n| n.parse().expect("POWER_LOSS_LONG: a count"));
    (0..copies)
        .flat_map(|copy| {
            points.iter().map(move |p| {
                let hostile = copy % 2 == 1
                    && p.policy == Policy::Random
                    && matches!(p.at, CrashAt::Sync(_) | CrashAt::End);
                Point {
                    rep: p.rep + copy * 1000,
                    psow: p.psow && !hostile,
                    ..*p
                }
            })
        })
        .collect()
}

/// A run without a crash: how many syncs and writes the workload makes.
fn dry_run(scenario: Scenario, psow: bool) -> (u64, u64) {
    let run = dry_child(scenario, psow);
    run.done.unwrap()
}

/// A run without a crash, which must end well.
fn dry_child(scenario: Scenario, psow: bool) -> ChildRun {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("power.db");
    let point = Point {
        at: CrashAt::Never,
        policy: Policy::KeepAll,
        psow,
        rep: 0,
    };
    let run = run_child(&scenario, &db, point, 0);
    assert!(
        run.done.is_some(),
        "the dry run of {scenario:?} failed: {:?}\n{}\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    run
}

/// `count` points spread evenly over `lo..=hi`, always the last.
fn sample_between(lo: u64, hi: u64, count: u64) -> Vec<u64> {
    sample(hi.saturating_sub(lo - 1), count)
        .into_iter()
        .map(|i| i + lo - 1)
        .collect()
}

/// `count` points spread evenly over `1..=total`, always the last.
fn sample(total: u64, count: u64) -> Vec<u64> {
    if total <= count {
        return (1..=total).collect();
    }
    let mut points: Vec<u64> = (0..count).map(|i| 1 + i * total / count).collect();
    points.push(total);
    points.dedup();
    points
}

fn points(ats: impl IntoIterator<Item = CrashAt>, policy: Policy, psow: bool) -> Vec<Point> {
    ats.into_iter()
        .map(|at| Point {
            at,
            policy,
            psow,
            rep: 0,
        })
        .collect()
}

/// The points of `scenario` from where its child printed `marker`
/// (`syncs,writes` so far) to its end, found by a dry run: every sync, at
/// random and at its strictest, and `sampled` writes at random. Returns
/// the dry run too.
fn points_from(scenario: Scenario, marker: &str, sampled: u64) -> (ChildRun, Vec<Point>) {
    let dry = dry_child(scenario, true);
    let from = dry.list(marker);
    let (from_sync, from_write): (u64, u64) = (from[0].parse().unwrap(), from[1].parse().unwrap());
    let (syncs, writes) = dry.done.unwrap();
    let at: Vec<CrashAt> = (from_sync + 1..=syncs).map(CrashAt::Sync).collect();
    let mut all = points(at.clone(), Policy::Random, true);
    all.extend(points(at, Policy::DurableOnly, true));
    all.extend(points(
        sample_between(from_write + 1, writes, sampled)
            .into_iter()
            .map(CrashAt::Write),
        Policy::Random,
        true,
    ));
    (dry, all)
}

/// A crash right after each truncate and each deletion of a file the dry
/// run `dry` made, under `policy`.
fn truncate_and_delete_points(dry: &ChildRun, policy: Policy) -> Vec<Point> {
    let (truncates, deletes) = dry.truncates_deletes;
    let mut at: Vec<CrashAt> = (1..=truncates).map(CrashAt::Truncate).collect();
    at.extend((1..=deletes).map(CrashAt::Delete));
    points(at, policy, true)
}

/// `points`, `reps` times each with another seed.
fn repeated(
    ats: impl IntoIterator<Item = CrashAt> + Clone,
    policy: Policy,
    psow: bool,
    reps: u32,
) -> Vec<Point> {
    (0..reps)
        .flat_map(|rep| {
            points(ats.clone(), policy, psow)
                .into_iter()
                .map(move |p| Point { rep, ..p })
        })
        .collect()
}

/// Prints a sweep's totals (visible with `--nocapture`).
fn summarize(name: &str, outcomes: &[Outcome]) -> (usize, usize, usize) {
    let crashed = outcomes.iter().filter(|o| o.run.crashed()).count();
    let lossy = outcomes.iter().filter(|o| !o.found.lost.is_empty()).count();
    let lost: usize = outcomes.iter().map(|o| o.found.lost.len()).sum();
    let damaged = outcomes
        .iter()
        .filter(|o| !o.found.damage.is_empty())
        .count();
    println!(
        "{name}: {} crash points ({crashed} crashed), {lossy} of them lost reported commits \
         ({lost} commits in all), {damaged} left damage",
        outcomes.len()
    );
    (lossy, lost, damaged)
}

/// Fails with every point that lost a reported commit or left damage.
fn assert_nothing_lost(name: &str, outcomes: &[Outcome]) {
    let bad: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.found.lost.is_empty() || !o.found.damage.is_empty())
        .map(Outcome::describe)
        .collect();
    assert!(
        bad.is_empty(),
        "{name}: {} of {} crash points lost reported commits or damaged the database:\n{}",
        bad.len(),
        outcomes.len(),
        bad.join("\n\n")
    );
}

/// Fails unless every point crashed (for the workloads whose syncs and
/// writes are the same on every run).
fn assert_all_crashed(name: &str, outcomes: &[Outcome]) {
    for o in outcomes {
        assert!(
            o.run.crashed(),
            "{name}: the child did not crash at {}: {}",
            o.point.label(),
            o.describe()
        );
    }
}

// ---------------------------------------------------------------------------
// Inspecting what a crash left.

/// The plain workloads' database on the stock VFS: integrity, the rows of
/// `tables`, and (for `t`) that the rows are exactly `1..=meta.n`.
fn inspect_plain(db: &Path, run: &ChildRun) -> Found {
    let mut found = Found::default();
    let reported = run.list("committed");
    let checkpointed: u32 = run
        .list("checkpointed")
        .last()
        .map_or(0, |t| t.parse().unwrap());
    let conn = match rusqlite::Connection::open(db) {
        Ok(conn) => conn,
        Err(e) => {
            found.damage.push(format!("open: {e}"));
            found.lost = reported;
            return found;
        }
    };
    match conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)) {
        Ok(ok) if ok == "ok" => {}
        Ok(report) => found.damage.push(format!("integrity_check: {report}")),
        Err(e) => found.damage.push(format!("integrity_check: {e}")),
    }
    let mut present = BTreeSet::new();
    for table in ["t", "a", "b"] {
        let exists: bool = conn
            .query_row(
                "SELECT COUNT(*) > 0 FROM sqlite_master WHERE name = ?1",
                [table],
                |r| r.get(0),
            )
            .unwrap_or(false);
        if !exists {
            continue;
        }
        match conn
            .prepare(&format!("SELECT id FROM {table} ORDER BY id"))
            .and_then(|mut s| {
                s.query_map([], |r| r.get::<_, u32>(0))?
                    .collect::<Result<Vec<_>, _>>()
            }) {
            Ok(ids) => {
                if table == "t" {
                    let n: Result<u32, _> = conn.query_row("SELECT n FROM meta", [], |r| r.get(0));
                    match n {
                        Ok(n) if ids == (1..=n).collect::<Vec<_>>() => {}
                        other => found.damage.push(format!(
                            "a torn transaction: rows {ids:?} with meta.n {other:?}"
                        )),
                    }
                }
                present.extend(ids.into_iter().map(|id| format!("{table}:{id}")));
            }
            Err(e) => found.damage.push(format!("reading {table}: {e}")),
        }
    }
    for id in reported {
        if !present.contains(&id) {
            let n: u32 = id.split(':').nth(1).unwrap().parse().unwrap();
            if id.starts_with("t:") && n <= checkpointed {
                found.lost_checkpointed.push(id.clone());
            }
            found.lost.push(id);
        }
    }
    found
}

/// The crate's database, reopened with `PoolStorage::open`: it opens, is
/// whole and consistent, holds what was reported, and the client goes on.
fn inspect_pool(db: &Path, run: &ChildRun) -> Found {
    let mut found = Found::default();
    let Some(storage) = reopened(PoolStorage::open(db), run, &mut found) else {
        return found;
    };
    check_whole(&storage, &mut found);
    check_pool_rows(&storage, run, &mut found);
    drop(storage);
    goes_on(PoolStorage::open(db), &mut found);
    found
}

/// The storage the parent reopened; if it did not open, that is damage,
/// and everything reported is lost.
fn reopened(
    opened: openmls_keypackage_pool::Result<PoolStorage>,
    run: &ChildRun,
    found: &mut Found,
) -> Option<PoolStorage> {
    match opened {
        Ok(storage) => Some(storage),
        Err(e) => {
            found.damage.push(format!("PoolStorage::open: {e}"));
            found.lost = run.list("committed");
            None
        }
    }
}

/// `integrity_check` is ok and `verify()` clean.
fn check_whole(storage: &PoolStorage, found: &mut Found) {
    match storage.verify() {
        Ok(report) if report.is_consistent() => {}
        other => found.damage.push(format!("verify: {other:?}")),
    }
    let integrity: Result<String, _> =
        storage
            .connection()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0));
    if integrity.as_deref().ok() != Some("ok") {
        found.damage.push(format!("integrity_check: {integrity:?}"));
    }
}

/// The client goes on after the crash: the reopened storage builds a
/// KeyPackage, and removes and erases it.
fn goes_on(reopened: openmls_keypackage_pool::Result<PoolStorage>, found: &mut Found) {
    let result = (|| -> Result<(), Box<dyn std::error::Error>> {
        let provider = PoolProvider::new(reopened?);
        let identity = common::Identity::new("after the crash");
        let pool = identity.pool(&provider, common::sized(1, 0, usize::MAX));
        let refs = pool.generate(1)?;
        provider.storage().remove_key_package(&refs[0])?;
        provider.close()?;
        Ok(())
    })();
    if let Err(e) = result {
        found.damage.push(format!("the client cannot go on: {e}"));
    }
}

/// The pool workload's reported KeyPackages against the reopened storage.
fn check_pool_rows(storage: &PoolStorage, run: &ChildRun, found: &mut Found) {
    let removed: BTreeSet<String> = run.list("removed").into_iter().collect();
    let removing: BTreeSet<String> = run.list("removing").into_iter().collect();
    let uploaded: BTreeSet<String> = run.list("uploaded").into_iter().collect();
    for hex in run.list("committed") {
        let kp_ref = common::traces::from_hex(&hex);
        let bundle = storage.key_package_bundle(&kp_ref);
        if removing.contains(&hex) && !removed.contains(&hex) {
            // Removal under way at the crash: either state is right.
            if let Err(e) = bundle {
                found.damage.push(format!("{hex}: {e}"));
            }
            continue;
        }
        match (removed.contains(&hex), bundle) {
            (false, Ok(Some(_))) => {
                if uploaded.contains(&hex) {
                    let status = storage
                        .get_metadata(&kp_ref)
                        .ok()
                        .flatten()
                        .map(|m| m.status);
                    if status != Some(KeyPackageStatus::Uploaded) {
                        found
                            .lost
                            .push(format!("{hex} (reported uploaded, now {status:?})"));
                    }
                }
            }
            (false, Ok(None)) => found.lost.push(hex),
            (true, Ok(None)) => {}
            (true, Ok(Some(_))) => found.lost.push(format!("{hex} (reported removed, back)")),
            (_, Err(e)) => found.damage.push(format!("{hex}: {e}")),
        }
    }
}

// ---------------------------------------------------------------------------
// The model alone.

/// The undo log is exact: undoing every pending op of a file, newest
/// first, gives back the synced image; replaying all gives the current one;
/// and whatever a crash keeps, drops or tears, bytes no pending write
/// covered are never changed with PSOW, and outside the sectors written
/// never without.
#[test]
fn the_undo_log_rebuilds_every_image_it_may_leave() {
    let mut rng = SplitMix(crash_vfs::derive_seed(base_seed(), "model"));
    for round in 0..300 {
        let len = rng.below(5000) as usize;
        let synced = rng.bytes(len);
        let mut current = synced.clone();
        let mut ops = Vec::new();
        for _ in 0..rng.below(12) {
            let len = current.len() as u64;
            let op = if rng.below(5) == 0 {
                let new_len = rng.below(len + 2000);
                let cut = current[new_len.min(len) as usize..].to_vec();
                Op::SetLen {
                    len: new_len,
                    prev_len: len,
                    cut,
                }
            } else {
                let off = rng.below(len + 1000);
                let n = 1 + rng.below(1500) as usize;
                let data = rng.bytes(n);
                let end = off + data.len() as u64;
                let prev = current[off.min(len) as usize..end.min(len) as usize].to_vec();
                Op::Write {
                    off,
                    data,
                    prev,
                    prev_len: len,
                }
            };
            crash_vfs::apply(&mut current, &op);
            ops.push(op);
        }
        assert_eq!(
            crash_vfs::durable_image(current.clone(), &ops),
            synced,
            "round {round}"
        );
        for psow in [true, false] {
            let mut all = synced.clone();
            let mut torn = synced.clone();
            let mut choice = SplitMix(round);
            for op in &ops {
                crash_vfs::replay(&mut all, op, Fate::Keep, &mut choice, psow);
                let fate = [Fate::Keep, Fate::Drop, Fate::Torn][choice.below(3) as usize];
                crash_vfs::replay(&mut torn, op, fate, &mut choice, psow);
            }
            assert_eq!(all, current, "round {round}");
            // Bytes that only truncates and extensions touched read as
            // before or as zeros; no write's garbage reaches them.
            let touched = |i: u64| {
                ops.iter().any(|op| match op {
                    Op::Write { off, data, .. } if psow => {
                        (*off..off + data.len() as u64).contains(&i)
                    }
                    Op::Write { off, data, .. } => {
                        let first = off / crash_vfs::SECTOR * crash_vfs::SECTOR;
                        let last = (off + data.len() as u64).div_ceil(crash_vfs::SECTOR)
                            * crash_vfs::SECTOR;
                        (first..last).contains(&i)
                    }
                    Op::SetLen { .. } => false,
                })
            };
            for (i, byte) in torn.iter().enumerate() {
                if !touched(i as u64) {
                    let before = synced.get(i).copied().unwrap_or(0);
                    assert!(
                        *byte == before || *byte == 0 || current.get(i) == Some(byte),
                        "round {round}, psow {psow}: byte {i} changed outside any write"
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The harness can fail.

fn plain(journal: &'static str, sync: &'static str, commits: u32) -> Scenario {
    Scenario {
        workload: "plain",
        journal,
        sync,
        size: commits,
        fail_journal: 0,
        crash_after_rekey: false,
    }
}

/// `synchronous=OFF` never syncs: a crash loses reported commits (here the
/// log, or the database file itself, whose directory entry was never
/// synced, or frames, or checkpointed pages). Keeping everything (a
/// process kill) loses nothing: the losses come from the model.
#[test]
fn synchronous_off_loses_reported_commits() {
    let scenario = plain("WAL", "OFF", 12);
    let (syncs, writes) = dry_run(scenario, true);
    assert_eq!(syncs, 0, "synchronous=OFF synced");
    let writes_at: Vec<CrashAt> = sample(writes, 24).into_iter().map(CrashAt::Write).collect();
    let mut all = points(writes_at.clone(), Policy::DurableOnly, true);
    all.extend(points(writes_at.clone(), Policy::Random, true));
    all.extend(points(writes_at.clone(), Policy::Random, false));
    let outcomes = sweep("off", scenario, &all, inspect_plain);
    assert_all_crashed("off", &outcomes);
    let (lossy, lost, damaged) = summarize("synchronous=OFF", &outcomes);
    let checkpointed_lost: usize = outcomes
        .iter()
        .map(|o| o.found.lost_checkpointed.len())
        .sum();
    println!("synchronous=OFF: {checkpointed_lost} lost commits had been checkpointed");
    assert!(
        lossy + damaged > 0,
        "the harness found no loss under synchronous=OFF"
    );
    assert!(lost > 0);

    let kill = points(writes_at.into_iter().step_by(3), Policy::KeepAll, true);
    let outcomes = sweep("off-kill", scenario, &kill, inspect_plain);
    assert_all_crashed("off-kill", &outcomes);
    summarize("synchronous=OFF, every pending write kept", &outcomes);
    assert_nothing_lost("off-kill", &outcomes);
}

/// WAL with `synchronous=NORMAL` syncs only at checkpoints: commits since
/// the last one may roll back after a power cut, as SQLite documents, but
/// none before it, and the database is never damaged.
#[test]
fn wal_normal_loses_only_commits_after_the_last_checkpoint() {
    let scenario = plain("WAL", "NORMAL", 12);
    let (syncs, writes) = dry_run(scenario, true);
    let writes_at: Vec<CrashAt> = sample(writes, 64).into_iter().map(CrashAt::Write).collect();
    let mut all = points(writes_at.clone(), Policy::DurableOnly, true);
    all.extend(points(writes_at, Policy::Random, true));
    all.extend(points(
        (1..=syncs).map(CrashAt::Sync),
        Policy::DurableOnly,
        true,
    ));
    let outcomes = sweep("normal", scenario, &all, inspect_plain);
    assert_all_crashed("normal", &outcomes);
    let (lossy, _, damaged) = summarize("WAL synchronous=NORMAL", &outcomes);
    assert!(lossy > 0, "the harness found no lost commit under NORMAL");
    let damage: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.found.damage.is_empty())
        .map(Outcome::describe)
        .collect();
    assert_eq!(
        damaged,
        0,
        "NORMAL damaged the database:\n{}",
        damage.join("\n\n")
    );
    for o in &outcomes {
        assert!(
            o.found.lost_checkpointed.is_empty(),
            "a commit checkpointed under NORMAL was lost: {}",
            o.describe()
        );
    }
}

/// The rollback journal with `synchronous=FULL` syncs the journal and the
/// database, then deletes the journal without syncing the directory: a
/// power cut before the next directory sync brings the journal back, hot,
/// and the reported commit rolls back. `synchronous=EXTRA` syncs the
/// directory after the delete, and loses nothing.
#[test]
fn delete_journal_needs_extra_to_keep_the_last_commit() {
    let full = plain("DELETE", "FULL", 8);
    let (syncs, _) = dry_run(full, true);
    let at: Vec<CrashAt> = (1..=syncs).map(CrashAt::Sync).collect();
    let outcomes = sweep(
        "delete-full",
        full,
        &points(at, Policy::DurableOnly, true),
        inspect_plain,
    );
    assert_all_crashed("delete-full", &outcomes);
    let (lossy, _, damaged) = summarize("DELETE synchronous=FULL", &outcomes);
    assert!(lossy > 0, "no commit lost to a resurrected journal");
    assert_eq!(damaged, 0);

    let extra = plain("DELETE", "EXTRA", 8);
    let (syncs, writes) = dry_run(extra, true);
    let at: Vec<CrashAt> = (1..=syncs).map(CrashAt::Sync).collect();
    let mut all = points(at.clone(), Policy::DurableOnly, true);
    all.extend(points(at, Policy::Random, true));
    all.extend(points(
        sample(writes, 40).into_iter().map(CrashAt::Write),
        Policy::Random,
        true,
    ));
    let outcomes = sweep("delete-extra", extra, &all, inspect_plain);
    assert_all_crashed("delete-extra", &outcomes);
    summarize("DELETE synchronous=EXTRA", &outcomes);
    assert_nothing_lost("delete-extra", &outcomes);
}

/// What the crate's erasure does after its `wal_checkpoint(TRUNCATE)`:
/// clearing its record in a commit under `synchronous=OFF`. That commit
/// restarts the log, and SQLite syncs a restarted log's header before the
/// first frame only when syncs are on. Until the next synced commit the
/// truncation, the new header and the new frames are all pending: if only
/// later frames reach the disk, the old log comes back with its first
/// frames whole and a later one overwritten, and recovery replays a prefix
/// of old commits over a database that already holds newer pages.
/// Compare `wal_full_loses_nothing_at_any_sync_point`: the same workload
/// without the unsynced commit survives the same crashes.
#[test]
fn an_unsynced_commit_after_a_truncating_checkpoint_can_replay_a_stale_log() {
    let scenario = Scenario {
        workload: "offclear",
        journal: "WAL",
        sync: "FULL",
        size: 12,
        fail_journal: 0,
        crash_after_rekey: false,
    };
    let (syncs, _) = dry_run(scenario, true);
    let at: Vec<CrashAt> = (1..=syncs).map(CrashAt::Sync).collect();
    let mut all = repeated(at.clone(), Policy::NewestOnly, true, 4);
    all.extend(points(at, Policy::DurableOnly, true));
    let outcomes = sweep("offclear", scenario, &all, inspect_plain);
    assert_all_crashed("offclear", &outcomes);
    let (lossy, lost, damaged) = summarize(
        "WAL synchronous=FULL, a commit under OFF after each TRUNCATE checkpoint",
        &outcomes,
    );
    for o in outcomes
        .iter()
        .filter(|o| !o.found.lost.is_empty() || !o.found.damage.is_empty())
        .take(3)
    {
        println!("  e.g. {}", o.describe());
    }
    // Only reordering explains it: the strictest crash (every pending
    // entry dropped) loses nothing.
    let strict: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.point.policy == Policy::DurableOnly)
        .collect();
    assert!(strict
        .iter()
        .all(|o| o.found.lost.is_empty() && o.found.damage.is_empty()));
    assert!(lossy + damaged > 0, "no stale replay found ({lost} lost)");

    // The same with the clear committed under NORMAL, which syncs the
    // restarted log's header (not the commit): nothing lost.
    let scenario = Scenario {
        workload: "normalclear",
        ..scenario
    };
    let (syncs, _) = dry_run(scenario, true);
    let at: Vec<CrashAt> = (1..=syncs).map(CrashAt::Sync).collect();
    let mut all = repeated(at.clone(), Policy::NewestOnly, true, 3);
    all.extend(points(at, Policy::Random, true));
    let outcomes = sweep("normalclear", scenario, &all, inspect_plain);
    assert_all_crashed("normalclear", &outcomes);
    summarize(
        "WAL synchronous=FULL, a commit under NORMAL after each TRUNCATE checkpoint",
        &outcomes,
    );
    assert_nothing_lost("normalclear", &outcomes);
}

// ---------------------------------------------------------------------------
// What must hold.

/// WAL with `synchronous=FULL`: at every sync point, the strictest crash,
/// a random one, and a random one on a disk without powersafe overwrite;
/// and at a sample of write points: no reported commit is lost, no
/// transaction torn, the database whole.
#[test]
fn wal_full_loses_nothing_at_any_sync_point() {
    let scenario = plain("WAL", "FULL", 12);
    let (syncs, writes) = dry_run(scenario, true);
    let (syncs_no_psow, writes_no_psow) = dry_run(scenario, false);
    assert_eq!(syncs, syncs_no_psow);
    let at: Vec<CrashAt> = (1..=syncs).map(CrashAt::Sync).collect();
    let mut all = points(at.clone(), Policy::DurableOnly, true);
    all.extend(points(at.clone(), Policy::Random, true));
    all.extend(points(at.clone(), Policy::Random, false));
    all.extend(repeated(at, Policy::NewestOnly, true, 2));
    all.extend(points(
        sample(writes, 200).into_iter().map(CrashAt::Write),
        Policy::Random,
        true,
    ));
    all.extend(points(
        sample(writes_no_psow, 200).into_iter().map(CrashAt::Write),
        Policy::Random,
        false,
    ));
    let outcomes = sweep("wal-full", scenario, &all, inspect_plain);
    assert_all_crashed("wal-full", &outcomes);
    summarize("WAL synchronous=FULL", &outcomes);
    assert_nothing_lost("wal-full", &outcomes);
    // The sweep saw commits to lose: late points had many reported.
    let reported = outcomes
        .iter()
        .map(|o| o.run.list("committed").len())
        .max()
        .unwrap_or(0);
    assert!(reported >= 10, "only {reported} commits reported");
}

/// Two connections on two threads of the child write at once through the
/// VFS (their syncs interleave differently on each run, so a point is a
/// count, not a moment): nothing reported is lost.
#[test]
fn two_connections_lose_nothing() {
    let scenario = Scenario {
        workload: "two",
        journal: "WAL",
        sync: "FULL",
        size: 8,
        fail_journal: 0,
        crash_after_rekey: false,
    };
    let (syncs, _) = dry_run(scenario, true);
    // A run without a crash leaves every row.
    let never = [Point {
        at: CrashAt::Never,
        policy: Policy::KeepAll,
        psow: true,
        rep: 0,
    }];
    let outcomes = sweep("two-never", scenario, &never, inspect_plain);
    assert_nothing_lost("two-never", &outcomes);
    assert!(outcomes[0].run.done.is_some(), "{}", outcomes[0].describe());
    assert_eq!(outcomes[0].run.list("committed").len(), 16);

    let at: Vec<CrashAt> = (1..=syncs).map(CrashAt::Sync).collect();
    let mut all = points(at.clone(), Policy::Random, true);
    all.extend(points(at.into_iter().step_by(2), Policy::DurableOnly, true));
    let outcomes = sweep("two", scenario, &all, inspect_plain);
    summarize("two connections, WAL synchronous=FULL", &outcomes);
    assert_nothing_lost("two", &outcomes);
}

const POOL: Scenario = Scenario {
    workload: "pool",
    journal: "WAL",
    sync: "FULL",
    size: 4,
    fail_journal: 0,
    crash_after_rekey: false,
};

/// How many syncs and writes the pool workload makes opening the storage,
/// and in all.
fn pool_counts() -> ((u64, u64), (u64, u64)) {
    let run = dry_child(POOL, true);
    let opened = run.list("opened");
    let opened = (opened[0].parse().unwrap(), opened[1].parse().unwrap());
    (opened, run.done.unwrap())
}

/// The crate's storage (default options: WAL, `FULL`, an eraser thread
/// with its own connection), once open, building, uploading and removing
/// KeyPackages: at every sync point (the strictest crash and a random
/// one), a process kill at some, and a sample of write points, after
/// `PoolStorage::open` the pool is consistent, the database whole, every
/// reported batch there and every reported removal kept. (Crashes during
/// the first open, and the reordered writes of `Policy::NewestOnly`, are
/// the next tests.)
#[test]
fn pool_storage_loses_no_reported_batch() {
    let ((opened_syncs, opened_writes), (syncs, writes)) = pool_counts();
    let truncated_or_deleted = truncate_and_delete_points(&dry_child(POOL, true), Policy::Random);
    assert!(!truncated_or_deleted.is_empty());
    assert!(syncs > opened_syncs + 8, "{opened_syncs} of {syncs} syncs");
    let at: Vec<CrashAt> = (opened_syncs + 1..=syncs).map(CrashAt::Sync).collect();
    let mut all = repeated(at.clone(), Policy::Random, true, 2);
    all.extend(points(at.clone(), Policy::DurableOnly, true));
    all.extend(points(at.into_iter().step_by(3), Policy::KeepAll, true));
    all.extend(points(
        sample_between(opened_writes + 1, writes, 32)
            .into_iter()
            .map(CrashAt::Write),
        Policy::Random,
        true,
    ));
    all.extend(truncated_or_deleted);
    let outcomes = sweep("pool", POOL, &all, inspect_pool);
    summarize("PoolStorage, default options, once open", &outcomes);
    assert_nothing_lost("pool", &outcomes);
    let crashed = outcomes.iter().filter(|o| o.run.crashed()).count();
    assert!(
        crashed * 10 >= outcomes.len() * 9,
        "only {crashed} of {} children crashed",
        outcomes.len()
    );
    let reported = outcomes
        .iter()
        .map(|o| o.run.list("committed").len())
        .max()
        .unwrap_or(0);
    assert!(reported >= 6, "only {reported} KeyPackages reported");
}

/// Found by this suite, and fixed: after a commit that deletes
/// KeyPackages, the storage's erasure checkpoints with
/// `wal_checkpoint(TRUNCATE)` and then clears its record in a commit that
/// is not synced (`src/erasure/mod.rs`, `erase`). Under `synchronous=OFF`
/// (the first version) that commit restarts the log, and SQLite syncs a restarted
/// log's header only when syncs are on (`sqlite3WalFrames`, ticket
/// ff5be73dee). Until the next synced commit, the truncation, the new
/// header and the new frames are all pending; if only the later frames
/// reach the disk, the old log comes back with its first commits whole and
/// recovery replays them over newer pages. Here that reverts the database
/// to a state from early in its first open: the pool's tables and every
/// reported KeyPackage gone (`PoolStorage::open` then recreates the tables
/// empty): 2 of these 128 crash points lost all 3 reported KeyPackages.
/// `an_unsynced_commit_after_a_truncating_checkpoint_can_replay_a_stale_log`
/// shows the mechanism on plain SQLite, and that committing the clear
/// under `synchronous=NORMAL` (which syncs the restarted header, and not
/// the commit), as the erasure now does, closes it.
#[test]
fn pool_storage_survives_reordered_writes_after_an_erasure() {
    let ((opened_syncs, _), (syncs, _)) = pool_counts();
    let at: Vec<CrashAt> = (opened_syncs + 1..=syncs).map(CrashAt::Sync).collect();
    let all = repeated(at, Policy::NewestOnly, true, 8);
    let outcomes = sweep("pool-newest", POOL, &all, inspect_pool);
    summarize("PoolStorage, reordered writes", &outcomes);
    assert_nothing_lost("pool-newest", &outcomes);
}

/// Found by this suite, and fixed: with `JournalMode::Delete` and the
/// default `Synchronous::Full`, whose documented promise is that a commit
/// that returned survives a power cut, the storage ran SQLite's `FULL`,
/// under which a rollback journal's deletion (the commit) is not synced to
/// the directory: the last batch came back undone. `Full` now runs `EXTRA`
/// in that mode. The power is cut when the workload ends, and at every
/// second sync once open; `JournalMode::Truncate` (whose commit, the
/// journal's truncation, `FULL` syncs) is swept the same way.
#[test]
fn full_in_rollback_journal_mode_keeps_the_last_commit() {
    for (journal, name) in [("DELETE", "pool-delete"), ("TRUNCATE", "pool-truncate")] {
        let scenario = Scenario { journal, ..POOL };
        let dry = dry_child(scenario, true);
        let opened_syncs: u64 = dry.list("opened")[0].parse().unwrap();
        let (syncs, _) = dry.done.unwrap();
        let mut all = points([CrashAt::End], Policy::DurableOnly, true);
        all.extend(repeated([CrashAt::End], Policy::Random, true, 4));
        all.extend(points(
            (opened_syncs + 1..=syncs).step_by(2).map(CrashAt::Sync),
            Policy::Random,
            true,
        ));
        all.extend(truncate_and_delete_points(&dry, Policy::Random));
        let outcomes = sweep(name, scenario, &all, inspect_pool);
        summarize(&format!("PoolStorage, journal_mode={journal}"), &outcomes);
        assert_all_crashed(name, &outcomes);
        assert_nothing_lost(name, &outcomes);
    }
}

/// Found by the long sweep, and fixed: the erasure clears its record in a
/// commit made under `synchronous=NORMAL`, which in WAL mode syncs less
/// and risks nothing; in a rollback-journal mode, SQLite's `NORMAL` skips
/// the sync of the journal's header, and a power cut with writes torn
/// across whole sectors can then leave a journal whose rollback corrupts
/// the database ("wrong # of entries in index"). The erasure now lowers the
/// level in WAL mode only. Every sync, several seeds, the hostile model.
#[test]
fn the_erasure_keeps_a_rollback_journal_synced() {
    for (journal, name) in [
        ("TRUNCATE", "hostile-truncate"),
        ("DELETE", "hostile-delete"),
    ] {
        let scenario = Scenario { journal, ..POOL };
        let dry = dry_child(scenario, false);
        let opened_syncs: u64 = dry.list("opened")[0].parse().unwrap();
        let (syncs, _) = dry.done.unwrap();
        let all = repeated(
            (opened_syncs + 1..=syncs).map(CrashAt::Sync),
            Policy::Random,
            false,
            6,
        );
        let outcomes = sweep(name, scenario, &all, inspect_pool);
        summarize(
            &format!("PoolStorage, journal_mode={journal}, hostile"),
            &outcomes,
        );
        assert_nothing_lost(name, &outcomes);
    }
}

/// Found by this suite, and fixed: the first open of a new file builds
/// `openmls_sqlite_storage`'s tables through its migration runner
/// (refinery), which applies each migration in one transaction and records
/// it in the next. A power cut between the two left a file that never opened
/// again ("table ... already exists"). Every sync and a sample of writes of
/// the first open, then the same storage's first batches: the file opens,
/// and the client goes on.
#[test]
fn pool_storage_survives_a_crash_during_its_first_open() {
    let ((opened_syncs, opened_writes), (syncs, _)) = pool_counts();
    let at: Vec<CrashAt> = (1..=opened_syncs + 4).map(CrashAt::Sync).collect();
    let mut all = points(at.clone(), Policy::Random, true);
    all.extend(points(at.clone(), Policy::DurableOnly, true));
    all.extend(points(at, Policy::KeepAll, true));
    all.extend(points(
        sample(opened_writes, 24).into_iter().map(CrashAt::Write),
        Policy::Random,
        true,
    ));
    assert!(opened_syncs + 4 < syncs);
    let outcomes = sweep("first-open", POOL, &all, inspect_pool);
    summarize("PoolStorage, first open", &outcomes);
    assert_all_crashed("first-open", &outcomes);
    assert_nothing_lost("first-open", &outcomes);
}

/// `rekey` and `rekey_passphrase` (the `sqlcipher` feature).
#[cfg(feature = "sqlcipher")]
mod rekey {
    use super::*;
    use openmls_keypackage_pool::DatabaseKey;

    const PASSPHRASE: &str = "the passphrase before the keystore";
    const OLD_RAW: [u8; 32] = [0x0d; 32];
    const NEW_RAW: [u8; 32] = [0x2e; 32];

    /// The storage under the key the workload starts with.
    fn open_old(path: &Path, workload: &str) -> openmls_keypackage_pool::Result<PoolStorage> {
        match workload {
            "rekey-passphrase" => PoolStorage::open_encrypted(path, PASSPHRASE),
            _ => PoolStorage::open_with_key(path, &DatabaseKey::from_bytes(OLD_RAW)),
        }
    }

    fn open_new(path: &Path) -> openmls_keypackage_pool::Result<PoolStorage> {
        PoolStorage::open_with_key(path, &DatabaseKey::from_bytes(NEW_RAW))
    }

    /// Under the old key (a passphrase, or a raw key): `batches` batches of
    /// two KeyPackages, every second one's first removed; then the rekey to
    /// a new raw key, reported once it returned; then one more batch under
    /// the new key. With `POWER_LOSS_FAIL_JOURNAL=n`, the n-th rollback
    /// journal the rekey opens fails to open.
    pub(super) fn child(path: &Path, workload: &str, batches: u32) {
        let provider = PoolProvider::new(open_old(path, workload).unwrap());
        let identity = common::Identity::new("rekeyed");
        let pool = identity.pool(&provider, common::sized(1, 0, usize::MAX));
        let opened = crash_vfs::stats();
        println!("pl-opened {},{}", opened.syncs, opened.writes);
        let batch = |n: u32| {
            let (refs, hex) = build_reported(&pool, 2);
            if n % 2 == 1 {
                println!("pl-removing {}", hex[0]);
                provider.storage().remove_key_package(&refs[0]).unwrap();
                println!("pl-removed {}", hex[0]);
            }
        };
        (0..batches).for_each(batch);
        let fail: u64 = std::env::var("POWER_LOSS_FAIL_JOURNAL")
            .unwrap()
            .parse()
            .unwrap();
        if fail > 0 {
            crash_vfs::fail_journal_open(fail);
        }
        let before = crash_vfs::stats();
        println!("pl-rekeying {},{}", before.syncs, before.writes);
        provider
            .storage()
            .rekey(&DatabaseKey::from_bytes(NEW_RAW))
            .unwrap();
        let after = crash_vfs::stats();
        println!("pl-rekeyed new");
        let mode: String = provider
            .storage()
            .connection()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        println!("pl-mode {mode}");
        println!("pl-journals {}", after.journal_opens - before.journal_opens);
        if std::env::var("POWER_LOSS_CRASH_AFTER_REKEY").unwrap() == "1" {
            crash_vfs::crash_now();
        }
        batch(batches);
    }

    /// Opens with exactly one of the two keys (the new one once the rekey
    /// was reported), whole, consistent, with what was reported; and the
    /// client goes on under that key.
    fn inspect(db: &Path, run: &ChildRun, workload: &str) -> Found {
        let mut found = Found::default();
        let old = open_old(db, workload);
        let old_opens = old.is_ok();
        drop(old);
        let new = open_new(db);
        let storage = match (old_opens, new) {
            (false, Ok(storage)) => storage,
            (true, Err(_)) => {
                if !run.list("rekeyed").is_empty() {
                    found
                        .lost
                        .push("the rekey: reported done, the old key is back".into());
                }
                open_old(db, workload).unwrap()
            }
            (true, Ok(_)) => {
                found.damage.push("opens with both keys".into());
                return found;
            }
            (false, Err(e)) => {
                found.damage.push(format!("opens with neither key: {e}"));
                return found;
            }
        };
        check_whole(&storage, &mut found);
        check_pool_rows(&storage, run, &mut found);
        goes_on(Ok(storage), &mut found);
        found
    }

    fn inspect_passphrase(db: &Path, run: &ChildRun) -> Found {
        inspect(db, run, "rekey-passphrase")
    }

    fn inspect_raw(db: &Path, run: &ChildRun) -> Found {
        inspect(db, run, "rekey-raw")
    }

    fn scenario(workload: &'static str) -> Scenario {
        Scenario {
            workload,
            size: 2,
            ..POOL
        }
    }

    /// Found by this suite, and fixed: `rekey` rewrites the database in
    /// rollback-journal mode, where a commit is the deletion of the
    /// journal, and under `synchronous=FULL` SQLite does not sync the
    /// directory after it. The deletion was made durable only by the next
    /// journal's creation, when the database went back to WAL mode; when
    /// that switch fails (here: its journal cannot be opened), `rekey`
    /// still returns `Ok`, and a power cut afterwards brought the journal
    /// back: the next open rolled the database back to the old key, which
    /// the application had by then replaced. The power is cut right after
    /// `rekey` returns, and (with `crash_after_rekey` false) after one more
    /// batch under the new key.
    #[test]
    fn a_rekey_that_returned_stands_even_when_wal_mode_does_not_come_back() {
        lost_without_wal(true);
    }

    /// Found with the rekey above, and fixed: left in rollback-journal mode
    /// under `synchronous=FULL`, every later commit is durable only once
    /// the next one begins, and a power cut loses the last one (SQLite's
    /// documented behaviour, shown on plain SQLite by
    /// `delete_journal_needs_extra_to_keep_the_last_commit`).
    #[test]
    fn commits_after_a_rekey_that_left_rollback_mode_are_durable() {
        lost_without_wal(false);
    }

    fn lost_without_wal(crash_after_rekey: bool) {
        for workload in ["rekey-passphrase", "rekey-raw"] {
            let scenario = scenario(workload);
            let dry = dry_child(scenario, true);
            let journals: u64 = dry.list("journals")[0].parse().unwrap();
            assert!(journals >= 2, "the rekey opened {journals} journals");
            // The last journal the rekey opens is the switch back to WAL.
            let scenario = Scenario {
                fail_journal: journals,
                crash_after_rekey,
                ..scenario
            };
            let mut all = points([CrashAt::End], Policy::DurableOnly, true);
            all.extend(repeated([CrashAt::End], Policy::Random, true, 6));
            let inspect = match workload {
                "rekey-passphrase" => inspect_passphrase,
                _ => inspect_raw,
            };
            let outcomes = sweep(workload, scenario, &all, inspect);
            for o in &outcomes {
                assert_eq!(
                    o.run.list("mode"),
                    ["delete"],
                    "the switch back to WAL did not fail: {}",
                    o.describe()
                );
            }
            summarize(&format!("{workload}, WAL not restored"), &outcomes);
            assert_all_crashed(workload, &outcomes);
            assert_nothing_lost(workload, &outcomes);
        }
    }

    /// Every sync from the rekey on (and a sample of its writes), both
    /// ways: the database opens with exactly one key, the new one once
    /// `rekey` returned, with nothing reported lost.
    #[test]
    fn rekey_survives_power_loss_at_every_sync() {
        for (workload, inspect) in [
            (
                "rekey-passphrase",
                inspect_passphrase as fn(&Path, &ChildRun) -> Found,
            ),
            ("rekey-raw", inspect_raw),
        ] {
            let scenario = scenario(workload);
            let (dry, mut all) = points_from(scenario, "rekeying", 16);
            all.extend(points([CrashAt::End], Policy::DurableOnly, true));
            all.extend(truncate_and_delete_points(&dry, Policy::Random));
            let outcomes = sweep(workload, scenario, &all, inspect);
            summarize(workload, &outcomes);
            assert_nothing_lost(workload, &outcomes);
            let rekeyed = outcomes
                .iter()
                .filter(|o| !o.run.list("rekeyed").is_empty())
                .count();
            assert!(rekeyed >= 2, "only {rekeyed} points after the rekey");
        }
    }
}

/// A client's life on the storage, one OpenMLS operation per transaction:
/// KeyPackages built, handed out for upload and marked uploaded; a peer's
/// Welcome joined with one of them (`transaction`); the peer's commit
/// merged (`group_transaction`); the rest pruned as expired, with their
/// withdrawals recorded.
mod client {
    use super::*;
    use openmls::prelude::{
        GroupId, LeafNodeParameters, MlsGroup, ProcessedMessageContent, ProtocolMessage,
    };
    use KeyPackageStatus::{Created, Uploaded};

    /// What the database shows after each stage: (the metadata status of
    /// the second KeyPackage, how many of the second and third have a
    /// withdrawal pending, whether the first one's bundle is stored, the
    /// group's epoch).
    type Observed = (Option<KeyPackageStatus>, usize, bool, Option<u64>);

    /// Stage by stage, what the database holds once it ends; a state that
    /// is none of these is damage, and one behind the last stage reported
    /// lost it.
    const STAGES: [(&str, Observed); 6] = [
        ("nothing", (None, 0, false, None)),
        ("built", (Some(Created), 0, true, None)),
        ("uploaded", (Some(Uploaded), 0, true, None)),
        ("joined", (Some(Uploaded), 0, false, Some(1))),
        ("merged", (Some(Uploaded), 0, false, Some(2))),
        ("pruned", (None, 2, false, Some(2))),
    ];

    fn secrets_line(provider: &PoolProvider, kp_ref: &[u8]) -> String {
        let bundle = provider
            .storage()
            .key_package_bundle(kp_ref)
            .unwrap()
            .unwrap();
        let (init, encryption) = common::traces::private_keys(&bundle);
        format!(
            "{}={}={}",
            common::to_hex(kp_ref),
            common::to_hex(&init),
            common::to_hex(&encryption)
        )
    }

    /// Where the private keys deleted by `stage` are still found: the
    /// first KeyPackage's init key once joined (its encryption key is the
    /// member's leaf key now), both keys of the pruned ones.
    fn deleted_key_traces(
        db: &Path,
        run: &ChildRun,
        refs: &[Vec<u8>],
        stage: usize,
    ) -> Vec<String> {
        let mut traces = Vec::new();
        for line in run.list("secrets") {
            let parts: Vec<&str> = line.split('=').collect();
            let (kp, init, encryption) = (parts[0], parts[1], parts[2]);
            let first = refs.first().is_some_and(|r| common::to_hex(r) == kp);
            let deleted: Vec<&str> = match (first, stage) {
                (true, 3..) => vec![init],
                (false, 5) => vec![init, encryption],
                _ => vec![],
            };
            for key in deleted {
                for place in common::traces::traces(db, &common::traces::from_hex(key)) {
                    traces.push(format!("a deleted key of {kp} in {place}"));
                }
            }
        }
        traces
    }

    pub(super) fn child(path: &Path) {
        let provider = PoolProvider::open(path).unwrap();
        let identity = common::Identity::new("client");
        let pool = identity.pool(&provider, common::sized(1, 0, usize::MAX));
        let opened = crash_vfs::stats();
        println!("pl-opened {},{}", opened.syncs, opened.writes);

        let (refs, hex) = build_reported(&pool, 3);
        println!("pl-stage 1");
        for r in &refs {
            println!("pl-secrets {}", secrets_line(&provider, r));
        }
        let pending = pool.pending_upload().unwrap();
        assert_eq!(pending.ready.len(), 3);
        pool.mark_uploaded(&pending.ready_refs()).unwrap();
        println!("pl-uploaded {}", hex.join(","));
        println!("pl-stage 2");

        // The peer invites with the first KeyPackage, as a server hands it.
        let bundle = provider
            .storage()
            .key_package_bundle(&refs[0])
            .unwrap()
            .unwrap();
        let alice = common::PlainClient::new("alice");
        let (mut alice_group, welcome) = alice.create_group_with(bundle.key_package());
        println!(
            "pl-group {}",
            common::to_hex(alice_group.group_id().as_slice())
        );
        println!("pl-removing {}", hex[0]);
        let mut group = provider
            .transaction(|p| -> Result<MlsGroup, Box<dyn std::error::Error>> {
                Ok(common::join(p, welcome)?)
            })
            .unwrap();
        println!("pl-removed {}", hex[0]);
        println!("pl-stage 3");

        let commit = alice_group
            .self_update(
                &alice.provider,
                &alice.identity.signer,
                LeafNodeParameters::default(),
            )
            .unwrap();
        alice_group.merge_pending_commit(&alice.provider).unwrap();
        let commit: ProtocolMessage = common::into_protocol_message(commit.commit());
        provider
            .group_transaction(
                &mut group,
                |g, p| -> Result<(), Box<dyn std::error::Error>> {
                    match g.process_message(p, commit)?.into_content() {
                        ProcessedMessageContent::StagedCommitMessage(staged) => {
                            g.merge_staged_commit(p, *staged)?;
                            Ok(())
                        }
                        _ => Err("not a commit".into()),
                    }
                },
            )
            .unwrap();
        assert_eq!(group.epoch().as_u64(), 2);
        println!("pl-stage 4");

        println!("pl-removing {},{}", hex[1], hex[2]);
        let pruned = pool.prune_expired(4_000_000_000).unwrap();
        assert_eq!(pruned.len(), 2);
        println!("pl-removed {},{}", hex[1], hex[2]);
        println!("pl-stage 5");
    }

    /// The stage the database shows, checked against what was reported;
    /// the private keys of every deletion reported are in no file, in any
    /// encoding, as the crash left them, nor those of every deletion the
    /// database shows once reopened; the client goes on.
    pub(super) fn inspect(db: &Path, run: &ChildRun) -> Found {
        let mut found = Found::default();
        let refs: Vec<Vec<u8>> = run
            .list("committed")
            .iter()
            .map(|h| common::traces::from_hex(h))
            .collect();
        let reported: usize = run.list("stage").last().map_or(0, |s| s.parse().unwrap());
        // The disk as the power cut left it, before any storage opens it:
        // no deletion reported done has left its keys behind.
        for trace in deleted_key_traces(db, run, &refs, reported) {
            found.damage.push(format!("as the crash left it: {trace}"));
        }
        let storage = match PoolStorage::open(db) {
            Ok(storage) => storage,
            Err(e) => {
                found.damage.push(format!("PoolStorage::open: {e}"));
                found.lost.push(format!("stage {reported}"));
                return found;
            }
        };
        check_whole(&storage, &mut found);
        let mut shown = None;
        if refs.len() == 3 {
            let status = storage
                .get_metadata(&refs[1])
                .ok()
                .flatten()
                .map(|m| m.status);
            let withdrawn = storage
                .pending_withdrawals()
                .unwrap_or_default()
                .iter()
                .filter(|w| refs[1..].contains(&w.keypackage_ref))
                .count();
            let first_stored = matches!(storage.key_package_bundle(&refs[0]), Ok(Some(_)));
            let epoch = run.list("group").first().and_then(|g| {
                MlsGroup::load(&storage, &GroupId::from_slice(&common::traces::from_hex(g)))
                    .ok()
                    .flatten()
                    .map(|group| group.epoch().as_u64())
            });
            let observed: Observed = (status, withdrawn, first_stored, epoch);
            match STAGES.iter().position(|(_, o)| *o == observed) {
                Some(stage) => {
                    if stage < reported {
                        found.lost.push(format!(
                            "reported {}, found {}",
                            STAGES[reported].0, STAGES[stage].0
                        ));
                    }
                    shown = Some(stage);
                }
                None => found
                    .damage
                    .push(format!("a state no stage leaves: {observed:?}")),
            }
        }
        drop(storage);
        goes_on(PoolStorage::open(db), &mut found);
        // Deleted keys, searched again once the storage has opened, erased
        // and closed twice, for every deletion the database shows.
        for trace in deleted_key_traces(db, run, &refs, shown.unwrap_or(0)) {
            found.damage.push(format!("after reopening: {trace}"));
        }
        found
    }

    const CLIENT: Scenario = Scenario {
        workload: "client",
        size: 0,
        ..POOL
    };

    /// Every sync once the storage is open (the strictest crash and a
    /// random one, and reordered writes), and a sample of writes: the stage
    /// the database shows is one a sequence of whole operations leaves, at
    /// least the last one reported, and no deleted key is left on disk.
    #[test]
    fn a_client_loses_no_operation_and_keeps_no_deleted_key() {
        let (dry, mut all) = points_from(CLIENT, "opened", 24);
        let opened_syncs: u64 = dry.list("opened")[0].parse().unwrap();
        let (syncs, _) = dry.done.unwrap();
        all.extend(points(
            (opened_syncs + 1..=syncs).map(CrashAt::Sync),
            Policy::NewestOnly,
            true,
        ));
        all.extend(points([CrashAt::End], Policy::DurableOnly, true));
        let outcomes = sweep("client", CLIENT, &all, inspect);
        summarize("a client's operations", &outcomes);
        assert_nothing_lost("client", &outcomes);
        let stages: BTreeSet<String> = outcomes
            .iter()
            .filter_map(|o| o.run.list("stage").last().cloned())
            .collect();
        assert!(stages.len() >= 5, "crashes reached only stages {stages:?}");
    }
}

/// A grace window ending: KeyPackages pruned with a one-second window keep
/// their keys until it ends; then the storage's eraser thread, on its own
/// connection, deletes them and empties the log (a truncating checkpoint).
mod grace {
    use super::*;

    fn options() -> StorageOptions {
        StorageOptions {
            spent_key_package_grace: Duration::from_secs(1),
            ..StorageOptions::default()
        }
    }

    pub(super) fn child(path: &Path) {
        let provider = PoolProvider::open_with_options(path, &options()).unwrap();
        let identity = common::Identity::new("grace");
        let pool = identity.pool(&provider, common::sized(1, 0, usize::MAX));
        let opened = crash_vfs::stats();
        println!("pl-opened {},{}", opened.syncs, opened.writes);
        let (refs, hex) = build_reported(&pool, 2);
        let mut keys = Vec::new();
        for r in &refs {
            let bundle = provider.storage().key_package_bundle(r).unwrap().unwrap();
            let (init, encryption) = common::traces::private_keys(&bundle);
            println!(
                "pl-secrets {}={}={}",
                common::to_hex(r),
                common::to_hex(&init),
                common::to_hex(&encryption)
            );
            keys.extend([init, encryption]);
        }
        pool.mark_uploaded(&refs).unwrap();
        println!("pl-uploaded {}", hex.join(","));
        assert_eq!(pool.prune_expired(4_000_000_000).unwrap().len(), 2);
        println!("pl-retired {}", hex.join(","));
        // The eraser's work: the bundles deleted, and their keys gone from
        // every file.
        let purged = common::traces::eventually(Duration::from_secs(20), || {
            refs.iter()
                .all(|r| matches!(provider.storage().key_package_bundle(r), Ok(None)))
                && common::traces::traces_of_all(path, &keys).is_empty()
        });
        assert!(purged, "the eraser did not purge the ended window");
        println!("pl-purged {}", hex.join(","));
    }

    /// The window's KeyPackages are withdrawn once retired; their bundles
    /// are gone once purged, and their keys in no file as the crash left
    /// it; the client goes on.
    fn inspect(db: &Path, run: &ChildRun) -> Found {
        let mut found = Found::default();
        let purged = !run.list("purged").is_empty();
        if purged {
            for line in run.list("secrets") {
                let parts: Vec<&str> = line.split('=').collect();
                for key in &parts[1..] {
                    for place in common::traces::traces(db, &common::traces::from_hex(key)) {
                        found
                            .damage
                            .push(format!("a purged key of {} in {place}", parts[0]));
                    }
                }
            }
        }
        let Some(storage) = reopened(
            PoolStorage::open_with_options(db, &options()),
            run,
            &mut found,
        ) else {
            return found;
        };
        check_whole(&storage, &mut found);
        let withdrawn: BTreeSet<Vec<u8>> = storage
            .pending_withdrawals()
            .unwrap_or_default()
            .into_iter()
            .map(|w| w.keypackage_ref)
            .collect();
        for hex in run.list("committed") {
            let kp_ref = common::traces::from_hex(&hex);
            let bundle = storage.key_package_bundle(&kp_ref);
            let retired = run.list("retired").contains(&hex);
            if retired && !withdrawn.contains(&kp_ref) {
                found.lost.push(format!("{hex}: its withdrawal"));
            }
            match bundle {
                Ok(Some(_)) if purged => found.lost.push(format!("{hex}: purged, back")),
                Ok(None) if !retired => found.lost.push(hex),
                Err(e) => found.damage.push(format!("{hex}: {e}")),
                _ => {}
            }
        }
        drop(storage);
        goes_on(PoolStorage::open(db), &mut found);
        found
    }

    const GRACE: Scenario = Scenario {
        workload: "grace",
        size: 0,
        ..POOL
    };

    /// Every sync once open (their order depends on when the eraser
    /// wakes, so a point is a count), the strictest crash and a random one:
    /// no withdrawal lost, no purged KeyPackage back, no purged key on disk.
    #[test]
    fn a_grace_window_purged_by_the_eraser_stays_purged() {
        let dry = dry_child(GRACE, true);
        let opened_syncs: u64 = dry.list("opened")[0].parse().unwrap();
        let (syncs, _) = dry.done.unwrap();
        let at: Vec<CrashAt> = (opened_syncs + 1..=syncs).map(CrashAt::Sync).collect();
        let mut all = points(at.clone(), Policy::Random, true);
        all.extend(points(at, Policy::DurableOnly, true));
        all.extend(points([CrashAt::End], Policy::Random, true));
        let outcomes = sweep("grace", GRACE, &all, inspect);
        summarize("a grace window and the eraser's purge", &outcomes);
        assert_nothing_lost("grace", &outcomes);
        let purged = outcomes
            .iter()
            .filter(|o| !o.run.list("purged").is_empty())
            .count();
        assert!(purged >= 1, "no crash point came after the purge");
    }
}

/// Every sync and a sample of writes of the migration of a V7 database
/// and the batch after it: the database opens whole, every KeyPackage
/// there, with its credential once migrated.
#[test]
fn migrating_an_older_schema_survives_power_loss() {
    let scenario = Scenario {
        workload: "migration",
        ..POOL
    };
    let (_, all) = points_from(scenario, "prepared", 16);
    let outcomes = sweep("migration", scenario, &all, |db, run| {
        let mut found = inspect_pool(db, run);
        // Migrated: every row has the credential of its bundle.
        if let Ok(storage) = PoolStorage::open(db) {
            let missing: i64 = storage
                .connection()
                .query_row(
                    "SELECT COUNT(*) FROM keypackage_pool_metadata WHERE credential IS NULL",
                    [],
                    |r| r.get(0),
                )
                .unwrap_or(-1);
            if missing != 0 {
                found
                    .damage
                    .push(format!("{missing} rows without a credential"));
            }
        }
        found
    });
    summarize("migration from pool schema V7", &outcomes);
    assert_all_crashed("migration", &outcomes);
    assert_nothing_lost("migration", &outcomes);
    assert!(outcomes.iter().any(|o| !o.run.list("migrated").is_empty()));
}

/// Found by this suite, and fixed: a database `openmls_sqlite_storage`
/// left at an older schema (here its version 3) is upgraded by that
/// crate's runner, one transaction to apply a migration and the next to
/// record it; a power cut between the two left a file that never opened
/// again. Every sync of that first open and a sample of its writes: the
/// file opens, whole.
#[test]
fn an_openmls_sqlite_storage_upgrade_cut_short_still_opens() {
    let scenario = Scenario {
        workload: "upstream-upgrade",
        ..POOL
    };
    let (_, all) = points_from(scenario, "prepared", 24);
    // Before the storage reopens it: how many crashes left a migration
    // applied (its table there) and not recorded.
    let cut_between = AtomicUsize::new(0);
    let outcomes = sweep("upstream-upgrade", scenario, &all, |db, run| {
        if applied_not_recorded(db) {
            cut_between.fetch_add(1, Ordering::SeqCst);
        }
        inspect_pool(db, run)
    });
    summarize("openmls_sqlite_storage schema 3 upgraded", &outcomes);
    assert_all_crashed("upstream-upgrade", &outcomes);
    assert_nothing_lost("upstream-upgrade", &outcomes);
    let cut_between = cut_between.into_inner();
    assert!(
        cut_between > 0 || std::env::var("POWER_LOSS_ONLY").is_ok(),
        "no crash point fell between a migration and its record"
    );
    println!("{cut_between} points left a migration applied and not recorded");
}

/// Whether the database at `db` (read on the stock VFS, before any
/// storage opens it) has a table of `openmls_sqlite_storage`'s migrations
/// 4 to 6 without the history row that records it.
fn applied_not_recorded(db: &Path) -> bool {
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return false;
    };
    [
        (4, "vc_emulation_bindings"),
        (5, "vc_operation_trees"),
        (6, "registered_vc_emulation_epochs"),
    ]
    .iter()
    .any(|(version, table)| {
        let count = |sql: &str, arg: &dyn rusqlite::ToSql| -> i64 {
            conn.query_row(sql, [arg], |r| r.get(0)).unwrap_or(0)
        };
        count("SELECT COUNT(*) FROM sqlite_master WHERE name = ?1", table) == 1
            && count(
                "SELECT COUNT(*) FROM openmls_sqlite_storage_migrations WHERE version = ?1",
                version,
            ) == 0
    })
}
