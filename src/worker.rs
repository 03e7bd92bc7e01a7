//! The worker loop: one thread serving one lane slot with one interpreter.
//!
//! A job's tasks are parked in the slot while they run (see `slot.rs`), so
//! the watchdog can interrupt the call in progress and, if it does not
//! stop, quarantine the thread: the thread then leaves as soon as its call
//! returns, without touching the slot's queues again. A panic that escapes
//! a job (user code is contained per task; this is the last line) fails the
//! tasks the job held with an error saying so, and the worker goes on.

mod exec;
mod import;
mod init;

pub(crate) use import::import_function;
use import::run_initializer;
pub(crate) use init::{run_watched, InitFailure, InitWatches, Limits};

use crate::engine::Initializer;
use crate::error::{panic_message, Error, ErrorKind};
use crate::handler::caller::Room;
use crate::handler::{HandlerCore, IdMap};
use crate::held::{self, Home, Releases};
use crate::lane::{Batch, Job, Lane, LaneKind};
use crate::sched::lend::Reclaimed;
use crate::sched::pool::{Idle, Next};
use crate::slot::{Slot, SlotInner, Target};
use crate::task::{self, Control, Task};
use crate::watchdog::{expired, RunCtx};
use gilpool_ffi::guest::InterpRef;
use gilpool_ffi::{
    Attached, InterruptHandle, Kept, MainThreadState, Object, Python, Stash, SubInterpreter,
    WorkerState,
};
use import::lookup;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Default stack size of worker threads: room for Python's own recursion
/// limits (CPython sizes them for a main thread's 8 MiB) with margin.
pub const DEFAULT_STACK_SIZE: usize = 16 << 20;

/// What a worker thread starts with.
pub(crate) struct WorkerStart {
    pub(crate) lane: Arc<Lane>,
    pub(crate) slot: usize,
    pub(crate) generation: u64,
    /// Whether this is the lane's first start, reported to
    /// [`Lane::startup`](crate::lane::Lane) (the engine's build waits for
    /// the first worker up); a replacement reports failures as warnings.
    pub(crate) first: bool,
}

/// The interpreter a worker attaches through.
enum State {
    Sub(SubInterpreter),
    Main(MainThreadState),
}

impl State {
    fn attach(&self) -> Attached<'_> {
        match self {
            State::Sub(s) => s.attach(),
            State::Main(m) => m.attach(),
        }
    }
}

/// The body of a worker thread.
pub(crate) fn run(start: WorkerStart) {
    let WorkerStart {
        lane,
        slot: index,
        generation,
        first,
    } = start;
    let slot = lane.slots[index].clone();
    let cores = &lane.config.cores;
    if !cores.is_empty() {
        core_affinity::set_for_current(cores[index % cores.len()]);
    }
    // A panic while opening still reports (the build may be waiting on
    // this worker alone).
    let opened = catch_unwind(AssertUnwindSafe(|| open(&lane, index, generation, first)))
        .unwrap_or_else(|p| {
            Err(InitFailure::Failed(format!(
                "the worker panicked while starting: {}",
                panic_message(&*p)
            )))
        });
    let opened = match opened {
        Ok(o) => o,
        Err(failure) => {
            // An abandoned start was reported by whoever gave up on it.
            if let InitFailure::Failed(e) = failure {
                report_start(&lane, index, first, Err(e));
            }
            leave(&lane, &slot, generation);
            return;
        }
    };
    let Opened {
        state,
        handle,
        releases,
        snapshot,
        room,
    } = opened;
    report_start(&lane, index, first, Ok(()));
    let mut worker = Worker {
        state,
        cache: IdMap::default(),
        lane: lane.clone(),
        slot: slot.clone(),
        generation,
        handle,
        releases,
        snapshot,
        tasks_at_open: slot.stats.tasks.load(Ordering::Relaxed),
        room,
        recycle_due: std::cell::RefCell::new(None),
        modules: std::cell::RefCell::default(),
    };
    let spin = lane.config.idle_spin;
    let mut idle_since: Option<Instant> = None;
    loop {
        worker.room.lend.offer();
        let next = {
            let local = slot.local.lock().unwrap_or_else(|e| e.into_inner());
            local.next_with(|| {
                let (published, deadline) = lane.flush_due();
                if published {
                    return Idle::Published;
                }
                let now = Instant::now();
                let since = *idle_since.get_or_insert(now);
                if now.duration_since(since) < spin {
                    // Yield, not a pause instruction: a worker between jobs
                    // gives its core to whoever is runnable (the submitting
                    // thread, on a host with no core to spare) and is back
                    // within a scheduler round trip when it is not.
                    std::thread::yield_now();
                    return Idle::Published;
                }
                Idle::Sleep(deadline.map(|d| d.saturating_duration_since(now)))
            })
        };
        idle_since = None;
        match next {
            Next::Job(job) => {
                if worker.room.lend.reclaim() == Reclaimed::Retired {
                    worker.retired();
                    if !worker.recycle_if_due() {
                        leave(&lane, &slot, generation);
                        return;
                    }
                }
                if let Err(p) = catch_unwind(AssertUnwindSafe(|| worker.run_job(job))) {
                    worker.after_panic(&panic_message(&*p));
                }
                if !worker.recycle_if_due() {
                    leave(&lane, &slot, generation);
                    return;
                }
                if !slot.is_current(generation) {
                    // Quarantined while the job ran: the slot is another
                    // thread's now.
                    worker.finish(Instant::now() + Duration::from_secs(1));
                    return;
                }
            }
            Next::Exit => break,
        }
    }
    let end_by = lane.end_by();
    worker.finish(end_by);
    leave(&lane, &slot, generation);
}

