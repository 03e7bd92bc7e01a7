//! `Engine`: the Python runtime, the lanes of workers, and their handlers.

use crate::error::{Error, ErrorKind, Result};
use crate::handler::{Handler, HandlerCore, HandlerOptions, MapChunks};
use crate::lane::{Lane, LaneConfig, LaneKind};
use crate::placement::Placement;
use crate::watchdog::{self, Reason};
use gilpool_ffi::{InitError, PythonVersion, Runtime, RuntimeConfig};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
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

/// Configures and starts an [`Engine`].
#[derive(Debug, Clone)]
pub struct EngineBuilder {
    mode: Mode,
    workers: Option<usize>,
    pin: bool,
    sys_path: Vec<PathBuf>,
    prelude: Option<Vec<String>>,
    executable: Option<PathBuf>,
    venv: Option<PathBuf>,
    venv_from_env: bool,
    idle_spin: Duration,
    shutdown_timeout: Duration,
    interrupt_grace: Duration,
    stack_size: usize,
    max_depth: usize,
    main_workers: Option<usize>,
    initializers: Vec<Initializer>,
    max_tasks_per_worker: Option<u64>,
    max_allocated_blocks: Option<usize>,
    allocator: crate::Allocator,
    metrics: bool,
}

/// A function every interpreter of a lane runs once, before its first task.
#[derive(Debug, Clone)]
pub(crate) struct Initializer {
    pub(crate) module: String,
    pub(crate) function: String,
    pub(crate) args: Vec<crate::Value>,
    /// `None`: both lanes.
    pub(crate) lane: Option<LaneKind>,
}

impl Initializer {
    pub(crate) fn applies_to(&self, kind: LaneKind) -> bool {
        self.lane.map_or(true, |k| k == kind)
    }
}

/// The default number of main-lane workers in
/// [`Mode::SubInterpreters`] ([`EngineBuilder::main_workers`]): two, or
/// one on a single core. They share the main interpreter's GIL, so more
/// only help code that releases it (numpy, I/O).
pub fn default_main_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(2))
}

impl Default for EngineBuilder {
    fn default() -> Self {
        EngineBuilder {
            mode: Mode::Auto,
            workers: None,
            pin: true,
            sys_path: Vec::new(),
            prelude: None,
            executable: None,
            venv: None,
            venv_from_env: true,
            idle_spin: Duration::from_micros(50),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            interrupt_grace: DEFAULT_INTERRUPT_GRACE,
            stack_size: crate::worker::DEFAULT_STACK_SIZE,
            max_depth: crate::DEFAULT_MAX_DEPTH,
            main_workers: None,
            initializers: Vec::new(),
            max_tasks_per_worker: None,
            max_allocated_blocks: None,
            allocator: crate::Allocator::Default,
            metrics: true,
        }
    }
}

