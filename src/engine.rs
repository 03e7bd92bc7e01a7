//! `Engine`: the Python runtime, the lanes of workers, and their handlers.

use crate::error::{Error, ErrorKind, Result};
use crate::handler::{Handler, HandlerCore, HandlerOptions, MapChunks};
use crate::lane::{Lane, LaneKind};
use crate::sched::pool::Pool;
use crate::worker::{self, WorkerSetup};
use gilpool_ffi::{PythonVersion, Runtime, RuntimeConfig};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

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
    idle_spin: Duration,
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
            idle_spin: Duration::from_micros(50),
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

    /// Initialises Python (once per process), creates the workers and their
    /// interpreters, and waits until every one is ready.
    pub fn build(self) -> Result<Engine> {
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
            Mode::Auto => Mode::SingleGil,
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
        };
        let runtime = Runtime::get_or_init(&config)
            .map_err(|e| Error::new(ErrorKind::Init(e.to_string())))?;
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
        let (pool, locals) = Pool::new(workers);
        let lane = Arc::new(Lane {
            kind,
            pool,
            delayed: Mutex::new(Vec::new()),
        });
        let cores = if self.pin {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut threads = Vec::new();
        for local in locals {
            let setup = WorkerSetup {
                lane: lane.clone(),
                local,
                core: (!cores.is_empty()).then(|| cores[threads.len() % cores.len()]),
                runtime,
                sys_path: sys_path.clone(),
                idle_spin: self.idle_spin,
                ready: ready_tx.clone(),
            };
            let name = format!(
                "gilpool-{}-{}",
                if kind == LaneKind::Sub { "sub" } else { "main" },
                threads.len()
            );
            let handle = std::thread::Builder::new()
                .name(name)
                .spawn(move || worker::run(setup))
                .map_err(|e| {
                    Error::new(ErrorKind::Init(format!(
                        "cannot spawn a worker thread: {e}"
                    )))
                })?;
            threads.push(handle);
        }
        drop(ready_tx);
        let shared = Arc::new(Shared {
            mode,
            runtime,
            lane,
            handlers: Mutex::new(Vec::new()),
            threads: Mutex::new(threads),
            closed: AtomicBool::new(false),
            warnings,
            workers,
        });
        let engine = Engine { shared };
        let mut first_error = None;
        for _ in 0..workers {
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
            engine.shared.stop(false);
            return Err(Error::new(ErrorKind::Init(e)));
        }
        Ok(engine)
    }
}

pub(crate) struct Shared {
    mode: Mode,
    runtime: &'static Runtime,
    lane: Arc<Lane>,
    handlers: Mutex<Vec<Arc<HandlerCore>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
    warnings: Vec<String>,
    workers: usize,
}

impl Shared {
    /// Stops the engine: `drain` finishes every accepted task first;
    /// otherwise queued tasks are cancelled. Idempotent.
    fn stop(&self, drain: bool) {
        self.closed.store(true, Ordering::SeqCst);
        let handlers: Vec<Arc<HandlerCore>> = self.handlers.lock().unwrap().clone();
        for h in &handlers {
            h.permits.close();
        }
        if drain {
            for h in &handlers {
                for batch in h.batcher.flush() {
                    Lane::publish(h, batch);
                }
            }
            for h in &handlers {
                h.permits.wait_idle();
            }
            self.lane.pool.drain();
        } else {
            for h in &handlers {
                drop(h.batcher.flush());
                drop(h.batcher.drain());
            }
            self.lane.pool.cancel();
        }
        let threads: Vec<JoinHandle<()>> = std::mem::take(&mut *self.threads.lock().unwrap());
        for t in threads {
            let _ = t.join();
        }
        // Whatever is still queued was never run: dropping it cancels it.
        drop(self.lane.pool.take_all());
        self.handlers.lock().unwrap().clear();
        self.lane.delayed.lock().unwrap().clear();
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

    /// Warnings raised while building (mode fallback, prelude modules that
    /// failed to import).
    pub fn warnings(&self) -> &[String] {
        &self.shared.warnings
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
                map_chunks: MapChunks::Guided,
            },
        }
    }

    /// Finishes every accepted task, then stops the workers and ends their
    /// interpreters. New submissions fail with [`Error::is_shutdown`].
    pub fn shutdown(self) {
        self.shared.stop(true);
    }

    /// Cancels every task not yet running (their futures resolve with
    /// [`Error::is_cancelled`]), waits for running batches, then stops.
    pub fn shutdown_now(self) {
        self.shared.stop(false);
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shared.stop(true);
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
