//! Pools per signature key and ciphersuite on one database: each pool sees
//! only its own KeyPackages, the database lists and removes scopes, and rows
//! written before scopes existed get theirs from their bundles.

mod common;

use common::{bundle_count, metadata_count, now, sized, Identity, PoolFixture, DAY};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_keypackage_pool::{
    key_package_ref_from_bytes, Error, KeyPackagePool, KeyPackageStatus, PoolAction, PoolConfig,
    PoolProvider, PoolScope, PoolStorage,
};
use tls_codec::Deserialize as _;

const SUITE_A: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
const SUITE_B: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519;

fn config(suite: Ciphersuite) -> PoolConfig {
    PoolConfig {
        ciphersuite: suite,
        ..sized(4, 2, 6)
    }
}

/// Two identities on one file, each with a pool in two ciphersuites.
struct Four {
    fx: PoolFixture,
    bob: Identity,
}

impl Four {
    fn new() -> Self {
        Self {
            fx: PoolFixture::new(),
            bob: Identity::new("bob"),
        }
    }

    /// The pools in a fixed order: (frank, A), (frank, B), (bob, A), (bob, B).
    fn pools(&self) -> Vec<KeyPackagePool<'_, SignatureKeyPair>> {
        let frank = &self.fx.identity;
        [
            (frank, SUITE_A),
            (frank, SUITE_B),
            (&self.bob, SUITE_A),
            (&self.bob, SUITE_B),
        ]
        .into_iter()
        .map(|(id, suite)| {
            KeyPackagePool::new(
                &self.fx.provider,
                &id.signer,
                id.credential.clone(),
                config(suite),
            )
            .unwrap()
        })
        .collect()
    }
}

#[test]
fn four_pools_on_one_file_never_see_each_other() {
    let four = Four::new();
    let pools = four.pools();
    let storage = four.fx.storage();
    // Each pool fills itself to a different level.
    let mut built = Vec::new();
    for (i, pool) in pools.iter().enumerate() {
        pool.ensure_last_resort(now()).unwrap();
        built.push(pool.generate(i + 1).unwrap());
    }
    assert_eq!(bundle_count(storage), 4 + (1 + 2 + 3 + 4));
    for (i, pool) in pools.iter().enumerate() {
        let health = pool.health(now()).unwrap();
        assert_eq!(health.held, i + 1, "pool {i}");
        assert_eq!(health.pending_upload, i + 1, "pool {i}");
        assert_eq!(health.count(KeyPackageStatus::Created), i + 2, "pool {i}");
        // Its own pending uploads only, in its own ciphersuite.
        let pending = pool.pending_upload().unwrap();
        assert_eq!(pending.ready.len(), i + 2, "pool {i}");
        for p in &pending.ready {
            let kp = KeyPackageIn::tls_deserialize_exact(&p.key_package)
                .unwrap()
                .validate(four.fx.provider.crypto(), ProtocolVersion::Mls10)
                .unwrap();
            assert_eq!(kp.ciphersuite(), pool.config().ciphersuite);
            assert_eq!(
                kp.leaf_node().signature_key().as_slice(),
                pool.scope().signature_key
            );
        }
        // The cap of 6 is per pool: the fourth pool holds 4 and may add 2.
        assert!(matches!(
            pool.generate(6 - i),
            Err(Error::HardCapExceeded { held, .. }) if held == i + 1
        ));
    }
    // Marking another pool's KeyPackage is as if it were not there.
    match pools[0].mark_uploaded(&built[1]) {
        Err(Error::NotFound { keypackage_ref }) => assert_eq!(keypackage_ref.0, built[1][0]),
        other => panic!("expected NotFound, got {other:?}"),
    }
    // Replenishing one pool builds for that pool only.
    pools[0].mark_uploaded(&built[0]).unwrap();
    assert_eq!(pools[0].replenish().unwrap().len(), 3);
    assert_eq!(pools[0].health(now()).unwrap().held, 4);
    assert_eq!(pools[3].health(now()).unwrap().held, 4);
    // Each pool keeps its own last-resort KeyPackage: none removes another's.
    for pool in &pools {
        let report = pool.ensure_last_resort(now()).unwrap();
        assert!(
            report.removed.is_empty() && report.created.is_none(),
            "{report:?}"
        );
    }

    // The database lists all four, with their own counts.
    let scopes = storage.scopes(now()).unwrap();
    assert_eq!(scopes.len(), 4);
    for pool in &pools {
        let listed = scopes.iter().find(|s| &s.scope == pool.scope()).unwrap();
        let health = pool.health(now()).unwrap();
        assert_eq!(listed.held, health.held);
        assert_eq!(listed.pending, health.pending_upload);
        assert_eq!(listed.usable, health.usable);
        assert_eq!(listed.has_last_resort, health.has_last_resort);
    }
}

