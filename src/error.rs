//! The one public error type.

use gilpool_ffi::PyException;
use std::fmt;

/// Everything that can go wrong in gilpool. Inspect it with the `is_*`
/// predicates and [`Error::python`]; `Display` says what happened and names
/// the module, function, argument or Python version involved.
#[derive(Debug, Clone)]
pub struct Error {
    // Boxed: errors are rare and results common, so a `Result<i64>` is 16
    // bytes, not the 100 of the largest kind (a `map` of a million inputs
    // moves a million of them).
    kind: Box<ErrorKind>,
}

const _: () = assert!(std::mem::size_of::<Result<i64, Error>>() == 16);

#[derive(Debug, Clone)]
pub(crate) enum ErrorKind {
    /// Python could not be initialised, or the runtime was finalised.
    Init(String),
    /// Invalid configuration or argument.
    Config(String),
    /// `import module` raised ModuleNotFoundError for the module itself.
    ModuleNotFound {
        module: String,
        exception: PyException,
    },
    /// The module imported but raised something else while doing so.
    Import {
        module: String,
        exception: PyException,
    },
    /// The module refuses subinterpreters and the handler asked for the sub lane.
    Refused { module: String, reason: String },
    /// The module has no attribute of that name.
    FunctionNotFound { module: String, function: String },
    /// The attribute exists but is not callable.
    NotCallable {
        module: String,
        function: String,
        type_name: String,
    },
    /// The Python function raised.
    Python(PyException),
    /// A value could not be converted between Rust and Python.
    Conversion(String),
    /// A batched handler's function broke the list-in, list-out contract.
    BatchShape(String),
    /// User code run by gilpool panicked (the phase and the message).
    Panic(String),
    /// The worker running the task was lost (it panicked outside the
    /// task's own code); the worker itself goes on or is replaced.
    WorkerLost(String),
    /// The engine is shut down (or shutting down) and took no new work.
    Shutdown,
    /// The task was cancelled: before it ran (`cancel`, `shutdown_now`,
    /// dropped), or interrupted while running.
    Cancelled(String),
    /// The handler's in-flight bound is reached (`try_submit`).
    Full,
    /// A deadline passed: the task's own, or a timed wait for room.
    Timeout(String),
    /// The result of this future was already taken.
    Consumed,
    /// No usable CUDA driver or device (or the build has no `cuda` feature).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    CudaUnavailable(String),
    /// A CUDA driver call failed.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    Cuda(String),
}

impl Error {
    pub(crate) fn new(kind: ErrorKind) -> Error {
        Error {
            kind: Box::new(kind),
        }
    }

    pub(crate) fn config(msg: impl Into<String>) -> Error {
        Error::new(ErrorKind::Config(msg.into()))
    }

    pub(crate) fn conversion(msg: impl Into<String>) -> Error {
        Error::new(ErrorKind::Conversion(msg.into()))
    }

    /// The Python exception behind this error, if Python raised one (the
    /// function itself, or the module while importing).
    pub fn python(&self) -> Option<&PyException> {
        match &*self.kind {
            ErrorKind::Python(e) => Some(e),
            ErrorKind::ModuleNotFound { exception, .. } | ErrorKind::Import { exception, .. } => {
                Some(exception)
            }
            _ => None,
        }
    }

    /// When a module refused to load in an own-GIL subinterpreter (numpy,
    /// PyO3- and mypyc-built extensions, ...): the line of the exception
    /// chain that says so. Such a module runs on the main lane
    /// ([`Placement::Auto`](crate::Placement::Auto) routes it there) or in
    /// `Mode::SingleGil`; `gilpool doctor MODULE` tells where a module runs.
    pub fn subinterpreter_refusal(&self) -> Option<String> {
        self.python().and_then(crate::placement::refusal)
    }

