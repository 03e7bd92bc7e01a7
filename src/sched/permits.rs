//! `Permits`: the bound on one handler's in-flight tasks (backpressure).
//!
//! A task takes a permit when submitted and returns it when its future is
//! completed, whatever the outcome, so at most `capacity` tasks are
//! submitted-but-unfinished at any time.
//!
//! ## Memory ordering
//! `used` and `waiters` form a Dekker pair: a releaser decrements `used`
//! then reads `waiters`; a waiter increments `waiters` (under the lock) then
//! re-tries `used`. Both accesses to `waiters` are read-modify-writes (the
//! releaser reads it with `fetch_add(0)`), so the later of the two reads the
//! earlier one's write: either the releaser sees the waiter, takes and
//! releases the lock (which the waiter holds until it is parked) and then
//! notifies, reaching the parked waiter, or the waiter
//! acquires the releaser's write and with it the decrement of `used` before
//! it, and takes the freed permit. Every release that sees a waiter
//! notifies: a release cannot count on later ones (the remaining holders may
//! be waiting on the blocked acquirer).

use super::sync::{timed_wait, AtomicBool, AtomicUsize, Condvar, Mutex, Ordering};
use std::time::{Duration, Instant};

/// Why a blocking acquire gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AcquireError {
    /// The timeout passed with every permit still taken.
    Timeout,
    /// The permits were closed (shutdown).
    Closed,
}

/// A counting bound with blocking, timed and non-blocking acquire.
#[derive(Debug)]
pub(crate) struct Permits {
    used: AtomicUsize,
    capacity: usize,
    waiters: AtomicUsize,
    closed: AtomicBool,
    lock: Mutex<()>,
    freed: Condvar,
}

impl Permits {
    pub(crate) fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "Permits need a capacity of at least 1");
        Permits {
            used: AtomicUsize::new(0),
            capacity,
            waiters: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            lock: Mutex::new(()),
            freed: Condvar::new(),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Permits taken now.
    pub(crate) fn in_use(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    /// Takes a permit if one is free. `Err(Closed)` after `close`,
    /// `Err(Timeout)` when all are taken.
    pub(crate) fn try_acquire(&self) -> Result<(), AcquireError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(AcquireError::Closed);
        }
        let mut used = self.used.load(Ordering::SeqCst);
        loop {
            if used >= self.capacity {
                return Err(AcquireError::Timeout);
            }
            match self.used.compare_exchange_weak(
                used,
                used + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => used = now,
            }
        }
    }

    /// Takes a permit, blocking while none is free, at most `timeout` when given.
    pub(crate) fn acquire(&self, timeout: Option<Duration>) -> Result<(), AcquireError> {
        match self.try_acquire() {
            Err(AcquireError::Timeout) => {}
            done => return done,
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut guard = self.lock.lock().unwrap();
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let result = loop {
            match self.try_acquire() {
                Err(AcquireError::Timeout) => {}
                done => break done,
            }
            match deadline {
                None => guard = self.freed.wait(guard).unwrap(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        break Err(AcquireError::Timeout);
                    }
                    guard = timed_wait(&self.freed, guard, d - now);
                }
            }
        };
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        drop(guard);
        result
    }

    /// Returns a permit.
    pub(crate) fn release(&self) {
        let before = self.used.fetch_sub(1, Ordering::SeqCst);
        debug_assert!(before > 0, "permit released twice");
        if self.waiters.fetch_add(0, Ordering::SeqCst) > 0 {
            // The lock orders this after a waiter's check (it is in `wait`
            // or will see the freed permit); notify after the release so
            // the woken waiter does not block on the mutex again.
            drop(self.lock.lock().unwrap());
            self.freed.notify_all();
        }
    }

    /// Blocks until no permit is taken.
    #[cfg(any(test, gilpool_loom))]
    pub(crate) fn wait_idle(&self) {
        if self.in_use() == 0 {
            return;
        }
        let mut guard = self.lock.lock().unwrap();
        self.waiters.fetch_add(1, Ordering::SeqCst);
        while self.in_use() != 0 {
            guard = self.freed.wait(guard).unwrap();
        }
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        drop(guard);
    }

    /// Blocks until no permit is taken or `deadline` passes; returns
    /// whether the permits became idle.
    #[cfg(not(gilpool_loom))]
    pub(crate) fn wait_idle_until(&self, deadline: Instant) -> bool {
        if self.in_use() == 0 {
            return true;
        }
        let mut guard = self.lock.lock().unwrap();
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let idle = loop {
            if self.in_use() == 0 {
                break true;
            }
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            guard = timed_wait(&self.freed, guard, deadline - now);
        };
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        drop(guard);
        idle
    }

    /// Refuses further acquires and wakes blocked acquirers with `Closed`.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        drop(self.lock.lock().unwrap());
        self.freed.notify_all();
    }

    #[cfg(any(test, gilpool_loom))]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}
