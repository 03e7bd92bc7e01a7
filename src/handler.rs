//! `Handler`: a Python function bound to an engine lane, and its calls.

use crate::convert::{FromPython, IntoArgs};
use crate::error::{Error, ErrorKind, Result, TrySubmitError};
use crate::lane::{Job, Lane, LaneKind};
use crate::sched::batcher::{BatchPolicy, Batcher, Pushed};
use crate::sched::permits::{AcquireError, Permits};
use crate::task::{ChunkTask, Completer, Deadline, Task, TaskFuture, TypedTask, WAIT_SPIN};
use gilpool_ffi::Object;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Share of the not-yet-submitted inputs a guided chunk takes, per worker.
const GUIDED_SHARE: usize = 4;

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

    /// Calls the function and waits for its result.
    pub fn invoke<A: IntoArgs, R: FromPython + Send + 'static>(&self, args: A) -> Result<R> {
        self.submit(args)?.wait()
    }

    /// Calls the function and converts the result with `convert`, which runs
    /// attached to the interpreter that produced it.
    pub fn invoke_with<A, R, F>(&self, args: A, convert: F) -> Result<R>
    where
        A: IntoArgs,
        R: Send + 'static,
        F: for<'py> FnOnce(Object<'py>) -> Result<R> + Send + 'static,
    {
        self.submit_with(move || Ok(args), convert)?.wait()
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
            move || Ok(args),
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
        Ok(self.enqueue(move || Ok(args), from_python::<R>, RESULT_CONVERSION))
    }

    /// Like [`submit`](Self::submit), but gives up after `timeout` while the
    /// handler is full, handing the arguments back.
    pub fn submit_timeout<A: IntoArgs, R: FromPython + Send + 'static>(
        &self,
        args: A,
        timeout: Duration,
    ) -> Result<TaskFuture<R>, TrySubmitError<A>> {
        match self.acquire(Some(timeout)) {
            Ok(()) => Ok(self.enqueue(move || Ok(args), from_python::<R>, RESULT_CONVERSION)),
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
            Ok(()) => Ok(self.enqueue(move || Ok(args), from_python::<R>, RESULT_CONVERSION)),
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
        Ok(self.enqueue(commit, callback, "callback"))
    }

    /// Runs the function over `inputs`, yielding results in input order.
    /// At most `window` inputs (default: the in-flight bound, at most 4096)
    /// are in flight at once, so memory stays bounded for any input length.
    ///
    /// Unless the handler is vectorized, inputs travel in chunks: one task,
    /// one permit and one completion per chunk, idle workers stealing whole
    /// chunks. By default the chunks are guided ([`MapChunks::Guided`]):
    /// large while much input is left, `batch_size` at the end;
    /// [`MapChunks::Batch`] makes them exactly `batch_size`. A chunk's items
    /// fail or succeed one by one; results still come in input order, a
    /// chunk's all at once.
    pub fn map<I, A, R>(&self, inputs: I) -> MapIter<I::IntoIter, R>
    where
        I: IntoIterator<Item = A>,
        A: IntoArgs,
        R: FromPython + Send + 'static,
    {
        let window = self.max_in_flight().clamp(1, 4096);
        self.map_window(inputs, window)
    }

    /// [`map`](Self::map) with an explicit window (in inputs).
    pub fn map_window<I, A, R>(&self, inputs: I, window: usize) -> MapIter<I::IntoIter, R>
    where
        I: IntoIterator<Item = A>,
        A: IntoArgs,
        R: FromPython + Send + 'static,
    {
        MapIter {
            chunking: Chunking::new(self, window),
            handler: self.clone(),
            inputs: inputs.into_iter(),
            queued: 0,
            pending: VecDeque::new(),
            ready: VecDeque::new(),
            spin: true,
        }
    }

    /// [`map`](Self::map) for async callers: a [`Stream`](futures_core::Stream)
    /// of the results in input order, with at most `window` inputs in
    /// flight (the same chunks, the same errors per item). Polling never
    /// blocks: when the handler is full it waits for the oldest result.
    ///
    /// ```no_run
    /// # async fn f(h: gilpool::Handler) -> gilpool::Result<()> {
    /// use std::future::poll_fn;
    /// use std::pin::Pin;
    /// use futures_core::Stream;
    /// let mut results = h.map_stream::<_, _, i64>((0..1000i64).map(|i| (i,)), 256);
    /// while let Some(r) = poll_fn(|cx| Pin::new(&mut results).poll_next(cx)).await {
    ///     println!("{}", r?);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn map_stream<I, A, R>(&self, inputs: I, window: usize) -> MapStream<I::IntoIter, A, R>
    where
        I: IntoIterator<Item = A>,
        A: IntoArgs,
        R: FromPython + Send + 'static,
    {
        MapStream {
            chunking: Chunking::new(self, window),
            handler: self.clone(),
            inputs: inputs.into_iter(),
            held_back: None,
            queued: 0,
            pending: VecDeque::new(),
            ready: VecDeque::new(),
        }
    }

    /// A chunk task if the handler has room now; the inputs back if not.
    fn try_submit_chunk<A, R>(
        &self,
        inputs: Vec<A>,
    ) -> std::result::Result<Result<ChunkFuture<R>>, Vec<A>>
    where
        A: IntoArgs,
        R: FromPython + Send + 'static,
    {
        let home = inputs.iter().find_map(IntoArgs::home);
        let place = match self.core.lane.place(home, &self.core.target()) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        match self.try_acquire() {
            Ok(()) => {}
            Err(e) if e.is_full() => return Err(inputs),
            Err(e) => return Ok(Err(e)),
        }
        Ok(Ok(self.enqueue_chunk(inputs, place)))
    }

    /// With a permit held: the chunk task, published where it may run.
    fn enqueue_chunk<A, R>(
        &self,
        inputs: Vec<A>,
        place: Option<usize>,
    ) -> TaskFuture<Vec<Result<R>>>
    where
        A: IntoArgs,
        R: FromPython + Send + 'static,
    {
        self.core.stats.submitted.fetch_add(1, Ordering::Relaxed);
        let (done, future) = Completer::new(self.core.clone(), None);
        let job = Job::Chunk {
            handler: self.core.clone(),
            chunk: Box::new(ChunkTask::new(inputs, done)),
        };
        match place {
            None => self.core.lane.pool.inject(job),
            Some(slot) => self.core.lane.pool.inject_to(slot, job),
        }
        future
    }

    /// Submits `inputs` as one chunk task (see [`map`](Self::map)). Chunks
    /// skip the batcher: each is already a batch, and has nothing to commit.
    fn submit_chunk<A, R>(&self, inputs: Vec<A>) -> Result<TaskFuture<Vec<Result<R>>>>
    where
        A: IntoArgs,
        R: FromPython + Send + 'static,
    {
        let home = inputs.iter().find_map(IntoArgs::home);
        let place = self.core.lane.place(home, &self.core.target())?;
        self.acquire(None)?;
        Ok(self.enqueue_chunk(inputs, place))
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
    fn enqueue<C, P, F, R>(&self, commit: C, callback: F, phase: &'static str) -> TaskFuture<R>
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
        commit: C,
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
        let task: Box<dyn Task> = Box::new(TypedTask::new(commit, callback, phase, done));
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

/// The future of a `map` chunk: one result per input.
type ChunkFuture<R> = TaskFuture<Vec<Result<R>>>;

/// Results of [`Handler::map`], in input order.
pub struct MapIter<I, R> {
    handler: Handler,
    inputs: I,
    chunking: Chunking,
    /// Inputs submitted and not yet yielded.
    queued: usize,
    pending: VecDeque<Pending<R>>,
    ready: VecDeque<Result<R>>,
    /// Whether the next wait spins first: only while results come within
    /// the spin window. When tasks are long, the waiting thread would spin
    /// on a core the workers need, once per result.
    spin: bool,
}

enum Pending<R> {
    One(Result<TaskFuture<R>>),
    Chunk(Result<TaskFuture<Vec<Result<R>>>>, usize),
}

impl<I, R> std::fmt::Debug for MapIter<I, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapIter")
            .field("handler", &self.handler)
            .field("window", &self.chunking.window)
            .field("chunk", &self.chunking.chunk)
            .field("queued", &self.queued)
            .finish()
    }
}

/// How `map` cuts its input into tasks (shared by [`MapIter`] and
/// [`MapStream`]).
#[derive(Debug, Clone, Copy)]
struct Chunking {
    window: usize,
    /// `batch_size` (1 for per-input tasks).
    chunk: usize,
    /// Guided chunk sizes (see [`MapChunks::Guided`]).
    guided: bool,
    workers: usize,
}

impl Chunking {
    fn new(handler: &Handler, window: usize) -> Chunking {
        let opts = handler.core.options;
        // Vectorized handlers batch per input; so do handlers with a
        // timeout, where every input gets its own deadline.
        let per_input = opts.vectorized || opts.timeout.is_some();
        Chunking {
            window: window.max(1),
            chunk: if per_input { 1 } else { opts.batch_size },
            // One shared GIL runs one chunk at a time whatever their size:
            // long chunks there only make the workers force each other off
            // the GIL every switch interval.
            guided: !per_input
                && opts.map_chunks == MapChunks::Guided
                && handler.core.lane.kind == LaneKind::Sub,
            workers: handler.core.lane.pool.workers().max(1),
        }
    }

    /// Inputs in the next task: `batch_size`, or the guided share of the
    /// `left` inputs, never more than the window has room for (callers ask
    /// only while `queued < window`, so there is room for one).
    fn len(&self, queued: usize, left: usize) -> usize {
        let room = self.window - queued;
        let mut len = self.chunk;
        if self.guided {
            let share = left.div_ceil(GUIDED_SHARE * self.workers);
            let cap = (self.window / (2 * self.workers)).max(1);
            len = len.max(share.min(cap));
        }
        len.clamp(1, room)
    }
}

impl<I: Iterator, R> MapIter<I, R> {
    fn next_chunk_len(&self) -> usize {
        self.chunking.len(self.queued, self.inputs.size_hint().0)
    }
}

impl<I, A, R> Iterator for MapIter<I, R>
where
    I: Iterator<Item = A>,
    A: IntoArgs,
    R: FromPython + Send + 'static,
{
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        if let Some(r) = self.ready.pop_front() {
            self.queued -= 1;
            return Some(r);
        }
        while self.queued < self.chunking.window {
            let len = self.next_chunk_len();
            if len <= 1 {
                let Some(args) = self.inputs.next() else {
                    break;
                };
                self.pending
                    .push_back(Pending::One(self.handler.submit(args)));
                self.queued += 1;
            } else {
                let batch: Vec<A> = self.inputs.by_ref().take(len).collect();
                if batch.is_empty() {
                    break;
                }
                let n = batch.len();
                self.pending
                    .push_back(Pending::Chunk(self.handler.submit_chunk(batch), n));
                self.queued += n;
            }
        }
        let spin = self.spin;
        let started = Instant::now();
        let out = match self.pending.pop_front()? {
            Pending::One(f) => {
                self.queued -= 1;
                Some(f.and_then(|f| f.wait_spinning(spin)))
            }
            Pending::Chunk(f, n) => {
                match f.and_then(|f| f.wait_spinning(spin)) {
                    Ok(results) => self.ready.extend(results),
                    Err(e) => self.ready.extend((0..n).map(|_| Err(e.clone()))),
                }
                self.queued -= 1;
                self.ready.pop_front()
            }
        };
        self.spin = started.elapsed() <= WAIT_SPIN;
        out
    }
}

