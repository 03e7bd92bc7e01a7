//! `Permits`: never more than `capacity` permits in use, a blocked acquirer
//! is always woken once a permit is free, and `close` wakes every waiter
//! with `Closed`.

use crate::sched::permits::{AcquireError, Permits};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

/// Acquire, check how many holders are inside, release.
fn use_once(permits: &Permits, inside: &AtomicUsize) {
    permits.acquire(None).expect("not closed");
    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
    assert!(
        now <= permits.capacity(),
        "{now} holders, capacity {}",
        permits.capacity()
    );
    assert!(permits.in_use() <= permits.capacity());
    inside.fetch_sub(1, Ordering::SeqCst);
    permits.release();
}

/// `threads` threads (the main one included) each take and return one
/// permit of `capacity`. Joining them shows nobody blocks forever.
fn contend(capacity: usize, threads: usize) {
    let permits = Arc::new(Permits::new(capacity));
    let inside = Arc::new(AtomicUsize::new(0));
    let others: Vec<_> = (1..threads)
        .map(|_| {
            let (permits, inside) = (permits.clone(), inside.clone());
            thread::spawn(move || use_once(&permits, &inside))
        })
        .collect();
    use_once(&permits, &inside);
    for t in others {
        t.join().unwrap();
    }
    assert_eq!(permits.in_use(), 0);
}

#[test]
fn capacity_1_two_threads() {
    loom::model(|| contend(1, 2));
}

#[test]
fn capacity_1_three_threads() {
    loom::model(|| contend(1, 3));
}

#[test]
fn capacity_2_three_threads() {
    loom::model(|| contend(2, 3));
}

/// The main thread holds every permit of `capacity`; a second thread blocks
/// in `acquire`; one release must let it through even though the main
/// thread keeps the rest (it joins the acquirer while holding them).
fn one_release_wakes_blocked_acquirer(capacity: usize) {
    let permits = Arc::new(Permits::new(capacity));
    for _ in 0..capacity {
        permits.try_acquire().unwrap();
    }
    let acquirer = {
        let permits = permits.clone();
        thread::spawn(move || permits.acquire(None))
    };
    permits.release();
    assert_eq!(acquirer.join().unwrap(), Ok(()));
    assert_eq!(permits.in_use(), capacity);
}

#[test]
fn release_wakes_blocked_acquirer_capacity_1() {
    loom::model(|| one_release_wakes_blocked_acquirer(1));
}

/// Capacity 3: the release leaves 2 of 3 in use (more than half).
#[test]
fn release_wakes_blocked_acquirer_capacity_3() {
    loom::model(|| one_release_wakes_blocked_acquirer(3));
}

/// Two threads block on a full capacity-1 permit; `close` wakes both with
/// `Closed` (the holder never releases before closing).
#[test]
fn close_wakes_waiters() {
    loom::model(|| {
        let permits = Arc::new(Permits::new(1));
        permits.try_acquire().unwrap();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let permits = permits.clone();
                thread::spawn(move || permits.acquire(None))
            })
            .collect();
        permits.close();
        for w in waiters {
            assert_eq!(w.join().unwrap(), Err(AcquireError::Closed));
        }
        assert_eq!(permits.try_acquire(), Err(AcquireError::Closed));
        permits.release();
        assert_eq!(permits.in_use(), 0);
    });
}

/// `wait_idle` returns once the last permit is back, whatever the order.
#[test]
fn wait_idle_vs_release() {
    loom::model(|| {
        let permits = Arc::new(Permits::new(2));
        permits.try_acquire().unwrap();
        permits.try_acquire().unwrap();
        let releaser = {
            let permits = permits.clone();
            thread::spawn(move || {
                permits.release();
                permits.release();
            })
        };
        permits.wait_idle();
        assert_eq!(permits.in_use(), 0);
        releaser.join().unwrap();
    });
}
