//! A SQLite VFS that simulates power loss, for the crash tests: the Rust
//! counterpart of SQLite's own `test6.c` ("crash.test").
//!
//! [`install`] registers a VFS named `"crash"` over the default (unix) VFS,
//! normally as the new default, so that every connection the process opens
//! goes through it, background threads' included. Every file SQLite opens
//! gets this module's I/O methods, which delegate to the real file and
//! remember, per file, what the disk has not yet been told to keep. At a
//! crash point ([`CrashAt`], or [`crash_now`]) the files on disk are
//! rewritten as a power cut could have left them, and the process ends at
//! once with [`CRASH_EXIT_CODE`] (`_exit`: no destructor, no flush, no
//! checkpoint on close).
//!
//! # The model: what is durable when
//!
//! It is the POSIX contract the unix VFS itself relies on, and nothing more:
//!
//! * **File contents.** `xWrite` and `xTruncate` (and a length change a
//!   `SQLITE_FCNTL_SIZE_HINT` makes) reach the real file at once
//!   (so every connection reads what was written), and are also logged as
//!   pending on the file's *inode*, with the bytes they replaced (an undo
//!   entry) and the bytes they wrote. `xSync` on any handle of the inode
//!   makes all of the inode's pending writes and truncates durable (`fsync`
//!   is per inode: the eraser's connection syncing the log makes the main
//!   connection's frames durable too). Nothing else does: not
//!   `SQLITE_FCNTL_SYNC` (a hint the pager sends *before* `xSync`, which
//!   the unix VFS answers `SQLITE_NOTFOUND`), not
//!   `SQLITE_FCNTL_COMMIT_PHASETWO`, not closing the file. The real
//!   `fsync` is skipped unless [`Config::real_sync`] asks for it: the
//!   machine does not really lose power, and a sync costs milliseconds.
//! * **Directory entries.** Creating a file (an `xOpen` that finds no file
//!   at the path) and deleting one (`xDelete`) are pending operations on
//!   the path, durable only once the directory is synced. The unix VFS
//!   syncs a directory in exactly two places, which this VFS mirrors:
//!   (1) the first `xSync` of a handle opened with `SQLITE_OPEN_CREATE` as
//!   a main journal, super-journal or WAL (`UNIXFILE_DIRSYNC`, a one-time
//!   flag per handle: `unixSync` opens the directory and `fsync`s it), and
//!   (2) `xDelete` with its `syncDir` argument set (only under
//!   `synchronous=EXTRA`, for the rollback journal). A directory sync makes
//!   every pending create and delete of that directory durable. A deleted
//!   file's content is kept (a snapshot at unlink time, with its own
//!   pending writes) so that a crash can bring it back.
//! * **The crash** (under [`Policy::Random`]). For each path with pending
//!   directory operations, the crash keeps a prefix of them, of random
//!   length (directory changes are
//!   kept in order per path, none across paths). For each file that exists
//!   after that, its durable image is rebuilt (its current bytes with every
//!   pending entry undone, newest first), then its pending writes and
//!   truncates are replayed in order, each truncate kept or dropped, each
//!   write kept, dropped, or torn: cut into the 512-byte sectors it
//!   touches, each sector kept, dropped or filled with garbage. So every sector of a file ends up holding one of
//!   the versions it had since the last sync (or garbage, where a write
//!   was in flight), in any combination across sectors: no ordering
//!   between unsynced writes is assumed. With
//!   [`Config::psow`] (the default, and what the unix VFS reports:
//!   `SQLITE_IOCAP_POWERSAFE_OVERWRITE`) garbage covers only the bytes the
//!   write wrote; without it the VFS clears that flag from
//!   `xDeviceCharacteristics` (SQLite then pads WAL commits to a sector
//!   boundary) and garbage fills the whole 512-byte sectors the write
//!   touched, neighbours included. [`Policy::DurableOnly`] drops every
//!   pending entry and directory operation (the strictest state),
//!   [`Policy::KeepAll`] keeps them all (what a plain process kill leaves),
//!   and [`Policy::NewestOnly`] keeps, per file, only its newest pending
//!   entries (reordered writes: the older ones never reached the disk).
//!
//! Outside the model: the `-shm` file (the unix VFS opens and maps it
//! itself, never through `xOpen`; after a reboot its content is
//! meaningless, and the first connection truncates it and rebuilds the
//! index from the log, which is what the parent process of a crash test
//! does), files SQLite opens without a name or to delete on close (temp
//! files), files created, written or removed outside SQLite (`std::fs`,
//! such as this crate's owner-only pre-creation of the database file and
//! its migration lock, which count as durable), and metadata other than
//! size. Writes through a handle to a file already unlinked patch the
//! snapshot, which SQLite never does.
//!
//! The state is process-wide, behind one mutex held across each write,
//! truncate, sync, open, delete and the crash itself: no other thread
//! writes while a crash is applied, and the undo entries are exact even
//! with several connections (the storage's eraser has its own).

