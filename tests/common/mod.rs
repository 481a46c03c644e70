//! Setup shared by the integration tests: identities, KeyPackages, groups and
//! database files, all real.
#![allow(dead_code)]

pub mod child;
pub mod conversation;
pub mod lifecycle_model;
pub mod plain_sqlite;
pub mod secrets;
pub mod traces;
pub mod wal_writes;

use std::path::PathBuf;

use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_keypackage_pool::{
    codec::PoolCodec, KeyPackagePool, KeyPackageStatus, PoolConfig, PoolProvider, PoolStorage,
};
use openmls_rust_crypto::OpenMlsRustCrypto;
use tempfile::TempDir;
use tls_codec::{Deserialize as _, Serialize as _};

pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// The first column of every row `sql` returns, in order.
pub fn column<T: rusqlite::types::FromSql>(conn: &rusqlite::Connection, sql: &str) -> Vec<T> {
    let mut stmt = conn.prepare(sql).unwrap();
    let rows = stmt.query_map([], |row| row.get(0)).unwrap();
    rows.map(Result::unwrap).collect()
}

/// A database file in a directory that is removed when the `TempDir` drops.
pub fn temp_db() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("pool.db");
    (dir, path)
}

/// A member's signature key pair and credential.
pub struct Identity {
    pub signer: SignatureKeyPair,
    pub credential: CredentialWithKey,
}

impl Identity {
    pub fn new(name: &str) -> Self {
        Self::for_suite(name, CIPHERSUITE)
    }

    /// An identity whose key pair signs with `ciphersuite`'s scheme.
    pub fn for_suite(name: &str, ciphersuite: Ciphersuite) -> Self {
        let signer = SignatureKeyPair::new(ciphersuite.signature_algorithm()).expect("key pair");
        let credential = CredentialWithKey {
            credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
            signature_key: signer.public().into(),
        };
        Self { signer, credential }
    }
}

impl Identity {
    /// A pool of this identity's on `provider`, with `config`.
    pub fn pool<'a, C: PoolCodec, P: openmls_keypackage_pool::PoolCrypto>(
        &'a self,
        provider: &'a PoolProvider<C, P>,
        config: PoolConfig,
    ) -> KeyPackagePool<'a, SignatureKeyPair, C, P> {
        KeyPackagePool::new(provider, &self.signer, self.credential.clone(), config)
            .expect("valid pool configuration")
    }
}

/// Builds one KeyPackage through OpenMLS, which stores it with `provider`.
pub fn build_key_package(
    provider: &impl OpenMlsProvider,
    identity: &Identity,
    last_resort: bool,
) -> KeyPackageBundle {
    let mut builder = KeyPackage::builder();
    if last_resort {
        builder = builder.mark_as_last_resort();
    }
    builder
        .build(
            CIPHERSUITE,
            provider,
            &identity.signer,
            identity.credential.clone(),
        )
        .expect("KeyPackage builds")
}

/// Sends a message over the "wire": TLS-encodes it and decodes it back.
pub fn over_the_wire(message: &MlsMessageOut) -> MlsMessageIn {
    let bytes = message.tls_serialize_detached().expect("encode");
    MlsMessageIn::tls_deserialize_exact(bytes).expect("decode")
}

pub fn into_welcome(message: &MlsMessageOut) -> Welcome {
    match over_the_wire(message).extract() {
        MlsMessageBodyIn::Welcome(welcome) => welcome,
        other => panic!("expected a Welcome, got {other:?}"),
    }
}

pub fn into_protocol_message(message: &MlsMessageOut) -> ProtocolMessage {
    over_the_wire(message)
        .try_into_protocol_message()
        .expect("a protocol message")
}

pub fn group_create_config() -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(CIPHERSUITE)
        .use_ratchet_tree_extension(true)
        .build()
}

/// A group creator on OpenMLS's in-memory provider.
pub struct PlainClient {
    pub provider: OpenMlsRustCrypto,
    pub identity: Identity,
}

impl PlainClient {
    pub fn new(name: &str) -> Self {
        Self {
            provider: OpenMlsRustCrypto::default(),
            identity: Identity::new(name),
        }
    }

