//! `Handler`: a Python function bound to an engine lane, and its calls.

pub(crate) mod caller;
mod map;

pub use map::{MapIter, MapStream};

use crate::convert::{FromPython, IntoArgs};
use crate::error::{Error, ErrorKind, Result, TrySubmitError};
use crate::lane::{Job, Lane, LaneKind};
use crate::sched::batcher::{BatchPolicy, Batcher, Pushed};
use crate::sched::permits::{AcquireError, Permits};
use crate::task::{Completer, Deadline, Task, TaskFuture, TypedTask};
use gilpool_ffi::Object;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A map keyed by handler id ([`HandlerCore::id`], a counter): the function
/// caches looked up on every call. Fx hashing, since SipHash's resistance to
/// chosen keys buys nothing for ids the engine hands out itself.
pub(crate) type IdMap<V> = rustc_hash::FxHashMap<u64, V>;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The phase a panic in the built-in result conversion is reported in.
const RESULT_CONVERSION: &str = "result conversion";

/// How a handler batches and bounds its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HandlerOptions {
    pub(crate) batch_size: usize,
    pub(crate) prefetch_depth: usize,
    pub(crate) max_batch_delay: Option<Duration>,
    pub(crate) max_in_flight: usize,
    pub(crate) vectorized: bool,
    /// `invoke` may run on the calling thread ([`crate::HandlerBuilder::caller_runs`]).
    pub(crate) caller_runs: bool,
    pub(crate) map_chunks: MapChunks,
    pub(crate) timeout: Option<Duration>,
    pub(crate) placement: crate::placement::Placement,
}

/// One handler's task counters.
#[derive(Debug, Default)]
pub(crate) struct HandlerStats {
    pub(crate) submitted: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    /// From submit to a worker beginning the task.
    pub(crate) wait: crate::metrics::Histogram,
    /// From a worker beginning the task to its end.
    pub(crate) run: crate::metrics::Histogram,
}

impl HandlerStats {
    /// Counts one delivered outcome.
    pub(crate) fn count<R>(&self, outcome: &Result<R>) {
        let counter = match outcome {
            Ok(_) => &self.completed,
            Err(e) if e.is_cancelled() => &self.cancelled,
            Err(e) if e.is_timeout() => &self.timed_out,
            Err(_) => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// (tasks that ran to an outcome of their own, tasks cancelled).
    pub(crate) fn finished_cancelled(&self) -> (u64, u64) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        (
            get(&self.completed) + get(&self.failed) + get(&self.timed_out),
            get(&self.cancelled),
        )
    }
}

/// How [`Handler::map`] groups inputs into tasks (a handler that is not
/// [`vectorized`](crate::HandlerBuilder::vectorized); a vectorized one
/// always submits per input and lets its batches form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MapChunks {
    /// Guided chunks (the default): while the input's length is known from
    /// its `size_hint`, each chunk takes `1 / (4 × workers)` of the inputs
    /// not yet submitted, at least `batch_size` and at most
    /// `window / (2 × workers)`. Chunks start large (few wake-ups, little
    /// per-task overhead) and shrink to `batch_size` towards the end, so
    /// the last ones still spread over every worker. With no known length
    /// (`size_hint` of 0, e.g. a stream), this is [`Batch`](Self::Batch).
    /// So it is in [`Mode::SingleGil`](crate::Mode::SingleGil): one shared
    /// GIL runs one chunk at a time, and long chunks would only make the
    /// workers force each other off it.
    #[default]
    Guided,
    /// Chunks of exactly `batch_size` inputs (one task per input when it
    /// is 1).
    Batch,
}

/// The shared state of one handler.
pub(crate) struct HandlerCore {
    pub(crate) id: u64,
    pub(crate) module: String,
    pub(crate) function: String,
    pub(crate) options: HandlerOptions,
    pub(crate) batcher: Batcher<Box<dyn Task>>,
    pub(crate) permits: Arc<Permits>,
    pub(crate) lane: Arc<Lane>,
    pub(crate) stats: HandlerStats,
}

