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
//!
//! A lazy publisher ([`Sleep::notify_lazy`], for lanes that share one GIL)
//! also reads `waking` with an RMW, and a woken sleeper clears it with one
//! (a swap) before it searches: a publisher that saw a wake pending is thus
//! released to the sleeper that clears it, whose search then sees the job.
//! `sleepers` falls and `waking` is cleared under the lock, so under it
//! `sleepers > 0` means a thread that will take the lock again and clear
//! `waking` after the lazy publisher set it.

use super::sync::{timed_wait, AtomicUsize, Condvar, Mutex, Ordering};
use std::time::Duration;

/// What a worker read of the epoch before it last looked for work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket(usize);

/// The sleep/wake state of one lane.
#[derive(Debug)]
pub(crate) struct Sleep {
    epoch: AtomicUsize,
    sleepers: AtomicUsize,
    /// 1 while a lazy publisher's wake-up is on its way to a sleeper.
    waking: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Sleep {
    pub(crate) fn new() -> Self {
        Sleep {
            epoch: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            waking: AtomicUsize::new(0),
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

    /// Called after new work was published on a lane whose workers share
    /// one GIL: wakes a sleeper only when every one of the `serving`
    /// threads sleeps and no wake-up is already on its way. A second worker
    /// woken beside a running one could only contend with it for the GIL.
    /// Returns `true` when it left a sleeper asleep: the job is then left
    /// to a worker that is awake (or being woken), which searches again
    /// before it sleeps — unless its job never ends, which the caller
    /// covers with a later [`notify_one`](Self::notify_one) (`Pool`'s
    /// helper check). With no sleeper at all there is no one to wake later
    /// either: every worker searches again before it sleeps.
    pub(crate) fn notify_lazy(&self, serving: usize) -> bool {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let asleep = self.sleepers.fetch_add(0, Ordering::SeqCst);
        if asleep == 0 {
            return false;
        }
        if asleep < serving || self.waking.fetch_add(0, Ordering::SeqCst) > 0 {
            return true;
        }
        let guard = self.lock.lock().unwrap();
        // Under the lock `sleepers` counts threads inside `wait` (or woken
        // and not yet back), each of which clears `waking` under it.
        let asleep = self.sleepers.load(Ordering::SeqCst);
        let notify = asleep > 0 && self.waking.swap(1, Ordering::SeqCst) == 0;
        drop(guard);
        if notify {
            self.wake.notify_one();
        }
        !notify && asleep > 0
    }

    /// How many workers sleep right now (a snapshot, for the idle spin of
    /// a lazy lane: not part of the wake protocol).
    pub(crate) fn asleep(&self) -> usize {
        self.sleepers.load(Ordering::Relaxed)
    }

    /// Whether any worker sleeps right now (a snapshot, for the helper
    /// check: a lazy lane whose workers are all awake needs none).
    pub(crate) fn any_asleep(&self) -> bool {
        self.any_sleeper()
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
        let guard = if self.should_sleep(ticket) {
            let guard = match timeout {
                None => self.wake.wait(guard).unwrap(),
                Some(t) => timed_wait(&self.wake, guard, t),
            };
            // Whatever woke it (a lazy publisher's notify among others),
            // this thread searches next: no wake-up is pending any more.
            self.waking.swap(0, Ordering::SeqCst);
            guard
        } else {
            guard
        };
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        drop(guard);
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
