//! `Slot`: one worker position of a lane, shared by the thread that serves
//! it, the watchdog and shutdown.
//!
//! A slot outlives the threads that serve it: when its worker is
//! quarantined (stuck past a deadline) the slot's *generation* moves on, a
//! replacement thread with a fresh interpreter serves it, and the stuck
//! thread — whenever it returns — sees that it is no longer the slot's and
//! leaves without touching the queues. The slot holds what others need to
//! reach while the worker runs Python:
//!
//! - the run in progress (`run`, with the controls of its tasks), so an
//!   interrupt can check it still targets the same call, and a quarantine
//!   can resolve those tasks;
//! - the rest of the current batch, so a quarantine can hand unstarted
//!   tasks to the other workers;
//! - the interrupt handle of the generation's interpreter.
//!
//! ## Locking
//! `inner` is taken briefly and never while waiting for a GIL: the worker
//! takes it while attached to its own interpreter (holding that GIL); an
//! interrupter takes it while holding the target's GIL. So the order is
//! always GIL → `inner`. `local` is held by the serving thread while it looks
//! for work or sleeps, never while it runs a job, so a replacement can take
//! it while the stuck thread is inside a call.

use crate::handler::HandlerCore;
use crate::lane::Job;
use crate::sched::pool::Local;
use crate::task::{Control, Task};
use gilpool_ffi::InterruptHandle;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// One worker position; see the module docs.
pub(crate) struct Slot {
    pub(crate) index: usize,
    /// The worker's deque. Held while finding work, not while running it.
    pub(crate) local: Mutex<Local<Job>>,
    pub(crate) inner: Mutex<SlotInner>,
    /// The reason of an interrupt delivered to the run in progress (0:
    /// none), set by an interrupter holding the interpreter's GIL, taken
    /// by the worker after the call returns.
    pub(crate) interrupt: AtomicU8,
    pub(crate) stats: crate::metrics::SlotStats,
    /// The serving worker's interpreter as lent to callers.
    pub(crate) room: Mutex<Option<Arc<crate::handler::caller::Room>>>,
}

/// The interrupt handle of one generation's interpreter.
pub(crate) struct Target {
    pub(crate) handle: Arc<InterruptHandle>,
    /// An interrupt attempt is in flight (it may be blocked on the GIL of a
    /// thread stuck in C; then no second one starts).
    pub(crate) busy: AtomicBool,
}

impl Target {
    pub(crate) fn new(handle: Arc<InterruptHandle>) -> Target {
        Target {
            handle,
            busy: AtomicBool::new(false),
        }
    }
}

/// A batch's tasks not started yet, with their handler.
pub(crate) type Rest = (Arc<HandlerCore>, VecDeque<Box<dyn Task>>);

/// What [`Slot::inner`] guards.
#[derive(Default)]
pub(crate) struct SlotInner {
    /// Bumped when the serving thread is quarantined or abandoned.
    pub(crate) generation: u64,
    /// Run ids, unique within the slot across generations.
    pub(crate) next_run: u64,
    /// The call in progress (0: none).
    pub(crate) run: u64,
    /// The tasks of that call.
    pub(crate) running: Vec<Arc<dyn Control>>,
    /// The current batch's tasks not started yet.
    pub(crate) rest: Option<Rest>,
    pub(crate) target: Option<Arc<Target>>,
    /// Tasks this generation ran (for recycling and metrics).
    pub(crate) tasks: u64,
}

impl Slot {
    pub(crate) fn new(index: usize, local: Local<Job>) -> Slot {
        Slot {
            index,
            local: Mutex::new(local),
            inner: Mutex::new(SlotInner::default()),
            interrupt: AtomicU8::new(0),
            stats: crate::metrics::SlotStats::default(),
            room: Mutex::new(None),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, SlotInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `generation` still serves this slot.
    pub(crate) fn is_current(&self, generation: u64) -> bool {
        self.lock().generation == generation
    }

    /// Marks `tasks` as the call in progress; returns its run id.
    pub(crate) fn start_run(&self, inner: &mut SlotInner, tasks: Vec<Arc<dyn Control>>) -> u64 {
        inner.next_run += 1;
        inner.run = inner.next_run;
        inner.running = tasks;
        inner.tasks += 1;
        // A stale reason cannot be left over (it is only set for the run
        // in progress and taken when it ends), but make sure.
        self.interrupt.store(0, Ordering::SeqCst);
        inner.run
    }
}

impl SlotInner {
    /// Ends the call in progress.
    pub(crate) fn end_run(&mut self) {
        self.run = 0;
        self.running.clear();
    }
}
