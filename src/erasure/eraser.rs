//! The eraser: a thread with a connection of its own on the storage's file,
//! which sleeps until an erasure is due, runs it, and tries again while
//! another connection is in the way.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use rusqlite::Connection;

use super::{
    age_of, instant_of, owed_since, swept_note, try_erase, Due, EraserReport, ErasureBlocker, Sweep,
};
use crate::files::name_of;
use crate::write_gate::{
    probe::{Span, Work},
    WriteGate,
};

/// How long the eraser waits before trying again after another connection
/// kept the log from being emptied: doubled at each failure, up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(20);

/// The longest wait between two tries while the log is held and the
/// erasure is still within its bound.
const RETRY_MAX: Duration = Duration::from_secs(1);

/// The longest wait between two tries once the erasure is past its bound
/// and another connection keeps the log (or each try fails with an error):
/// a reader that holds a snapshot for hours then costs a wake-up a minute,
/// not one a second.
const RETRY_PAST_BOUND_MAX: Duration = Duration::from_secs(60);

/// Past its bound, the wait between two tries is this fraction of how long
/// the erasure has been overdue (at least [`RETRY_MAX`], at most
/// [`RETRY_PAST_BOUND_MAX`]): tries thin out as a reader holds on, and once
/// it lets go the erasure is done within a quarter of the time it was
/// overdue. A commit of this process that deletes key material still wakes
/// the eraser at once. For errors, the time is how long tries have failed.
const RETRY_PAST_BOUND_SHARE: u32 = 4;

/// How long the eraser waits for the file's write gate before it lets go
/// and tries again later (so that stopping it never waits long).
const GATE_WAIT: Duration = Duration::from_millis(100);

/// A running eraser; [`stop`](Self::stop) ends it.
#[derive(Debug)]
pub(super) struct Eraser {
    due: Arc<Due>,
    /// Set to end this eraser; its own, since erasers started for one file
    /// at the same moment wait on the same schedule.
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Eraser {
    /// Starts the eraser on `conn`, a connection of its own on the storage's
    /// file. `None` when no thread could be started: the storage then runs
    /// what is due itself.
    pub(super) fn start(
        conn: Connection,
        bound: Duration,
        due: Arc<Due>,
        sweep: Sweep,
        gate: Arc<WriteGate>,
    ) -> Option<Self> {
        // Never wait inside SQLite: a checkpoint that waited for a reader
        // would hold the write lock meanwhile, and stall the storage's own
        // commits. Retries wait here instead, holding nothing.
        conn.busy_timeout(Duration::ZERO).ok()?;
        let shared = Arc::clone(&due);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("keypackage-pool-eraser".into())
            .spawn(move || {
                let eraser = Loop {
                    conn: &conn,
                    bound,
                    due: &shared,
                    stop: &stopped,
                    sweep: &sweep,
                    gate: &gate,
                };
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| eraser.run())).is_err()
                {
                    // What it was running stays due: the storage runs it at
                    // its next commit.
                    shared.at(Instant::now());
                    log::error!(
                        "the eraser of {} stopped after a panic; erasures now run at the \
                         storage's commits",
                        name_of(&conn)
                    );
                }
            })
            .ok()?;
        Some(Self { due, stop, thread })
    }

    /// Asks the eraser to end and waits for it: at once when it sleeps,
    /// after the erasure it is running otherwise. The schedule is left as
    /// it was, ready for another eraser.
    pub(super) fn stop(self) {
        {
            // Set under the schedule's lock, so that the eraser cannot miss
            // the wake-up between its check and its wait.
            let _state = self.due.lock();
            self.stop.store(true, Ordering::SeqCst);
        }
        self.due.changed.notify_all();
        // A panic in the eraser has nothing left to clean up.
        let _ = self.thread.join();
    }

    /// Whether the thread still runs (it ends only when stopped, or if it
    /// panicked).
    pub(super) fn is_running(&self) -> bool {
        !self.thread.is_finished()
    }
}

/// What the eraser's loop works with.
struct Loop<'a> {
    conn: &'a Connection,
    /// How long an erasure may stay owed.
    bound: Duration,
    due: &'a Due,
    stop: &'a AtomicBool,
    sweep: &'a Sweep,
    gate: &'a WriteGate,
}

