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
//!
//! A lane whose workers share one GIL wakes them lazily ([`Wake::Lazy`]):
//! a published job wakes a sleeper only when every thread serving the lane
//! sleeps (see `Sleep::notify_lazy`). A job it leaves to an awake worker is
//! covered by the helper check: the pool asks its hook (the lane's
//! watchdog) to call [`Pool::help`] a little later, which wakes a sleeper
//! if jobs are still queued and no worker took one in between — the awake
//! worker is then in a long job, perhaps one that released the GIL.

use super::sleep::{Sleep, Ticket};
use super::sync::deque::{Injector, Steal, Stealer, Worker};
use super::sync::{Arc, AtomicU8, AtomicUsize, Ordering};
use crossbeam_utils::CachePadded;
use std::sync::OnceLock;
use std::time::Duration;

/// How a lane wakes its sleeping workers when a job is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// One sleeper per job: each woken worker runs in parallel (own GIL).
    Eager,
    /// A sleeper only when all serving threads sleep: workers that share
    /// one GIL cannot run Python at once, so a second one woken beside a
    /// running one only contends with it for the GIL.
    Lazy,
}

/// The lane's side of the helper check: called with the count of jobs
/// taken so far, it arranges for [`Pool::help`] to be called with that
/// count a little later.
pub(crate) struct HelperHook(pub(crate) Box<dyn Fn(u64) + Send + Sync>);

impl std::fmt::Debug for HelperHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HelperHook")
    }
}

/// A lazy lane's jobs of at least this long make it wake eagerly (see
/// [`Pool::job_took`]): about what a wake-up and a hand-over of the GIL
/// cost together on a virtual machine.
pub(crate) const LONG_JOB: Duration = Duration::from_micros(20);

/// Jobs in a row on one side of [`LONG_JOB`] that switch how a lazy lane
/// wakes (see [`Pool::job_took`]).
pub(crate) const STREAK: u8 = 3;

