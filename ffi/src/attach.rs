//! Attachment of the current thread to an interpreter, tracked by us (never
//! `PyGILState_*`, which cannot tell subinterpreters apart).

use pyo3_ffi as ffi;
use std::cell::Cell;
use std::marker::PhantomData;

thread_local! {
    /// The thread state this thread is attached through, or null.
    static ATTACHED: Cell<*mut ffi::PyThreadState> = const { Cell::new(std::ptr::null_mut()) };
}

/// Whether the current thread is attached to any interpreter (holds a GIL)
/// through gilpool.
pub fn is_attached() -> bool {
    ATTACHED.with(|a| !a.get().is_null())
}

pub(crate) fn current() -> *mut ffi::PyThreadState {
    ATTACHED.with(|a| a.get())
}

/// Proof that the current thread is attached to one interpreter for `'py`.
///
/// `Python` is `Copy` but neither `Send` nor `Sync`: it cannot leave the
/// thread, and [`Object`](crate::Object)s borrow its lifetime, so they
/// cannot outlive the attachment either.
#[derive(Clone, Copy)]
pub struct Python<'py> {
    _marker: PhantomData<(&'py (), *mut ())>,
}

impl std::fmt::Debug for Python<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Python")
    }
}

impl Python<'_> {
    /// # Safety
    /// The current thread must be attached (through [`Attached`]) for the
    /// whole of the returned lifetime.
    pub(crate) unsafe fn assume_attached<'py>() -> Python<'py> {
        debug_assert!(is_attached());
        Python {
            _marker: PhantomData,
        }
    }

    /// A token inside a function CPython called (a type slot or method),
    /// which holds the GIL of the calling thread's current interpreter
    /// whether or not gilpool attached that thread (a Python-created
    /// thread has no record in gilpool's thread-local).
    ///
    /// # Safety
    /// Only inside a slot or method CPython is running, for its duration.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) unsafe fn assume_called_by_cpython<'py>() -> Python<'py> {
        Python {
            _marker: PhantomData,
        }
    }
}

/// An attachment of the current thread to an interpreter: holds that
/// interpreter's GIL until dropped. Not `Send`.
#[derive(Debug)]
pub struct Attached<'a> {
    tstate: *mut ffi::PyThreadState,
    _owner: PhantomData<&'a ()>,
}

impl<'a> Attached<'a> {
    /// # Safety
    /// `tstate` must be a live thread state created on this thread that is
    /// not attached anywhere, and must stay alive for `'a`.
    pub(crate) unsafe fn new(tstate: *mut ffi::PyThreadState) -> Attached<'a> {
        assert!(
            !is_attached(),
            "gilpool: this thread is already attached to an interpreter"
        );
        // SAFETY: the caller guarantees `tstate` is live, belongs to this
        // thread and is detached; this thread holds no other thread state.
        unsafe { ffi::PyEval_RestoreThread(tstate) };
        ATTACHED.with(|a| a.set(tstate));
        Attached {
            tstate,
            _owner: PhantomData,
        }
    }

    /// The token for this attachment.
    pub fn py(&self) -> Python<'_> {
        // SAFETY: `self` keeps the thread attached for the borrow's lifetime.
        unsafe { Python::assume_attached() }
    }

    /// Consumes the guard without detaching (the thread state is being
    /// destroyed by the caller while attached).
    pub(crate) fn forget(self) -> *mut ffi::PyThreadState {
        let t = self.tstate;
        std::mem::forget(self);
        t
    }
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        // SAFETY: this thread attached `self.tstate` in `new` and nothing
        // detached it since (attachments do not nest).
        let saved = unsafe { ffi::PyEval_SaveThread() };
        debug_assert_eq!(saved, self.tstate);
        ATTACHED.with(|a| a.set(std::ptr::null_mut()));
    }
}

/// Marks the thread attached through a thread state Python made current
/// itself (interpreter creation). Returns the token's lifetime anchor.
///
/// # Safety
/// `tstate` must be the current, attached thread state of this thread.
#[cfg(Py_3_12)]
pub(crate) unsafe fn adopt<'a>(tstate: *mut ffi::PyThreadState) -> Attached<'a> {
    ATTACHED.with(|a| a.set(tstate));
    Attached {
        tstate,
        _owner: PhantomData,
    }
}

/// Clears the record after the caller ended the attached thread state.
pub(crate) fn clear() {
    ATTACHED.with(|a| a.set(std::ptr::null_mut()));
}