#![allow(dead_code)]

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    ffi::{c_char, c_int, c_void, CStr, OsStr},
    fs,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    ptr,
    sync::{
        atomic::{AtomicBool, Ordering},
        LazyLock, Mutex, MutexGuard, OnceLock, PoisonError,
    },
};

use rusqlite::ffi;

/// A file as a crash leaves it: its path, and its bytes (`None`: no file).
type FileImage = (PathBuf, Option<Vec<u8>>);

/// The name the VFS is registered under.
pub const VFS_NAME: &str = "crash";

/// The exit status of a process that crashed at its crash point.
pub const CRASH_EXIT_CODE: i32 = 86;

/// The atomic unit of the disk: what a torn write is cut into.
pub const SECTOR: u64 = 512;

/// When the process loses power.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashAt {
    /// Only at [`crash_now`].
    Never,
    /// At the n-th `xSync` of the process (from 1), before it takes effect.
    Sync(u64),
    /// Right after the n-th `xWrite` of the process (from 1) reached the
    /// file: that write is pending like the others.
    Write(u64),
    /// Right after the n-th truncate of a file (`xTruncate`, or a size
    /// change a size hint makes) that changed its length.
    Truncate(u64),
    /// Right after the n-th deletion of a file (`xDelete`).
    Delete(u64),
    /// When the workload has finished (the child calls [`crash_now`]).
    End,
}

impl CrashAt {
    /// `never`, `sync:N` or `write:N`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.split_once(':') {
            None if text == "never" => Some(Self::Never),
            None if text == "end" => Some(Self::End),
            Some(("sync", n)) => n.parse().ok().map(Self::Sync),
            Some(("write", n)) => n.parse().ok().map(Self::Write),
            Some(("truncate", n)) => n.parse().ok().map(Self::Truncate),
            Some(("delete", n)) => n.parse().ok().map(Self::Delete),
            _ => None,
        }
    }

    pub fn to_arg(self) -> String {
        match self {
            Self::Never => "never".into(),
            Self::End => "end".into(),
            Self::Sync(n) => format!("sync:{n}"),
            Self::Write(n) => format!("write:{n}"),
            Self::Truncate(n) => format!("truncate:{n}"),
            Self::Delete(n) => format!("delete:{n}"),
        }
    }
}

/// What a crash keeps of what was not durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Nothing: only what was synced survives.
    DurableOnly,
    /// Everything, as a process kill would leave it.
    KeepAll,
    /// A seeded random choice per pending entry and per path.
    Random,
    /// Reordered writes: of each file's pending entries, only the newest
    /// reached the disk (a seeded cut: everything before it dropped,
    /// everything from it kept); every directory operation kept. The
    /// state that SQLite's sync of the log header after a restart
    /// exists for (its ticket ff5be73dee).
    NewestOnly,
}

impl Policy {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "durable" => Some(Self::DurableOnly),
            "keep" => Some(Self::KeepAll),
            "random" => Some(Self::Random),
            "newest" => Some(Self::NewestOnly),
            _ => None,
        }
    }

    pub fn to_arg(self) -> &'static str {
        match self {
            Self::DurableOnly => "durable",
            Self::KeepAll => "keep",
            Self::Random => "random",
            Self::NewestOnly => "newest",
        }
    }
}

/// How the VFS crashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub at: CrashAt,
    pub policy: Policy,
    /// Seeds the choices of [`Policy::Random`] and the garbage.
    pub seed: u64,
    /// Report (and honour) `SQLITE_IOCAP_POWERSAFE_OVERWRITE`, as the unix
    /// VFS does; `false` clears it, and garbage then fills whole sectors.
    pub psow: bool,
    /// Call the real `fsync` too.
    pub real_sync: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            at: CrashAt::Never,
            policy: Policy::Random,
            seed: 0,
            psow: true,
            real_sync: false,
        }
    }
}

/// What the VFS has seen since it was installed (tracked files only).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub syncs: u64,
    pub writes: u64,
    pub truncates: u64,
    pub creates: u64,
    pub deletes: u64,
    pub dir_syncs: u64,
    /// Writes and truncates through a handle whose file was unlinked.
    pub unlinked_writes: u64,
    /// Opens of a rollback journal (`SQLITE_OPEN_MAIN_JOURNAL`), failed
    /// ones included.
    pub journal_opens: u64,
}

// ---------------------------------------------------------------------------
// The model, on images in memory: pure, and tested on its own.

