//! `gilpool-ffi`: the only part of gilpool that calls CPython (through
//! `pyo3_ffi`). Everything above it is safe Rust.
//!
//! - [`runtime`]: one main interpreter per process, initialised once on a
//!   dedicated thread, finalised only on request ([`Runtime`]).
//! - [`interp`]: per-worker thread states — an own-GIL subinterpreter
//!   ([`SubInterpreter`], Python >= 3.12) or a thread state in the main
//!   interpreter ([`MainThreadState`]) — and [`attach`]ing to them.
//! - [`Python`]: the `!Send` token that proves the current thread is attached
//!   to one interpreter; [`Object`] borrows it.
//! - [`PyException`]: a Python exception as owned Rust data.
//! - [`Stash`]: an object kept inside one interpreter across attachments.
//! - [`InterruptHandle`]: interrupts Python running on a worker thread.
//! - [`ModulesWatch`]: whether a call broke `sys.modules`, with no lookup
//!   while a dict watcher saw no change ([`Here`]: the interpreter now).
//! - [`Venv`]: a virtual environment checked against this build's Python.
//! - [`buffer`]: [`SharedBytes`] (immutable Rust memory) shown to any
//!   interpreter as a read-only `memoryview` with no copy
//!   ([`Python::memoryview`], [`Layout`]), and Python buffers read back
//!   ([`Object::buffer`], [`PyBufferView`]).
//! - `cuda` (feature `cuda`): device memory staged from host bytes on a
//!   stream of gilpool's own, shown to Python with
//!   `__cuda_array_interface__` and `__dlpack__`, and CUDA arrays read back.
//!
//! Invariants (see `docs/SAFETY.md`): one persistent thread state per worker
//! thread; `PyGILState_*` is never used; a thread is attached to at most one
//! interpreter at a time and the thread-local record of that is the truth;
//! no object crosses interpreters.

mod attach;
pub mod buffer;
#[cfg(feature = "cuda")]
pub mod cuda;
mod error;
pub mod guest;
pub mod interp;
mod interrupt;
mod modules;
mod object;
pub mod runtime;
mod venv;

pub use attach::{is_attached, Attached, Python};
pub use buffer::{Layout, PyBufferView, SharedBytes};
pub use error::PyException;
pub use interp::{attach, MainThreadState, SubInterpreter, WorkerState};
pub use interrupt::InterruptHandle;
pub use modules::{Here, ModulesWatch};
pub use object::{Kept, Kind, Object, Stash};
pub use runtime::{Allocator, InitError, PythonVersion, Runtime, RuntimeConfig};
pub use venv::Venv;

/// Whether this build can create own-GIL subinterpreters (built for
/// CPython >= 3.12).
pub const SUPPORTS_OWN_GIL: bool = cfg!(Py_3_12);

/// The `major.minor` of the CPython this build is tied to.
pub const BUILD_PYTHON: &str = env!("GILPOOL_BUILD_VERSION");

/// The `major.minor.micro` of the CPython this build was configured with
/// (empty when the build could not run it), compared at start-up with the
/// libpython actually loaded.
pub const BUILD_VERSION_FULL: &str = env!("GILPOOL_BUILD_VERSION_FULL");

/// The interpreter this build was configured with (`PYO3_PYTHON`'s
/// `sys.executable`), the default `sys.executable` at run time.
pub const BUILD_EXECUTABLE: &str = env!("GILPOOL_BUILD_PYTHON");
