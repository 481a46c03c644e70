//! Erasing old copies of secrets from the write-ahead log: the policy, the
//! schedule a storage keeps to follow it ([`ErasureSchedule`]), the
//! background [`eraser`] that carries it out off the caller's thread, and
//! the record of erasures still pending, in `openmls_keypackage_pool_erasure`.
//!
//! In WAL mode a commit appends new page images to the `-wal` file; the
//! images they replace, which hold the secrets as they were, stay in the log
//! until a checkpoint copies the new pages into the database and the log is
//! truncated. OpenMLS destroys most per-message and per-epoch secrets by
//! overwriting the row that holds them (every message it decrypts rewrites
//! the group's secret tree), so erasing only after deletions leaves
//! superseded message keys readable on disk.
//!
//! The record in the database is what makes an erasure survive a crash: it
//! is set in the transaction that leaves secrets behind, and any open, from
//! any process, finishes the erasure. It is written once per pending period
//! (a commit that finds it already set writes nothing), and cleared only
//! when no commit from any connection has happened since before the
//! checkpoint that emptied the log (SQLite's `data_version` says so): a
//! commit in between may have left secrets the checkpoint did not see. The
//! clearing commit is not synced (only the header of the log it restarts
//! is), and no second checkpoint follows it (the
//! WAL-reset bug needs two checkpoints back to back with a commit racing
//! the second): losing it to a power cut only makes the next open erase
//! again.
//!
//! The handles of a process on one file share the file's [`FileLease`]:
//! one eraser, one schedule of when the next erasure is due, and the
//! [`WriteGate`] every checkpoint passes.

mod eraser;
mod shared_file;

use std::{
    cell::Cell,
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::{
    clock::unix_now_ms,
    error::Result,
    options::JournalMode,
    write_gate::{
        probe::{Span, Work},
        WriteGate,
    },
};
use eraser::Eraser;
pub(crate) use shared_file::FileLease;

/// When old copies of secrets are erased from the database's files.
///
/// Part of [`StorageOptions`](crate::StorageOptions). On a database file in
/// WAL mode, a background thread with a connection of its own (the file's
/// eraser, one per file in the process, shared by every handle on it) runs
/// the erasures that are not due at once, so that a
/// bound holds by the clock even when the client goes quiet, and the
/// caller's thread never runs the checkpoint that decrypting a message would
/// otherwise owe. Deleted key material is erased at the end of the commit
/// that deleted it, under either policy. When another connection keeps the
/// log from being emptied (a reader holding an old snapshot, in this
/// process or another), the eraser tries again until it is done: at most
/// a second apart within the bound, and past it less often the longer the
/// reader holds on (a quarter of the time overdue, at most a minute), so
/// that a snapshot held for hours does not wake a phone every second;
/// [`PoolStorage::status`](crate::PoolStorage::status) and the log say so.
/// The record in the database makes the next open of any process finish an
/// erasure a crash interrupted.
///
/// What each policy costs per decrypted message is measured by
/// `cargo run --release --example bench_report -- --erasure-only`; the
/// `docs/reliability.md` quotes one run.
///
/// A transaction the application begins and commits on the raw connection
/// is not seen: the erasure it owes happens at this storage's next commit
/// that leaves secrets behind, its next open or its drop, or when the
/// application calls
/// [`PoolStorage::erase_deleted_key_material`](crate::PoolStorage::erase_deleted_key_material)
/// after committing.
///
/// ```
/// use std::time::Duration;
/// use openmls_keypackage_pool::{ErasurePolicy, StorageOptions};
///
/// // Erase right after every commit that replaced a secret, off the
/// // caller's thread: the strictest bound.
/// let options = StorageOptions {
///     erasure: ErasurePolicy::Overwrites { within: Duration::ZERO },
///     ..StorageOptions::default()
/// };
/// assert_ne!(options, StorageOptions::default());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErasurePolicy {
    /// Erase after each commit that deleted key material (a KeyPackage's
    /// bundle, epoch, encryption, signature or PSK secrets) only. Secrets
    /// that OpenMLS destroys by overwriting them, such as the message keys
    /// of every message it decrypts, stay readable in the log until the
    /// next erasure. The behaviour of earlier versions; cheapest.
    Deletions,
    /// Erase after each commit that deleted key material, and erase
    /// overwritten secrets (message secrets, epoch secrets, the resumption
    /// PSK store, PSKs, epoch key pairs, and the draft features' export
    /// tree and virtual-client state) at most `within` after the first
    /// commit that left them, whether or not anything is committed after
    /// it, unless another connection holds the log (see above).
    Overwrites {
        /// How long overwritten secrets may stay in the log.
        within: Duration,
    },
}

