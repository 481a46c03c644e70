//! The credential is part of a pool's scope: a credential renewed on the
//! same signature key gets a pool of its own, the old credential's
//! KeyPackages are stale for it (never counted, uploaded or handed out,
//! but held against its hard cap) until it retires them, and a database
//! written before credentials were recorded gets them from its bundles.

mod common;

use std::{collections::HashSet, path::Path, time::Duration};

use common::{join, now, sized, PlainClient};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_keypackage_pool::{
    Error, KeyPackagePool, KeyPackageStatus, PoolAction, PoolConfig, PoolProvider, PoolScope,
    PoolStorage, StorageOptions, WithdrawalReason,
};
use tls_codec::Deserialize as _;

/// One signature key, presented with whichever identity string a pool is
/// given: a credential renewed on the same key.
struct Client {
    signer: SignatureKeyPair,
}

impl Client {
    fn new() -> Self {
        Self {
            signer: SignatureKeyPair::new(common::CIPHERSUITE.signature_algorithm()).unwrap(),
        }
    }

    fn credential(&self, identity: &str) -> CredentialWithKey {
        CredentialWithKey {
            credential: BasicCredential::new(identity.as_bytes().to_vec()).into(),
            signature_key: self.signer.public().into(),
        }
    }

    fn pool<'a>(
        &'a self,
        provider: &'a PoolProvider,
        identity: &str,
        config: PoolConfig,
    ) -> KeyPackagePool<'a, SignatureKeyPair> {
        KeyPackagePool::new(provider, &self.signer, self.credential(identity), config).unwrap()
    }
}

fn open(path: &Path, grace: Duration) -> PoolProvider {
    let options = StorageOptions {
        spent_key_package_grace: grace,
        ..StorageOptions::default()
    };
    PoolProvider::open_with_options(path, &options).unwrap()
}

/// The identity in the credential of the KeyPackage stored under `r`.
fn identity_of(storage: &PoolStorage, r: &[u8]) -> Vec<u8> {
    let bundle = storage.key_package_bundle(r).unwrap().unwrap();
    let credential = bundle.key_package().leaf_node().credential().clone();
    BasicCredential::try_from(credential)
        .unwrap()
        .identity()
        .to_vec()
}

fn set(refs: &[Vec<u8>]) -> HashSet<Vec<u8>> {
    refs.iter().cloned().collect()
}

