//! The one place the scheduler takes its synchronization primitives from.
//!
//! Under `--cfg gilpool_loom` every primitive is loom's, and `deque` is a
//! small mutex-based stand-in with crossbeam-deque's API (crossbeam-deque is
//! not loom-instrumented), so loom checks *our* protocol on top of it.

#[cfg(not(gilpool_loom))]
pub(crate) use std::sync::{
    atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering},
    Arc, Condvar, Mutex, MutexGuard,
};

#[cfg(gilpool_loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering},
    Arc, Condvar, Mutex, MutexGuard,
};

/// Waits on `cv` at most `t` (loom has no clock: there, until notified).
#[cfg(not(gilpool_loom))]
pub(crate) fn timed_wait<'a>(
    cv: &Condvar,
    guard: MutexGuard<'a, ()>,
    t: std::time::Duration,
) -> MutexGuard<'a, ()> {
    cv.wait_timeout(guard, t).unwrap().0
}

/// Waits on `cv` at most `t` (loom has no clock: there, until notified).
#[cfg(gilpool_loom)]
pub(crate) fn timed_wait<'a>(
    cv: &Condvar,
    guard: MutexGuard<'a, ()>,
    _t: std::time::Duration,
) -> MutexGuard<'a, ()> {
    cv.wait(guard).unwrap()
}

/// Work-stealing deques: crossbeam's, or a loom-visible stand-in.
#[cfg(not(gilpool_loom))]
pub(crate) mod deque {
    pub(crate) use crossbeam_deque::{Injector, Steal, Stealer, Worker};
}

/// Work-stealing deques: crossbeam's, or a loom-visible stand-in.
#[cfg(gilpool_loom)]
pub(crate) mod deque {
    use loom::sync::{Arc, Mutex};
    use std::collections::VecDeque;

    /// The outcome of a steal, as in crossbeam-deque.
    #[derive(Debug)]
    pub(crate) enum Steal<T> {
        Empty,
        Success(T),
        Retry,
    }

    /// A worker's own FIFO queue.
    #[derive(Debug)]
    pub(crate) struct Worker<T> {
        queue: Arc<Mutex<VecDeque<T>>>,
    }

    /// A handle other workers steal through.
    #[derive(Debug)]
    pub(crate) struct Stealer<T> {
        queue: Arc<Mutex<VecDeque<T>>>,
    }

    /// A contended steal. Callers loop on `Retry`, so this is a spin loop:
    /// yield, so that loom runs the lock holder instead of exploring an
    /// endless run of failed `try_lock`s.
    fn retry<T>() -> Steal<T> {
        loom::thread::yield_now();
        Steal::Retry
    }

    impl<T> Clone for Stealer<T> {
        fn clone(&self) -> Self {
            Stealer {
                queue: self.queue.clone(),
            }
        }
    }

    /// The shared entry queue.
    #[derive(Debug)]
    pub(crate) struct Injector<T> {
        queue: Mutex<VecDeque<T>>,
    }

    impl<T> Worker<T> {
        pub(crate) fn new_fifo() -> Self {
            Worker {
                queue: Arc::new(Mutex::new(VecDeque::new())),
            }
        }
        pub(crate) fn stealer(&self) -> Stealer<T> {
            Stealer {
                queue: self.queue.clone(),
            }
        }
        pub(crate) fn push(&self, task: T) {
            self.queue.lock().unwrap().push_back(task);
        }
        pub(crate) fn pop(&self) -> Option<T> {
            self.queue.lock().unwrap().pop_front()
        }
        pub(crate) fn is_empty(&self) -> bool {
            self.queue.lock().unwrap().is_empty()
        }
    }

    impl<T> Stealer<T> {
        /// Like crossbeam, a steal that races another one reports `Retry`.
        pub(crate) fn steal(&self) -> Steal<T> {
            match self.queue.try_lock() {
                Ok(mut q) => q.pop_front().map_or(Steal::Empty, Steal::Success),
                Err(_) => retry(),
            }
        }
        pub(crate) fn is_empty(&self) -> bool {
            self.queue.lock().unwrap().is_empty()
        }
        pub(crate) fn len(&self) -> usize {
            self.queue.lock().unwrap().len()
        }
    }

    impl<T> Injector<T> {
        pub(crate) fn new() -> Self {
            Injector {
                queue: Mutex::new(VecDeque::new()),
            }
        }
        pub(crate) fn push(&self, task: T) {
            self.queue.lock().unwrap().push_back(task);
        }
        pub(crate) fn is_empty(&self) -> bool {
            self.queue.lock().unwrap().is_empty()
        }
        pub(crate) fn len(&self) -> usize {
            self.queue.lock().unwrap().len()
        }
        /// Pops one task, like crossbeam's `Injector::steal`.
        pub(crate) fn steal(&self) -> Steal<T> {
            match self.queue.try_lock() {
                Ok(mut q) => q.pop_front().map_or(Steal::Empty, Steal::Success),
                Err(_) => retry(),
            }
        }
        /// Pops one task and moves up to half of the rest (at most 2 here)
        /// into `dest`, like crossbeam's `steal_batch_and_pop`.
        pub(crate) fn steal_batch_and_pop(&self, dest: &Worker<T>) -> Steal<T> {
            let mut q = match self.queue.try_lock() {
                Ok(q) => q,
                Err(_) => return retry(),
            };
            let first = match q.pop_front() {
                Some(t) => t,
                None => return Steal::Empty,
            };
            let extra = (q.len() / 2).min(2);
            if extra > 0 {
                let mut d = dest.queue.lock().unwrap();
                for _ in 0..extra {
                    if let Some(t) = q.pop_front() {
                        d.push_back(t);
                    }
                }
            }
            Steal::Success(first)
        }
    }
}