/// One pending change to a file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `data` written at `off`; `prev` the bytes it replaced (those that
    /// existed: the file was `prev_len` long).
    Write {
        off: u64,
        data: Vec<u8>,
        prev: Vec<u8>,
        prev_len: u64,
    },
    /// The file's length set from `prev_len` to `len`; `cut` the bytes a
    /// shrink removed.
    SetLen {
        len: u64,
        prev_len: u64,
        cut: Vec<u8>,
    },
}

/// What a crash does with one pending op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Keep,
    Drop,
    /// Cut into sectors, each kept, dropped or garbage.
    Torn,
}

fn set_len(image: &mut Vec<u8>, len: u64) {
    image.resize(len as usize, 0);
}

fn write_at(image: &mut Vec<u8>, off: u64, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let end = off as usize + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[off as usize..end].copy_from_slice(data);
}

/// Applies `op` to an image in memory, as it was applied to the file.
pub fn apply(image: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { off, data, .. } => write_at(image, *off, data),
        Op::SetLen { len, .. } => set_len(image, *len),
    }
}

/// Undoes `op` on an image that `op` was the last change of.
pub fn undo(image: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write {
            off,
            data,
            prev,
            prev_len,
        } => {
            write_at(image, *off, prev);
            if *prev_len < off + data.len() as u64 {
                set_len(image, *prev_len);
            }
        }
        Op::SetLen { len, prev_len, cut } => {
            set_len(image, *prev_len);
            if len < prev_len {
                write_at(image, *len, cut);
            }
        }
    }
}

/// The image before all of `ops`: `current` with each undone, newest first.
pub fn durable_image(mut current: Vec<u8>, ops: &[Op]) -> Vec<u8> {
    for op in ops.iter().rev() {
        undo(&mut current, op);
    }
    current
}

/// Replays `op` on `image` as `fate` says; a torn write's sectors draw
/// from `rng`. With `psow` garbage stays within the written bytes;
/// without, it fills every sector the write touched.
pub fn replay(image: &mut Vec<u8>, op: &Op, fate: Fate, rng: &mut SplitMix, psow: bool) {
    match (op, fate) {
        (_, Fate::Drop) => {}
        (_, Fate::Keep) | (Op::SetLen { .. }, Fate::Torn) => apply(image, op),
        (Op::Write { off, data, .. }, Fate::Torn) => {
            let end = off + data.len() as u64;
            let mut start = *off;
            while start < end {
                let piece_end = ((start / SECTOR + 1) * SECTOR).min(end);
                let piece = &data[(start - off) as usize..(piece_end - off) as usize];
                match rng.below(3) {
                    0 => write_at(image, start, piece),
                    1 => {}
                    _ => {
                        if psow {
                            write_at(image, start, &rng.bytes(piece.len()));
                        } else {
                            // The write extends the file first, as it
                            // would, then its whole sector is trashed.
                            if (image.len() as u64) < piece_end {
                                set_len(image, piece_end);
                            }
                            let sector = start / SECTOR * SECTOR;
                            let sector_end = (sector + SECTOR).min(image.len() as u64);
                            let garbage = rng.bytes((sector_end - sector) as usize);
                            write_at(image, sector, &garbage);
                        }
                    }
                }
                start = piece_end;
            }
        }
    }
}

/// SplitMix64: a small seeded generator (no crate needed).
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// A seed derived from `base` and a label (a crash point, a test).
pub fn derive_seed(base: u64, label: &str) -> u64 {
    let mut rng = SplitMix(base);
    let mut h = rng.next_u64();
    for b in label.bytes() {
        h = SplitMix(h ^ u64::from(b)).next_u64();
    }
    h
}

// ---------------------------------------------------------------------------
// The state the VFS keeps.

type InodeId = u64;

#[derive(Debug, Default)]
struct Inode {
    /// Pending since its last sync, oldest first.
    ops: Vec<Op>,
    /// Its content when it was unlinked.
    snapshot: Option<Vec<u8>>,
    /// Open handles on it.
    handles: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Absent,
    Present(InodeId),
}

#[derive(Debug)]
struct PathState {
    /// The directory entry as of the directory's last sync.
    durable: Entry,
    /// The entry after each pending create or delete, oldest first.
    pending: Vec<Entry>,
}

impl PathState {
    fn current(&self) -> Entry {
        *self.pending.last().unwrap_or(&self.durable)
    }
}

struct State {
    config: Config,
    next_inode: InodeId,
    inodes: HashMap<InodeId, Inode>,
    /// Sorted, so that a seed replays the same choices.
    paths: BTreeMap<PathBuf, PathState>,
    stats: Stats,
    /// The count of rollback-journal opens ([`Stats::journal_opens`]) at
    /// which `xOpen` fails ([`fail_journal_open`]).
    fail_journal_open: Option<u64>,
}

