//! Guest thread states: a thread that is not an interpreter's worker
//! attaching to that interpreter (the caller-runs path of `invoke`).
//!
//! Each (thread, interpreter) pair gets one thread state, made on the guest
//! thread the first time it needs one and kept until the interpreter's owner
//! deletes it ([`Guests::clear`], before ending the interpreter) or, for
//! threads that exited, until a later guest sweeps it.
//!
//! CPython binds a thread for `PyGILState_*` to the last thread state it
//! activated (3.12, 3.13: every attach of an unbound state rebinds), and
//! deleting a bound thread state from another thread unbinds the *deleting*
//! thread instead, leaving the owner's binding dangling. So a guest thread
//! has a main-interpreter thread state of its own ([`own_main`]), used for
//! its main-interpreter calls and deleted only on that thread, when it
//! exits; after every call through a subinterpreter state the thread
//! activates its own state again for a moment ([`rebind_own_main`]), so
//! its subinterpreter states are never bound while idle, and their owner
//! may delete them from its own thread.
//!
//! A thread's own main state is not counted among the worker thread states
//! that keep [`Runtime::finalize_within`](crate::Runtime::finalize_within)
//! from running: it is idle between calls, and `Py_FinalizeEx` deletes it;
//! the thread's exit then leaves it alone.

use crate::attach::{self, Attached, Python};
use crate::runtime::{self, LIVE_THREAD_STATES};
use pyo3_ffi as ffi;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Names one live interpreter, for making thread states in it from other
/// threads. Valid while its owner keeps the interpreter alive.
#[derive(Debug, Clone, Copy)]
pub struct InterpRef {
    ptr: *mut ffi::PyInterpreterState,
    id: i64,
}

// SAFETY: the pointer is only passed to CPython by a `Guests` whose owner
// keeps the interpreter alive until it clears them; it is never dereferenced
// here.
unsafe impl Send for InterpRef {}
// SAFETY: as above; the value is immutable.
unsafe impl Sync for InterpRef {}

impl InterpRef {
    /// The interpreter the current thread is attached to.
    pub fn current(py: Python<'_>) -> InterpRef {
        // SAFETY: attached (`py`): the current interpreter is live.
        let ptr = unsafe { ffi::PyInterpreterState_Get() };
        InterpRef {
            ptr,
            id: py.interpreter_id(),
        }
    }

    /// The interpreter's id (0: the main one).
    pub fn id(&self) -> i64 {
        self.id
    }

    pub(crate) fn ptr(&self) -> *mut ffi::PyInterpreterState {
        self.ptr
    }
}

/// Whether the current thread holds a thread state CPython made current,
/// through gilpool or not (a Python-created thread calling into Rust).
pub fn thread_has_python() -> bool {
    // SAFETY: reads this thread's current thread state; needs no GIL.
    attach::is_attached() || !unsafe { ffi::compat::PyThreadState_GetUnchecked() }.is_null()
}

/// CPython's identifier of the current thread (what
/// `threading.get_ident()` returns).
pub fn thread_ident() -> u64 {
    // SAFETY: needs no GIL; returns this thread's pthread id.
    unsafe { ffi::PyThread_get_thread_ident() as u64 }
}

/// A thread's own main-interpreter state, deleted on that thread.
struct OwnMain {
    tstate: *mut ffi::PyThreadState,
    /// Cleared when the thread exits, so owners of guest states sweep them.
    alive: Arc<AtomicBool>,
}

