//! Sleep/wake: a worker going to sleep (ticket → search → sleep, as
//! `Local::next` does) while another thread publishes a job always runs the
//! job. The worker thread is joined, so a lost wakeup shows up as a loom
//! deadlock.
//!
//! Under `--cfg gilpool_loom_broken_sleep` the sleeper skips its re-check of
//! the epoch; the same scenarios then must fail, and the twins in `broken`
//! pass only if loom finds the lost wakeup.

use crate::sched::pool::{Local, Next, Pool};
use loom::thread;

fn expect_job(local: &Local<usize>) -> usize {
    match local.next() {
        Next::Job(j) => j,
        Next::Exit => panic!("worker exited, but the pool was never terminated"),
    }
}

/// One worker waits in `next()`; the main thread injects one job.
fn inject_while_worker_sleeps() {
    let (pool, mut locals) = Pool::<usize>::new(1);
    let local = locals.pop().unwrap();
    let worker = thread::spawn(move || expect_job(&local));
    pool.inject(7);
    assert_eq!(worker.join().unwrap(), 7);
}

/// Worker 1 waits in `next()`; worker 0 pushes a job on its own deque and
/// leaves. Worker 1 must be woken and steal it.
fn local_push_wakes_sibling() {
    let (_pool, mut locals) = Pool::<usize>::new(2);
    let l1 = locals.pop().unwrap();
    let l0 = locals.pop().unwrap();
    let sleeper = thread::spawn(move || expect_job(&l1));
    let pusher = thread::spawn(move || {
        l0.push(9);
        l0 // keep the deque alive until the sleeper has its job
    });
    assert_eq!(sleeper.join().unwrap(), 9);
    drop(pusher.join().unwrap());
}

/// The worker's loop spelled out with the raw protocol: `ticket` before
/// `find`, then `sleep(ticket)`.
fn raw_ticket_find_sleep() {
    let (pool, mut locals) = Pool::<usize>::new(1);
    let local = locals.pop().unwrap();
    let worker = thread::spawn(move || loop {
        let ticket = local.ticket();
        if let Some(j) = local.find() {
            return j;
        }
        local.sleep(ticket, None);
    });
    pool.inject(3);
    assert_eq!(worker.join().unwrap(), 3);
}

#[cfg(not(gilpool_loom_broken_sleep))]
mod correct {
    #[test]
    fn inject_while_worker_sleeps() {
        loom::model(super::inject_while_worker_sleeps);
    }

    #[test]
    fn local_push_wakes_sibling() {
        loom::model(super::local_push_wakes_sibling);
    }

    #[test]
    fn raw_ticket_find_sleep() {
        loom::model(super::raw_ticket_find_sleep);
    }
}

/// The same scenarios against the broken sleep: each must deadlock.
///
/// A loom deadlock report aborts the process rather than unwinding cleanly
/// (loom panics again while the blocked threads' stacks are dropped), so
/// `#[should_panic]` cannot observe it. Each test instead re-runs itself in
/// a child copy of this test binary, as rayon does for its crash tests, and
/// passes only if the child failed with loom's "deadlock" report.
#[cfg(gilpool_loom_broken_sleep)]
mod broken {
    use std::process::Command;

    /// Set in the child: run the model itself.
    const CHILD: &str = "GILPOOL_LOOM_BROKEN_SLEEP_CHILD";

    fn expect_deadlock(name: &str, scenario: fn()) {
        if std::env::var_os(CHILD).is_some() {
            loom::model(scenario);
            return;
        }
        // libtest names tests by their path without the crate name.
        let module = module_path!().split_once("::").map_or("", |(_, m)| m);
        let test = format!("{module}::{name}");
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", &test, "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "loom did not catch the broken sleep in {test}; child output:\n{stderr}"
        );
        assert!(
            stderr.contains("deadlock"),
            "{test} failed, but not with a lost wakeup (deadlock); child output:\n{stderr}"
        );
        eprintln!(
            "{test}: loom reported the lost wakeup, as it must: {}",
            first_line(&stderr)
        );
    }

    fn first_line(stderr: &str) -> &str {
        stderr
            .lines()
            .find(|l| l.contains("deadlock"))
            .unwrap_or_default()
    }

    #[test]
    fn inject_while_worker_sleeps() {
        expect_deadlock(
            "inject_while_worker_sleeps",
            super::inject_while_worker_sleeps,
        );
    }

    #[test]
    fn local_push_wakes_sibling() {
        expect_deadlock("local_push_wakes_sibling", super::local_push_wakes_sibling);
    }

    #[test]
    fn raw_ticket_find_sleep() {
        expect_deadlock("raw_ticket_find_sleep", super::raw_ticket_find_sleep);
    }
}