    /// Creates a group and adds the owner of `key_package`; returns the
    /// group and the Welcome for the new member.
    pub fn create_group_with(&self, key_package: &KeyPackage) -> (MlsGroup, Welcome) {
        let mut group = MlsGroup::new(
            &self.provider,
            &self.identity.signer,
            &group_create_config(),
            self.identity.credential.clone(),
        )
        .expect("group");
        let (_commit, welcome, _info) = group
            .add_members(
                &self.provider,
                &self.identity.signer,
                std::slice::from_ref(key_package),
            )
            .expect("add member");
        group
            .merge_pending_commit(&self.provider)
            .expect("merge add");
        (group, into_welcome(&welcome))
    }
}

/// Joins the group a Welcome invites to.
pub fn join<P: OpenMlsProvider>(provider: &P, welcome: Welcome) -> Result<MlsGroup, String> {
    let staged = StagedWelcome::new_from_welcome(
        provider,
        &MlsGroupJoinConfig::builder()
            .use_ratchet_tree_extension(true)
            .build(),
        welcome,
        None,
    )
    .map_err(|e| format!("{e:?}"))?;
    staged.into_group(provider).map_err(|e| format!("{e:?}"))
}

/// How many KeyPackageBundles OpenMLS's own table holds.
pub fn bundle_count<C: PoolCodec>(storage: &PoolStorage<C>) -> i64 {
    storage
        .connection()
        .query_row("SELECT COUNT(*) FROM openmls_key_packages", [], |row| {
            row.get(0)
        })
        .expect("count bundles")
}

/// How many metadata rows the pool holds.
pub fn metadata_count<C: PoolCodec>(storage: &PoolStorage<C>) -> i64 {
    storage
        .connection()
        .query_row("SELECT COUNT(*) FROM keypackage_pool_metadata", [], |row| {
            row.get(0)
        })
        .expect("count metadata")
}

/// The bundle OpenMLS finds under `kp_ref`, looked up the way OpenMLS does.
pub fn stored_bundle<S: openmls_traits::storage::StorageProvider<1>>(
    storage: &S,
    kp_ref: &KeyPackageRef,
) -> Option<KeyPackageBundle> {
    storage.key_package(kp_ref).expect("lookup")
}

/// The wall clock in Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Makes every metadata `event` (`INSERT` or `DELETE`) fail with `message`
/// once the table holds `after_rows` rows: a failure injected exactly where
/// the storage hook writes, for atomicity tests.
pub fn fail_metadata<C: PoolCodec>(
    storage: &PoolStorage<C>,
    event: &str,
    after_rows: usize,
    message: &str,
) {
    storage
        .connection()
        .execute_batch(&format!(
            "CREATE TEMP TRIGGER fail_metadata_{event} BEFORE {event} ON keypackage_pool_metadata
             WHEN (SELECT COUNT(*) FROM keypackage_pool_metadata) >= {after_rows}
             BEGIN SELECT RAISE(ABORT, '{message}'); END;"
        ))
        .expect("failure trigger");
}

pub const DAY: i64 = 24 * 60 * 60;

/// Whether the database `conn` is open on records an erasure as pending.
pub fn erasure_pending(conn: &rusqlite::Connection) -> bool {
    conn.query_row(
        "SELECT pending_since IS NOT NULL FROM openmls_keypackage_pool_erasure",
        [],
        |row| row.get(0),
    )
    .unwrap()
}

/// How many frames the write-ahead log at `wal` holds (0 when it is
/// missing or truncated), at SQLite's default page size.
pub fn wal_frames(wal: &std::path::Path) -> u64 {
    const HEADER: u64 = 32;
    const FRAME: u64 = 24 + 4096;
    let len = std::fs::metadata(wal).map_or(0, |m| m.len());
    len.saturating_sub(HEADER).div_ceil(FRAME)
}

/// Bytes as lowercase hex, two digits each.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A pool database file with one signing identity, for the pool tests.
pub struct PoolFixture {
    pub dir: TempDir,
    pub path: PathBuf,
    pub provider: PoolProvider,
    pub identity: Identity,
}

