//! `Engine`: the Python runtime, the lanes of workers, and their handlers.

mod builder;
mod load;

pub(crate) use builder::Initializer;
pub use builder::{default_main_workers, host_cores, EngineBuilder};
pub use load::HandlerBuilder;

use crate::error::{Error, ErrorKind, Result};
use crate::handler::{Handler, HandlerCore, HandlerOptions, MapChunks};
use crate::lane::{Lane, LaneConfig, LaneKind};
use crate::placement::Placement;
use crate::watchdog::{self, Reason};
use gilpool_ffi::{PythonVersion, Runtime};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long `shutdown()` and dropping an [`Engine`] wait by default
/// ([`EngineBuilder::shutdown_timeout`]).
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a running task past its deadline, or cancelled, gets to stop
/// after its first interrupt by default ([`EngineBuilder::interrupt_grace`]).
pub const DEFAULT_INTERRUPT_GRACE: Duration = Duration::from_secs(1);

/// How long a shutdown waits, once the workers have left their slots,
/// for their threads to end (a thread stuck in a task never does).
const WORKER_EXIT_WAIT: Duration = Duration::from_millis(500);

/// How long one interpreter's initializers may run by default
/// ([`EngineBuilder::init_timeout`]).
pub const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(120);

/// Where Python code runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// One own-GIL subinterpreter per worker (PEP 684, Python >= 3.12):
    /// workers run Python truly in parallel.
    SubInterpreters,
    /// Every worker shares the main interpreter and its GIL, held only
    /// around Python execution.
    SingleGil,
    /// `SubInterpreters` where this build supports it, else `SingleGil`.
    #[default]
    Auto,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::SubInterpreters => "SubInterpreters",
            Mode::SingleGil => "SingleGil",
            Mode::Auto => "Auto",
        })
    }
}

impl Mode {
    /// Whether this build can run `mode` as asked (`SubInterpreters` needs a
    /// build for CPython >= 3.12).
    pub fn is_supported(self) -> bool {
        match self {
            Mode::SubInterpreters => gilpool_ffi::SUPPORTS_OWN_GIL,
            Mode::SingleGil | Mode::Auto => true,
        }
    }
}

/// What a shutdown did ([`Engine::shutdown_timeout`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Tasks that finished (with a result or an error of their own) while
    /// the engine shut down.
    pub finished: u64,
    /// Tasks cancelled: never run, or interrupted.
    pub cancelled: u64,
    /// Running tasks interrupted.
    pub interrupted: u64,
    /// Workers given up: a task that did not stop when interrupted, or an
    /// interpreter left running because threads its tasks started were
    /// still alive at the deadline.
    pub abandoned: u64,
    /// Whether every accepted task finished before the deadline.
    pub drained: bool,
}

/// A module's verdict: whether it imports in a subinterpreter.
#[derive(Debug, Clone)]
enum Verdict {
    Sub,
    /// It refuses subinterpreters; the line that said so.
    Refuses(String),
}

pub(crate) struct Shared {
    mode: Mode,
    runtime: &'static Runtime,
    /// The sub lane (SubInterpreters mode), started at build.
    sub: Mutex<Option<Arc<Lane>>>,
    /// The main lane: started at build in SingleGil mode, on first use in
    /// SubInterpreters mode.
    main: Mutex<Option<Arc<Lane>>>,
    base: LaneConfig,
    main_workers: usize,
    watchdogs: Mutex<Vec<JoinHandle<()>>>,
    /// Per module: whether it imports in a subinterpreter (`Auto` placement).
    verdicts: Mutex<HashMap<String, Verdict>>,
    handlers: Mutex<Vec<Arc<HandlerCore>>>,
    closed: AtomicBool,
    /// Set by the first stop; later ones return it.
    report: Mutex<Option<ShutdownReport>>,
    warnings: Mutex<Vec<String>>,
    workers: usize,
    shutdown_timeout: Duration,
}