impl Drop for OwnMain {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::SeqCst);
        let tstate = self.tstate;
        runtime::while_running(|| {
            // SAFETY: the runtime is running (and cannot finalise meanwhile),
            // so `tstate`, made on this thread and idle, is live; Clear then
            // DeleteCurrent frees it and releases the main GIL.
            unsafe {
                ffi::PyEval_RestoreThread(tstate);
                ffi::PyThreadState_Clear(tstate);
                ffi::PyThreadState_DeleteCurrent();
            }
            OWN_MAIN_STATES.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

thread_local! {
    static OWN: RefCell<Option<OwnMain>> = const { RefCell::new(None) };
}

/// Live [`OwnMain`] states (thread states in the main interpreter that no
/// `_thread` thread owns).
static OWN_MAIN_STATES: AtomicUsize = AtomicUsize::new(0);

/// How many guest threads have an own main-interpreter state now.
#[cfg_attr(Py_3_11, allow(dead_code))]
pub(crate) fn own_main_states() -> usize {
    OWN_MAIN_STATES.load(Ordering::SeqCst)
}

/// The current thread's own main-interpreter thread state and its liveness
/// flag, made on first use. The runtime must be running and the thread not
/// attached.
fn own_main() -> (*mut ffi::PyThreadState, Arc<AtomicBool>) {
    OWN.with(|own| {
        let mut own = own.borrow_mut();
        let own = own.get_or_insert_with(|| {
            // SAFETY: the runtime is initialised (a `Guests` exists only for
            // a live interpreter), so the main interpreter is live;
            // PyThreadState_New needs no GIL and binds the new state to
            // this thread for PyGILState_* if it had none.
            let tstate = unsafe { ffi::PyThreadState_New(ffi::PyInterpreterState_Main()) };
            assert!(
                !tstate.is_null(),
                "gilpool: PyThreadState_New failed (out of memory)"
            );
            OWN_MAIN_STATES.fetch_add(1, Ordering::SeqCst);
            OwnMain {
                tstate,
                alive: Arc::new(AtomicBool::new(true)),
            }
        });
        (own.tstate, own.alive.clone())
    })
}

/// Makes the current thread's own main-interpreter state its
/// `PyGILState_*` state again, after a call through a subinterpreter guest
/// state (see the module docs). Takes the main interpreter's GIL for a
/// moment. The thread must not be attached.
pub fn rebind_own_main() {
    let (main, _) = own_main();
    // SAFETY: `main` is this thread's own idle main state (live while the
    // runtime runs: a guest runs calls only on a running runtime); attaching
    // and detaching it at once rebinds the thread to it.
    unsafe {
        ffi::PyEval_RestoreThread(main);
        ffi::PyEval_SaveThread();
    }
}

/// One guest's thread state in a subinterpreter.
#[derive(Debug)]
struct Entry {
    tstate: *mut ffi::PyThreadState,
    alive: Arc<AtomicBool>,
}

/// The guest thread states of one interpreter. Owned (through an `Arc`) by
/// the interpreter's worker and shared with the threads it lends it to.
#[derive(Debug)]
pub struct Guests {
    interp: InterpRef,
    entries: Mutex<Vec<Entry>>,
}

// SAFETY: the raw thread states are touched only by their own thread while it
// holds the interpreter's lend, or by the owner while attached to the
// interpreter with no guest attached (`clear`); the list itself is behind a
// mutex.
unsafe impl Send for Guests {}
// SAFETY: as above.
unsafe impl Sync for Guests {}

/// A thread's guest state in one interpreter. Not `Send`: it belongs to the
/// thread that made it.
#[derive(Debug, Clone, Copy)]
pub struct GuestState {
    tstate: *mut ffi::PyThreadState,
    _not_send: PhantomData<*mut ()>,
}

impl Guests {
    /// Guest states for `interp`.
    pub fn new(interp: InterpRef) -> Guests {
        Guests {
            interp,
            entries: Mutex::new(Vec::new()),
        }
    }

    /// The interpreter's id.
    pub fn interpreter_id(&self) -> i64 {
        self.interp.id
    }

    /// The current thread's thread state in this interpreter, made now.
    /// Keep it and pass it to [`attach`](Self::attach) for later calls.
    ///
    /// # Safety
    /// The interpreter must be alive and not being ended, and the current
    /// thread not attached: the caller holds the interpreter's lend, so
    /// [`clear`](Self::clear) cannot run until it gives it back.
    pub unsafe fn make_state(&self) -> GuestState {
        let (main, alive) = own_main();
        if self.interp.id == 0 {
            return GuestState {
                tstate: main,
                _not_send: PhantomData,
            };
        }
        // SAFETY: the interpreter is live (caller's contract); the thread
        // already has a bound state (`own_main`), so this one is not bound
        // now, and after each use the caller rebinds the thread to its own
        // state (`rebind_own_main`), so its owner may delete it from another
        // thread.
        let tstate = unsafe { ffi::PyThreadState_New(self.interp.ptr) };
        assert!(
            !tstate.is_null(),
            "gilpool: PyThreadState_New failed (out of memory)"
        );
        LIVE_THREAD_STATES.fetch_add(1, Ordering::SeqCst);
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Entry { tstate, alive });
        GuestState {
            tstate,
            _not_send: PhantomData,
        }
    }

    /// Attaches the current thread through `state`.
    ///
    /// # Safety
    /// `state` came from this `Guests` on this thread, and the caller holds
    /// the interpreter's lend (so `clear` has not run since and cannot run
    /// until the guard is dropped and the lend given back).
    pub unsafe fn attach(&self, state: GuestState) -> Attached<'_> {
        // SAFETY: the state is live, this thread's and detached (caller's
        // contract; a thread attaches one state at a time).
        unsafe { Attached::new(state.tstate) }
    }

    /// Deletes the states of guest threads that have exited. `py` is
    /// attached to this interpreter, by a guest holding the lend or by the
    /// owner.
    pub fn sweep(&self, py: Python<'_>) {
        debug_assert_eq!(py.interpreter_id(), self.interp.id);
        let dead: Vec<Entry> = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            let (dead, live) = std::mem::take(&mut *entries)
                .into_iter()
                .partition(|e| !e.alive.load(Ordering::SeqCst));
            *entries = live;
            dead
        };
        delete(py, dead);
    }

    /// Deletes every guest state. Called by the interpreter's owner, attached
    /// to it (`py`), once no guest can attach again (its lend is closed):
    /// `Py_EndInterpreter` refuses to run with other thread states left.
    pub fn clear(&self, py: Python<'_>) {
        debug_assert_eq!(py.interpreter_id(), self.interp.id);
        let all = std::mem::take(&mut *self.entries.lock().unwrap_or_else(|e| e.into_inner()));
        delete(py, all);
    }
}

fn delete(_py: Python<'_>, entries: Vec<Entry>) {
    for e in entries {
        // SAFETY: attached to the entry's interpreter (`_py`); the state is
        // another thread's, idle (its thread is gone, or cannot attach: the
        // lend is held by us or closed), and not bound for PyGILState_*
        // (`make_state`, `rebind_own_main`), so Clear then Delete from here
        // frees it cleanly.
        unsafe {
            ffi::PyThreadState_Clear(e.tstate);
            ffi::PyThreadState_Delete(e.tstate);
        }
        LIVE_THREAD_STATES.fetch_sub(1, Ordering::SeqCst);
    }
}