/// A worker reports whether it came up: to the lane's start-up for its
/// first start (the build may be waiting), as a warning for a replacement.
fn report_start(lane: &Lane, index: usize, first: bool, r: std::result::Result<(), String>) {
    match (first, r) {
        (true, r) => lane.startup.report(lane, index, r),
        (false, Err(e)) => lane.warn(format!(
            "replacement worker {}-{index} failed to start: {e}",
            lane.kind.name()
        )),
        (false, Ok(())) => {}
    }
}

/// Gives up on a worker whose initializers did not stop when interrupted
/// (called by their watcher): the slot stops counting the thread, which
/// leaves whenever it returns, and the failure is reported for it.
fn abandon_start(lane: &Lane, index: usize, generation: u64, first: bool, e: String) {
    {
        let mut inner = lane.slots[index].lock();
        if inner.generation != generation {
            return;
        }
        inner.generation += 1;
    }
    lane.worker_left();
    lane.stats.abandoned.fetch_add(1, Ordering::Relaxed);
    report_start(lane, index, first, Err(e));
}

/// A worker's interpreter, ready for its first task.
struct Opened {
    state: State,
    handle: Arc<InterruptHandle>,
    releases: Arc<Releases>,
    /// The main interpreter's `sys.modules` as the worker found it (main
    /// lane), to repair it if a task clears it.
    snapshot: Option<Kept>,
    room: Arc<Room>,
}

