//! The write gate: within a process, one thread at a time writes to a
//! database file or checkpoints it.
//!
//! SQLite 3.7.0 to 3.51.2 has the WAL-reset bug: a checkpoint that runs
//! while another connection commits the transaction that restarts the
//! write-ahead log can lose committed pages. This crate checkpoints often
//! (after every commit that deletes key material, and within the erasure
//! bound of every overwrite), from the storage's connection and from the
//! eraser's, so every write transaction (from its `BEGIN` to its `COMMIT`,
//! SQLite's automatic checkpoint included) and every checkpoint made by
//! this crate on a file passes through the one gate the process keeps for
//! that file. Writers of one process then also queue here instead of in
//! SQLite's busy handler, which sleeps.
//!
//! The gate is re-entrant on the thread that holds it: a transaction's
//! nested writes, and the checkpoint right after its commit, go straight
//! through.

use std::{
    marker::PhantomData,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Condvar, Mutex, MutexGuard, PoisonError,
    },
    thread::{self, ThreadId},
    time::{Duration, Instant},
};

/// The gate of one database file, shared by every handle the process holds
/// on it and by the file's eraser.
#[derive(Debug, Default)]
pub(crate) struct WriteGate {
    state: Mutex<GateState>,
    freed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    /// The thread inside, and how many times it entered.
    owner: Option<ThreadId>,
    depth: u32,
}

/// A thread's passage through the gate; leaving it (dropping) lets the next
/// thread in once the outermost pass of the thread is gone. Stays on the
/// thread that entered.
#[derive(Debug)]
pub(crate) struct GatePass<'g> {
    gate: &'g WriteGate,
    _not_send: PhantomData<*const ()>,
}

impl WriteGate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        // The state is two plain fields, meaningful whatever a panicking
        // holder left.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Enters the gate, waiting at most `wait` for another thread to leave
    /// it; `None` when it did not in time.
    pub(crate) fn enter(&self, wait: Duration) -> Option<GatePass<'_>> {
        let me = thread::current().id();
        let deadline = Instant::now().checked_add(wait);
        let mut state = self.lock();
        loop {
            match state.owner {
                None => {
                    state.owner = Some(me);
                    state.depth = 1;
                    break;
                }
                Some(owner) if owner == me => {
                    state.depth += 1;
                    break;
                }
                Some(_) => {
                    let left = match deadline {
                        Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                        None => Duration::MAX,
                    };
                    if left.is_zero() {
                        return None;
                    }
                    state = self
                        .freed
                        .wait_timeout(state, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
        Some(GatePass {
            gate: self,
            _not_send: PhantomData,
        })
    }

    /// Enters the gate only if no other thread is inside.
    pub(crate) fn try_enter(&self) -> Option<GatePass<'_>> {
        self.enter(Duration::ZERO)
    }
}

impl Drop for GatePass<'_> {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        state.depth = state.depth.saturating_sub(1);
        if state.depth == 0 {
            state.owner = None;
            drop(state);
            self.gate.freed.notify_one();
        }
    }
}

/// Counts, for tests, the write transactions and checkpoints this crate
/// runs and how often one began while the other was under way in the
/// process. Off (and free but for one relaxed load) until a test turns it
/// on.
pub(crate) mod probe {
    use super::*;

    static ON: AtomicBool = AtomicBool::new(false);
    static WRITING: AtomicU64 = AtomicU64::new(0);
    static CHECKPOINTING: AtomicU64 = AtomicU64::new(0);
    static WRITES: AtomicU64 = AtomicU64::new(0);
    static CHECKPOINTS: AtomicU64 = AtomicU64::new(0);
    static OVERLAPS: AtomicU64 = AtomicU64::new(0);

    /// What the probe has seen since it was turned on.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct ProbeCounts {
        /// Write transactions begun.
        pub writes: u64,
        /// Checkpoints begun.
        pub checkpoints: u64,
        /// Times a write began during a checkpoint, or a checkpoint during
        /// a write.
        pub overlaps: u64,
    }

    /// Turns the probe on and zeroes its counts.
    pub fn start() {
        for count in [&WRITES, &CHECKPOINTS, &OVERLAPS] {
            count.store(0, Ordering::SeqCst);
        }
        ON.store(true, Ordering::SeqCst);
    }

    /// The counts so far.
    pub fn counts() -> ProbeCounts {
        ProbeCounts {
            writes: WRITES.load(Ordering::SeqCst),
            checkpoints: CHECKPOINTS.load(Ordering::SeqCst),
            overlaps: OVERLAPS.load(Ordering::SeqCst),
        }
    }

    /// Which kind of work a [`Span`] covers.
    #[derive(Clone, Copy)]
    pub(crate) enum Work {
        Write,
        Checkpoint,
    }

    /// One write transaction or checkpoint under way, while the probe is on.
    pub(crate) struct Span(Option<Work>);

    impl Span {
        pub(crate) fn begin(work: Work) -> Self {
            if !ON.load(Ordering::Relaxed) {
                return Self(None);
            }
            let (mine, other, total) = match work {
                Work::Write => (&WRITING, &CHECKPOINTING, &WRITES),
                Work::Checkpoint => (&CHECKPOINTING, &WRITING, &CHECKPOINTS),
            };
            mine.fetch_add(1, Ordering::SeqCst);
            total.fetch_add(1, Ordering::SeqCst);
            if other.load(Ordering::SeqCst) > 0 {
                OVERLAPS.fetch_add(1, Ordering::SeqCst);
            }
            Self(Some(work))
        }
    }

    impl Drop for Span {
        fn drop(&mut self) {
            match self.0 {
                Some(Work::Write) => WRITING.fetch_sub(1, Ordering::SeqCst),
                Some(Work::Checkpoint) => CHECKPOINTING.fetch_sub(1, Ordering::SeqCst),
                None => 0,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_thread_inside_enters_again_and_others_wait_until_it_leaves() {
        let gate = Arc::new(WriteGate::default());
        let outer = gate.try_enter().expect("free");
        let inner = gate.try_enter().expect("re-entered by its holder");
        let other = {
            let gate = Arc::clone(&gate);
            thread::spawn(move || gate.try_enter().is_some())
        };
        assert!(!other.join().unwrap(), "another thread got in");
        drop(inner);
        let other = {
            let gate = Arc::clone(&gate);
            thread::spawn(move || gate.try_enter().is_some())
        };
        assert!(!other.join().unwrap(), "the outer pass still holds it");
        drop(outer);
        let other = {
            let gate = Arc::clone(&gate);
            thread::spawn(move || gate.try_enter().is_some())
        };
        assert!(other.join().unwrap(), "free once the holder left");
    }

    #[test]
    fn a_waiting_thread_gets_in_when_the_holder_leaves() {
        let gate = Arc::new(WriteGate::default());
        let pass = gate.try_enter().unwrap();
        let waiter = {
            let gate = Arc::clone(&gate);
            thread::spawn(move || gate.enter(Duration::from_secs(30)).is_some())
        };
        thread::sleep(Duration::from_millis(50));
        drop(pass);
        assert!(waiter.join().unwrap());
    }

    #[test]
    fn a_wait_ends_when_its_time_is_up() {
        let gate = Arc::new(WriteGate::default());
        let _pass = gate.try_enter().unwrap();
        let waiter = {
            let gate = Arc::clone(&gate);
            thread::spawn(move || gate.enter(Duration::from_millis(30)).is_some())
        };
        assert!(!waiter.join().unwrap());
    }
}