impl Default for ErasurePolicy {
    /// [`Overwrites`](Self::Overwrites) within 2 seconds.
    fn default() -> Self {
        Self::Overwrites {
            within: Duration::from_secs(2),
        }
    }
}

/// What kept an erasure from emptying the write-ahead log: part of
/// [`ErasureStatus`](crate::ErasureStatus).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErasureBlocker {
    /// Another connection, in this process or another, holds a read
    /// transaction: the checkpoint copied `checkpointed` of the log's
    /// `frames` frames (all of them when only the log's restart was held
    /// up), and the old copies stay in the log until that reader ends its
    /// transaction. A backup, a second app on the same file or a statement
    /// left unfinished, most often.
    Reader {
        /// Frames in the log.
        frames: i64,
        /// Frames the checkpoint copied into the database.
        checkpointed: i64,
    },
    /// Another connection held a lock the checkpoint needs (a writer, or
    /// one that holds the database exclusively).
    Locked,
    /// A statement of the connection that tried was still being stepped.
    OwnStatement,
    /// A transaction of the connection that tried was still open.
    OwnTransaction,
}

impl std::fmt::Display for ErasureBlocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Reader {
                frames,
                checkpointed,
            } => write!(
                f,
                "another connection holds a read transaction on the log \
                 ({checkpointed} of {frames} frames checkpointed)"
            ),
            Self::Locked => f.write_str("another connection holds a lock the checkpoint needs"),
            Self::OwnStatement => {
                f.write_str("a statement of this connection is still being stepped")
            }
            Self::OwnTransaction => f.write_str("a transaction of this connection is still open"),
        }
    }
}

/// What a write leaves behind in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Leftover {
    /// Overwritten secrets: erased as the policy allows.
    Overwritten,
    /// Deleted key material: erased at the end of its commit.
    Deleted,
}

/// Work that falls due by the clock besides erasing (deleting KeyPackages
/// whose grace window ended), run on whichever connection erases before it
/// erases: returns how many items went, and when the next falls due (Unix
/// seconds).
pub(crate) type Sweep = Arc<dyn Fn(&Connection) -> Result<(usize, Option<i64>)> + Send + Sync>;

/// When a storage's erasures run: what its open write scope leaves behind,
/// when the next erasure is due, and the eraser thread that runs it (one
/// per file, shared by every handle of the process on the file).
pub(crate) struct ErasureSchedule {
    policy: ErasurePolicy,
    /// The busy timeout the options set, restored after erasures on the
    /// storage's own connection.
    busy_timeout: Duration,
    /// What the write scope now open leaves behind once it commits.
    uncommitted: Cell<Option<Leftover>>,
    /// The earliest deadline (Unix seconds) the write scope now open sets
    /// for the sweep.
    uncommitted_deadline: Cell<Option<i64>>,
    /// When the next erasure is due; shared with the file's eraser and
    /// the process's other handles on the file.
    due: Arc<Due>,
    /// What falls due besides erasing.
    sweep: Sweep,
    /// The file's write gate: every checkpoint passes it.
    gate: Arc<WriteGate>,
    /// This storage's share of the file, and so of its eraser; `None` once
    /// released.
    lease: Option<FileLease>,
}

impl std::fmt::Debug for ErasureSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErasureSchedule")
            .field("policy", &self.policy)
            .field("due", &self.due)
            .field("eraser", &self.eraser_running())
            .finish_non_exhaustive()
    }
}