/// Results of [`Handler::map_stream`], in input order.
pub struct MapStream<I, A, R> {
    handler: Handler,
    inputs: I,
    chunking: Chunking,
    /// Inputs taken from `inputs` that found the handler full.
    held_back: Option<Vec<A>>,
    /// Inputs submitted and not yet yielded.
    queued: usize,
    pending: VecDeque<Pending<R>>,
    ready: VecDeque<Result<R>>,
}

impl<I, A, R> std::fmt::Debug for MapStream<I, A, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapStream")
            .field("handler", &self.handler)
            .field("window", &self.chunking.window)
            .field("queued", &self.queued)
            .finish()
    }
}

impl<I, A, R> Unpin for MapStream<I, A, R> {}

impl<I, A, R> MapStream<I, A, R>
where
    I: Iterator<Item = A>,
    A: IntoArgs,
    R: FromPython + Send + 'static,
{
    /// Submits while the window has room and the handler takes work.
    fn fill(&mut self) {
        while self.queued < self.chunking.window {
            let batch = match self.held_back.take() {
                Some(b) => b,
                None => {
                    let len = self.chunking.len(self.queued, self.inputs.size_hint().0);
                    let b: Vec<A> = self.inputs.by_ref().take(len).collect();
                    if b.is_empty() {
                        return;
                    }
                    b
                }
            };
            let n = batch.len();
            if n == 1 {
                let mut batch = batch;
                let args = batch.pop().expect("one input");
                match self.handler.try_submit::<A, R>(args) {
                    Ok(f) => self.pending.push_back(Pending::One(Ok(f))),
                    Err(e) if e.is_full() => {
                        self.held_back = Some(vec![e.into_inner()]);
                        return;
                    }
                    Err(e) => self.pending.push_back(Pending::One(Err(e.error().clone()))),
                }
            } else {
                match self.handler.try_submit_chunk::<A, R>(batch) {
                    Ok(f) => self.pending.push_back(Pending::Chunk(f, n)),
                    Err(back) => {
                        self.held_back = Some(back);
                        return;
                    }
                }
            }
            self.queued += n;
        }
    }
}