static STATE: LazyLock<Mutex<State>> = LazyLock::new(|| {
    Mutex::new(State {
        config: Config::default(),
        next_inode: 1,
        inodes: HashMap::new(),
        paths: BTreeMap::new(),
        stats: Stats::default(),
        fail_journal_open: None,
    })
});

/// Read by `xDeviceCharacteristics` without the lock.
static PSOW: AtomicBool = AtomicBool::new(true);

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

impl State {
    fn new_inode(&mut self) -> InodeId {
        let id = self.next_inode;
        self.next_inode += 1;
        self.inodes.insert(id, Inode::default());
        id
    }

    /// A handle opened `path`, which `existed` before the open: the inode
    /// it refers to.
    fn opened(&mut self, path: &Path, existed: bool) -> InodeId {
        if !self.paths.contains_key(path) {
            let durable = if existed {
                Entry::Present(self.new_inode())
            } else {
                Entry::Absent
            };
            self.paths.insert(
                path.to_owned(),
                PathState {
                    durable,
                    pending: Vec::new(),
                },
            );
        }
        let current = self.paths[path].current();
        let id = match (current, existed) {
            (Entry::Present(id), true) => id,
            // Created by this open (or, after a delete here, by someone
            // else): a pending directory operation.
            _ => {
                let id = self.new_inode();
                self.paths
                    .get_mut(path)
                    .unwrap()
                    .pending
                    .push(Entry::Present(id));
                self.stats.creates += 1;
                id
            }
        };
        self.inodes.get_mut(&id).unwrap().handles += 1;
        id
    }

    /// `path` was unlinked; `content` is what it held.
    fn deleted(&mut self, path: &Path, content: Vec<u8>) {
        if !self.paths.contains_key(path) {
            let id = self.new_inode();
            self.paths.insert(
                path.to_owned(),
                PathState {
                    durable: Entry::Present(id),
                    pending: Vec::new(),
                },
            );
        }
        let ps = self.paths.get_mut(path).unwrap();
        if let Entry::Present(id) = ps.current() {
            ps.pending.push(Entry::Absent);
            self.inodes.get_mut(&id).unwrap().snapshot = Some(content);
            self.stats.deletes += 1;
        }
    }

    /// The directory `dir` was synced: its pending entries are durable.
    fn dir_synced(&mut self, dir: &Path) {
        self.stats.dir_syncs += 1;
        for (path, ps) in self.paths.iter_mut() {
            if path.parent() == Some(dir) {
                ps.durable = ps.current();
                ps.pending.clear();
            }
        }
        self.collect();
    }

    /// Forgets inodes no path can bring back and no handle refers to.
    fn collect(&mut self) {
        let mut live: HashSet<InodeId> = HashSet::new();
        for ps in self.paths.values() {
            for entry in std::iter::once(&ps.durable).chain(&ps.pending) {
                if let Entry::Present(id) = entry {
                    live.insert(*id);
                }
            }
        }
        self.inodes
            .retain(|id, inode| inode.handles > 0 || live.contains(id));
    }

    /// Whether `id` is what `path` now names.
    fn is_current(&self, path: &Path, id: InodeId) -> bool {
        self.paths
            .get(path)
            .is_some_and(|ps| ps.current() == Entry::Present(id))
    }

    /// Records `op`, already applied to the inode `id` of `path`.
    fn record(&mut self, path: &Path, id: InodeId, op: Op) {
        let current = self.is_current(path, id);
        let inode = self.inodes.get_mut(&id).unwrap();
        if !current {
            self.stats.unlinked_writes += 1;
            if let Some(snapshot) = &mut inode.snapshot {
                apply(snapshot, &op);
            }
        }
        inode.ops.push(op);
    }

