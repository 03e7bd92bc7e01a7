//! Whether a call broke its interpreter's import system, answered cheaply.
//!
//! After every call gilpool checks that `sys.modules` still holds `sys` and
//! `builtins` (a task that cleared it leaves an interpreter that can import
//! nothing). On CPython >= 3.12 a dict watcher (`PyDict_AddWatcher`, one per
//! interpreter) counts every change to a `sys.modules` other than an
//! addition, and [`ModulesWatch::intact`] skips the lookups while that count
//! has not moved since its last passing check. On older Pythons, or where
//! an interpreter has no watcher slot left, it checks every time.

use crate::attach::Python;
#[cfg(Py_3_12)]
use pyo3_ffi as ffi;
use std::sync::atomic::{AtomicU64, Ordering};

/// Changes, other than additions, to any watched `sys.modules`, in every
/// interpreter: rare (a `del sys.modules[...]`, a `clear()`, an
/// interpreter's teardown), so one shared count serves them all.
static CHANGES: AtomicU64 = AtomicU64::new(0);

/// The current thread's interpreter, named once per attachment and passed
/// where several checks need it (each lookup of the id costs three calls
/// into CPython). It borrows the attachment, so it cannot outlive it.
#[derive(Clone, Copy, Debug)]
pub struct Here<'py> {
    py: Python<'py>,
    id: i64,
}

impl<'py> Here<'py> {
    /// The attachment.
    pub fn py(self) -> Python<'py> {
        self.py
    }
    /// The interpreter's id (0 = main).
    pub fn id(self) -> i64 {
        self.id
    }
}

impl<'py> Python<'py> {
    /// The interpreter this thread is attached to, as a [`Here`].
    pub fn here(self) -> Here<'py> {
        Here {
            py: self,
            id: self.interpreter_id(),
        }
    }
}

/// One holder's record of the last passing import check in one
/// interpreter (a worker's, or a room a caller borrows). Used in another
/// interpreter, it starts over there.
#[derive(Debug, Default)]
pub struct ModulesWatch {
    interp: Option<i64>,
    watched: bool,
    /// [`CHANGES`] when the last check passed; `None` before the first.
    seen: Option<u64>,
}

impl ModulesWatch {
    /// Whether `sys.modules` still holds what `check` looks for: `check`
    /// runs unless the watcher saw no change since it last passed here.
    pub fn intact(&mut self, here: Here<'_>, check: impl FnOnce() -> bool) -> bool {
        if self.interp != Some(here.id) {
            *self = ModulesWatch {
                interp: Some(here.id),
                watched: watch(here.py),
                seen: None,
            };
        }
        // Read before the check: a change after this read moves the count
        // past it, so the next call checks again. (A watcher's callback
        // runs before its change, attached, in the same interpreter, so no
        // change is half made while this thread holds the interpreter.)
        let now = CHANGES.load(Ordering::SeqCst);
        if self.watched && self.seen == Some(now) {
            return true;
        }
        let ok = check();
        self.seen = ok.then_some(now);
        ok
    }
}

#[cfg(Py_3_12)]
extern "C" {
    // Declared here: pyo3-ffi does not declare it (CPython >= 3.12,
    // Include/cpython/dictobject.h).
    fn PyDict_AddWatcher(
        callback: unsafe extern "C" fn(
            std::os::raw::c_int,
            *mut ffi::PyObject,
            *mut ffi::PyObject,
            *mut ffi::PyObject,
        ) -> std::os::raw::c_int,
    ) -> std::os::raw::c_int;
}

/// `PyDict_EVENT_ADDED`, the first of `PyDict_WatchEvent` (the same in
/// 3.12 and 3.13).
#[cfg(Py_3_12)]
const DICT_EVENT_ADDED: std::os::raw::c_int = 0;

/// The watcher: counts every event but an addition. Never raises.
#[cfg(Py_3_12)]
unsafe extern "C" fn on_modules_event(
    event: std::os::raw::c_int,
    _dict: *mut ffi::PyObject,
    _key: *mut ffi::PyObject,
    _new_value: *mut ffi::PyObject,
) -> std::os::raw::c_int {
    if event != DICT_EVENT_ADDED {
        CHANGES.fetch_add(1, Ordering::SeqCst);
    }
    0
}

/// The key, in the interpreter's own state dict, saying that its
/// `sys.modules` is watched (so each interpreter spends one watcher slot,
/// however many holders it has).
#[cfg(Py_3_12)]
const WATCHED_KEY: &std::ffi::CStr = c"gilpool.modules_watched";

/// Watches this interpreter's `sys.modules` (once per interpreter);
/// whether it is watched.
#[cfg(Py_3_12)]
fn watch(_py: Python<'_>) -> bool {
    // SAFETY: attached (the token); the interpreter's state dict and its
    // module dict are borrowed references live while the interpreter is;
    // every call that can fail has its exception cleared, so none leaks
    // into the caller's code.
    unsafe {
        let state = ffi::PyInterpreterState_GetDict(ffi::PyInterpreterState_Get());
        let modules = ffi::PyImport_GetModuleDict();
        if state.is_null() || modules.is_null() {
            ffi::PyErr_Clear();
            return false;
        }
        if !ffi::PyDict_GetItemString(state, WATCHED_KEY.as_ptr()).is_null() {
            return true;
        }
        let id = PyDict_AddWatcher(on_modules_event);
        if id < 0 {
            // All watcher slots taken: check every time.
            ffi::PyErr_Clear();
            return false;
        }
        if ffi::PyDict_Watch(id, modules) != 0
            || ffi::PyDict_SetItemString(state, WATCHED_KEY.as_ptr(), ffi::Py_True()) != 0
        {
            ffi::PyErr_Clear();
            ffi::PyDict_ClearWatcher(id);
            ffi::PyErr_Clear();
            return false;
        }
        true
    }
}

/// No dict watchers before CPython 3.12: every check runs.
#[cfg(not(Py_3_12))]
fn watch(_py: Python<'_>) -> bool {
    false
}
