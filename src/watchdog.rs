//! The watchdog: deadlines, cancellation of running tasks, interrupts and
//! quarantine.
//!
//! One thread per engine (`gilpool-watchdog`) sleeps until the earliest
//! entry of a time-ordered queue ([`Watch`]) is due. Entries are a task's
//! deadline (registered at submit), a cancellation of a running task, or a
//! re-check of an interrupt. When a task's deadline passes:
//!
//! 1. not started: it is stopped and its future resolves with a timeout;
//!    it never runs;
//! 2. running: its worker is interrupted ([`interrupt`]) — a
//!    `KeyboardInterrupt` scheduled in that worker's thread, in that
//!    worker's interpreter only — and re-checked every [`REPEAT`]; code that
//!    swallows the exception is interrupted again;
//! 3. still running after the lane's grace period: the worker is
//!    quarantined ([`quarantine`]): the task resolves with a timeout at
//!    once, the unstarted rest of its batch goes back to the lane, and a
//!    replacement thread with a fresh interpreter takes the slot. The
//!    stuck thread and its interpreter are abandoned (never joined, never
//!    ended while it runs).
//!
//! Interrupt attempts run on short-lived threads of their own: taking the
//! target's GIL can block for as long as a C call holds it, and the
//! watchdog must stay free to resolve futures on time.

use crate::error::{Error, ErrorKind};
use crate::lane::{Batch, Job, Lane};
use crate::metrics::Stamp;
use crate::slot::{Slot, Target};
use crate::task::{Control, Deadline};
use gilpool_ffi::Python;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

/// How often a running task past its deadline (or cancelled) is
/// interrupted again while it does not stop.
pub(crate) const REPEAT: Duration = Duration::from_millis(50);

/// Why a run is interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Reason {
    /// The task's deadline passed.
    Timeout = 1,
    /// `TaskFuture::cancel`.
    Cancel = 2,
    /// The engine is shutting down and stopped waiting.
    Shutdown = 3,
}

impl Reason {
    fn from_u8(v: u8) -> Option<Reason> {
        match v {
            1 => Some(Reason::Timeout),
            2 => Some(Reason::Cancel),
            3 => Some(Reason::Shutdown),
            _ => None,
        }
    }

    /// The error a task stopped for this reason resolves with;
    /// `quarantined` when it did not stop and its worker was given up.
    pub(crate) fn error(self, deadline: Option<Deadline>, quarantined: bool) -> Error {
        let limit = deadline.map_or_else(String::new, |d| format!(" of {:?}", d.timeout));
        match (self, quarantined) {
            (Reason::Timeout, false) => Error::new(ErrorKind::Timeout(format!(
                "the task ran past its deadline{limit} and was interrupted"
            ))),
            (Reason::Timeout, true) => Error::new(ErrorKind::Timeout(format!(
                "the task ran past its deadline{limit} and did not stop when interrupted (blocked in C code?); its worker was quarantined and replaced"
            ))),
            (Reason::Cancel, false) => Error::new(ErrorKind::Cancelled(
                "the task was cancelled while running and was interrupted".into(),
            )),
            (Reason::Cancel, true) => Error::new(ErrorKind::Cancelled(
                "the task was cancelled while running and did not stop when interrupted; its worker was quarantined and replaced".into(),
            )),
            (Reason::Shutdown, false) => Error::new(ErrorKind::Cancelled(
                "the engine shut down while the task ran; it was interrupted".into(),
            )),
            (Reason::Shutdown, true) => Error::new(ErrorKind::Cancelled(
                "the engine shut down while the task ran and it did not stop when interrupted; its worker was abandoned".into(),
            )),
        }
    }
}

/// The error of a task whose deadline passed before it started.
pub(crate) fn expired(deadline: Option<Deadline>) -> Error {
    let limit = deadline.map_or_else(String::new, |d| format!(" of {:?}", d.timeout));
    Error::new(ErrorKind::Timeout(format!(
        "the task's deadline{limit} passed before it started"
    )))
}

/// What a running task sees of its slot: whether its call was interrupted;
/// and where its run time is recorded (nowhere with metrics off: then no
/// clock is read per task).
pub(crate) struct RunCtx<'a> {
    pub(crate) slot: &'a Slot,
    pub(crate) run_time: Option<&'a crate::metrics::Histogram>,
    /// When the task in progress began (`None` without `run_time`: no
    /// clock is read then).
    began: std::cell::Cell<Option<Stamp>>,
}

impl<'a> RunCtx<'a> {
    /// `run_time`: where run times go, `None` when per-task timing is off
    /// ([`EngineBuilder::metrics`](crate::EngineBuilder::metrics)).
    pub(crate) fn new(slot: &'a Slot, run_time: Option<&'a crate::metrics::Histogram>) -> Self {
        RunCtx {
            slot,
            run_time,
            began: std::cell::Cell::new(run_time.map(|_| Stamp::now())),
        }
    }

    /// A task begins: reads the clock (only when timing) and returns it.
    pub(crate) fn begin(&self) -> Option<Stamp> {
        self.run_time?;
        let now = Stamp::now();
        self.began.set(Some(now));
        Some(now)
    }