    /// The images a crash leaves, path by path (`None`: no file), and a
    /// summary of the choices.
    fn crash_images(&self) -> (Vec<FileImage>, String) {
        let config = self.config;
        let mut rng = SplitMix(config.seed);
        let mut out = Vec::new();
        let (mut kept, mut dropped, mut torn, mut dirs_undone) = (0, 0, 0, 0);
        for (path, ps) in &self.paths {
            let n = ps.pending.len() as u64;
            let k = match config.policy {
                Policy::DurableOnly => 0,
                Policy::KeepAll | Policy::NewestOnly => n,
                Policy::Random => rng.below(n + 1),
            };
            dirs_undone += n - k;
            let entry = if k == 0 {
                ps.durable
            } else {
                ps.pending[k as usize - 1]
            };
            let Entry::Present(id) = entry else {
                out.push((path.clone(), None));
                continue;
            };
            let Some(inode) = self.inodes.get(&id) else {
                continue;
            };
            let current = if ps.current() == entry {
                fs::read(path).unwrap_or_default()
            } else {
                inode.snapshot.clone().unwrap_or_default()
            };
            let mut image = durable_image(current, &inode.ops);
            let cut = match config.policy {
                Policy::NewestOnly => rng.below(inode.ops.len() as u64 + 1) as usize,
                _ => 0,
            };
            for (i, op) in inode.ops.iter().enumerate() {
                let fate = match config.policy {
                    Policy::NewestOnly if i < cut => Fate::Drop,
                    Policy::NewestOnly => Fate::Keep,
                    Policy::DurableOnly => Fate::Drop,
                    Policy::KeepAll => Fate::Keep,
                    Policy::Random => match rng.below(8) {
                        0..=2 => Fate::Keep,
                        3..=5 => Fate::Drop,
                        _ => Fate::Torn,
                    },
                };
                match fate {
                    Fate::Keep => kept += 1,
                    Fate::Drop => dropped += 1,
                    Fate::Torn => torn += 1,
                }
                replay(&mut image, op, fate, &mut rng, config.psow);
            }
            out.push((path.clone(), Some(image)));
        }
        let summary = format!(
            "policy={} seed={:#x} psow={}: {kept} pending ops kept, {dropped} dropped, \
             {torn} torn; {dirs_undone} directory ops undone; {:?}",
            config.policy.to_arg(),
            config.seed,
            config.psow,
            self.stats
        );
        (out, summary)
    }

    /// Writes the crash images over the real files and ends the process.
    fn crash(&self, reason: &str) -> ! {
        let (images, summary) = self.crash_images();
        for (path, image) in images {
            match image {
                None => {
                    let _ = fs::remove_file(&path);
                }
                Some(bytes) => {
                    let _ = fs::write(&path, &bytes);
                }
            }
        }
        let line = format!("crash-vfs: power lost at {reason}; {summary}\n");
        unsafe {
            libc::write(2, line.as_ptr().cast(), line.len());
            libc::_exit(CRASH_EXIT_CODE)
        }
    }
}

// ---------------------------------------------------------------------------
// Installation.

struct Registered {
    real: *mut ffi::sqlite3_vfs,
}

// Both VFS objects live as long as the process and SQLite serialises
// nothing through them that this module does not lock itself.
unsafe impl Send for Registered {}
unsafe impl Sync for Registered {}

static REGISTERED: OnceLock<Registered> = OnceLock::new();

fn real_vfs() -> *mut ffi::sqlite3_vfs {
    REGISTERED.get().expect("crash VFS registered").real
}

/// Sets how the VFS crashes, and registers it (once per process), as the
/// default VFS when `make_default`.
pub fn install(config: Config, make_default: bool) {
    configure(config);
    REGISTERED.get_or_init(|| unsafe { register(make_default) });
}

/// Changes how the VFS crashes from now on.
pub fn configure(config: Config) {
    PSOW.store(config.psow, Ordering::SeqCst);
    state().config = config;
}

/// What the VFS has counted so far.
pub fn stats() -> Stats {
    state().stats
}

/// Makes the `nth` rollback-journal open from now fail with
/// `SQLITE_CANTOPEN` (a fault, not a crash: the process goes on), as a full
/// directory or a lost race with another process would: the one way to
/// make a statement that needs a journal fail at a chosen moment.
pub fn fail_journal_open(nth: u64) {
    let mut st = state();
    st.fail_journal_open = Some(st.stats.journal_opens + nth);
}

/// Loses power now.
pub fn crash_now() -> ! {
    let st = state();
    st.crash("crash_now()")
}

unsafe fn register(make_default: bool) -> Registered {
    let real = ffi::sqlite3_vfs_find(ptr::null());
    assert!(!real.is_null(), "no default VFS");
    let name = CStr::from_ptr((*real).zName).to_string_lossy();
    assert_eq!(name, "unix", "the crash model is the unix VFS's");
    assert!((*real).iVersion >= 3);
    let mut vfs: ffi::sqlite3_vfs = *real;
    vfs.iVersion = 3;
    vfs.szOsFile = (REAL_OFFSET + (*real).szOsFile as usize) as c_int;
    vfs.pNext = ptr::null_mut();
    vfs.zName = c"crash".as_ptr();
    vfs.pAppData = ptr::null_mut();
    vfs.xOpen = Some(x_open);
    vfs.xDelete = Some(x_delete);
    // The unix VFS's other methods ignore their VFS argument (checked in
    // the bundled sqlite3.c: `UNUSED_PARAMETER(NotUsed)`), so they are
    // taken as they are. `xOpen` is not: it reads the unix VFS's pAppData.
    let ours = Box::into_raw(Box::new(vfs));
    let rc = ffi::sqlite3_vfs_register(ours, c_int::from(make_default));
    assert_eq!(rc, ffi::SQLITE_OK, "registering the crash VFS");
    Registered { real }
}

