//! Scheduler tests on the real primitives (std sync, crossbeam-deque), with
//! Rust closures where the engine runs Python.
//!
//! The property test drives the whole path one task takes through the
//! scheduler — permit, batcher, pool, worker, completion cell — with random
//! pool sizes, batching policies and shutdown points, and checks that every
//! task completes exactly once (run, or cancelled), that no handler ever has
//! more than `prefetch_depth` batches taken-but-not-started, and that
//! results collected by index come back in input order. The loom models in
//! `loom_tests/` check the same protocols exhaustively on a stand-in deque;
//! these tests run them on crossbeam's.

use super::batcher::{BatchPolicy, Batcher, Pushed};
use super::cell::CompletionCell;
use super::permits::{AcquireError, Permits};
use super::pool::{Idle, Local, Next, Pool};
use proptest::prelude::*;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

/// How long a scenario may take before the test calls it a hang. Generous:
/// a scenario normally takes milliseconds; this only turns a lost wakeup or
/// a stuck worker into a failure instead of a test run that never ends.
const HANG: Duration = Duration::from_secs(30);

/// Runs `f` on its own thread and fails if it does not finish within
/// [`HANG`]. (A hung scenario's threads are leaked; the test fails anyway.)
fn watchdog<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let runner = thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(HANG) {
        Ok(v) => {
            runner.join().unwrap();
            v
        }
        // The sender was dropped: the scenario panicked; report its panic.
        Err(mpsc::RecvTimeoutError::Disconnected) => match runner.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("scenario finished without a result"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: no progress in {HANG:?} (hang)"),
    }
}

// ---------------------------------------------------------------------------
// The end-to-end scenario.

/// The function every task computes, in place of a Python call.
fn compute(x: u64) -> u64 {
    x.wrapping_mul(x).wrapping_add(1)
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done(u64),
    Cancelled,
}

/// One handler: its batching policy, batcher, permits, and a count of
/// batches taken from the batcher whose `started()` was not called yet.
struct Handler {
    batcher: Batcher<usize>,
    permits: Permits,
    taken: AtomicUsize,
}

impl Handler {
    /// Records a batch just handed out by the batcher. `taken` rises after
    /// the batcher's own count and falls before it, so it never exceeds it.
    fn took(&self, batch: &[usize]) {
        let policy = self.batcher.policy();
        let now = self.taken.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(
            now <= policy.prefetch_depth,
            "{now} batches taken but not started, prefetch_depth {}",
            policy.prefetch_depth
        );
        assert!(!batch.is_empty() && batch.len() <= policy.batch_size);
    }
}

/// A job: one handler's batch of task ids.
#[derive(Debug)]
struct Job {
    handler: usize,
    tasks: Vec<usize>,
}

#[derive(Debug, Clone, Copy)]
enum Shutdown {
    /// Join the submitters, flush the batchers, then `drain()`: every task runs.
    Drain,
    /// Once `after` tasks were submitted: close the permits, drop what waits
    /// in the batchers, `cancel()`, and cancel whatever `take_all` returns.
    Cancel { after: usize },
}

#[derive(Debug, Clone)]
struct Scenario {
    workers: usize,
    /// Per handler: (batch_size, prefetch_depth, permit capacity).
    handlers: Vec<(usize, usize, usize)>,
    /// Per task, in input order: (handler, input).
    tasks: Vec<(usize, u64)>,
    submitters: usize,
    /// Workers publish the batch `started()` hands back on their own deque
    /// (where siblings steal it) instead of the injector.
    publish_locally: bool,
    shutdown: Shutdown,
}

struct World {
    pool: Arc<Pool<Job>>,
    handlers: Vec<Handler>,
    inputs: Vec<u64>,
    results: Vec<CompletionCell<Outcome>>,
    /// How many tasks were offered to a batcher (or refused).
    submitted: AtomicUsize,
    /// Completed by the submitter that brings `submitted` to the cancel point.
    cancel_point: CompletionCell<()>,
    cancel_after: Option<usize>,
}

impl World {
    /// Completes task `id` exactly once and returns its permit.
    fn finish(&self, id: usize, outcome: Outcome, handler: &Handler) {
        if self.results[id].complete(outcome).is_err() {
            panic!("task {id} completed twice");
        }
        handler.permits.release();
    }