impl HandlerCore {
    pub(crate) fn new(
        module: &str,
        function: &str,
        options: HandlerOptions,
        lane: Arc<Lane>,
    ) -> HandlerCore {
        HandlerCore {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            module: module.to_string(),
            function: function.to_string(),
            options,
            batcher: Batcher::new(BatchPolicy {
                batch_size: options.batch_size,
                prefetch_depth: options.prefetch_depth,
                max_batch_delay: options.max_batch_delay,
            }),
            permits: Arc::new(Permits::new(options.max_in_flight)),
            lane,
            stats: HandlerStats::default(),
        }
    }

    /// The time to stamp items with, only when a batching delay applies.
    pub(crate) fn clock(&self) -> Option<Instant> {
        self.options.max_batch_delay.map(|_| Instant::now())
    }

    /// `module:function`.
    pub(crate) fn target(&self) -> String {
        format!("{}:{}", self.module, self.function)
    }
}

/// A task's commit: its arguments moved as they are, or a user's closure
/// (which may never return; see `Task::user_commit`).
enum Commit<C> {
    Args(C),
    User(C),
}

/// A Python function (`module:function`) bound to an [`Engine`](crate::Engine).
///
/// Cheap to clone; every clone submits to the same queues. Each worker's
/// interpreter imports the module itself on first use.
///
/// ```no_run
/// # fn main() -> gilpool::Result<()> {
/// let engine = gilpool::Engine::builder().sys_path("python").build()?;
/// let inc = engine.load("gilpool_workloads", "inc")?;
/// let two: i64 = inc.invoke((1,))?;
/// let fut = inc.submit::<_, i64>((41,))?;
/// assert_eq!(fut.wait()?, 42);
/// # assert_eq!(two, 2);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Handler {
    pub(crate) core: Arc<HandlerCore>,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("target", &self.core.target())
            .field("batch_size", &self.core.options.batch_size)
            .field("vectorized", &self.core.options.vectorized)
            .finish()
    }
}

fn from_python<R: FromPython>(obj: Object<'_>) -> Result<R> {
    R::from_python(&obj)
}

