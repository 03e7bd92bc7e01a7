//! Lanes: a set of workers sharing one scheduler pool, all in one kind of
//! interpreter. The sub lane has one own-GIL subinterpreter per worker; the
//! main lane's workers share the main interpreter (and its GIL).

use crate::handler::HandlerCore;
use crate::held::{Home, Releases};
use crate::sched::pool::{Local, Pool};
use crate::slot::Slot;
use crate::task::{Control, Task};
use crate::watchdog::Watch;
use crate::worker::{self, WorkerStart};
use gilpool_ffi::Runtime;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Which interpreters a lane's workers run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LaneKind {
    /// One own-GIL subinterpreter per worker.
    Sub,
    /// Thread states in the main interpreter, sharing its GIL.
    Main,
}

impl LaneKind {
    /// The name in thread names and messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            LaneKind::Sub => "sub",
            LaneKind::Main => "main",
        }
    }
}

/// What travels through a lane's queues.
pub(crate) enum Job {
    /// Committed tasks of one handler.
    Batch(Batch),
    /// Many inputs of one handler's `map`, as one unit.
    Chunk {
        handler: Arc<HandlerCore>,
        chunk: Box<dyn crate::task::Chunk>,
    },
    /// Import and check a handler's function; reply with the outcome.
    Resolve {
        handler: Arc<HandlerCore>,
        reply: Sender<crate::Result<()>>,
    },
}

/// Up to `batch_size` committed tasks of one handler, run in one attachment.
pub(crate) struct Batch {
    pub(crate) handler: Arc<HandlerCore>,
    pub(crate) tasks: Vec<Box<dyn Task>>,
    /// Whether the batch holds one of the handler's prefetch slots (it came
    /// through the batcher), to be freed when it starts.
    pub(crate) prefetched: bool,
}

/// How a lane starts its workers (and replacements).
#[derive(Debug, Clone)]
pub(crate) struct LaneConfig {
    pub(crate) runtime: &'static Runtime,
    pub(crate) sys_path: Vec<String>,
    pub(crate) idle_spin: Duration,
    pub(crate) cores: Vec<core_affinity::CoreId>,
    /// The cores this process may run on (`engine::host_cores`, read once
    /// by the build).
    pub(crate) host_cores: usize,
    pub(crate) stack_size: usize,
    /// How long a running task past its deadline (or cancelled) gets to
    /// stop after the first interrupt before its worker is quarantined.
    pub(crate) grace: Duration,
    /// Run once in every interpreter before its first task.
    pub(crate) initializers: Vec<crate::engine::Initializer>,
    /// How long an interpreter's initializers may run before they are
    /// interrupted.
    pub(crate) init_timeout: Duration,
    /// Recycle a sub-lane interpreter after this many tasks.
    pub(crate) max_tasks: Option<u64>,
    /// Recycle a sub-lane interpreter holding more allocated blocks.
    pub(crate) max_blocks: Option<usize>,
    /// Per-task and per-job timing (queue wait and run time histograms,
    /// busy and attached time); counters are kept either way.
    pub(crate) metrics: bool,
}

impl LaneConfig {
    /// The limits initializers run under.
    pub(crate) fn init_limits(&self) -> crate::worker::Limits {
        crate::worker::Limits {
            timeout: self.init_timeout,
            grace: self.grace,
        }
    }
}

/// Batches being committed whose commit closures a user wrote, so a
/// shutdown can resolve their tasks if a closure never returns.
#[derive(Default)]
pub(crate) struct Commits {
    next: AtomicU64,
    batches: Mutex<Vec<Committing>>,
}

/// One batch being committed: its id and its tasks.
type Committing = (u64, Vec<Arc<dyn Control>>);

impl Commits {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Committing>> {
        self.batches.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A thread commits `tasks`; the id to end it with.
    fn begin(&self, tasks: &[Box<dyn Task>]) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let controls = tasks.iter().map(|t| t.control()).collect();
        self.lock().push((id, controls));
        id
    }