/// Creates the worker's interpreter (sub lane) or thread state (main
/// lane), puts the configured directories on `sys.path`, runs the sub
/// lane's initializers, and makes it the slot's target and this thread's
/// `Held` home.
fn open(
    lane: &Arc<Lane>,
    index: usize,
    generation: u64,
    first: bool,
) -> std::result::Result<Opened, InitFailure> {
    let slot = &lane.slots[index];
    let state = match lane.kind {
        LaneKind::Sub => {
            State::Sub(SubInterpreter::new(lane.config.runtime).map_err(InitFailure::Failed)?)
        }
        LaneKind::Main => State::Main(MainThreadState::new(lane.config.runtime)),
    };
    let (handle, prepared) = {
        let guard = state.attach();
        let py = guard.py();
        let handle = py.interrupt_handle();
        let prepared = py
            .prepend_sys_path(&lane.config.sys_path)
            .and_then(|()| py.add_site_dirs(lane.config.runtime.site_dirs()))
            .map_err(|e| {
                InitFailure::Failed(format!("cannot set sys.path in a worker interpreter: {e}"))
            })
            .and_then(|()| {
                if lane.kind != LaneKind::Sub {
                    // The main interpreter ran them once, when the lane started.
                    return Ok(());
                }
                let inits: Vec<Initializer> = lane
                    .config
                    .initializers
                    .iter()
                    .filter(|i| i.applies_to(LaneKind::Sub))
                    .cloned()
                    .collect();
                let abandon = {
                    let lane = lane.clone();
                    move |e| abandon_start(&lane, index, generation, first, e)
                };
                run_watched(
                    py,
                    &inits,
                    &handle,
                    lane.config.init_limits(),
                    Some(&lane.inits),
                    abandon,
                )
            })
            .map(|()| {
                let snapshot = (lane.kind == LaneKind::Main)
                    .then(|| py.modules_snapshot().ok())
                    .flatten();
                let for_room = snapshot.as_ref().map(|s| s.clone().keep());
                (InterpRef::current(py), snapshot.map(Object::keep), for_room)
            });
        (handle, prepared)
    };
    let (interp_ref, snapshot, room_snapshot) = match prepared {
        Ok(p) => p,
        Err(e) => {
            // Detached: no interrupt attempt may use the interpreter once
            // it ends.
            handle.retire();
            end(lane, state, Instant::now());
            return Err(e);
        }
    };
    let interp = interp_ref.id();
    let (home, releases) = match lane.kind {
        LaneKind::Sub => (
            Home {
                lane: lane.id,
                slot: Some(index),
                interp,
            },
            Arc::new(Releases::default()),
        ),
        LaneKind::Main => (
            Home {
                lane: lane.id,
                slot: None,
                interp,
            },
            lane.releases.clone(),
        ),
    };
    held::enter(home, releases.clone());
    slot.lock().target = Some(Arc::new(Target::new(handle.clone())));
    let room = Arc::new(Room::new(
        interp_ref,
        index,
        home,
        releases.clone(),
        room_snapshot,
    ));
    *slot.room.lock().unwrap_or_else(|e| e.into_inner()) = Some(room.clone());
    Ok(Opened {
        state,
        handle,
        releases,
        snapshot,
        room,
    })
}

/// Stops counting this thread as its slot's, unless it no longer is.
fn leave(lane: &Lane, slot: &Slot, generation: u64) {
    if slot.is_current(generation) {
        lane.worker_left();
    }
}

/// Ends the worker's interpreter, abandoning it if threads its tasks
/// started are still alive at `deadline`.
fn end(lane: &Lane, state: State, deadline: Instant) {
    match state {
        State::Sub(s) => {
            let id = s.interpreter_id();
            if let Err(threads) = s.end_within(deadline) {
                lane.stats.abandoned.fetch_add(1, Ordering::Relaxed);
                lane.warn(format!(
                    "interpreter {id} abandoned: {threads} thread(s) started by tasks were still running at shutdown (ending it would abort the process)"
                ));
            }
        }
        State::Main(m) => drop(m),
    }
}

struct Worker {
    state: State,
    /// Each handler's function, resolved in this worker's interpreter.
    cache: IdMap<Stash>,
    lane: Arc<Lane>,
    slot: Arc<Slot>,
    generation: u64,
    handle: Arc<InterruptHandle>,
    /// `Held` objects of this interpreter to give back.
    releases: Arc<Releases>,
    snapshot: Option<Kept>,
    /// The slot's task count when this interpreter opened.
    tasks_at_open: u64,
    /// This interpreter as lent to callers between jobs.
    room: Arc<Room>,
    /// Why the interpreter must be recycled before the next job (set while
    /// attached, through `&self`).
    recycle_due: std::cell::RefCell<Option<String>>,
    /// Skips the import check after a job while `sys.modules` saw no
    /// change (starts over in a recycled interpreter).
    modules: std::cell::RefCell<gilpool_ffi::ModulesWatch>,
}

/// Why a task taken from the slot is not run.
fn unrunnable(lane: &Lane, control: &dyn Control) -> Option<Error> {
    if lane.pool.is_cancelled() {
        return Some(Error::new(ErrorKind::Cancelled(
            "the engine shut down before the task ran".into(),
        )));
    }
    match control.deadline() {
        Some(d) if Instant::now() >= d.at => Some(expired(Some(d))),
        _ => None,
    }
}

