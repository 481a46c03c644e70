//! Keeps KeyPackage pools in a database topped up, and shows their health.
//!
//! ```sh
//! cargo run --release --example pool_generator -- --db pool.db --count 32
//! cargo run --release --example pool_generator -- --db pool.db --user bob \
//!     --ciphersuite 0x0001 --ciphersuite MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519
//! cargo run --release --example pool_generator --features libcrux,draft-ietf-mls-pq-ciphersuites \
//!     -- --db pq.db --ciphersuite MLS_256_XWING_CHACHA20POLY1305_SHA256_Ed25519
//! # The same user's key presenting a renewed credential:
//! cargo run --release --example pool_generator -- --db pool.db --user bob --identity bob@2027
//! ```
//!
//! Opens (or creates) the database, creates or reuses the user's signing
//! identity, and for each `--ciphersuite` (one pool per user and
//! ciphersuite, side by side on one file) prunes expired KeyPackages, keeps
//! one last-resort KeyPackage, tops the pool up so that usable plus pending
//! KeyPackages reach `--count`, and prints a health table (or JSON),
//! followed by the storage's status: the erasure of old copies of secrets
//! (owed, past its bound, what blocks it), the eraser, the journal mode and
//! `synchronous`, encryption, and the SQLite linked.
//! Running it again reuses the pools rather than growing them. The table
//! also shows the withdrawals waiting for the server and the KeyPackages in
//! their grace window (`--grace-secs`); `--confirm-withdrawn` confirms the
//! withdrawals, as `--mark-uploaded` does the uploads. The KeyPackages'
//! credential carries `--identity` (the user's name unless given): a run
//! with another identity for the same `--user` renews the credential on the
//! same signature key, shows the KeyPackages of the old one as stale, and
//! retires them before it builds the new credential's own. Built with
//! the `libcrux` feature it uses `openmls_libcrux_crypto`, which adds the
//! X-Wing post-quantum ciphersuite (with `draft-ietf-mls-pq-ciphersuites`);
//! `--list-ciphersuites` shows what the build supports.

use std::{process::ExitCode, time::SystemTime};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_keypackage_pool::{
    codec::DefaultCodec, KeyPackagePool, KeyPackageStatus, LastResortReport, PoolAction,
    PoolConfig, PoolHealth, PoolProvider, PoolStorage, StorageOptions, StorageStatus,
    MAX_LIFETIME_SECS,
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
    #[arg(long, default_value = "pool-generator", value_parser = parse_user)]
    user: String,

    /// The identity string in the KeyPackages' basic credential; the user's
    /// name by default. Another identity for the same user is a renewed
    /// credential on the same signature key: the KeyPackages of the old one
    /// are retired.
    #[arg(long)]
    identity: Option<String>,

    /// Lifetime of new KeyPackages, in days (at most 84).
    #[arg(long, default_value_t = 14, value_parser = clap::value_parser!(u64).range(1..=MAX_LIFETIME_SECS / 86_400))]
    lifetime_days: u64,

    /// Mark every KeyPackage still waiting for upload as uploaded, as a
    /// client would after a successful upload to its server.
    #[arg(long)]
    mark_uploaded: bool,

    /// Confirm every withdrawal the pool has waiting, as a client would
    /// once its server has deleted those KeyPackages.
    #[arg(long)]
    confirm_withdrawn: bool,

    /// How long a KeyPackage taken out of service while a peer may still
    /// invite with it keeps its keys, in seconds, so that a Welcome naming
    /// it still joins (at most 7 days).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=7 * 86_400))]
    grace_secs: u64,

    /// The ciphersuite of a pool, by OpenMLS's name (for example
    /// MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519) or code point (0x0001).
    /// Repeat it for one pool per ciphersuite; the default is 0x0001.
    #[arg(long, value_parser = parse_ciphersuite)]
    ciphersuite: Vec<Ciphersuite>,

    /// List the ciphersuites this build's crypto provider supports, and
    /// exit.
    #[arg(long)]
    list_ciphersuites: bool,

    /// Print the health reports as JSON instead of tables: an array with
    /// one report per pool.
    #[arg(long)]
    json: bool,
}

/// A user name: anything but `/`, which separates a user from the
/// signature scheme of its other identities.
fn parse_user(text: &str) -> Result<String, String> {
    if text.is_empty() || text.contains('/') {
        return Err(format!(
            "invalid user {text:?}: it must be non-empty and contain no '/'"
        ));
    }
    Ok(text.to_owned())
}