    fn end(&self, id: u64) {
        self.lock().retain(|(i, _)| *i != id);
    }

    /// At shutdown: resolves the tasks of commits still in progress; they
    /// never run.
    pub(crate) fn stop(&self) {
        let batches = std::mem::take(&mut *self.lock());
        for t in batches.into_iter().flat_map(|(_, c)| c) {
            t.stop_queued(crate::error::Error::new(crate::error::ErrorKind::Cancelled(
                "the engine shut down while a commit closure of this task's batch was still running (it had not returned); the task never ran".into(),
            )));
        }
    }
}

/// Counters of events that belong to a lane rather than a handler.
#[derive(Debug, Default)]
pub(crate) struct LaneStats {
    pub(crate) interrupts: AtomicU64,
    pub(crate) quarantines: AtomicU64,
    pub(crate) abandoned: AtomicU64,
}

/// The shared state of one lane.
pub(crate) struct Lane {
    /// Unique in the process (a `Held`'s home names it).
    pub(crate) id: u64,
    pub(crate) kind: LaneKind,
    pub(crate) pool: Arc<Pool<Job>>,
    pub(crate) slots: Vec<Arc<Slot>>,
    pub(crate) config: LaneConfig,
    pub(crate) watch: Watch,
    pub(crate) stats: LaneStats,
    /// Handlers with a `max_batch_delay`, whose deadlines idle workers keep.
    pub(crate) delayed: Mutex<Vec<Arc<HandlerCore>>>,
    /// Threads serving a slot as its current generation.
    live: Mutex<usize>,
    exited: Condvar,
    /// Every worker thread spawned and not yet joined ([`Lane::join_workers`]).
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Until when exiting workers wait for threads their tasks left
    /// behind before abandoning their interpreter (set by shutdown).
    end_by: Mutex<Option<Instant>>,
    warnings: Mutex<Vec<String>>,
    /// `Held` objects of the main interpreter to give back (main lane).
    pub(crate) releases: Arc<Releases>,
    /// The first start of the lane's workers.
    pub(crate) startup: Startup,
    /// The initializers running in its interpreters (a shutdown
    /// interrupts them).
    pub(crate) inits: crate::worker::InitWatches,
    /// Batches with user commit closures being committed.
    pub(crate) commits: Commits,
    /// Whether a thread waiting for one of its tasks may yield its core
    /// between polls rather than spin on it ([`Lane::waiter_yields`]).
    pub(crate) waiter_yields: bool,
}

/// The first start of a lane's workers. The lane is usable once one worker
/// is up ([`wait_first`](Self::wait_first)); the others go on starting in
/// the background (one interpreter created at a time, `ffi/src/interp.rs`)
/// and take work as they come up. A worker that fails to start after the
/// lane was handed out is a warning, as for a replacement worker.
#[derive(Debug, Default)]
pub(crate) struct Startup {
    state: Mutex<StartState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct StartState {
    /// Workers whose thread was spawned for the first start.
    spawned: usize,
    ready: usize,
    /// Each failure, with the worker's slot.
    failed: Vec<(usize, String)>,
    /// Whether `wait_first` returned the lane to its engine.
    handed_out: bool,
}

impl Startup {
    /// A worker of the first start reports whether it came up.
    pub(crate) fn report(&self, lane: &Lane, slot: usize, outcome: Result<(), String>) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(()) => st.ready += 1,
            Err(e) => {
                if st.handed_out {
                    lane.warn(starting_failed(lane, slot, &e));
                }
                st.failed.push((slot, e));
            }
        }
        self.changed.notify_all();
    }

    /// Waits until one of the `spawned` workers is up (`Ok`, and the lane
    /// is handed out: failures seen so far become warnings) or all of them
    /// failed (the first failure).
    pub(crate) fn wait_first(&self, lane: &Lane, spawned: usize) -> Result<(), String> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.spawned = spawned;
        while st.ready == 0 && st.failed.len() < spawned {
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.ready == 0 {
            return Err(st.failed.first().map_or_else(
                || "the lane has no worker".into(),
                |(slot, e)| format!("worker {}-{slot}: {e}", lane.kind.name()),
            ));
        }
        st.handed_out = true;
        for (slot, e) in &st.failed {
            lane.warn(starting_failed(lane, *slot, e));
        }
        Ok(())
    }

    /// Waits until every worker of the first start is up or failed; the
    /// failures, with their slots.
    pub(crate) fn wait_all(&self) -> Vec<(usize, String)> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while st.ready + st.failed.len() < st.spawned {
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.failed.clone()
    }
}