#[test]
fn a_renewed_credential_builds_uploads_and_counts_only_its_own() {
    let (_dir, path) = common::temp_db();
    let provider = open(&path, Duration::ZERO);
    let client = Client::new();
    let old = client.pool(&provider, "alice@2025", sized(4, 2, 8));
    let old_refs = old.replenish().unwrap();
    assert_eq!(old_refs.len(), 4);
    // Two of them reached the server; two never left the client.
    old.mark_uploaded(&old_refs[..2]).unwrap();

    let renewed = client.pool(&provider, "alice@2026", sized(4, 2, 8));
    assert_ne!(renewed.scope(), old.scope());
    let t = now();
    let health = renewed.health(t).unwrap();
    assert_eq!(health.stale, 4, "{health:?}");
    assert_eq!(
        (health.pending_upload, health.usable, health.live),
        (0, 0, 0)
    );
    assert_eq!(health.held, 4, "stale KeyPackages count in the cap");
    assert_eq!(health.recommended, PoolAction::RetireStaleCredential(4));
    assert!(
        health.actions.contains(&PoolAction::Replenish(4)),
        "{health:?}"
    );
    assert!(renewed.pending_upload().unwrap().ready.is_empty());

    let new_refs = renewed.replenish().unwrap();
    assert_eq!(new_refs.len(), 4);
    assert!(set(&new_refs).is_disjoint(&set(&old_refs)));
    for r in &new_refs {
        assert_eq!(identity_of(provider.storage(), r), b"alice@2026");
    }
    let pending = renewed.pending_upload().unwrap();
    assert_eq!(set(&pending.ready_refs()), set(&new_refs));
    for upload in &pending.ready {
        // What the server receives carries the renewed credential.
        let key_package = KeyPackageIn::tls_deserialize_exact(&upload.key_package).unwrap();
        let credential = key_package.unverified_credential().credential;
        let identity = BasicCredential::try_from(credential).unwrap();
        assert_eq!(identity.identity(), b"alice@2026");
    }
    // The old credential's KeyPackages are not the renewed pool's to mark.
    assert!(matches!(
        renewed.mark_uploaded(&old_refs[2..3]),
        Err(Error::NotFound { .. })
    ));
    // Eight keys on disk for one signature key: the cap is reached, stale
    // ones included.
    assert!(matches!(
        renewed.generate(1),
        Err(Error::HardCapExceeded {
            held: 8,
            hard_cap: 8,
            ..
        })
    ));

    let retired = renewed.retire_stale_credentials().unwrap();
    assert_eq!(set(&retired), set(&old_refs));
    let storage = provider.storage();
    for r in &old_refs {
        assert!(storage.key_package_bundle(r).unwrap().is_none());
        assert!(storage.get_metadata(r).unwrap().is_none());
    }
    // Withdrawals for exactly the two a server held.
    let mut outbox: Vec<_> = renewed
        .pending_withdrawals()
        .unwrap()
        .into_iter()
        .map(|w| (w.keypackage_ref, w.reason, w.scope))
        .collect();
    outbox.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected: Vec<_> = old_refs[..2]
        .iter()
        .map(|r| {
            (
                r.clone(),
                WithdrawalReason::CredentialReplaced,
                Some(old.scope().clone()),
            )
        })
        .collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(outbox, expected);

    let health = renewed.health(t).unwrap();
    assert_eq!((health.stale, health.held), (0, 4), "{health:?}");
    assert_eq!(health.recommended, PoolAction::Withdraw(2));
    assert!(!health
        .actions
        .iter()
        .any(|a| matches!(a, PoolAction::RetireStaleCredential(_))));
    assert!(renewed.retire_stale_credentials().unwrap().is_empty());
    assert!(storage.verify().unwrap().is_consistent());
}

#[test]
fn within_the_grace_window_a_welcome_for_a_retired_key_package_still_joins() {
    let (_dir, path) = common::temp_db();
    let provider = open(&path, Duration::from_secs(3_600));
    let client = Client::new();
    let old = client.pool(&provider, "alice@2025", sized(4, 2, 8));
    let old_refs = old.replenish().unwrap();
    let old_last_resort = old.ensure_last_resort(now()).unwrap().created.unwrap();
    old.pending_upload().unwrap();
    old.mark_uploaded(&old_refs).unwrap();
    old.mark_uploaded(&[&old_last_resort]).unwrap();
    // Inviters fetched one of them, and the last-resort one, before the
    // renewal.
    let bundle = |r: &[u8]| provider.storage().key_package_bundle(r).unwrap().unwrap();
    let (fetched, fetched_last_resort) = (bundle(&old_refs[0]), bundle(&old_last_resort));

    let renewed = client.pool(&provider, "alice@2026", sized(4, 2, 8));
    let mut retired = old_refs.clone();
    retired.push(old_last_resort.clone());
    assert_eq!(
        set(&renewed.retire_stale_credentials().unwrap()),
        set(&retired)
    );
    let health = renewed.health(now()).unwrap();
    assert_eq!(
        (health.stale, health.in_grace, health.held),
        (0, 4, 4),
        "in their window, they are no longer stale but count in the cap: {health:?}"
    );
    let old_health = old.health(now()).unwrap();
    assert_eq!((old_health.in_grace, old_health.usable), (4, 0));
    for r in &retired {
        let row = provider.storage().get_metadata(r).unwrap().unwrap();
        assert_eq!(row.status, KeyPackageStatus::Expired);
        assert!(row.retired_until.is_some());
    }
    assert_eq!(health.pending_withdrawals, 5, "the last resort's included");
    // Room for only four of the renewed credential's own until the window
    // ends.
    assert_eq!(renewed.replenish().unwrap().len(), 4);

    for (inviter, key_package) in [("bob", &fetched), ("cat", &fetched_last_resort)] {
        let (_group, welcome) =
            PlainClient::new(inviter).create_group_with(key_package.key_package());
        let group = join(&provider, welcome).unwrap();
        let members: Vec<Vec<u8>> = group
            .members()
            .map(|m| {
                BasicCredential::try_from(m.credential)
                    .unwrap()
                    .identity()
                    .to_vec()
            })
            .collect();
        assert!(members.contains(&b"alice@2025".to_vec()), "{members:?}");
    }
    assert!(provider.storage().verify().unwrap().is_consistent());
}

