//! Runs the benchmark comparisons and prints the tables and ratios
//! `docs/performance.md` quotes.
//!
//! ```sh
//! cargo run --release --example bench_report            # a few minutes
//! cargo run --release --example bench_report -- --quick # smaller sizes, a 100,000-row pool
//! cargo run --release --example bench_report -- --erasure-only # the erasure policies per message
//! cargo run --release --example bench_report -- --operations-only # joins, merges, messages: bare and in a transaction
//! cargo run --release --features sqlcipher --example bench_report -- --encryption-only
//! # with X-Wing pools on openmls_libcrux_crypto as well:
//! cargo run --release --features libcrux,draft-ietf-mls-pq-ciphersuites --example bench_report
//! ```
//!
//! Scenario times are medians of a few interleaved runs in one process. The
//! wall-clock targets (`generate` against the in-memory floor,
//! `generate_parallel` against two independent builders) are medians of
//! back-to-back pairs (`--pairs`), which resist a shared machine's swings.
//! Compare the ratios, which hold across machines far better than the
//! absolute figures.

#[path = "../benches/scenarios/mod.rs"]
mod scenarios;
#[path = "../tests/common/wal_writes.rs"]
mod wal_writes;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use clap::Parser;
use openmls_basic_credential::SignatureKeyPair;
use openmls_keypackage_pool::{
    codec::MessagePackCodec, KeyPackagePool, KeyPackageStatus, PoolCrypto, PoolProvider,
};
use scenarios::{
    large_pool,
    messages::Receiver,
    operations::{self, Mode, Operation},
    Env, Scenario,
};
use wal_writes::{WalBatch, Written};

/// Measures KeyPackage creation and pool queries and prints ratios.
#[derive(Debug, Parser)]
struct Cli {
    /// KeyPackages per creation run.
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// Runs per scenario; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Back-to-back pairs for each wall-clock target (generate against the
    /// floor, generate_parallel against two independent builders).
    #[arg(long, default_value_t = 15)]
    pairs: usize,
    /// Metadata rows in the large pool for the query figures.
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    /// Real KeyPackages in the large pool that are expired at query time.
    #[arg(long, default_value_t = 10_000)]
    expired: usize,
    /// Smaller sizes throughout, for a look in seconds.
    #[arg(long)]
    quick: bool,
    /// Only the query figures on the large pool.
    #[arg(long)]
    queries_only: bool,
    /// Only what one batch writes to the write-ahead log.
    #[arg(long)]
    wal_only: bool,
    /// Only the cost of the erasure policies per decrypted message.
    #[arg(long)]
    erasure_only: bool,
    /// Only what encryption at rest costs: opening with a raw key or a
    /// passphrase, and generating encrypted or not.
    #[cfg(feature = "sqlcipher")]
    #[arg(long)]
    encryption_only: bool,
    /// Only the X-Wing figures: creation, batch sizes, WAL and memory.
    #[cfg(all(feature = "libcrux", feature = "draft-ietf-mls-pq-ciphersuites"))]
    #[arg(long)]
    x_wing_only: bool,
    /// Only whole OpenMLS operations, bare and in a transaction: time,
    /// commits and syncs to disk (with `strace`, where installed); a
    /// backlog in one transaction; threads on one shared provider.
    #[arg(long)]
    operations_only: bool,
    /// Internal: run `OPERATION:MODE:N` after a marker system call and
    /// before another, for `strace` to count the syncs in between.
    #[arg(long, hide = true)]
    child_operation: Option<String>,
    /// Internal: generate this many KeyPackages in a fresh pool and print
    /// the process's peak resident memory in KiB.
    #[arg(long, hide = true)]
    child_generate: Option<usize>,
}

