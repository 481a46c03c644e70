//! The erasure bound holds by the clock: secrets OpenMLS overwrote leave
//! the files within the bound while the storage is open and nothing more is
//! committed, once a reader in another process lets go, and after a crash
//! at the next open.
//!
//! The other processes are this test binary, re-run with `ERASURE_CHILD`
//! set to a role and `ERASURE_DB` to the database.

mod common;

use std::time::{Duration, Instant};

use common::{
    child,
    conversation::Conversation,
    to_hex,
    traces::{eventually, from_hex, traces_of_all, until_none},
};
use openmls_keypackage_pool::{ErasurePolicy, PoolStorage, StorageOptions};

/// The default bound.
const BOUND: Duration = Duration::from_secs(2);

/// How long past the bound a test waits before it calls secrets found: the
/// eraser must be scheduled on a loaded machine.
const SLACK: Duration = Duration::from_secs(3);

/// Bob decrypts four messages in one epoch; returns the conversation and
/// the secrets the last three superseded.
fn four_messages(options: &StorageOptions) -> (Conversation, Vec<Vec<u8>>) {
    four_messages_in(Conversation::new(options))
}

/// [`four_messages`] in a conversation already set up.
fn four_messages_in(mut chat: Conversation) -> (Conversation, Vec<Vec<u8>>) {
    chat.messages(1);
    let old = chat.stored_message_secrets();
    chat.messages(3);
    let superseded = chat.superseded(&old);
    (chat, superseded)
}

#[test]
fn an_idle_storage_erases_overwritten_secrets_within_the_bound() {
    // Every commit that leaves secrets behind comes after this instant, so
    // no erasure by the clock can come sooner than a bound after it.
    let started = Instant::now();
    let (chat, superseded) = four_messages(&StorageOptions::default());
    let conn = &*chat.bob.storage().connection();
    // Erased by the clock, not at once: the bound is what is promised, and
    // erasing at every commit is what it saves. Unless the setup itself
    // took the bound, the erasure must still be owed.
    let owed = common::erasure_pending(conn);
    assert!(
        owed || started.elapsed() >= BOUND,
        "the commits erased at once, {:?} into the bound",
        started.elapsed()
    );
    // Nothing is committed from here on; the storage stays open. The
    // erasure is over once the secrets are gone and the record is cleared
    // (which the eraser commits just after the checkpoint).
    let erased = eventually(BOUND + SLACK, || {
        traces_of_all(&chat.path, &superseded).is_empty() && !common::erasure_pending(conn)
    });
    assert!(
        erased,
        "left: {:?}, record still set: {}",
        traces_of_all(&chat.path, &superseded),
        common::erasure_pending(conn)
    );
    assert!(
        started.elapsed() >= BOUND,
        "erased after {:?}, sooner than the bound allows",
        started.elapsed()
    );
}

#[test]
fn without_the_erasure_of_overwrites_an_idle_storage_keeps_them() {
    // The control: the same search, the same wait, finds them.
    let options = StorageOptions {
        erasure: ErasurePolicy::Deletions,
        ..StorageOptions::default()
    };
    let (chat, superseded) = four_messages(&options);
    std::thread::sleep(BOUND + SLACK);
    assert!(!traces_of_all(&chat.path, &superseded).is_empty());
}

/// In a normal run nothing; as a child of the tests below, the role
/// `ERASURE_CHILD` names.
#[test]
fn child() {
    let Some((role, db)) = child::role() else {
        return;
    };
    let db = db.as_path();
    match role.as_str() {
        "reader" => child::hold_read_transaction(db),
        // Bob on `db` with a bound far away: decrypts four messages, prints
        // the secrets they superseded, and waits to be killed.
        "member" => {
            let options = StorageOptions {
                erasure: ErasurePolicy::Overwrites {
                    within: Duration::from_secs(600),
                },
                ..StorageOptions::default()
            };
            let bob =
                openmls_keypackage_pool::PoolProvider::open_with_options(db, &options).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let chat = Conversation::with(dir, db.to_owned(), bob);
            let (_chat, superseded) = four_messages_in(chat);
            for secret in superseded {
                println!("erasure-child-secret {}", to_hex(&secret));
            }
            println!("{}", child::READY);
            std::thread::sleep(Duration::from_secs(120));
        }
        other => panic!("unknown child role {other:?}"),
    }
}

#[test]
fn a_reader_in_another_process_delays_the_erasure_until_it_lets_go() {
    // The reader takes its snapshot before the messages, however slow the
    // setup: their pages land after it, so the log cannot be emptied while
    // it holds.
    let chat = Conversation::new(&StorageOptions::default());
    let (mut reader, _) = child::start("reader", &chat.path);
    let (chat, superseded) = four_messages_in(chat);
    std::thread::sleep(BOUND + SLACK);
    assert!(
        !traces_of_all(&chat.path, &superseded).is_empty(),
        "the reader did not hold the log"
    );
    // The reader commits and exits; the writer commits nothing more. Past
    // the bound the eraser tries again within a quarter of the time overdue
    // (here a few seconds, so about a second).
    assert!(reader.release());
    let found = until_none(SLACK * 2, || traces_of_all(&chat.path, &superseded));
    assert_eq!(found, Vec::<String>::new());
}

#[test]
fn a_process_killed_before_the_deadline_leaves_the_erasure_to_the_next_open() {
    let (_dir, path) = common::temp_db();
    let (child, printed) = child::start("member", &path);
    let superseded: Vec<Vec<u8>> = printed
        .iter()
        .filter_map(|line| line.split("erasure-child-secret ").nth(1))
        .map(|hex| from_hex(hex.trim()))
        .collect();
    assert!(!superseded.is_empty(), "the child reported nothing");
    // Control: the killed process's log still holds them.
    assert!(!traces_of_all(&path, &superseded).is_empty());
    drop(child); // SIGKILL, long before the child's deadline

    let _storage = PoolStorage::open(&path).unwrap();
    assert_eq!(traces_of_all(&path, &superseded), Vec::<String>::new());
}
