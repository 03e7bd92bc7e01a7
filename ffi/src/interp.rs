//! Per-worker thread states: an own-GIL subinterpreter, or a thread state in
//! the main interpreter. Each is created, used and ended on one thread
//! (neither is `Send`), and is the only way that thread attaches.

use crate::attach::{self, Attached, Python};
use crate::runtime::{Runtime, LIVE_THREAD_STATES};
use pyo3_ffi as ffi;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Orders interpreter creation and destruction across threads: one at a
/// time. Ending an interpreter beside another creation or ending crashed
/// here (module finalisation touching shared static types). Creations
/// overlapping each other have known races on 3.12 and 3.13.0: on 3.13 a
/// creation failed here once, under load, with "Failed to import encodings
/// module", the failure CPython's own threaded-creation stress test shows
/// intermittently (CPython issues #128381, #131485); CPython has since
/// fixed data races in interpreter initialisation (#129824, #122581).
static LIFECYCLE: Mutex<()> = Mutex::new(());

/// A worker's thread state: what it attaches through.
pub trait WorkerState {
    /// Attaches the current thread (takes that interpreter's GIL).
    fn attach(&self) -> Attached<'_>;
    /// The interpreter's id (0 is the main interpreter).
    fn interpreter_id(&self) -> i64;
}

