//! The KeyPackage-creation and metadata-query scenarios compared by the
//! criterion benches and by `examples/bench_report.rs`.
//!
//! Every creation scenario builds `n` KeyPackages with the same signer: the
//! default ciphersuite on `openmls_rust_crypto`, or, in [`x_wing`], X-Wing on
//! `openmls_libcrux_crypto`; database scenarios use a fresh
//! file in one directory on one disk, and only the building and storing is
//! timed. `openmls_sqlite_storage` runs the usual way, in SQLite's default
//! rollback-journal mode; this crate in its own default, WAL with
//! `synchronous=FULL`. Both are durable when a commit returns.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_keypackage_pool::{
    codec::MessagePackCodec, KeyPackagePool, PoolConfig, PoolCrypto, PoolProvider, PoolScope,
    PoolStorage,
};
use openmls_rust_crypto::OpenMlsRustCrypto;

/// The same application-side provider the tests use for plain
/// `openmls_sqlite_storage`.
#[path = "../../tests/common/plain_sqlite.rs"]
mod plain_sqlite;
use plain_sqlite::PlainSqliteProvider;

pub mod messages;
pub mod operations;

pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// What every scenario shares: who signs, and where files go.
pub struct Env {
    pub signer: SignatureKeyPair,
    pub credential: CredentialWithKey,
    dir: tempfile::TempDir,
    files: std::sync::atomic::AtomicU64,
}

impl Env {
    /// Files go under `POOL_BENCH_DIR` if set (to compare disks), else the
    /// system temporary directory.
    pub fn new() -> Self {
        let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).expect("key pair");
        let credential = CredentialWithKey {
            credential: BasicCredential::new(b"bench".to_vec()).into(),
            signature_key: signer.public().into(),
        };
        let dir = match std::env::var_os("POOL_BENCH_DIR") {
            Some(base) => tempfile::tempdir_in(base),
            None => tempfile::tempdir(),
        }
        .expect("bench dir");
        Self {
            signer,
            credential,
            dir,
            files: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A path for a database that does not exist yet.
    pub fn fresh_path(&self, label: &str) -> PathBuf {
        let n = 1 + self
            .files
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.dir.path().join(format!("{label}-{n}.db"))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn build(&self, provider: &impl OpenMlsProvider) -> KeyPackageBundle {
        self.build_in(CIPHERSUITE, provider)
    }

    fn build_in(
        &self,
        ciphersuite: Ciphersuite,
        provider: &impl OpenMlsProvider,
    ) -> KeyPackageBundle {
        KeyPackage::builder()
            .build(ciphersuite, provider, &self.signer, self.credential.clone())
            .expect("KeyPackage builds")
    }

    /// A pool of the default ciphersuite on `provider`, sized for one batch
    /// of `n`.
    pub fn pool<'a>(
        &'a self,
        provider: &'a PoolProvider,
        n: usize,
    ) -> KeyPackagePool<'a, SignatureKeyPair> {
        self.pool_in(CIPHERSUITE, provider, n)
    }

    /// A pool of `ciphersuite` on any crypto provider, sized for one batch
    /// of `n`.
    pub fn pool_in<'a, P: PoolCrypto>(
        &'a self,
        ciphersuite: Ciphersuite,
        provider: &'a PoolProvider<MessagePackCodec, P>,
        n: usize,
    ) -> KeyPackagePool<'a, SignatureKeyPair, MessagePackCodec, P> {
        let config = PoolConfig {
            ciphersuite,
            target_size: n.max(1),
            low_watermark: 0,
            hard_cap: n.max(1),
            ..PoolConfig::default()
        };
        KeyPackagePool::new(provider, &self.signer, self.credential.clone(), config).expect("pool")
    }

    /// Builds `n` KeyPackages on two threads, half each, every thread with
    /// its own provider and in-memory storage: what this machine gives two
    /// threads.
    fn build_on_two_threads<P: OpenMlsProvider + Sync>(
        &self,
        ciphersuite: Ciphersuite,
        providers: &[P; 2],
        n: usize,
    ) -> Duration {
        timed(|| {
            std::thread::scope(|scope| {
                for (i, provider) in providers.iter().enumerate() {
                    let share = if i == 0 { n - n / 2 } else { n / 2 };
                    scope.spawn(move || {
                        (0..share).for_each(|_| drop(self.build_in(ciphersuite, provider)))
                    });
                }
            })
        })
    }
}