fn starting_failed(lane: &Lane, slot: usize, e: &str) -> String {
    format!(
        "worker {}-{slot} failed to start: {e}; the lane runs without it",
        lane.kind.name()
    )
}

static NEXT_LANE: AtomicU64 = AtomicU64::new(1);

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane")
            .field("kind", &self.kind)
            .field("workers", &self.pool.workers())
            .finish()
    }
}

impl Lane {
    pub(crate) fn new(kind: LaneKind, workers: usize, config: LaneConfig) -> Arc<Lane> {
        let waiter_yields = Lane::waiter_yields(kind, workers, config.host_cores);
        let (pool, locals) = Pool::new(workers);
        let slots = locals
            .into_iter()
            .enumerate()
            .map(|(i, local): (usize, Local<Job>)| Arc::new(Slot::new(i, local)))
            .collect();
        Arc::new(Lane {
            id: NEXT_LANE.fetch_add(1, Ordering::Relaxed),
            kind,
            pool,
            slots,
            config,
            watch: Watch::default(),
            stats: LaneStats::default(),
            delayed: Mutex::new(Vec::new()),
            live: Mutex::new(0),
            exited: Condvar::new(),
            threads: Mutex::new(Vec::new()),
            end_by: Mutex::new(None),
            warnings: Mutex::new(Vec::new()),
            releases: Arc::new(Releases::default()),
            startup: Startup::default(),
            inits: Default::default(),
            commits: Commits::default(),
            waiter_yields,
        })
    }

    /// A waiter may yield on an own-GIL lane whose workers and the waiter
    /// outnumber the host's cores (`host_cores`): a worker that would take a queued job may
    /// then be waiting for the waiter's core, and a busy spin holds it off
    /// (with 2 workers on 2 cores the second ran 7 % of an unbatched burst).
    /// With a core to spare, or on a lane sharing one GIL (a worker let in
    /// would only contend for the GIL with the one running), it spins.
    /// `TaskFuture::poll_first` (for `wait` and `map`'s waiter) says when
    /// it does yield; `docs/BENCHMARKS.md`, "Unbatched submit: a waiter that
    /// makes room for a worker" and "One rule for both waiters", measures
    /// each case.
    fn waiter_yields(kind: LaneKind, workers: usize, host_cores: usize) -> bool {
        kind == LaneKind::Sub && workers + 1 > host_cores
    }

    /// Starts a thread serving `slot` as `generation`. A worker of the
    /// lane's first start (`first`) reports to [`Lane::startup`] once its
    /// interpreter is up or failed; a replacement warns if it fails.
    pub(crate) fn spawn_worker(
        self: &Arc<Lane>,
        slot: usize,
        generation: u64,
        first: bool,
    ) -> std::io::Result<()> {
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        let start = WorkerStart {
            lane: self.clone(),
            slot,
            generation,
            first,
        };
        let spawned = std::thread::Builder::new()
            .name(format!("gilpool-{}-{slot}", self.kind.name()))
            .stack_size(self.config.stack_size)
            .spawn(move || worker::run(start));
        match spawned {
            Ok(handle) => {
                let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
                // Threads that ended (recycled, replaced) are joined here,
                // so the list holds only the living and the stuck.
                let (ended, running): (Vec<_>, Vec<_>) =
                    threads.drain(..).partition(JoinHandle::is_finished);
                *threads = running;
                threads.push(handle);
                drop(threads);
                for t in ended {
                    let _ = t.join();
                }
                Ok(())
            }
            Err(e) => {
                self.worker_left();
                Err(e)
            }
        }
    }