/// What one try of the eraser came to.
struct Try {
    /// When the sweep has work next.
    next_sweep: Option<Instant>,
    /// What kept the log from being emptied.
    blocker: Option<ErasureBlocker>,
    /// The errors met, said in full.
    errors: Vec<String>,
    /// What it did that the log should say.
    notes: Vec<String>,
    /// How long the database records an erasure as owed, when the try did
    /// not finish: `None` when nothing is owed (a checkpoint a reader
    /// kept then leaves no secret behind).
    owed_for: Option<Duration>,
}

impl Try {
    /// Whether nothing is left to do until the next deadline.
    fn done(&self) -> bool {
        self.errors.is_empty() && (self.blocker.is_none() || self.owed_for.is_none())
    }
}

/// The tries that did not finish, since the last one that did.
struct Failing {
    /// When the first of them failed.
    since: Option<Instant>,
    /// Whether the erasure was reported past its bound.
    warned: bool,
    /// The wait before the next try while within the bound: doubled at
    /// each failure, up to [`RETRY_MAX`].
    retry: Duration,
}

impl Default for Failing {
    fn default() -> Self {
        Self {
            since: None,
            warned: false,
            retry: RETRY_FIRST,
        }
    }
}

/// What a try leads to: when the eraser is due again, and what to log once
/// the schedule's lock is let go (a logger may be slow, or ask the storage
/// for its status).
struct Next {
    at: Option<Instant>,
    log: Vec<(log::Level, String)>,
}