impl Worker {
    fn run_job(&mut self, job: Job) {
        let timing = self.lane.config.metrics;
        let start = timing.then(crate::metrics::Stamp::now);
        let counted = !matches!(job, Job::Resolve { .. });
        if counted {
            crate::metrics::add(&self.slot.stats.batches, 1);
        }
        match job {
            Job::Batch(batch) => self.execute(batch),
            Job::Chunk { handler, chunk } => self.execute_chunk(&handler, chunk),
            Job::Resolve { handler, reply } => {
                let guard = self.state.attach();
                let py = guard.py();
                self.releases.drain(py);
                let _ = reply.send(lookup(&mut self.cache, py, &handler).map(drop));
            }
        }
        if let (true, Some(start)) = (counted, start) {
            crate::metrics::add_time(&self.slot.stats.busy_ns, start.elapsed());
        }
    }

    /// The next task of the parked batch that may run, begun. Tasks
    /// stopped, cancelled or expired meanwhile are completed (or dropped,
    /// if already complete) on the way.
    fn next_task(&self, inner: &mut SlotInner) -> Option<(Box<dyn Task>, Arc<dyn Control>)> {
        loop {
            let task = inner.rest.as_mut()?.1.pop_front()?;
            let control = task.control();
            if let Some(err) = unrunnable(&self.lane, &*control) {
                control.stop_queued(err);
                continue;
            }
            if control.begin() {
                return Some((task, control));
            }
        }
    }

    fn execute(&mut self, batch: Batch) {
        let Batch {
            handler,
            tasks,
            prefetched,
        } = batch;
        // Parked first, so a shutdown reaches these tasks even if a commit
        // closure below never returns.
        self.slot.lock().rest = Some((handler.clone(), tasks.into()));
        // This batch leaves the prefetch window: commit the next one now,
        // before attaching (no GIL held), so it is ready ahead of time.
        if prefetched {
            if let Some(next) = handler.batcher.started(handler.clock()) {
                Lane::publish_on(&handler, next, true);
            }
        }
        let guard = self.state.attach();
        let py = guard.py();
        self.releases.drain(py);
        let func = match lookup(&mut self.cache, py, &handler) {
            Ok(f) => f,
            Err(e) => {
                let rest = self.slot.lock().rest.take();
                for t in rest.into_iter().flat_map(|(_, r)| r) {
                    t.fail(e.clone());
                }
                return;
            }
        };
        let ctx = RunCtx::new(&self.slot, self.run_time(&handler));
        let attached = ctx.begin();
        if handler.options.vectorized {
            self.run_vectorized(py, &func, &handler, &ctx);
        } else {
            self.run_batch(py, &func, &handler, &ctx);
        }
        self.check_health(py, &handler);
        if let Some(attached) = attached {
            crate::metrics::add_time(&self.slot.stats.attached_ns, attached.elapsed());
        }
    }

    /// After a job, still attached: an interpreter whose import system a
    /// task broke is recycled (sub lane) or repaired (main lane, which
    /// cannot be recycled); the recycling bounds are checked.
    fn check_health(&self, py: Python<'_>, handler: &HandlerCore) {
        let intact = self
            .modules
            .borrow_mut()
            .intact(py.here(), || py.imports_intact());
        if !intact {
            self.heal(
                py,
                format!(
                    "a task of {} broke its interpreter's import system (sys.modules lost sys or builtins)",
                    handler.target()
                ),
            );
            return;
        }
        self.check_bounds(py);
    }

    /// An interpreter whose import system a task broke: recycled (sub lane)
    /// or repaired (main lane, which cannot be recycled). `what` names the
    /// task's handler.
    fn heal(&self, py: Python<'_>, what: String) {
        let lane = &self.lane;
        match (&self.snapshot, lane.kind) {
            (_, LaneKind::Sub) => {
                lane.warn(format!(
                    "worker sub-{}: {what}; the interpreter is recycled",
                    self.slot.index
                ));
                *self.recycle_due.borrow_mut() = Some(what);
            }
            (Some(snap), LaneKind::Main) => {
                let restored = snap
                    .bind(py)
                    .map(|s| py.restore_modules(&s).is_ok())
                    .unwrap_or(false);
                lane.warn(format!(
                    "worker main-{}: {what}; {}",
                    self.slot.index,
                    if restored {
                        "the modules it had were put back"
                    } else {
                        "they could not be put back"
                    }
                ));
            }
            (None, LaneKind::Main) => lane.warn(format!("worker main-{}: {what}", self.slot.index)),
        }
    }

