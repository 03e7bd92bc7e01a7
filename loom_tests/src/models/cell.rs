//! `CompletionCell`: exactly one completion wins, and a waiter — blocked in
//! `wait()` or registered through `poll()` — is always woken.

use crate::sched::cell::CompletionCell;
use loom::sync::Arc;
use loom::thread;
use std::task::{Poll, Wake, Waker};

/// One completer, one blocking waiter: the waiter gets the value, and the
/// cell then refuses a second completion and has nothing left to take.
#[test]
fn complete_vs_wait() {
    loom::model(|| {
        let cell = Arc::new(CompletionCell::new());
        let completer = {
            let cell = cell.clone();
            thread::spawn(move || cell.complete(1))
        };
        assert_eq!(cell.wait(), Some(1));
        assert_eq!(completer.join().unwrap(), Ok(()));
        assert!(cell.is_complete());
        assert_eq!(cell.complete(2), Err(2));
        assert_eq!(cell.wait(), None);
    });
}

/// Two completers race while a waiter blocks: exactly one `complete`
/// succeeds, the other gets its value back, and the waiter sees the winner's.
#[test]
fn complete_twice_vs_wait() {
    loom::model(|| {
        let cell = Arc::new(CompletionCell::new());
        let completers: Vec<_> = [1, 2]
            .into_iter()
            .map(|v| {
                let cell = cell.clone();
                thread::spawn(move || (v, cell.complete(v)))
            })
            .collect();
        let got = cell.wait().expect("value taken twice");
        let results: Vec<_> = completers.into_iter().map(|c| c.join().unwrap()).collect();
        let winners: Vec<usize> = results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(v, _)| *v)
            .collect();
        assert_eq!(
            winners,
            [got],
            "exactly one completion, and it is the one seen"
        );
        for (v, r) in results {
            if v != got {
                assert_eq!(r, Err(v), "the loser gets its value back");
            }
        }
    });
}

/// A `Waker` that unparks a loom thread.
struct Unpark(thread::Thread);

impl Wake for Unpark {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }
}

/// A task-style waiter: `poll`, and park until the registered waker fires.
/// A completion that slipped between the check and the registration would
/// leave the waiter parked forever (a loom deadlock).
#[test]
fn complete_vs_poll() {
    loom::model(|| {
        let cell = Arc::new(CompletionCell::new());
        let completer = {
            let cell = cell.clone();
            thread::spawn(move || cell.complete(5))
        };
        let waker = Waker::from(std::sync::Arc::new(Unpark(thread::current())));
        let got = loop {
            match cell.poll(&waker) {
                Poll::Ready(v) => break v,
                Poll::Pending => thread::park(),
            }
        };
        assert_eq!(got, Some(5));
        assert_eq!(completer.join().unwrap(), Ok(()));
    });
}

/// `wait_timeout` (an immediate check under loom) racing the completer:
/// either it takes the value, or it reports "pending" and a later `wait`
/// takes it. The value is never lost or taken twice.
#[test]
fn complete_vs_wait_timeout() {
    loom::model(|| {
        let cell = Arc::new(CompletionCell::new());
        let completer = {
            let cell = cell.clone();
            thread::spawn(move || cell.complete(3))
        };
        let got = match cell.wait_timeout(std::time::Duration::ZERO) {
            Ok(v) => v,
            Err(()) => cell.wait(),
        };
        assert_eq!(got, Some(3));
        assert_eq!(cell.wait_timeout(std::time::Duration::ZERO), Ok(None));
        assert_eq!(completer.join().unwrap(), Ok(()));
    });
}
