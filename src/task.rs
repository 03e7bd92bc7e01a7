//! Tasks (type-erased, as the scheduler moves them), their shared state,
//! and `TaskFuture`.
//!
//! Every task has one [`Shared`] cell, reached by its future, its worker
//! and (for deadlines and cancellation) the watchdog. It holds the result
//! slot, a `delivered` flag that makes completion exactly-once whoever
//! completes first (the worker, the watchdog, `cancel`, shutdown), and a
//! run state: `QUEUED` until a worker begins the task, `RUNNING` after,
//! `STOPPED` when it was cancelled or expired before it began. The worker
//! and a canceller race on `QUEUED` with a compare-and-swap, so a task
//! stopped before it starts never runs.

use crate::convert::{CallArgs, IntoArgs};
use crate::error::{panic_message, Error, ErrorKind, Result};
use crate::handler::HandlerCore;
use crate::metrics::Stamp;
use crate::sched::cell::CompletionCell;
use crate::watchdog::{Reason, RunCtx};
use gilpool_ffi::{Object, Python};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

mod chunk;

pub(crate) use chunk::{Chunk, ChunkTask, Loops, LOOPS_SOURCE};

const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const STOPPED: u8 = 2;

/// A task's deadline: when, and the timeout it came from (for messages).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    pub(crate) at: Instant,
    pub(crate) timeout: Duration,
}

impl Deadline {
    pub(crate) fn after(timeout: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + timeout,
            timeout,
        }
    }
}

/// What the watchdog, shutdown and `cancel` can do to a task without
/// knowing its types.
pub(crate) trait Control: Send + Sync {
    /// A worker begins the task: `false` if it was stopped first.
    fn begin(&self) -> bool;
    /// Stops a task that has not begun, completing it with `err`.
    fn stop_queued(&self, err: Error) -> bool;
    /// Completes the future with `err` unless it is complete.
    fn resolve(&self, err: Error) -> bool;
    /// Whether the future is complete.
    fn is_resolved(&self) -> bool;
    /// The task's deadline, if it has one.
    fn deadline(&self) -> Option<Deadline>;
    /// When it was submitted (`None` with metrics off: no clock read).
    fn submitted(&self) -> Option<Stamp>;
}

/// The state one task's future, worker and watchdog share.
pub(crate) struct Shared<R> {
    cell: CompletionCell<Result<R>>,
    delivered: AtomicBool,
    state: AtomicU8,
    deadline: Option<Deadline>,
    submitted: Option<Stamp>,
    handler: Arc<HandlerCore>,
}

impl<R> Shared<R> {
    /// Completes the future unless something completed it already; returns
    /// the handler's in-flight permit and counts the outcome.
    fn deliver(&self, value: Result<R>) -> bool {
        if self.delivered.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.handler.stats.count(&value);
        // The permit goes back first: a waiter that sees the result must
        // also see the room it frees (`in_flight` counts unfinished tasks).
        self.handler.permits.release();
        let _ = self.cell.complete(value);
        true
    }
}

impl<R: Send> Control for Shared<R> {
    fn begin(&self) -> bool {
        self.state
            .compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn stop_queued(&self, err: Error) -> bool {
        self.state
            .compare_exchange(QUEUED, STOPPED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            && self.deliver(Err(err))
    }

    fn resolve(&self, err: Error) -> bool {
        self.deliver(Err(err))
    }

    fn is_resolved(&self) -> bool {
        self.delivered.load(Ordering::Acquire)
    }

    fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }

    fn submitted(&self) -> Option<Stamp> {
        self.submitted
    }
}

/// Completes a task's future, exactly once. Dropped without completing (a
/// cancelled or lost task), it completes the future with a cancellation
/// error, or, while its thread unwinds from a panic, with an error saying
/// the worker lost it: no future is left pending.
pub(crate) struct Completer<R> {
    shared: Arc<Shared<R>>,
}

impl<R: Send + 'static> Completer<R> {
    /// A completer and its future; with a deadline, the watchdog learns of it.
    pub(crate) fn new(
        handler: Arc<HandlerCore>,
        deadline: Option<Deadline>,
    ) -> (Completer<R>, TaskFuture<R>) {
        let shared = Arc::new(Shared {
            cell: CompletionCell::new(),
            delivered: AtomicBool::new(false),
            state: AtomicU8::new(QUEUED),
            deadline,
            submitted: handler.lane.config.metrics.then(Stamp::now),
            handler,
        });
        if let Some(d) = deadline {
            let weak: std::sync::Weak<dyn Control> =
                Arc::downgrade(&(shared.clone() as Arc<dyn Control>));
            shared.handler.lane.watch.deadline(d.at, weak);
        }
        (
            Completer {
                shared: shared.clone(),
            },
            TaskFuture { shared },
        )
    }
}