    fn publish(&self, local: Option<&Local<Job>>, job: Job) {
        match local {
            Some(local) => local.push(job),
            None => self.pool.inject(job),
        }
    }

    /// A submitter: for each of its tasks, take a permit, push the task into
    /// its handler's batcher, and publish the batch the batcher hands back.
    fn submit(&self, mine: &[usize], handler_of: &[usize]) {
        for &id in mine {
            let h = &self.handlers[handler_of[id]];
            match h.permits.acquire(None) {
                Ok(()) => {
                    if let Pushed::Batch(batch) = h.batcher.push(id, None) {
                        h.took(&batch);
                        self.publish(
                            None,
                            Job {
                                handler: handler_of[id],
                                tasks: batch,
                            },
                        );
                    }
                }
                Err(AcquireError::Closed) => {
                    // Refused at submit: it ends as cancelled, holding no permit.
                    assert!(self.results[id].complete(Outcome::Cancelled).is_ok());
                }
                Err(AcquireError::Timeout) => unreachable!("no timeout was given"),
            }
            let n = self.submitted.fetch_add(1, Ordering::SeqCst) + 1;
            if Some(n) == self.cancel_after {
                let _ = self.cancel_point.complete(());
            }
        }
    }

    /// A worker: run jobs until told to exit.
    fn work(&self, local: Local<Job>, publish_locally: bool) {
        loop {
            match local.next_with(|| Idle::Sleep(None)) {
                Next::Job(Job { handler, tasks }) => {
                    let h = &self.handlers[handler];
                    let depth = h.batcher.policy().prefetch_depth;
                    assert!(
                        h.batcher.counts().1 <= depth,
                        "outstanding above prefetch_depth"
                    );
                    // This batch starts: it leaves the prefetch window, and
                    // the next one may be formed and published.
                    h.taken.fetch_sub(1, Ordering::SeqCst);
                    if let Some(next) = h.batcher.started(None) {
                        h.took(&next);
                        let local = publish_locally.then_some(&local);
                        self.publish(
                            local,
                            Job {
                                handler,
                                tasks: next,
                            },
                        );
                    }
                    assert!(
                        h.batcher.counts().1 <= depth,
                        "outstanding above prefetch_depth"
                    );
                    for id in tasks {
                        self.finish(id, Outcome::Done(compute(self.inputs[id])), h);
                    }
                }
                Next::Exit => return,
            }
        }
    }

    /// A scenario thread panicked (a failed assertion): stop everything so
    /// that the other threads return and the failure is reported at once
    /// (rather than as a hang, case after case, while proptest shrinks).
    fn abort(&self) {
        for h in &self.handlers {
            h.permits.close();
        }
        self.pool.cancel();
        let _ = self.cancel_point.complete(());
    }

    /// Runs a scenario thread's body; on panic, aborts the scenario first.
    fn guard(&self, body: impl FnOnce()) {
        if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(body)) {
            self.abort();
            std::panic::resume_unwind(panic);
        }
    }

    /// Cancels every task of a job that never ran.
    fn cancel_job(&self, job: Job) {
        let h = &self.handlers[job.handler];
        for id in job.tasks {
            self.finish(id, Outcome::Cancelled, h);
        }
    }
}