/// A ciphersuite from OpenMLS's name for it, or its code point in hex
/// (`0x004D`) or decimal.
fn parse_ciphersuite(text: &str) -> Result<Ciphersuite, String> {
    let code = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u16::from_str_radix(hex, 16).ok(),
        None => text.parse::<u16>().ok(),
    };
    let known = match code {
        Some(code) => Ciphersuite::try_from(code).ok(),
        None => (1..=u16::MAX)
            .filter_map(|code| Ciphersuite::try_from(code).ok())
            .find(|suite| format!("{suite:?}") == text),
    };
    known.ok_or_else(|| {
        format!("unknown ciphersuite {text:?} for this build (--list-ciphersuites shows the supported ones)")
    })
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

/// The crypto provider the example builds with: `openmls_libcrux_crypto`
/// when built with the `libcrux` feature (it implements X-Wing), otherwise
/// `openmls_rust_crypto`.
#[cfg(feature = "libcrux")]
type Crypto = openmls_keypackage_pool::LibcruxCrypto;
#[cfg(not(feature = "libcrux"))]
type Crypto = openmls_rust_crypto::RustCrypto;

type Provider = PoolProvider<DefaultCodec, Crypto>;

fn crypto() -> Result<Crypto, String> {
    #[cfg(feature = "libcrux")]
    let crypto = Crypto::new().map_err(|e| format!("crypto provider: {e:?}"))?;
    #[cfg(not(feature = "libcrux"))]
    let crypto = Crypto::default();
    Ok(crypto)
}

fn run(cli: &Cli) -> Result<(), String> {
    let crypto = crypto()?;
    if cli.list_ciphersuites {
        for suite in crypto.supported_ciphersuites() {
            println!("0x{:04X}  {suite:?}", u16::from(suite));
        }
        return Ok(());
    }
    let mut suites = if cli.ciphersuite.is_empty() {
        vec![PoolConfig::default().ciphersuite]
    } else {
        cli.ciphersuite.clone()
    };
    // A suite named twice is one pool.
    let mut seen = std::collections::HashSet::new();
    suites.retain(|suite| seen.insert(u16::from(*suite)));
    // Every suite is checked before any pool is touched, so a bad one
    // leaves nothing half done.
    for suite in &suites {
        crypto.supports(*suite).map_err(|_| {
            format!(
                "the crypto provider does not support ciphersuite {suite:?} (--list-ciphersuites)"
            )
        })?;
    }
    let options = StorageOptions {
        spent_key_package_grace: std::time::Duration::from_secs(cli.grace_secs),
        ..StorageOptions::default()
    };
    let storage = PoolStorage::open_with_options(&cli.db, &options)
        .map_err(|e| format!("cannot open pool database {}: {e}", cli.db.display()))?;
    let provider = PoolProvider::with_crypto(storage, crypto);
    let mut reports = Vec::new();
    for ciphersuite in suites {
        reports.push(run_pool(cli, &provider, ciphersuite)?);
    }
    let status = provider
        .storage()
        .status()
        .map_err(|e| format!("cannot read the storage's status: {e}"))?;
    if cli.json {
        // Always an array, one report per pool, so that adding a
        // ciphersuite does not change the shape; each carries the status
        // of the storage they share.
        let storage = status_json(&status);
        let reports: Vec<serde_json::Value> = reports
            .into_iter()
            .map(|(mut json, _)| {
                json["storage"] = storage.clone();
                json
            })
            .collect();
        println!("{}", serde_json::Value::Array(reports));
    } else {
        let tables: Vec<String> = reports.into_iter().map(|(_, table)| table).collect();
        print!("{}", tables.join("\n"));
        print!("\n{}", status_table(&status));
    }
    Ok(())
}

/// The storage's status, as a table.
fn status_table(status: &StorageStatus) -> String {
    let erasure = &status.erasure;
    let owed = match (erasure.owed_for, &erasure.blocked_by) {
        (None, _) => "nothing owed: no old copies of secrets in the log".to_owned(),
        (Some(owed), blocker) => format!(
            "owed for {:.1} s (bound {:.1} s){}{}",
            owed.as_secs_f64(),
            erasure.bound.as_secs_f64(),
            if erasure.overdue { ", OVERDUE" } else { "" },
            blocker.map(|b| format!(": {b}")).unwrap_or_default()
        ),
    };
    let eraser = match (erasure.eraser_running, erasure.retry_every) {
        (false, _) => "not running: erasures run at the storage's commits".to_owned(),
        (true, None) => "running".to_owned(),
        (true, Some(every)) => format!(
            "running; tries failed: {}, next in {:.1} s{}",
            erasure.failed_tries,
            every.as_secs_f64(),
            if erasure.backing_off {
                " (backing off)"
            } else {
                ""
            }
        ),
    };
    let sqlite = format!(
        "{}{}, {}",
        status.sqlite.version,
        status
            .sqlite
            .sqlcipher
            .as_deref()
            .map(|v| format!(" (SQLCipher {v})"))
            .unwrap_or_default(),
        if status.sqlite.wal_reset_fixed {
            "has the WAL-reset fix"
        } else {
            "without the WAL-reset fix"
        }
    );
    let mut lines = vec![
        "storage".to_owned(),
        format!("erasure        {owed}"),
        format!("eraser         {eraser}"),
    ];
    if let Some(error) = &erasure.last_error {
        lines.push(format!("last error     {error}"));
    }
    lines.push(format!(
        "journal        {}, synchronous {}",
        status.journal_mode, status.synchronous
    ));
    lines.push(format!(
        "encrypted      {}",
        if status.encrypted { "yes" } else { "no" }
    ));
    lines.push(format!("SQLite         {sqlite}"));
    lines.join("\n") + "\n"
}