impl ErasureSchedule {
    /// The schedule of a storage holding `lease` on its file. Unless the
    /// file's eraser already runs, `eraser_conn` is asked for a second
    /// connection on the file, set up as the storage's is (keyed, for an
    /// encrypted one), to start it on; without one, erasures that are due
    /// run on the storage's thread at its next commit.
    pub(crate) fn new(
        policy: ErasurePolicy,
        busy_timeout: Duration,
        lease: FileLease,
        eraser_conn: impl FnOnce() -> Option<Connection>,
        sweep: Sweep,
    ) -> Self {
        let schedule = Self {
            policy,
            busy_timeout,
            uncommitted: Cell::new(None),
            uncommitted_deadline: Cell::new(None),
            due: Arc::clone(&lease.file.due),
            sweep,
            gate: Arc::clone(lease.gate()),
            lease: Some(lease),
        };
        if !schedule.eraser_running() {
            // Not `start`: another handle's eraser, started meanwhile, is
            // kept rather than stopped.
            schedule.install(eraser_conn());
        }
        schedule
    }

    /// Starts the file's eraser on `eraser_conn` (none without one), after
    /// [`stop`](Self::stop): when the database's key has changed, say.
    #[cfg_attr(not(feature = "sqlcipher"), allow(dead_code))]
    pub(crate) fn start(&self, eraser_conn: Option<Connection>) {
        self.stop();
        self.install(eraser_conn);
    }

    /// Starts an eraser on `eraser_conn` and makes it the file's, unless
    /// another one runs already.
    fn install(&self, eraser_conn: Option<Connection>) {
        let (Some(lease), Some(conn)) = (&self.lease, eraser_conn) else {
            return;
        };
        let eraser = Eraser::start(
            conn,
            self.bound(),
            Arc::clone(&self.due),
            Arc::clone(&self.sweep),
            Arc::clone(&self.gate),
        );
        if let Some(eraser) = eraser {
            lease.file.install_eraser(eraser);
        }
    }

    /// How many other handles of this process hold the storage's file.
    #[cfg_attr(not(feature = "sqlcipher"), allow(dead_code))]
    pub(crate) fn other_handles(&self) -> usize {
        self.lease.as_ref().map_or(0, FileLease::others)
    }

    /// Gives up this storage's share of its file: the file's eraser stops
    /// if no other handle of the process is left on it.
    pub(crate) fn release_file(&mut self) {
        self.lease = None;
    }

    /// Notes, inside the open write scope, that the sweep has work at
    /// `deadline` (Unix seconds) once the scope commits.
    pub(crate) fn record_deadline(&self, deadline: i64) {
        let earliest = self
            .uncommitted_deadline
            .get()
            .map_or(deadline, |d| d.min(deadline));
        self.uncommitted_deadline.set(Some(earliest));
    }

    /// Schedules the sweep's next deadline (Unix seconds), for work the
    /// database already holds when the storage opens.
    pub(crate) fn schedule_deadline(&self, deadline: i64) {
        self.due.at(instant_of(deadline));
    }

    /// Whether overwrites of secrets must go through a write scope to be
    /// recorded.
    pub(crate) fn erases_overwrites(&self) -> bool {
        self.policy != ErasurePolicy::Deletions
    }

    /// Notes, inside the open write scope, that its commit leaves old copies
    /// of secrets in the log: in the database (unless an erasure is already
    /// recorded there), so that any later open finishes it after a crash,
    /// and here. Overwrites count only under a policy that erases them.
    pub(crate) fn record_leftover(&self, conn: &Connection, leftover: Leftover) -> Result<()> {
        if leftover == Leftover::Overwritten && !self.erases_overwrites() {
            return Ok(());
        }
        record(conn)?;
        self.uncommitted
            .set(self.uncommitted.get().max(Some(leftover)));
        Ok(())
    }

