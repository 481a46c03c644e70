//! Every file of the database is readable and writable by its owner alone,
//! under the usual umask of 022, and a symbolic link is never followed.
//!
//! A test binary of its own: the umask is the whole process's.
#![cfg(unix)]

mod common;

use std::{os::unix::fs::PermissionsExt, path::Path};

use common::{build_key_package, Identity};
use openmls_keypackage_pool::{Error, PoolProvider, PoolStorage};

/// Sets the umask most systems start processes with; every test here
/// runs under it.
fn usual_umask() {
    // SAFETY: umask only swaps the process's file-creation mask; it
    // touches no memory of ours.
    unsafe {
        libc::umask(0o022);
    }
}

/// Every file in the database's directory with its permission bits.
fn modes(dir: &Path) -> Vec<(String, u32)> {
    let mut modes: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            (entry.file_name().to_string_lossy().into_owned(), mode)
        })
        .collect();
    modes.sort();
    modes
}

fn assert_owner_only(dir: &Path, when: &str) {
    let modes = modes(dir);
    assert!(
        modes.iter().all(|(_, mode)| *mode == 0o600),
        "{when}: {modes:?}"
    );
}

#[test]
fn every_file_is_owner_only_under_the_usual_umask() {
    usual_umask();
    let (dir, path) = common::temp_db();
    let dir_mode = || std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
    let dir_before = dir_mode();
    let provider = PoolProvider::open(&path).unwrap();
    build_key_package(&provider, &Identity::new("mo"), false);
    let names: Vec<String> = modes(dir.path()).into_iter().map(|(n, _)| n).collect();
    for sidecar in [
        "pool.db",
        "pool.db-wal",
        "pool.db-shm",
        "pool.db-migration-lock",
    ] {
        assert!(names.contains(&sidecar.to_owned()), "{names:?}");
    }
    assert_owner_only(dir.path(), "open, with a WAL, after the migrations");
    assert!(provider.storage().erase_deleted_key_material().unwrap());
    assert_owner_only(dir.path(), "after the erasure");
    drop(provider);
    assert_owner_only(dir.path(), "closed");

    // A database an older build left readable by everyone, sidecars too.
    let provider = PoolProvider::open(&path).unwrap();
    build_key_package(&provider, &Identity::new("mo"), false);
    for (name, _) in modes(dir.path()) {
        let file = dir.path().join(name);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    drop(provider);
    for (name, _) in modes(dir.path()) {
        let file = dir.path().join(name);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let storage = PoolStorage::open(&path).unwrap();
    assert_owner_only(dir.path(), "reopened after an older build");
    drop(storage);
    // The directory is the application's.
    assert_eq!(dir_mode(), dir_before);
}

#[test]
fn a_symlinked_database_path_is_refused_and_its_target_untouched() {
    usual_umask();
    let (dir, target) = common::temp_db();
    drop(PoolStorage::open(&target).unwrap());
    let before = std::fs::read(&target).unwrap();
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    match PoolStorage::open(&link) {
        Err(Error::SymlinkRefused { path }) => assert_eq!(path, link),
        other => panic!("expected SymlinkRefused, got {other:?}"),
    }
    assert_eq!(std::fs::read(&target).unwrap(), before);
    // A dangling link is refused too, and creates nothing where it points.
    let nowhere = dir.path().join("nowhere.db");
    let dangling = dir.path().join("dangling.db");
    std::os::unix::fs::symlink(&nowhere, &dangling).unwrap();
    assert!(matches!(
        PoolStorage::open(&dangling),
        Err(Error::SymlinkRefused { .. })
    ));
    assert!(!nowhere.exists());
}
