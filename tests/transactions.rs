//! One OpenMLS operation, one transaction: what a rollback leaves, in the
//! store and in the `MlsGroup` in memory, and the application's own rows
//! written with an operation.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use common::{build_key_package, conversation::Conversation, join, Identity, PlainClient};
use openmls::prelude::*;
use openmls_keypackage_pool::{Error, PoolProvider, StorageOptions};

type BoxError = Box<dyn std::error::Error>;

/// Bob, on a database file, in a group Alice (in memory) created.
fn pair() -> Conversation {
    Conversation::new(&StorageOptions::default())
}

/// The epoch of Bob's group as the store holds it.
fn stored_epoch(pair: &Conversation) -> u64 {
    MlsGroup::load(pair.bob.storage(), pair.bob_group.group_id())
        .unwrap()
        .expect("stored")
        .epoch()
        .as_u64()
}

/// Processes `message` and merges the commit it carries.
fn process_and_merge(
    group: &mut MlsGroup,
    provider: &PoolProvider,
    message: ProtocolMessage,
) -> Result<(), BoxError> {
    let processed = group.process_message(provider, message)?;
    match processed.into_content() {
        ProcessedMessageContent::StagedCommitMessage(staged) => {
            group.merge_staged_commit(provider, *staged)?;
            Ok(())
        }
        other => Err(format!("expected a commit, got {other:?}").into()),
    }
}

/// Decrypts an application message.
fn decrypt(
    group: &mut MlsGroup,
    provider: &PoolProvider,
    message: ProtocolMessage,
) -> Result<Vec<u8>, BoxError> {
    match group.process_message(provider, message)?.into_content() {
        ProcessedMessageContent::ApplicationMessage(message) => Ok(message.into_bytes()),
        other => Err(format!("expected an application message, got {other:?}").into()),
    }
}

/// What the issue reported, kept as the reason for `group_transaction`: a
/// plain `transaction` rolls the store back, but not the group in memory,
/// which is then an epoch ahead and refuses the redelivered commit.
#[test]
fn after_a_plain_transaction_rolls_back_a_merge_the_group_in_memory_is_ahead() {
    let mut pair = pair();
    let commit = pair.alice_commits();
    let before = pair.bob_group.epoch().as_u64();
    let failed: Result<(), BoxError> = pair.bob.transaction(|bob| {
        process_and_merge(&mut pair.bob_group, bob, commit.clone())?;
        Err("the application failed after the merge".into())
    });
    assert!(failed.is_err());
    assert_eq!(stored_epoch(&pair), before, "the store rolled back");
    assert_eq!(
        pair.bob_group.epoch().as_u64(),
        before + 1,
        "memory did not"
    );
    let redelivered = process_and_merge(&mut pair.bob_group, &pair.bob, commit);
    assert!(redelivered.is_err(), "the group ahead refuses the commit");
}

#[test]
fn an_error_after_a_merge_in_a_group_transaction_leaves_the_group_as_stored() {
    let mut pair = pair();
    let commit = pair.alice_commits();
    let before = pair.bob_group.epoch().as_u64();
    let failed: Result<(), BoxError> =
        pair.bob
            .group_transaction(&mut pair.bob_group, |group, bob| {
                process_and_merge(group, bob, commit.clone())?;
                assert_eq!(group.epoch().as_u64(), before + 1);
                Err("the application failed after the merge".into())
            });
    assert_eq!(
        failed.unwrap_err().to_string(),
        "the application failed after the merge"
    );
    goes_on_from_the_old_epoch(&mut pair, commit, before);
}

/// After a rolled-back merge: the group in memory and in the store are at
/// epoch `before`, the redelivered `commit` merges, and the next message
/// decrypts.
fn goes_on_from_the_old_epoch(pair: &mut Conversation, commit: ProtocolMessage, before: u64) {
    assert_eq!(pair.bob_group.epoch().as_u64(), before);
    assert_eq!(stored_epoch(pair), before);
    pair.bob
        .group_transaction(&mut pair.bob_group, |group, bob| {
            process_and_merge(group, bob, commit)
        })
        .unwrap();
    assert_eq!(pair.bob_group.epoch().as_u64(), before + 1);
    assert_eq!(stored_epoch(pair), before + 1);
    let hello = pair.alice_says(b"after the redelivery");
    assert_eq!(
        decrypt(&mut pair.bob_group, &pair.bob, hello).unwrap(),
        b"after the redelivery"
    );
}

#[test]
fn a_panic_after_a_merge_in_a_group_transaction_leaves_the_group_as_stored() {
    let mut pair = pair();
    let commit = pair.alice_commits();
    let before = pair.bob_group.epoch().as_u64();
    let panicked = catch_unwind(AssertUnwindSafe(|| {
        let _: Result<(), BoxError> =
            pair.bob
                .group_transaction(&mut pair.bob_group, |group, bob| {
                    process_and_merge(group, bob, commit.clone())?;
                    panic!("the application panicked after the merge");
                });
    }));
    assert!(panicked.is_err(), "the panic went on");
    goes_on_from_the_old_epoch(&mut pair, commit, before);
}

