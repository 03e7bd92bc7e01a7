//! Sleep and wake for idle workers. See `README.md` beside this file for
//! the protocol and why no wakeup is lost.
//!
//! ## Memory ordering
//! The publisher's (`epoch += 1`; read `sleepers`) and the sleeper's
//! (`sleepers += 1`; read `epoch`) form a Dekker pair: at least one of them
//! must see the other's write. Both accesses to `sleepers` are
//! read-modify-writes (the publisher reads it with `fetch_add(0)`), so the
//! pair does not rest on the single total order of `SeqCst` loads: of the two
//! RMWs on `sleepers`, the later one reads the earlier one's write. If the
//! publisher's is later, it sees the sleeper; if the sleeper's is later, it
//! acquires the publisher's release and with it the `epoch += 1` before it.
//! (Loom models `SeqCst` loads and stores as acquire/release, so it can only
//! check this form of the argument.) The publisher's `epoch` RMW also
//! releases the job it pushed before it to any worker that later reads that
//! epoch.

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
        if self.any_sleeper() {
            // Taking the lock orders this after a sleeper's check: it is
            // either still before it (and sees the new epoch) or inside
            // `wait`. Notified after the release, the woken sleeper does
            // not block on the mutex again.
            drop(self.lock.lock().unwrap());
            self.wake.notify_one();
        }
    }

    /// Called on state changes every worker must see (termination, a new
    /// batching deadline): wakes every sleeper.
    pub(crate) fn notify_all(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.any_sleeper() {
            // Taking the lock orders this after a sleeper's check: it is
            // either still before it (and sees the new epoch) or inside
            // `wait`. Notified after the release, the woken sleeper does
            // not block on the mutex again.
            drop(self.lock.lock().unwrap());
            self.wake.notify_all();
        }
    }

    /// The publisher's half of the Dekker pair: an RMW, not a load, so that
    /// it is ordered against the sleeper's `sleepers += 1` by modification
    /// order (see the module's memory-ordering notes).
    fn any_sleeper(&self) -> bool {
        self.sleepers.fetch_add(0, Ordering::SeqCst) > 0
    }

    /// Number of workers inside [`sleep`](Self::sleep) right now (a snapshot,
    /// for metrics and tests; not part of the wake protocol).
    #[cfg(any(test, gilpool_loom))]
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