impl PoolFixture {
    pub fn new() -> Self {
        let (dir, path) = temp_db();
        Self {
            provider: PoolProvider::open(&path).expect("open pool database"),
            path,
            dir,
            identity: Identity::new("frank"),
        }
    }

    pub fn pool(&self, config: PoolConfig) -> KeyPackagePool<'_, SignatureKeyPair> {
        self.identity.pool(&self.provider, config)
    }

    pub fn storage(&self) -> &PoolStorage {
        self.provider.storage()
    }

    /// Generates `n` and marks them uploaded.
    pub fn uploaded(&self, pool: &KeyPackagePool<'_, SignatureKeyPair>, n: usize) -> Vec<Vec<u8>> {
        let refs = pool.generate(n).expect("generate");
        pool.mark_uploaded(&refs).expect("mark uploaded");
        refs
    }

    /// The status of `keypackage_ref`'s row.
    pub fn status(&self, keypackage_ref: &[u8]) -> KeyPackageStatus {
        self.storage()
            .get_metadata(keypackage_ref)
            .expect("read metadata")
            .expect("a metadata row")
            .status
    }
}

pub fn sized(target_size: usize, low_watermark: usize, hard_cap: usize) -> PoolConfig {
    PoolConfig {
        target_size,
        low_watermark,
        hard_cap,
        ..PoolConfig::default()
    }
}

/// The default pool with `days`-day lifetimes, looking half a lifetime
/// ahead at most.
pub fn lifetime_days(days: u64) -> PoolConfig {
    PoolConfig::default().with_lifetime_secs(days * DAY as u64)
}

/// Damages the most recently stored KeyPackageBundle so that it no longer
/// decodes; every other bundle is left as it was.
pub fn corrupt_latest_bundle<C: PoolCodec>(storage: &PoolStorage<C>) {
    let changed = storage
        .connection()
        .execute(
            "UPDATE openmls_key_packages SET key_package = x'c1c1c1'
             WHERE rowid = (SELECT MAX(rowid) FROM openmls_key_packages)",
            [],
        )
        .expect("damage a bundle");
    assert_eq!(changed, 1);
}

/// Puts a row made by hand (`create_pool_metadata`, which has no bundle to
/// read a scope from) into a pool's scope, so that the pool sees it.
pub fn assign_scope<C: PoolCodec>(
    storage: &PoolStorage<C>,
    keypackage_ref: &[u8],
    scope: &openmls_keypackage_pool::PoolScope,
) {
    let changed = storage
        .connection()
        .execute(
            "UPDATE keypackage_pool_metadata
             SET signature_key = ?2, ciphersuite = ?3, credential = ?4
             WHERE keypackage_ref = ?1",
            rusqlite::params![
                keypackage_ref,
                scope.signature_key,
                scope.ciphersuite,
                scope.credential
            ],
        )
        .expect("assign a scope");
    assert_eq!(changed, 1);
}

/// Takes a database of this build back to the schema the release before
/// credentials wrote (pool migrations V1 to V7): the credential columns
/// gone, V7's scope index and V5's count table back (without the insert
/// trigger V6 removed).
pub fn downgrade_to_v7(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let v5 = include_str!("../../migrations/V5__pool_scopes.sql");
    let v5_counts = &v5[v5.find("-- Keyed by scope first").unwrap()..];
    conn.execute_batch(&format!(
        "BEGIN;
         DROP TRIGGER keypackage_pool_counts_after_delete;
         DROP TRIGGER keypackage_pool_counts_after_update;
         DROP TABLE keypackage_pool_counts;
         DROP INDEX keypackage_pool_metadata_scope_expiry;
         ALTER TABLE keypackage_pool_metadata DROP COLUMN credential;
         ALTER TABLE keypackage_pool_withdrawals DROP COLUMN credential;
         CREATE INDEX keypackage_pool_metadata_scope_expiry
             ON keypackage_pool_metadata
                (signature_key, ciphersuite, last_resort, not_after, status,
                 reservation_expires_at, retired_until);
         {v5_counts}
         DROP TRIGGER keypackage_pool_counts_after_insert;
         DELETE FROM openmls_keypackage_pool_migrations WHERE version >= 8;
         COMMIT;"
    ))
    .unwrap();
}
