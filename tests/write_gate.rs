//! Two handles on one file, under load, with an eraser that checkpoints
//! after every commit: within the process no checkpoint overlaps a write
//! transaction, and the file has one eraser thread, not one per handle.
//!
//! Alone in its test binary: the probe counts the whole process, and the
//! eraser threads are counted by name.

mod common;

use std::{sync::Arc, time::Duration};

use common::{build_key_package, conversation::Conversation, Identity};
use openmls_keypackage_pool::{ErasurePolicy, PoolProvider, StorageOptions};

/// The eraser threads of this process, by the name the crate gives them
/// (cut to 15 bytes by the kernel).
fn eraser_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end() == "keypackage-pool")
        .count()
}

/// Asserts that the process settles at `expected` eraser threads: a new
/// thread names itself once it runs, and a joined one leaves the task list
/// a moment later, so the count is read until it matches, and again after
/// a pause, when it must still match.
fn assert_erasers(expected: usize, why: &str) {
    let settled =
        common::traces::eventually(Duration::from_secs(5), || eraser_threads() == expected);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        settled && eraser_threads() == expected,
        "{why}: {} eraser threads, expected {expected}",
        eraser_threads()
    );
}

#[test]
fn checkpoints_never_overlap_writes_and_a_file_has_one_eraser() {
    let options = StorageOptions {
        // Erase right after every overwrite: the eraser checkpoints as
        // often as it can, while the other handle writes.
        erasure: ErasurePolicy::Overwrites {
            within: Duration::ZERO,
        },
        ..StorageOptions::default()
    };
    let mut chat = Conversation::new(&options);
    assert_erasers(1, "the first handle starts one");
    let second = Arc::new(PoolProvider::open_with_options(&chat.path, &options).unwrap());
    assert_erasers(1, "the second handle shares the eraser");

    openmls_keypackage_pool::__probe::start();
    let builder = {
        let second = Arc::clone(&second);
        std::thread::spawn(move || {
            let identity = Identity::new("carol");
            for _ in 0..40 {
                build_key_package(&*second, &identity, false);
            }
        })
    };
    let deleter = {
        let second = Arc::clone(&second);
        std::thread::spawn(move || {
            // Deleting KeyPackages erases at the end of each commit, on the
            // storage's own connection.
            for _ in 0..20 {
                let refs = second
                    .storage()
                    .get_metadata_by_status(openmls_keypackage_pool::KeyPackageStatus::Created)
                    .unwrap();
                if let Some(row) = refs.first() {
                    second
                        .storage()
                        .remove_key_package(&row.keypackage_ref)
                        .unwrap();
                }
            }
        })
    };
    // Meanwhile, on the first handle, messages overwrite secrets.
    for _ in 0..10 {
        chat.messages(4);
    }
    builder.join().unwrap();
    deleter.join().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let counts = openmls_keypackage_pool::__probe::counts();
    assert!(counts.writes > 50, "{counts:?}");
    assert!(counts.checkpoints > 10, "{counts:?}");
    assert_eq!(counts.overlaps, 0, "{counts:?}");

    drop(chat);
    assert_erasers(1, "the remaining handle keeps the eraser");
    drop(second);
    assert_erasers(0, "the last handle stops it");

    // Handles opened at the same moment on several threads still share one.
    let (_dir, path) = common::temp_db();
    drop(PoolProvider::open(&path).unwrap());
    let barrier = Arc::new(std::sync::Barrier::new(4));
    let openers: Vec<_> = (0..4)
        .map(|_| {
            let (path, barrier) = (path.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                PoolProvider::open(&path).unwrap()
            })
        })
        .collect();
    let handles: Vec<PoolProvider> = openers.into_iter().map(|t| t.join().unwrap()).collect();
    assert_erasers(1, "one eraser for four handles opened at once");
    drop(handles);
    assert_erasers(0, "the last of the four stops it");
}