fn main() {
    let mut cli = Cli::parse();
    if let Some(n) = cli.child_generate {
        child_generate(n, cli.suites()[0]);
        return;
    }
    if let Some(spec) = &cli.child_operation {
        child_operation(spec);
        return;
    }
    if cli.quick {
        cli.n = cli.n.min(200);
        cli.rows = cli.rows.min(100_000);
        cli.expired = cli.expired.min(1_000);
        cli.pairs = cli.pairs.min(7);
    }
    // The large pool spreads its rows over a year by dividing by their number.
    cli.rows = cli.rows.max(1);
    let env = Env::new();
    println!(
        "machine: {} cores; files in {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        env.dir().display()
    );
    if cli.erasure_only {
        erasure(&env, &cli);
        return;
    }
    if cli.operations_only {
        operations(&env, &cli);
        return;
    }
    #[cfg(feature = "sqlcipher")]
    if cli.encryption_only {
        encryption(&env, &cli);
        return;
    }
    for suite in cli.suites() {
        if cli.wal_only {
            wal_writes(&env, &cli, suite);
            continue;
        }
        if cli.queries_only {
            continue;
        }
        match suite {
            Suite::Classical => creation(&env, &cli),
            #[cfg(all(feature = "libcrux", feature = "draft-ietf-mls-pq-ciphersuites"))]
            Suite::XWing => x_wing_creation(&env, &cli),
        }
        batch_sizes(&env, &cli, suite);
        wal_writes(&env, &cli, suite);
        peak_memory(&cli, suite);
    }
    if !cli.wal_only && (cli.queries_only || cli.suites().contains(&Suite::Classical)) {
        queries(&env, &cli);
    }
    if !cli.wal_only && !cli.queries_only && cli.suites().contains(&Suite::Classical) {
        erasure(&env, &cli);
    }
}

impl Cli {
    /// The suites this run measures: the classical one unless only X-Wing
    /// was asked for, then X-Wing when the features are on.
    fn suites(&self) -> Vec<Suite> {
        #[cfg(all(feature = "libcrux", feature = "draft-ietf-mls-pq-ciphersuites"))]
        let suites = if self.x_wing_only {
            vec![Suite::XWing]
        } else {
            vec![Suite::Classical, Suite::XWing]
        };
        #[cfg(not(all(feature = "libcrux", feature = "draft-ietf-mls-pq-ciphersuites")))]
        let suites = vec![Suite::Classical];
        suites
    }
}

/// The KeyPackages a section of the report builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Suite {
    /// The default ciphersuite (0x0001) on `openmls_rust_crypto`.
    Classical,
    /// X-Wing (0x004D) on `openmls_libcrux_crypto`.
    #[cfg(all(feature = "libcrux", feature = "draft-ietf-mls-pq-ciphersuites"))]
    XWing,
}

impl Suite {
    fn name(self) -> &'static str {
        match self {
            Suite::Classical => "",
            #[cfg(all(feature = "libcrux", feature = "draft-ietf-mls-pq-ciphersuites"))]
            Suite::XWing => "X-Wing ",
        }
    }

    /// Runs this suite's scenario in `role` on `n` KeyPackages, timed.
    fn run(self, role: Role, env: &Env, n: usize) -> Duration {
        match self {
            Suite::Classical => match role {
                Role::Floor => Scenario::InMemory,
                Role::Generate => Scenario::Generate,
                Role::Parallel => Scenario::GenerateParallel2,
                Role::Ceiling => Scenario::InMemoryTwoThreads,
            }
            .run(env, n),
            #[cfg(all(feature = "libcrux", feature = "draft-ietf-mls-pq-ciphersuites"))]
            Suite::XWing => {
                use scenarios::x_wing::XWingScenario;
                match role {
                    Role::Floor => XWingScenario::InMemory,
                    Role::Generate => XWingScenario::Generate,
                    Role::Parallel => XWingScenario::GenerateParallel2,
                    Role::Ceiling => XWingScenario::InMemoryTwoThreads,
                }
                .run(env, n)
            }
        }
    }

    /// Opens a fresh file at `path`, empties its log, generates `n`
    /// KeyPackages in one batch and returns the log's bytes and the bytes
    /// written meanwhile (see [`wal_of_one_batch`]).
    fn wal_of_one_batch(self, env: &Env, path: &Path, n: usize) -> (Vec<u8>, Option<Written>) {
        match self {
            Suite::Classical => {
                let provider = PoolProvider::open(path).expect("open");
                wal_of_one_batch(&provider, &env.pool(&provider, n), path, n)
            }
            #[cfg(all(feature = "libcrux", feature = "draft-ietf-mls-pq-ciphersuites"))]
            Suite::XWing => {
                let provider = scenarios::x_wing::open(path);
                let pool = env.pool_in(scenarios::x_wing::CIPHERSUITE, &provider, n);
                wal_of_one_batch(&provider, &pool, path, n)
            }
        }
    }

    /// The arguments that make a child process generate in this suite.
    fn child_args(self, n: usize) -> Vec<String> {
        let child = ["--child-generate".to_owned(), n.to_string()];
        match self {
            Suite::Classical => child.to_vec(),
            #[cfg(all(feature = "libcrux", feature = "draft-ietf-mls-pq-ciphersuites"))]
            Suite::XWing => [&child[..], &["--x-wing-only".to_owned()]].concat(),
        }
    }
}

