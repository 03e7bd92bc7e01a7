//! Injector, per-worker deques and stealing (`Local::find`, `Local::push`,
//! `Pool::inject`, `Pool::take_all`), without sleeping: batches pushed
//! locally and injected while two workers search are each found exactly
//! once, and none is lost.

use super::assert_exactly_once;
use crate::sched::pool::{Local, Pool};
use loom::thread;

/// A job is a batch of task ids.
type Batch = Vec<usize>;

/// Runs (records) every batch `local` can find until a search comes up empty.
fn run_found(local: &Local<Batch>) -> Vec<usize> {
    let mut ran = Vec::new();
    while let Some(batch) = local.find() {
        ran.extend(batch);
    }
    ran
}

/// Two workers search while worker 0 pushes on its own deque (where worker 1
/// may steal) and the main thread injects. After both stop, one more search
/// from a quiescent worker must find whatever is left — own deque, injector
/// or sibling's deque — and then nothing may remain in any queue.
#[test]
fn push_inject_and_steal() {
    loom::model(|| {
        let (pool, mut locals) = Pool::<Batch>::new(2);
        let l1 = locals.pop().unwrap();
        let l0 = locals.pop().unwrap();

        let w0 = thread::spawn(move || {
            l0.push(vec![0, 1]);
            let ran = run_found(&l0);
            (l0, ran)
        });
        let w1 = thread::spawn(move || {
            let ran = run_found(&l1);
            (l1, ran)
        });
        pool.inject(vec![2]);
        pool.inject(vec![3, 4]);

        let (l0, mut ran) = w0.join().unwrap();
        let (l1, ran1) = w1.join().unwrap();
        ran.extend(ran1);
        // Quiescent: a search finds everything still queued, from either side.
        ran.extend(run_found(&l1));
        ran.extend(run_found(&l0));
        assert!(pool.take_all().is_empty(), "a batch hid from find()");
        assert_exactly_once(ran, 5);
    });
}

/// Three batches queued in the injector: a worker's `steal_batch_and_pop`
/// takes one and moves another into its own deque, while the sibling steals
/// from the injector and from that deque. No batch is taken twice or dropped
/// in the move.
#[test]
fn injector_batch_steal() {
    loom::model(|| {
        let (pool, locals) = Pool::<Batch>::new(2);
        for id in 0..3 {
            pool.inject(vec![id]);
        }
        let workers: Vec<_> = locals
            .into_iter()
            .map(|local| {
                thread::spawn(move || {
                    let ran = run_found(&local);
                    (local, ran)
                })
            })
            .collect();
        let mut ran = Vec::new();
        let mut locals = Vec::new();
        for w in workers {
            let (local, r) = w.join().unwrap();
            ran.extend(r);
            locals.push(local);
        }
        for local in &locals {
            ran.extend(run_found(local));
        }
        assert!(pool.take_all().is_empty(), "a batch hid from find()");
        assert_exactly_once(ran, 3);
    });
}

/// Cancellation's sweep: `take_all` racing a worker's search hands every
/// queued batch to exactly one of them.
#[test]
fn take_all_vs_find() {
    loom::model(|| {
        let (pool, mut locals) = Pool::<Batch>::new(1);
        let l0 = locals.pop().unwrap();
        l0.push(vec![0]);
        pool.inject(vec![1]);
        pool.inject(vec![2]);
        let w0 = thread::spawn(move || {
            let ran = l0.find().unwrap_or_default();
            (l0, ran)
        });
        let mut taken: Vec<usize> = pool.take_all().into_iter().flatten().collect();
        let (l0, ran) = w0.join().unwrap();
        taken.extend(ran);
        taken.extend(run_found(&l0));
        assert_exactly_once(taken, 3);
    });
}
