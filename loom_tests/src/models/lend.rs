//! `Lend`: a worker's interpreter is used by one thread at a time (the
//! worker or one caller), a worker waiting to reclaim it is always woken
//! when it is given back, nobody takes it after `close`, and a caller's
//! "broken" report reaches the worker exactly once.

use crate::sched::lend::{Lend, Reclaimed};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

/// Marks the interpreter in use for a moment; fails if someone else is.
fn inside(users: &AtomicUsize) {
    let before = users.fetch_add(1, Ordering::SeqCst);
    assert_eq!(before, 0, "two threads attached to one interpreter");
    users.fetch_sub(1, Ordering::SeqCst);
}

/// A caller's `invoke`: takes the interpreter if it can, uses it, gives it
/// back (broken if asked). Returns whether it ran there.
fn caller(lend: &Lend, users: &AtomicUsize, broken: bool) -> bool {
    if !lend.take() {
        return false;
    }
    inside(users);
    lend.give_back(broken);
    true
}

/// The worker: offers, reclaims for one job, offers again, then closes.
/// Returns how many times it heard "retired".
fn worker(lend: &Lend, users: &AtomicUsize) -> usize {
    let mut retired = 0;
    lend.offer();
    if lend.reclaim() == Reclaimed::Retired {
        retired += 1;
    }
    inside(users);
    lend.offer();
    if lend.close(None) == Reclaimed::Retired {
        retired += 1;
    }
    inside(users);
    assert!(lend.is_closed());
    assert!(!lend.take(), "taken after close");
    retired
}

fn run(callers: usize, broken: bool) {
    let lend = Arc::new(Lend::new());
    let users = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..callers)
        .map(|_| {
            let (lend, users) = (lend.clone(), users.clone());
            thread::spawn(move || caller(&lend, &users, broken))
        })
        .collect();
    let retired = worker(&lend, &users);
    let ran = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|r| *r)
        .count();
    if broken {
        assert_eq!(retired, ran, "every broken give-back heard once");
    } else {
        assert_eq!(retired, 0);
    }
}

#[test]
fn one_caller() {
    loom::model(|| run(1, false));
}

#[test]
fn two_callers() {
    loom::model(|| run(2, false));
}

#[test]
fn a_broken_interpreter_is_reported_once() {
    loom::model(|| run(1, true));
}