/// What a scenario stands for in a suite's targets.
#[derive(Debug, Clone, Copy)]
enum Role {
    /// In-memory storage on the suite's provider: the crypto's cost.
    Floor,
    /// `KeyPackagePool::generate` on a fresh file.
    Generate,
    /// `KeyPackagePool::generate_parallel` with two threads.
    Parallel,
    /// Two independent in-memory builders on two threads.
    Ceiling,
}

/// KeyPackages each scenario builds once, untimed, before it is measured.
const WARM_UP: usize = 20;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn per_kp_us(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

/// Commits the file system's pending metadata (of files earlier scenarios
/// created and deleted) before a scenario starts, so that the next
/// scenario's one `fsync` does not pay for the previous one's (on ext4, an
/// `fsync` commits the journal of the whole file system).
fn settle(env: &Env) {
    if let Ok(dir) = std::fs::File::open(env.dir()) {
        let _ = dir.sync_all();
    }
}

/// Runs every scenario once on a few KeyPackages untimed (the first run of
/// a provider pays for tables and caches the rest do not), then `runs` times
/// interleaved, so that a noisy moment hurts each alike, and returns each
/// one's median.
fn interleaved<S: Copy>(
    env: &Env,
    runs: usize,
    n: usize,
    all: &[S],
    run: impl Fn(S, usize) -> Duration,
) -> Vec<Duration> {
    for scenario in all {
        run(*scenario, WARM_UP);
    }
    let mut samples = vec![Vec::new(); all.len()];
    for _ in 0..runs.max(1) {
        for (i, scenario) in all.iter().enumerate() {
            settle(env);
            samples[i].push(run(*scenario, n));
        }
    }
    samples.into_iter().map(median).collect()
}

/// `b`'s time ÷ `a`'s, measured in `pairs` back-to-back pairs (which of the
/// two goes first alternates): the median of the pairs' ratios and the
/// middle half of them. Two runs a moment apart share the machine's mood,
/// so a pair's ratio cancels the slow swings that move every run on a
/// shared machine by a quarter or more; the median drops the pairs a burst
/// hit in one half only.
fn paired(env: &Env, pairs: usize, a: impl Fn() -> Duration, b: impl Fn() -> Duration) -> Ratio {
    let mut ratios: Vec<f64> = (0..pairs.max(1))
        .map(|i| {
            settle(env);
            let (ta, tb) = if i % 2 == 0 {
                let ta = a();
                settle(env);
                (ta, b())
            } else {
                let tb = b();
                settle(env);
                (a(), tb)
            };
            tb.as_secs_f64() / ta.as_secs_f64()
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    // The quartile at `q` quarters, interpolated between the two nearest
    // ratios.
    let at = |q: usize| {
        let pos = (ratios.len() - 1) as f64 * q as f64 / 4.0;
        let (below, above) = (pos.floor() as usize, pos.ceil() as usize);
        ratios[below] + (ratios[above] - ratios[below]) * (pos - below as f64)
    };
    Ratio {
        median: at(2),
        low: at(1),
        high: at(3),
        pairs: ratios.len(),
    }
}

/// A ratio of two scenarios' times over paired runs.
#[derive(Debug, Clone, Copy)]
struct Ratio {
    median: f64,
    /// The first and third quartiles of the pairs' ratios.
    low: f64,
    high: f64,
    pairs: usize,
}

impl std::fmt::Display for Ratio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.3} (middle half {:.3}–{:.3}, {} pairs)",
            self.median, self.low, self.high, self.pairs
        )
    }
}

/// Prints one scenario's row: its time per KeyPackage and against `floor`.
fn scenario_row(name: &str, t: Duration, n: usize, floor: Duration) {
    println!(
        "| {name} | {:.0} | {:.2}x |",
        per_kp_us(t, n),
        t.as_secs_f64() / floor.as_secs_f64()
    );
}