#[test]
fn pruning_and_reservations_stay_in_their_pool() {
    let four = Four::new();
    let pools = four.pools();
    let expiring = pools
        .iter()
        .map(|pool| pool.generate(1).unwrap())
        .collect::<Vec<_>>();
    for (pool, refs) in pools.iter().zip(&expiring) {
        pool.mark_uploaded(refs).unwrap();
        four.fx
            .storage()
            .update_reservation_info(&refs[0], "r", "peer", now() - 1)
            .unwrap();
    }
    // A lapsed reservation is released only in the pool that asks.
    assert_eq!(
        pools[1].expire_lapsed_reservations(now()).unwrap(),
        expiring[1]
    );
    assert_eq!(four.fx.status(&expiring[0][0]), KeyPackageStatus::Reserved);
    // Three weeks on, every KeyPackage has expired; pruning one pool removes
    // its own only.
    let later = now() + 21 * DAY;
    assert_eq!(pools[1].prune_expired(later).unwrap(), expiring[1]);
    assert_eq!(bundle_count(four.fx.storage()), 3);
    assert!(four
        .fx
        .storage()
        .key_package_bundle(&expiring[0][0])
        .unwrap()
        .is_some());
    assert_eq!(
        pools[2].health(later).unwrap().actions[0],
        PoolAction::Prune(1)
    );
}

#[test]
fn a_welcome_consumes_exactly_its_own_key_package() {
    let four = Four::new();
    let pools = four.pools();
    let refs: Vec<Vec<u8>> = pools
        .iter()
        .map(|p| p.generate(1).unwrap().remove(0))
        .collect();
    // A peer in suite B invites bob's suite-B KeyPackage.
    let target = &refs[3];
    let bundle = four
        .fx
        .storage()
        .key_package_bundle(target)
        .unwrap()
        .unwrap();
    let peer = common::PlainClient::new("carol");
    let mut group = MlsGroup::new(
        &peer.provider,
        &peer.identity.signer,
        &MlsGroupCreateConfig::builder()
            .ciphersuite(SUITE_B)
            .use_ratchet_tree_extension(true)
            .build(),
        CredentialWithKey {
            credential: peer.identity.credential.credential.clone(),
            signature_key: peer.identity.credential.signature_key.clone(),
        },
    )
    .unwrap();
    let (_commit, welcome, _) = group
        .add_members(
            &peer.provider,
            &peer.identity.signer,
            &[bundle.key_package().clone()],
        )
        .unwrap();
    common::join(&four.fx.provider, common::into_welcome(&welcome)).unwrap();
    let kp_ref = key_package_ref_from_bytes(target).unwrap();
    assert!(common::stored_bundle(four.fx.storage(), &kp_ref).is_none());
    assert_eq!(four.fx.storage().get_metadata(target).unwrap(), None);
    for other in &refs[..3] {
        assert!(four.fx.storage().get_metadata(other).unwrap().is_some());
    }
    assert_eq!(
        (
            bundle_count(four.fx.storage()),
            metadata_count(four.fx.storage())
        ),
        (3, 3)
    );
    assert_eq!(pools[3].health(now()).unwrap().held, 0);
    assert_eq!(pools[2].health(now()).unwrap().held, 1);
}

