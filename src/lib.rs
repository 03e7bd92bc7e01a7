//! # gilpool
//!
//! Run CPU-bound Python functions in parallel from Rust. gilpool embeds
//! CPython and runs a pool of workers, each pinned to a core: in
//! [`Mode::SubInterpreters`] every worker owns an own-GIL subinterpreter
//! (PEP 684, Python 3.12+), so Python runs truly in parallel; in
//! [`Mode::SingleGil`] (and on Python 3.9–3.11) workers share the main
//! interpreter's GIL, taking it only around Python execution.
//!
//! Public items:
//! - [`Engine`], [`EngineBuilder`], [`Mode`]: the runtime and its workers;
//!   [`Placement`], [`default_main_workers`]: which lane runs a handler.
//! - [`Handler`], [`HandlerBuilder`], [`MapIter`], [`MapStream`]: a bound Python function;
//!   `invoke`, `invoke_with`, `submit`, `submit_with`, `try_submit`,
//!   `submit_timeout`, `map`.
//! - [`TaskFuture`]: a task's result (a `Future`, with blocking `wait`).
//! - [`Held`], [`Home`]: a result kept as a Python object in its interpreter.
//! - [`Value`], [`Args`], [`IntoPython`], [`FromPython`], [`IntoArgs`],
//!   [`CallArgs`], [`Positional`], [`Packed`]: conversions.
//! - [`SharedBuffer`]: Rust-owned, immutable, reference-counted memory that
//!   every interpreter sees as a read-only `memoryview` of the same bytes
//!   (no copy), and that Python buffers convert back into (one copy);
//!   [`Element`]: the numeric types it holds; [`BufferVec`]: a `Vec<T>`
//!   that crosses through the buffer protocol.
//! - Feature `cuda`: `CudaStage` (a device, a stream and pinned staging
//!   memory for commit closures), `DeviceBuffer` (device memory seen by
//!   Python through `__cuda_array_interface__` and `__dlpack__`),
//!   `CudaVec` (a CUDA array read back to the host), `cuda_device_count`;
//!   without a driver they fail with [`Error::is_cuda_unavailable`].
//! - [`Python`], [`Object`]: the attachment token and objects bound to it,
//!   seen only inside callbacks; [`PyException`]: a Python exception as data.
//! - [`Error`], [`Result`], [`TrySubmitError`]: errors.
//! - [`ShutdownReport`]: what [`Engine::shutdown_timeout`] did; [`Allocator`]:
//!   CPython's memory allocator.
//! - [`Metrics`], [`WorkerMetrics`], [`HandlerMetrics`], [`Percentiles`]:
//!   [`Engine::metrics`] snapshots.
//! - [`finalize`], [`finalize_timeout`], [`is_attached`], [`DEFAULT_PRELUDE`],
//!   [`PythonVersion`], [`DEFAULT_SHUTDOWN_TIMEOUT`], [`DEFAULT_INTERRUPT_GRACE`], [`DEFAULT_INIT_TIMEOUT`],
//!   [`DEFAULT_STACK_SIZE`], [`DEFAULT_MAX_DEPTH`].
//! - [`BUILD_PYTHON`], [`BUILD_PYTHON_VERSION`], [`BUILD_PYTHON_EXECUTABLE`]:
//!   the CPython this build embeds.
//!
//! ```no_run
//! use gilpool::{Engine, Mode};
//! # fn main() -> gilpool::Result<()> {
//! let engine = Engine::builder().mode(Mode::Auto).sys_path("python").build()?;
//! let inc = engine.handler("gilpool_workloads", "inc").batch_size(64).load()?;
//! let out: Vec<i64> = inc.map((0..1000i64).map(|i| (i,))).collect::<Result<_, _>>()?;
//! assert_eq!(out[999], 1000);
//! # Ok(()) }
//! ```
//!
//! Objects never leave the attachment they were made in: an [`Object`]
//! borrows the [`Python`] token, which is neither `Send` nor `Sync`.
//!
//! ```compile_fail
//! # fn f(h: gilpool::Handler) {
//! // A callback cannot smuggle the raw object out of the interpreter.
//! let leaked = h.invoke_with((1,), |obj| Ok(obj));
//! # }
//! ```
//!
//! ```compile_fail
//! fn send<T: Send>(_: T) {}
//! fn check(obj: gilpool::Object<'_>) {
//!     send(obj); // objects cannot move to another thread
//! }
//! ```
//!
//! ```compile_fail
//! fn send<T: Send>(_: T) {}
//! fn check(py: gilpool::Python<'_>) {
//!     send(py); // nor can the token
//! }
//! ```

