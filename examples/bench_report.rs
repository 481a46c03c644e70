//! Runs the benchmark comparisons once, quickly, and prints the ratios the
//! README quotes.
//!
//! ```sh
//! cargo run --release --example bench_report            # a few minutes
//! cargo run --release --example bench_report -- --quick # smaller sizes, no 1M-row pool
//! # with X-Wing pools on openmls_libcrux_crypto as well:
//! cargo run --release --features libcrux,draft-ietf-mls-pq-ciphersuites --example bench_report
//! ```
//!
//! Times are medians of a few interleaved runs in one process; compare the
//! ratios, which hold across machines far better than the absolute figures.

#[path = "../benches/scenarios/mod.rs"]
mod scenarios;

use std::time::{Duration, Instant};

use clap::Parser;
use openmls_keypackage_pool::{KeyPackagePool, KeyPackageStatus, PoolConfig, PoolProvider};
use scenarios::{large_pool, Env, Scenario};

/// Measures KeyPackage creation and pool queries and prints ratios.
#[derive(Debug, Parser)]
struct Cli {
    /// KeyPackages per creation run.
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// Runs per scenario; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
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
    /// Only the X-Wing creation figures.
    #[cfg(all(feature = "libcrux", feature = "draft-ietf-mls-pq-ciphersuites"))]
    #[arg(long)]
    x_wing_only: bool,
    /// Internal: generate this many KeyPackages in a fresh pool and print
    /// the process's peak resident memory in KiB.
    #[arg(long, hide = true)]
    child_generate: Option<usize>,
}