impl EngineBuilder {
    /// The mode (default [`Mode::Auto`]).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }
    /// Number of workers (default: the number of cores).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }
    /// Pin each worker thread to a core (default `true`).
    pub fn pin(mut self, pin: bool) -> Self {
        self.pin = pin;
        self
    }
    /// Puts `dir` at the front of every interpreter's `sys.path`
    /// (repeatable; earlier calls come first).
    pub fn sys_path(mut self, dir: impl AsRef<Path>) -> Self {
        self.sys_path.push(dir.as_ref().to_path_buf());
        self
    }
    /// Modules the main interpreter imports before any subinterpreter
    /// exists (default: [`DEFAULT_PRELUDE`](crate::DEFAULT_PRELUDE)).
    pub fn prelude<I: IntoIterator<Item = S>, S: Into<String>>(mut self, modules: I) -> Self {
        self.prelude = Some(modules.into_iter().map(Into::into).collect());
        self
    }
    /// `sys.executable` (default: the interpreter this build targets).
    pub fn executable(mut self, path: impl AsRef<Path>) -> Self {
        self.executable = Some(path.as_ref().to_path_buf());
        self
    }
    /// Runs every interpreter in the virtual environment at `dir` (the
    /// folder holding `pyvenv.cfg`): its site-packages are on `sys.path`,
    /// `.pth` files processed, and `sys.prefix`, `sys.exec_prefix` and
    /// `sys.executable` are the environment's. Without this, an engine runs
    /// in `$VIRTUAL_ENV` when that is set (see
    /// [`venv_from_env`](Self::venv_from_env)).
    ///
    /// The environment must be made for the Python minor version this build
    /// embeds: another is an [`Error::is_config`] error naming both. The
    /// runtime is initialised once per process, so every engine of a process
    /// must run in the same environment: asking for another one than the
    /// running runtime's (or for one when the first engine ran without) is
    /// an [`Error::is_config`] error; an engine that names none runs in the
    /// running one.
    ///
    /// ```no_run
    /// # fn main() -> gilpool::Result<()> {
    /// // python3.13 -m venv .venv && .venv/bin/pip install six
    /// let engine = gilpool::Engine::builder().venv(".venv").build()?;
    /// let eval = engine.load("builtins", "eval")?;
    /// let six: String = eval.invoke(("__import__('six').__file__", gilpool::Value::Dict(vec![])))?;
    /// assert!(six.contains(".venv"));
    /// # Ok(()) }
    /// ```
    pub fn venv(mut self, dir: impl AsRef<Path>) -> Self {
        self.venv = Some(dir.as_ref().to_path_buf());
        self
    }
    /// Whether an engine given no [`venv`](Self::venv) runs in
    /// `$VIRTUAL_ENV` when it is set (default `true`). Setting
    /// `GILPOOL_IGNORE_VIRTUAL_ENV=1` in the environment turns it off too.
    pub fn venv_from_env(mut self, on: bool) -> Self {
        self.venv_from_env = on;
        self
    }
    /// Whether workers time every task and job for [`Engine::metrics`]
    /// (default `true`). Off, no clock is read per task or per job: the
    /// handlers' `queue_wait` and `run_time` histograms stay empty and the
    /// workers' `busy` and `attached` times stay zero. Every counter
    /// (tasks, batches, steals, submitted, completed, failed, cancelled,
    /// timed out, in flight, interrupts, recycles, …) is kept either way.
    /// The timing costs two clock reads and two histogram updates per task
    /// (docs/BENCHMARKS.md has the measured difference).
    ///
    /// ```no_run
    /// # fn main() -> gilpool::Result<()> {
    /// let engine = gilpool::Engine::builder().sys_path("python").metrics(false).build()?;
    /// let inc = engine.load("gilpool_workloads", "inc")?;
    /// assert_eq!(inc.invoke::<_, i64>((1,))?, 2);
    /// let m = engine.metrics();
    /// assert_eq!(m.handlers[0].completed, 1);
    /// assert_eq!(m.handlers[0].run_time.count, 0);
    /// # Ok(()) }
    /// ```
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }
    /// How long an idle worker keeps looking for work before it sleeps
    /// (default 50 µs; zero sleeps at once).
    pub fn idle_spin(mut self, spin: Duration) -> Self {
        self.idle_spin = spin;
        self
    }
    /// How deeply lists, tuples and dicts may nest in a converted value
    /// (default [`DEFAULT_MAX_DEPTH`](crate::DEFAULT_MAX_DEPTH), 10,000
    /// levels; at least 1). Deeper data, in an argument or a result, fails
    /// its task with an [`Error::is_conversion`] error. The limit is
    /// process-wide: each `build` sets it for every engine in the process.
    pub fn max_depth(mut self, levels: usize) -> Self {
        self.max_depth = levels;
        self
    }

    /// How long [`Engine::shutdown`] and dropping the engine wait for
    /// accepted tasks to finish (and for threads tasks started) before
    /// cancelling and interrupting the rest (default
    /// [`DEFAULT_SHUTDOWN_TIMEOUT`], 10 s). See [`Engine::shutdown_timeout`].
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }
    /// How long a running task past its deadline (or cancelled) has to stop
    /// after its first interrupt before its worker is quarantined and
    /// replaced (default [`DEFAULT_INTERRUPT_GRACE`], 1 s). It is
    /// interrupted again every 50 ms meanwhile.
    pub fn interrupt_grace(mut self, grace: Duration) -> Self {
        self.interrupt_grace = grace;
        self
    }
    /// Stack size of worker threads in bytes (default 16 MiB: CPython sizes
    /// its recursion limits for a main thread's 8 MiB stack).
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = bytes;
        self
    }

    /// Workers of the main lane in [`Mode::SubInterpreters`]: thread states
    /// in the main interpreter, sharing its GIL, for handlers whose modules
    /// refuse subinterpreters (numpy, PyTorch, PyO3-built packages). The
    /// lane starts when its first handler loads, so engines that never use
    /// it pay nothing (default [`default_main_workers`]). In
    /// [`Mode::SingleGil`] every worker is a main-lane worker and
    /// [`workers`](Self::workers) counts them.
    pub fn main_workers(mut self, n: usize) -> Self {
        self.main_workers = Some(n);
        self
    }
    /// Runs `module.function(*args)` once in every interpreter, before its
    /// first task: in each sub-lane worker's interpreter (and again in
    /// every replacement interpreter), and once in the main interpreter
    /// when the main lane starts. State it sets (module globals: a loaded
    /// model) is visible to later tasks. A failure fails
    /// [`build`](Self::build) (or the load that starts the main lane) with
    /// the traceback. Repeatable; they run in order.
    ///
    /// ```no_run
    /// # fn main() -> gilpool::Result<()> {
    /// use gilpool::Value;
    /// let engine = gilpool::Engine::builder()
    ///     .sys_path("python")
    ///     .initializer("gilpool_workloads", "echo", [Value::from("warm up")])
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn initializer<I: IntoIterator<Item = crate::Value>>(
        self,
        module: &str,
        function: &str,
        args: I,
    ) -> Self {
        self.add_initializer(None, module, function, args)
    }
    /// [`initializer`](Self::initializer) for one lane only:
    /// [`Placement::Sub`] or [`Placement::Main`] (`Auto` means both).
    pub fn initializer_on<I: IntoIterator<Item = crate::Value>>(
        self,
        lane: Placement,
        module: &str,
        function: &str,
        args: I,
    ) -> Self {
        let lane = match lane {
            Placement::Sub => Some(LaneKind::Sub),
            Placement::Main => Some(LaneKind::Main),
            Placement::Auto => None,
        };
        self.add_initializer(lane, module, function, args)
    }
    fn add_initializer<I: IntoIterator<Item = crate::Value>>(
        mut self,
        lane: Option<LaneKind>,
        module: &str,
        function: &str,
        args: I,
    ) -> Self {
        self.initializers.push(Initializer {
            module: module.to_string(),
            function: function.to_string(),
            args: args.into_iter().collect(),
            lane,
        });
        self
    }

    /// CPython's memory allocator: pymalloc, mimalloc (3.13 builds) or the C
    /// library's malloc (default: what the build and `PYTHONMALLOC` say).
    /// It is set before the runtime starts, so the first engine of the
    /// process decides; a later engine asking for another gets a warning.
    /// See docs/BENCHMARKS.md for how each compares.
    pub fn allocator(mut self, allocator: crate::Allocator) -> Self {
        self.allocator = allocator;
        self
    }
    /// Recycles a sub-lane worker's interpreter after it ran `n` tasks: the
    /// worker ends it and creates a fresh one *between* jobs, running the
    /// initializers again (default: never). Like a process pool's
    /// `max_tasks_per_child`, against state and memory that accumulate in
    /// one interpreter. A create/destroy cycle costs one interpreter
    /// creation (~10–20 ms) and leaks what CPython loses per interpreter
    /// (docs/BENCHMARKS.md); recycle rarely. The main interpreter is never
    /// recycled.
    pub fn max_tasks_per_worker(mut self, n: u64) -> Self {
        self.max_tasks_per_worker = Some(n);
        self
    }
    /// Recycles a sub-lane worker's interpreter (as
    /// [`max_tasks_per_worker`](Self::max_tasks_per_worker)) once it holds
    /// more than `blocks` memory blocks (`sys.getallocatedblocks()`,
    /// checked after each job). Own-GIL subinterpreters have their own
    /// object allocator, so the count belongs to that interpreter alone —
    /// unlike the process's RSS, which every interpreter (and the allocator's
    /// caching) moves. Objects of a few dozen bytes are one block each.
    pub fn max_allocated_blocks(mut self, blocks: usize) -> Self {
        self.max_allocated_blocks = Some(blocks);
        self
    }

    /// Initialises Python (once per process), creates the workers and their
    /// interpreters, and waits until every one is ready.
    pub fn build(self) -> Result<Engine> {
        if self.stack_size < 256 << 10 {
            return Err(Error::config(format!(
                "stack_size must be at least 256 KiB, got {} bytes",
                self.stack_size
            )));
        }
        let workers = match self.workers {
            Some(0) => return Err(Error::config("workers must be at least 1")),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        if self.max_depth == 0 {
            return Err(Error::config("max_depth must be at least 1"));
        }
        let mut warnings = Vec::new();
        let mode = match self.mode {
            Mode::Auto if gilpool_ffi::SUPPORTS_OWN_GIL => Mode::SubInterpreters,
            Mode::Auto => {
                // Not printed: SingleGil is what Auto promises on such a
                // build, and every program using the default would print it.
                let w = format!(
                    "Mode::Auto runs SingleGil (one shared GIL): this build targets Python {} ({}), \
                     which has no own-GIL subinterpreters (CPython >= 3.12); build with PYO3_PYTHON \
                     set to CPython 3.12 or newer to run Python in parallel",
                    gilpool_ffi::BUILD_PYTHON,
                    gilpool_ffi::BUILD_EXECUTABLE
                );
                warnings.push(w);
                Mode::SingleGil
            }
            Mode::SubInterpreters if !gilpool_ffi::SUPPORTS_OWN_GIL => {
                let w = format!(
                    "Mode::SubInterpreters needs CPython >= 3.12 but this build targets Python {}; falling back to SingleGil",
                    gilpool_ffi::BUILD_PYTHON
                );
                eprintln!("gilpool: warning: {w}");
                warnings.push(w);
                Mode::SingleGil
            }
            m => m,
        };
        let mut sys_path = Vec::new();
        for p in &self.sys_path {
            let abs = std::fs::canonicalize(p)
                .map_err(|e| Error::config(format!("sys_path entry {}: {e}", p.display())))?;
            sys_path.push(abs.to_string_lossy().into_owned());
        }
        let prelude = self.prelude.unwrap_or_else(|| {
            gilpool_ffi::runtime::DEFAULT_PRELUDE
                .iter()
                .map(|s| s.to_string())
                .collect()
        });
        let config = RuntimeConfig {
            allocator: self.allocator,
            executable: self.executable.clone(),
            prelude: prelude.clone(),
            sys_path: sys_path.clone(),
            venv: crate::venv::resolve(self.venv.as_deref(), self.venv_from_env)?,
        };
        let fresh = Runtime::get().is_none();
        let runtime = Runtime::get_or_init(&config).map_err(|e| match e {
            InitError::Venv(m) => Error::config(m),
            e => Error::new(ErrorKind::Init(e.to_string())),
        })?;
        for w in runtime.warnings() {
            if fresh {
                eprintln!("gilpool: warning: {w}");
            }
            warnings.push(w.clone());
        }
        if self.allocator != crate::Allocator::Default && runtime.allocator() != self.allocator {
            let w = format!(
                "allocator {} requested, but this process's Python runtime was started with allocator {} by an earlier engine; it cannot change",
                self.allocator,
                runtime.allocator()
            );
            eprintln!("gilpool: warning: {w}");
            warnings.push(w);
        }
        // A runtime started by an earlier engine: make sure this engine's
        // prelude is loaded too (a no-op for modules already imported).
        let failures = runtime
            .run_main(move |py| {
                prelude
                    .iter()
                    .filter_map(|m| py.import(m).err().map(|e| format!("{m}: {e}")))
                    .collect::<Vec<_>>()
            })
            .map_err(|e| Error::new(ErrorKind::Init(e.to_string())))?;
        for f in failures {
            warnings.push(format!("prelude module {f}"));
        }

        crate::value::set_max_depth(self.max_depth);
        if self.max_tasks_per_worker == Some(0) || self.max_allocated_blocks == Some(0) {
            return Err(Error::config(
                "max_tasks_per_worker and max_allocated_blocks must be at least 1",
            ));
        }
        if self.main_workers == Some(0) {
            return Err(Error::config("main_workers must be at least 1"));
        }
        for init in &self.initializers {
            if init.module.is_empty() || init.function.is_empty() {
                return Err(Error::config(format!(
                    "an initializer needs a module and a function, got {:?}:{:?}",
                    init.module, init.function
                )));
            }
        }
        let cores = if self.pin {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let base = LaneConfig {
            runtime,
            sys_path,
            idle_spin: self.idle_spin,
            cores,
            stack_size: self.stack_size,
            grace: self.interrupt_grace,
            initializers: self.initializers,
            max_tasks: self.max_tasks_per_worker,
            max_blocks: self.max_allocated_blocks,
            metrics: self.metrics,
        };
        let main_workers = match mode {
            Mode::SingleGil => workers,
            _ => self.main_workers.unwrap_or_else(default_main_workers),
        };
        let shared = Arc::new(Shared {
            mode,
            runtime,
            sub: Mutex::new(None),
            main: Mutex::new(None),
            base,
            main_workers,
            watchdogs: Mutex::new(Vec::new()),
            verdicts: Mutex::new(HashMap::new()),
            handlers: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            report: Mutex::new(None),
            warnings: Mutex::new(warnings),
            workers,
            shutdown_timeout: self.shutdown_timeout,
        });
        let engine = Engine { shared };
        let started = match mode {
            Mode::SubInterpreters => engine
                .shared
                .start_lane(LaneKind::Sub, workers)
                .map(|lane| *engine.shared.sub.lock().unwrap() = Some(lane)),
            _ => engine.shared.main_lane().map(drop),
        };
        if let Err(e) = started {
            engine.shared.stop(false, Duration::from_secs(1));
            return Err(e);
        }
        Ok(engine)
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
    /// Starts a lane of `workers`: its watchdog, its initializers (once, for
    /// the main interpreter), its workers; waits until every worker is up.
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
                self.runtime
                    .run_main(move |py| crate::worker::run_initializers(py, &inits))
                    .map_err(|e| Error::new(ErrorKind::Init(e.to_string())))?
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
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut first_error = None;
        let mut started = 0;
        for slot in 0..workers {
            match lane.spawn_worker(slot, 0, Some(ready_tx.clone())) {
                Ok(()) => started += 1,
                Err(e) => {
                    first_error.get_or_insert(format!("cannot spawn a worker thread: {e}"));
                    break;
                }
            }
        }
        drop(ready_tx);
        for _ in 0..started {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert_with(|| "a worker exited during start-up".into());
                }
            }
        }
        if let Some(e) = first_error {
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
        if drained {
            lane.pool.drain();
            continue;
        }
        lane.pool.cancel();
        drop(lane.pool.take_all());
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

/// Configures one handler; see [`Engine::handler`].
#[derive(Debug)]
pub struct HandlerBuilder<'e> {
    engine: &'e Engine,
    module: String,
    function: String,
    options: HandlerOptions,
}

impl HandlerBuilder<'_> {
    /// Tasks run per attachment (default 1). With
    /// [`vectorized`](Self::vectorized), the function receives them as one list.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.options.batch_size = n;
        self
    }
    /// The function takes a list of inputs and returns a list of results of
    /// the same length. Each task's input is its single argument, or the
    /// tuple of its arguments.
    pub fn vectorized(mut self, on: bool) -> Self {
        self.options.vectorized = on;
        self
    }
    /// Committed batches allowed ahead of execution (default 2 per worker).
    pub fn prefetch_depth(mut self, n: usize) -> Self {
        self.options.prefetch_depth = n;
        self
    }
    /// Wait up to `delay` for a batch to fill before running a partial one
    /// (default: never wait).
    pub fn max_batch_delay(mut self, delay: Duration) -> Self {
        self.options.max_batch_delay = Some(delay);
        self
    }
    /// Bound on submitted-but-unfinished tasks (default 8192).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.options.max_in_flight = n;
        self
    }
    /// A deadline for each of the handler's tasks, counted from submit
    /// (default none). A task past it that has not started never runs; one
    /// that is running is interrupted in its own interpreter (a
    /// `KeyboardInterrupt` in its thread only), and its worker goes on. Its
    /// future resolves with [`Error::is_timeout`]. A task that cannot be
    /// interrupted (blocked in C) resolves with the timeout after the
    /// engine's [`interrupt_grace`](EngineBuilder::interrupt_grace), and its
    /// worker is quarantined and replaced. With a timeout, `map` submits
    /// each input as its own task (each gets its deadline).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }
    /// Which lane runs the function (default [`Placement::Auto`]: the sub
    /// lane unless the module refuses subinterpreters).
    pub fn placement(mut self, placement: Placement) -> Self {
        self.options.placement = placement;
        self
    }
    /// How [`Handler::map`](crate::Handler::map) groups inputs into tasks
    /// (default [`MapChunks::Guided`]).
    pub fn map_chunks(mut self, chunks: MapChunks) -> Self {
        self.options.map_chunks = chunks;
        self
    }

    /// Validates the options, imports the module on one worker and checks
    /// that the function exists and is callable.
    pub fn load(self) -> Result<Handler> {
        let o = &self.options;
        for (name, v) in [
            ("batch_size", o.batch_size),
            ("prefetch_depth", o.prefetch_depth),
            ("max_in_flight", o.max_in_flight),
        ] {
            if v == 0 {
                return Err(Error::config(format!("{name} must be at least 1")));
            }
        }
        if self.module.is_empty() || self.function.is_empty() {
            return Err(Error::config(format!(
                "a handler needs a module and a function, got module {:?} function {:?}",
                self.module, self.function
            )));
        }
        let shared = &self.engine.shared;
        if shared.closed.load(Ordering::SeqCst) {
            return Err(Error::new(ErrorKind::Shutdown));
        }
        let module = self.module.clone();
        let placement = self.options.placement;
        if shared.mode == Mode::SingleGil && placement == Placement::Sub {
            return Err(Error::config(format!(
                "{}:{} asks for Placement::Sub, but this engine runs Mode::SingleGil (no subinterpreters)",
                self.module, self.function
            )));
        }
        let verdict = shared.verdicts.lock().unwrap().get(&module).cloned();
        let on_sub = shared.mode == Mode::SubInterpreters
            && match (placement, &verdict) {
                (Placement::Main, _) => false,
                (Placement::Auto, Some(Verdict::Refuses(_))) => false,
                (Placement::Sub, Some(Verdict::Refuses(line))) => {
                    return Err(refused(&module, line));
                }
                _ => true,
            };
        let lane = if on_sub {
            shared
                .sub
                .lock()
                .unwrap()
                .clone()
                .expect("the sub lane runs")
        } else {
            shared.main_lane()?
        };
        let handler = self.resolve_on(lane);
        let handler = match handler {
            Err(e) if on_sub => match e.python().and_then(crate::placement::refusal) {
                Some(line) if e.is_import() => {
                    shared
                        .verdicts
                        .lock()
                        .unwrap()
                        .insert(module.clone(), Verdict::Refuses(line.clone()));
                    if placement == Placement::Sub {
                        return Err(refused(&module, &line));
                    }
                    shared.warn(format!(
                        "handlers of module {module} run on the main lane, since it refuses subinterpreters: {line}"
                    ));
                    self.resolve_on(shared.main_lane()?)?
                }
                _ => return Err(e),
            },
            other => {
                let h = other?;
                if on_sub {
                    shared
                        .verdicts
                        .lock()
                        .unwrap()
                        .entry(module)
                        .or_insert(Verdict::Sub);
                }
                h
            }
        };
        let core = handler.core.clone();
        shared.handlers.lock().unwrap().push(core.clone());
        if core.options.max_batch_delay.is_some() {
            let lane = core.lane.clone();
            lane.delayed.lock().unwrap().push(core);
        }
        Ok(handler)
    }

    /// A handler of these options on `lane`, its function resolved there.
    fn resolve_on(&self, lane: Arc<Lane>) -> Result<Handler> {
        let core = Arc::new(HandlerCore::new(
            &self.module,
            &self.function,
            self.options,
            lane,
        ));
        let handler = Handler { core };
        handler.resolve()?;
        Ok(handler)
    }
}

/// The error of a `Placement::Sub` handler whose module refuses
/// subinterpreters.
fn refused(module: &str, line: &str) -> Error {
    Error::new(ErrorKind::Refused {
        module: module.to_string(),
        reason: line.to_string(),
    })
}