    /// After a commit of the storage's connection reached the database:
    /// erases deleted key material now, and schedules the erasure of
    /// overwritten secrets. Best effort: the commit has succeeded either
    /// way, and an erasure that could not finish stays pending.
    pub(crate) fn after_commit(&self, conn: &Connection) {
        match self.uncommitted.take() {
            Some(Leftover::Deleted) => match self.erase_now(conn) {
                Ok(true) => {}
                // A reader is in the way: the eraser tries again.
                Ok(false) => self.due.at(Instant::now()),
                Err(e) => {
                    log::warn!(
                        "erasing deleted key material after a commit failed (it is \
                         tried again): {e}"
                    );
                    self.due.at(Instant::now());
                }
            },
            Some(Leftover::Overwritten) => {
                // A bound too far off to express is no bound.
                if let ErasurePolicy::Overwrites { within } = self.policy {
                    if let Some(at) = Instant::now().checked_add(within) {
                        self.due.at(at);
                    }
                }
            }
            None => {}
        }
        if let Some(deadline) = self.uncommitted_deadline.take() {
            self.due.at(instant_of(deadline));
        }
        // Without an eraser, whatever is due runs here.
        if !self.eraser_running() && self.due.is_past() {
            let (swept, erased) = {
                let Some(_pass) = self.gate.try_enter() else {
                    return;
                };
                let swept = self.without_waiting(conn, || {
                    let _span = Span::begin(Work::Write);
                    (self.sweep)(conn)
                });
                (swept, self.erase_now(conn))
            };
            // Logged once the gate is let go: a logger may be slow.
            match &swept {
                Ok((swept, _)) => {
                    if let Some(note) = swept_note(*swept) {
                        log::info!("{note}");
                    }
                }
                Err(e) => log::warn!("deleting KeyPackages whose grace window ended failed: {e}"),
            }
            if let Err(e) = &erased {
                log::warn!("erasing failed (it is tried again at the next commit): {e}");
            }
            // Only work done is cleared: what failed stays due, and the
            // next commit tries again.
            if let (Ok((_, next)), Ok(true)) = (swept, erased) {
                self.due.clear();
                if let Some(next) = next {
                    self.due.at(instant_of(next));
                }
            }
        }
    }

    /// Whether an eraser thread is there to run what falls due.
    pub(crate) fn eraser_running(&self) -> bool {
        self.lease
            .as_ref()
            .is_some_and(|lease| lease.file.eraser().as_ref().is_some_and(Eraser::is_running))
    }

    /// How long overwritten secrets may stay in the log under the policy
    /// (zero under [`ErasurePolicy::Deletions`], which erases deleted key
    /// material at once and nothing else).
    pub(crate) fn bound(&self) -> Duration {
        bound_of(self.policy)
    }

    /// What the file's eraser has met, as of now.
    pub(crate) fn eraser_report(&self) -> EraserReport {
        self.due.lock().report.clone()
    }

    /// Finishes an erasure that this storage or another left pending, when
    /// the connection opens or closes. Best effort, and never waits for
    /// another connection: what a reader still blocks stays recorded in the
    /// database for the next open. Returns whether nothing is left.
    pub(crate) fn finish_leftover(&self, conn: &Connection) -> bool {
        let finished = self.without_waiting(conn, || {
            if self.due.is_set() || is_recorded(conn)? {
                return self.erase_in_gate(conn, Duration::ZERO);
            }
            Ok(true)
        });
        matches!(finished, Ok(true))
    }

    /// Makes an erasure due now: one the storage could not finish when it
    /// opened, for the file's eraser to retry by the clock.
    pub(crate) fn due_now(&self) {
        self.due.at(Instant::now());
    }

    /// Finishes an erasure this storage or another left pending, waiting
    /// for other connections as long as the busy timeout: what
    /// [`PoolStorage::close`](crate::PoolStorage::close) owes. `Ok(false)`
    /// when one still kept the log.
    pub(crate) fn finish_before_close(&self, conn: &Connection) -> Result<bool> {
        if self.due.is_set() || is_recorded(conn)? {
            return self.erase_in_gate(conn, self.busy_timeout);
        }
        Ok(true)
    }