/// The storage's status, as JSON.
fn status_json(status: &StorageStatus) -> serde_json::Value {
    let erasure = &status.erasure;
    serde_json::json!({
        "erasure": {
            "owed_since_ms": erasure.owed_since_ms,
            "owed_for_ms": erasure.owed_for.map(|d| d.as_millis() as u64),
            "bound_ms": erasure.bound.as_millis() as u64,
            "overdue": erasure.overdue,
            "blocked_by": erasure.blocked_by.map(|b| b.to_string()),
            "eraser_running": erasure.eraser_running,
            "failed_tries": erasure.failed_tries,
            "retry_every_ms": erasure.retry_every.map(|d| d.as_millis() as u64),
            "backing_off": erasure.backing_off,
            "last_error": erasure.last_error,
            "eraser_wakeups": erasure.eraser_wakeups,
        },
        "journal_mode": status.journal_mode,
        "synchronous": status.synchronous,
        "encrypted": status.encrypted,
        "sqlite": {
            "version": status.sqlite.version,
            "sqlcipher": status.sqlite.sqlcipher,
            "wal_reset_fixed": status.sqlite.wal_reset_fixed,
        },
    })
}

/// Keeps `cli.user`'s pool in `ciphersuite` topped up; returns its report
/// as JSON and as a table.
fn run_pool(
    cli: &Cli,
    provider: &Provider,
    ciphersuite: Ciphersuite,
) -> Result<(serde_json::Value, String), String> {
    // A watermark at the target: every run tops the pool up to --count.
    // KeyPackages are replaced two days before expiry, or half-way through a
    // shorter life.
    let config = PoolConfig {
        target_size: cli.count as usize,
        low_watermark: cli.count as usize,
        hard_cap: cli.count as usize * 2,
        ciphersuite,
        ..PoolConfig::default()
    }
    .with_lifetime_secs(cli.lifetime_days * 86_400);
    let (signer, reused) = identity(provider, &cli.user, ciphersuite)?;
    let presented = cli.identity.as_deref().unwrap_or(&cli.user);
    let credential = CredentialWithKey {
        credential: BasicCredential::new(presented.as_bytes().to_vec()).into(),
        signature_key: signer.public().into(),
    };
    let pool =
        KeyPackagePool::new(provider, &signer, credential, config).map_err(|e| e.to_string())?;

    let now = unix_now()?;
    // KeyPackages of the same key under another credential go first: a
    // peer must not be handed one, and they take room under the hard cap.
    let stale = pool.health(now).map_err(|e| e.to_string())?.stale;
    let retired = pool.retire_stale_credentials().map_err(|e| e.to_string())?;
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
    let mut confirmed = 0;
    if cli.confirm_withdrawn {
        let refs: Vec<Vec<u8>> = pool
            .pending_withdrawals()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|w| w.keypackage_ref)
            .collect();
        provider
            .storage()
            .confirm_withdrawn(&refs)
            .map_err(|e| e.to_string())?;
        confirmed = refs.len();
    }
    let health = pool.health(now).map_err(|e| e.to_string())?;

    let run = Run {
        db: &cli.db.display().to_string(),
        user: &cli.user,
        presented,
        ciphersuite,
        identity_reused: reused,
        stale,
        retired: retired.len(),
        pruned: pruned.len(),
        last_resort: last_resort_outcome(&last_resort),
        generated,
        confirmed,
        hard_cap: pool.config().hard_cap,
        now,
    };
    Ok((to_json(&run, &health), table(&run, &health)))
}