/// A worker's latest run of jobs on one side of [`LONG_JOB`].
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Streak {
    long: bool,
    jobs: u8,
}

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
    wake: Wake,
    /// Threads serving a slot (`serve`/`unserve`); a lazy wake compares
    /// the sleepers with it.
    serving: AtomicUsize,
    /// Whether the lane's last job took [`LONG_JOB`] or more (lazy lanes
    /// only, see [`job_took`](Pool::job_took)); written only when it
    /// changes. A hint that picks between two correct wake protocols, so
    /// relaxed, and on std atomics even under loom.
    long_jobs: std::sync::atomic::AtomicBool,
    /// Jobs taken by the lane's workers (lazy lanes only): the helper
    /// check's measure of progress. A statistic, like `steals`. On a line
    /// of its own: the workers write it at every job, and the publishers
    /// read the fields around it at every job.
    taken: CachePadded<std::sync::atomic::AtomicU64>,
    /// Whether a helper check is pending (lazy lanes only), swapped by
    /// publishers that leave a job to an awake worker; on its own line so
    /// that the swaps do not take the workers' lines away from them. The
    /// helper check runs outside the loom models, on std atomics.
    armed: CachePadded<std::sync::atomic::AtomicBool>,
    helper: OnceLock<HelperHook>,
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
    #[cfg(any(test, gilpool_loom))]
    pub(crate) fn new(workers: usize) -> (Arc<Pool<J>>, Vec<Local<J>>) {
        Pool::with_wake(workers, Wake::Eager)
    }

    /// [`new`](Self::new) with the given wake policy.
    pub(crate) fn with_wake(workers: usize, wake: Wake) -> (Arc<Pool<J>>, Vec<Local<J>>) {
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
            wake,
            serving: AtomicUsize::new(0),
            long_jobs: std::sync::atomic::AtomicBool::new(false),
            taken: CachePadded::new(std::sync::atomic::AtomicU64::new(0)),
            armed: CachePadded::new(std::sync::atomic::AtomicBool::new(false)),
            helper: OnceLock::new(),
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

    /// Publishes a job to the lane and wakes one sleeping worker (on a
    /// lazy lane, only when no serving thread is awake).
    pub(crate) fn inject(&self, job: J) {
        self.injector.push(job);
        self.wake_one();
    }

    fn wake_one(&self) {
        match self.wake {
            Wake::Eager => self.sleep.notify_one(),
            Wake::Lazy if self.long_jobs.load(std::sync::atomic::Ordering::Relaxed) => {
                self.sleep.notify_one()
            }
            Wake::Lazy => {
                if self.sleep.notify_lazy(self.serving.load(Ordering::SeqCst)) {
                    self.arm_helper();
                }
            }
        }
    }

    /// Whether the pool wakes lazily (`Wake::Lazy`).
    pub(crate) fn is_lazy(&self) -> bool {
        self.wake == Wake::Lazy
    }

    /// Whether a worker that found nothing should keep looking for a
    /// while before it sleeps. On a lazy lane of short jobs, only the last
    /// awake worker does: a second one kept awake would take the next jobs
    /// beside the first and contend with it for the GIL, which lazy wakes
    /// exist to avoid.
    pub(crate) fn idle_spins(&self) -> bool {
        match self.wake {
            Wake::Eager => true,
            Wake::Lazy => {
                self.long_jobs.load(std::sync::atomic::Ordering::Relaxed)
                    || self.sleep.asleep() + 1 >= self.serving.load(Ordering::SeqCst)
            }
        }
    }

    /// A worker of a lazy lane ran a job for `took` once it held the GIL
    /// (the wait for the GIL is not counted: a second worker's contention
    /// would make short jobs look long); `streak` is that worker's own.
    /// While jobs take [`LONG_JOB`] or more, the lane wakes eagerly: a job
    /// that long may release the GIL (a C call, a sleep, I/O) and let a
    /// second worker run beside it, and a wake-up costs little against it.
    /// Shorter jobs are where a second worker's contention for the GIL
    /// costs as much as the job. The lane switches after [`STREAK`] jobs
    /// in a row on the other side, so that one job slowed by the host (a
    /// page fault, a preempted core) does not switch it; a long job counts
    /// only if it ran while the other workers slept, since one that waited
    /// for the GIL beside a running worker looks long too.
    pub(crate) fn job_took(&self, took: Duration, streak: &mut Streak) {
        use std::sync::atomic::Ordering::Relaxed;
        let long = took >= LONG_JOB;
        if long && self.sleep.asleep() + 1 < self.serving.load(Ordering::SeqCst) {
            // Another worker was awake: the job may have waited for the GIL
            // in between (a switch interval), which is not the job's length.
            return;
        }
        if long != streak.long {
            *streak = Streak { long, jobs: 0 };
        }
        streak.jobs = streak.jobs.saturating_add(1);
        if streak.jobs == STREAK && self.long_jobs.load(Relaxed) != long {
            self.long_jobs.store(long, Relaxed);
        }
    }

    /// Makes sure a helper check is pending: a job was left to an awake
    /// worker.
    fn arm_helper(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        if !self.armed.swap(true, SeqCst) {
            if let Some(hook) = self.helper.get() {
                (hook.0)(self.taken.load(SeqCst));
            }
        }
    }

    /// Installs the helper hook of a lazy lane (once; later calls are
    /// ignored).
    pub(crate) fn set_helper(&self, hook: HelperHook) {
        let _ = self.helper.set(hook);
    }

    /// The helper check, `taken_then` being the count of jobs taken when it
    /// was armed. If jobs are still queued and none was taken since, the
    /// awake workers are all in long jobs: wake a sleeper. Returns the
    /// count to check against next time if jobs are still queued and a
    /// worker sleeps (the caller schedules that check), `None` when none is
    /// needed: with every worker awake, each takes a queued job before it
    /// could sleep.
    pub(crate) fn help(&self, taken_then: u64) -> Option<u64> {
        use std::sync::atomic::Ordering::SeqCst;
        // Disarmed first: a publisher that finds it disarmed from here on
        // arms a check of its own, and one that found it armed before this
        // swap is ordered before it, so its job is in the queues read next.
        self.armed.swap(false, SeqCst);
        if !self.queued() || !self.sleep.any_asleep() {
            return None;
        }
        let now = self.taken.load(SeqCst);
        if now == taken_then {
            self.sleep.notify_one();
        }
        (!self.armed.swap(true, SeqCst)).then_some(now)
    }

    /// Whether a job waits in the injector or a worker's deque.
    fn queued(&self) -> bool {
        !self.injector.is_empty() || self.stealers.iter().any(|s| !s.is_empty())
    }

    /// A thread began serving a slot.
    pub(crate) fn serve(&self) {
        self.serving.fetch_add(1, Ordering::SeqCst);
    }

    /// A thread stopped serving its slot (it exited, or was quarantined).
    pub(crate) fn unserve(&self) {
        self.serving.fetch_sub(1, Ordering::SeqCst);
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
        self.pool.wake_one();
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
                        self.pool.wake_one();
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
                if self.pool.wake == Wake::Lazy {
                    self.pool
                        .taken
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
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
