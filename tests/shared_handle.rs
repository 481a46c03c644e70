//! One provider shared by threads: each thread builds KeyPackages, joins
//! its own group and processes its messages on the same `Arc<PoolProvider>`,
//! some transactions failing on purpose; nothing is lost, nothing of a
//! failed transaction is kept, and no busy error reaches a caller.

mod common;

use std::sync::Arc;

use common::{into_protocol_message, join, Identity, PlainClient};
use openmls::prelude::*;
use openmls_keypackage_pool::{KeyPackageStatus, PoolProvider};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const THREADS: usize = 4;
const MESSAGES: usize = 12;

/// What one thread did, for the checks at the end.
struct Outcome {
    /// KeyPackages it kept (built in transactions that committed, not used
    /// by its join).
    kept: usize,
    group_id: GroupId,
    epoch: u64,
    /// Every message Alice sent, as decrypted.
    read: Vec<Vec<u8>>,
}

/// One client's life on the shared provider: KeyPackages in batches (every
/// other batch rolled back), a join from one of them, then Alice's
/// messages and a commit, each in a group transaction; every third message
/// fails once on purpose and is redelivered.
fn client(bob: &PoolProvider, name: &str) -> Result<Outcome, BoxError> {
    let identity = Identity::new(name);
    let mut kept = 0;
    let mut published = Vec::new();
    for batch in 0..4 {
        let built: Result<Vec<KeyPackageBundle>, BoxError> = bob.transaction(|bob| {
            let mut built = Vec::new();
            for _ in 0..3 {
                built.push(KeyPackage::builder().build(
                    CIPHERSUITE,
                    bob,
                    &identity.signer,
                    identity.credential.clone(),
                )?);
            }
            if batch % 2 == 1 {
                return Err("this batch is rolled back on purpose".into());
            }
            Ok(built)
        });
        match built {
            Ok(bundles) => {
                kept += bundles.len();
                published.extend(bundles);
            }
            Err(e) if e.to_string().contains("on purpose") => {}
            Err(e) => return Err(e),
        }
    }

    let alice = PlainClient::new(&format!("alice of {name}"));
    let (mut alice_group, welcome) = alice.create_group_with(published[0].key_package());
    let mut group = bob.transaction(|bob| join(bob, welcome).map_err(BoxError::from))?;
    kept -= 1;

    let mut read = Vec::new();
    for i in 0..MESSAGES {
        let message = if i == MESSAGES / 2 {
            let bundle = alice_group.self_update(
                &alice.provider,
                &alice.identity.signer,
                LeafNodeParameters::default(),
            )?;
            alice_group.merge_pending_commit(&alice.provider)?;
            into_protocol_message(bundle.commit())
        } else {
            let text = format!("{name} {i}");
            let out = alice_group.create_message(
                &alice.provider,
                &alice.identity.signer,
                text.as_bytes(),
            )?;
            into_protocol_message(&out)
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            let outcome = bob.group_transaction(&mut group, |group, bob| {
                let processed = group.process_message(bob, message.clone())?;
                let text = match processed.into_content() {
                    ProcessedMessageContent::ApplicationMessage(m) => Some(m.into_bytes()),
                    ProcessedMessageContent::StagedCommitMessage(staged) => {
                        group.merge_staged_commit(bob, *staged)?;
                        None
                    }
                    _ => None,
                };
                if i % 3 == 0 && attempts == 1 {
                    return Err::<_, BoxError>("the first delivery fails on purpose".into());
                }
                Ok(text)
            });
            match outcome {
                Ok(text) => {
                    read.extend(text);
                    break;
                }
                Err(e) if attempts == 1 && e.to_string().contains("on purpose") => continue,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(Outcome {
        kept,
        group_id: group.group_id().clone(),
        epoch: group.epoch().as_u64(),
        read,
    })
}

const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

#[test]
fn threads_sharing_one_provider_lose_nothing_and_keep_nothing_of_a_failed_transaction() {
    let (_dir, path) = common::temp_db();
    let bob = Arc::new(PoolProvider::open(&path).unwrap());
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let bob = Arc::clone(&bob);
            std::thread::spawn(move || client(&bob, &format!("bob {t}")).map_err(|e| e.to_string()))
        })
        .collect();
    let outcomes: Vec<Outcome> = workers
        .into_iter()
        .map(|w| {
            w.join()
                .expect("no thread panicked")
                .expect("no error reached a caller")
        })
        .collect();

    let kept: usize = outcomes.iter().map(|o| o.kept).sum();
    let storage = bob.storage();
    // 2 committed batches of 3 per thread, one of them used by the join.
    assert_eq!(kept, THREADS * (2 * 3 - 1));
    assert_eq!(
        storage.count_by_status(KeyPackageStatus::Created).unwrap(),
        kept
    );
    assert_eq!(common::bundle_count(storage) as usize, kept);
    assert!(storage.verify().unwrap().is_consistent());
    for (t, outcome) in outcomes.iter().enumerate() {
        // Every application message read once, the commit merged.
        let expected: Vec<Vec<u8>> = (0..MESSAGES)
            .filter(|i| *i != MESSAGES / 2)
            .map(|i| format!("bob {t} {i}").into_bytes())
            .collect();
        assert_eq!(outcome.read, expected);
        assert_eq!(outcome.epoch, 2);
        let stored = MlsGroup::load(storage, &outcome.group_id)
            .unwrap()
            .expect("stored");
        assert_eq!(stored.epoch().as_u64(), outcome.epoch);
    }
}

#[test]
fn a_transaction_belongs_to_its_thread_until_it_ends() {
    let storage = Arc::new(openmls_keypackage_pool::PoolStorage::open_in_memory().unwrap());
    let (began, wait_here) = std::sync::mpsc::channel();
    let (go_on, proceed) = std::sync::mpsc::channel::<()>();
    let writer = {
        let storage = Arc::clone(&storage);
        std::thread::spawn(move || {
            storage.transaction(|s| {
                s.create_pool_metadata(&[7; 32], 1_900_000_000)?;
                began.send(()).unwrap();
                proceed.recv().unwrap();
                Err::<(), _>(openmls_keypackage_pool::Error::TransactionLost)
            })
        })
    };
    wait_here.recv().unwrap();
    // Another thread's read waits for the transaction, and never sees its
    // row: it is rolled back before the read runs.
    let reader = {
        let storage = Arc::clone(&storage);
        std::thread::spawn(move || storage.get_metadata(&[7; 32]).unwrap().is_some())
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(!reader.is_finished(), "the read waited for the transaction");
    go_on.send(()).unwrap();
    assert!(writer.join().unwrap().is_err());
    assert!(
        !reader.join().unwrap(),
        "the rolled-back row was never seen"
    );
}
