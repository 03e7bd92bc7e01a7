//! Tasks (type-erased, as the scheduler moves them) and `TaskFuture`.

use crate::convert::{CallArgs, FromPython, IntoArgs};
use crate::error::{panic_message, Error, ErrorKind, Result};
use crate::sched::cell::CompletionCell;
use crate::sched::permits::Permits;
use gilpool_ffi::{Object, Python};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// One task as the scheduler sees it: committed with no GIL, then run
/// attached to a worker's interpreter.
pub(crate) trait Task: Send {
    /// Runs the commit closure (no GIL held). On failure the task completes
    /// its future with the error and returns `false`.
    fn commit(&mut self) -> bool;
    /// Converts the committed payload into call arguments (attached).
    fn args<'py>(&mut self, py: Python<'py>) -> Result<CallArgs<'py>>;
    /// Delivers the call's outcome: runs the callback (attached) and
    /// completes the future.
    fn finish(self: Box<Self>, result: Result<Object<'_>>);
    /// Completes the future with `err` (any thread, attached or not).
    fn fail(self: Box<Self>, err: Error);
    /// Runs the task attached to the interpreter `func` lives in: by
    /// default one call of `func` with the task's arguments.
    fn execute<'py>(mut self: Box<Self>, py: Python<'py>, func: &Object<'py>) {
        let result = self.args(py).and_then(|a| {
            func.call(&a.positional, a.keywords.as_ref())
                .map_err(Error::from)
        });
        self.finish(result);
    }
}

/// Returns a task's in-flight permit and completes its future, exactly once.
/// Dropped without completing (a cancelled or lost task), it completes the
/// future with a cancellation error: no future is left pending.
pub(crate) struct Completer<R> {
    cell: Option<Arc<CompletionCell<Result<R>>>>,
    permits: Arc<Permits>,
}

impl<R> Completer<R> {
    pub(crate) fn new(permits: Arc<Permits>) -> (Completer<R>, TaskFuture<R>) {
        let cell = Arc::new(CompletionCell::new());
        (
            Completer {
                cell: Some(cell.clone()),
                permits,
            },
            TaskFuture { cell },
        )
    }

    pub(crate) fn complete(mut self, value: Result<R>) {
        self.deliver(value);
    }

    fn deliver(&mut self, value: Result<R>) {
        if let Some(cell) = self.cell.take() {
            // The permit goes back first: a waiter that sees the result must
            // also see the room it frees (`in_flight` counts unfinished tasks).
            self.permits.release();
            let _ = cell.complete(value);
        }
    }
}

impl<R> Drop for Completer<R> {
    fn drop(&mut self) {
        self.deliver(Err(Error::new(ErrorKind::Cancelled)));
    }
}

enum Stage<C, P> {
    Uncommitted(C),
    Committed(P),
    Spent,
}

/// A task with its concrete closures.
pub(crate) struct TypedTask<C, P, F, R> {
    stage: Stage<C, P>,
    callback: Option<F>,
    done: Option<Completer<R>>,
}

impl<C, P, F, R> TypedTask<C, P, F, R> {
    pub(crate) fn new(commit: C, callback: F, done: Completer<R>) -> Self {
        TypedTask {
            stage: Stage::Uncommitted(commit),
            callback: Some(callback),
            done: Some(done),
        }
    }
}

impl<C, P, F, R> Task for TypedTask<C, P, F, R>
where
    C: FnOnce() -> Result<P> + Send,
    P: IntoArgs,
    F: for<'py> FnOnce(Object<'py>) -> Result<R> + Send,
    R: Send,
{
    fn commit(&mut self) -> bool {
        let commit = match std::mem::replace(&mut self.stage, Stage::Spent) {
            Stage::Uncommitted(c) => c,
            other => {
                self.stage = other;
                return true;
            }
        };
        let outcome = catch_unwind(AssertUnwindSafe(commit)).unwrap_or_else(|p| {
            Err(Error::new(ErrorKind::Panic(format!(
                "commit: {}",
                panic_message(&*p)
            ))))
        });
        match outcome {
            Ok(payload) => {
                self.stage = Stage::Committed(payload);
                true
            }
            Err(e) => {
                if let Some(done) = self.done.take() {
                    done.complete(Err(e));
                }
                false
            }
        }
    }

    fn args<'py>(&mut self, py: Python<'py>) -> Result<CallArgs<'py>> {
        match std::mem::replace(&mut self.stage, Stage::Spent) {
            Stage::Committed(p) => p.into_args(py),
            Stage::Uncommitted(c) => {
                // Not committed yet (cannot happen through the engine, which
                // commits before publishing); commit now rather than fail.
                self.stage = Stage::Uncommitted(c);
                if !self.commit() {
                    return Err(Error::new(ErrorKind::Cancelled));
                }
                self.args(py)
            }
            Stage::Spent => Err(Error::conversion("task arguments were already used")),
        }
    }

    fn finish(mut self: Box<Self>, result: Result<Object<'_>>) {
        let Some(done) = self.done.take() else { return };
        let value = match (result, self.callback.take()) {
            (Ok(obj), Some(cb)) => {
                catch_unwind(AssertUnwindSafe(move || cb(obj))).unwrap_or_else(|p| {
                    Err(Error::new(ErrorKind::Panic(format!(
                        "callback: {}",
                        panic_message(&*p)
                    ))))
                })
            }
            (Ok(_), None) => Err(Error::conversion("task callback already used")),
            (Err(e), _) => Err(e),
        };
        done.complete(value);
    }

    fn fail(mut self: Box<Self>, err: Error) {
        if let Some(done) = self.done.take() {
            done.complete(Err(err));
        }
    }
}