    /// Joins the lane's worker threads once they return, waiting up to
    /// `deadline` for those still running; a thread still running then (one
    /// stuck in a task, quarantined or abandoned) is left to run. Called at
    /// shutdown, after the workers left their slots: a thread that has
    /// left still runs its thread-exit destructors, among them those of C
    /// libraries its Python code used (OpenSSL's, after `import hashlib`),
    /// which must not run beside the same libraries' `atexit` clean-up of
    /// a process exiting right after the shutdown. The calling thread is
    /// never joined (an engine dropped inside one of its own tasks).
    pub(crate) fn join_workers(&self, deadline: Instant) {
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let me = std::thread::current().id();
        for t in threads {
            if t.thread().id() == me {
                continue;
            }
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }

    /// A thread stopped serving its slot (it exited, or was quarantined).
    pub(crate) fn worker_left(&self) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        *live -= 1;
        if *live == 0 {
            self.exited.notify_all();
        }
    }

    /// Waits until no thread serves a slot, at most until `deadline`;
    /// returns how many still do.
    pub(crate) fn wait_exited(&self, deadline: Instant) -> usize {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        while *live > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            live = self
                .exited
                .wait_timeout(live, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *live
    }

    pub(crate) fn set_end_by(&self, deadline: Instant) {
        let mut end_by = self.end_by.lock().unwrap_or_else(|e| e.into_inner());
        if end_by.is_none() {
            *end_by = Some(deadline);
        }
    }

    /// Until when an exiting worker waits for threads its tasks left.
    pub(crate) fn end_by(&self) -> Instant {
        self.end_by
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1))
    }

    /// Records a warning raised while running (and prints it).
    pub(crate) fn warn(&self, w: String) {
        eprintln!("gilpool: warning: {w}");
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(w);
    }

    pub(crate) fn warnings(&self) -> Vec<String> {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Commits `tasks` (no GIL: the caller is never attached) and publishes
    /// them as a batch. Tasks whose commit fails complete with that error;
    /// if none is left, the prefetch slot passes to the next batch.
    pub(crate) fn publish(handler: &Arc<HandlerCore>, tasks: Vec<Box<dyn Task>>) {
        Lane::publish_on(handler, tasks, false);
    }

    /// [`publish`](Self::publish), from a worker thread (`on_worker`).
    pub(crate) fn publish_on(
        handler: &Arc<HandlerCore>,
        mut tasks: Vec<Box<dyn Task>>,
        on_worker: bool,
    ) {
        debug_assert!(
            !gilpool_ffi::is_attached(),
            "commit must run with no GIL held"
        );
        let mut first = true;
        loop {
            // A batch with a user's commit closure, which may never
            // return, is listed while it commits, where a shutdown finds
            // it, unless it is a submitter's own single task: that blocks
            // only its own `submit`, which has not returned the future.
            let others = on_worker || !first || tasks.len() > 1;
            let listed = (others && tasks.iter().any(|t| t.user_commit()))
                .then(|| handler.lane.commits.begin(&tasks));
            first = false;
            tasks.retain_mut(|t| t.commit());
            if let Some(id) = listed {
                handler.lane.commits.end(id);
            }
            if !tasks.is_empty() {
                handler.lane.route(handler, tasks, true);
                return;
            }
            match handler.batcher.started(handler.clock()) {
                Some(next) => tasks = next,
                None => return,
            }
        }
    }

    /// Where a job bound to `home` may run: `Ok(None)` anywhere in this
    /// lane, `Ok(Some(slot))` only on that worker, `Err` not in this lane.
    pub(crate) fn place(&self, home: Option<Home>, target: &str) -> crate::Result<Option<usize>> {
        match home {
            None => Ok(None),
            Some(h) if h.slot.is_none() && self.kind == LaneKind::Main => Ok(None),
            Some(h) if h.lane == self.id => Ok(h.slot),
            Some(h) => Err(crate::error::Error::conversion(format!(
                "{target} runs on the {} lane, but an argument is a Held object of interpreter {} ({} lane): it can only be used on the lane that made it; convert it to a Value there first",
                self.kind.name(),
                h.interp,
                if h.slot.is_some() { "a sub" } else { "the main" }
            ))),
        }
    }

    /// Publishes committed tasks: those bound to no interpreter as one
    /// batch any worker may take, those holding a sub-lane `Held` as a
    /// batch in the owning worker's mailbox; one bound elsewhere fails. The
    /// first batch published keeps the prefetch slot (`prefetched`).
    pub(crate) fn route(
        &self,
        handler: &Arc<HandlerCore>,
        tasks: Vec<Box<dyn Task>>,
        mut prefetched: bool,
    ) {
        if tasks.iter().all(|t| t.home().is_none()) {
            self.pool.inject(Job::Batch(Batch {
                handler: handler.clone(),
                tasks,
                prefetched,
            }));
            return;
        }
        let mut anywhere = Vec::new();
        let mut pinned: std::collections::BTreeMap<usize, Vec<Box<dyn Task>>> =
            std::collections::BTreeMap::new();
        for t in tasks {
            match self.place(t.home(), &handler.target()) {
                Ok(None) => anywhere.push(t),
                Ok(Some(slot)) => pinned.entry(slot).or_default().push(t),
                Err(e) => t.fail(e),
            }
        }
        if !anywhere.is_empty() {
            self.pool.inject(Job::Batch(Batch {
                handler: handler.clone(),
                tasks: anywhere,
                prefetched: std::mem::take(&mut prefetched),
            }));
        }
        for (slot, tasks) in pinned {
            self.pool.inject_to(
                slot,
                Job::Batch(Batch {
                    handler: handler.clone(),
                    tasks,
                    prefetched: std::mem::take(&mut prefetched),
                }),
            );
        }
        if prefetched {
            // Every task failed: the slot passes on.
            if let Some(next) = handler.batcher.started(handler.clock()) {
                Lane::publish(handler, next);
            }
        }
    }

    /// Forms and publishes batches whose delay ran out; returns whether any
    /// was published and the earliest remaining deadline.
    pub(crate) fn flush_due(&self) -> (bool, Option<Instant>) {
        // Runs on every idle-spin round: no allocation unless a handler
        // actually batches with a delay.
        let handlers: Vec<Arc<HandlerCore>> = {
            let delayed = self.delayed.lock().unwrap();
            if delayed.is_empty() {
                return (false, None);
            }
            delayed.clone()
        };
        let now = Instant::now();
        let mut published = false;
        let mut earliest: Option<Instant> = None;
        for h in handlers {
            if let Some(batch) = h.batcher.poll(Some(now)) {
                Lane::publish_on(&h, batch, true);
                published = true;
            } else if let Some(d) = h.batcher.deadline() {
                earliest = Some(earliest.map_or(d, |e| e.min(d)));
            }
        }
        (published, earliest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiter_yields_only_on_an_own_gil_lane_with_no_core_to_spare() {
        for cores in [1, 2, 16, crate::engine::host_cores()] {
            // The waiter and the workers together outnumber the cores.
            assert!(Lane::waiter_yields(LaneKind::Sub, cores, cores));
            assert!(Lane::waiter_yields(LaneKind::Sub, cores + 3, cores));
            // A core is left for the waiter.
            assert!(!Lane::waiter_yields(LaneKind::Sub, cores - 1, cores));
            // A lane sharing one GIL never yields: a worker let in would only
            // contend for the GIL.
            for workers in [1, cores, cores + 3] {
                assert!(!Lane::waiter_yields(LaneKind::Main, workers, cores));
            }
        }
    }
}