    /// Stops the file's eraser, waiting for an erasure it is running to
    /// end; what was still to come is left to
    /// [`finish_leftover`](Self::finish_leftover).
    #[cfg_attr(not(feature = "sqlcipher"), allow(dead_code))]
    pub(crate) fn stop(&self) {
        if let Some(lease) = &self.lease {
            lease.file.stop_eraser();
        }
    }

    /// [`erase`] on `conn` inside the file's write gate, waiting for it at
    /// most `wait`; `Ok(false)` when another thread kept the gate.
    fn erase_in_gate(&self, conn: &Connection, wait: Duration) -> Result<bool> {
        match self.gate.enter(wait) {
            Some(_pass) => erase(conn),
            None => Ok(false),
        }
    }

    /// Checkpoints and truncates the log on the storage's connection without
    /// waiting for anyone; see [`erase`].
    pub(crate) fn erase_now(&self, conn: &Connection) -> Result<bool> {
        // What is due stays due: the sweep's next deadline may be among it,
        // and an erasure run once more finds an empty log.
        self.without_waiting(conn, || self.erase_in_gate(conn, Duration::ZERO))
    }

    /// Runs `f` with the connection's busy timeout at zero, then puts the
    /// options' timeout back. Erasure on the storage's connection runs right
    /// after commits and on drop: a reader elsewhere must not stall it, and
    /// what cannot be done now is retried. Set before the first read, since
    /// in the rollback journal modes even a read queues behind a writer.
    fn without_waiting<T>(&self, conn: &Connection, f: impl FnOnce() -> Result<T>) -> Result<T> {
        conn.busy_timeout(Duration::ZERO)?;
        let result = f();
        conn.busy_timeout(self.busy_timeout)?;
        result
    }
}

/// When the next erasure is due, shared by a storage and its eraser.
#[derive(Debug, Default)]
struct Due {
    at: Mutex<DueState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct DueState {
    /// When the earliest erasure not yet run is due.
    at: Option<Instant>,
    /// What the file's eraser has met.
    report: EraserReport,
}

/// What the file's eraser has met: read by
/// [`PoolStorage::status`](crate::PoolStorage::status).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct EraserReport {
    /// How many times an eraser of the file woke to run what was due, since
    /// this process's handles on the file opened it.
    pub(crate) wakeups: u64,
    /// Tries that did not finish since the last one that did.
    pub(crate) failed_tries: u32,
    /// What kept the last try from emptying the log.
    pub(crate) blocker: Option<ErasureBlocker>,
    /// The last error it met since the last try that finished.
    pub(crate) last_error: Option<String>,
    /// How long it waits before its next try, while tries fail.
    pub(crate) retry: Option<Duration>,
    /// Whether it is backing off: the erasure is past its bound and what
    /// keeps it is outside this process's control, so it tries less often.
    pub(crate) backing_off: bool,
}

impl Due {
    fn lock(&self) -> MutexGuard<'_, DueState> {
        // The state stays meaningful whatever a panicking holder left.
        self.at.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An erasure is due at `at` (or earlier, if one already is).
    fn at(&self, at: Instant) {
        let mut state = self.lock();
        if state.at.is_none_or(|due| at < due) {
            state.at = Some(at);
            // Only a nearer deadline wakes the eraser: a burst of commits
            // within one pending period costs one wake-up.
            self.changed.notify_all();
        }
    }

    fn is_set(&self) -> bool {
        self.lock().at.is_some()
    }

    fn is_past(&self) -> bool {
        self.lock().at.is_some_and(|due| due <= Instant::now())
    }

    fn clear(&self) {
        self.lock().at = None;
    }
}

/// What to log when the sweep deleted `count` KeyPackages.
fn swept_note(count: usize) -> Option<String> {
    (count > 0).then(|| format!("deleted {count} KeyPackages whose grace window ended"))
}