/// Attaches through `state` and runs `f` with the token.
pub fn attach<S: WorkerState + ?Sized, R>(state: &S, f: impl FnOnce(Python<'_>) -> R) -> R {
    let guard = state.attach();
    f(guard.py())
}

/// An own-GIL subinterpreter (PEP 684) and its one thread state, owned by
/// the thread that created it.
#[derive(Debug)]
pub struct SubInterpreter {
    tstate: *mut ffi::PyThreadState,
    id: i64,
    _not_send: PhantomData<*mut ()>,
}

impl SubInterpreter {
    /// Creates an own-GIL subinterpreter on the current thread (which must
    /// not be attached). Fails on Pythons older than 3.12.
    pub fn new(_runtime: &Runtime) -> Result<SubInterpreter, String> {
        assert!(
            !attach::is_attached(),
            "gilpool: creating an interpreter while attached"
        );
        Self::create()
    }

    #[cfg(Py_3_12)]
    fn create() -> Result<SubInterpreter, String> {
        let config = ffi::PyInterpreterConfig {
            use_main_obmalloc: 0,
            allow_fork: 0,
            allow_exec: 0,
            allow_threads: 1,
            allow_daemon_threads: 0,
            check_multi_interp_extensions: 1,
            gil: ffi::PyInterpreterConfig_OWN_GIL,
        };
        validate(&config)?;
        let _order = LIFECYCLE.lock().unwrap_or_else(|e| e.into_inner());
        let mut tstate: *mut ffi::PyThreadState = std::ptr::null_mut();
        // SAFETY: the runtime is initialised (`&Runtime` exists); this thread
        // has no thread state attached; `config` is valid for the call.
        let status = unsafe { ffi::Py_NewInterpreterFromConfig(&mut tstate, &config) };
        // SAFETY: reading a status value.
        if unsafe { ffi::PyStatus_Exception(status) } != 0 || tstate.is_null() {
            return Err(format!(
                "Py_NewInterpreterFromConfig failed: {}",
                crate::runtime::status_message(status)
            ));
        }
        LIVE_THREAD_STATES.fetch_add(1, Ordering::SeqCst);
        // SAFETY: on success the new thread state is current and holds the
        // new interpreter's GIL; we adopt that attachment, then detach.
        let guard = unsafe { attach::adopt(tstate) };
        let id = guard.py().interpreter_id();
        drop(guard);
        Ok(SubInterpreter {
            tstate,
            id,
            _not_send: PhantomData,
        })
    }

    #[cfg(not(Py_3_12))]
    fn create() -> Result<SubInterpreter, String> {
        Err(format!(
            "own-GIL subinterpreters need CPython >= 3.12; this build targets {}",
            crate::BUILD_PYTHON
        ))
    }

    /// Ends the interpreter (flushing its `sys.stdout`/`sys.stderr` first).
    pub fn end(self) {
        let tstate = self.tstate;
        std::mem::forget(self);
        end_sub(tstate);
    }

    /// Ends the interpreter once no other thread runs in it, waiting for
    /// threads that tasks started until `deadline`. `Py_EndInterpreter`
    /// with another thread alive is a fatal error, and it joins
    /// non-daemon `threading` threads itself (forever, if they never end),
    /// so past the deadline the interpreter is abandoned instead: never
    /// ended, its memory kept, and `Err` says how many threads were left.
    /// An abandoned interpreter counts as alive, so the runtime refuses to
    /// finalise (CPython 3.12 aborts finalising with subinterpreters alive).
    pub fn end_within(self, deadline: Instant) -> Result<(), usize> {
        loop {
            {
                let guard = self.attach();
                let others = guard.py().other_threads();
                if others == 0 {
                    drop(guard);
                    self.end();
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    drop(guard);
                    std::mem::forget(self);
                    return Err(others);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn end_sub(tstate: *mut ffi::PyThreadState) {
    // SAFETY: `tstate` is this thread's live, detached subinterpreter thread state.
    let guard = unsafe { Attached::new(tstate) };
    flush_std_streams(guard.py());
    let _exclusive = LIFECYCLE.lock().unwrap_or_else(|e| e.into_inner());
    guard.forget();
    // SAFETY: attached through the interpreter's only thread state, on the
    // thread that created it; Py_EndInterpreter leaves no current state.
    unsafe { ffi::Py_EndInterpreter(tstate) };
    attach::clear();
    LIVE_THREAD_STATES.fetch_sub(1, Ordering::SeqCst);
}

fn flush_std_streams(py: Python<'_>) {
    let _ = py.run(
        "import sys\nfor _s in (sys.stdout, sys.stderr):\n    try:\n        _s.flush()\n    except Exception:\n        pass\n",
    );
}

#[cfg(Py_3_12)]
fn validate(config: &ffi::PyInterpreterConfig) -> Result<(), String> {
    // CPython accepts OWN_GIL with a shared obmalloc silently (pitfall 4).
    if config.gil == ffi::PyInterpreterConfig_OWN_GIL && config.use_main_obmalloc != 0 {
        return Err("an own-GIL interpreter cannot share the main obmalloc".into());
    }
    if config.use_main_obmalloc == 0 && config.check_multi_interp_extensions == 0 {
        return Err("an interpreter with its own obmalloc must check extensions for multi-interpreter support".into());
    }
    Ok(())
}

impl WorkerState for SubInterpreter {
    fn attach(&self) -> Attached<'_> {
        // SAFETY: `tstate` is live (ended only by `end`/`drop`, which consume
        // `self`), was created on this thread (`!Send`), and is detached
        // between attachments.
        unsafe { Attached::new(self.tstate) }
    }

    fn interpreter_id(&self) -> i64 {
        self.id
    }
}

impl Drop for SubInterpreter {
    fn drop(&mut self) {
        end_sub(self.tstate);
    }
}

/// A thread state in the main interpreter for a worker thread (SingleGil
/// mode, and the main lane).
#[derive(Debug)]
pub struct MainThreadState {
    tstate: *mut ffi::PyThreadState,
    _not_send: PhantomData<*mut ()>,
}

impl MainThreadState {
    /// A new thread state in the main interpreter, for the current thread.
    pub fn new(_runtime: &Runtime) -> MainThreadState {
        assert!(
            !attach::is_attached(),
            "gilpool: creating a thread state while attached"
        );
        // SAFETY: the runtime is initialised (`&Runtime` exists), so the main
        // interpreter is live; PyThreadState_New does not need the GIL.
        let tstate = unsafe { ffi::PyThreadState_New(ffi::PyInterpreterState_Main()) };
        assert!(
            !tstate.is_null(),
            "gilpool: PyThreadState_New failed (out of memory)"
        );
        LIVE_THREAD_STATES.fetch_add(1, Ordering::SeqCst);
        MainThreadState {
            tstate,
            _not_send: PhantomData,
        }
    }
}

impl WorkerState for MainThreadState {
    fn attach(&self) -> Attached<'_> {
        // SAFETY: `tstate` is live until drop, belongs to this thread
        // (`!Send`), and is detached between attachments.
        unsafe { Attached::new(self.tstate) }
    }

    fn interpreter_id(&self) -> i64 {
        0
    }
}

impl Drop for MainThreadState {
    fn drop(&mut self) {
        // SAFETY: live, detached, this thread's.
        let guard = unsafe { Attached::new(self.tstate) };
        guard.forget();
        // SAFETY: attached through `tstate`; Clear then DeleteCurrent
        // releases the GIL and frees it, leaving no current thread state.
        unsafe {
            ffi::PyThreadState_Clear(self.tstate);
            ffi::PyThreadState_DeleteCurrent();
        }
        attach::clear();
        LIVE_THREAD_STATES.fetch_sub(1, Ordering::SeqCst);
    }
}
