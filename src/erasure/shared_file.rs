//! What the handles of one process on one database file share: the file's
//! [`WriteGate`], when its next erasure is due, and its one eraser.
//!
//! A storage takes a [`FileLease`] when it opens; the first lease on a file
//! makes its [`SharedFile`], and the last one to go stops the file's eraser.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use super::{eraser::Eraser, Due};
use crate::write_gate::WriteGate;

/// How the process tells one database file from another: the device and
/// inode where it can read them (so two paths to one file are one file),
/// the path otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FileKey {
    #[cfg(unix)]
    Inode(u64, u64),
    Path(std::path::PathBuf),
}

impl FileKey {
    fn of(path: &Path) -> Self {
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::MetadataExt;
            return Self::Inode(meta.dev(), meta.ino());
        }
        Self::Path(std::path::absolute(path).unwrap_or_else(|_| path.to_owned()))
    }
}

/// The state of one database file shared by the process's handles on it.
#[derive(Debug, Default)]
pub(crate) struct SharedFile {
    pub(super) gate: Arc<WriteGate>,
    pub(super) due: Arc<Due>,
    pub(super) eraser: Mutex<Option<Eraser>>,
}

impl SharedFile {
    pub(super) fn eraser(&self) -> MutexGuard<'_, Option<Eraser>> {
        self.eraser.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `eraser` the file's eraser unless another one runs already;
    /// stops whichever of the two is not kept (a handle opened at the same
    /// moment on another thread may have started one).
    pub(super) fn install_eraser(&self, eraser: Eraser) {
        let mut slot = self.eraser();
        let unused = if slot.as_ref().is_some_and(Eraser::is_running) {
            Some(eraser)
        } else {
            slot.replace(eraser)
        };
        drop(slot);
        if let Some(unused) = unused {
            unused.stop();
        }
    }

    /// Stops the file's eraser, waiting for an erasure it is running.
    pub(super) fn stop_eraser(&self) {
        // Taken out first: the eraser is joined with no lock held.
        let eraser = self.eraser().take();
        if let Some(eraser) = eraser {
            eraser.stop();
        }
    }
}

/// Every file some handle of this process has open, with how many handles.
type Registry = HashMap<FileKey, (usize, Arc<SharedFile>)>;

static FILES: Mutex<Option<Registry>> = Mutex::new(None);

fn files() -> MutexGuard<'static, Option<Registry>> {
    FILES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One handle's share of a file; dropping the last one stops the file's
/// eraser.
#[derive(Debug)]
pub(crate) struct FileLease {
    key: Option<FileKey>,
    pub(super) file: Arc<SharedFile>,
}

impl FileLease {
    /// The lease on the file at `path`, or a state of its own for a
    /// database with no file (in memory).
    pub(crate) fn of(path: Option<&Path>) -> Self {
        let Some(path) = path else {
            return Self {
                key: None,
                file: Arc::default(),
            };
        };
        let key = FileKey::of(path);
        let mut files = files();
        let (count, file) = files
            .get_or_insert_with(HashMap::new)
            .entry(key.clone())
            .or_insert_with(|| (0, Arc::default()));
        *count += 1;
        let file = Arc::clone(file);
        Self {
            key: Some(key),
            file,
        }
    }

    /// The file's write gate.
    pub(crate) fn gate(&self) -> &Arc<WriteGate> {
        &self.file.gate
    }

    /// How many other handles of this process hold the file.
    pub(crate) fn others(&self) -> usize {
        let Some(key) = &self.key else { return 0 };
        files()
            .as_ref()
            .and_then(|map| map.get(key))
            .map_or(0, |(count, _)| count.saturating_sub(1))
    }
}

impl Drop for FileLease {
    fn drop(&mut self) {
        let Some(key) = &self.key else {
            self.file.stop_eraser();
            return;
        };
        // The registry stays locked until the eraser has stopped, so that
        // a handle opened meanwhile cannot start a second one on the file.
        let mut files = files();
        let Some(map) = files.as_mut() else { return };
        let last = match map.get_mut(key) {
            Some((count, _)) => {
                *count = count.saturating_sub(1);
                *count == 0
            }
            None => false,
        };
        if last {
            map.remove(key);
            self.file.stop_eraser();
        }
    }
}