    /// After a job: the recycling bounds.
    fn check_bounds(&self, py: Python<'_>) {
        let lane = &self.lane;
        if lane.kind != LaneKind::Sub || self.recycle_due.borrow().is_some() {
            return;
        }
        if let Some(max) = lane.config.max_tasks {
            let done = self.slot.stats.tasks.load(Ordering::Relaxed) - self.tasks_at_open;
            if done >= max {
                *self.recycle_due.borrow_mut() =
                    Some(format!("{done} tasks (max_tasks_per_worker {max})"));
                return;
            }
        }
        if let Some(max) = lane.config.max_blocks {
            if let Ok(blocks) = py.allocated_blocks() {
                if blocks > max {
                    *self.recycle_due.borrow_mut() = Some(format!(
                        "{blocks} allocated blocks (max_allocated_blocks {max})"
                    ));
                }
            }
        }
    }

    /// Recycles the interpreter if a task asked for it; `false` if that
    /// failed (the worker stops).
    fn recycle_if_due(&mut self) -> bool {
        let Some(why) = self.recycle_due.take() else {
            return true;
        };
        if let Err(e) = self.recycle(&why) {
            self.lane.warn(format!(
                "worker {}-{} could not recycle its interpreter ({why}): {e}; the worker stops",
                self.lane.kind.name(),
                self.slot.index
            ));
            return false;
        }
        true
    }

    /// A call a caller ran here broke the interpreter: recycle or repair it
    /// before the next job.
    fn retired(&self) {
        let target = self
            .room
            .take_retired()
            .unwrap_or_else(|| "a handler".into());
        let guard = self.state.attach();
        let py = guard.py();
        if !py.imports_intact() {
            self.heal(
                py,
                format!(
                    "a call of {target} on a calling thread broke its interpreter's import system (sys.modules lost sys or builtins)"
                ),
            );
        }
    }

    /// Closes this interpreter's room before it ends: waits for a caller
    /// inside until `deadline`, interrupts it, then gives it the engine's
    /// interrupt grace. `false`: a caller is still inside, the interpreter
    /// must be abandoned.
    fn close_room(&self, deadline: Instant) -> bool {
        {
            let mut current = self.slot.room.lock().unwrap_or_else(|e| e.into_inner());
            if current.as_ref().is_some_and(|r| Arc::ptr_eq(r, &self.room)) {
                *current = None;
            }
        }
        self.room.close(deadline, self.lane.config.grace)
    }

    /// A caller's call still runs in this interpreter after its interrupt
    /// and grace: the interpreter cannot be ended (nor this thread state
    /// deleted) under it, so both are left as they are, counted and warned
    /// about, like an interpreter whose task threads outlive shutdown.
    fn abandon_lent(self) {
        if self.lane.kind == LaneKind::Sub {
            self.releases.close();
        }
        self.handle.retire();
        self.slot.lock().target = None;
        held::leave();
        self.lane.stats.abandoned.fetch_add(1, Ordering::Relaxed);
        self.lane.warn(format!(
            "worker {}-{}: a call running on a calling thread did not stop at shutdown; its interpreter is abandoned",
            self.lane.kind.name(),
            self.slot.index
        ));
        // The cached functions' references go with the interpreter (a
        // `Stash` has no `Drop`); the thread state is kept.
        let Worker { state, .. } = self;
        std::mem::forget(state);
    }