#[test]
fn a_message_rolled_back_decrypts_again() {
    let mut pair = pair();
    let hello = pair.alice_says(b"twice");
    let failed: Result<Vec<u8>, BoxError> =
        pair.bob
            .group_transaction(&mut pair.bob_group, |group, bob| {
                decrypt(group, bob, hello.clone())?;
                Err("not recorded".into())
            });
    assert!(failed.is_err());
    // Without the rollback the message's key would be gone: OpenMLS
    // deletes it when it decrypts.
    let text = pair
        .bob
        .group_transaction(&mut pair.bob_group, |group, bob| decrypt(group, bob, hello))
        .unwrap();
    assert_eq!(text, b"twice");
}

#[test]
fn a_failed_message_in_a_backlog_rolls_back_alone() {
    let mut pair = pair();
    let backlog: Vec<_> = (0..5)
        .map(|i| pair.alice_says(format!("message {i}").as_bytes()))
        .collect();
    let mut read = Vec::new();
    let mut failed = Vec::new();
    pair.bob
        .transaction(|bob| {
            for (i, message) in backlog.iter().enumerate() {
                let outcome: Result<Vec<u8>, BoxError> =
                    bob.group_transaction(&mut pair.bob_group, |group, bob| {
                        let text = decrypt(group, bob, message.clone())?;
                        if i == 2 {
                            return Err("message 2 is refused by the application".into());
                        }
                        Ok(text)
                    });
                match outcome {
                    Ok(text) => read.push(text),
                    Err(_) => failed.push(i),
                }
            }
            Ok::<_, BoxError>(())
        })
        .unwrap();
    assert_eq!(failed, [2]);
    assert_eq!(read.len(), 4);
    // Message 2 rolled back alone: its key is still there, and it decrypts
    // now, after the commit of the rest.
    let again = decrypt(&mut pair.bob_group, &pair.bob, backlog[2].clone()).unwrap();
    assert_eq!(again, b"message 2");
    // The others' keys were used up in the commit.
    assert!(decrypt(&mut pair.bob_group, &pair.bob, backlog[1].clone()).is_err());
}

#[test]
fn a_group_reload_that_finds_no_group_says_so() {
    let mut pair = pair();
    // The group is deleted from the store behind the transaction's back, so
    // the reload after the rollback finds nothing.
    let group_id = pair.bob_group.group_id().clone();
    let mut copy = MlsGroup::load(pair.bob.storage(), &group_id)
        .unwrap()
        .unwrap();
    copy.delete(pair.bob.storage()).unwrap();
    let failed: Result<(), Error> = pair
        .bob
        .group_transaction(&mut pair.bob_group, |_, _| Err(Error::TransactionLost));
    match failed {
        Err(Error::GroupReload {
            group_id: id,
            reason,
        }) => {
            assert_eq!(id.0, group_id.as_slice());
            assert!(reason.contains("no such group"), "{reason}");
        }
        other => panic!("expected GroupReload, got {other:?}"),
    }
}

/// A Welcome for Bob's KeyPackage on `path`, with its group id.
fn invitation(bob: &PoolProvider) -> (Welcome, GroupId, Vec<u8>) {
    let bundle = build_key_package(bob, &Identity::new("bob"), false);
    let kp_ref = bundle
        .key_package()
        .hash_ref(bob.crypto())
        .unwrap()
        .as_slice()
        .to_vec();
    let alice = PlainClient::new("alice");
    let (group, welcome) = alice.create_group_with(bundle.key_package());
    (welcome, group.group_id().clone(), kp_ref)
}

#[test]
fn a_rolled_back_join_keeps_the_key_package_and_the_welcome_joins_later() {
    let (_dir, path) = common::temp_db();
    let bob = PoolProvider::open(&path).unwrap();
    let (welcome, group_id, kp_ref) = invitation(&bob);
    let failed: Result<MlsGroup, BoxError> = bob.transaction(|bob| {
        join(bob, welcome.clone())?;
        Err("the application could not record the group".into())
    });
    assert!(failed.is_err());
    assert!(bob.storage().key_package_bundle(&kp_ref).unwrap().is_some());
    assert!(bob.storage().get_metadata(&kp_ref).unwrap().is_some());
    assert!(MlsGroup::load(bob.storage(), &group_id).unwrap().is_none());

    let group = bob
        .transaction(|bob| join(bob, welcome).map_err(BoxError::from))
        .unwrap();
    assert_eq!(group.group_id(), &group_id);
    assert!(bob.storage().key_package_bundle(&kp_ref).unwrap().is_none());
    // The erasure after the join cleared its record without a sync, and put
    // the connection's own setting (FULL) back for every later commit.
    assert!(!common::erasure_pending(&bob.storage().connection()));
    let synchronous: i64 = bob
        .storage()
        .connection()
        .query_row("PRAGMA synchronous", [], |row| row.get(0))
        .unwrap();
    assert_eq!(synchronous, 2);
    assert!(MlsGroup::load(bob.storage(), &group_id).unwrap().is_some());
}