fn main() {
    let mut cli = Cli::parse();
    if let Some(n) = cli.child_generate {
        child_generate(n);
        return;
    }
    if cli.quick {
        cli.n = cli.n.min(200);
        cli.rows = cli.rows.min(100_000);
        cli.expired = cli.expired.min(1_000);
    }
    let env = Env::new();
    println!(
        "machine: {} cores; files in {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        env.dir().display()
    );
    #[cfg(all(feature = "libcrux", feature = "draft-ietf-mls-pq-ciphersuites"))]
    {
        if !cli.queries_only {
            x_wing_creation(&env, &cli);
        }
        if cli.x_wing_only {
            return;
        }
    }
    if cli.wal_only {
        wal_writes(&env, &cli);
        return;
    }
    if !cli.queries_only {
        creation(&env, &cli);
        batch_sizes(&env, &cli);
        wal_writes(&env, &cli);
        peak_memory(&cli);
    }
    queries(&env, &cli);
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn per_kp_us(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

fn creation(env: &Env, cli: &Cli) {
    let runs = cli.runs.max(1);
    let mut samples = vec![Vec::new(); Scenario::ALL.len()];
    // Interleaved, so that a noisy moment hurts every scenario alike.
    for _ in 0..runs {
        for (i, scenario) in Scenario::ALL.iter().enumerate() {
            samples[i].push(scenario.run(env, cli.n));
        }
    }
    let medians: Vec<Duration> = samples.into_iter().map(median).collect();
    let time_of = |s: Scenario| medians[Scenario::ALL.iter().position(|x| *x == s).unwrap_or(0)];
    let floor = time_of(Scenario::InMemory);

    println!();
    println!("## Creating {} KeyPackages (median of {runs} runs)", cli.n);
    println!();
    println!("| scenario | µs per KeyPackage | time ÷ in-memory |");
    println!("| --- | ---: | ---: |");
    for scenario in Scenario::ALL {
        let t = time_of(scenario);
        println!(
            "| {} | {:.0} | {:.2}x |",
            scenario.name().trim(),
            per_kp_us(t, cli.n),
            t.as_secs_f64() / floor.as_secs_f64()
        );
    }
    let generate = time_of(Scenario::Generate);
    let ratio = |a: Scenario, b: Duration| time_of(a).as_secs_f64() / b.as_secs_f64();
    println!();
    println!("| target | measured | goal |");
    println!("| --- | ---: | ---: |");
    println!(
        "| generate ÷ in-memory | {:.3}x | ≤ 1.03x |",
        generate.as_secs_f64() / floor.as_secs_f64()
    );
    println!(
        "| speed-up over openmls_sqlite_storage, commit per KeyPackage | {:.1}x | ≥ 7x |",
        ratio(Scenario::SqlitePerCommit, generate)
    );
    println!(
        "| speed-up over that + separate metadata file | {:.1}x | ≥ 14x |",
        ratio(Scenario::SqlitePlusMetadataFile, generate)
    );
    println!(
        "| generate_parallel(2 threads) rate ÷ in-memory rate | {:.2}x | ≥ 1.8x |",
        floor.as_secs_f64() / time_of(Scenario::GenerateParallel2).as_secs_f64()
    );
    println!(
        "| generate_parallel(2 threads) rate ÷ 2 independent in-memory builders' rate | {:.3} | ≥ 0.95 |",
        time_of(Scenario::InMemoryTwoThreads).as_secs_f64()
            / time_of(Scenario::GenerateParallel2).as_secs_f64()
    );
}

/// X-Wing KeyPackages on `openmls_libcrux_crypto`, against libcrux's own
/// in-memory provider; the classical in-memory floor (`openmls_rust_crypto`,
/// the default ciphersuite) runs in the same rounds for scale.
#[cfg(all(feature = "libcrux", feature = "draft-ietf-mls-pq-ciphersuites"))]
fn x_wing_creation(env: &Env, cli: &Cli) {
    use scenarios::x_wing::XWingScenario;

    let runs = cli.runs.max(1);
    let mut samples = vec![Vec::new(); XWingScenario::ALL.len()];
    let mut classical = Vec::new();
    // Interleaved, as in `creation`.
    for _ in 0..runs {
        for (i, scenario) in XWingScenario::ALL.iter().enumerate() {
            samples[i].push(scenario.run(env, cli.n));
        }
        classical.push(Scenario::InMemory.run(env, cli.n));
    }
    let medians: Vec<Duration> = samples.into_iter().map(median).collect();
    let classical = median(classical);
    let floor = medians[0];

    println!();
    println!(
        "## Creating {} X-Wing KeyPackages on openmls_libcrux_crypto (median of {runs} runs)",
        cli.n
    );
    println!();
    println!("| scenario | µs per KeyPackage | time ÷ X-Wing in-memory |");
    println!("| --- | ---: | ---: |");
    for (scenario, t) in XWingScenario::ALL.iter().zip(&medians) {
        println!(
            "| {} | {:.0} | {:.2}x |",
            scenario.name(),
            per_kp_us(*t, cli.n),
            t.as_secs_f64() / floor.as_secs_f64()
        );
    }
    println!(
        "| classical in-memory, openmls_rust_crypto (for scale) | {:.0} | {:.2}x |",
        per_kp_us(classical, cli.n),
        classical.as_secs_f64() / floor.as_secs_f64()
    );
    println!();
    println!(
        "generate_parallel (2 threads) rate ÷ X-Wing in-memory rate: {:.2}x",
        floor.as_secs_f64() / medians[2].as_secs_f64()
    );
}

fn batch_sizes(env: &Env, cli: &Cli) {
    let sizes: &[usize] = if cli.quick {
        &[100, 1_000]
    } else {
        &[100, 1_000, 10_000]
    };
    println!();
    println!("## generate: cost per KeyPackage by batch size");
    println!();
    println!("| batch | µs per KeyPackage | ÷ batch of 100 |");
    println!("| ---: | ---: | ---: |");
    let mut base = None;
    for &n in sizes {
        // Fewer repetitions for the big batch: it is long enough alone.
        let runs = if n >= 10_000 { 1 } else { cli.runs.max(1) };
        let t = median((0..runs).map(|_| Scenario::Generate.run(env, n)).collect());
        let us = per_kp_us(t, n);
        let base_us = *base.get_or_insert(us);
        println!("| {n} | {us:.0} | {:.2}x |", us / base_us);
    }
}

/// What one `generate` batch writes to the write-ahead log: bytes per
/// KeyPackage, and how many pages it wrote more than once (a page the cache
/// spilled before the commit and changed again).
fn wal_writes(env: &Env, cli: &Cli) {
    let sizes: &[usize] = if cli.quick {
        &[200, 1_000]
    } else {
        &[1_000, 10_000]
    };
    println!();
    println!("## generate: what one batch writes to the WAL");
    println!();
    println!("| batch | WAL frames | distinct pages | bytes per KeyPackage | pages written twice or more |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    for &n in sizes {
        let path = env.fresh_path("wal");
        let provider = PoolProvider::open(&path).expect("open");
        // Start from an empty log, so that it holds this batch alone.
        provider
            .storage()
            .connection()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .expect("checkpoint");
        let pool = env.pool(&provider, n);
        pool.generate(n).expect("generate");
        let wal = std::fs::read(format!("{}-wal", path.display())).unwrap_or_default();
        let Some((frames, distinct)) = wal_frames(&wal) else {
            println!("| {n} | (no WAL to read) | | | |");
            continue;
        };
        println!(
            "| {n} | {frames} | {distinct} | {:.0} | {} |",
            wal.len() as f64 / n as f64,
            frames - distinct
        );
    }
}

/// The number of frames in a WAL file and of distinct pages among them
/// (SQLite's WAL format: a 32-byte header holding the page size at bytes
/// 8..12, then frames of a 24-byte header, page number first, and a page).
fn wal_frames(wal: &[u8]) -> Option<(usize, usize)> {
    let page_size = u32::from_be_bytes(wal.get(8..12)?.try_into().ok()?) as usize;
    let frame = 24 + page_size;
    let mut pages = std::collections::HashSet::new();
    let mut frames = 0;
    for start in (32..wal.len()).step_by(frame) {
        let page = wal.get(start..start + 4)?;
        // A frame of zeros past the end of what this batch wrote.
        if page == [0, 0, 0, 0] {
            break;
        }
        frames += 1;
        pages.insert(page.to_vec());
    }
    Some((frames, pages.len()))
}

fn peak_memory(cli: &Cli) {
    let Ok(exe) = std::env::current_exe() else {
        println!("(peak memory skipped: cannot find own executable)");
        return;
    };
    let large = if cli.quick { 2_000 } else { 10_000 };
    let measure = |n: usize| -> Option<u64> {
        let output = std::process::Command::new(&exe)
            .args(["--child-generate", &n.to_string()])
            .output()
            .ok()?;
        String::from_utf8(output.stdout).ok()?.trim().parse().ok()
    };
    println!();
    println!("## generate: peak resident memory of a process");
    println!();
    match (measure(100), measure(large)) {
        (Some(small), Some(big)) => {
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
        _ => println!("(peak memory unavailable: no /proc/self/status here)"),
    }
}

fn child_generate(n: usize) {
    let env = Env::new();
    let provider = PoolProvider::open(env.fresh_path("memory")).expect("open");
    let config = PoolConfig {
        target_size: n,
        low_watermark: 0,
        hard_cap: n,
        ..PoolConfig::default()
    };
    KeyPackagePool::new(&provider, &env.signer, env.credential.clone(), config)
        .expect("pool")
        .generate(n)
        .expect("generate");
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