impl<R: Send + 'static> Completer<R> {
    pub(crate) fn complete(&self, value: Result<R>) {
        self.shared.deliver(value);
    }

    pub(crate) fn control(&self) -> Arc<dyn Control> {
        self.shared.clone()
    }

    /// The error for an interrupt of this task's run.
    fn interrupted(&self, reason: Reason) -> Error {
        reason.error(self.shared.deadline, false)
    }
}

impl<R> Drop for Completer<R> {
    fn drop(&mut self) {
        if self.shared.delivered.load(Ordering::Acquire) {
            return;
        }
        let err = if std::thread::panicking() {
            Error::new(ErrorKind::WorkerLost(
                "the worker running it panicked; the panic was contained and the worker goes on"
                    .into(),
            ))
        } else {
            Error::new(ErrorKind::Cancelled(
                "the task was cancelled before it ran".into(),
            ))
        };
        self.shared.deliver(Err(err));
    }
}

/// Runs `f`, turning a panic into an [`Error::is_panic`] error naming `phase`.
pub(crate) fn contain<T>(phase: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(panicked(phase, &*p)))
}

/// `f` of every item, in order, a panic being the error of the item whose
/// call raised it, as [`contain`] of each would give. One `catch_unwind`
/// covers the whole run (a panic resumes it after that item), where one
/// per item costs a few ns each on a `map` chunk's hot loop.
pub(crate) fn contain_each<T, U>(
    phase: &str,
    items: impl IntoIterator<Item = T>,
    mut f: impl FnMut(T) -> Result<U>,
) -> Vec<Result<U>> {
    let mut items = items.into_iter();
    let mut out = Vec::with_capacity(items.size_hint().0);
    loop {
        // `f` takes its item before it can panic, so after a panic `out`
        // is one short of the items taken: that one's result is the panic.
        let run = catch_unwind(AssertUnwindSafe(|| {
            for item in items.by_ref() {
                let r = f(item);
                out.push(r);
            }
        }));
        match run {
            Ok(()) => return out,
            Err(p) => out.push(Err(panicked(phase, &*p))),
        }
    }
}

fn panicked(phase: &str, payload: &(dyn std::any::Any + Send)) -> Error {
    Error::new(ErrorKind::Panic(format!(
        "{phase}: {}",
        panic_message(payload)
    )))
}

/// One call's task as the scheduler sees it: committed with no GIL, then
/// run attached to a worker's interpreter.
pub(crate) trait Task: Send {
    /// Runs the commit closure (no GIL held). On failure the task completes
    /// its future with the error and returns `false`.
    fn commit(&mut self) -> bool;
    /// Whether its commit runs a user's closure (`submit_with`), which may
    /// never return; a plain `submit` only moves its arguments.
    fn user_commit(&self) -> bool;
    /// The task's shared state.
    fn control(&self) -> Arc<dyn Control>;
    /// Converts the committed payload into call arguments (attached). A
    /// panic in the conversion is an error of this task.
    fn args<'py>(&mut self, py: Python<'py>) -> Result<CallArgs<'py>>;
    /// Delivers the call's outcome: runs the callback (attached) and
    /// completes the future.
    fn finish(self: Box<Self>, result: Result<Object<'_>>);
    /// Completes the future with `err` (any thread, attached or not).
    fn fail(self: Box<Self>, err: Error);
    /// The error for an interrupt of this task's run.
    fn interrupted(&self, reason: Reason) -> Error;
    /// The interpreter its committed arguments are bound to, if any.
    fn home(&self) -> Option<crate::held::Home>;
}

/// Runs one task: one call of `func` with its arguments, then its callback.
pub(crate) fn execute<'py>(
    mut task: Box<dyn Task>,
    py: Python<'py>,
    func: &Object<'py>,
    ctx: &RunCtx<'_>,
) {
    let result = task.args(py).and_then(|a| {
        func.call(&a.positional, a.keywords.as_ref())
            .map_err(Error::from)
    });
    let result = match ctx.returned(py, 1) {
        Some(reason) => Err(task.interrupted(reason)),
        None => result,
    };
    task.finish(result);
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
    /// What a panic in the callback is called ("result conversion" for the
    /// built-in `FromPython` callback, "callback" for a user's).
    phase: &'static str,
    /// See [`Task::user_commit`].
    user_commit: bool,
    done: Completer<R>,
}