#[test]
fn two_credentials_on_one_key_never_cross() {
    let (_dir, path) = common::temp_db();
    let provider = open(&path, Duration::ZERO);
    let client = Client::new();
    let config = sized(8, 2, 64);
    let work = client.pool(&provider, "alice (work)", config.clone());
    let home = client.pool(&provider, "alice (home)", config);
    let work_refs = work.generate(3).unwrap();
    let home_refs = home.generate(5).unwrap();
    work.mark_uploaded(&work_refs[..1]).unwrap();
    home.mark_uploaded(&home_refs[..2]).unwrap();
    home.ensure_last_resort(now()).unwrap();

    let t = now();
    let (w, h) = (work.health(t).unwrap(), home.health(t).unwrap());
    assert_eq!((w.pending_upload, w.usable, w.live), (2, 1, 3), "{w:?}");
    assert_eq!((h.pending_upload, h.usable, h.live), (3, 2, 5), "{h:?}");
    assert_eq!(
        (w.stale, h.stale),
        (6, 3),
        "home's last resort is stale for work"
    );
    assert_eq!((w.held, h.held), (8, 8));
    // One key presents one credential at a time: each pool takes the
    // other's KeyPackages for an older credential's and asks to retire
    // them, and sees none of them otherwise.
    assert_eq!(w.recommended, PoolAction::RetireStaleCredential(6));
    assert_eq!(h.recommended, PoolAction::RetireStaleCredential(3));
    assert!(!w.has_last_resort && !w.last_resort_pending);
    assert!(h.last_resort_pending);
    assert_eq!(w.count(KeyPackageStatus::Created), 2);
    assert_eq!(h.count(KeyPackageStatus::Created), 4);

    assert_eq!(
        set(&work.pending_upload().unwrap().ready_refs()),
        set(&work_refs[1..])
    );
    assert_eq!(home.pending_upload().unwrap().ready.len(), 4);
    assert!(matches!(
        work.mark_uploaded(&home_refs[2..3]),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        home.mark_failed(&work_refs[1..2]),
        Err(Error::NotFound { .. })
    ));

    let mut scopes = provider.storage().scopes(t).unwrap();
    scopes.sort_by_key(|s| s.held);
    let summary: Vec<_> = scopes
        .iter()
        .map(|s| (s.scope.clone(), s.held, s.pending, s.usable, s.stale))
        .collect();
    assert_eq!(
        summary,
        vec![
            (work.scope().clone(), 3, 2, 1, 6),
            (home.scope().clone(), 5, 3, 2, 3),
        ]
    );

    // Removing one credential's scope leaves the other's KeyPackages.
    let removed = provider.storage().remove_scope(work.scope()).unwrap();
    assert_eq!(set(&removed), set(&work_refs));
    let h = home.health(t).unwrap();
    assert_eq!((h.stale, h.held, h.live), (0, 5, 5));
    assert!(provider.storage().verify().unwrap().is_consistent());
}