impl Shared {
    /// Runs the main lane's initializers once, on a thread of their own
    /// in the main interpreter, under the start-up timeout (see
    /// `worker/init.rs`): one that does not stop is abandoned there, and
    /// the build gets its error without waiting on it.
    fn main_initializers(&self, inits: Vec<Initializer>) -> std::result::Result<(), String> {
        // `(whether the initializers' own thread sent it, the outcome)`.
        let (tx, rx) = std::sync::mpsc::channel();
        let runtime = self.runtime;
        let limits = self.base.init_limits();
        let give_up = tx.clone();
        let thread = std::thread::Builder::new()
            .name("gilpool-main-init".into())
            // Room for Python's recursion limits, as on a worker thread.
            .stack_size(self.base.stack_size)
            .spawn(move || {
                let state = gilpool_ffi::MainThreadState::new(runtime);
                let (handle, outcome) = {
                    let guard = gilpool_ffi::WorkerState::attach(&state);
                    let py = guard.py();
                    let handle = py.interrupt_handle();
                    let outcome =
                        crate::worker::run_watched(py, &inits, &handle, limits, None, move |e| {
                            let _ = give_up.send((false, Err(e)));
                        });
                    (handle, outcome)
                };
                handle.retire();
                // The thread state goes before the outcome is sent: once
                // the build goes on, no thread state of this thread may
                // keep `finalize` from running.
                drop(state);
                match outcome {
                    Ok(()) => drop(tx.send((true, Ok(())))),
                    Err(crate::worker::InitFailure::Failed(e)) => drop(tx.send((true, Err(e)))),
                    // Reported by the watcher.
                    Err(crate::worker::InitFailure::Abandoned) => {}
                }
            })
            .map_err(|e| format!("cannot spawn a thread for the initializers: {e}"))?;
        match rx.recv() {
            Ok((from_thread, outcome)) => {
                if from_thread {
                    // It returns right after sending: join it, as the
                    // workers are at shutdown (`Lane::join_workers`).
                    let _ = thread.join();
                }
                outcome
            }
            Err(_) => Err("the initializers' thread ended without a result".into()),
        }
    }

    /// Starts a lane of `workers`: its watchdog, its initializers (once, for
    /// the main interpreter), its workers; waits until one worker is up
    /// (the others go on starting in the background).
    fn start_lane(&self, kind: LaneKind, workers: usize) -> Result<Arc<Lane>> {
        if kind == LaneKind::Main {
            let inits: Vec<Initializer> = self
                .base
                .initializers
                .iter()
                .filter(|i| i.applies_to(LaneKind::Main))
                .cloned()
                .collect();
            if !inits.is_empty() {
                self.main_initializers(inits)
                    .map_err(|e| Error::new(ErrorKind::Init(format!("the main lane: {e}"))))?;
            }
        }
        let lane = Lane::new(kind, workers, self.base.clone());
        let watchdog = {
            let lane = lane.clone();
            std::thread::Builder::new()
                .name(format!("gilpool-watchdog-{}", kind.name()))
                .spawn(move || watchdog::run(lane))
                .map_err(|e| {
                    Error::new(ErrorKind::Init(format!(
                        "cannot spawn the watchdog thread: {e}"
                    )))
                })?
        };
        self.watchdogs.lock().unwrap().push(watchdog);
        let mut first_error = None;
        let mut started = 0;
        for slot in 0..workers {
            match lane.spawn_worker(slot, 0, true) {
                Ok(()) => started += 1,
                Err(e) => {
                    first_error = Some(format!("cannot spawn a worker thread: {e}"));
                    break;
                }
            }
        }
        // Handed out once one worker is up; the rest keep starting (see
        // `Startup`). A thread that could not be spawned fails the build.
        let first_up = lane.startup.wait_first(&lane, started);
        if let Some(e) = first_error.or(first_up.err()) {
            stop_lanes(std::slice::from_ref(&lane), Instant::now(), false);
            lane.watch.stop();
            return Err(Error::new(ErrorKind::Init(e)));
        }
        Ok(lane)
    }

