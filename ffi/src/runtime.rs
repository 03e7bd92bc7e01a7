//! The process's one CPython runtime and its main interpreter.
//!
//! The runtime is initialised once, by the first [`Runtime::get_or_init`],
//! on a dedicated thread (`gilpool-main`) that owns the main interpreter's
//! original thread state and later finalises on that same thread. Python's
//! signal handlers are not installed. The prelude modules are imported in
//! the main interpreter before any subinterpreter can exist (pitfall 1 in
//! DESIGN.md). Finalisation happens only through
//! [`Runtime::finalize_within`], and only when no worker thread state is
//! alive; after it, the runtime cannot be initialised again in this process.
//!
//! Before initialising, the runtime checks the libpython the process
//! actually loaded against the one this build was configured with
//! (`Py_GetVersion`, callable before initialisation): another minor version
//! is an error, another patch release a warning ([`Runtime::warnings`]).
//!
//! A virtual environment ([`RuntimeConfig::venv`]) becomes
//! `sys.executable` (its `bin/python`), from which CPython's `site` derives
//! `sys.prefix` and adds the environment's site-packages; every interpreter
//! also adds the site directories itself ([`Python::add_site_dirs`]), so
//! they are there, with `.pth` files processed once, wherever `site` did
//! not add them. The environment is fixed for the life of the process.

use crate::attach::{self, Attached, Python};
use crate::venv::Venv;
use pyo3_ffi as ffi;
use std::ffi::{CStr, CString};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Mutex;

/// Modules imported in the main interpreter before any subinterpreter
/// exists: with them loaded there first, ending concurrent subinterpreters
/// that imported them no longer crashes (measured on 3.12.1 and 3.13.0).
pub const DEFAULT_PRELUDE: &[&str] = &[
    "datetime",
    "_strptime",
    "json",
    "re",
    "decimal",
    "hashlib",
    "sqlite3",
];

/// CPython's memory allocator, chosen before the runtime starts
/// (`PyPreConfig.allocator`, as `PYTHONMALLOC` would).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Allocator {
    /// Whatever the build and `PYTHONMALLOC` say (pymalloc normally).
    #[default]
    Default,
    /// CPython's small-object allocator (pymalloc), each own-GIL
    /// subinterpreter with its own arenas.
    Pymalloc,
    /// mimalloc (CPython 3.13 builds that include it).
    Mimalloc,
    /// The C library's `malloc` for everything.
    Malloc,
}

impl fmt::Display for Allocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Allocator::Default => "default",
            Allocator::Pymalloc => "pymalloc",
            Allocator::Mimalloc => "mimalloc",
            Allocator::Malloc => "malloc",
        })
    }
}

impl Allocator {
    /// `PyMemAllocatorName` values (Include/cpython/pymem.h).
    fn code(self) -> Result<Option<std::os::raw::c_int>, InitError> {
        Ok(match self {
            Allocator::Default => None,
            Allocator::Malloc => Some(3),
            Allocator::Pymalloc => Some(5),
            #[cfg(Py_3_13)]
            Allocator::Mimalloc => Some(7),
            #[cfg(not(Py_3_13))]
            Allocator::Mimalloc => {
                return Err(InitError::Init(format!(
                    "the mimalloc allocator needs CPython >= 3.13; this build targets Python {}",
                    crate::BUILD_PYTHON
                )))
            }
        })
    }
}

/// How the runtime is initialised.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The memory allocator (only the first engine's choice takes effect).
    pub allocator: Allocator,
    /// `sys.executable`; defaults to the interpreter this build targets.
    pub executable: Option<PathBuf>,
    /// Modules imported in the main interpreter at start-up.
    pub prelude: Vec<String>,
    /// Directories put at the front of the main interpreter's `sys.path`.
    pub sys_path: Vec<String>,
    /// The virtual environment to run in. Later [`Runtime::get_or_init`]
    /// calls naming another one are refused ([`InitError::Venv`]).
    pub venv: Option<Venv>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            allocator: Allocator::Default,
            executable: None,
            prelude: DEFAULT_PRELUDE.iter().map(|s| s.to_string()).collect(),
            sys_path: Vec::new(),
            venv: None,
        }
    }
}

/// A CPython version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PythonVersion {
    /// 3
    pub major: u8,
    /// e.g. 13
    pub minor: u8,
    /// e.g. 0
    pub micro: u8,
}

impl fmt::Display for PythonVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

