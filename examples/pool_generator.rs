//! Keeps a KeyPackage pool database topped up, and shows its health.
//!
//! ```sh
//! cargo run --release --example pool_generator -- --db pool.db --count 32
//! ```
//!
//! Opens (or creates) the database, creates or reuses the user's signing
//! identity, prunes expired KeyPackages, keeps one last-resort KeyPackage,
//! tops the pool up so that usable plus pending KeyPackages reach `--count`,
//! and prints a health table (or JSON). Running it again reuses the pool
//! rather than growing it.

use std::{process::ExitCode, time::SystemTime};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_keypackage_pool::{
    KeyPackagePool, KeyPackageStatus, LastResortReport, PoolAction, PoolConfig, PoolHealth,
    PoolProvider, MAX_LIFETIME_SECS,
};

/// Generates one-time MLS KeyPackages into a SQLite pool and reports its
/// health.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The pool database file; created if missing.
    #[arg(long, default_value = "pool.db")]
    db: std::path::PathBuf,

    /// How many usable-or-pending one-time KeyPackages the pool should hold.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    count: u32,

    /// The local user whose identity signs the KeyPackages; created on first
    /// use and reused afterwards.
    #[arg(long, default_value = "pool-generator")]
    user: String,

    /// Lifetime of new KeyPackages, in days (at most 84).
    #[arg(long, default_value_t = 14, value_parser = clap::value_parser!(u64).range(1..=MAX_LIFETIME_SECS / 86_400))]
    lifetime_days: u64,

    /// Mark every KeyPackage still waiting for upload as uploaded, as a
    /// client would after a successful upload to its server.
    #[arg(long)]
    mark_uploaded: bool,

    /// Print the health report as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let message = e.to_string();
            let first = message.lines().next().unwrap_or("invalid arguments");
            eprintln!("{first} (see --help)");
            return ExitCode::from(2);
        }
    };
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<(), String> {
    let provider = PoolProvider::open(&cli.db)
        .map_err(|e| format!("cannot open pool database {}: {e}", cli.db.display()))?;
    // A watermark at the target: every run tops the pool up to --count.
    // KeyPackages are replaced two days before expiry, or half-way through a
    // shorter life.
    let config = PoolConfig {
        target_size: cli.count as usize,
        low_watermark: cli.count as usize,
        hard_cap: cli.count as usize * 2,
        ..PoolConfig::default()
    }
    .with_lifetime_secs(cli.lifetime_days * 86_400);
    let (signer, reused) = identity(&provider, &cli.user, config.ciphersuite)?;
    let credential = CredentialWithKey {
        credential: BasicCredential::new(cli.user.as_bytes().to_vec()).into(),
        signature_key: signer.public().into(),
    };
    let pool =
        KeyPackagePool::new(&provider, &signer, credential, config).map_err(|e| e.to_string())?;

    let now = unix_now()?;
    let pruned = pool.prune_expired(now).map_err(|e| e.to_string())?;
    let last_resort = pool.ensure_last_resort(now).map_err(|e| e.to_string())?;
    let generated = replenish(&pool, cli.json)?;
    if cli.mark_uploaded {
        let pending = pool.pending_upload().map_err(|e| e.to_string())?;
        for unreadable in &pending.unreadable {
            eprintln!("not uploaded: {}", unreadable.error);
        }
        pool.mark_uploaded(&pending.ready_refs())
            .map_err(|e| e.to_string())?;
    }
    let health = pool.health(now).map_err(|e| e.to_string())?;

    let run = Run {
        db: &cli.db.display().to_string(),
        user: &cli.user,
        identity_reused: reused,
        pruned: pruned.len(),
        last_resort: last_resort_outcome(&last_resort),
        generated,
        hard_cap: pool.config().hard_cap,
        now,
    };
    if cli.json {
        println!("{}", to_json(&run, &health));
    } else {
        print_table(&run, &health);
    }
    Ok(())
}

/// Reads the user's signature key pair back from OpenMLS storage, or makes
/// and stores one. Returns whether it was reused.
fn identity(
    provider: &PoolProvider,
    user: &str,
    ciphersuite: Ciphersuite,
) -> Result<(SignatureKeyPair, bool), String> {
    let storage = provider.storage();
    let scheme = ciphersuite.signature_algorithm();
    if let Some(public_key) = storage.load_public_key(user).map_err(|e| e.to_string())? {
        if let Some(pair) = SignatureKeyPair::read(storage, &public_key, scheme) {
            return Ok((pair, true));
        }
    }
    let pair = SignatureKeyPair::new(scheme).map_err(|e| format!("key generation: {e:?}"))?;
    storage
        .transaction(|storage| {
            pair.store(storage)?;
            storage.save_identity(user, pair.public())
        })
        .map_err(|e| format!("storing the identity: {e}"))?;
    Ok((pair, false))
}