/// Reads the user's signature key pair back from OpenMLS storage, or makes
/// and stores one. Returns whether it was reused.
fn identity(
    provider: &Provider,
    user: &str,
    ciphersuite: Ciphersuite,
) -> Result<(SignatureKeyPair, bool), String> {
    let storage = provider.storage();
    let scheme = ciphersuite.signature_algorithm();
    // One key pair per user and signature scheme: the Ed25519 one under the
    // user's name, any other under "name/SCHEME".
    let name = match scheme {
        SignatureScheme::ED25519 => user.to_owned(),
        other => format!("{user}/{other:?}"),
    };
    let user = name.as_str();
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

fn replenish(
    pool: &KeyPackagePool<'_, SignatureKeyPair, DefaultCodec, Crypto>,
    quiet: bool,
) -> Result<usize, String> {
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
    presented: &'a str,
    ciphersuite: Ciphersuite,
    identity_reused: bool,
    stale: usize,
    retired: usize,
    pruned: usize,
    last_resort: &'static str,
    generated: usize,
    confirmed: usize,
    hard_cap: usize,
    now: i64,
}

/// The report of one pool, as a table.
fn table(run: &Run<'_>, health: &PoolHealth) -> String {
    let mut lines = Vec::new();
    lines.push(format!("pool database  {}", run.db));
    lines.push(format!(
        "identity       {} ({} key), credential {:?}",
        run.user,
        if run.identity_reused { "reused" } else { "new" },
        run.presented
    ));
    lines.push(format!(
        "ciphersuite    {:?} (0x{:04X})",
        run.ciphersuite,
        u16::from(run.ciphersuite)
    ));
    let generated = match run.generated {
        0 => "nothing needed building".to_owned(),
        n => format!("generated {n}"),
    };
    lines.push(format!(
        "this run       {generated}, pruned {}, last resort {}, withdrawals confirmed {}",
        run.pruned, run.last_resort, run.confirmed
    ));
    lines.push(format!(
        "stale          {} of the key's KeyPackages carried another credential, retired {}",
        run.stale, run.retired
    ));
    lines.push(String::new());
    lines.push(format!("{:<12}{:>8}", "status", "count"));
    for status in KeyPackageStatus::ALL {
        lines.push(format!(
            "{:<12}{:>8}",
            status.as_str(),
            health.count(status)
        ));
    }
    lines.push(String::new());
    lines.push(format!(
        "pending upload (one-time)      {}",
        health.pending_upload
    ));
    lines.push(format!("usable (uploaded + available)  {}", health.usable));
    lines.push(format!("live one-time KeyPackages      {}", health.live));
    lines.push(format!(
        "one-time keys on disk          {} (hard cap {})",
        health.held, run.hard_cap
    ));
    lines.push(format!("of another credential          {}", health.stale));
    lines.push(format!(
        "last resort                    {}",
        match (health.has_last_resort, health.last_resort_pending) {
            (true, _) => "on the server",
            (false, true) => "built, waiting for upload",
            (false, false) => "missing",
        }
    ));
    lines.push(format!(
        "withdrawals waiting            {}",
        health.pending_withdrawals
    ));
    lines.push(format!(
        "in their grace window          {}",
        health.in_grace
    ));
    lines.push(format!(
        "expiring within horizon        {}",
        health.expiring_soon
    ));
    match health.next_expiry {
        Some(t) => lines.push(format!(
            "next expiry                    in {:.1} days (unix {t})",
            t.saturating_sub(run.now) as f64 / 86_400.0
        )),
        None => lines.push("next expiry                    -".to_owned()),
    }
    let actions: Vec<String> = health.actions.iter().map(describe).collect();
    lines.push(format!(
        "next steps                     {}",
        if actions.is_empty() {
            "none: the pool is healthy".to_owned()
        } else {
            actions.join(", then ")
        }
    ));
    lines.push(String::new());
    lines.join("\n")
}

fn to_json(run: &Run<'_>, health: &PoolHealth) -> serde_json::Value {
    let counts: serde_json::Map<_, _> = KeyPackageStatus::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), health.count(*s).into()))
        .collect();
    serde_json::json!({
        "db": run.db,
        "user": run.user,
        "credential_identity": run.presented,
        "ciphersuite": format!("{:?}", run.ciphersuite),
        "ciphersuite_code": u16::from(run.ciphersuite),
        "identity_reused": run.identity_reused,
        "generated": run.generated,
        "stale_before": run.stale,
        "retired_stale": run.retired,
        "stale": health.stale,
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
        "pending_withdrawals": health.pending_withdrawals,
        "in_grace": health.in_grace,
        "confirmed_withdrawals": run.confirmed,
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
        PoolAction::Nothing => "nothing".to_owned(),
        PoolAction::RetireStaleCredential(n) => {
            format!("retire {n} carrying another credential")
        }
        PoolAction::Prune(n) => format!("prune {n} expired"),
        PoolAction::Withdraw(n) => format!("withdraw {n} from the server"),
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