// ---------------------------------------------------------------------------
// The file object and its methods.

/// What SQLite allocates for each open file: this, then the real file.
#[repr(C)]
struct CrashFile {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    handle: *mut Handle,
}

/// Where the real file's storage starts in a [`CrashFile`] allocation
/// (SQLite allocates `szOsFile` bytes, 8-byte aligned).
const REAL_OFFSET: usize = (std::mem::size_of::<CrashFile>() + 15) & !15;

#[derive(Debug)]
struct Handle {
    /// `None`: a file the model does not track (temp files).
    tracked: Option<(PathBuf, InodeId)>,
    /// The unix VFS's `UNIXFILE_DIRSYNC`: the first sync syncs the
    /// directory too.
    dirsync: bool,
}

const KIND_MASK: c_int = 0x000f_ff00;

static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: Some(x_fetch),
    xUnfetch: Some(x_unfetch),
};

unsafe fn parts<'a>(file: *mut ffi::sqlite3_file) -> (*mut ffi::sqlite3_file, &'a mut Handle) {
    let file = file.cast::<CrashFile>();
    ((*file).real, &mut *(*file).handle)
}

unsafe fn methods<'a>(real: *mut ffi::sqlite3_file) -> &'a ffi::sqlite3_io_methods {
    &*(*real).pMethods
}

fn c_path(name: *const c_char) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(
        unsafe { CStr::from_ptr(name) }.to_bytes(),
    ))
}

unsafe extern "C" fn x_open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let real_vfs = real_vfs();
    let real = file
        .cast::<u8>()
        .add(REAL_OFFSET)
        .cast::<ffi::sqlite3_file>();
    ptr::write(
        file.cast::<CrashFile>(),
        CrashFile {
            base: ffi::sqlite3_file {
                pMethods: ptr::null(),
            },
            real,
            handle: ptr::null_mut(),
        },
    );
    (*real).pMethods = ptr::null();
    let kind = flags & KIND_MASK;
    let journal_like = matches!(
        kind,
        ffi::SQLITE_OPEN_MAIN_JOURNAL | ffi::SQLITE_OPEN_SUPER_JOURNAL | ffi::SQLITE_OPEN_WAL
    );
    let path = (!name.is_null()
        && flags & ffi::SQLITE_OPEN_DELETEONCLOSE == 0
        && (kind == ffi::SQLITE_OPEN_MAIN_DB || journal_like))
        .then(|| c_path(name));
    let mut st = state();
    if kind == ffi::SQLITE_OPEN_MAIN_JOURNAL {
        st.stats.journal_opens += 1;
        if st.fail_journal_open == Some(st.stats.journal_opens) {
            return ffi::SQLITE_CANTOPEN;
        }
    }
    let existed = path
        .as_deref()
        .is_some_and(|p| fs::symlink_metadata(p).is_ok());
    let rc = ((*real_vfs).xOpen.unwrap())(real_vfs, name, real, flags, out_flags);
    if rc != ffi::SQLITE_OK {
        if !(*real).pMethods.is_null() {
            if let Some(close) = methods(real).xClose {
                close(real);
            }
        }
        return rc;
    }
    let tracked = path.map(|p| {
        let id = st.opened(&p, existed);
        (p, id)
    });
    drop(st);
    let handle = Handle {
        dirsync: tracked.is_some() && journal_like && flags & ffi::SQLITE_OPEN_CREATE != 0,
        tracked,
    };
    (*file.cast::<CrashFile>()).handle = Box::into_raw(Box::new(handle));
    (*file).pMethods = &IO_METHODS;
    rc
}

unsafe extern "C" fn x_delete(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    sync_dir: c_int,
) -> c_int {
    let real_vfs = real_vfs();
    let path = c_path(name);
    let mut st = state();
    // Journals and logs only, which SQLite never locks: reading them with
    // a descriptor of our own drops no lock of this process's.
    let content = fs::read(&path).ok();
    let rc = ((*real_vfs).xDelete.unwrap())(real_vfs, name, sync_dir);
    if rc == ffi::SQLITE_OK {
        if let Some(content) = content {
            st.deleted(&path, content);
        }
        if sync_dir & 1 != 0 {
            if let Some(dir) = path.parent() {
                st.dir_synced(dir);
            }
        }
        let n = st.stats.deletes;
        if st.config.at == CrashAt::Delete(n) {
            st.crash(&format!("delete {n} ({})", path.display()));
        }
    }
    rc
}

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    let crash_file = file.cast::<CrashFile>();
    let real = (*crash_file).real;
    let handle = Box::from_raw((*crash_file).handle);
    (*crash_file).handle = ptr::null_mut();
    let rc = (methods(real).xClose.unwrap())(real);
    if let Some((_, id)) = &handle.tracked {
        let mut st = state();
        if let Some(inode) = st.inodes.get_mut(id) {
            inode.handles -= 1;
        }
        st.collect();
    }
    rc
}

