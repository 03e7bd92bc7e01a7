//! `Pool`: one lane's queues — an injector, a deque per worker, the
//! stealers of every deque — plus its sleep state and run state.
//!
//! ## Memory ordering
//! `state` is written (`SeqCst` RMW or store, a release) before the
//! `notify_all` that bumps the sleep epoch, and a worker reads it (`SeqCst`,
//! an acquire) after taking its ticket and before searching. So a worker
//! either sees the new state — and then its search sees every job published
//! before `drain()`, since that publication happens-before the state change
//! it acquired — or its ticket predates the epoch bump, and the sleep
//! protocol guarantees it cannot sleep through the notification (see
//! `sleep/README.md`). Jobs themselves are published by the deques, which
//! synchronize on their own.

use super::sleep::{Sleep, Ticket};
use super::sync::deque::{Injector, Steal, Stealer, Worker};
use super::sync::{Arc, AtomicU8, Ordering};
use std::time::Duration;

const RUNNING: u8 = 0;
/// Workers finish every queued job, then exit.
const DRAINING: u8 = 1;
/// Workers exit after their current job; queued jobs are dropped with the pool.
const CANCELLED: u8 = 2;

/// The shared half of a lane's scheduler.
#[derive(Debug)]
pub(crate) struct Pool<J> {
    injector: Injector<J>,
    /// One per worker: jobs only that worker may run (never stolen).
    mailboxes: Vec<Injector<J>>,
    stealers: Vec<Stealer<J>>,
    /// Jobs each worker stole from a sibling's deque (a statistic, not
    /// part of any protocol: plain std atomics even under loom).
    steals: Vec<std::sync::atomic::AtomicU64>,
    sleep: Sleep,
    state: AtomicU8,
}

/// One worker's half: its own deque and a handle on the pool.
#[derive(Debug)]
pub(crate) struct Local<J> {
    index: usize,
    deque: Worker<J>,
    pool: Arc<Pool<J>>,
}

/// What [`Local::next`] found.
#[derive(Debug)]
pub(crate) enum Next<J> {
    /// A job to run.
    Job(J),
    /// The pool terminated and (in drain mode) no job is left.
    Exit,
}

impl<J> Pool<J> {
    /// A pool of `workers` deques; returns the shared pool and one `Local`
    /// per worker, to be moved to that worker's thread.
    pub(crate) fn new(workers: usize) -> (Arc<Pool<J>>, Vec<Local<J>>) {
        let deques: Vec<Worker<J>> = (0..workers).map(|_| Worker::new_fifo()).collect();
        let pool = Arc::new(Pool {
            injector: Injector::new(),
            mailboxes: (0..workers).map(|_| Injector::new()).collect(),
            steals: (0..workers)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
            stealers: deques.iter().map(Worker::stealer).collect(),
            sleep: Sleep::new(),
            state: AtomicU8::new(RUNNING),
        });
        let locals = deques
            .into_iter()
            .enumerate()
            .map(|(index, deque)| Local {
                index,
                deque,
                pool: pool.clone(),
            })
            .collect();
        (pool, locals)
    }

    /// Publishes a job to the lane and wakes one sleeping worker.
    pub(crate) fn inject(&self, job: J) {
        self.injector.push(job);
        self.sleep.notify_one();
    }

    /// Publishes a job only worker `index` may run (its mailbox is never
    /// stolen from) and wakes every sleeping worker: a targeted wake-up
    /// does not exist, and the woken ones that are not `index` find nothing
    /// and sleep again. As with `drain`, the epoch bump means `index`
    /// either finds the job in a search begun after the push or cannot
    /// sleep through the notification.
    pub(crate) fn inject_to(&self, index: usize, job: J) {
        self.mailboxes[index].push(job);
        self.sleep.notify_all();
    }

    /// Wakes every worker so it re-reads shared state (a new deadline).
    pub(crate) fn wake_all(&self) {
        self.sleep.notify_all();
    }

    /// Asks workers to exit once every queued job has run.
    pub(crate) fn drain(&self) {
        let _ = self
            .state
            .compare_exchange(RUNNING, DRAINING, Ordering::SeqCst, Ordering::SeqCst);
        self.sleep.notify_all();
    }

    /// Asks workers to exit after their current job; queued jobs are left
    /// in the queues and dropped with the pool.
    pub(crate) fn cancel(&self) {
        self.state.store(CANCELLED, Ordering::SeqCst);
        self.sleep.notify_all();
    }

    /// Whether `drain` or `cancel` was called.
    #[cfg(any(test, gilpool_loom))]
    pub(crate) fn is_terminating(&self) -> bool {
        self.state.load(Ordering::SeqCst) != RUNNING
    }

