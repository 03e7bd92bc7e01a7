//! `EngineBuilder`: an engine's configuration, and starting it.

use super::{
    Engine, Mode, Shared, DEFAULT_INIT_TIMEOUT, DEFAULT_INTERRUPT_GRACE, DEFAULT_SHUTDOWN_TIMEOUT,
};
use crate::error::{Error, ErrorKind, Result};
use crate::lane::{LaneConfig, LaneKind};
use crate::placement::Placement;
use gilpool_ffi::{InitError, Runtime, RuntimeConfig};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    init_timeout: Duration,
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
    main_workers_on(host_cores())
}

/// [`default_main_workers`] on a host of `cores`.
fn main_workers_on(cores: usize) -> usize {
    cores.min(2)
}

/// The cores this process may run on (1 if that cannot be read): the
/// default number of workers ([`EngineBuilder::workers`]). Reading it may
/// open cgroup files, so callers keep the answer.
pub fn host_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
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
            init_timeout: DEFAULT_INIT_TIMEOUT,
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
    /// Number of workers (default: the number of cores, [`host_cores`]).
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
    /// (default 50 µs; zero sleeps at once). Between looks it yields its
    /// core (`sched_yield`), so on a host with no core to spare the thread
    /// submitting the work runs instead of a searching worker.
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
    /// How long one interpreter's [initializers](Self::initializer) may
    /// run, from when the first begins (default [`DEFAULT_INIT_TIMEOUT`],
    /// 120 s). Past it they are interrupted like a task past its deadline
    /// and fail with an error naming the initializer and the timeout;
    /// initializers that do not stop within the
    /// [`interrupt_grace`](Self::interrupt_grace) (they swallow the
    /// interrupt, or are blocked in C) fail the same way and their thread
    /// and interpreter are abandoned. So a build never waits forever on an
    /// initializer. Must be greater than zero.
    pub fn init_timeout(mut self, timeout: Duration) -> Self {
        self.init_timeout = timeout;
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

    /// Initialises Python (once per process), starts the workers, and
    /// returns once one worker of each started lane has its interpreter up:
    /// the others create theirs in the background, one at a time, and take
    /// work as they come up ([`Engine::wait_ready`] waits for all of them).
    /// It fails when no worker of a lane starts (an initializer that raises
    /// fails in every interpreter, so it fails the build); a worker that
    /// fails to start beside one that did is a warning, and the lane runs
    /// without it.
    pub fn build(self) -> Result<Engine> {
        if self.stack_size < 256 << 10 {
            return Err(Error::config(format!(
                "stack_size must be at least 256 KiB, got {} bytes",
                self.stack_size
            )));
        }
        // Read once for every default and lane of this build.
        let host = host_cores();
        let workers = match self.workers {
            Some(0) => return Err(Error::config("workers must be at least 1")),
            Some(n) => n,
            None => host,
        };
        if self.init_timeout.is_zero() {
            return Err(Error::config("init_timeout must be greater than zero"));
        }
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

        if self.metrics {
            // The metrics clock calibrates itself on its first read (about
            // half a millisecond, once per process): here, not in the
            // first task's path.
            let _ = crate::metrics::Stamp::now();
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
            host_cores: host,
            stack_size: self.stack_size,
            grace: self.interrupt_grace,
            initializers: self.initializers,
            init_timeout: self.init_timeout,
            max_tasks: self.max_tasks_per_worker,
            max_blocks: self.max_allocated_blocks,
            metrics: self.metrics,
        };
        let main_workers = match mode {
            Mode::SingleGil => workers,
            _ => self.main_workers.unwrap_or(main_workers_on(host)),
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