unsafe extern "C" fn x_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amt: c_int,
    off: ffi::sqlite3_int64,
) -> c_int {
    let (real, _) = parts(file);
    (methods(real).xRead.unwrap())(real, buf, amt, off)
}

/// The real file's size.
unsafe fn real_size(real: *mut ffi::sqlite3_file) -> Result<u64, c_int> {
    let mut size: ffi::sqlite3_int64 = 0;
    match (methods(real).xFileSize.unwrap())(real, &mut size) {
        ffi::SQLITE_OK => Ok(size as u64),
        rc => Err(rc),
    }
}

/// The real file's bytes `[off, end)`, all of which exist.
unsafe fn real_bytes(real: *mut ffi::sqlite3_file, off: u64, end: u64) -> Result<Vec<u8>, c_int> {
    let mut buf = vec![0u8; end.saturating_sub(off) as usize];
    if buf.is_empty() {
        return Ok(buf);
    }
    let rc = (methods(real).xRead.unwrap())(
        real,
        buf.as_mut_ptr().cast(),
        buf.len() as c_int,
        off as ffi::sqlite3_int64,
    );
    match rc {
        ffi::SQLITE_OK => Ok(buf),
        ffi::SQLITE_IOERR_SHORT_READ => Err(ffi::SQLITE_IOERR_READ),
        rc => Err(rc),
    }
}

unsafe extern "C" fn x_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amt: c_int,
    off: ffi::sqlite3_int64,
) -> c_int {
    let (real, handle) = parts(file);
    let Some((path, id)) = &handle.tracked else {
        return (methods(real).xWrite.unwrap())(real, buf, amt, off);
    };
    let mut st = state();
    let off = off as u64;
    let data = std::slice::from_raw_parts(buf.cast::<u8>(), amt as usize).to_vec();
    let prev_len = match real_size(real) {
        Ok(len) => len,
        Err(rc) => return rc,
    };
    let end = off + data.len() as u64;
    let prev = match real_bytes(real, off.min(prev_len), end.min(prev_len)) {
        Ok(bytes) => bytes,
        Err(rc) => return rc,
    };
    let rc = (methods(real).xWrite.unwrap())(real, buf, amt, off as ffi::sqlite3_int64);
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    st.record(
        path,
        *id,
        Op::Write {
            off,
            data,
            prev,
            prev_len,
        },
    );
    st.stats.writes += 1;
    let n = st.stats.writes;
    if st.config.at == CrashAt::Write(n) {
        st.crash(&format!(
            "write {n} ({} bytes at {off} of {})",
            amt,
            path.display()
        ));
    }
    rc
}

/// Records a change of `real`'s length from `prev_len` to what it is now;
/// `saved` holds the bytes from `saved_from` to `prev_len` as they were.
unsafe fn record_len_change(
    st: &mut State,
    real: *mut ffi::sqlite3_file,
    path: &Path,
    id: InodeId,
    prev_len: u64,
    saved: &[u8],
    saved_from: u64,
) -> c_int {
    let len = match real_size(real) {
        Ok(len) => len,
        Err(rc) => return rc,
    };
    if len != prev_len {
        let cut = if len < prev_len {
            let range = len.saturating_sub(saved_from) as usize..(prev_len - saved_from) as usize;
            saved
                .get(range)
                .map(<[u8]>::to_vec)
                .unwrap_or_else(|| vec![0; (prev_len - len) as usize])
        } else {
            Vec::new()
        };
        st.record(path, id, Op::SetLen { len, prev_len, cut });
        st.stats.truncates += 1;
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    let (real, handle) = parts(file);
    let Some((path, id)) = &handle.tracked else {
        return (methods(real).xTruncate.unwrap())(real, size);
    };
    let mut st = state();
    let prev_len = match real_size(real) {
        Ok(len) => len,
        Err(rc) => return rc,
    };
    let from = (size.max(0) as u64).min(prev_len);
    let saved = match real_bytes(real, from, prev_len) {
        Ok(bytes) => bytes,
        Err(rc) => return rc,
    };
    let rc = (methods(real).xTruncate.unwrap())(real, size);
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    let before = st.stats.truncates;
    let rc = record_len_change(&mut st, real, path, *id, prev_len, &saved, from);
    let n = st.stats.truncates;
    if n > before && st.config.at == CrashAt::Truncate(n) {
        st.crash(&format!("truncate {n} ({} to {size})", path.display()));
    }
    rc
}

unsafe extern "C" fn x_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    let (real, handle) = parts(file);
    let Some((path, id)) = &handle.tracked else {
        return (methods(real).xSync.unwrap())(real, flags);
    };
    let mut st = state();
    st.stats.syncs += 1;
    let n = st.stats.syncs;
    if st.config.at == CrashAt::Sync(n) {
        st.crash(&format!("sync {n} (of {})", path.display()));
    }
    if st.config.real_sync {
        let rc = (methods(real).xSync.unwrap())(real, flags);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    if let Some(inode) = st.inodes.get_mut(id) {
        inode.ops.clear();
    }
    if std::mem::take(&mut handle.dirsync) {
        if let Some(dir) = path.parent() {
            st.dir_synced(dir);
        }
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_file_size(
    file: *mut ffi::sqlite3_file,
    size: *mut ffi::sqlite3_int64,
) -> c_int {
    let (real, _) = parts(file);
    (methods(real).xFileSize.unwrap())(real, size)
}

unsafe extern "C" fn x_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    let (real, _) = parts(file);
    (methods(real).xLock.unwrap())(real, level)
}

unsafe extern "C" fn x_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    let (real, _) = parts(file);
    (methods(real).xUnlock.unwrap())(real, level)
}

unsafe extern "C" fn x_check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    let (real, _) = parts(file);
    (methods(real).xCheckReservedLock.unwrap())(real, out)
}