/// The creation scenarios, in the order reports list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// OpenMLS's in-memory storage: the cost of the crypto alone.
    InMemory,
    /// `openmls_sqlite_storage` on a file, one commit per KeyPackage.
    SqlitePerCommit,
    /// That, plus a metadata row in a second database file per KeyPackage:
    /// the two-store design this crate replaces.
    SqlitePlusMetadataFile,
    /// This crate's storage hook, one commit per KeyPackage.
    HookPerCommit,
    /// `KeyPackagePool::generate`: one transaction for the batch.
    Generate,
    /// `KeyPackagePool::generate_parallel` with two workers.
    GenerateParallel2,
    /// Two independent builders on two threads, each with in-memory storage
    /// and its own crypto provider: what this machine gives two threads,
    /// the ceiling for `generate_parallel` with two.
    InMemoryTwoThreads,
}

impl Scenario {
    pub const ALL: [Scenario; 7] = [
        Scenario::InMemory,
        Scenario::SqlitePerCommit,
        Scenario::SqlitePlusMetadataFile,
        Scenario::HookPerCommit,
        Scenario::Generate,
        Scenario::GenerateParallel2,
        Scenario::InMemoryTwoThreads,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::InMemory => "in-memory storage (floor)",
            Scenario::SqlitePerCommit => "openmls_sqlite_storage, commit per KeyPackage",
            Scenario::SqlitePlusMetadataFile => "  + separate metadata file per KeyPackage",
            Scenario::HookPerCommit => "this crate's hook, commit per KeyPackage",
            Scenario::Generate => "KeyPackagePool::generate",
            Scenario::GenerateParallel2 => "KeyPackagePool::generate_parallel, 2 threads",
            Scenario::InMemoryTwoThreads => "2 independent in-memory builders (ceiling)",
        }
    }

    pub fn id(self) -> &'static str {
        match self {
            Scenario::InMemory => "in_memory",
            Scenario::SqlitePerCommit => "sqlite_per_commit",
            Scenario::SqlitePlusMetadataFile => "sqlite_plus_metadata_file",
            Scenario::HookPerCommit => "hook_per_commit",
            Scenario::Generate => "generate",
            Scenario::GenerateParallel2 => "generate_parallel_2",
            Scenario::InMemoryTwoThreads => "in_memory_two_threads",
        }
    }

    /// Builds and stores `n` KeyPackages on fresh storage; returns the time
    /// the building and storing took, set-up excluded. Durable at return for
    /// every file scenario.
    pub fn run(self, env: &Env, n: usize) -> Duration {
        match self {
            Scenario::InMemory => {
                let provider = OpenMlsRustCrypto::default();
                timed(|| (0..n).for_each(|_| drop(env.build(&provider))))
            }
            Scenario::InMemoryTwoThreads => {
                let providers = [OpenMlsRustCrypto::default(), OpenMlsRustCrypto::default()];
                env.build_on_two_threads(CIPHERSUITE, &providers, n)
            }
            Scenario::SqlitePerCommit => {
                let provider =
                    PlainSqliteProvider::<MessagePackCodec>::open(&env.fresh_path("plain"));
                timed(|| (0..n).for_each(|_| drop(env.build(&provider))))
            }
            Scenario::SqlitePlusMetadataFile => {
                let provider =
                    PlainSqliteProvider::<MessagePackCodec>::open(&env.fresh_path("plain"));
                let metadata = separate_metadata_db(&env.fresh_path("metadata"));
                timed(|| {
                    for _ in 0..n {
                        let bundle = env.build(&provider);
                        let kp = bundle.key_package();
                        metadata
                            .execute(
                                "INSERT INTO keypackage_pool_metadata
                                 (keypackage_ref, status, created_at, not_after) VALUES (?1, 'created', ?2, ?3)",
                                rusqlite::params![
                                    kp.hash_ref(provider.crypto()).expect("ref").as_slice(),
                                    0,
                                    kp.life_time().not_after() as i64
                                ],
                            )
                            .expect("metadata insert");
                    }
                })
            }
            Scenario::HookPerCommit => {
                let provider = PoolProvider::open(env.fresh_path("hook")).expect("open");
                timed(|| (0..n).for_each(|_| drop(env.build(&provider))))
            }
            Scenario::Generate => {
                let provider = PoolProvider::open(env.fresh_path("generate")).expect("open");
                let pool = env.pool(&provider, n);
                timed(|| drop(pool.generate(n).expect("generate")))
            }
            Scenario::GenerateParallel2 => {
                let provider = PoolProvider::open(env.fresh_path("parallel")).expect("open");
                let pool = env.pool(&provider, n);
                timed(|| drop(pool.generate_parallel(n, 2).expect("generate_parallel")))
            }
        }
    }
}

