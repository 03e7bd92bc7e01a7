//! `Handler::map` and `Handler::map_stream`: inputs cut into chunk tasks
//! within a bounded window, results in input order. [`MapIter`] blocks for
//! the oldest task, [`MapStream`] polls it; both keep their window in one
//! `InOrder`.

use super::{Handler, MapChunks};
use crate::convert::{FromPython, IntoArgs};
use crate::error::Result;
use crate::lane::{Job, LaneKind};
use crate::task::{ChunkTask, Completer, TaskFuture, WAIT_SPIN};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Share of the not-yet-submitted inputs a guided chunk takes, per worker.
const GUIDED_SHARE: usize = 4;

impl Handler {
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
            window: InOrder::new(self, inputs.into_iter(), window),
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
            window: InOrder::new(self, inputs.into_iter(), window),
            held_back: None,
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
}

/// The future of a `map` chunk: one result per input.
type ChunkFuture<R> = TaskFuture<Vec<Result<R>>>;

/// Results of [`Handler::map`], in input order.
pub struct MapIter<I, R> {
    window: InOrder<I, R>,
    /// Whether the next wait spins first: only while results come within
    /// the spin window. When tasks are long, the waiting thread would spin
    /// on a core the workers need, once per result.
    spin: bool,
}

/// A task of the window, oldest first; a failed submission keeps its
/// place, its error its outcome.
enum Pending<R> {
    One(Result<TaskFuture<R>>),
    Chunk(Result<ChunkFuture<R>>, usize),
}

/// What a [`Pending`] task resolved to.
enum Done<R> {
    One(Result<R>),
    Chunk(Result<Vec<Result<R>>>, usize),
}

impl<R> Pending<R> {
    /// Inputs the task holds.
    fn inputs(&self) -> usize {
        match self {
            Pending::One(_) => 1,
            Pending::Chunk(_, n) => *n,
        }
    }

    /// Blocks until the task resolved (`spin`: polling first, see
    /// `TaskFuture::wait_more`); a failed submission resolves at once.
    fn wait(self, spin: bool) -> Done<R> {
        match self {
            Pending::One(f) => Done::One(f.and_then(|f| f.wait_more(spin))),
            Pending::Chunk(f, n) => Done::Chunk(f.and_then(|f| f.wait_more(spin)), n),
        }
    }
}

impl<I, R> std::fmt::Debug for MapIter<I, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapIter")
            .field("handler", &self.window.handler)
            .field("window", &self.window.chunking.window)
            .field("chunk", &self.window.chunking.chunk)
            .field("queued", &self.window.queued)
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

/// The in-order window of both `map` fronts: tasks submitted while fewer
/// than `window` inputs are in flight, kept oldest first; the oldest
/// one's results move to `ready` when it resolves, and are yielded from
/// there. Each input counts in `queued` from its submission until its
/// result is yielded, so the window bounds results not yet taken too.
struct InOrder<I, R> {
    handler: Handler,
    inputs: I,
    chunking: Chunking,
    /// Inputs submitted and not yet yielded.
    queued: usize,
    pending: VecDeque<Pending<R>>,
    ready: VecDeque<Result<R>>,
}

impl<I, R> InOrder<I, R> {
    fn new(handler: &Handler, inputs: I, window: usize) -> Self {
        InOrder {
            chunking: Chunking::new(handler, window),
            handler: handler.clone(),
            inputs,
            queued: 0,
            pending: VecDeque::new(),
            ready: VecDeque::new(),
        }
    }

    /// Whether another input may be submitted.
    fn has_room(&self) -> bool {
        self.queued < self.chunking.window
    }

    /// Queues a task just submitted (or whose submission failed).
    fn push(&mut self, task: Pending<R>) {
        self.queued += task.inputs();
        self.pending.push_back(task);
    }

    /// The next result in input order, if the oldest task gave it already.
    fn pop_ready(&mut self) -> Option<Result<R>> {
        let r = self.ready.pop_front()?;
        self.queued -= 1;
        Some(r)
    }