#[test]
fn a_scope_or_a_whole_signature_key_is_removed_in_one_go() {
    let four = Four::new();
    let pools = four.pools();
    let mut refs = Vec::new();
    for pool in &pools {
        let mut mine = pool.generate(2).unwrap();
        mine.extend(pool.ensure_last_resort(now()).unwrap().created);
        refs.push(mine);
    }
    let storage = four.fx.storage();
    // One scope: frank's suite-B pool.
    let mut removed = storage.remove_scope(pools[1].scope()).unwrap();
    removed.sort();
    let mut expected = refs[1].clone();
    expected.sort();
    assert_eq!(removed, expected);
    for r in &refs[1] {
        // Gone the way OpenMLS looks for it.
        let kp_ref = key_package_ref_from_bytes(r).unwrap();
        assert!(common::stored_bundle(storage, &kp_ref).is_none());
    }
    assert_eq!(bundle_count(storage), 9);
    // A credential rotation: all of bob's KeyPackages, both suites.
    let removed = storage
        .remove_signature_key(&pools[2].scope().signature_key)
        .unwrap();
    assert_eq!(removed.len(), 6);
    assert_eq!((bundle_count(storage), metadata_count(storage)), (3, 3));
    let scopes: Vec<PoolScope> = storage
        .scopes(now())
        .unwrap()
        .into_iter()
        .map(|s| s.scope)
        .collect();
    assert_eq!(scopes, vec![pools[0].scope().clone()]);
    assert!(storage.verify().unwrap().is_consistent());
    // Keys that own nothing remove nothing.
    assert!(storage.remove_signature_key(&[]).unwrap().is_empty());
    assert!(storage.remove_scope(pools[1].scope()).unwrap().is_empty());
}

/// Takes a database of this build back to the schema the release before
/// scopes wrote (pool migrations V1 to V4): V8's credential columns, V7's
/// withdrawal table and columns, the scope columns, their index and the
/// per-scope count table gone, V2's count table and triggers back (V6's removal of the insert
/// trigger undone with them).
fn downgrade_to_v4(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let v2 = include_str!("../migrations/V2__pool_counts.sql");
    // V2's statements up to its index changes recreate its count table and
    // triggers; the indexes it made are still there.
    let v2_counts = &v2[..v2.find("-- Listing by status").unwrap()];
    conn.execute_batch(&format!(
        "BEGIN;
         DROP TABLE keypackage_pool_withdrawals;
         DROP INDEX keypackage_pool_metadata_retired;
         DROP INDEX keypackage_pool_metadata_scope_expiry;
         ALTER TABLE keypackage_pool_metadata DROP COLUMN offered_at;
         ALTER TABLE keypackage_pool_metadata DROP COLUMN retired_until;
         DROP TRIGGER IF EXISTS keypackage_pool_counts_after_insert;
         DROP TRIGGER keypackage_pool_counts_after_delete;
         DROP TRIGGER keypackage_pool_counts_after_update;
         DROP TABLE keypackage_pool_counts;
         ALTER TABLE keypackage_pool_metadata DROP COLUMN credential;
         ALTER TABLE keypackage_pool_metadata DROP COLUMN ciphersuite;
         ALTER TABLE keypackage_pool_metadata DROP COLUMN signature_key;
         ALTER TABLE keypackage_pool_metadata DROP COLUMN credential_type;
         {v2_counts}
         CREATE INDEX keypackage_pool_metadata_last_resort
             ON keypackage_pool_metadata (not_after, status) WHERE last_resort = 1;
         DELETE FROM openmls_keypackage_pool_migrations WHERE version >= 5;
         COMMIT;"
    ))
    .unwrap();
}

