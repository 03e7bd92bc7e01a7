//! Lazy wakes (`Wake::Lazy`, the lanes whose workers share one GIL): a
//! published job wakes a sleeper only when every serving thread sleeps and
//! no wake-up is on its way, so a job may be left to a worker that is
//! awake. Every job must still run with no other wake-up to rescue it: the
//! main thread waits until every job ran before it drains the pool (the
//! drain's `notify_all` would wake anyone), so a job left with every worker
//! asleep — or a `waking` flag never cleared — is a loom deadlock.
//!
//! The helper check (`Pool::help`, run by the watchdog for a worker stuck
//! in a long job) is not modelled: here every job ends.

use super::assert_exactly_once;
use crate::sched::pool::{Local, Next, Pool, Wake};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

/// Jobs run so far, and a condvar to wait for a count of them.
#[derive(Default)]
struct Ran {
    ids: Mutex<Vec<usize>>,
    more: Condvar,
}

impl Ran {
    fn record(&self, id: usize) {
        self.ids.lock().unwrap().push(id);
        self.more.notify_all();
    }

    fn wait_for(&self, n: usize) {
        let mut ids = self.ids.lock().unwrap();
        while ids.len() < n {
            ids = self.more.wait(ids).unwrap();
        }
    }
}

/// A lazy pool of `workers` serving threads, each looping on `next()`.
fn start(workers: usize) -> (Arc<Pool<usize>>, Arc<Ran>, Vec<thread::JoinHandle<()>>) {
    let (pool, locals) = Pool::<usize>::with_wake(workers, Wake::Lazy);
    let ran = Arc::new(Ran::default());
    let handles = locals
        .into_iter()
        .map(|local: Local<usize>| {
            pool.serve();
            let ran = ran.clone();
            thread::spawn(move || {
                while let Next::Job(id) = local.next() {
                    ran.record(id);
                }
            })
        })
        .collect();
    (pool, ran, handles)
}

fn finish(pool: &Pool<usize>, ran: &Ran, handles: Vec<thread::JoinHandle<()>>, n: usize) {
    pool.drain();
    for h in handles {
        h.join().unwrap();
    }
    assert_exactly_once(ran.ids.lock().unwrap().clone(), n);
}

/// Two jobs published back to back to two workers: the second may be left
/// to the worker the first woke, or to one that is still searching.
#[test]
fn two_jobs_two_workers() {
    loom::model(|| {
        let (pool, ran, handles) = start(2);
        pool.inject(0);
        pool.inject(1);
        ran.wait_for(2);
        finish(&pool, &ran, handles, 2);
    });
}

/// A job, then another once the first ran: the wake-up of the first must
/// be cleared, so the second wakes a worker if both went back to sleep.
#[test]
fn wake_is_cleared_for_the_next_job() {
    loom::model(|| {
        let (pool, ran, handles) = start(2);
        pool.inject(0);
        ran.wait_for(1);
        pool.inject(1);
        ran.wait_for(2);
        finish(&pool, &ran, handles, 2);
    });
}

/// One worker: every job published while it runs or searches is left to
/// it.
#[test]
fn one_worker_takes_what_it_was_left() {
    loom::model(|| {
        let (pool, ran, handles) = start(1);
        pool.inject(0);
        pool.inject(1);
        ran.wait_for(2);
        finish(&pool, &ran, handles, 2);
    });
}