/// How long an erasure may stay owed under `policy`.
fn bound_of(policy: ErasurePolicy) -> Duration {
    match policy {
        ErasurePolicy::Deletions => Duration::ZERO,
        ErasurePolicy::Overwrites { within } => within,
    }
}

/// Unix milliseconds; a clock set before 1970 reads as the epoch.
fn now_ms() -> i64 {
    unix_now_ms().unwrap_or(0)
}

/// The moment just after the second `deadline` (Unix seconds) has begun:
/// work due "at or before" that second is found due then.
fn instant_of(deadline: i64) -> Instant {
    let wait_ms = deadline.saturating_mul(1000).saturating_sub(now_ms()) + 10;
    Instant::now() + Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0))
}

/// Records, in the open transaction, that its commit leaves secrets behind,
/// unless an erasure is recorded already: then the statement writes
/// nothing, and the erasure that clears the record covers this commit too.
pub(crate) fn record(conn: &Connection) -> Result<()> {
    conn.prepare_cached(
        "UPDATE openmls_keypackage_pool_erasure
         SET pending_since = ?1, generation = generation + 1
         WHERE id = 1 AND pending_since IS NULL",
    )?
    .execute([now_ms()])?;
    Ok(())
}

/// Whether the database records an erasure as pending.
fn is_recorded(conn: &Connection) -> Result<bool> {
    Ok(owed_since(conn)?.is_some())
}

/// When (Unix milliseconds) the oldest erasure the database records as
/// pending was first owed.
pub(crate) fn owed_since(conn: &Connection) -> Result<Option<i64>> {
    let since: Option<Option<i64>> = conn
        .prepare_cached("SELECT pending_since FROM openmls_keypackage_pool_erasure WHERE id = 1")?
        .query_row([], |row| row.get(0))
        .optional()?;
    Ok(since.flatten())
}

/// How long ago `since` (Unix milliseconds) was; a time in the future reads
/// as now.
pub(crate) fn age_of(since: i64) -> Duration {
    Duration::from_millis(u64::try_from(now_ms().saturating_sub(since)).unwrap_or(0))
}

/// The count SQLite bumps, for this connection, at every commit of another.
fn data_version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA data_version", [], |row| row.get(0))?)
}

/// Checkpoints the log into the database and truncates it, then clears the
/// record of a pending erasure if no other connection committed since
/// before the checkpoint. `Ok(true)` when the log was emptied, `Ok(false)`
/// when another connection (or a statement of this one still being
/// stepped) kept part of it, or a transaction of this one is open. Waits
/// for others only as long as the connection's busy timeout.
pub(crate) fn erase(conn: &Connection) -> Result<bool> {
    Ok(try_erase(conn)?.is_none())
}

/// [`erase`], saying what kept the log: `Ok(None)` when it was emptied.
fn try_erase(conn: &Connection) -> Result<Option<ErasureBlocker>> {
    // A transaction of this connection is still open: its commit, not
    // this, is where the erasure belongs.
    if !conn.is_autocommit() {
        return Ok(Some(ErasureBlocker::OwnTransaction));
    }
    let before = data_version(conn)?;
    if let Some(blocker) = checkpoint(conn)? {
        return Ok(Some(blocker));
    }
    // Best effort: a record left set only costs one more checkpoint later.
    // Clearing writes one page to the log (the record's, which holds no
    // secret) and leaves it there: the next commit's frames follow it, and
    // the next checkpoint takes it. It is committed under
    // `synchronous=NORMAL`: the commit itself is not synced, since losing it
    // to a power cut only makes the next open erase again (the log's
    // checksums drop a frame cut short, and the next synced commit makes it
    // durable), but the header of the log it starts afresh is. Under `OFF`
    // that header would not be synced either, and a later synced commit
    // could reach the disk while the truncation and the new header had not:
    // recovery would then replay the old log's stale frames (the power-loss
    // tests show it).
    //
    // In a rollback-journal mode there is no log, and `NORMAL` there skips
    // the sync of the journal's header: a power cut can then leave a
    // journal whose rollback corrupts the database (the power-loss tests'
    // hostile model shows it). The clear is committed at the connection's
    // own level there.
    if JournalMode::in_force(conn) != Some(JournalMode::Wal) {
        warn_if_not_cleared(conn, clear_if_nothing_committed_since(conn, before));
        return Ok(None);
    }
    let unsynced = Unsynced::set(conn)?;
    warn_if_not_cleared(conn, clear_if_nothing_committed_since(conn, before));
    // Not best effort: every later commit and checkpoint of the connection
    // depends on it.
    unsynced.restore()?;
    Ok(None)
}