mod buffer;
mod convert;
#[cfg(feature = "cuda")]
mod cuda;
mod engine;
mod error;
mod handler;
mod held;
mod lane;
mod metrics;
mod placement;
pub(crate) mod sched;
mod slot;
mod task;
mod value;
mod venv;
mod watchdog;
mod worker;

pub use buffer::{BufferVec, Element, SharedBuffer};
pub use convert::{Args, CallArgs, FromPython, IntoArgs, IntoPython, Packed, Positional};
#[cfg(feature = "cuda")]
pub use cuda::{cuda_device_count, CudaStage, CudaVec, DeviceBuffer};
pub use engine::{
    default_main_workers, host_cores, Engine, EngineBuilder, HandlerBuilder, Mode, ShutdownReport,
    DEFAULT_INIT_TIMEOUT, DEFAULT_INTERRUPT_GRACE, DEFAULT_SHUTDOWN_TIMEOUT,
};
pub use error::{Error, Result, TrySubmitError};
pub use gilpool_ffi::runtime::DEFAULT_PRELUDE;
pub use gilpool_ffi::Allocator;
pub use gilpool_ffi::{is_attached, Object, PyException, Python, PythonVersion};
pub use handler::{Handler, MapChunks, MapIter, MapStream};
pub use held::{Held, Home};
pub use metrics::{HandlerMetrics, Metrics, Percentiles, WorkerMetrics};
pub use placement::Placement;
pub use task::TaskFuture;
pub use value::{Value, DEFAULT_MAX_DEPTH};
pub use worker::DEFAULT_STACK_SIZE;

/// The `major.minor` of the CPython this build embeds (the interpreter
/// pyo3-ffi built against: `PYO3_PYTHON`). A build runs only on this minor
/// version's libpython.
pub const BUILD_PYTHON: &str = gilpool_ffi::BUILD_PYTHON;

/// The full version of that CPython, `major.minor.micro` (empty when the
/// build could not run it). A libpython of another patch release is
/// accepted with a warning in [`Engine::warnings`].
pub const BUILD_PYTHON_VERSION: &str = gilpool_ffi::BUILD_VERSION_FULL;

/// That CPython's interpreter at build time: the default `sys.executable`,
/// and the one to make virtual environments with
/// ([`EngineBuilder::venv`]).
pub const BUILD_PYTHON_EXECUTABLE: &str = gilpool_ffi::BUILD_EXECUTABLE;

/// Finalises the embedded Python runtime (`Py_FinalizeEx`). Call it once,
/// after every [`Engine`] is shut down, to run Python's exit handlers and
/// flush its buffers; no engine can be built in this process afterwards.
/// Refused (an [`Error::is_init`] error) while any engine's workers are
/// alive, while an interpreter abandoned at shutdown is alive, and when
/// non-daemon Python threads that tasks started in the main interpreter are
/// still running after [`DEFAULT_SHUTDOWN_TIMEOUT`] (`Py_FinalizeEx` would
/// wait for them forever). See [`finalize_timeout`].
pub fn finalize() -> Result<()> {
    finalize_timeout(DEFAULT_SHUTDOWN_TIMEOUT)
}

/// [`finalize`], waiting at most `timeout` for non-daemon Python threads.
pub fn finalize_timeout(timeout: std::time::Duration) -> Result<()> {
    match gilpool_ffi::Runtime::finalize_within(timeout) {
        Ok(0) => Ok(()),
        Ok(code) => Err(error::Error::new(error::ErrorKind::Init(format!(
            "Py_FinalizeEx returned {code}"
        )))),
        Err(e) => Err(error::Error::new(error::ErrorKind::Init(e.to_string()))),
    }
}