    /// Ends this worker's interpreter and opens a fresh one in its place,
    /// between jobs (detached); initializers run again.
    fn recycle(&mut self, why: &str) -> std::result::Result<(), String> {
        let _ = why;
        // Between jobs the worker holds its room: closing it does not wait.
        self.close_room(Instant::now());
        self.handle.retire();
        {
            let guard = self.state.attach();
            let py = guard.py();
            for (_, stash) in self.cache.drain() {
                stash.release(py);
            }
            self.releases.drain(py);
            self.room.clear(py);
        }
        self.releases.close();
        held::leave();
        let opened =
            open(&self.lane, self.slot.index, self.generation, false).map_err(|f| match f {
                InitFailure::Failed(e) => e,
                InitFailure::Abandoned => "its initializers did not stop when interrupted".into(),
            })?;
        let old = std::mem::replace(&mut self.state, opened.state);
        self.handle = opened.handle;
        self.releases = opened.releases;
        self.snapshot = opened.snapshot;
        self.room = opened.room;
        self.tasks_at_open = self.slot.stats.tasks.load(Ordering::Relaxed);
        end(&self.lane, old, Instant::now() + Duration::from_secs(1));
        crate::metrics::add(&self.slot.stats.recycles, 1);
        Ok(())
    }

    /// Runs the parked batch's tasks one call each, until it is empty or
    /// this thread is quarantined.
    fn run_batch<'py>(
        &self,
        py: Python<'py>,
        func: &Object<'py>,
        handler: &HandlerCore,
        ctx: &RunCtx<'_>,
    ) {
        loop {
            let task = {
                let mut inner = self.slot.lock();
                if inner.generation != self.generation {
                    return;
                }
                match self.next_task(&mut inner) {
                    Some((t, c)) => {
                        if let (Some(now), Some(at)) = (ctx.begin(), c.submitted()) {
                            handler.stats.wait.record(now.saturating_duration_since(at));
                        }
                        crate::metrics::add(&self.slot.stats.tasks, 1);
                        self.slot.start_run(&mut inner, vec![c]);
                        t
                    }
                    None => {
                        inner.rest = None;
                        break;
                    }
                }
            };
            task::execute(task, py, func, ctx);
            if !self.end_run(py) {
                break;
            }
        }
    }

    /// Ends the run in progress; `false` if this thread was quarantined.
    fn end_run(&self, py: Python<'_>) -> bool {
        let current = {
            let mut inner = self.slot.lock();
            inner.end_run();
            inner.generation == self.generation
        };
        // An interrupt that landed after the call returned (while its
        // callback ran Python) must not reach the next call.
        if self.slot.interrupt.swap(0, Ordering::SeqCst) != 0 {
            py.clear_pending_interrupt();
        }
        current
    }

    /// Where `handler`'s run times go: nowhere with metrics off.
    fn run_time<'h>(&self, handler: &'h HandlerCore) -> Option<&'h crate::metrics::Histogram> {
        self.lane.config.metrics.then_some(&handler.stats.run)
    }

    /// After a panic escaped a job: the tasks it held fail, saying so.
    fn after_panic(&self, message: &str) {
        let (running, rest) = {
            let mut inner = self.slot.lock();
            let running = std::mem::take(&mut inner.running);
            inner.end_run();
            (running, inner.rest.take())
        };
        let err = Error::new(ErrorKind::WorkerLost(format!(
            "a panic escaped the worker's job ({message}); the worker goes on"
        )));
        for c in running {
            c.resolve(err.clone());
        }
        for t in rest.into_iter().flat_map(|(_, r)| r) {
            t.fail(err.clone());
        }
        self.lane.warn(format!(
            "worker {}-{}: a panic escaped a job ({message}); its tasks failed, the worker goes on",
            self.lane.kind.name(),
            self.slot.index
        ));
    }

    fn finish(self, deadline: Instant) {
        if !self.close_room(deadline) {
            self.abandon_lent();
            return;
        }
        let Worker {
            state,
            cache,
            lane,
            slot,
            generation,
            handle,
            releases,
            snapshot,
            room,
            ..
        } = self;
        handle.retire();
        {
            let mut inner = slot.lock();
            if inner.generation == generation {
                inner.target = None;
            }
        }
        {
            let guard = state.attach();
            let py = guard.py();
            for (_, stash) in cache {
                stash.release(py);
            }
            releases.drain(py);
            if let Some(k) = snapshot {
                let _ = k.release(py);
            }
            room.clear(py);
        }
        if lane.kind == LaneKind::Sub {
            releases.close();
        }
        held::leave();
        end(&lane, state, deadline);
    }
}