unsafe extern "C" fn x_file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    let (real, handle) = parts(file);
    let control = methods(real).xFileControl.unwrap();
    // A size hint may grow the file behind xWrite's back (the unix VFS
    // does when a chunk size is set): recorded as a length change.
    match (&handle.tracked, op) {
        (Some((path, id)), ffi::SQLITE_FCNTL_SIZE_HINT) => {
            let mut st = state();
            let prev_len = match real_size(real) {
                Ok(len) => len,
                Err(rc) => return rc,
            };
            let rc = control(real, op, arg);
            let recorded = record_len_change(&mut st, real, path, *id, prev_len, &[], prev_len);
            if rc == ffi::SQLITE_OK {
                recorded
            } else {
                rc
            }
        }
        _ => control(real, op, arg),
    }
}

unsafe extern "C" fn x_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    let (real, _) = parts(file);
    (methods(real).xSectorSize.unwrap())(real)
}

unsafe extern "C" fn x_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    let (real, _) = parts(file);
    let characteristics = (methods(real).xDeviceCharacteristics.unwrap())(real);
    if PSOW.load(Ordering::SeqCst) {
        characteristics
    } else {
        characteristics & !ffi::SQLITE_IOCAP_POWERSAFE_OVERWRITE
    }
}

unsafe extern "C" fn x_shm_map(
    file: *mut ffi::sqlite3_file,
    page: c_int,
    page_size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    let (real, _) = parts(file);
    match methods(real).xShmMap {
        Some(map) => map(real, page, page_size, extend, out),
        None => ffi::SQLITE_IOERR_SHMMAP,
    }
}

unsafe extern "C" fn x_shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    let (real, _) = parts(file);
    match methods(real).xShmLock {
        Some(lock) => lock(real, offset, n, flags),
        None => ffi::SQLITE_IOERR_SHMLOCK,
    }
}

unsafe extern "C" fn x_shm_barrier(file: *mut ffi::sqlite3_file) {
    let (real, _) = parts(file);
    if let Some(barrier) = methods(real).xShmBarrier {
        barrier(real);
    }
}

unsafe extern "C" fn x_shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    let (real, _) = parts(file);
    match methods(real).xShmUnmap {
        Some(unmap) => unmap(real, delete),
        None => ffi::SQLITE_OK,
    }
}

unsafe extern "C" fn x_fetch(
    file: *mut ffi::sqlite3_file,
    off: ffi::sqlite3_int64,
    amt: c_int,
    out: *mut *mut c_void,
) -> c_int {
    let (real, _) = parts(file);
    let m = methods(real);
    match m.xFetch {
        Some(fetch) if m.iVersion >= 3 => fetch(real, off, amt, out),
        _ => {
            *out = ptr::null_mut();
            ffi::SQLITE_OK
        }
    }
}

unsafe extern "C" fn x_unfetch(
    file: *mut ffi::sqlite3_file,
    off: ffi::sqlite3_int64,
    p: *mut c_void,
) -> c_int {
    let (real, _) = parts(file);
    let m = methods(real);
    match m.xUnfetch {
        Some(unfetch) if m.iVersion >= 3 => unfetch(real, off, p),
        _ => ffi::SQLITE_OK,
    }
}
