//! Dropping a storage ends its eraser thread, whatever the eraser was
//! doing, and leaves nothing pending unless a reader kept the log.
//!
//! One test in a binary of its own: it counts the process's threads, which
//! tests running beside it would change.

mod common;

use std::time::Duration;

use common::{conversation::Conversation, traces::eventually};
use openmls_keypackage_pool::{ErasurePolicy, PoolStorage, StorageOptions};

/// The names of the process's threads, from `/proc`.
fn thread_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .map(|task| {
            let comm = task.unwrap().path().join("comm");
            std::fs::read_to_string(comm)
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .collect();
    names.sort();
    names
}

/// The names of the process's threads once they equal `expected`, or as
/// they are after 2 s. A thread that `join` has returned for stays listed
/// for a moment (the kernel wakes the joiner before it reaps the task),
/// under its name or an empty one; a thread that was never stopped stays
/// for good.
fn settled_to(expected: &[String]) -> Vec<String> {
    eventually(Duration::from_secs(2), || thread_names() == expected);
    thread_names()
}

/// Threads named for an eraser (the kernel keeps the first 15 bytes of a
/// name).
fn erasers() -> usize {
    thread_names()
        .iter()
        .filter(|name| name.starts_with("keypackage-pool"))
        .count()
}

/// Whether the database records an erasure as pending, read with a
/// connection of its own.
fn recorded_pending(path: &std::path::Path) -> bool {
    common::erasure_pending(&rusqlite::Connection::open(path).unwrap())
}

#[test]
fn dropping_a_storage_leaves_no_thread_and_nothing_pending_but_what_a_reader_holds() {
    // OpenMLS starts a pool of worker threads the first time a group
    // needs one, and keeps it: started here, before the count.
    drop(Conversation::new(&StorageOptions::default()));
    // The dropped conversation's eraser may still be listed (see
    // `settled_to`).
    eventually(Duration::from_secs(2), || {
        erasers() == 0 && !thread_names().iter().any(String::is_empty)
    });
    let before = thread_names();
    assert_eq!(erasers(), 0);

    // Idle: the eraser sleeps with nothing due.
    {
        let (_dir, path) = common::temp_db();
        let storage = PoolStorage::open(&path).unwrap();
        // Counted, not looked up by name: a new thread names itself once it
        // runs.
        assert_eq!(
            thread_names().len(),
            before.len() + 1,
            "a file database in WAL mode has an eraser"
        );
        drop(storage);
        assert_eq!(settled_to(&before), before);
        // In memory there is no log, and no thread.
        let storage = PoolStorage::open_in_memory().unwrap();
        assert_eq!(thread_names().len(), before.len());
        drop(storage);
    }

    // Pending: secrets overwritten, the deadline far away.
    {
        let options = StorageOptions {
            erasure: ErasurePolicy::Overwrites {
                within: Duration::from_secs(600),
            },
            ..StorageOptions::default()
        };
        let mut chat = Conversation::new(&options);
        chat.messages(3);
        assert!(recorded_pending(&chat.path));
        let path = chat.path.clone();
        let dir = chat.dir;
        drop(chat.bob_group);
        drop(chat.bob);
        assert_eq!(settled_to(&before), before);
        assert!(!recorded_pending(&path), "the drop finishes the erasure");
        drop(dir);
    }

    // Running: with no delay the eraser starts at every message, and is
    // often in the middle of one when the storage goes.
    for _ in 0..5 {
        let options = StorageOptions {
            erasure: ErasurePolicy::Overwrites {
                within: Duration::ZERO,
            },
            ..StorageOptions::default()
        };
        let mut chat = Conversation::new(&options);
        chat.messages(2);
        let path = chat.path.clone();
        let dir = chat.dir;
        drop(chat.bob_group);
        drop(chat.bob);
        assert_eq!(settled_to(&before), before);
        assert!(!recorded_pending(&path));
        drop(dir);
    }

    // Blocked: a reader keeps the log; the record stays for the next open.
    {
        let mut chat = Conversation::new(&StorageOptions::default());
        chat.messages(3);
        let reader = rusqlite::Connection::open(&chat.path).unwrap();
        reader
            .execute_batch("BEGIN; SELECT COUNT(*) FROM openmls_group_data;")
            .unwrap();
        let path = chat.path.clone();
        let dir = chat.dir;
        drop(chat.bob_group);
        drop(chat.bob);
        assert_eq!(settled_to(&before), before);
        reader.execute_batch("COMMIT").unwrap();
        drop(reader);
        assert!(recorded_pending(&path), "a blocked erasure stays recorded");
        drop(PoolStorage::open(&path).unwrap());
        assert!(!recorded_pending(&path), "the next open finishes it");
        drop(dir);
    }
}
