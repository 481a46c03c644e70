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

use super::{erase, instant_of, Due, Sweep};
use crate::write_gate::{
    probe::{Span, Work},
    WriteGate,
};

/// How long the eraser waits before trying again after another connection
/// kept the log from being emptied: doubled at each failure, up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(20);

/// The longest wait between two tries while the log is held.
const RETRY_MAX: Duration = Duration::from_secs(1);

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
            .spawn(move || run(&conn, &shared, &stopped, &sweep, &gate))
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

/// The eraser's loop: asleep while nothing is due, and until it is; then,
/// inside the file's write gate, the sweep and the erasure of what it and
/// the storages left behind.
fn run(conn: &Connection, due: &Due, stop: &AtomicBool, sweep: &Sweep, gate: &WriteGate) {
    let mut retry = RETRY_FIRST;
    let mut state = due.lock();
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        match state.at {
            None => {
                state = due
                    .changed
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            Some(at) if at > now => {
                state = due
                    .changed
                    .wait_timeout(state, at - now)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
            }
            Some(_) => {
                // Taken before erasing: a leftover committed meanwhile sets
                // its own deadline again.
                state.at = None;
                drop(state);
                let outcome = gate.enter(GATE_WAIT).map(|_pass| {
                    let swept = {
                        let _span = Span::begin(Work::Write);
                        sweep(conn)
                    };
                    (swept, matches!(erase(conn), Ok(true)))
                });
                state = due.lock();
                let Some((swept, erased)) = outcome else {
                    // A writer kept the gate: no reader is in the way, so
                    // no need to back off.
                    let again = Instant::now() + RETRY_FIRST;
                    state.at = Some(state.at.map_or(again, |at| at.min(again)));
                    continue;
                };
                if let Ok((_, Some(next))) = swept {
                    let next = instant_of(next);
                    state.at = Some(state.at.map_or(next, |at| at.min(next)));
                }
                if erased && swept.is_ok() {
                    retry = RETRY_FIRST;
                } else {
                    let again = Instant::now() + retry;
                    state.at = Some(state.at.map_or(again, |at| at.min(again)));
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
        }
    }
}