    /// The time from the task's beginning to `now`.
    fn took(&self, now: Stamp) -> Duration {
        self.began
            .get()
            .map_or(Duration::ZERO, |b| now.saturating_duration_since(b))
    }

    /// After a call of `tasks` tasks returned, before their results are
    /// delivered (so whoever sees a result sees it counted): records their
    /// run time, and says whether the call was interrupted and why. The
    /// clock read here is also the next task's beginning, for callers that
    /// run tasks back to back (a `map` chunk) and do not call `begin`.
    pub(crate) fn returned(&self, py: Python<'_>, tasks: usize) -> Option<Reason> {
        if let Some(h) = self.run_time {
            let now = Stamp::now();
            let took = self.took(now);
            for _ in 0..tasks {
                h.record(took);
            }
            self.began.set(Some(now));
        }
        self.interrupted(py)
    }

    /// [`returned`](Self::returned) for a call that ran `tasks` tasks one
    /// after the other (a `map` chunk through a Python loop): each task's
    /// run time is the call's divided evenly among them.
    pub(crate) fn returned_each(&self, py: Python<'_>, tasks: usize) -> Option<Reason> {
        if let Some(h) = self.run_time {
            let now = Stamp::now();
            let took = self.took(now);
            let each = Duration::from_nanos((took.as_nanos() / tasks.max(1) as u128) as u64);
            h.record_n(each, tasks as u64);
            self.began.set(Some(now));
        }
        self.interrupted(py)
    }

    /// After a call returned: the reason it was interrupted, if it was. A
    /// scheduled interrupt that has not fired yet is dropped then, so it
    /// cannot hit the next call.
    pub(crate) fn interrupted(&self, py: Python<'_>) -> Option<Reason> {
        // Only an interrupter holding this interpreter's GIL sets the
        // reason, and the caller holds that GIL now: a plain load sees any
        // reason set, and nothing can set one between it and the swap. The
        // load spares a read-modify-write per call on the common path.
        if self.slot.interrupt.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let r = self.slot.interrupt.swap(0, Ordering::SeqCst);
        let reason = Reason::from_u8(r)?;
        py.clear_pending_interrupt();
        if reason == Reason::Timeout {
            crate::metrics::add(&self.slot.stats.timeouts, 1);
        }
        Some(reason)
    }
}

enum Action {
    Deadline(Weak<dyn Control>),
    Cancel(Weak<dyn Control>),
    Recheck {
        slot: usize,
        run: u64,
        reason: Reason,
        since: Instant,
    },
}

struct Entry {
    at: Instant,
    seq: u64,
    action: Action,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Reversed: the heap's top is the earliest entry.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Default)]
struct WatchState {
    heap: BinaryHeap<Entry>,
    seq: u64,
    stop: bool,
}

/// The watchdog's queue (see the module docs).
#[derive(Default)]
pub(crate) struct Watch {
    state: Mutex<WatchState>,
    due: Condvar,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}

impl Watch {
    fn push(&self, at: Instant, action: Action) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.seq += 1;
        let seq = s.seq;
        let earliest = s.heap.peek().map_or(true, |top| at < top.at);
        s.heap.push(Entry { at, seq, action });
        drop(s);
        if earliest {
            self.due.notify_one();
        }
    }

    /// A task's deadline.
    pub(crate) fn deadline(&self, at: Instant, task: Weak<dyn Control>) {
        self.push(at, Action::Deadline(task));
    }

    /// A running task's cancellation (acted on at once).
    pub(crate) fn cancel(&self, task: Weak<dyn Control>) {
        self.push(Instant::now(), Action::Cancel(task));
    }

    /// An interrupt of `run` on `slot` for `reason`, repeated until it
    /// stops or `since + grace` passes.
    pub(crate) fn recheck(&self, slot: usize, run: u64, reason: Reason, since: Instant) {
        self.push(
            Instant::now() + REPEAT,
            Action::Recheck {
                slot,
                run,
                reason,
                since,
            },
        );
    }

    /// Ends the watchdog thread.
    pub(crate) fn stop(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
        self.due.notify_all();
    }