impl<C, P, F, R> TypedTask<C, P, F, R> {
    /// `user_commit`: `commit` is a user's closure (see
    /// [`Task::user_commit`]).
    pub(crate) fn new(
        commit: C,
        user_commit: bool,
        callback: F,
        phase: &'static str,
        done: Completer<R>,
    ) -> Self {
        TypedTask {
            stage: Stage::Uncommitted(commit),
            callback: Some(callback),
            phase,
            user_commit,
            done,
        }
    }
}

impl<C, P, F, R> Task for TypedTask<C, P, F, R>
where
    C: FnOnce() -> Result<P> + Send,
    P: IntoArgs,
    F: for<'py> FnOnce(Object<'py>) -> Result<R> + Send,
    R: Send + 'static,
{
    fn commit(&mut self) -> bool {
        let commit = match std::mem::replace(&mut self.stage, Stage::Spent) {
            Stage::Uncommitted(c) => c,
            other => {
                self.stage = other;
                return true;
            }
        };
        match contain("commit", commit) {
            Ok(payload) => {
                self.stage = Stage::Committed(payload);
                true
            }
            Err(e) => {
                self.done.complete(Err(e));
                false
            }
        }
    }

    fn user_commit(&self) -> bool {
        self.user_commit && matches!(self.stage, Stage::Uncommitted(_))
    }

    fn control(&self) -> Arc<dyn Control> {
        self.done.control()
    }

    fn args<'py>(&mut self, py: Python<'py>) -> Result<CallArgs<'py>> {
        match std::mem::replace(&mut self.stage, Stage::Spent) {
            Stage::Committed(p) => contain("argument conversion", move || p.into_args(py)),
            Stage::Uncommitted(c) => {
                // The engine commits before publishing; a task reaching a
                // worker uncommitted is committed there rather than failed.
                self.stage = Stage::Uncommitted(c);
                if !self.commit() {
                    return Err(Error::new(ErrorKind::Cancelled(
                        "the task's commit failed".into(),
                    )));
                }
                self.args(py)
            }
            Stage::Spent => Err(Error::conversion("task arguments were already used")),
        }
    }

    fn finish(mut self: Box<Self>, result: Result<Object<'_>>) {
        let value = match (result, self.callback.take()) {
            (Ok(obj), Some(cb)) => contain(self.phase, move || cb(obj)),
            (Ok(_), None) => Err(Error::conversion("task callback already used")),
            (Err(e), _) => Err(e),
        };
        self.done.complete(value);
    }

    fn fail(self: Box<Self>, err: Error) {
        self.done.complete(Err(err));
    }

    fn interrupted(&self, reason: Reason) -> Error {
        self.done.interrupted(reason)
    }

    fn home(&self) -> Option<crate::held::Home> {
        match &self.stage {
            Stage::Committed(p) => p.home(),
            _ => None,
        }
    }
}

/// The result of a submitted task.
///
/// Await it (it implements [`Future`]), or block with [`wait`](Self::wait) /
/// [`wait_timeout`](Self::wait_timeout). Every future resolves exactly once:
/// with the result, the task's error, or a shutdown, cancellation or
/// timeout error.
pub struct TaskFuture<R> {
    shared: Arc<Shared<R>>,
}

impl<R> std::fmt::Debug for TaskFuture<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskFuture")
            .field("ready", &self.shared.cell.is_complete())
            .finish()
    }
}

/// How long a waiter spins before it blocks: a result that arrives within
/// this window is picked up without a sleep/wake round trip.
pub(crate) const WAIT_SPIN: Duration = Duration::from_micros(20);

impl<R: Send + 'static> TaskFuture<R> {
    /// Cancels the task. One that has not started never runs and its
    /// future resolves at once with [`Error::is_cancelled`]; one that is
    /// running is interrupted inside its own interpreter (a
    /// `KeyboardInterrupt` raised in that thread only) and resolves with
    /// `is_cancelled` when it stops — or, if it cannot be interrupted
    /// (blocked in C), after the engine's interrupt grace period, when its
    /// worker is quarantined and replaced. Returns `false` when the task
    /// had already finished.
    ///
    /// ```no_run
    /// # fn main() -> gilpool::Result<()> {
    /// let engine = gilpool::Engine::builder().sys_path("python").build()?;
    /// let heavy = engine.load("gilpool_workloads", "heavy")?;
    /// let fut = heavy.submit::<_, i64>((10_000_000,))?;
    /// fut.cancel();
    /// assert!(fut.wait().unwrap_err().is_cancelled());
    /// # Ok(()) }
    /// ```
    pub fn cancel(&self) -> bool {
        let shared = &self.shared;
        if shared.stop_queued(Error::new(ErrorKind::Cancelled(
            "the task was cancelled before it ran".into(),
        ))) {
            return true;
        }
        if shared.is_resolved() {
            return false;
        }
        let weak: std::sync::Weak<dyn Control> =
            Arc::downgrade(&(shared.clone() as Arc<dyn Control>));
        shared.handler.lane.watch.cancel(weak);
        true
    }
}