/// Why the runtime could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitError {
    /// `Py_InitializeFromConfig` failed.
    Init(String),
    /// The runtime was finalised; CPython cannot be re-initialised safely.
    Finalized,
    /// Finalisation was refused because worker thread states are alive.
    Busy(usize),
    /// The runtime thread is gone.
    Gone,
    /// Finalisation was refused because Python threads that tasks started
    /// (non-daemon `threading` threads) were still running at the deadline:
    /// `Py_FinalizeEx` would wait for them forever.
    ThreadsAlive(usize),
    /// Finalisation was refused because threads that tasks started in the
    /// main interpreter (`_thread`, `threading`) had not finished starting
    /// at the deadline: on CPython < 3.11 such a thread aborts the process
    /// if it starts once `Py_FinalizeEx` has begun (CPython gh-108987).
    ThreadsStarting(usize),
    /// The libpython loaded is another minor version than the one this
    /// build is for.
    Version(String),
    /// The runtime already runs in another virtual environment (or in
    /// none); it is initialised once per process.
    Venv(String),
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitError::Init(m) => write!(f, "Python initialisation failed: {m}"),
            InitError::Finalized => f.write_str(
                "the Python runtime of this process was finalised; it cannot be initialised again",
            ),
            InitError::Busy(n) => write!(
                f,
                "cannot finalise Python: {n} worker thread state(s) are still alive (shut every Engine down first)"
            ),
            InitError::Gone => f.write_str("the gilpool-main runtime thread has exited"),
            InitError::ThreadsAlive(n) => write!(
                f,
                "cannot finalise Python: {n} non-daemon Python thread(s) started by tasks are still running"
            ),
            InitError::ThreadsStarting(n) => write!(
                f,
                "cannot finalise Python: {n} Python thread(s) started by tasks had not finished starting (CPython before 3.11 aborts if one starts while it finalises)"
            ),
            InitError::Version(m) | InitError::Venv(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for InitError {}

type MainJob = Box<dyn FnOnce(Python<'_>) + Send>;

enum Command {
    Run(MainJob),
    Finalize(mpsc::Sender<Result<i32, InitError>>),
}

/// The initialised runtime. One per process, `'static`.
#[derive(Debug)]
pub struct Runtime {
    allocator: Allocator,
    version: PythonVersion,
    executable: String,
    prelude_failures: Vec<String>,
    library: Option<String>,
    warnings: Vec<String>,
    venv: Option<Venv>,
    site_dirs: Vec<String>,
    commands: Mutex<mpsc::Sender<Command>>,
    /// The runtime thread, joined once it has finalised (see
    /// [`Runtime::finalize_within`]).
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

enum State {
    Uninit,
    Running(&'static Runtime),
    Finalized,
}

static STATE: Mutex<State> = Mutex::new(State::Uninit);

/// Worker thread states alive now (subinterpreters and main-interpreter
/// thread states created through this crate).
pub(crate) static LIVE_THREAD_STATES: AtomicUsize = AtomicUsize::new(0);

/// Runs `f` if the runtime is running, keeping it from finalising until
/// `f` returns.
pub(crate) fn while_running(f: impl FnOnce()) {
    let state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    if matches!(*state, State::Running(_)) {
        f();
    }
}

impl Runtime {
    /// The runtime, initialising it with `config` on first use. Later calls
    /// return the same runtime (their `config` is not applied again; the
    /// caller can run its own prelude through [`Runtime::run_main`]); one
    /// naming a virtual environment other than the running one is refused
    /// with [`InitError::Venv`] (naming none accepts the running one).
    pub fn get_or_init(config: &RuntimeConfig) -> Result<&'static Runtime, InitError> {
        let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
        match &*state {
            State::Running(rt) => rt.same_venv(config.venv.as_ref()).map(|()| *rt),
            State::Finalized => Err(InitError::Finalized),
            State::Uninit => {
                let rt: &'static Runtime = Box::leak(Box::new(Runtime::start(config.clone())?));
                *state = State::Running(rt);
                Ok(rt)
            }
        }
    }

    /// The runtime if it is initialised and not finalised.
    pub fn get() -> Option<&'static Runtime> {
        match &*STATE.lock().unwrap_or_else(|e| e.into_inner()) {
            State::Running(rt) => Some(rt),
            _ => None,
        }
    }

    fn start(config: RuntimeConfig) -> Result<Runtime, InitError> {
        let allocator = config.allocator;
        let (tx, rx) = mpsc::channel::<Command>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("gilpool-main".into())
            .spawn(move || main_thread(config, rx, ready_tx))
            .map_err(|e| InitError::Init(format!("cannot spawn the runtime thread: {e}")))?;
        let facts = ready_rx.recv().map_err(|_| InitError::Gone)??;
        Ok(Runtime {
            allocator,
            version: facts.version,
            executable: facts.executable,
            prelude_failures: facts.prelude_failures,
            library: facts.library,
            warnings: facts.warnings,
            site_dirs: site_dirs(facts.venv.as_ref()),
            venv: facts.venv,
            commands: Mutex::new(tx),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The allocator the runtime was started with.
    pub fn allocator(&self) -> Allocator {
        self.allocator
    }

    /// Refuses a virtual environment other than the running one.
    fn same_venv(&self, asked: Option<&Venv>) -> Result<(), InitError> {
        let Some(asked) = asked else { return Ok(()) };
        if self.venv.as_ref().map(Venv::root) == Some(asked.root()) {
            return Ok(());
        }
        let running = match &self.venv {
            Some(v) => format!("in virtual environment {v}"),
            None => "without a virtual environment".to_string(),
        };
        Err(InitError::Venv(format!(
            "cannot run in virtual environment {asked}: the Python runtime of this process \
             already runs {running}, and it is initialised once per process (give every \
             engine of a process the same venv)"
        )))
    }

    /// The running interpreter's version.
    pub fn version(&self) -> PythonVersion {
        self.version
    }

    /// `sys.executable` of the main interpreter.
    pub fn executable(&self) -> &str {
        &self.executable
    }

    /// Prelude modules that failed to import (`"module: error"`).
    pub fn prelude_failures(&self) -> &[String] {
        &self.prelude_failures
    }

    /// The libpython shared library this process loaded, when it can be
    /// told (`/proc/self/maps`, else `dladdr`).
    pub fn library(&self) -> Option<&str> {
        self.library.as_deref()
    }

    /// Warnings raised at initialisation: a libpython of another patch
    /// release than the build's.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The virtual environment the runtime runs in.
    pub fn venv(&self) -> Option<&Venv> {
        self.venv.as_ref()
    }

    /// The virtual environment's site directories, which every interpreter
    /// adds with [`Python::add_site_dirs`] (empty without one).
    pub fn site_dirs(&self) -> &[String] {
        &self.site_dirs
    }

    /// Runs `job` on the runtime thread, attached to the main interpreter,
    /// and returns its result.
    pub fn run_main<R: Send + 'static>(
        &self,
        job: impl FnOnce(Python<'_>) -> R + Send + 'static,
    ) -> Result<R, InitError> {
        let (tx, rx) = mpsc::channel();
        let job: MainJob = Box::new(move |py| {
            let _ = tx.send(job(py));
        });
        self.commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Command::Run(job))
            .map_err(|_| InitError::Gone)?;
        rx.recv().map_err(|_| InitError::Gone)
    }

    /// Finalises the runtime (`Py_FinalizeEx`) on the thread that
    /// initialised it. Refused while any worker thread state is alive, and
    /// when non-daemon Python threads in the main interpreter are still
    /// running after waiting up to `timeout` for them (`Py_FinalizeEx`
    /// would join them forever). Returns `Py_FinalizeEx`'s result (0 on
    /// success).
    pub fn finalize_within(timeout: std::time::Duration) -> Result<i32, InitError> {
        let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
        let rt = match &*state {
            State::Running(rt) => *rt,
            State::Finalized => return Err(InitError::Finalized),
            State::Uninit => return Ok(0),
        };
        let live = LIVE_THREAD_STATES.load(Ordering::SeqCst);
        if live > 0 {
            return Err(InitError::Busy(live));
        }
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let alive = rt.run_main(|py| py.eval_usize(NON_DAEMON_THREADS).unwrap_or(0))?;
            if alive == 0 {
                break;
            }
            if std::time::Instant::now() >= deadline {
                return Err(InitError::ThreadsAlive(alive));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // CPython < 3.11: a `_thread` thread started just before, whose
        // bootstrap runs after finalisation began, aborts the process
        // ("Couldn't create autoTSSkey mapping", fixed upstream in 3.11 by
        // gh-108987). Wait for every one to have started.
        #[cfg(not(Py_3_11))]
        loop {
            let starting = rt.run_main(starting_threads)?;
            if starting == 0 {
                break;
            }
            if std::time::Instant::now() >= deadline {
                return Err(InitError::ThreadsStarting(starting));
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let (tx, rx) = mpsc::channel();
        rt.commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Command::Finalize(tx))
            .map_err(|_| InitError::Gone)?;
        let code = rx.recv().map_err(|_| InitError::Gone)??;
        *state = State::Finalized;
        // Wait for the runtime thread to be gone, not only done: its exit
        // runs the thread-exit destructors of the C libraries its Python
        // code used (OpenSSL's, after `import hashlib`), and those race
        // with the same libraries' `atexit` clean-up if the process exits
        // meanwhile. That race aborted `gilpool run` after its summary
        // ("malloc_consolidate(): invalid chunk size", OPENSSL_cleanup on
        // the exiting main thread beside the runtime thread's exit).
        // Joined with `STATE` unlocked: a thread's exit may look at it
        // (a guest thread's own main state, `guest.rs`).
        drop(state);
        if let Some(thread) = rt.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
        Ok(code)
    }
}

/// Threads of the main interpreter that have a thread state but have not
/// finished starting: every thread state but the caller's (the runtime
/// thread's) and the guest threads' own ones (`guest.rs`) belongs to a
/// thread `_thread` started, and `_thread._count()` counts those that
/// started and have not ended. Called attached to the main interpreter,
/// once no worker thread state is alive.
#[cfg(not(Py_3_11))]
fn starting_threads(py: Python<'_>) -> usize {
    let states = py.other_threads();
    let guests = crate::guest::own_main_states();
    let started = py
        .eval_usize("import _thread\nresult = _thread._count()\n")
        .unwrap_or(0);
    states.saturating_sub(guests).saturating_sub(started)
}

/// Counts the main interpreter's live non-daemon `threading` threads other
/// than the one asking (which is the runtime thread).
const NON_DAEMON_THREADS: &str = "\
import sys
_t = sys.modules.get('threading')
result = 0 if _t is None else sum(
    1 for _x in _t.enumerate()
    if _x.is_alive() and not _x.daemon and _x is not _t.current_thread()
    and _x is not _t.main_thread() and not isinstance(_x, _t._DummyThread))
";

/// What the runtime thread reports once the runtime is up.
struct Facts {
    version: PythonVersion,
    executable: String,
    prelude_failures: Vec<String>,
    library: Option<String>,
    warnings: Vec<String>,
    venv: Option<Venv>,
}

type Ready = Result<Facts, InitError>;

fn site_dirs(venv: Option<&Venv>) -> Vec<String> {
    venv.map(|v| {
        v.site_dirs()
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect()
    })
    .unwrap_or_default()
}

fn main_thread(
    config: RuntimeConfig,
    commands: mpsc::Receiver<Command>,
    ready: mpsc::Sender<Ready>,
) {
    let library = loaded_library();
    let mut warnings = match check_loaded(running_version(), library.as_deref()) {
        Ok(w) => w.into_iter().collect::<Vec<_>>(),
        Err(e) => {
            let _ = ready.send(Err(InitError::Version(e)));
            return;
        }
    };
    // SAFETY: called once per process (STATE is Uninit and locked by our
    // caller), on this thread, which becomes the main interpreter's owner.
    let tstate = match unsafe { initialize(&config) } {
        Ok(t) => t,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    crate::interrupt::install_fork_guard();
    let facts = {
        // SAFETY: `tstate` is this thread's detached main thread state.
        let guard = unsafe { Attached::new(tstate) };
        let py = guard.py();
        let version = running_version();
        // `install_signal_handlers = 0` does not stop the `signal` module
        // from installing its SIGINT handler when first imported in the main
        // interpreter. Import it now, once, and give SIGINT back to the host
        // if Python took it over from the default disposition.
        let _ = py.run(
            "import signal as _s\nif _s.getsignal(_s.SIGINT) is _s.default_int_handler:\n    _s.signal(_s.SIGINT, _s.SIG_DFL)\n",
        );
        let _ = py.prepend_sys_path(&config.sys_path);
        let mut failures = Vec::new();
        if let Err(e) = py.add_site_dirs(&site_dirs(config.venv.as_ref())) {
            warnings.push(format!(
                "cannot add the virtual environment's site directories: {e}"
            ));
        }
        for m in &config.prelude {
            if let Err(e) = py.import(m) {
                failures.push(format!("{m}: {e}"));
            }
        }
        let exe = py
            .import("sys")
            .and_then(|s| s.getattr("executable"))
            .and_then(|e| e.extract_str())
            .unwrap_or_default();
        Facts {
            version,
            executable: exe,
            prelude_failures: failures,
            library,
            warnings,
            venv: config.venv.clone(),
        }
    };
    let _ = ready.send(Ok(facts));
    while let Ok(cmd) = commands.recv() {
        match cmd {
            Command::Run(job) => {
                // SAFETY: as above; the previous guard detached.
                let guard = unsafe { Attached::new(tstate) };
                job(guard.py());
            }
            Command::Finalize(reply) => {
                // SAFETY: as above.
                let guard = unsafe { Attached::new(tstate) };
                guard.forget();
                // SAFETY: attached with the main interpreter's original
                // thread state, on the thread that initialised it; no worker
                // thread state is alive (checked by `finalize`).
                let code = unsafe { ffi::Py_FinalizeEx() };
                attach::clear();
                let _ = reply.send(Ok(code));
                return;
            }
        }
    }
}

/// # Safety
/// Once per process, before any other CPython call.
unsafe fn initialize(config: &RuntimeConfig) -> Result<*mut ffi::PyThreadState, InitError> {
    if let Some(code) = config.allocator.code()? {
        let mut pre = std::mem::MaybeUninit::<ffi::PyPreConfig>::uninit();
        // SAFETY: PyPreConfig_InitPythonConfig fully initialises the struct.
        let mut pre = unsafe {
            ffi::PyPreConfig_InitPythonConfig(pre.as_mut_ptr());
            pre.assume_init()
        };
        pre.allocator = code;
        // SAFETY: before any other CPython call (the caller's contract);
        // `pre` is initialised.
        let status = unsafe { ffi::Py_PreInitialize(&pre) };
        // SAFETY: reading a status value.
        if unsafe { ffi::PyStatus_Exception(status) } != 0 {
            return Err(InitError::Init(format!(
                "allocator {}: {}",
                config.allocator,
                status_message(status)
            )));
        }
    }
    let mut cfg = std::mem::MaybeUninit::<ffi::PyConfig>::uninit();
    // SAFETY: PyConfig_InitPythonConfig fully initialises the struct.
    let mut cfg = unsafe {
        ffi::PyConfig_InitPythonConfig(cfg.as_mut_ptr());
        cfg.assume_init()
    };
    cfg.install_signal_handlers = 0;
    cfg.parse_argv = 0;
    let exe = config
        .executable
        .clone()
        .or_else(|| config.venv.as_ref().map(|v| v.executable().to_path_buf()))
        .or_else(|| Some(PathBuf::from(crate::BUILD_EXECUTABLE)).filter(|p| p.exists()));
    if let Some(exe) = exe {
        let c = CString::new(exe.to_string_lossy().as_bytes())
            .map_err(|_| InitError::Init("the executable path contains a NUL byte".into()))?;
        // SAFETY: `cfg` is initialised; the field pointers are fields of it;
        // CPython copies the string.
        let status =
            unsafe { ffi::PyConfig_SetBytesString(&mut cfg, &mut cfg.executable, c.as_ptr()) };
        // SAFETY: reading a status value.
        if unsafe { ffi::PyStatus_Exception(status) } != 0 {
            // SAFETY: `cfg` is initialised and not used after.
            unsafe { ffi::PyConfig_Clear(&mut cfg) };
            return Err(InitError::Init(status_message(status)));
        }
    }
    // SAFETY: `cfg` is initialised; first initialisation in this process.
    let status = unsafe { ffi::Py_InitializeFromConfig(&cfg) };
    // SAFETY: `cfg` is initialised and not used after.
    unsafe { ffi::PyConfig_Clear(&mut cfg) };
    // SAFETY: reading a status value.
    if unsafe { ffi::PyStatus_Exception(status) } != 0 {
        return Err(InitError::Init(status_message(status)));
    }
    // SAFETY: initialised; this thread holds the main GIL through the main
    // thread state, which we detach and keep.
    Ok(unsafe { ffi::PyEval_SaveThread() })
}

pub(crate) fn status_message(status: ffi::PyStatus) -> String {
    let mut out = String::new();
    for p in [status.func, status.err_msg] {
        if !p.is_null() {
            // SAFETY: PyStatus strings are static NUL-terminated C strings.
            let s = unsafe { CStr::from_ptr(p) }.to_string_lossy();
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&s);
        }
    }
    if out.is_empty() {
        out = "unknown error".into();
    }
    out
}

fn running_version() -> PythonVersion {
    // SAFETY: Py_GetVersion returns a static C string.
    let s = unsafe { CStr::from_ptr(ffi::Py_GetVersion()) }
        .to_string_lossy()
        .into_owned();
    let head = s.split_whitespace().next().unwrap_or("");
    let mut parts = head.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u8>()
            .unwrap_or(0)
    });
    PythonVersion {
        major: parts.next().unwrap_or(0),
        minor: parts.next().unwrap_or(0),
        micro: parts.next().unwrap_or(0),
    }
}

/// The libpython this process loaded: the first `libpython*.so*` mapped
/// (`/proc/self/maps`), else the object `dladdr` says holds
/// `Py_GetVersion` (the executable itself when Python is linked in
/// statically).
pub fn loaded_library() -> Option<String> {
    if let Ok(maps) = std::fs::read_to_string("/proc/self/maps") {
        let found = maps.lines().find_map(|line| {
            let path = &line[line.find('/')?..];
            let name = path.rsplit('/').next()?;
            (name.starts_with("libpython") && name.contains(".so")).then(|| path.to_string())
        });
        if found.is_some() {
            return found;
        }
    }
    // SAFETY: an all-zero `Dl_info` is a valid value (null pointers).
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let addr = ffi::Py_GetVersion as *const libc::c_void;
    // SAFETY: dladdr only inspects the address; `info` is a valid
    // out-pointer for the call.
    let ok = unsafe { libc::dladdr(addr, &mut info) };
    if ok == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: on success `dli_fname` is a NUL-terminated string owned by
    // the loader, valid while the object stays loaded (for good).
    let name = unsafe { CStr::from_ptr(info.dli_fname) };
    Some(name.to_string_lossy().into_owned())
}

/// Compares the running libpython with the build's Python: another minor
/// version is an error, another patch release a warning.
fn check_loaded(running: PythonVersion, library: Option<&str>) -> Result<Option<String>, String> {
    compare_versions(
        crate::BUILD_PYTHON,
        crate::BUILD_VERSION_FULL,
        crate::BUILD_EXECUTABLE,
        running,
        library.unwrap_or("location unknown"),
    )
}

fn compare_versions(
    build_minor: &str,
    build_full: &str,
    build_exe: &str,
    running: PythonVersion,
    library: &str,
) -> Result<Option<String>, String> {
    let minor = format!("{}.{}", running.major, running.minor);
    let build = if build_full.is_empty() {
        build_minor
    } else {
        build_full
    };
    if minor != build_minor {
        return Err(format!(
            "this build of gilpool is for Python {build} ({build_exe}), but the libpython this \
             process loaded is Python {running} ({library}); a build runs only on its own \
             minor version: make libpython{build_minor} be found first (the binary's rpath, \
             LD_LIBRARY_PATH) or rebuild with PYO3_PYTHON set to the interpreter you want"
        ));
    }
    if !build_full.is_empty() && build_full != running.to_string() {
        return Ok(Some(format!(
            "gilpool was built for Python {build_full} ({build_exe}) but runs on libpython \
             {running} ({library}): the standard library and extension modules may be another \
             patch release's; rebuild with PYO3_PYTHON set to that interpreter, or let the \
             build's libpython be found first (rpath, LD_LIBRARY_PATH)"
        )));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(major: u8, minor: u8, micro: u8) -> PythonVersion {
        PythonVersion {
            major,
            minor,
            micro,
        }
    }

    #[test]
    fn loaded_version_against_the_build() {
        let exe = "/py/bin/python3.13";
        let lib = "/usr/lib/libpython3.13.so.1.0";
        assert_eq!(
            compare_versions("3.13", "3.13.0", exe, v(3, 13, 0), lib),
            Ok(None)
        );
        let w = compare_versions("3.13", "3.13.0", exe, v(3, 13, 1), lib)
            .unwrap()
            .unwrap();
        assert!(
            w.contains("3.13.0") && w.contains("3.13.1") && w.contains(lib),
            "{w}"
        );
        let e = compare_versions("3.13", "3.13.0", exe, v(3, 12, 1), lib).unwrap_err();
        assert!(
            e.contains("Python 3.13.0") && e.contains("Python 3.12.1"),
            "{e}"
        );
        // An unknown patch release compares the minor version only.
        assert_eq!(
            compare_versions("3.13", "", exe, v(3, 13, 4), lib),
            Ok(None)
        );
    }

    #[test]
    fn this_process_loaded_a_libpython() {
        let lib = loaded_library().expect("a libpython is loaded");
        assert!(lib.contains("python"), "{lib}");
    }
}