/// Starts a suite's targets table with the wall-clock targets every suite
/// is held to against its own floor and ceiling, each measured in
/// back-to-back pairs (see [`paired`]).
fn floor_targets(env: &Env, cli: &Cli, suite: Suite) {
    let (n, run) = (cli.n, |role| suite.run(role, env, cli.n));
    let generate = paired(env, cli.pairs, || run(Role::Floor), || run(Role::Generate));
    // A rate ratio: the ceiling's time ÷ generate_parallel's.
    let parallel = paired(
        env,
        cli.pairs,
        || run(Role::Parallel),
        || run(Role::Ceiling),
    );
    println!();
    println!(
        "| {}target ({n} KeyPackages) | measured | goal |",
        suite.name()
    );
    println!("| --- | ---: | ---: |");
    println!("| generate ÷ in-memory floor, wall clock | {generate} | ≤ 1.05 |");
    println!(
        "| generate_parallel(2 threads) rate ÷ 2 independent in-memory builders' rate | {parallel} | ≥ 0.95 |"
    );
}

fn creation(env: &Env, cli: &Cli) {
    let medians = interleaved(env, cli.runs, cli.n, &Scenario::ALL, |s, n| s.run(env, n));
    let time_of = |s: Scenario| medians[Scenario::ALL.iter().position(|x| *x == s).unwrap_or(0)];
    let floor = time_of(Scenario::InMemory);

    println!();
    println!(
        "## Creating {} KeyPackages (median of {} runs)",
        cli.n,
        cli.runs.max(1)
    );
    println!();
    println!("| scenario | µs per KeyPackage | time ÷ in-memory |");
    println!("| --- | ---: | ---: |");
    for scenario in Scenario::ALL {
        scenario_row(scenario.name().trim(), time_of(scenario), cli.n, floor);
    }
    let generate = time_of(Scenario::Generate);
    let ratio = |a: Scenario, b: Duration| time_of(a).as_secs_f64() / b.as_secs_f64();
    floor_targets(env, cli, Suite::Classical);
    println!(
        "| speed-up over openmls_sqlite_storage, commit per KeyPackage | {:.1}x | ≥ 7x |",
        ratio(Scenario::SqlitePerCommit, generate)
    );
    println!(
        "| speed-up over that + separate metadata file | {:.1}x | ≥ 14x |",
        ratio(Scenario::SqlitePlusMetadataFile, generate)
    );
}

/// X-Wing KeyPackages on `openmls_libcrux_crypto`, against libcrux's own
/// in-memory provider; the classical in-memory floor (`openmls_rust_crypto`,
/// the default ciphersuite) runs in the same rounds for scale.
#[cfg(all(feature = "libcrux", feature = "draft-ietf-mls-pq-ciphersuites"))]
fn x_wing_creation(env: &Env, cli: &Cli) {
    use scenarios::x_wing::XWingScenario;

    // The classical floor rides along as one more scenario.
    let all: Vec<Option<XWingScenario>> = XWingScenario::ALL
        .into_iter()
        .map(Some)
        .chain([None])
        .collect();
    let medians = interleaved(env, cli.runs, cli.n, &all, |s, n| match s {
        Some(s) => s.run(env, n),
        None => Scenario::InMemory.run(env, n),
    });
    let time_of =
        |s: XWingScenario| medians[XWingScenario::ALL.iter().position(|x| *x == s).unwrap_or(0)];
    let floor = time_of(XWingScenario::InMemory);
    let classical = medians[XWingScenario::ALL.len()];

    println!();
    println!(
        "## Creating {} X-Wing KeyPackages on openmls_libcrux_crypto (median of {} runs)",
        cli.n,
        cli.runs.max(1)
    );
    println!();
    println!("| scenario | µs per KeyPackage | time ÷ X-Wing in-memory |");
    println!("| --- | ---: | ---: |");
    for scenario in XWingScenario::ALL {
        scenario_row(scenario.name(), time_of(scenario), cli.n, floor);
    }
    scenario_row(
        "classical in-memory, openmls_rust_crypto (for scale)",
        classical,
        cli.n,
        floor,
    );
    floor_targets(env, cli, Suite::XWing);
}

fn batch_sizes(env: &Env, cli: &Cli, suite: Suite) {
    let sizes: &[usize] = if cli.quick {
        &[100, 1_000]
    } else {
        &[100, 1_000, 10_000]
    };
    println!();
    println!(
        "## {}generate: cost per KeyPackage by batch size",
        suite.name()
    );
    println!();
    println!("| batch | µs per KeyPackage | ÷ batch of 100 |");
    println!("| ---: | ---: | ---: |");
    suite.run(Role::Generate, env, WARM_UP);
    let mut base = None;
    for &n in sizes {
        // Fewer repetitions for the big batch: it is long enough alone.
        let runs = if n >= 10_000 { 1 } else { cli.runs.max(1) };
        let t = median(
            (0..runs)
                .map(|_| {
                    settle(env);
                    suite.run(Role::Generate, env, n)
                })
                .collect(),
        );
        let us = per_kp_us(t, n);
        let base_us = *base.get_or_insert(us);
        println!("| {n} | {us:.0} | {:.2}x |", us / base_us);
    }
}