/// Joins a scenario thread, passing its panic on as it was.
fn join<T>(t: thread::JoinHandle<T>) -> T {
    t.join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Runs `s` to completion; returns each task's outcome, by task index.
fn run(s: Scenario) -> Vec<Outcome> {
    let (pool, locals) = Pool::<Job>::new(s.workers);
    let handler_of: Arc<Vec<usize>> = Arc::new(s.tasks.iter().map(|&(h, _)| h).collect());
    let world = Arc::new(World {
        pool: pool.clone(),
        handlers: s
            .handlers
            .iter()
            .map(|&(batch_size, prefetch_depth, capacity)| Handler {
                batcher: Batcher::new(BatchPolicy {
                    batch_size,
                    prefetch_depth,
                    max_batch_delay: None,
                }),
                permits: Permits::new(capacity),
                taken: AtomicUsize::new(0),
            })
            .collect(),
        inputs: s.tasks.iter().map(|&(_, x)| x).collect(),
        results: s.tasks.iter().map(|_| CompletionCell::new()).collect(),
        submitted: AtomicUsize::new(0),
        cancel_point: CompletionCell::new(),
        cancel_after: match s.shutdown {
            Shutdown::Cancel { after } if after > 0 => Some(after),
            _ => None,
        },
    });

    let workers: Vec<_> = locals
        .into_iter()
        .map(|local| {
            let world = world.clone();
            thread::spawn(move || world.guard(|| world.work(local, s.publish_locally)))
        })
        .collect();
    // Task ids dealt round-robin to the submitters: each submits its share
    // in input order, the shares interleave.
    let submitters: Vec<_> = (0..s.submitters)
        .map(|k| {
            let world = world.clone();
            let handler_of = handler_of.clone();
            let mine: Vec<usize> = (k..s.tasks.len()).step_by(s.submitters).collect();
            thread::spawn(move || world.guard(|| world.submit(&mine, &handler_of)))
        })
        .collect();

    match s.shutdown {
        Shutdown::Drain => {
            for t in submitters {
                join(t);
            }
            // Nothing waits on a deadline here; flush hands back whatever
            // fits the prefetch window (the rest follows via `started()`).
            for (i, h) in world.handlers.iter().enumerate() {
                for batch in h.batcher.flush() {
                    h.took(&batch);
                    world.publish(
                        None,
                        Job {
                            handler: i,
                            tasks: batch,
                        },
                    );
                }
            }
            pool.drain();
            for w in workers {
                join(w);
            }
            assert!(pool.take_all().is_empty(), "drain left a job queued");
            for h in &world.handlers {
                assert_eq!(h.batcher.counts(), (0, 0), "drain left tasks in a batcher");
            }
        }
        Shutdown::Cancel { .. } => {
            if world.cancel_after.is_some() {
                world.cancel_point.wait();
            }
            for h in &world.handlers {
                h.permits.close();
            }
            for (i, h) in world.handlers.iter().enumerate() {
                world.cancel_job(Job {
                    handler: i,
                    tasks: h.batcher.drain(),
                });
            }
            pool.cancel();
            for w in workers {
                join(w);
            }
            for t in submitters {
                join(t);
            }
            // Workers and submitters are gone: sweep what they left behind,
            // in the queues and (pushed after the first sweep) the batchers.
            for job in pool.take_all() {
                world.cancel_job(job);
            }
            for (i, h) in world.handlers.iter().enumerate() {
                world.cancel_job(Job {
                    handler: i,
                    tasks: h.batcher.drain(),
                });
            }
        }
    }

    for h in &world.handlers {
        assert_eq!(h.permits.in_use(), 0, "a permit was not returned");
    }
    // The ordered map: collect results by index.
    world
        .results
        .iter()
        .enumerate()
        .map(|(id, cell)| {
            cell.wait_timeout(Duration::ZERO)
                .unwrap_or_else(|()| panic!("task {id} never completed"))
                .expect("each result is taken once")
        })
        .collect()
}

/// Property-test cases: `PROPTEST_CASES` when set, else 1024 (under a
/// second in all).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let handler = (1usize..=8, 1usize..=3, 1usize..=8);
    (
        1usize..=4,
        prop::collection::vec(handler, 1..=3),
        1usize..=3,
        any::<bool>(),
        0usize..=48,
    )
        .prop_flat_map(|(workers, handlers, submitters, publish_locally, n)| {
            let nh = handlers.len();
            let tasks = prop::collection::vec((0..nh, any::<u64>()), n);
            let shutdown = prop_oneof![
                Just(Shutdown::Drain),
                (0..=n).prop_map(|after| Shutdown::Cancel { after }),
            ];
            (tasks, shutdown).prop_map(move |(tasks, shutdown)| Scenario {
                workers,
                handlers: handlers.clone(),
                tasks,
                submitters,
                publish_locally,
                shutdown,
            })
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Every task completes exactly once — run, or cancelled — and the
    /// results, collected by index, come back in input order.
    #[test]
    fn every_task_completes_exactly_once(s in scenario()) {
        let inputs: Vec<u64> = s.tasks.iter().map(|&(_, x)| x).collect();
        let shutdown = s.shutdown;
        let outcomes = watchdog("scenario", move || run(s));
        prop_assert_eq!(outcomes.len(), inputs.len());
        for (i, (&x, outcome)) in inputs.iter().zip(&outcomes).enumerate() {
            match (shutdown, outcome) {
                (_, Outcome::Done(y)) => prop_assert_eq!(*y, compute(x), "task {} out of order", i),
                (Shutdown::Cancel { .. }, Outcome::Cancelled) => {}
                (Shutdown::Drain, Outcome::Cancelled) => {
                    prop_assert!(false, "task {} cancelled by a drain", i)
                }
            }
        }
        // Cancelling once every task was submitted and nothing else held the
        // workers back may still cancel some; cancelling at 0 may run some.
        // Only drains promise a full run:
        if let Shutdown::Drain = shutdown {
            prop_assert!(outcomes.iter().all(|o| matches!(o, Outcome::Done(_))));
        }
    }
}

/// One fixed, larger run of each shutdown kind (more tasks than the property
/// test draws), to give the queues and the prefetch bound some churn.
#[test]
fn larger_runs() {
    for shutdown in [Shutdown::Drain, Shutdown::Cancel { after: 300 }] {
        let s = Scenario {
            workers: 4,
            handlers: vec![(1, 1, 2), (4, 2, 8), (8, 3, 64)],
            tasks: (0..600).map(|i| (i % 3, i as u64)).collect(),
            submitters: 3,
            publish_locally: true,
            shutdown,
        };
        let outcomes = watchdog("larger run", move || run(s));
        for (i, o) in outcomes.iter().enumerate() {
            match o {
                Outcome::Done(y) => assert_eq!(*y, compute(i as u64)),
                Outcome::Cancelled => assert!(matches!(shutdown, Shutdown::Cancel { .. })),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Pool.

#[test]
fn find_prefers_own_deque_then_injector_then_siblings() {
    let (pool, locals) = Pool::<&str>::new(2);
    pool.inject("injected");
    locals[1].push("sibling's");
    locals[0].push("own");
    assert_eq!(locals[0].find(), Some("own"));
    assert_eq!(locals[0].find(), Some("injected"));
    assert_eq!(locals[0].find(), Some("sibling's"));
    assert_eq!(locals[0].find(), None);
}

#[test]
fn take_all_returns_every_queued_job() {
    let (pool, locals) = Pool::<usize>::new(3);
    for i in 0..10 {
        pool.inject(i);
    }
    locals[0].push(10);
    locals[2].push(11);
    // A search moves part of the injector into worker 1's deque.
    let first = locals[1].find().unwrap();
    let mut all = pool.take_all();
    all.push(first);
    all.sort_unstable();
    assert_eq!(all, (0..12).collect::<Vec<_>>());
    assert!(pool.take_all().is_empty());
}

#[test]
fn cancel_stops_workers_and_leaves_jobs_queued() {
    let (pool, locals) = Pool::<usize>::new(1);
    pool.cancel();
    pool.inject(1);
    assert!(pool.is_terminating());
    assert!(matches!(locals[0].next(), Next::Exit));
    assert_eq!(pool.take_all(), [1]);
}

#[test]
fn drain_runs_queued_jobs_before_exit() {
    let (pool, locals) = Pool::<usize>::new(1);
    pool.inject(1);
    pool.inject(2);
    pool.drain();
    let mut ran = Vec::new();
    while let Next::Job(j) = locals[0].next() {
        ran.push(j);
    }
    assert_eq!(ran, [1, 2]);
}

#[test]
fn sleeping_workers_wake_for_jobs_and_for_drain() {
    watchdog("sleep/wake", || {
        let (pool, locals) = Pool::<usize>::new(2);
        let ran = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = locals
            .into_iter()
            .map(|local| {
                let ran = ran.clone();
                thread::spawn(move || {
                    while let Next::Job(_) = local.next() {
                        ran.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for round in 0..50 {
            pool.inject(round);
            if round % 10 == 0 {
                // Give the workers time to fall asleep between bursts.
                thread::sleep(Duration::from_millis(1));
            }
        }
        pool.drain();
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(ran.load(Ordering::SeqCst), 50);
        assert_eq!(pool.sleepers(), 0);
    });
}

#[test]
fn idle_hook_may_publish() {
    let (pool, mut locals) = Pool::<usize>::new(1);
    let local = locals.pop().unwrap();
    let mut calls = 0;
    let next = local.next_with(|| {
        calls += 1;
        pool.inject(5);
        Idle::Published
    });
    assert!(matches!(next, Next::Job(5)));
    assert_eq!(calls, 1);
}

// ---------------------------------------------------------------------------
// Batcher.

fn policy(batch_size: usize, prefetch_depth: usize, delay: Option<Duration>) -> BatchPolicy {
    BatchPolicy {
        batch_size,
        prefetch_depth,
        max_batch_delay: delay,
    }
}

#[test]
fn batcher_bounds_outstanding_batches() {
    let b = Batcher::new(policy(2, 2, None));
    assert!(matches!(b.push(0, None), Pushed::Batch(v) if v == [0]));
    assert!(matches!(b.push(1, None), Pushed::Batch(v) if v == [1]));
    // Two outstanding: the rest waits and groups.
    assert!(matches!(b.push(2, None), Pushed::Waiting(false)));
    assert!(matches!(b.push(3, None), Pushed::Waiting(false)));
    assert!(matches!(b.push(4, None), Pushed::Waiting(false)));
    assert_eq!(b.counts(), (3, 2));
    assert_eq!(b.started(None), Some(vec![2, 3]));
    assert_eq!(b.counts(), (1, 2));
    assert_eq!(b.started(None), Some(vec![4]));
    assert_eq!(b.started(None), None);
    assert_eq!(b.started(None), None);
    assert_eq!(b.counts(), (0, 0));
}

#[test]
fn batcher_waits_for_the_deadline() {
    let delay = Duration::from_millis(5);
    let b = Batcher::new(policy(3, 1, Some(delay)));
    let t0 = Instant::now();
    assert!(matches!(b.push(0, Some(t0)), Pushed::Waiting(true)));
    assert!(matches!(b.push(1, Some(t0)), Pushed::Waiting(false)));
    assert_eq!(b.deadline(), Some(t0 + delay));
    assert_eq!(b.poll(Some(t0 + delay / 2)), None);
    assert_eq!(b.poll(Some(t0 + delay)), Some(vec![0, 1]));
    // A full batch does not wait.
    for i in 2..5 {
        b.push(i, Some(t0 + delay));
    }
    assert_eq!(
        b.deadline(),
        None,
        "no deadline while the prefetch window is full"
    );
    assert_eq!(b.started(Some(t0 + delay)), Some(vec![2, 3, 4]));
}

#[test]
fn batcher_flush_ignores_deadlines_and_drain_empties() {
    let b = Batcher::new(policy(4, 1, Some(Duration::from_secs(3600))));
    let t0 = Instant::now();
    b.push(0, Some(t0));
    b.push(1, Some(t0));
    assert_eq!(b.flush(), vec![vec![0, 1]]);
    b.push(2, Some(t0));
    assert_eq!(b.drain(), [2]);
    assert_eq!(b.counts(), (0, 1));
    assert_eq!(b.push_many([3, 4, 5], Some(t0)), Vec::<Vec<usize>>::new());
    assert_eq!(b.started(Some(t0)), Some(vec![3, 4, 5]));
}

// ---------------------------------------------------------------------------
// Permits.

#[test]
fn permits_try_acquire_full_and_closed() {
    let p = Permits::new(2);
    assert_eq!(p.try_acquire(), Ok(()));
    assert_eq!(p.try_acquire(), Ok(()));
    assert_eq!(p.try_acquire(), Err(AcquireError::Timeout));
    assert_eq!(p.in_use(), 2);
    p.release();
    assert_eq!(p.try_acquire(), Ok(()));
    p.close();
    assert!(p.is_closed());
    assert_eq!(p.try_acquire(), Err(AcquireError::Closed));
    assert_eq!(p.acquire(None), Err(AcquireError::Closed));
    p.release();
    p.release();
    assert_eq!(p.in_use(), 0);
}

#[test]
fn permits_acquire_times_out() {
    let p = Permits::new(1);
    p.try_acquire().unwrap();
    assert_eq!(
        p.acquire(Some(Duration::from_millis(10))),
        Err(AcquireError::Timeout)
    );
    assert_eq!(p.in_use(), 1);
}

#[test]
fn permits_blocked_acquire_woken_by_release_and_by_close() {
    watchdog("permits", || {
        // Capacity 3, all taken: one release (2 of 3 still in use) must
        // let a blocked acquirer through.
        let p = Arc::new(Permits::new(3));
        for _ in 0..3 {
            p.try_acquire().unwrap();
        }
        let waiter = {
            let p = p.clone();
            thread::spawn(move || p.acquire(None))
        };
        thread::sleep(Duration::from_millis(5));
        p.release();
        assert_eq!(waiter.join().unwrap(), Ok(()));

        let waiter = {
            let p = p.clone();
            thread::spawn(move || p.acquire(None))
        };
        thread::sleep(Duration::from_millis(5));
        p.close();
        assert_eq!(waiter.join().unwrap(), Err(AcquireError::Closed));
    });
}

#[test]
fn permits_wait_idle() {
    watchdog("wait_idle", || {
        let p = Arc::new(Permits::new(4));
        for _ in 0..4 {
            p.try_acquire().unwrap();
        }
        let releaser = {
            let p = p.clone();
            thread::spawn(move || {
                for _ in 0..4 {
                    thread::sleep(Duration::from_millis(1));
                    p.release();
                }
            })
        };
        p.wait_idle();
        assert_eq!(p.in_use(), 0);
        releaser.join().unwrap();
    });
}

// ---------------------------------------------------------------------------
// CompletionCell.

/// A waker that counts its wakes.
#[derive(Default)]
struct CountWaker(AtomicUsize);

impl Wake for CountWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn cell_wait_timeout() {
    let cell = CompletionCell::new();
    assert_eq!(cell.wait_timeout(Duration::from_millis(5)), Err(()));
    assert!(!cell.is_complete());
    assert_eq!(cell.complete(7), Ok(()));
    assert_eq!(cell.complete(8), Err(8));
    assert_eq!(cell.wait_timeout(Duration::from_millis(5)), Ok(Some(7)));
    assert_eq!(cell.wait_timeout(Duration::from_millis(5)), Ok(None));
    assert!(cell.is_complete());
}

#[test]
fn cell_wait_timeout_woken_by_completer() {
    watchdog("wait_timeout", || {
        let cell = Arc::new(CompletionCell::new());
        let completer = {
            let cell = cell.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(5));
                cell.complete("done").unwrap();
            })
        };
        assert_eq!(cell.wait_timeout(HANG), Ok(Some("done")));
        completer.join().unwrap();
    });
}

#[test]
fn cell_poll_wakes_the_latest_waker() {
    let cell = CompletionCell::new();
    let first = Arc::new(CountWaker::default());
    let second = Arc::new(CountWaker::default());
    let w1 = Waker::from(first.clone());
    let w2 = Waker::from(second.clone());
    assert_eq!(cell.poll(&w1), Poll::Pending);
    assert_eq!(cell.poll(&w1), Poll::Pending);
    assert_eq!(cell.poll(&w2), Poll::Pending, "re-polled from another task");
    cell.complete(3).unwrap();
    assert_eq!(first.0.load(Ordering::SeqCst), 0);
    assert_eq!(second.0.load(Ordering::SeqCst), 1);
    assert_eq!(cell.poll(&w2), Poll::Ready(Some(3)));
    assert_eq!(cell.poll(&w2), Poll::Ready(None));
}

/// A waker that unparks a thread.
struct Unpark(thread::Thread, AtomicBool);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.1.store(true, Ordering::SeqCst);
        self.0.unpark();
    }
}

#[test]
fn cell_poll_from_a_blocking_executor() {
    watchdog("poll", || {
        for _ in 0..200 {
            let cell = Arc::new(CompletionCell::new());
            let completer = {
                let cell = cell.clone();
                thread::spawn(move || cell.complete(11).unwrap())
            };
            let unpark = Arc::new(Unpark(thread::current(), AtomicBool::new(false)));
            let waker = Waker::from(unpark.clone());
            let cx = Context::from_waker(&waker);
            let got = loop {
                match cell.poll(cx.waker()) {
                    Poll::Ready(v) => break v,
                    Poll::Pending => {
                        // park() may return spuriously; the loop re-polls.
                        while !unpark.1.swap(false, Ordering::SeqCst) {
                            thread::park();
                        }
                    }
                }
            };
            assert_eq!(got, Some(11));
            completer.join().unwrap();
        }
    });
}