impl Loop<'_> {
    /// Asleep while nothing is due, and until it is; then, inside the
    /// file's write gate, the sweep and the erasure of what it and the
    /// storages left behind.
    fn run(&self) {
        let mut failing = Failing::default();
        let mut state = self.due.lock();
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            let now = Instant::now();
            match state.at {
                None => {
                    state = self
                        .due
                        .changed
                        .wait(state)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                Some(at) if at > now => {
                    state = self
                        .due
                        .changed
                        .wait_timeout(state, at - now)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0;
                }
                Some(_) => {
                    // Taken before erasing: a leftover committed meanwhile
                    // sets its own deadline again.
                    state.at = None;
                    state.report.wakeups += 1;
                    drop(state);
                    let tried = self.try_once();
                    state = self.due.lock();
                    let notes: Vec<_> = (tried.iter().flat_map(|t| &t.notes))
                        .map(|note| (log::Level::Info, note.clone()))
                        .collect();
                    let mut next = match tried {
                        // A writer kept the gate: no reader is in the way,
                        // so no need to back off.
                        None => Next {
                            at: Some(Instant::now() + RETRY_FIRST),
                            log: Vec::new(),
                        },
                        Some(tried) if tried.done() => {
                            let log = self.finished(&mut failing, &mut state.report);
                            Next {
                                at: tried.next_sweep,
                                log,
                            }
                        }
                        Some(tried) => self.failed(&mut failing, &mut state.report, &tried),
                    };
                    next.log.splice(0..0, notes);
                    if let Some(again) = next.at {
                        state.at = Some(state.at.map_or(again, |at| at.min(again)));
                    }
                    if !next.log.is_empty() {
                        drop(state);
                        for (level, message) in next.log {
                            log::log!(level, "{message}");
                        }
                        state = self.due.lock();
                    }
                }
            }
        }
    }

    /// One try, holding nothing but the file's write gate: the sweep, then
    /// the erasure. `None` when another thread of the process kept the
    /// gate.
    fn try_once(&self) -> Option<Try> {
        let (swept, erased) = self.gate.enter(GATE_WAIT).map(|_pass| {
            let swept = {
                let _span = Span::begin(Work::Write);
                (self.sweep)(self.conn)
            };
            (swept, try_erase(self.conn))
        })?;
        let mut errors = Vec::new();
        let mut notes = Vec::new();
        let next_sweep = match swept {
            Ok((swept, next)) => {
                notes.extend(swept_note(swept));
                next.map(instant_of)
            }
            Err(e) => {
                errors.push(format!(
                    "deleting KeyPackages whose grace window ended: {e}"
                ));
                None
            }
        };
        let blocker = erased.unwrap_or_else(|e| {
            errors.push(format!("erasing: {e}"));
            None
        });
        let owed_for = if errors.is_empty() && blocker.is_none() {
            None
        } else {
            // A record that cannot be read is taken as owed since now.
            match owed_since(self.conn) {
                Ok(since) => since.map(age_of),
                Err(e) => {
                    errors.push(format!("reading the erasure record: {e}"));
                    Some(Duration::ZERO)
                }
            }
        };
        Some(Try {
            next_sweep,
            blocker,
            errors,
            notes,
            owed_for,
        })
    }

    /// After a try that did not finish: reports it, and says when to try
    /// again. Within the bound (and for [`RETRY_MAX`] at least), the wait
    /// doubles at each failure, up to [`RETRY_MAX`]. Past it (an erasure
    /// owed longer than that which another connection keeps, or errors for
    /// longer than that), it is a share of how long it has been past the
    /// bound (see [`RETRY_PAST_BOUND_SHARE`]).
    fn failed(&self, failing: &mut Failing, report: &mut EraserReport, tried: &Try) -> Next {
        let since = *failing.since.get_or_insert_with(Instant::now);
        let file = name_of(self.conn);
        let mut log: Vec<(log::Level, String)> = tried
            .errors
            .iter()
            .map(|error| {
                (
                    log::Level::Warn,
                    format!("the eraser of {file} failed {error}; it tries again"),
                )
            })
            .collect();
        let outside = matches!(
            tried.blocker,
            Some(ErasureBlocker::Reader { .. } | ErasureBlocker::Locked)
        );
        // Under a bound of zero (deletions only, or `within: 0`) a reader
        // in the way for a moment is no news: the back-off and the warning
        // wait for [`RETRY_MAX`] at least.
        let patience = self.bound.max(RETRY_MAX);
        let past_bound = tried.owed_for.filter(|owed| *owed > patience);
        let overdue = if !tried.errors.is_empty() {
            Some(since.elapsed()).filter(|failing_for| *failing_for > patience)
        } else if outside {
            past_bound
        } else {
            None
        }
        .map(|held| held.saturating_sub(self.bound));
        let wait = match overdue {
            Some(overdue) => {
                (overdue / RETRY_PAST_BOUND_SHARE).clamp(RETRY_MAX, RETRY_PAST_BOUND_MAX)
            }
            None => failing.retry,
        };
        failing.retry = (failing.retry * 2).min(RETRY_MAX);
        if let (Some(owed), false) = (past_bound, failing.warned) {
            failing.warned = true;
            let why = match (tried.blocker, tried.errors.last()) {
                (Some(blocker), _) => blocker.to_string(),
                (None, Some(error)) => format!("the eraser failed {error}"),
                (None, None) => "unknown".to_owned(),
            };
            log.push((
                log::Level::Warn,
                format!(
                    "an erasure on {file} owed for {:.1} s is past its bound of {:.1} s: \
                     {why}; old copies of secrets stay readable in the log until it is \
                     done, and the eraser tries less often the longer it is held (at \
                     most a minute apart)",
                    owed.as_secs_f64(),
                    self.bound.as_secs_f64(),
                ),
            ));
        }
        report.failed_tries = report.failed_tries.saturating_add(1);
        report.blocker = tried.blocker;
        if let Some(error) = tried.errors.last() {
            report.last_error = Some(error.clone());
        }
        report.retry = Some(wait);
        report.backing_off = overdue.is_some();
        let again = Instant::now() + wait;
        Next {
            at: Some(tried.next_sweep.map_or(again, |next| next.min(again))),
            log,
        }
    }

    /// After a try that left nothing owed: clears what the failed ones
    /// reported, and says what to log.
    fn finished(
        &self,
        failing: &mut Failing,
        report: &mut EraserReport,
    ) -> Vec<(log::Level, String)> {
        let mut log = Vec::new();
        if let (Some(since), true) = (failing.since, failing.warned) {
            log.push((
                log::Level::Info,
                format!(
                    "the erasure on {} past its bound is done, after {} tries over {:.1} s",
                    name_of(self.conn),
                    report.failed_tries.saturating_add(1),
                    since.elapsed().as_secs_f64()
                ),
            ));
        }
        *failing = Failing::default();
        *report = EraserReport {
            wakeups: report.wakeups,
            ..EraserReport::default()
        };
        log
    }
}