/// What one `generate` batch writes to the write-ahead log: bytes per
/// KeyPackage, and whether it wrote any page more than once (a page the
/// cache spilled before the commit and changed again).
fn wal_writes(env: &Env, cli: &Cli, suite: Suite) {
    let sizes: &[usize] = if cli.quick {
        &[200, 1_000]
    } else {
        &[1_000, 10_000]
    };
    println!();
    println!(
        "## {}generate: what one batch writes to the WAL",
        suite.name()
    );
    println!();
    println!(
        "| batch | WAL frames | distinct pages | bytes per KeyPackage | pages written again |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: |");
    for &n in sizes {
        let (wal, written) = suite.wal_of_one_batch(env, &env.fresh_path("wal"), n);
        let Some(written) = written else {
            println!("| {n} | (no /proc/thread-self/io here) | | | |");
            continue;
        };
        let Some(batch) = WalBatch::read(&wal, written) else {
            println!("| {n} | (no WAL to read) | | | |");
            continue;
        };
        println!(
            "| {n} | {} | {} | {:.0} | {} |",
            batch.frames,
            batch.distinct_pages,
            batch.bytes as f64 / n as f64,
            batch.pages_written_again
        );
    }
}

/// Empties `provider`'s log, so that it holds this batch alone, generates
/// `n` KeyPackages in `pool` and returns the log file's bytes and what this
/// thread wrote meanwhile. Automatic checkpoints are off for the batch, so
/// what the thread writes goes to the log: the database file is not written
/// in WAL mode until a checkpoint, and the shared-memory index is mapped
/// (the few single bytes SQLite writes to grow it are far below a page, and
/// the count rounds to pages).
fn wal_of_one_batch<P: PoolCrypto>(
    provider: &PoolProvider<MessagePackCodec, P>,
    pool: &KeyPackagePool<'_, SignatureKeyPair, MessagePackCodec, P>,
    path: &Path,
    n: usize,
) -> (Vec<u8>, Option<Written>) {
    let conn = &*provider.storage().connection();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    conn.query_row("PRAGMA wal_autocheckpoint = 0", [], |_| Ok(()))
        .expect("autocheckpoint");
    let before = Written::now();
    pool.generate(n).expect("generate");
    let written = Written::now()
        .zip(before)
        .map(|(after, before)| after.since(before));
    let wal = std::fs::read(format!("{}-wal", path.display())).unwrap_or_default();
    (wal, written)
}

fn peak_memory(cli: &Cli, suite: Suite) {
    let Ok(exe) = std::env::current_exe() else {
        println!("(peak memory skipped: cannot find own executable)");
        return;
    };
    let large = if cli.quick { 2_000 } else { 10_000 };
    // The child's peak in KiB, or why there is none.
    let measure = |n: usize| -> Result<u64, String> {
        let output = std::process::Command::new(&exe)
            .args(suite.child_args(n))
            .output()
            .map_err(|e| format!("cannot start a child process: {e}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        stdout.trim().parse().map_err(|_| {
            format!(
                "the child generating {n} ({}) printed no peak: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )
        })
    };
    println!();
    println!(
        "## {}generate: peak resident memory of a process",
        suite.name()
    );
    println!();
    match (measure(100), measure(large)) {
        (Ok(small), Ok(big)) => {
            println!("| batch | peak RSS (KiB) |");
            println!("| ---: | ---: |");
            println!("| 100 | {small} |");
            println!("| {large} | {big} |");
            println!();
            println!(
                "{large} ÷ 100: {:.2}x (goal ≤ 2x)",
                big as f64 / small as f64
            );
        }
        (Err(why), _) | (_, Err(why)) => println!("(peak memory unavailable: {why})"),
    }
}

fn child_generate(n: usize, suite: Suite) {
    let env = Env::new();
    let _ = suite.run(Role::Generate, &env, n);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(kib) = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    {
        println!("{kib}");
    }
}

/// Median wall time of `f` over `reps` calls.
fn per_call(reps: usize, mut f: impl FnMut()) -> Duration {
    median(
        (0..reps)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed()
            })
            .collect(),
    )
}