    /// The next due entry; `None` once stopped.
    fn next(&self) -> Option<Action> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if s.stop {
                return None;
            }
            let now = Instant::now();
            match s.heap.peek() {
                Some(top) if top.at <= now => return s.heap.pop().map(|e| e.action),
                Some(top) => {
                    let wait = top.at - now;
                    s = self
                        .due
                        .wait_timeout(s, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                None => s = self.due.wait(s).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }
}

/// The watchdog thread's body.
pub(crate) fn run(lane: Arc<Lane>) {
    while let Some(action) = lane.watch.next() {
        match action {
            Action::Deadline(task) => {
                let Some(task) = task.upgrade() else { continue };
                if task.is_resolved() {
                    continue;
                }
                if task.stop_queued(expired(task.deadline())) {
                    continue;
                }
                interrupt_task(&lane, &task, Reason::Timeout);
            }
            Action::Cancel(task) => {
                let Some(task) = task.upgrade() else { continue };
                if !task.is_resolved() {
                    interrupt_task(&lane, &task, Reason::Cancel);
                }
            }
            Action::Recheck {
                slot,
                run,
                reason,
                since,
            } => {
                if lane.slots[slot].lock().run != run {
                    continue;
                }
                if Instant::now() >= since + lane.config.grace {
                    quarantine(&lane, slot, run, reason);
                } else {
                    interrupt(&lane, slot, run, reason);
                    lane.watch.recheck(slot, run, reason, since);
                }
            }
        }
    }
}

/// Interrupts the run `task` is part of, and keeps at it.
fn interrupt_task(lane: &Arc<Lane>, task: &Arc<dyn Control>, reason: Reason) {
    let me = Arc::as_ptr(task) as *const ();
    for slot in &lane.slots {
        let run = {
            let inner = slot.lock();
            if !inner
                .running
                .iter()
                .any(|c| Arc::as_ptr(c) as *const () == me)
            {
                continue;
            }
            inner.run
        };
        interrupt(lane, slot.index, run, reason);
        lane.watch.recheck(slot.index, run, reason, Instant::now());
        return;
    }
}

/// Schedules a `KeyboardInterrupt` in `slot`'s thread if it still runs
/// `run`, on a short-lived thread (see the module docs).
pub(crate) fn interrupt(lane: &Arc<Lane>, slot: usize, run: u64, reason: Reason) {
    let slot = lane.slots[slot].clone();
    let target: Arc<Target> = {
        let inner = slot.lock();
        match &inner.target {
            Some(t) if inner.run == run => t.clone(),
            _ => return,
        }
    };
    let counted = lane.clone();
    // Counted under the target's GIL, before the worker can see the
    // exception: whoever waits for the worker sees the count.
    target.attempt(move || {
        let inner = slot.lock();
        if inner.run == run {
            slot.interrupt.store(reason as u8, Ordering::SeqCst);
            counted.stats.interrupts.fetch_add(1, Ordering::SeqCst);
            crate::metrics::add(&slot.stats.interrupts, 1);
            true
        } else {
            false
        }
    });
}

impl Target {
    /// Schedules a `KeyboardInterrupt` in the target's thread if `check`
    /// (called holding the target interpreter's GIL) says so, on a
    /// short-lived thread (see the module docs); does nothing while an
    /// earlier attempt is still waiting for that GIL.
    pub(crate) fn attempt(self: &Arc<Self>, check: impl FnOnce() -> bool + Send + 'static) {
        if self.busy.swap(true, Ordering::SeqCst) {
            return;
        }
        let target = self.clone();
        let spawned = std::thread::Builder::new()
            .name("gilpool-interrupt".into())
            .spawn(move || {
                target.handle.interrupt(check);
                target.busy.store(false, Ordering::SeqCst);
            });
        if spawned.is_err() {
            self.busy.store(false, Ordering::SeqCst);
        }
    }
}

/// Gives up on `slot`'s thread if it still runs `run`: resolves that run's
/// tasks with `reason`'s error, hands the rest of its batch back to the
/// lane, and (unless the lane is stopping) starts a replacement. Returns
/// whether it did.
pub(crate) fn quarantine(lane: &Arc<Lane>, slot: usize, run: u64, reason: Reason) -> bool {
    let s = &lane.slots[slot];
    let (running, rest, generation) = {
        let mut inner = s.lock();
        if inner.run != run {
            return false;
        }
        inner.generation += 1;
        inner.target = None;
        let running = std::mem::take(&mut inner.running);
        inner.run = 0;
        (running, inner.rest.take(), inner.generation)
    };
    lane.worker_left();
    lane.stats.quarantines.fetch_add(1, Ordering::Relaxed);
    crate::metrics::add(&s.stats.quarantines, 1);
    if reason == Reason::Timeout {
        crate::metrics::add(&s.stats.timeouts, running.len() as u64);
    }
    for task in &running {
        task.resolve(reason.error(task.deadline(), true));
    }
    let stopping = lane.pool.is_cancelled();
    if let Some((handler, tasks)) = rest {
        if !tasks.is_empty() {
            if stopping {
                drop(tasks);
            } else {
                lane.pool.inject(Job::Batch(Batch {
                    handler,
                    tasks: tasks.into(),
                    prefetched: false,
                }));
            }
        }
    }
    let what = match reason {
        Reason::Timeout => "ran past its deadline",
        Reason::Cancel => "was cancelled",
        Reason::Shutdown => "was running at shutdown",
    };
    if stopping {
        lane.warn(format!(
            "worker {}-{slot}: a task {what} and did not stop when interrupted; its thread and interpreter were abandoned",
            lane.kind.name()
        ));
        lane.stats.abandoned.fetch_add(1, Ordering::Relaxed);
    } else {
        lane.warn(format!(
            "worker {}-{slot}: a task {what} and did not stop when interrupted; quarantined (thread and interpreter abandoned) and replaced by a fresh worker",
            lane.kind.name()
        ));
        if let Err(e) = lane.spawn_worker(slot, generation, false) {
            lane.warn(format!(
                "worker {}-{slot}: no replacement: {e}",
                lane.kind.name()
            ));
        }
    }
    true
}