#[test]
fn rows_written_before_scopes_get_theirs_from_their_bundles() {
    let four = Four::new();
    let pools = four.pools();
    let mut refs = Vec::new();
    for (i, pool) in pools.iter().enumerate() {
        refs.push(pool.generate(i + 1).unwrap());
    }
    pools[2].mark_uploaded(&refs[2]).unwrap();
    // One bundle that no longer decodes: its row must not be given a guess.
    let damaged = pools[3].generate(1).unwrap().remove(0);
    common::corrupt_latest_bundle(four.fx.storage());
    let path = four.fx.path.clone();
    drop(pools);
    let Four { fx, bob } = four;
    let PoolFixture {
        provider,
        identity,
        dir,
        ..
    } = fx;
    drop(provider);
    downgrade_to_v4(&path);

    let storage = PoolStorage::open(&path).unwrap();
    assert_eq!((bundle_count(&storage), metadata_count(&storage)), (11, 11));
    let provider = PoolProvider::new(storage);
    let frank = &identity;
    for (i, (id, suite)) in [
        (frank, SUITE_A),
        (frank, SUITE_B),
        (&bob, SUITE_A),
        (&bob, SUITE_B),
    ]
    .into_iter()
    .enumerate()
    {
        let pool = KeyPackagePool::new(&provider, &id.signer, id.credential.clone(), config(suite))
            .unwrap();
        let health = pool.health(now()).unwrap();
        assert_eq!(health.held, i + 1, "pool {i}");
        for r in &refs[i] {
            let row = provider.storage().get_metadata(r).unwrap().unwrap();
            assert_eq!(row.scope.as_ref(), Some(pool.scope()));
            assert_eq!(row.credential_type, Some(u16::from(CredentialType::Basic)));
        }
    }
    assert_eq!(
        provider
            .storage()
            .get_metadata(&damaged)
            .unwrap()
            .unwrap()
            .scope,
        None
    );
    let report = provider.storage().verify().unwrap();
    assert!(!report.counts_out_of_date, "{report:?}");
    assert_eq!(provider.storage().scopes(now()).unwrap().len(), 4);
    drop(dir);
}

#[test]
fn a_custom_credential_pool_is_accepted_by_a_group_that_requires_it() {
    const CUSTOM: CredentialType = CredentialType::Other(0xF0A1);
    const APP_EXTENSION: ExtensionType = ExtensionType::Unknown(0xF0B2);
    let capabilities = Capabilities::builder()
        .credentials(vec![CredentialType::Basic, CUSTOM])
        .extensions(vec![APP_EXTENSION])
        .build();
    let fx = PoolFixture::new();
    let signer = SignatureKeyPair::new(SUITE_A.signature_algorithm()).unwrap();
    let credential = CredentialWithKey {
        credential: Credential::new(CUSTOM, b"device-7 attested".to_vec()),
        signature_key: signer.public().into(),
    };
    let pool_with = |capabilities: Option<Capabilities>| {
        KeyPackagePool::new(
            &fx.provider,
            &signer,
            credential.clone(),
            PoolConfig {
                capabilities,
                ..PoolConfig::default()
            },
        )
        .unwrap()
    };
    // A group whose members must all support the custom credential type
    // and an application extension.
    let creator = common::PlainClient::new("dora");
    let new_group = || {
        let config = MlsGroupCreateConfig::builder()
            .ciphersuite(SUITE_A)
            .use_ratchet_tree_extension(true)
            .capabilities(capabilities.clone())
            .with_group_context_extensions(
                Extensions::single(Extension::RequiredCapabilities(
                    RequiredCapabilitiesExtension::new(&[APP_EXTENSION], &[], &[CUSTOM]),
                ))
                .unwrap(),
            )
            .build();
        MlsGroup::new(
            &creator.provider,
            &creator.identity.signer,
            &config,
            creator.identity.credential.clone(),
        )
        .unwrap()
    };
    let key_package = |r: &[u8]| {
        fx.storage()
            .key_package_bundle(r)
            .unwrap()
            .unwrap()
            .key_package()
            .clone()
    };

    // With the defaults, the KeyPackage lists its own credential type (the
    // pool adds it) but not the extension, so it cannot join such a group.
    let plain = pool_with(None).generate(1).unwrap().remove(0);
    let listed = key_package(&plain);
    let listed = listed.leaf_node().capabilities();
    assert!(listed.credentials().contains(&CUSTOM));
    assert!(!listed.extensions().contains(&APP_EXTENSION));
    let mut group = new_group();
    assert!(group
        .add_members(
            &creator.provider,
            &creator.identity.signer,
            &[key_package(&plain)]
        )
        .is_err());

    // Advertising the capability, it can, and the Welcome joins.
    let advertised = pool_with(Some(capabilities.clone()))
        .generate(1)
        .unwrap()
        .remove(0);
    let mut group = new_group();
    let (_commit, welcome, _) = group
        .add_members(
            &creator.provider,
            &creator.identity.signer,
            &[key_package(&advertised)],
        )
        .unwrap();
    group.merge_pending_commit(&creator.provider).unwrap();
    let joined = common::join(&fx.provider, common::into_welcome(&welcome)).unwrap();
    assert_eq!(joined.members().count(), 2);
    assert_eq!(fx.storage().get_metadata(&advertised).unwrap(), None);
    let row = fx.storage().get_metadata(&plain).unwrap().unwrap();
    assert_eq!(row.credential_type, Some(0xF0A1));
}

