//! `Engine`: the Python runtime, the lanes of workers, and their handlers.

use crate::error::{Error, ErrorKind, Result};
use crate::handler::{Handler, HandlerCore, HandlerOptions, MapChunks};
use crate::lane::{Lane, LaneConfig, LaneKind};
use crate::watchdog::{self, Reason};
use gilpool_ffi::{InitError, PythonVersion, Runtime, RuntimeConfig};
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
        let kind = match mode {
            Mode::SubInterpreters => LaneKind::Sub,
            _ => LaneKind::Main,
        };
        let cores = if self.pin {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let lane = Lane::new(
            kind,
            workers,
            LaneConfig {
                runtime,
                sys_path,
                idle_spin: self.idle_spin,
                cores,
                stack_size: self.stack_size,
                grace: self.interrupt_grace,
            },
        );
        let watchdog = {
            let lane = lane.clone();
            std::thread::Builder::new()
                .name("gilpool-watchdog".into())
                .spawn(move || watchdog::run(lane))
                .map_err(|e| {
                    Error::new(ErrorKind::Init(format!(
                        "cannot spawn the watchdog thread: {e}"
                    )))
                })?
        };
        let shared = Arc::new(Shared {
            mode,
            runtime,
            lane: lane.clone(),
            handlers: Mutex::new(Vec::new()),
            watchdog: Mutex::new(Some(watchdog)),
            closed: AtomicBool::new(false),
            report: Mutex::new(None),
            warnings,
            workers,
            shutdown_timeout: self.shutdown_timeout,
        });
        let engine = Engine { shared };
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
            engine.shared.stop(false, Duration::from_secs(1));
            return Err(Error::new(ErrorKind::Init(e)));
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

pub(crate) struct Shared {
    mode: Mode,
    runtime: &'static Runtime,
    lane: Arc<Lane>,
    handlers: Mutex<Vec<Arc<HandlerCore>>>,
    watchdog: Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
    /// Set by the first stop; later ones return it.
    report: Mutex<Option<ShutdownReport>>,
    warnings: Vec<String>,
    workers: usize,
    shutdown_timeout: Duration,
}

impl Shared {
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
        let lane = &self.lane;
        self.closed.store(true, Ordering::SeqCst);
        lane.set_end_by(deadline);
        let handlers: Vec<Arc<HandlerCore>> = self.handlers.lock().unwrap().clone();
        let totals = |hs: &[Arc<HandlerCore>]| {
            hs.iter().fold((0, 0), |(f, c), h| {
                let (hf, hc) = h.stats.finished_cancelled();
                (f + hf, c + hc)
            })
        };
        let (finished0, cancelled0) = totals(&handlers);
        let interrupts0 = lane.stats.interrupts.load(Ordering::Relaxed);
        let abandoned0 = lane.stats.abandoned.load(Ordering::Relaxed);
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
            if drained {
                lane.pool.drain();
            }
        }
        let mut wait_until = deadline + Duration::from_secs(2);
        if !drained {
            lane.pool.cancel();
            for h in &handlers {
                drop(h.batcher.flush());
                drop(h.batcher.drain());
            }
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
        if lane.wait_exited(wait_until) > 0 {
            for slot in &lane.slots {
                let run = slot.lock().run;
                if run != 0 {
                    watchdog::quarantine(lane, slot.index, run, Reason::Shutdown);
                }
            }
            lane.wait_exited(Instant::now() + Duration::from_secs(2));
        }
        lane.watch.stop();
        if let Some(w) = self.watchdog.lock().unwrap().take() {
            let _ = w.join();
        }
        // Whatever is still queued was never run: dropping it cancels it.
        drop(lane.pool.take_all());
        let (finished1, cancelled1) = totals(&handlers);
        self.handlers.lock().unwrap().clear();
        lane.delayed.lock().unwrap().clear();
        let r = ShutdownReport {
            finished: finished1 - finished0,
            cancelled: cancelled1 - cancelled0,
            interrupted: lane.stats.interrupts.load(Ordering::Relaxed) - interrupts0,
            abandoned: lane.stats.abandoned.load(Ordering::Relaxed) - abandoned0,
            drained,
        };
        *report = Some(r);
        r
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

    /// Number of workers.
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

    /// The libpython shared library this process loaded, when it can be
    /// told (the executable itself when Python is linked in statically).
    pub fn python_library(&self) -> Option<&str> {
        self.shared.runtime.library()
    }

    /// Warnings raised while building (mode fallback, prelude modules that
    /// failed to import, a libpython of another patch release than the
    /// build's) and while running (quarantined workers, abandoned
    /// interpreters). Each is also printed to stderr when raised, except
    /// [`Mode::Auto`]'s fallback to SingleGil on a build for Python < 3.12
    /// (that is what `Auto` means there; `gilpool doctor` shows it first).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = self.shared.warnings.clone();
        w.extend(self.shared.lane.warnings());
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
        let core = Arc::new(HandlerCore::new(
            &self.module,
            &self.function,
            self.options,
            shared.lane.clone(),
        ));
        let handler = Handler { core: core.clone() };
        handler.resolve()?;
        shared.handlers.lock().unwrap().push(core.clone());
        if core.options.max_batch_delay.is_some() {
            shared.lane.delayed.lock().unwrap().push(core);
        }
        Ok(handler)
    }
}
