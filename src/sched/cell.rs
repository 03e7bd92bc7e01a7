//! `CompletionCell`: the one-shot slot a task's result lands in.
//!
//! ## Memory ordering
//! All state lives under one mutex, so completion happens-before any read
//! of the value (the mutex's release/acquire). `complete` notifies the
//! condvar while holding the lock and wakes a registered `Waker` after
//! releasing it, so a waiter that checked the slot under the lock either saw
//! the value or is already parked on the condvar / registered its waker.

use super::sync::{Condvar, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

#[derive(Debug)]
enum Slot<T> {
    Pending(Option<Waker>),
    Ready(T),
    Taken,
}

/// A value delivered exactly once, awaited by blocking or by polling.
#[derive(Debug)]
pub(crate) struct CompletionCell<T> {
    slot: Mutex<Slot<T>>,
    ready: Condvar,
}

impl<T> CompletionCell<T> {
    pub(crate) fn new() -> Self {
        CompletionCell {
            slot: Mutex::new(Slot::Pending(None)),
            ready: Condvar::new(),
        }
    }

    /// Stores `value` unless a value was already stored; gives it back then.
    pub(crate) fn complete(&self, value: T) -> Result<(), T> {
        let waker = {
            let mut slot = self.slot.lock().unwrap();
            match &mut *slot {
                Slot::Pending(waker) => {
                    let waker = waker.take();
                    *slot = Slot::Ready(value);
                    self.ready.notify_all();
                    waker
                }
                _ => return Err(value),
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Whether a value was stored (taken or not).
    pub(crate) fn is_complete(&self) -> bool {
        !matches!(*self.slot.lock().unwrap(), Slot::Pending(_))
    }

    /// Blocks until the value is stored, then takes it. `None` if it was
    /// already taken.
    pub(crate) fn wait(&self) -> Option<T> {
        let mut slot = self.slot.lock().unwrap();
        loop {
            match std::mem::replace(&mut *slot, Slot::Taken) {
                Slot::Ready(v) => return Some(v),
                Slot::Taken => return None,
                pending => {
                    *slot = pending;
                    slot = self.ready.wait(slot).unwrap();
                }
            }
        }
    }

    /// Like [`wait`](Self::wait) but gives up after `timeout`: `Err(())`
    /// means the value is still pending.
    #[cfg(not(gilpool_loom))]
    pub(crate) fn wait_timeout(&self, timeout: Duration) -> Result<Option<T>, ()> {
        let deadline = std::time::Instant::now() + timeout;
        let mut slot = self.slot.lock().unwrap();
        loop {
            match std::mem::replace(&mut *slot, Slot::Taken) {
                Slot::Ready(v) => return Ok(Some(v)),
                Slot::Taken => return Ok(None),
                pending => {
                    *slot = pending;
                    let now = std::time::Instant::now();
                    if now >= deadline {
                        return Err(());
                    }
                    slot = self.ready.wait_timeout(slot, deadline - now).unwrap().0;
                }
            }
        }
    }

    /// Under loom a timed wait is modelled as "the value, if it is there".
    #[cfg(gilpool_loom)]
    pub(crate) fn wait_timeout(&self, _timeout: Duration) -> Result<Option<T>, ()> {
        let mut slot = self.slot.lock().unwrap();
        match std::mem::replace(&mut *slot, Slot::Taken) {
            Slot::Ready(v) => Ok(Some(v)),
            Slot::Taken => Ok(None),
            pending => {
                *slot = pending;
                Err(())
            }
        }
    }

    /// Takes the value if it is there, else registers `waker`.
    pub(crate) fn poll(&self, waker: &Waker) -> Poll<Option<T>> {
        let mut slot = self.slot.lock().unwrap();
        match std::mem::replace(&mut *slot, Slot::Taken) {
            Slot::Ready(v) => Poll::Ready(Some(v)),
            Slot::Taken => Poll::Ready(None),
            Slot::Pending(old) => {
                let keep = match old {
                    Some(w) if w.will_wake(waker) => w,
                    _ => waker.clone(),
                };
                *slot = Slot::Pending(Some(keep));
                Poll::Pending
            }
        }
    }
}