impl<R> TaskFuture<R> {
    /// Whether the result is ready.
    pub fn is_ready(&self) -> bool {
        self.shared.cell.is_complete()
    }

    /// Blocks until the task finished; returns its result.
    ///
    /// It polls for up to 20 µs first. It yields its core between
    /// polls where the lane's workers may need that core (see
    /// `Lane::waiter_yields`) and more than one job is queued when the wait
    /// begins (its own may be one): the others are jobs a worker waiting for
    /// a core would take. Otherwise it spins, since a yield would cost a
    /// lone task's round trip: a worker idling on this core takes the core
    /// each time.
    pub fn wait(self) -> Result<R> {
        let lane = &self.shared.handler.lane;
        self.poll_first(|| lane.pool.injected() > 1);
        self.block()
    }

    /// [`wait`](Self::wait) for a waiter with more results to come (`map`,
    /// whose window holds more jobs): when `spin` is set it polls first,
    /// by the same rule as `wait` with more jobs queued; without `spin`
    /// (results arrive slowly, long tasks) it blocks at once.
    pub(crate) fn wait_more(self, spin: bool) -> Result<R> {
        if spin {
            self.poll_first(|| true);
        }
        self.block()
    }

    /// Polls up to [`WAIT_SPIN`]: yielding between polls where the lane's
    /// workers may need this core and `more()` says jobs are queued behind
    /// this one, else spinning. `more` is asked only on a lane that may
    /// yield, so the others never read the injector.
    fn poll_first(&self, more: impl FnOnce() -> bool) {
        if self.shared.handler.lane.waiter_yields && more() {
            self.spin(std::thread::yield_now);
        } else {
            self.spin(std::hint::spin_loop);
        }
    }

    fn block(self) -> Result<R> {
        self.shared
            .cell
            .wait()
            .unwrap_or_else(|| Err(Error::new(ErrorKind::Consumed)))
    }

    /// Blocks at most `timeout`. `None` if the task has not finished (call
    /// again later); `Some(result)` once, then `Some(Err(..))` if called
    /// again. Only the wait stops: the task goes on (see
    /// [`cancel`](Self::cancel) and [`HandlerBuilder::timeout`](crate::HandlerBuilder::timeout)).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<Result<R>> {
        match self.shared.cell.wait_timeout(timeout) {
            Ok(Some(v)) => Some(v),
            Ok(None) => Some(Err(Error::new(ErrorKind::Consumed))),
            Err(()) => None,
        }
    }

    /// Polls for the result up to [`WAIT_SPIN`], calling `between` between
    /// two polls.
    fn spin(&self, between: impl Fn()) {
        let start = Instant::now();
        while !self.shared.cell.is_complete() && start.elapsed() < WAIT_SPIN {
            between();
        }
    }
}

impl<R> Future for TaskFuture<R> {
    type Output = Result<R>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<R>> {
        self.shared
            .cell
            .poll(cx.waker())
            .map(|v| v.unwrap_or_else(|| Err(Error::new(ErrorKind::Consumed))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contain_each_keeps_every_result_in_place_around_panics() {
        // Quiet the default hook's message for the expected panics.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let out = contain_each("probe", 0..10, |i| {
            if i % 3 == 0 {
                panic!("boom at {i}");
            }
            Ok(i * 10)
        });
        std::panic::set_hook(hook);
        assert_eq!(out.len(), 10);
        for (i, r) in out.into_iter().enumerate() {
            match r {
                Ok(v) => assert_eq!((i % 3 != 0, v), (true, i * 10)),
                Err(e) => {
                    assert!(i % 3 == 0 && e.is_panic(), "{i}: {e}");
                    assert!(
                        e.to_string().contains(&format!("probe: boom at {i}")),
                        "{e}"
                    );
                }
            }
        }
    }
}