    /// Python could not be initialised or was finalised.
    pub fn is_init(&self) -> bool {
        matches!(*self.kind, ErrorKind::Init(_))
    }
    /// Invalid configuration or argument.
    pub fn is_config(&self) -> bool {
        matches!(*self.kind, ErrorKind::Config(_))
    }
    /// The module does not exist on `sys.path`.
    pub fn is_module_not_found(&self) -> bool {
        matches!(*self.kind, ErrorKind::ModuleNotFound { .. })
    }
    /// The module raised while being imported.
    pub fn is_import(&self) -> bool {
        matches!(*self.kind, ErrorKind::Import { .. })
    }
    /// The module refuses subinterpreters (numpy, PyO3-built and other
    /// single-phase extension modules) and the handler asked for
    /// [`Placement::Sub`](crate::Placement::Sub).
    pub fn is_refused(&self) -> bool {
        matches!(*self.kind, ErrorKind::Refused { .. })
    }
    /// The module has no such function.
    pub fn is_function_not_found(&self) -> bool {
        matches!(*self.kind, ErrorKind::FunctionNotFound { .. })
    }
    /// The named attribute is not callable.
    pub fn is_not_callable(&self) -> bool {
        matches!(*self.kind, ErrorKind::NotCallable { .. })
    }
    /// The Python function raised (see [`Error::python`]).
    pub fn is_python(&self) -> bool {
        matches!(*self.kind, ErrorKind::Python(_))
    }
    /// A conversion between Rust and Python values failed.
    pub fn is_conversion(&self) -> bool {
        matches!(*self.kind, ErrorKind::Conversion(_))
    }
    /// A batched function returned something other than a list of the
    /// batch's length.
    pub fn is_batch_shape(&self) -> bool {
        matches!(*self.kind, ErrorKind::BatchShape(_))
    }
    /// User code run by gilpool panicked: a commit or callback closure, or
    /// an argument or result conversion (the message names the phase).
    pub fn is_panic(&self) -> bool {
        matches!(*self.kind, ErrorKind::Panic(_))
    }
    /// The worker holding the task was lost (a panic outside the task's
    /// own code); the pool keeps its size.
    pub fn is_worker_lost(&self) -> bool {
        matches!(*self.kind, ErrorKind::WorkerLost(_))
    }
    /// The engine is shut down.
    pub fn is_shutdown(&self) -> bool {
        matches!(*self.kind, ErrorKind::Shutdown)
    }
    /// The task was cancelled ([`TaskFuture::cancel`](crate::TaskFuture::cancel),
    /// a shutdown that did not drain it): before it ran, or interrupted.
    pub fn is_cancelled(&self) -> bool {
        matches!(*self.kind, ErrorKind::Cancelled(_))
    }
    /// The handler's in-flight bound was reached.
    pub fn is_full(&self) -> bool {
        matches!(*self.kind, ErrorKind::Full)
    }
    /// A deadline passed: the task's own
    /// ([`HandlerBuilder::timeout`](crate::HandlerBuilder::timeout),
    /// [`Handler::submit_deadline`](crate::Handler::submit_deadline)) —
    /// before it started, or while it ran and was interrupted — or a timed
    /// wait for room in a full handler.
    pub fn is_timeout(&self) -> bool {
        matches!(*self.kind, ErrorKind::Timeout(_))
    }
    /// CUDA cannot be used here: no driver library, no such device, or a
    /// driver too old (feature `cuda`). The message says which.
    pub fn is_cuda_unavailable(&self) -> bool {
        matches!(*self.kind, ErrorKind::CudaUnavailable(_))
    }
    /// A CUDA driver call failed (feature `cuda`).
    pub fn is_cuda(&self) -> bool {
        matches!(*self.kind, ErrorKind::Cuda(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.kind {
            ErrorKind::Init(m) => write!(f, "Python runtime: {m}"),
            ErrorKind::Config(m) => write!(f, "invalid configuration: {m}"),
            ErrorKind::ModuleNotFound { module, exception } => {
                write!(f, "module {module:?} not found on sys.path ({exception})")
            }
            ErrorKind::Import { module, exception } => {
                write!(f, "module {module:?} failed to import: {exception}")
            }
            ErrorKind::Refused { module, reason } => write!(
                f,
                "module {module:?} cannot run in a subinterpreter: {reason}; load it with Placement::Auto or Placement::Main (the main lane), or run the engine in Mode::SingleGil"
            ),
            ErrorKind::FunctionNotFound { module, function } => {
                write!(f, "module {module:?} has no function {function:?}")
            }
            ErrorKind::NotCallable {
                module,
                function,
                type_name,
            } => {
                write!(f, "{module}.{function} is a {type_name}, not a callable")
            }
            ErrorKind::Python(e) => write!(f, "Python raised {e}"),
            ErrorKind::Conversion(m) => write!(f, "conversion failed: {m}"),
            ErrorKind::BatchShape(m) => write!(f, "batched handler broke its contract: {m}"),
            ErrorKind::Panic(m) => write!(f, "panicked in {m}"),
            ErrorKind::WorkerLost(m) => write!(f, "the task's worker was lost: {m}"),
            ErrorKind::Shutdown => f.write_str("the engine is shut down"),
            ErrorKind::Cancelled(m) => f.write_str(m),
            ErrorKind::Full => f.write_str("the handler's in-flight limit is reached"),
            ErrorKind::Timeout(m) => write!(f, "timed out: {m}"),
            ErrorKind::Consumed => f.write_str("the result was already taken from this future"),
            ErrorKind::CudaUnavailable(m) => write!(f, "CUDA is unavailable: {m}"),
            ErrorKind::Cuda(m) => write!(f, "CUDA: {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.python()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<PyException> for Error {
    fn from(e: PyException) -> Error {
        Error::new(ErrorKind::Python(e))
    }
}

/// `Result` with gilpool's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A `try_submit` that did not take the task: the arguments come back.
pub struct TrySubmitError<T> {
    error: Error,
    task: T,
}

impl<T> TrySubmitError<T> {
    pub(crate) fn new(error: Error, task: T) -> Self {
        TrySubmitError { error, task }
    }
    /// The handler was full (retry later); otherwise it is shut down.
    pub fn is_full(&self) -> bool {
        self.error.is_full()
    }
    /// The engine is shut down.
    pub fn is_shutdown(&self) -> bool {
        self.error.is_shutdown()
    }
    /// The reason.
    pub fn error(&self) -> &Error {
        &self.error
    }
    /// The task's arguments, given back.
    pub fn into_inner(self) -> T {
        self.task
    }
}

impl<T> fmt::Debug for TrySubmitError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrySubmitError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Display for TrySubmitError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl<T> std::error::Error for TrySubmitError<T> {}

impl<T> From<TrySubmitError<T>> for Error {
    fn from(e: TrySubmitError<T>) -> Error {
        e.error
    }
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".into()
    }
}