fn queries(env: &Env, cli: &Cli) {
    let path = env.fresh_path("large");
    let seeding = Instant::now();
    let (storage, now) = large_pool(env, &path, cli.rows, cli.expired);
    let seeded_in = seeding.elapsed();
    let provider = PoolProvider::new(storage);
    let pool = scenarios::unbounded_pool(env, &provider);
    let storage = provider.storage();

    let count = per_call(200, || {
        storage
            .count_by_status(KeyPackageStatus::Available)
            .expect("count");
    });
    let health = per_call(200, || {
        pool.health(now).expect("health");
    });
    // Expired sets of two sizes: the real KeyPackages alone, and ten times
    // as many including seeded rows.
    let year = 365 * 86_400i64;
    let start = now - 2 * 86_400;
    let wider = start + 3 * 86_400 + (9 * cli.expired as i64 * year) / cli.rows as i64;
    let small_set = storage.get_expired_refs(now).expect("expired").len();
    let large_set = storage.get_expired_refs(wider).expect("expired").len();
    let small_t = per_call(10, || {
        storage.get_expired_refs(now).expect("expired");
    });
    let large_t = per_call(10, || {
        storage.get_expired_refs(wider).expect("expired");
    });
    let prune_start = Instant::now();
    let pruned = pool.prune_expired(now).expect("prune").len();
    let prune = prune_start.elapsed();
    let health_after = per_call(200, || {
        pool.health(now).expect("health");
    });

    println!();
    println!(
        "## Queries on a pool of {} metadata rows (seeded in {:.1} s)",
        cli.rows + cli.expired,
        seeded_in.as_secs_f64()
    );
    println!();
    println!("| operation | time | goal |");
    println!("| --- | ---: | ---: |");
    println!(
        "| count_by_status | {:.1} µs | < 1 ms |",
        count.as_secs_f64() * 1e6
    );
    println!(
        "| health, {} expired KeyPackages awaiting prune | {:.1} µs | < 1 ms |",
        cli.expired,
        health.as_secs_f64() * 1e6
    );
    println!(
        "| get_expired_refs, {small_set} returned | {:.2} ms ({:.2} µs each) | proportional |",
        small_t.as_secs_f64() * 1e3,
        per_kp_us(small_t, small_set.max(1))
    );
    println!(
        "| get_expired_refs, {large_set} returned | {:.2} ms ({:.2} µs each) | proportional |",
        large_t.as_secs_f64() * 1e3,
        per_kp_us(large_t, large_set.max(1))
    );
    println!(
        "| prune_expired, {pruned} KeyPackages in one transaction | {:.3} s | < 1 s |",
        prune.as_secs_f64()
    );
    println!(
        "| health, after the prune | {:.1} µs | < 1 ms |",
        health_after.as_secs_f64() * 1e6
    );
}

/// What the erasure policies cost per decrypted message: a member receives
/// `n` messages in one epoch, each its own commit, on each kind of storage,
/// beside the in-memory floor and the cost of one durable commit.
fn erasure(env: &Env, cli: &Cli) {
    let n = cli.n;
    println!(
        "\n## Decrypting {n} messages, one commit each (medians of {} interleaved runs)\n",
        cli.runs
    );
    println!("| receiver | µs per message | ÷ in-memory | ÷ `Deletions` |");
    println!("| --- | ---: | ---: | ---: |");
    let all = Receiver::ALL;
    let times = interleaved(env, cli.runs, n, &all, |receiver, n| receiver.run(env, n));
    let time_of = |r: Receiver| times[all.iter().position(|x| *x == r).unwrap_or(0)];
    let floor = time_of(Receiver::InMemory);
    let deletions = time_of(Receiver::PoolDeletions);
    for (receiver, t) in all.iter().zip(&times) {
        println!(
            "| {} | {:.0} | {:.2}x | {:.2}x |",
            receiver.name(),
            per_kp_us(*t, n),
            t.as_secs_f64() / floor.as_secs_f64(),
            t.as_secs_f64() / deletions.as_secs_f64()
        );
    }
    let ratio = paired(
        env,
        cli.pairs,
        || Receiver::PoolDeletions.run(env, n),
        || Receiver::PoolDefault.run(env, n),
    );
    println!("\ndefault policy ÷ `Deletions`, {n} messages, paired: {ratio} (goal ≤ 1.05)");
    // A burst of this many takes longer than the 2-second bound, so the
    // eraser runs inside it at least once: its checkpoint is in the figure.
    let long = 10 * n;
    let ratio = paired(
        env,
        cli.pairs.div_ceil(3),
        || Receiver::PoolDeletions.run(env, long),
        || Receiver::PoolDefault.run(env, long),
    );
    println!("default policy ÷ `Deletions`, {long} messages, paired: {ratio}");
}