/// The log was emptied, but the record of the erasure could not be
/// cleared: the next open erases again, and the operator hears why.
fn warn_if_not_cleared(conn: &Connection, cleared: Result<bool>) {
    if let Err(e) = cleared {
        log::warn!(
            "the log of {} was emptied, but the record of the erasure could not be \
             cleared (the next open erases again): {e}",
            crate::files::name_of(conn)
        );
    }
}

/// The connection's `synchronous` setting at `NORMAL` until restored, or
/// dropped (after an error or a panic): the setting it had is put back,
/// after rolling back a transaction a failed statement may have left open
/// (SQLite refuses to change the setting inside one).
struct Unsynced<'c> {
    conn: &'c Connection,
    setting: i64,
    restored: bool,
}

impl<'c> Unsynced<'c> {
    fn set(conn: &'c Connection) -> Result<Self> {
        let setting: i64 = conn.query_row("PRAGMA synchronous", [], |row| row.get(0))?;
        conn.execute_batch("PRAGMA synchronous = NORMAL")?;
        Ok(Self {
            conn,
            setting,
            restored: false,
        })
    }

    fn put_back(&self) -> Result<()> {
        if !self.conn.is_autocommit() {
            self.conn.execute_batch("ROLLBACK")?;
        }
        self.conn
            .execute_batch(&format!("PRAGMA synchronous = {}", self.setting))?;
        Ok(())
    }

    fn restore(mut self) -> Result<()> {
        self.restored = true;
        self.put_back()
    }
}

impl Drop for Unsynced<'_> {
    fn drop(&mut self) {
        if !self.restored {
            let _ = self.put_back();
        }
    }
}

/// Clears the record, in a transaction of its own, unless another
/// connection has committed since `data_version` read `before`; returns
/// whether it did.
fn clear_if_nothing_committed_since(conn: &Connection, before: i64) -> Result<bool> {
    if !is_recorded(conn)? {
        return Ok(false);
    }
    // Holding the write lock, no commit can come between the check and the
    // update.
    let _span = Span::begin(Work::Write);
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    if data_version(&tx)? != before {
        return Ok(false);
    }
    tx.execute(
        "UPDATE openmls_keypackage_pool_erasure SET pending_since = NULL WHERE id = 1",
        [],
    )?;
    tx.commit()?;
    Ok(true)
}

/// Checkpoints the log into the database and truncates it: `Ok(None)`
/// when the log is now empty, what kept part of it otherwise.
fn checkpoint(conn: &Connection) -> Result<Option<ErasureBlocker>> {
    // A statement of this connection still stepping holds a read snapshot
    // the checkpoint cannot pass; SQLite reports that as an error.
    if conn.is_busy() {
        return Ok(Some(ErasureBlocker::OwnStatement));
    }
    let _span = Span::begin(Work::Checkpoint);
    match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, i64>(2)?,
        ))
    }) {
        Ok((0, _, _)) => Ok(None),
        // Another connection was checkpointing, or writing: SQLite says
        // nothing of the log then.
        Ok((_, frames, _)) if frames < 0 => Ok(Some(ErasureBlocker::Locked)),
        Ok((_, frames, checkpointed)) => Ok(Some(ErasureBlocker::Reader {
            frames,
            checkpointed,
        })),
        Err(e) if is_busy_or_locked(&e) => Ok(Some(ErasureBlocker::Locked)),
        Err(e) => Err(e.into()),
    }
}

/// Whether an error only says another connection (or a statement of this
/// one) was in the way.
fn is_busy_or_locked(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}