    /// The main lane, started now if it is not running yet.
    fn main_lane(&self) -> Result<Arc<Lane>> {
        let mut main = self.main.lock().unwrap();
        if let Some(lane) = &*main {
            return Ok(lane.clone());
        }
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::new(ErrorKind::Shutdown));
        }
        let lane = self.start_lane(LaneKind::Main, self.main_workers)?;
        *main = Some(lane.clone());
        Ok(lane)
    }

    fn lanes(&self) -> Vec<Arc<Lane>> {
        let sub = self.sub.lock().unwrap().clone();
        let main = self.main.lock().unwrap().clone();
        sub.into_iter().chain(main).collect()
    }

    fn warn(&self, w: String) {
        eprintln!("gilpool: warning: {w}");
        self.warnings.lock().unwrap().push(w);
    }

    /// Stops the engine: `drain` finishes accepted tasks until `timeout`;
    /// past it (or without `drain`), queued tasks are cancelled and running
    /// ones interrupted; a task that does not stop within the interrupt
    /// grace period is abandoned with its worker. Every future resolves.
    /// Idempotent: later calls return the first report.
    fn stop(&self, drain: bool, timeout: Duration) -> ShutdownReport {
        let mut report = self.report.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = *report {
            return r;
        }
        let deadline = Instant::now() + timeout;
        self.closed.store(true, Ordering::SeqCst);
        // Holding the lock, no main lane can start any more.
        let main_guard = self.main.lock().unwrap();
        let lanes: Vec<Arc<Lane>> = self
            .sub
            .lock()
            .unwrap()
            .clone()
            .into_iter()
            .chain(main_guard.clone())
            .collect();
        drop(main_guard);
        let handlers: Vec<Arc<HandlerCore>> = self.handlers.lock().unwrap().clone();
        let totals = |hs: &[Arc<HandlerCore>]| {
            hs.iter().fold((0, 0), |(f, c), h| {
                let (hf, hc) = h.stats.finished_cancelled();
                (f + hf, c + hc)
            })
        };
        let lane_total = |pick: fn(&Lane) -> u64| lanes.iter().map(|l| pick(l)).sum::<u64>();
        let interrupts = |l: &Lane| l.stats.interrupts.load(Ordering::Relaxed);
        let abandoned = |l: &Lane| l.stats.abandoned.load(Ordering::Relaxed);
        let (finished0, cancelled0) = totals(&handlers);
        let (interrupts0, abandoned0) = (lane_total(interrupts), lane_total(abandoned));
        for lane in &lanes {
            lane.set_end_by(deadline);
        }
        for h in &handlers {
            h.permits.close();
        }
        let mut drained = false;
        if drain {
            for h in &handlers {
                for batch in h.batcher.flush() {
                    Lane::publish(h, batch);
                }
            }
            drained = handlers.iter().all(|h| h.permits.wait_idle_until(deadline));
        }
        if !drained {
            for h in &handlers {
                drop(h.batcher.flush());
                drop(h.batcher.drain());
            }
        }
        stop_lanes(&lanes, deadline, drained);
        for lane in &lanes {
            lane.watch.stop();
        }
        for w in std::mem::take(&mut *self.watchdogs.lock().unwrap()) {
            let _ = w.join();
        }
        // The workers have left their slots; wait for their threads to be
        // gone too (see `Lane::join_workers`), briefly for any still stuck.
        let joined_by = Instant::now() + WORKER_EXIT_WAIT;
        for lane in &lanes {
            lane.join_workers(joined_by);
        }
        for lane in &lanes {
            // Whatever is still queued was never run: dropping it cancels it.
            drop(lane.pool.take_all());
            lane.delayed.lock().unwrap().clear();
            if lane.kind == LaneKind::Main {
                // Held objects of the main interpreter dropped since its
                // workers last attached: give them back now.
                let releases = lane.releases.clone();
                let _ = self.runtime.run_main(move |py| releases.drain(py));
            }
            lane.releases.close();
        }
        let (finished1, cancelled1) = totals(&handlers);
        self.handlers.lock().unwrap().clear();
        let r = ShutdownReport {
            finished: finished1 - finished0,
            cancelled: cancelled1 - cancelled0,
            interrupted: lane_total(interrupts) - interrupts0,
            abandoned: lane_total(abandoned) - abandoned0,
            drained,
        };
        *report = Some(r);
        r
    }
}

/// Stops `lanes`' workers: drained, they exit when their queues are empty;
/// otherwise queued work is cancelled and running tasks are interrupted,
/// then abandoned with their workers if they do not stop within the grace
/// period.
fn stop_lanes(lanes: &[Arc<Lane>], deadline: Instant, drained: bool) {
    let mut wait_until = deadline + Duration::from_secs(2);
    for lane in lanes {
        lane.set_end_by(deadline);
        // Workers still starting stop in their initializers rather than
        // finish them only to exit.
        lane.inits.stop();
        if drained {
            lane.pool.drain();
            continue;
        }
        lane.pool.cancel();
        drop(lane.pool.take_all());
        lane.commits.stop();
        for slot in &lane.slots {
            let (run, rest) = {
                let mut inner = slot.lock();
                (inner.run, inner.rest.take())
            };
            drop(rest);
            if run != 0 {
                watchdog::interrupt(lane, slot.index, run, Reason::Shutdown);
            }
        }
        wait_until = deadline.max(Instant::now()) + lane.config.grace;
    }
    for lane in lanes {
        if lane.wait_exited(wait_until) > 0 {
            for slot in &lane.slots {
                let run = slot.lock().run;
                if run != 0 {
                    watchdog::quarantine(lane, slot.index, run, Reason::Shutdown);
                }
            }
            lane.wait_exited(Instant::now() + Duration::from_secs(2));
        }
    }
}