/// X-Wing (`0x004D`) KeyPackage creation on `openmls_libcrux_crypto`, the
/// one OpenMLS crypto provider that implements it, measured against
/// libcrux's own provider (in-memory storage) as the floor. X-Wing signs with
/// Ed25519, so the shared signer serves.
#[cfg(all(feature = "libcrux", feature = "draft-ietf-mls-pq-ciphersuites"))]
pub mod x_wing {
    use super::*;
    use openmls_keypackage_pool::LibcruxCrypto;

    pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_256_XWING_CHACHA20POLY1305_SHA256_Ed25519;

    /// The X-Wing creation scenarios, in the order reports list them.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum XWingScenario {
        /// `openmls_libcrux_crypto::Provider`, which stores in memory: the
        /// cost of the crypto alone.
        InMemory,
        /// `KeyPackagePool::generate` on a file, on `LibcruxCrypto`.
        Generate,
        /// `KeyPackagePool::generate_parallel` with two threads.
        GenerateParallel2,
        /// Two independent libcrux builders on two threads, each with its
        /// own provider and in-memory storage: the ceiling for
        /// `generate_parallel` with two.
        InMemoryTwoThreads,
    }

    impl XWingScenario {
        pub const ALL: [XWingScenario; 4] = [
            XWingScenario::InMemory,
            XWingScenario::Generate,
            XWingScenario::GenerateParallel2,
            XWingScenario::InMemoryTwoThreads,
        ];

        pub fn name(self) -> &'static str {
            match self {
                XWingScenario::InMemory => "X-Wing, libcrux in-memory storage (floor)",
                XWingScenario::Generate => "X-Wing, KeyPackagePool::generate",
                XWingScenario::GenerateParallel2 => {
                    "X-Wing, KeyPackagePool::generate_parallel, 2 threads"
                }
                XWingScenario::InMemoryTwoThreads => {
                    "X-Wing, 2 independent libcrux in-memory builders (ceiling)"
                }
            }
        }

        pub fn id(self) -> &'static str {
            match self {
                XWingScenario::InMemory => "x_wing_in_memory",
                XWingScenario::Generate => "x_wing_generate",
                XWingScenario::GenerateParallel2 => "x_wing_generate_parallel_2",
                XWingScenario::InMemoryTwoThreads => "x_wing_in_memory_two_threads",
            }
        }

        /// Builds and stores `n` X-Wing KeyPackages on fresh storage, as
        /// [`Scenario::run`](super::Scenario::run) does.
        pub fn run(self, env: &Env, n: usize) -> Duration {
            match self {
                XWingScenario::InMemory => {
                    let provider = in_memory();
                    timed(|| (0..n).for_each(|_| drop(env.build_in(CIPHERSUITE, &provider))))
                }
                XWingScenario::InMemoryTwoThreads => {
                    env.build_on_two_threads(CIPHERSUITE, &[in_memory(), in_memory()], n)
                }
                XWingScenario::Generate => {
                    let provider = open(&env.fresh_path("x-wing-generate"));
                    let pool = env.pool_in(CIPHERSUITE, &provider, n);
                    timed(|| drop(pool.generate(n).expect("generate")))
                }
                XWingScenario::GenerateParallel2 => {
                    let provider = open(&env.fresh_path("x-wing-parallel"));
                    let pool = env.pool_in(CIPHERSUITE, &provider, n);
                    timed(|| drop(pool.generate_parallel(n, 2).expect("generate_parallel")))
                }
            }
        }
    }

    /// libcrux's own provider, which stores in memory.
    fn in_memory() -> openmls_libcrux_crypto::Provider {
        openmls_libcrux_crypto::Provider::new().expect("libcrux")
    }

    /// This crate's storage at `path`, on libcrux's crypto.
    pub fn open(path: &Path) -> PoolProvider<MessagePackCodec, LibcruxCrypto> {
        let storage = PoolStorage::open(path).expect("open");
        PoolProvider::libcrux(storage).expect("libcrux")
    }
}

fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

/// The second database file of the two-store design.
fn separate_metadata_db(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.execute_batch(
        "CREATE TABLE keypackage_pool_metadata (
             keypackage_ref BLOB PRIMARY KEY, status TEXT NOT NULL,
             created_at INTEGER NOT NULL, not_after INTEGER NOT NULL)",
    )
    .expect("schema");
    conn
}

/// A pool on `provider` that never refuses for size, for the query figures.
pub fn unbounded_pool<'a>(
    env: &'a Env,
    provider: &'a PoolProvider,
) -> KeyPackagePool<'a, SignatureKeyPair> {
    let config = PoolConfig {
        hard_cap: usize::MAX,
        ..PoolConfig::default()
    };
    KeyPackagePool::new(provider, &env.signer, env.credential.clone(), config).expect("pool")
}

/// A pool database for the query benchmarks: `rows` metadata-only rows, all
/// in the scope of `env`'s default pool, spread evenly over the next year (`not_after` from now + 3 days), plus
/// `real_expiring` real KeyPackages, with bundles, that expire after one day.
/// Returns the storage and "now": a moment two days ahead, at which exactly
/// the real KeyPackages are expired.
pub fn large_pool(env: &Env, path: &Path, rows: usize, real_expiring: usize) -> (PoolStorage, i64) {
    let provider = PoolProvider::open(path).expect("open");
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    provider
        .storage()
        .connection()
        .execute(
            "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < ?1)
             INSERT INTO keypackage_pool_metadata
                 (keypackage_ref, status, created_at, not_after, last_resort,
                  signature_key, ciphersuite, credential_type, credential)
             SELECT randomblob(32),
                    CASE i % 10 WHEN 0 THEN 'created' WHEN 1 THEN 'uploaded' WHEN 2 THEN 'reserved'
                                WHEN 3 THEN 'spent' ELSE 'available' END,
                    ?2, ?2 + 3 * 86400 + (i * 365 * 86400) / ?1, 0, ?3, ?4, 1, ?5
             FROM seq",
            // All in the benchmarked pool's scope: the worst case for it.
            rusqlite::params![
                rows as i64,
                start,
                env.credential.signature_key.as_slice(),
                u16::from(PoolConfig::default().ciphersuite),
                PoolScope::credential_fingerprint(&env.credential.credential)
            ],
        )
        .expect("seed rows");
    // Rows inserted behind the crate's back are not counted (migration V6):
    // recount, as repair() would.
    provider
        .storage()
        .connection()
        .execute_batch(
            "DELETE FROM keypackage_pool_counts;
             INSERT INTO keypackage_pool_counts
                 (signature_key, ciphersuite, credential, status, last_resort, count)
             SELECT signature_key, ciphersuite, credential, status, last_resort, COUNT(*)
             FROM keypackage_pool_metadata GROUP BY 1, 2, 3, 4, 5;",
        )
        .expect("recount");
    if real_expiring > 0 {
        let config = PoolConfig {
            target_size: real_expiring,
            low_watermark: 0,
            hard_cap: rows + real_expiring,
            lifetime_secs: 86_400,
            expiry_horizon_secs: 3_600,
            ..PoolConfig::default()
        };
        KeyPackagePool::new(&provider, &env.signer, env.credential.clone(), config)
            .expect("pool")
            .generate(real_expiring)
            .expect("generate");
    }
    (provider.into_storage(), start + 2 * 86_400)
}