#[test]
fn the_hook_and_adoption_record_the_scope_too() {
    let (_dir, path) = common::temp_db();
    let id = Identity::new("hana");
    let scope = PoolScope::new(&id.credential, common::CIPHERSUITE);
    // Written before this crate managed the file, by plain
    // openmls_sqlite_storage (the codec this crate defaults to).
    let legacy = {
        let plain = common::plain_sqlite::PlainSqliteProvider::<
            openmls_keypackage_pool::codec::MessagePackCodec,
        >::open(&path);
        let bundle = common::build_key_package(&plain, &id, false);
        bundle.key_package().hash_ref(plain.crypto()).unwrap()
    };
    let provider = PoolProvider::open(&path).unwrap();
    let adopted = provider
        .storage()
        .adopt_unpooled_key_packages(KeyPackageStatus::Uploaded)
        .unwrap();
    assert_eq!(adopted, vec![legacy.as_slice().to_vec()]);
    // Built by OpenMLS itself, through the storage hook.
    let hooked = common::build_key_package(&provider, &id, true);
    let hooked = hooked.key_package().hash_ref(provider.crypto()).unwrap();
    for r in [&legacy, &hooked] {
        let row = provider
            .storage()
            .get_metadata(r.as_slice())
            .unwrap()
            .unwrap();
        assert_eq!(row.scope.as_ref(), Some(&scope));
        assert_eq!(row.credential_type, Some(u16::from(CredentialType::Basic)));
    }
    let pool = id.pool(&provider, PoolConfig::default());
    let health = pool.health(now()).unwrap();
    assert_eq!((health.usable, health.last_resort_pending), (1, true));
}

#[test]
fn a_row_made_by_hand_takes_its_scope_from_its_bundle() {
    let fx = PoolFixture::new();
    let pool = fx.pool(PoolConfig::default());
    let r = pool.generate(1).unwrap().remove(0);
    // Bookkeeping by hand: the row is dropped and made again.
    fx.storage().delete_pool_metadata(&r).unwrap();
    fx.storage()
        .create_pool_metadata(&r, 1_900_000_000)
        .unwrap();
    let row = fx.storage().get_metadata(&r).unwrap().unwrap();
    assert_eq!(
        row.scope.as_ref(),
        Some(pool.scope()),
        "read from the stored bundle"
    );
    assert_eq!(row.not_after, 1_900_000_000, "as given");

    // A row whose scope is lost is reported, and repair reads it back.
    fx.storage()
        .connection()
        .execute(
            "UPDATE keypackage_pool_metadata SET signature_key = x'', ciphersuite = 0",
            [],
        )
        .unwrap();
    assert_eq!(pool.health(now()).unwrap().held, 0, "invisible to the pool");
    let report = fx.storage().verify().unwrap();
    assert_eq!(report.metadata_without_scope, vec![r.clone()]);
    assert!(!report.is_consistent());
    fx.storage().repair().unwrap();
    assert!(fx.storage().verify().unwrap().is_consistent());
    assert_eq!(pool.health(now()).unwrap().held, 1);
}