    /// Whether `cancel` was called.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.state.load(Ordering::SeqCst) == CANCELLED
    }

    /// Workers asleep right now.
    #[cfg(any(test, gilpool_loom))]
    pub(crate) fn sleepers(&self) -> usize {
        self.sleep.sleepers()
    }

    /// Jobs worker `index` stole from siblings so far.
    pub(crate) fn steals(&self, index: usize) -> u64 {
        self.steals[index].load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Jobs waiting in worker `index`'s deque and mailbox, and in the
    /// lane's injector.
    pub(crate) fn depths(&self, index: usize) -> (usize, usize) {
        (
            self.stealers[index].len() + self.mailboxes[index].len(),
            self.injector.len(),
        )
    }

    /// How many jobs wait in the lane's injector (a snapshot: it may change
    /// as soon as it is read). The workers' deques are not counted: a
    /// worker pops its own at every job, so reading them would pull that
    /// cache line away from it.
    pub(crate) fn injected(&self) -> usize {
        self.injector.len()
    }

    /// Number of workers.
    pub(crate) fn workers(&self) -> usize {
        self.stealers.len()
    }

    /// Removes and returns every queued job (injector and deques). For
    /// cancellation after the workers have exited.
    pub(crate) fn take_all(&self) -> Vec<J> {
        let mut out = Vec::new();
        loop {
            match self.injector_steal() {
                Steal::Success(j) => out.push(j),
                Steal::Retry => continue,
                Steal::Empty => break,
            }
        }
        for s in &self.stealers {
            loop {
                match s.steal() {
                    Steal::Success(j) => out.push(j),
                    Steal::Retry => continue,
                    Steal::Empty => break,
                }
            }
        }
        for m in &self.mailboxes {
            loop {
                match m.steal() {
                    Steal::Success(j) => out.push(j),
                    Steal::Retry => continue,
                    Steal::Empty => break,
                }
            }
        }
        out
    }

    fn injector_steal(&self) -> Steal<J> {
        let scratch = Worker::new_fifo();
        match self.injector.steal_batch_and_pop(&scratch) {
            Steal::Success(j) => {
                while let Some(extra) = scratch.pop() {
                    self.injector.push(extra);
                }
                Steal::Success(j)
            }
            other => other,
        }
    }
}

impl<J> Local<J> {
    /// This worker's index in the lane.
    #[cfg(gilpool_loom)]
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// The lane this worker belongs to.
    #[cfg(gilpool_loom)]
    pub(crate) fn pool(&self) -> &Arc<Pool<J>> {
        &self.pool
    }

    /// Pushes a job on this worker's own deque, where siblings may steal it.
    #[cfg(any(test, gilpool_loom))]
    pub(crate) fn push(&self, job: J) {
        self.deque.push(job);
        self.pool.sleep.notify_one();
    }

    /// Looks for a job without blocking: own deque, own mailbox, then the
    /// injector, then siblings' deques (starting after this worker, so
    /// thieves spread out).
    pub(crate) fn find(&self) -> Option<J> {
        if let Some(j) = self.deque.pop() {
            return Some(j);
        }
        loop {
            let mut retry = false;
            match self.pool.mailboxes[self.index].steal() {
                Steal::Success(j) => return Some(j),
                Steal::Retry => retry = true,
                Steal::Empty => {}
            }
            match self.pool.injector.steal_batch_and_pop(&self.deque) {
                Steal::Success(j) => {
                    // Extra jobs moved into our deque are work a sleeping
                    // sibling could steal: tell it.
                    if !self.deque.is_empty() {
                        self.pool.sleep.notify_one();
                    }
                    return Some(j);
                }
                Steal::Retry => retry = true,
                Steal::Empty => {}
            }
            let n = self.pool.stealers.len();
            for k in 1..n {
                let victim = &self.pool.stealers[(self.index + k) % n];
                match victim.steal() {
                    Steal::Success(j) => {
                        self.pool.steals[self.index]
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return Some(j);
                    }
                    Steal::Retry => retry = true,
                    Steal::Empty => {}
                }
            }
            if !retry {
                return None;
            }
        }
    }

    /// A ticket to pass to [`sleep`](Self::sleep); take it before [`find`](Self::find).
    pub(crate) fn ticket(&self) -> Ticket {
        self.pool.sleep.ticket()
    }

    /// Sleeps until woken (or `timeout`), unless work was published since
    /// `ticket`.
    pub(crate) fn sleep(&self, ticket: Ticket, timeout: Option<Duration>) {
        self.pool.sleep.sleep(ticket, timeout)
    }

    /// Whether this worker should stop taking jobs now: the pool was
    /// cancelled, or it is draining and `found_nothing` after the drain began.
    ///
    /// `found_nothing` must come from a search that *started after* this
    /// worker saw the pool terminating (read the state, then search): a
    /// search that came up empty before `drain()` may have missed a job
    /// published just before it. [`next_with`](Self::next_with) does this.
    #[cfg(gilpool_loom)]
    pub(crate) fn should_exit(&self, found_nothing: bool) -> bool {
        self.pool.is_cancelled() || (found_nothing && self.pool.is_terminating())
    }

    /// Blocks until a job is found or the pool terminates. `idle` runs each
    /// time a search came up empty, before sleeping; it may publish work
    /// (it returns `true` then, and the worker searches again) and says how
    /// long the worker may sleep at most.
    ///
    /// Each round reads the ticket, then the run state, then searches. In
    /// drain mode the worker exits only when a search that began after it
    /// saw `DRAINING` finds nothing, so it cannot leave behind a job
    /// published before `drain()`. A worker that saw `RUNNING` sleeps on a
    /// ticket taken before that read, so a later `drain()`/`cancel()` (state
    /// change, then `notify_all`) either shows in the ticket re-check or
    /// wakes it; see "Termination" in `sleep/README.md`.
    pub(crate) fn next_with(&self, mut idle: impl FnMut() -> Idle) -> Next<J> {
        loop {
            let ticket = self.ticket();
            let state = self.pool.state.load(Ordering::SeqCst);
            if state == CANCELLED {
                return Next::Exit;
            }
            if let Some(j) = self.find() {
                return Next::Job(j);
            }
            match idle() {
                Idle::Published => continue,
                Idle::Sleep(timeout) => {
                    if state == DRAINING {
                        return Next::Exit;
                    }
                    self.sleep(ticket, timeout);
                }
            }
        }
    }

    /// [`next_with`](Self::next_with) with nothing to do when idle.
    #[cfg(any(test, gilpool_loom))]
    pub(crate) fn next(&self) -> Next<J> {
        self.next_with(|| Idle::Sleep(None))
    }
}

/// What a worker's idle hook did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idle {
    /// It published work: search again.
    Published,
    /// Nothing to do: sleep, at most this long.
    Sleep(Option<Duration>),
}