fn app_rows(provider: &PoolProvider) -> Vec<Vec<u8>> {
    common::column(
        &provider.storage().connection(),
        "SELECT group_id FROM app_conversations",
    )
}

/// Joins from `welcome` and records the conversation in the application's
/// own table, in one transaction; fails after both when `fail` is set.
fn join_and_record(bob: &PoolProvider, welcome: Welcome, fail: bool) -> Result<MlsGroup, BoxError> {
    bob.transaction(|bob| {
        let group = join(bob, welcome)?;
        bob.storage().connection().execute(
            "INSERT INTO app_conversations (group_id) VALUES (?1)",
            [group.group_id().as_slice()],
        )?;
        if fail {
            return Err("the application failed after recording".into());
        }
        Ok(group)
    })
}

#[test]
fn the_applications_own_row_commits_with_the_join_or_not_at_all() {
    let (_dir, path) = common::temp_db();
    let bob = PoolProvider::open(&path).unwrap();
    bob.storage()
        .connection()
        .execute_batch("CREATE TABLE app_conversations (group_id BLOB PRIMARY KEY)")
        .unwrap();
    let (welcome, group_id, kp_ref) = invitation(&bob);

    assert!(join_and_record(&bob, welcome.clone(), true).is_err());
    assert!(app_rows(&bob).is_empty());
    assert!(MlsGroup::load(bob.storage(), &group_id).unwrap().is_none());
    assert!(bob.storage().key_package_bundle(&kp_ref).unwrap().is_some());

    join_and_record(&bob, welcome, false).unwrap();
    drop(bob);
    let reopened = PoolProvider::open(&path).unwrap();
    assert_eq!(app_rows(&reopened), [group_id.as_slice().to_vec()]);
    assert!(MlsGroup::load(reopened.storage(), &group_id)
        .unwrap()
        .is_some());
}

#[test]
fn a_group_created_in_a_transaction_that_fails_leaves_nothing() {
    let (_dir, path) = common::temp_db();
    let alice = PoolProvider::open(&path).unwrap();
    // Created bare, a group writes these tables.
    let identity = Identity::new("alice");
    let mut id = None;
    let failed: Result<(), BoxError> = alice.transaction(|alice| {
        let group = MlsGroup::new(
            alice,
            &identity.signer,
            &common::group_create_config(),
            identity.credential.clone(),
        )?;
        id = Some(group.group_id().clone());
        Err("no".into())
    });
    assert!(failed.is_err());
    let id = id.expect("the group was created inside");
    assert!(MlsGroup::load(alice.storage(), &id).unwrap().is_none());
    for table in [
        "openmls_group_data",
        "openmls_encryption_keys",
        "openmls_own_leaf_nodes",
    ] {
        let rows: i64 = alice
            .storage()
            .connection()
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
                row.get(0)
            })
            .unwrap();
        assert_eq!(rows, 0, "{table} keeps something of the group");
    }
    // The check can fail: the same group created bare is there.
    MlsGroup::new(
        &alice,
        &identity.signer,
        &common::group_create_config(),
        identity.credential.clone(),
    )
    .unwrap();
    let rows: i64 = alice
        .storage()
        .connection()
        .query_row("SELECT COUNT(*) FROM openmls_group_data", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert!(rows > 0);
}

#[test]
fn close_reports_an_erasure_a_reader_keeps_and_the_next_open_finishes_it() {
    let (_dir, path) = common::temp_db();
    let options = StorageOptions {
        busy_timeout: std::time::Duration::from_millis(100),
        ..StorageOptions::default()
    };
    let bob = PoolProvider::open_with_options(&path, &options).unwrap();
    let (welcome, _, _) = invitation(&bob);
    // A reader in the way: a read transaction of another connection, begun
    // before the join deletes the KeyPackage.
    let reader = rusqlite::Connection::open(&path).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader
        .query_row("SELECT COUNT(*) FROM openmls_key_packages", [], |row| {
            row.get(0)
        })
        .unwrap();
    bob.transaction(|bob| join(bob, welcome).map_err(BoxError::from))
        .unwrap();
    assert!(matches!(bob.close(), Err(Error::ErasureIncomplete)));
    reader.execute_batch("COMMIT").unwrap();
    assert!(
        common::erasure_pending(&reader),
        "recorded for the next open"
    );
    drop(reader);

    let reopened = PoolProvider::open_with_options(&path, &options).unwrap();
    assert!(!common::erasure_pending(&reopened.storage().connection()));
    reopened.close().unwrap();
    // Closed: nothing of the process holds the file.
    assert_eq!(
        common::wal_frames(&path.with_extension("db-wal")),
        0,
        "the last close empties the log"
    );
}

#[test]
fn provider_and_storage_are_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<PoolProvider>();
    shared::<openmls_keypackage_pool::PoolStorage>();
    shared::<openmls_keypackage_pool::PoolStorage<openmls_keypackage_pool::codec::JsonCodec>>();
}