/// Many calls of one function as one task: the fast path of
/// [`Handler::map`](crate::Handler::map). One allocation, one permit and one
/// completion for the whole chunk; each input is converted, called and its
/// result converted inside the worker's interpreter.
pub(crate) struct ChunkTask<A, R> {
    inputs: Vec<A>,
    done: Option<Completer<Vec<Result<R>>>>,
}

impl<A, R> ChunkTask<A, R> {
    pub(crate) fn new(inputs: Vec<A>, done: Completer<Vec<Result<R>>>) -> Self {
        ChunkTask {
            inputs,
            done: Some(done),
        }
    }
}

impl<A: IntoArgs, R: FromPython + Send> Task for ChunkTask<A, R> {
    fn commit(&mut self) -> bool {
        true
    }

    fn args<'py>(&mut self, _py: Python<'py>) -> Result<CallArgs<'py>> {
        Err(Error::config("a chunk of map inputs is not one call"))
    }

    fn finish(self: Box<Self>, result: Result<Object<'_>>) {
        let err = result
            .err()
            .unwrap_or_else(|| Error::config("a chunk of map inputs is not one call"));
        self.fail(err);
    }

    fn fail(mut self: Box<Self>, err: Error) {
        if let Some(done) = self.done.take() {
            done.complete(Err(err));
        }
    }

    fn execute<'py>(mut self: Box<Self>, py: Python<'py>, func: &Object<'py>) {
        let out = self
            .inputs
            .drain(..)
            .map(|a| {
                let args = a.into_args(py)?;
                let obj = func.call(&args.positional, args.keywords.as_ref())?;
                R::from_python(&obj)
            })
            .collect();
        if let Some(done) = self.done.take() {
            done.complete(Ok(out));
        }
    }
}

/// The result of a submitted task.
///
/// Await it (it implements [`Future`]), or block with [`wait`](Self::wait) /
/// [`wait_timeout`](Self::wait_timeout). Every future resolves: with the
/// result, the task's error, or a shutdown/cancellation error.
#[derive(Debug)]
pub struct TaskFuture<R> {
    cell: Arc<CompletionCell<Result<R>>>,
}

/// How long a waiter spins before it blocks: a result that arrives within
/// this window is picked up without a sleep/wake round trip.
pub(crate) const WAIT_SPIN: Duration = Duration::from_micros(20);

impl<R> TaskFuture<R> {
    /// Whether the result is ready.
    pub fn is_ready(&self) -> bool {
        self.cell.is_complete()
    }

    /// Blocks until the task finished; returns its result.
    pub fn wait(self) -> Result<R> {
        self.wait_spinning(true)
    }

    /// [`wait`](Self::wait), spinning first only when `spin` is set. A
    /// caller that knows results arrive slowly (long tasks) skips the spin,
    /// which would only take CPU from the workers.
    pub(crate) fn wait_spinning(self, spin: bool) -> Result<R> {
        if spin {
            self.spin();
        }
        self.cell
            .wait()
            .unwrap_or_else(|| Err(Error::new(ErrorKind::Consumed)))
    }

    /// Blocks at most `timeout`. `None` if the task has not finished (call
    /// again later); `Some(result)` once, then `Some(Err(..))` if called again.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<Result<R>> {
        match self.cell.wait_timeout(timeout) {
            Ok(Some(v)) => Some(v),
            Ok(None) => Some(Err(Error::new(ErrorKind::Consumed))),
            Err(()) => None,
        }
    }

    fn spin(&self) {
        let start = Instant::now();
        while !self.cell.is_complete() && start.elapsed() < WAIT_SPIN {
            std::hint::spin_loop();
        }
    }
}

impl<R> Future for TaskFuture<R> {
    type Output = Result<R>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<R>> {
        self.cell
            .poll(cx.waker())
            .map(|v| v.unwrap_or_else(|| Err(Error::new(ErrorKind::Consumed))))
    }
}