impl Handler {
    /// The module name.
    pub fn module(&self) -> &str {
        &self.core.module
    }
    /// The function name.
    pub fn function(&self) -> &str {
        &self.core.function
    }
    /// Tasks per batch (at most).
    pub fn batch_size(&self) -> usize {
        self.core.options.batch_size
    }
    /// Tasks submitted and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.core.permits.in_use()
    }
    /// The bound on [`in_flight`](Self::in_flight).
    pub fn max_in_flight(&self) -> usize {
        self.core.permits.capacity()
    }
    /// The lane the function runs on: [`Placement::Sub`](crate::Placement::Sub)
    /// or [`Placement::Main`](crate::Placement::Main) (never `Auto`).
    pub fn placement(&self) -> crate::placement::Placement {
        match self.core.lane.kind {
            LaneKind::Sub => crate::placement::Placement::Sub,
            LaneKind::Main => crate::placement::Placement::Main,
        }
    }
    /// The deadline each task gets ([`HandlerBuilder::timeout`](crate::HandlerBuilder::timeout)).
    pub fn timeout(&self) -> Option<Duration> {
        self.core.options.timeout
    }
    /// `(items waiting to be batched, batches committed and not started)`.
    pub fn staged(&self) -> (usize, usize) {
        self.core.batcher.counts()
    }

    /// Calls the function and waits for its result. When a worker of the
    /// handler's lane is idle, the call runs on this thread, in that
    /// worker's interpreter ([`HandlerBuilder::caller_runs`](crate::HandlerBuilder::caller_runs));
    /// otherwise it is queued like [`submit`](Self::submit).
    pub fn invoke<A: IntoArgs, R: FromPython + Send + 'static>(&self, args: A) -> Result<R> {
        match caller::run(&self.core, args, from_python::<R>, RESULT_CONVERSION) {
            Ok(out) => out,
            Err((args, _)) => self.submit(args)?.wait(),
        }
    }

    /// Calls the function and converts the result with `convert`, which runs
    /// attached to the interpreter that produced it.
    pub fn invoke_with<A, R, F>(&self, args: A, convert: F) -> Result<R>
    where
        A: IntoArgs,
        R: Send + 'static,
        F: for<'py> FnOnce(Object<'py>) -> Result<R> + Send + 'static,
    {
        match caller::run(&self.core, args, convert, "callback") {
            Ok(out) => out,
            Err((args, convert)) => self.submit_with(move || Ok(args), convert)?.wait(),
        }
    }

    /// Submits a call whose result stays a Python object in the
    /// interpreter that made it: a [`Held`](crate::Held), to pass to
    /// another handler of the same lane as an argument.
    pub fn submit_held<A: IntoArgs>(&self, args: A) -> Result<TaskFuture<crate::Held>> {
        self.submit::<A, crate::Held>(args)
    }

    /// Like [`submit`](Self::submit), with this task's own deadline,
    /// `timeout` from now, instead of the handler's (see
    /// [`HandlerBuilder::timeout`](crate::HandlerBuilder::timeout)).
    ///
    /// ```no_run
    /// # fn main() -> gilpool::Result<()> {
    /// # use std::time::Duration;
    /// let engine = gilpool::Engine::builder().sys_path("python").build()?;
    /// let heavy = engine.load("gilpool_workloads", "heavy")?;
    /// let fut = heavy.submit_deadline::<_, i64>((1_000_000_000,), Duration::from_millis(100))?;
    /// assert!(fut.wait().unwrap_err().is_timeout());
    /// # Ok(()) }
    /// ```
    pub fn submit_deadline<A: IntoArgs, R: FromPython + Send + 'static>(
        &self,
        args: A,
        timeout: Duration,
    ) -> Result<TaskFuture<R>> {
        self.acquire(None)?;
        Ok(self.enqueue_with(
            Commit::Args(move || Ok(args)),
            from_python::<R>,
            RESULT_CONVERSION,
            Some(Deadline::after(timeout)),
        ))
    }

    /// Submits a call; blocks while the handler's in-flight bound is
    /// reached. Fails only when the engine is shut down.
    pub fn submit<A: IntoArgs, R: FromPython + Send + 'static>(
        &self,
        args: A,
    ) -> Result<TaskFuture<R>> {
        self.acquire(None)?;
        Ok(self.enqueue(
            Commit::Args(move || Ok(args)),
            from_python::<R>,
            RESULT_CONVERSION,
        ))
    }

    /// Like [`submit`](Self::submit), but gives up after `timeout` while the
    /// handler is full, handing the arguments back.
    pub fn submit_timeout<A: IntoArgs, R: FromPython + Send + 'static>(
        &self,
        args: A,
        timeout: Duration,
    ) -> Result<TaskFuture<R>, TrySubmitError<A>> {
        match self.acquire(Some(timeout)) {
            Ok(()) => Ok(self.enqueue(
                Commit::Args(move || Ok(args)),
                from_python::<R>,
                RESULT_CONVERSION,
            )),
            Err(e) => Err(TrySubmitError::new(e, args)),
        }
    }

    /// Submits without blocking: when the handler is full the error
    /// [`is_full`](TrySubmitError::is_full) and carries the arguments back.
    pub fn try_submit<A: IntoArgs, R: FromPython + Send + 'static>(
        &self,
        args: A,
    ) -> Result<TaskFuture<R>, TrySubmitError<A>> {
        match self.try_acquire() {
            Ok(()) => Ok(self.enqueue(
                Commit::Args(move || Ok(args)),
                from_python::<R>,
                RESULT_CONVERSION,
            )),
            Err(e) => Err(TrySubmitError::new(e, args)),
        }
    }

    /// Submits a task in two stages: `commit` runs with no GIL held, ahead of
    /// execution (bounded by the handler's `prefetch_depth`), and produces
    /// the arguments; `callback` converts the raw result while attached to
    /// the interpreter that produced it. A panic in either fails this task
    /// only.
    pub fn submit_with<C, P, F, R>(&self, commit: C, callback: F) -> Result<TaskFuture<R>>
    where
        C: FnOnce() -> Result<P> + Send + 'static,
        P: IntoArgs,
        F: for<'py> FnOnce(Object<'py>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.acquire(None)?;
        Ok(self.enqueue(Commit::User(commit), callback, "callback"))
    }

    fn check_detached() -> Result<()> {
        if gilpool_ffi::is_attached() {
            return Err(Error::config(
                "submit from a thread attached to an interpreter (inside a callback): it could block the worker that must make room",
            ));
        }
        Ok(())
    }

    fn acquire(&self, timeout: Option<Duration>) -> Result<()> {
        Self::check_detached()?;
        self.core.permits.acquire(timeout).map_err(acquire_error)
    }

    fn try_acquire(&self) -> Result<()> {
        Self::check_detached()?;
        self.core.permits.try_acquire().map_err(|e| match e {
            AcquireError::Timeout => Error::new(ErrorKind::Full),
            AcquireError::Closed => Error::new(ErrorKind::Shutdown),
        })
    }

    /// With a permit held: wraps the task (with the handler's timeout) and
    /// stages it. `phase` names the callback in panic messages.
    fn enqueue<C, P, F, R>(
        &self,
        commit: Commit<C>,
        callback: F,
        phase: &'static str,
    ) -> TaskFuture<R>
    where
        C: FnOnce() -> Result<P> + Send + 'static,
        P: IntoArgs,
        F: for<'py> FnOnce(Object<'py>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let deadline = self.core.options.timeout.map(Deadline::after);
        self.enqueue_with(commit, callback, phase, deadline)
    }

    fn enqueue_with<C, P, F, R>(
        &self,
        commit: Commit<C>,
        callback: F,
        phase: &'static str,
        deadline: Option<Deadline>,
    ) -> TaskFuture<R>
    where
        C: FnOnce() -> Result<P> + Send + 'static,
        P: IntoArgs,
        F: for<'py> FnOnce(Object<'py>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.core.stats.submitted.fetch_add(1, Ordering::Relaxed);
        let (done, future) = Completer::new(self.core.clone(), deadline);
        let (commit, user) = match commit {
            Commit::Args(c) => (c, false),
            Commit::User(c) => (c, true),
        };
        let task: Box<dyn Task> = Box::new(TypedTask::new(commit, user, callback, phase, done));
        match self.core.batcher.push(task, self.core.clock()) {
            Pushed::Batch(batch) => Lane::publish(&self.core, batch),
            Pushed::Waiting(true) => self.core.lane.pool.wake_all(),
            Pushed::Waiting(false) => {}
        }
        future
    }

    /// Imports the module and looks the function up on one worker of the
    /// lane; the error names what is missing.
    pub(crate) fn resolve(&self) -> Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.core.lane.pool.inject(Job::Resolve {
            handler: self.core.clone(),
            reply: tx,
        });
        rx.recv()
            .unwrap_or_else(|_| Err(Error::new(ErrorKind::Shutdown)))
    }
}

fn acquire_error(e: AcquireError) -> Error {
    match e {
        AcquireError::Timeout => Error::new(ErrorKind::Timeout(
            "the handler stayed full (max_in_flight) for the whole wait".into(),
        )),
        AcquireError::Closed => Error::new(ErrorKind::Shutdown),
    }
}