/// What encryption at rest costs, all in one run: opening an existing
/// encrypted database with a raw key and with a passphrase (PBKDF2, 256,000
/// rounds) against opening a plain one, and `generate(n)` on an encrypted
/// file against a plain one, in back-to-back pairs.
#[cfg(feature = "sqlcipher")]
fn encryption(env: &Env, cli: &Cli) {
    use openmls_keypackage_pool::{DatabaseKey, PoolStorage};

    let key = || DatabaseKey::from_bytes([0x4b; 32]);
    let passphrase = "a passphrase of the usual kind";
    let plain = env.fresh_path("plain");
    let raw = env.fresh_path("raw");
    let derived = env.fresh_path("passphrase");
    // Each holds one pool of a few KeyPackages, so an open reads a schema
    // and pages like a client's.
    for provider in [
        PoolProvider::new(PoolStorage::open(&plain).expect("open")),
        PoolProvider::new(PoolStorage::open_with_key(&raw, &key()).expect("open")),
        PoolProvider::new(PoolStorage::open_encrypted(&derived, passphrase).expect("open")),
    ] {
        env.pool(&provider, 8).generate(8).expect("generate");
    }
    let open = |f: &dyn Fn()| {
        let started = Instant::now();
        f();
        started.elapsed()
    };
    let opens = 21;
    let median_of = |f: &dyn Fn() -> Duration| median((0..opens).map(|_| f()).collect());
    let t_plain = median_of(&|| open(&|| drop(PoolStorage::open(&plain).expect("open"))));
    let t_raw =
        median_of(&|| open(&|| drop(PoolStorage::open_with_key(&raw, &key()).expect("open"))));
    let t_derived = median_of(&|| {
        open(&|| drop(PoolStorage::open_encrypted(&derived, passphrase).expect("open")))
    });
    println!("\n## Encryption at rest (medians of {opens} opens; generation in pairs)\n");
    println!("| operation | time | ÷ plain |");
    println!("| --- | ---: | ---: |");
    for (name, t) in [
        ("open an existing database, plain", t_plain),
        ("open it encrypted, raw key", t_raw),
        ("open it encrypted, passphrase", t_derived),
    ] {
        println!(
            "| {name} | {:.2} ms | {:.2}x |",
            t.as_secs_f64() * 1e3,
            t.as_secs_f64() / t_plain.as_secs_f64()
        );
    }
    let n = cli.n;
    let generate = |path: std::path::PathBuf, encrypted: bool| {
        let storage = if encrypted {
            PoolStorage::open_with_key(&path, &key()).expect("open")
        } else {
            PoolStorage::open(&path).expect("open")
        };
        let provider = PoolProvider::new(storage);
        let pool = env.pool(&provider, n);
        let started = Instant::now();
        pool.generate(n).expect("generate");
        started.elapsed()
    };
    let ratio = paired(
        env,
        cli.pairs,
        || generate(env.fresh_path("gen-plain"), false),
        || generate(env.fresh_path("gen-encrypted"), true),
    );
    println!("\n`generate({n})`, encrypted with a raw key ÷ plain, paired: {ratio}");
}

/// The marker `strace` sees around a child's timed operations: a system
/// call nothing else here makes.
fn mark() {
    let _ = std::os::unix::process::parent_id();
}

/// Runs `OPERATION:MODE:N` between two markers.
fn child_operation(spec: &str) {
    let parts: Vec<&str> = spec.split(':').collect();
    let (Some(op), Some(mode), Some(n)) = (
        parts
            .first()
            .and_then(|id| Operation::ALL.into_iter().find(|o| o.id() == *id)),
        parts.get(1).and_then(|id| Mode::from_id(id)),
        parts.get(2).and_then(|n| n.parse::<usize>().ok()),
    ) else {
        eprintln!("bad --child-operation {spec}");
        std::process::exit(2);
    };
    let env = Env::new();
    operations::measure(&env, op, mode, n, &mark);
}

