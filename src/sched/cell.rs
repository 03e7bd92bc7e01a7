//! `CompletionCell`: the one-shot slot a task's result lands in.
//!
//! ## Memory ordering
//! All state lives under one mutex, so completion happens-before any read
//! of the value (the mutex's release/acquire). A blocking waiter counts
//! itself in `waiters` under the lock before it parks; `complete` reads that
//! count under the lock and, only when it is non-zero — a futex wake per
//! task otherwise dominates the cost of tiny tasks — notifies the condvar
//! after releasing the lock, then wakes a registered `Waker`. A waiter that
//! checked the slot under the lock either saw the value or is counted and
//! parked (or registered its waker) before `complete` can take the lock, so
//! the notify that follows reaches it.

use super::sync::{Condvar, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

#[derive(Debug)]
enum Slot<T> {
    Pending(Option<Waker>),
    Ready(T),
    Taken,
}

#[derive(Debug)]
struct State<T> {
    slot: Slot<T>,
    /// Threads blocked in `wait`/`wait_timeout` right now.
    waiters: usize,
}

/// A value delivered exactly once, awaited by blocking or by polling.
#[derive(Debug)]
pub(crate) struct CompletionCell<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

impl<T> CompletionCell<T> {
    pub(crate) fn new() -> Self {
        CompletionCell {
            state: Mutex::new(State {
                slot: Slot::Pending(None),
                waiters: 0,
            }),
            ready: Condvar::new(),
        }
    }

    /// Stores `value` unless a value was already stored; gives it back then.
    ///
    /// Blocked waiters are notified after the lock is released: notified
    /// under it, a waiter wakes only to block again on the mutex, which
    /// costs two more futex calls and a context switch per result.
    pub(crate) fn complete(&self, value: T) -> Result<(), T> {
        let (waker, notify) = {
            let mut state = self.state.lock().unwrap();
            match &mut state.slot {
                Slot::Pending(waker) => {
                    let waker = waker.take();
                    state.slot = Slot::Ready(value);
                    (waker, state.waiters > 0)
                }
                _ => return Err(value),
            }
        };
        // A waiter counted above is inside `Condvar::wait` (it released the
        // mutex there atomically), so this reaches it; one that comes later
        // finds the slot ready under the lock and never blocks.
        if notify {
            self.ready.notify_all();
        }
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Whether a value was stored (taken or not).
    pub(crate) fn is_complete(&self) -> bool {
        !matches!(self.state.lock().unwrap().slot, Slot::Pending(_))
    }

    /// Blocks until the value is stored, then takes it. `None` if it was
    /// already taken.
    pub(crate) fn wait(&self) -> Option<T> {
        let mut state = self.state.lock().unwrap();
        loop {
            match std::mem::replace(&mut state.slot, Slot::Taken) {
                Slot::Ready(v) => return Some(v),
                Slot::Taken => return None,
                pending => {
                    state.slot = pending;
                    state.waiters += 1;
                    state = self.ready.wait(state).unwrap();
                    state.waiters -= 1;
                }
            }
        }
    }

    /// Like [`wait`](Self::wait) but gives up after `timeout`: `Err(())`
    /// means the value is still pending.
    #[cfg(not(gilpool_loom))]
    pub(crate) fn wait_timeout(&self, timeout: Duration) -> Result<Option<T>, ()> {
        let deadline = std::time::Instant::now() + timeout;
        let mut state = self.state.lock().unwrap();
        loop {
            match std::mem::replace(&mut state.slot, Slot::Taken) {
                Slot::Ready(v) => return Ok(Some(v)),
                Slot::Taken => return Ok(None),
                pending => {
                    state.slot = pending;
                    let now = std::time::Instant::now();
                    if now >= deadline {
                        return Err(());
                    }
                    state.waiters += 1;
                    state = self.ready.wait_timeout(state, deadline - now).unwrap().0;
                    state.waiters -= 1;
                }
            }
        }
    }

    /// Under loom a timed wait is modelled as "the value, if it is there".
    #[cfg(gilpool_loom)]
    pub(crate) fn wait_timeout(&self, _timeout: Duration) -> Result<Option<T>, ()> {
        let mut state = self.state.lock().unwrap();
        match std::mem::replace(&mut state.slot, Slot::Taken) {
            Slot::Ready(v) => Ok(Some(v)),
            Slot::Taken => Ok(None),
            pending => {
                state.slot = pending;
                Err(())
            }
        }
    }

    /// Takes the value if it is there, else registers `waker`.
    pub(crate) fn poll(&self, waker: &Waker) -> Poll<Option<T>> {
        let mut state = self.state.lock().unwrap();
        match std::mem::replace(&mut state.slot, Slot::Taken) {
            Slot::Ready(v) => Poll::Ready(Some(v)),
            Slot::Taken => Poll::Ready(None),
            Slot::Pending(old) => {
                let keep = match old {
                    Some(w) if w.will_wake(waker) => w,
                    _ => waker.clone(),
                };
                state.slot = Slot::Pending(Some(keep));
                Poll::Pending
            }
        }
    }
}