#[test]
fn rows_written_before_credentials_get_theirs_from_their_bundles() {
    let (dir, path) = common::temp_db();
    let client = Client::new();
    let mut refs = Vec::new();
    let damaged;
    {
        let provider = open(&path, Duration::ZERO);
        let first = client.pool(&provider, "alice@2025", sized(8, 2, 64));
        let second = client.pool(&provider, "alice@2026", sized(8, 2, 64));
        refs.push(first.generate(2).unwrap());
        refs.push(second.generate(3).unwrap());
        second.mark_uploaded(&refs[1][..1]).unwrap();
        // A withdrawal recorded before credentials were: its row, and the
        // credential with it, are gone.
        let withdrawn = first.generate(1).unwrap();
        first.mark_uploaded(&withdrawn).unwrap();
        provider
            .storage()
            .remove_key_package(&withdrawn[0])
            .unwrap();
        // One bundle that no longer decodes: its row must not be given a
        // guess.
        damaged = second.generate(1).unwrap().remove(0);
        common::corrupt_latest_bundle(provider.storage());
    }
    common::downgrade_to_v7(&path);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let columns: Vec<String> = common::column(
            &conn,
            "SELECT name FROM pragma_table_info('keypackage_pool_metadata')",
        );
        assert!(!columns.iter().any(|c| c == "credential"));
    }

    let provider = open(&path, Duration::ZERO);
    let storage = provider.storage();
    for (identity, refs) in ["alice@2025", "alice@2026"].into_iter().zip(&refs) {
        let expected = PoolScope::new(&client.credential(identity), common::CIPHERSUITE);
        for r in refs {
            let row = storage.get_metadata(r).unwrap().unwrap();
            assert_eq!(row.scope.as_ref(), Some(&expected), "{identity}");
        }
    }
    let row = storage.get_metadata(&damaged).unwrap().unwrap();
    assert_eq!(
        row.scope, None,
        "a damaged bundle's credential is not guessed"
    );
    let report = storage.verify().unwrap();
    assert_eq!(report.undecodable_bundles, vec![damaged.clone()]);
    assert!(!report.counts_out_of_date, "{report:?}");

    let first = client.pool(&provider, "alice@2025", sized(8, 2, 64));
    let second = client.pool(&provider, "alice@2026", sized(8, 2, 64));
    let t = now();
    let (f, s) = (first.health(t).unwrap(), second.health(t).unwrap());
    assert_eq!((f.pending_upload, f.usable, f.stale), (2, 0, 4), "{f:?}");
    assert_eq!((s.pending_upload, s.usable, s.stale), (2, 1, 3), "{s:?}");
    // The damaged one is stale for both: neither can show it is theirs.
    assert_eq!((f.held, s.held), (6, 6));

    // The old withdrawal is kept, listed under its key and ciphersuite with
    // no credential: a scope no pool has, for which nothing is stale.
    let pending = storage.pending_withdrawals().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].scope, None);
    let legacy: Vec<_> = storage
        .scopes(t)
        .unwrap()
        .into_iter()
        .filter(|s| s.scope.credential.is_empty())
        .map(|s| {
            (
                s.scope.signature_key,
                s.pending_withdrawals,
                s.held,
                s.stale,
            )
        })
        .collect();
    assert_eq!(legacy, vec![(first.scope().signature_key.clone(), 1, 0, 0)]);
    drop(provider);
    drop(dir);
}

#[test]
fn the_scopes_guides_renewal_flow_is_the_doc_test_that_runs() {
    let readme = include_str!("../docs/guide/scopes.md");
    let marker = "The renewal flow, compiled and run as the doc test of";
    let after = &readme[readme
        .find(marker)
        .expect("the scopes guide shows the renewal flow")..];
    let block = &after[after.find("```rust\n").unwrap() + "```rust\n".len()..];
    let block = &block[..block.find("```").unwrap()];
    // The doc comment of `retire_stale_credentials`, as the lines rustdoc
    // compiles.
    let source = include_str!("../src/pool/mod.rs");
    let end = source.find("pub fn retire_stale_credentials").unwrap();
    let start = source[..end].rfind("    /// ```\n    /// use").unwrap();
    let doc: Vec<&str> = source[start..end]
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("///"))
        .map(|line| line.strip_prefix(' ').unwrap_or(line))
        .collect();
    let shown: Vec<&str> = block.lines().collect();
    assert!(shown.len() >= 15, "{shown:?}");
    let first = doc.iter().position(|line| *line == shown[0]).unwrap();
    assert_eq!(&doc[first..first + shown.len()], &shown[..]);
}