    /// Moves the results of the oldest task, taken off `pending`, to
    /// `ready`: a chunk's error once per input.
    fn settle(&mut self, done: Done<R>) {
        match done {
            Done::One(r) => self.ready.push_back(r),
            // The chunk's own buffer becomes the queue when it is empty
            // (no copy; the usual case, as a chunk's results are all
            // taken before the next is waited for).
            Done::Chunk(Ok(items), _) if self.ready.is_empty() => self.ready = items.into(),
            Done::Chunk(Ok(items), _) => self.ready.extend(items),
            Done::Chunk(Err(e), n) => self.ready.extend((0..n).map(|_| Err(e.clone()))),
        }
    }
}

impl<I: Iterator, R> InOrder<I, R> {
    /// Inputs in the next task (see [`Chunking::len`]).
    fn next_len(&self) -> usize {
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
        let w = &mut self.window;
        if let Some(r) = w.pop_ready() {
            return Some(r);
        }
        while w.has_room() {
            let len = w.next_len();
            if len <= 1 {
                let Some(args) = w.inputs.next() else {
                    break;
                };
                let f = w.handler.submit(args);
                w.push(Pending::One(f));
            } else {
                let batch: Vec<A> = w.inputs.by_ref().take(len).collect();
                if batch.is_empty() {
                    break;
                }
                let n = batch.len();
                let f = w.handler.submit_chunk(batch);
                w.push(Pending::Chunk(f, n));
            }
        }
        let spin = self.spin;
        let started = Instant::now();
        let done = w.pending.pop_front()?.wait(spin);
        w.settle(done);
        self.spin = started.elapsed() <= WAIT_SPIN;
        self.window.pop_ready()
    }
}

/// Results of [`Handler::map_stream`], in input order.
pub struct MapStream<I, A, R> {
    window: InOrder<I, R>,
    /// Inputs taken from `inputs` that found the handler full.
    held_back: Option<Vec<A>>,
}

impl<I, A, R> std::fmt::Debug for MapStream<I, A, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapStream")
            .field("handler", &self.window.handler)
            .field("window", &self.window.chunking.window)
            .field("queued", &self.window.queued)
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
        let w = &mut self.window;
        while w.has_room() {
            let batch = match self.held_back.take() {
                Some(b) => b,
                None => {
                    let len = w.next_len();
                    let b: Vec<A> = w.inputs.by_ref().take(len).collect();
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
                match w.handler.try_submit::<A, R>(args) {
                    Ok(f) => w.push(Pending::One(Ok(f))),
                    Err(e) if e.is_full() => {
                        self.held_back = Some(vec![e.into_inner()]);
                        return;
                    }
                    Err(e) => w.push(Pending::One(Err(e.error().clone()))),
                }
            } else {
                match w.handler.try_submit_chunk::<A, R>(batch) {
                    Ok(f) => w.push(Pending::Chunk(f, n)),
                    Err(back) => {
                        self.held_back = Some(back);
                        return;
                    }
                }
            }
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
            if let Some(r) = this.window.pop_ready() {
                return Poll::Ready(Some(r));
            }
            this.fill();
            let w = &mut this.window;
            let Some(front) = w.pending.front_mut() else {
                // Nothing in flight: the input is exhausted (or the handler
                // is full with someone else's work: try again when woken).
                return if this.held_back.is_some() {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                } else {
                    Poll::Ready(None)
                };
            };
            let done = match front {
                Pending::One(Ok(f)) => match std::pin::Pin::new(f).poll(cx) {
                    Poll::Ready(r) => Some(Done::One(r)),
                    Poll::Pending => return Poll::Pending,
                },
                Pending::Chunk(Ok(f), n) => {
                    let n = *n;
                    match std::pin::Pin::new(f).poll(cx) {
                        Poll::Ready(r) => Some(Done::Chunk(r, n)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                // A failed submission: `wait` gives its error at once.
                Pending::One(Err(_)) | Pending::Chunk(Err(_), _) => None,
            };
            let front = w.pending.pop_front().expect("the front task");
            w.settle(done.unwrap_or_else(|| front.wait(false)));
        }
    }
}