impl<I, A, R> futures_core::Stream for MapStream<I, A, R>
where
    I: Iterator<Item = A>,
    A: IntoArgs,
    R: FromPython + Send + 'static,
{
    type Item = Result<R>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<R>>> {
        use std::future::Future;
        use std::task::Poll;
        let this = &mut *self;
        loop {
            if let Some(r) = this.ready.pop_front() {
                this.queued -= 1;
                return Poll::Ready(Some(r));
            }
            this.fill();
            let Some(front) = this.pending.front_mut() else {
                // Nothing in flight: the input is exhausted (or the handler
                // is full with someone else's work: try again when woken).
                return if this.held_back.is_some() {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                } else {
                    Poll::Ready(None)
                };
            };
            match front {
                Pending::One(Ok(f)) => match std::pin::Pin::new(f).poll(cx) {
                    Poll::Ready(r) => {
                        this.pending.pop_front();
                        this.ready.push_back(r);
                    }
                    Poll::Pending => return Poll::Pending,
                },
                Pending::One(Err(_)) => {
                    if let Some(Pending::One(Err(e))) = this.pending.pop_front() {
                        this.ready.push_back(Err(e));
                    }
                }
                Pending::Chunk(Ok(f), _) => match std::pin::Pin::new(f).poll(cx) {
                    Poll::Ready(r) => {
                        let n = match this.pending.pop_front() {
                            Some(Pending::Chunk(_, n)) => n,
                            _ => 0,
                        };
                        // Each input is counted off `queued` when it is yielded.
                        match r {
                            Ok(items) => this.ready.extend(items),
                            Err(e) => this.ready.extend((0..n).map(|_| Err(e.clone()))),
                        }
                    }
                    Poll::Pending => return Poll::Pending,
                },
                Pending::Chunk(Err(_), _) => {
                    if let Some(Pending::Chunk(Err(e), n)) = this.pending.pop_front() {
                        this.ready.extend((0..n).map(|_| Err(e.clone())));
                    }
                }
            }
        }
    }
}
