//! Shutdown with batches in flight: workers loop on `Local::next()` while
//! the main thread publishes and then calls `drain()` (every queued job runs)
//! or `cancel()` (queued jobs are left for `take_all`). Every worker exits —
//! the threads are joined, so a worker stuck asleep is a loom deadlock — and
//! every task is completed or cancelled exactly once.

use super::assert_exactly_once;
use crate::sched::pool::{Local, Next, Pool};
use loom::thread;

/// A worker's loop: run (record) jobs until told to exit. A job `id` listed
/// in `follow_ups` publishes `id + 1` on the worker's own deque when it
/// runs, as a worker does with the batch `Batcher::started` hands back.
fn work(local: Local<usize>, follow_ups: &[usize]) -> Vec<usize> {
    let mut ran = Vec::new();
    loop {
        match local.next() {
            Next::Job(id) => {
                if follow_ups.contains(&id) {
                    local.push(id + 1);
                }
                ran.push(id);
            }
            Next::Exit => return ran,
        }
    }
}

fn spawn_workers(
    locals: Vec<Local<usize>>,
    follow_ups: &'static [usize],
) -> Vec<thread::JoinHandle<Vec<usize>>> {
    locals
        .into_iter()
        .map(|local| thread::spawn(move || work(local, follow_ups)))
        .collect()
}

fn join_all(workers: Vec<thread::JoinHandle<Vec<usize>>>) -> Vec<usize> {
    workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect()
}

/// The smallest drain: one worker, one job injected, then `drain()`. The
/// worker must not exit on a search that came up empty before the drain
/// (and before the job was published).
#[test]
fn drain_after_inject() {
    loom::model(|| {
        let (pool, locals) = Pool::<usize>::new(1);
        let workers = spawn_workers(locals, &[]);
        pool.inject(0);
        pool.drain();
        let ran = join_all(workers);
        assert!(pool.take_all().is_empty(), "drain left a job queued");
        assert_exactly_once(ran, 1);
    });
}

/// Two workers; two jobs injected, then `drain()`: both jobs run, both
/// workers exit, nothing is left queued.
#[test]
fn drain_runs_every_queued_job() {
    loom::model(|| {
        let (pool, locals) = Pool::<usize>::new(2);
        let workers = spawn_workers(locals, &[]);
        pool.inject(0);
        pool.inject(1);
        pool.drain();
        let ran = join_all(workers);
        assert!(pool.take_all().is_empty(), "drain left a job queued");
        assert_exactly_once(ran, 2);
    });
}

/// One worker; a job that publishes a follow-up while `drain()` runs: the
/// follow-up, published after the drain began, still runs.
#[test]
fn drain_runs_work_published_while_draining() {
    loom::model(|| {
        let (pool, locals) = Pool::<usize>::new(1);
        let workers = spawn_workers(locals, &[0]);
        pool.inject(0);
        pool.drain();
        let ran = join_all(workers);
        assert!(pool.take_all().is_empty(), "drain left a job queued");
        assert_exactly_once(ran, 2);
    });
}

/// Two workers; two jobs injected, then `cancel()`: both workers exit; each
/// job either ran or is handed back by `take_all` (to be completed as
/// cancelled), never both, never neither.
#[test]
fn cancel_then_take_all() {
    loom::model(|| {
        let (pool, locals) = Pool::<usize>::new(2);
        let workers = spawn_workers(locals, &[]);
        pool.inject(0);
        pool.inject(1);
        pool.cancel();
        let mut seen = join_all(workers);
        seen.extend(pool.take_all());
        assert_exactly_once(seen, 2);
    });
}

/// `cancel()` racing a job that publishes a follow-up: the follow-up is run
/// or swept by `take_all`, exactly once.
#[test]
fn cancel_with_follow_up_in_flight() {
    loom::model(|| {
        let (pool, locals) = Pool::<usize>::new(1);
        let workers = spawn_workers(locals, &[0]);
        pool.inject(0);
        pool.cancel();
        let mut seen = join_all(workers);
        seen.extend(pool.take_all());
        // Job 0 may never have run (then no follow-up exists).
        if seen.len() == 1 {
            assert_eq!(seen, [0]);
        } else {
            assert_exactly_once(seen, 2);
        }
    });
}
