//! Interrupting Python that runs on another thread, threads that tasks left
//! behind, and forked children.
//!
//! An [`InterruptHandle`] names one worker thread inside one interpreter.
//! [`InterruptHandle::interrupt`] runs on any thread that is not attached:
//! it makes a temporary thread state in that interpreter, takes the
//! interpreter's GIL (the running code gives it up at its next switch
//! interval), asks the caller's `check` whether the work to interrupt is
//! still the one running, and if so schedules `KeyboardInterrupt` in the
//! worker thread with `PyThreadState_SetAsyncExc` — a public API that
//! targets one thread of the *current* interpreter, so no other interpreter
//! or thread sees it. The exception is raised at the worker's next bytecode
//! boundary; a thread blocked in C (a `sleep`, a read, a C loop) sees it
//! only when it returns to Python.
//!
//! The handle's lock keeps the interpreter alive while an interrupt uses it:
//! the worker [`retire`](InterruptHandle::retire)s the handle (with its
//! own thread detached) before it ends the interpreter.

use crate::attach::{self, Python};
use crate::runtime::LIVE_THREAD_STATES;
use pyo3_ffi as ffi;
use std::os::raw::{c_long, c_ulong};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy)]
struct Target {
    interp: *mut ffi::PyInterpreterState,
    thread_id: c_ulong,
}

/// Names one worker thread in one interpreter, for [`interrupt`](Self::interrupt).
#[derive(Debug)]
pub struct InterruptHandle {
    target: Mutex<Option<Target>>,
}

// SAFETY: the raw interpreter pointer is only dereferenced (by CPython)
// while `target`'s lock is held and the target is `Some`, and the owning
// worker clears it under the same lock before the interpreter ends.
unsafe impl Send for InterruptHandle {}
// SAFETY: as above; every access goes through the mutex.
unsafe impl Sync for InterruptHandle {}

impl Python<'_> {
    /// A handle that interrupts Python running on the current thread in the
    /// current interpreter.
    pub fn interrupt_handle(self) -> Arc<InterruptHandle> {
        // SAFETY: attached (`self`): the current interpreter is live; the
        // thread ident is this thread's, as CPython records it.
        let target = unsafe {
            Target {
                interp: ffi::PyInterpreterState_Get(),
                thread_id: ffi::PyThread_get_thread_ident(),
            }
        };
        Arc::new(InterruptHandle {
            target: Mutex::new(Some(target)),
        })
    }

    /// Drops an interrupt scheduled for this thread that has not fired yet
    /// (the call it was meant for already returned).
    pub fn clear_pending_interrupt(self) {
        // SAFETY: attached; a NULL exception clears this thread's pending
        // asynchronous exception, if any.
        unsafe {
            ffi::PyThreadState_SetAsyncExc(
                ffi::PyThread_get_thread_ident() as c_long,
                std::ptr::null_mut(),
            );
        }
    }

    /// Thread states in the current interpreter other than this thread's:
    /// threads a task started (`threading`, `_thread`) that are still alive.
    pub fn other_threads(self) -> usize {
        let me = attach::current();
        let mut n = 0;
        // SAFETY: attached; Python threads are added to and removed from
        // the interpreter's list by threads holding its GIL (a new thread's
        // state is made by the thread that starts it; a finished one deletes
        // its own before giving up the GIL), so the list is stable while we
        // hold it.
        unsafe {
            let mut t = ffi::PyInterpreterState_ThreadHead(ffi::PyInterpreterState_Get());
            while !t.is_null() {
                if t != me {
                    n += 1;
                }
                t = ffi::PyThreadState_Next(t);
            }
        }
        n
    }
}

impl InterruptHandle {
    /// A handle that interrupts Python that the thread `ident` (see
    /// [`thread_ident`](crate::guest::thread_ident)) runs in `interp`, for
    /// the interpreter's owner while it keeps the interpreter alive.
    pub fn for_thread(interp: crate::guest::InterpRef, ident: u64) -> InterruptHandle {
        InterruptHandle {
            target: Mutex::new(Some(Target {
                interp: interp.ptr(),
                thread_id: ident as c_ulong,
            })),
        }
    }

    /// Schedules `KeyboardInterrupt` in the target thread if `check`
    /// (called while holding the target interpreter's GIL) returns `true`.
    /// Returns whether it did. Blocks until that GIL is free: a thread that
    /// holds it in a C loop blocks this call for as long, so callers run it
    /// on a thread of its own.
    ///
    /// # Panics
    /// If the current thread is attached to an interpreter.
    pub fn interrupt(&self, check: impl FnOnce() -> bool) -> bool {
        assert!(
            !attach::is_attached(),
            "gilpool: interrupting from a thread attached to an interpreter"
        );
        let guard = self.target.lock().unwrap_or_else(|e| e.into_inner());
        let Some(target) = *guard else {
            return false;
        };
        // SAFETY: the interpreter is live while `guard` holds `Some` (the
        // worker retires the handle under this lock before ending it);
        // PyThreadState_New needs no GIL; this thread has no thread state.
        let tstate = unsafe { ffi::PyThreadState_New(target.interp) };
        if tstate.is_null() {
            return false;
        }
        LIVE_THREAD_STATES.fetch_add(1, Ordering::SeqCst);
        // SAFETY: `tstate` is new, belongs to this thread and is detached.
        unsafe { ffi::PyEval_RestoreThread(tstate) };
        let hit = check()
            // SAFETY: attached to the target interpreter; the exception type
            // is a static built-in shared by every interpreter; SetAsyncExc
            // takes its own reference.
            && unsafe {
                ffi::PyThreadState_SetAsyncExc(
                    target.thread_id as c_long,
                    ffi::PyExc_KeyboardInterrupt,
                )
            } > 0;
        // SAFETY: attached through `tstate`; Clear then DeleteCurrent frees
        // it and releases the GIL, leaving this thread with no thread state.
        unsafe {
            ffi::PyThreadState_Clear(tstate);
            ffi::PyThreadState_DeleteCurrent();
        }
        LIVE_THREAD_STATES.fetch_sub(1, Ordering::SeqCst);
        drop(guard);
        hit
    }

    /// Stops further interrupts; waits for one in progress. Call with the
    /// owning thread detached, before ending the interpreter.
    pub fn retire(&self) {
        debug_assert!(!attach::is_attached());
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

static FORKED: AtomicBool = AtomicBool::new(false);

extern "C" fn after_fork_child() {
    // Async-signal-safe: one atomic store.
    FORKED.store(true, Ordering::SeqCst);
}

/// Registers a `pthread_atfork` child handler so that a process forked by
/// Python code (`os.fork()` in a task) is recognised when it returns into
/// gilpool. Called once, at runtime start.
pub(crate) fn install_fork_guard() {
    // SAFETY: registers a handler that only stores an atomic; no prepare or
    // parent handler.
    unsafe {
        libc::pthread_atfork(None, None, Some(after_fork_child));
    }
}

/// Ends a forked child at once when the current process is one: a child
/// forked inside a task must never run gilpool's machinery (its queues,
/// threads and interpreters belong to the parent). Exit status 0; a task
/// that wanted another status calls `os._exit` itself.
#[inline]
pub(crate) fn leave_if_forked() {
    if FORKED.load(Ordering::Relaxed) {
        // SAFETY: `_exit` ends the process without running atexit handlers
        // or destructors, which belong to the parent.
        unsafe { libc::_exit(0) };
    }
}