/// A pool of Python workers. See the [crate docs](crate).
///
/// ```no_run
/// use gilpool::{Engine, Mode};
/// # fn main() -> gilpool::Result<()> {
/// let engine = Engine::builder().mode(Mode::Auto).workers(2).sys_path("python").build()?;
/// println!("running {} on Python {}", engine.mode(), engine.python_version());
/// let heavy = engine.load("gilpool_workloads", "heavy")?;
/// let futures: Vec<_> = (0..8).map(|_| heavy.submit::<_, i64>((1000,))).collect::<Result<_, _>>()?;
/// for f in futures { f.wait()?; }
/// engine.shutdown();
/// # Ok(()) }
/// ```
pub struct Engine {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("mode", &self.shared.mode)
            .field("workers", &self.shared.workers)
            .field("python", &self.python_version())
            .finish()
    }
}

impl Engine {
    /// A builder with the defaults: [`Mode::Auto`], one worker per core,
    /// pinned.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// The effective mode (never `Auto`).
    pub fn mode(&self) -> Mode {
        self.shared.mode
    }

    /// Number of workers (of the sub lane in [`Mode::SubInterpreters`]).
    pub fn workers(&self) -> usize {
        self.shared.workers
    }

    /// Waits until every worker of the running lanes has started.
    /// [`EngineBuilder::build`] returns as soon as one worker of a lane is
    /// up, and the others come up in the background (interpreters are
    /// created one at a time), taking work as they do; call this where all
    /// of them should be up first (a benchmark's warm-up, say). `Err`
    /// names the workers that failed to start; the engine runs on without
    /// them (each is also a warning, see [`warnings`](Self::warnings)).
    ///
    /// ```no_run
    /// # fn main() -> gilpool::Result<()> {
    /// let engine = gilpool::Engine::builder().workers(4).sys_path("python").build()?;
    /// engine.wait_ready()?; // all four interpreters are up
    /// # Ok(()) }
    /// ```
    pub fn wait_ready(&self) -> Result<()> {
        let mut failed = Vec::new();
        for lane in self.shared.lanes() {
            for (slot, e) in lane.startup.wait_all() {
                failed.push(format!("worker {}-{slot}: {e}", lane.kind.name()));
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::Init(format!(
                "{} worker(s) failed to start: {}",
                failed.len(),
                failed.join("; ")
            ))))
        }
    }

    /// The running CPython's version.
    pub fn python_version(&self) -> PythonVersion {
        self.shared.runtime.version()
    }

    /// `sys.executable` in the main interpreter.
    pub fn python_executable(&self) -> &str {
        self.shared.runtime.executable()
    }

    /// A snapshot of the engine's counters and latencies: per worker
    /// position of each running lane (tasks, batches, steals, busy and
    /// attached time, queue depth, timeouts, interrupts, recycles,
    /// quarantines, interpreter generation) and per handler (submitted,
    /// completed, failed, cancelled, timed out, in flight, queue wait and
    /// run time percentiles). Cheap: a read of relaxed atomics.
    ///
    /// ```no_run
    /// # fn main() -> gilpool::Result<()> {
    /// let engine = gilpool::Engine::builder().sys_path("python").build()?;
    /// let inc = engine.load("gilpool_workloads", "inc")?;
    /// for i in 0..1000i64 { inc.invoke::<_, i64>((i,))?; }
    /// let m = engine.metrics();
    /// assert_eq!(m.handlers[0].completed, 1000);
    /// println!("{:?}", m.handlers[0].run_time);
    /// # Ok(()) }
    /// ```
    pub fn metrics(&self) -> crate::Metrics {
        let mut out = crate::Metrics::default();
        for lane in self.shared.lanes() {
            let placement = match lane.kind {
                LaneKind::Sub => Placement::Sub,
                LaneKind::Main => Placement::Main,
            };
            let cores = &lane.config.cores;
            for slot in &lane.slots {
                let core = (!cores.is_empty()).then(|| cores[slot.index % cores.len()].id);
                out.workers.push(crate::WorkerMetrics::read(
                    placement,
                    slot.index,
                    core,
                    &slot.stats,
                    lane.pool.steals(slot.index),
                    lane.pool.depths(slot.index).0,
                ));
            }
        }
        for h in self.shared.handlers.lock().unwrap().iter() {
            let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            let s = &h.stats;
            out.handlers.push(crate::HandlerMetrics {
                module: h.module.clone(),
                function: h.function.clone(),
                placement: match h.lane.kind {
                    LaneKind::Sub => Placement::Sub,
                    LaneKind::Main => Placement::Main,
                },
                submitted: get(&s.submitted),
                completed: get(&s.completed),
                failed: get(&s.failed),
                cancelled: get(&s.cancelled),
                timed_out: get(&s.timed_out),
                in_flight: h.permits.in_use(),
                queue_wait: s.wait.snapshot(),
                run_time: s.run.snapshot(),
            });
        }
        out
    }

    /// Workers of the main lane (in [`Mode::SingleGil`], all of them).
    pub fn main_workers(&self) -> usize {
        self.shared.main_workers
    }

    /// The libpython shared library this process loaded, when it can be
    /// told (the executable itself when Python is linked in statically).
    pub fn python_library(&self) -> Option<&str> {
        self.shared.runtime.library()
    }

    /// Warnings raised while building (mode fallback, prelude modules that
    /// failed to import, a libpython of another patch release than the
    /// build's) and while running (handlers moved to the main lane,
    /// quarantined workers, abandoned interpreters). Each is also printed to
    /// stderr when raised, except [`Mode::Auto`]'s fallback to SingleGil on
    /// a build for Python < 3.12 (that is what `Auto` means there;
    /// `gilpool doctor` shows it first).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = self.shared.warnings.lock().unwrap().clone();
        for lane in self.shared.lanes() {
            w.extend(lane.warnings());
        }
        w
    }

    /// Binds `module.function` with default options (unbatched). The module
    /// is imported and the function checked on one worker now, so a missing
    /// module or function is reported here.
    pub fn load(&self, module: &str, function: &str) -> Result<Handler> {
        self.handler(module, function).load()
    }

    /// Starts configuring a handler for `module.function`.
    pub fn handler(&self, module: &str, function: &str) -> HandlerBuilder<'_> {
        HandlerBuilder {
            engine: self,
            module: module.to_string(),
            function: function.to_string(),
            options: HandlerOptions {
                batch_size: 1,
                prefetch_depth: 2 * self.shared.workers,
                max_batch_delay: None,
                max_in_flight: 8192,
                vectorized: false,
                caller_runs: true,
                timeout: None,
                placement: Placement::Auto,
                map_chunks: MapChunks::Guided,
            },
        }
    }

    /// Finishes every accepted task, then stops the workers and ends their
    /// interpreters, waiting at most the builder's
    /// [`shutdown_timeout`](EngineBuilder::shutdown_timeout) (then as
    /// [`shutdown_timeout`](Self::shutdown_timeout)). New submissions fail
    /// with [`Error::is_shutdown`]. Dropping the engine does the same.
    pub fn shutdown(self) -> ShutdownReport {
        self.shared.stop(true, self.shared.shutdown_timeout)
    }

    /// Drains gracefully until `timeout`: accepted tasks run to completion.
    /// Past it, every task not running is cancelled (its future resolves
    /// with [`Error::is_cancelled`]) and running ones are interrupted; one
    /// that does not stop within the interrupt grace period is abandoned
    /// with its worker (thread and interpreter never ended). Workers also
    /// wait until `timeout` for threads their tasks started; an
    /// interpreter with threads still alive then is abandoned rather than
    /// ended (ending it would abort the process). Never blocks longer than
    /// about `timeout` + grace + 2 s; every future resolves.
    ///
    /// ```no_run
    /// # fn main() -> gilpool::Result<()> {
    /// let engine = gilpool::Engine::builder().sys_path("python").build()?;
    /// let report = engine.shutdown_timeout(std::time::Duration::from_secs(5));
    /// assert!(report.drained);
    /// # Ok(()) }
    /// ```
    pub fn shutdown_timeout(self, timeout: Duration) -> ShutdownReport {
        self.shared.stop(true, timeout)
    }

    /// Cancels every task not running — queued, batched, committed in the
    /// prefetch window — (their futures resolve with
    /// [`Error::is_cancelled`]), interrupts running ones, then stops as
    /// [`shutdown_timeout`](Self::shutdown_timeout) past its deadline.
    pub fn shutdown_now(self) -> ShutdownReport {
        self.shared.stop(false, Duration::ZERO)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shared.stop(true, self.shared.shutdown_timeout);
    }
}