fn replenish(pool: &KeyPackagePool<'_, SignatureKeyPair>, quiet: bool) -> Result<usize, String> {
    let bar = ProgressBar::hidden();
    bar.set_style(
        ProgressStyle::with_template("generating {bar:40} {pos}/{len} KeyPackages ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let refs = pool
        .replenish_with_progress(|done, total| {
            // Only worth a bar when there is more than a moment's work.
            if done == 1 && !quiet && total > 4 {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                bar.set_length(total as u64);
            }
            bar.set_position(done as u64);
        })
        .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    Ok(refs.len())
}

struct Run<'a> {
    db: &'a str,
    user: &'a str,
    identity_reused: bool,
    pruned: usize,
    last_resort: &'static str,
    generated: usize,
    hard_cap: usize,
    now: i64,
}

fn print_table(run: &Run<'_>, health: &PoolHealth) {
    println!("pool database  {}", run.db);
    println!(
        "identity       {} ({})",
        run.user,
        if run.identity_reused { "reused" } else { "new" }
    );
    let generated = match run.generated {
        0 => "nothing needed building".to_owned(),
        n => format!("generated {n}"),
    };
    println!(
        "this run       {generated}, pruned {}, last resort {}",
        run.pruned, run.last_resort
    );
    println!();
    println!("{:<12}{:>8}", "status", "count");
    for status in KeyPackageStatus::ALL {
        println!("{:<12}{:>8}", status.as_str(), health.count(status));
    }
    println!();
    println!("pending upload (created)       {}", health.pending_upload);
    println!("usable (uploaded + available)  {}", health.usable);
    println!("live one-time KeyPackages      {}", health.live);
    println!(
        "one-time keys on disk          {} (hard cap {})",
        health.held, run.hard_cap
    );
    println!(
        "last resort                    {}",
        match (health.has_last_resort, health.last_resort_pending) {
            (true, _) => "on the server",
            (false, true) => "built, waiting for upload",
            (false, false) => "missing",
        }
    );
    println!("expiring within horizon        {}", health.expiring_soon);
    match health.next_expiry {
        Some(t) => println!(
            "next expiry                    in {:.1} days (unix {t})",
            t.saturating_sub(run.now) as f64 / 86_400.0
        ),
        None => println!("next expiry                    -"),
    }
    let actions: Vec<String> = health.actions.iter().map(describe).collect();
    println!(
        "next steps                     {}",
        if actions.is_empty() {
            "none: the pool is healthy".to_owned()
        } else {
            actions.join(", then ")
        }
    );
}

fn to_json(run: &Run<'_>, health: &PoolHealth) -> serde_json::Value {
    let counts: serde_json::Map<_, _> = KeyPackageStatus::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), health.count(*s).into()))
        .collect();
    serde_json::json!({
        "db": run.db,
        "user": run.user,
        "identity_reused": run.identity_reused,
        "generated": run.generated,
        "pruned": run.pruned,
        "last_resort": run.last_resort,
        "counts": counts,
        "usable": health.usable,
        "live": health.live,
        "held": health.held,
        "has_last_resort": health.has_last_resort,
        "last_resort_pending": health.last_resort_pending,
        "hard_cap": run.hard_cap,
        "expiring_soon": health.expiring_soon,
        "pending_upload": health.pending_upload,
        "next_expiry": health.next_expiry,
        "prunable": health.prunable,
        "recommended": format!("{:?}", health.recommended),
        "actions": health.actions.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>(),
    })
}

/// What `ensure_last_resort` did, in a word.
fn last_resort_outcome(report: &LastResortReport) -> &'static str {
    match (&report.created, &report.retried) {
        (Some(_), _) => "created",
        (None, Some(_)) => "retried",
        (None, None) => "kept",
    }
}

/// One action, as the table shows it.
fn describe(action: &PoolAction) -> String {
    match action {
        PoolAction::None => "nothing".to_owned(),
        PoolAction::Prune(n) => format!("prune {n} expired"),
        PoolAction::CreateLastResort => "create a last-resort KeyPackage".to_owned(),
        PoolAction::Replenish(n) => format!("replenish {n}"),
        PoolAction::CapReached(n) => {
            format!("make room: the hard cap keeps {n} from being built")
        }
        PoolAction::ReplaceLastResort => "replace the expiring last-resort KeyPackage".to_owned(),
        PoolAction::Upload(n) => format!("upload {n}"),
        other => format!("{other:?}"),
    }
}

fn unix_now() -> Result<i64, String> {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .map_err(|_| "the system clock is set before 1970".to_owned())
}
