//! `Lend`: a worker's interpreter lent to caller threads between the
//! worker's jobs (the caller-runs path of `invoke`).
//!
//! One `Lend` per interpreter a worker opens. Its state says who may attach:
//!
//! - `WORKER`: the worker (running a job, opening, ending); callers may not.
//! - `FREE`: the worker is between jobs and detached; one caller may take it.
//! - `LENT`: a caller is attached; the worker may not.
//! - `RETIRED`: a caller found the interpreter broken; callers may not take
//!   it again, the worker reclaims it and hears why (to recycle or repair it).
//! - `CLOSED`: the worker ends (or ended) the interpreter; nobody takes it.
//!
//! Worker: [`offer`](Lend::offer) before it looks for work,
//! [`reclaim`](Lend::reclaim) when it has a job (waiting while a caller
//! holds it), [`close`](Lend::close) before ending the interpreter.
//! Caller: [`take`](Lend::take), then [`give_back`](Lend::give_back).
//!
//! A worker that finds its interpreter lent marks the state `WAIT` (one
//! bit in the same word, so callers and worker agree on one order) and
//! sleeps on `freed`. A caller giving back a `WAIT`-marked lend hands the
//! interpreter straight to the worker (`WORKER`, or `RETIRED`), so a stream
//! of callers cannot starve it, and wakes it under `lock`, so the wakeup
//! cannot be lost (the `lend` loom models check both).

use super::sync::{timed_wait, AtomicU8, Condvar, Mutex, Ordering};
use std::time::Instant;

const WORKER: u8 = 0;
const FREE: u8 = 1;
const LENT: u8 = 2;
const RETIRED: u8 = 3;
const CLOSED: u8 = 4;
/// With `LENT`: the worker waits to reclaim it.
const WAIT: u8 = 8;

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Lend {
    state: AtomicU8,
    lock: Mutex<()>,
    freed: Condvar,
}

/// What the worker found when it reclaimed its interpreter.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reclaimed {
    /// Idle or given back intact.
    Intact,
    /// A caller retired it: see why before using it.
    Retired,
    /// Still lent at the deadline (only [`Lend::close`] has one).
    StillLent,
}

impl Default for Lend {
    fn default() -> Self {
        Lend::new()
    }
}

impl Lend {
    /// A lend the worker holds (`WORKER`).
    pub(crate) fn new() -> Lend {
        Lend {
            state: AtomicU8::new(WORKER),
            lock: Mutex::new(()),
            freed: Condvar::new(),
        }
    }

    fn cas(&self, from: u8, to: u8) -> bool {
        self.state
            .compare_exchange(from, to, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Worker, holding it, detached: callers may take it now.
    pub(crate) fn offer(&self) {
        self.cas(WORKER, FREE);
    }

    /// Caller: takes the interpreter if the worker offered it.
    pub(crate) fn take(&self) -> bool {
        self.cas(FREE, LENT)
    }

    /// Caller, detached again: gives the interpreter back, `broken` if the
    /// call left it unusable; to the worker itself if it waits for it.
    pub(crate) fn give_back(&self, broken: bool) {
        let mut old = self.state.load(Ordering::SeqCst);
        loop {
            debug_assert_eq!(old & !WAIT, LENT, "gave back a lend not taken");
            let new = match (broken, old & WAIT != 0) {
                (true, _) => RETIRED,
                (false, true) => WORKER,
                (false, false) => FREE,
            };
            match self
                .state
                .compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break,
                Err(now) => old = now,
            }
        }
        if old & WAIT != 0 {
            let _guard = self.lock.lock().unwrap();
            self.freed.notify_all();
        }
    }

    /// Worker: takes the interpreter back for a job, waiting while a caller
    /// holds it.
    pub(crate) fn reclaim(&self) -> Reclaimed {
        self.reclaim_by(None)
    }

    fn reclaim_by(&self, deadline: Option<Instant>) -> Reclaimed {
        loop {
            match self.state.load(Ordering::SeqCst) {
                // Held already, or handed over by a caller.
                WORKER | CLOSED => return Reclaimed::Intact,
                FREE => {
                    if self.cas(FREE, WORKER) {
                        return Reclaimed::Intact;
                    }
                }
                RETIRED => {
                    if self.cas(RETIRED, WORKER) {
                        return Reclaimed::Retired;
                    }
                }
                _ => {
                    let mut guard = self.lock.lock().unwrap();
                    if !self.cas(LENT, LENT | WAIT)
                        && self.state.load(Ordering::SeqCst) != LENT | WAIT
                    {
                        continue;
                    }
                    while self.state.load(Ordering::SeqCst) == LENT | WAIT {
                        guard = match deadline {
                            None => self.freed.wait(guard).unwrap(),
                            Some(d) => {
                                let now = Instant::now();
                                if now >= d {
                                    if self.cas(LENT | WAIT, LENT) {
                                        return Reclaimed::StillLent;
                                    }
                                    continue;
                                }
                                timed_wait(&self.freed, guard, d - now)
                            }
                        };
                    }
                }
            }
        }
    }

    /// Worker: reclaims the interpreter for good, before ending it, waiting
    /// for a caller that holds it until `deadline`. On `StillLent` the
    /// caller keeps it; `close` may be called again (after interrupting the
    /// caller).
    pub(crate) fn close(&self, deadline: Option<Instant>) -> Reclaimed {
        let got = self.reclaim_by(deadline);
        if got != Reclaimed::StillLent {
            self.state.store(CLOSED, Ordering::SeqCst);
        }
        got
    }

    /// Whether a caller holds it now.
    pub(crate) fn is_lent(&self) -> bool {
        self.state.load(Ordering::SeqCst) & !WAIT == LENT
    }

    /// Whether it was closed (no caller will take it again).
    pub(crate) fn is_closed(&self) -> bool {
        self.state.load(Ordering::SeqCst) == CLOSED
    }
}