/// Syncs to disk (`fsync` and `fdatasync`, every thread) per operation,
/// counted by `strace` in a child between its markers; `None` without
/// `strace`.
fn syncs_per_op(op: Operation, mode: Mode, n: usize) -> Option<f64> {
    let exe = std::env::current_exe().ok()?;
    let log = tempfile::NamedTempFile::new().ok()?;
    let status = std::process::Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=fsync,fdatasync,getppid", "-o"])
        .arg(log.path())
        .arg(exe)
        .arg("--child-operation")
        .arg(format!("{}:{}:{n}", op.id(), mode.id()))
        .stdout(std::process::Stdio::null())
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    let text = std::fs::read_to_string(log.path()).ok()?;
    let mut markers = 0;
    let mut syncs = 0;
    for line in text.lines() {
        if line.contains("getppid(") {
            markers += 1;
        } else if markers == 1 && (line.contains("fsync(") || line.contains("fdatasync(")) {
            syncs += 1;
        }
    }
    (markers >= 2).then(|| syncs as f64 / n as f64)
}

fn operations(env: &Env, cli: &Cli) {
    let n = cli.n.min(100);
    let traced = 10;
    println!(
        "\n## One OpenMLS operation: bare calls, or in one transaction ({n} operations each, medians of {} runs; syncs counted by strace over {traced})\n",
        cli.runs
    );
    let append = median(
        (0..cli.runs)
            .map(|_| Receiver::AppendAndSync.run(env, n))
            .collect(),
    );
    println!(
        "one 4 KiB append + `fdatasync`: {:.0} µs\n",
        per_kp_us(append, n)
    );
    println!("| operation | storage | µs per operation | ÷ in memory | commits | syncs |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    for op in Operation::ALL {
        let mut floor = None;
        for mode in Mode::ALL {
            let runs: Vec<_> = (0..cli.runs)
                .map(|_| operations::measure(env, op, mode, n, &|| ()))
                .collect();
            let time = median(runs.iter().map(|m| m.elapsed).collect());
            let floor = *floor.get_or_insert(time);
            let commits = runs[0].commits as f64 / n as f64;
            let syncs = match mode {
                Mode::Floor => "-".to_owned(),
                _ => syncs_per_op(op, mode, traced).map_or("n/a".to_owned(), |s| format!("{s:.1}")),
            };
            let storage = match mode {
                Mode::Floor => "OpenMLS in memory (floor)",
                Mode::Bare => "this crate, bare calls",
                Mode::Wrapped => "this crate, in a transaction",
            };
            println!(
                "| {} | {storage} | {:.0} | {:.2}x | {} | {syncs} |",
                op.name(),
                per_kp_us(time, n),
                time.as_secs_f64() / floor.as_secs_f64(),
                if mode == Mode::Floor {
                    "-".to_owned()
                } else {
                    format!("{commits:.1}")
                },
            );
        }
    }

    let backlog = 1000;
    let pool = median(
        (0..cli.runs)
            .map(|_| operations::backlog(env, backlog, true))
            .collect(),
    );
    let memory = median(
        (0..cli.runs)
            .map(|_| operations::backlog(env, backlog, false))
            .collect(),
    );
    println!(
        "\nbacklog of {backlog} messages in one `transaction`, a `group_transaction` each: {:.0} µs per message, in memory {:.0} µs: {:.2}x (goal ≤ 1.3)",
        per_kp_us(pool, backlog),
        per_kp_us(memory, backlog),
        pool.as_secs_f64() / memory.as_secs_f64()
    );

    // Back-to-back pairs, the order alternating, so that the disk's swings
    // fall on both sides alike; the median of the pairs' ratios.
    let (threads, messages) = (4, n);
    let mut ratios = Vec::new();
    let (mut shared, mut separate) = (Vec::new(), Vec::new());
    for pair in 0..cli.pairs.max(1) {
        let (s, p) = if pair % 2 == 0 {
            let s = operations::threads(env, threads, messages, true);
            (s, operations::threads(env, threads, messages, false))
        } else {
            let p = operations::threads(env, threads, messages, false);
            (operations::threads(env, threads, messages, true), p)
        };
        ratios.push(s.as_secs_f64() / p.as_secs_f64());
        shared.push(s);
        separate.push(p);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "{threads} threads, {messages} messages each in a `group_transaction`: one shared provider {:.0} ms, a provider each {:.0} ms (medians); shared ÷ separate, median of {} pairs: {:.2}x (goal ≤ 1.00)",
        median(shared).as_secs_f64() * 1e3,
        median(separate).as_secs_f64() * 1e3,
        cli.pairs,
        ratios[ratios.len() / 2]
    );
}
