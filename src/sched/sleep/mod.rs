//! Sleep and wake for idle workers. See `README.md` beside this file for
//! the protocol and why no wakeup is lost.
//!
//! ## Memory ordering
//! `epoch` and `sleepers` are accessed with `SeqCst` on both sides: the
//! publisher's (`epoch += 1`; read `sleepers`) and the sleeper's
//! (`sleepers += 1`; read `epoch`) form a Dekker pair, so at least one of
//! them sees the other's write. The publisher's `epoch` RMW also releases
//! the job it pushed before it to any worker that later reads that epoch.

use super::sync::{AtomicUsize, Condvar, Mutex, Ordering};
use std::time::Duration;

/// What a worker read of the epoch before it last looked for work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket(usize);

/// The sleep/wake state of one lane.
#[derive(Debug)]
pub(crate) struct Sleep {
    epoch: AtomicUsize,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Sleep {
    pub(crate) fn new() -> Self {
        Sleep {
            epoch: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    /// Read before looking for work; hand it to [`sleep`](Self::sleep).
    pub(crate) fn ticket(&self) -> Ticket {
        Ticket(self.epoch.load(Ordering::SeqCst))
    }

    /// Called after new work was published: wakes one sleeper, if any.
    pub(crate) fn notify_one(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock().unwrap();
            self.wake.notify_one();
        }
    }

    /// Called on state changes every worker must see (termination, a new
    /// batching deadline): wakes every sleeper.
    pub(crate) fn notify_all(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock().unwrap();
            self.wake.notify_all();
        }
    }

    /// Number of workers inside [`sleep`](Self::sleep) right now.
    pub(crate) fn sleepers(&self) -> usize {
        self.sleepers.load(Ordering::SeqCst)
    }

    /// Sleeps unless something was published since `ticket` was taken;
    /// wakes on a notification, or after `timeout` when one is given. May
    /// return spuriously: callers look for work again either way.
    pub(crate) fn sleep(&self, ticket: Ticket, timeout: Option<Duration>) {
        let guard = self.lock.lock().unwrap();
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        if self.should_sleep(ticket) {
            match timeout {
                None => drop(self.wake.wait(guard).unwrap()),
                Some(t) => wait_timeout(&self.wake, guard, t),
            }
        } else {
            drop(guard);
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }

    #[cfg(not(gilpool_loom_broken_sleep))]
    fn should_sleep(&self, ticket: Ticket) -> bool {
        self.epoch.load(Ordering::SeqCst) == ticket.0
    }

    /// Test-only broken variant: forgets to re-check the epoch after
    /// announcing itself, so a job published between the worker's last
    /// search and its sleep is never seen. The loom suite must catch this.
    #[cfg(gilpool_loom_broken_sleep)]
    fn should_sleep(&self, _ticket: Ticket) -> bool {
        true
    }
}

#[cfg(not(gilpool_loom))]
fn wait_timeout(cv: &Condvar, guard: super::sync::MutexGuard<'_, ()>, t: Duration) {
    drop(cv.wait_timeout(guard, t).unwrap());
}

#[cfg(gilpool_loom)]
fn wait_timeout(cv: &Condvar, guard: super::sync::MutexGuard<'_, ()>, _t: Duration) {
    // loom has no clock: a timed sleep is modelled as an untimed one.
    drop(cv.wait(guard).unwrap());
}
