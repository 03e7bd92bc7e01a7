//! Owned references to Python objects, tied to one attachment.

mod python;

use crate::attach::{self, Python};
use crate::error::PyException;
use pyo3_ffi as ffi;
use std::ffi::{c_char, CString};
use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;

/// An owned (strong) reference to a Python object inside the interpreter
/// the current thread is attached to. It borrows the [`Python`] token, so it
/// can neither outlive the attachment nor move to another thread.
///
/// `repr(transparent)`: a slice of objects is laid out as an array of
/// `PyObject *`, which [`call`](Self::call) hands to vectorcall as is.
#[repr(transparent)]
pub struct Object<'py> {
    ptr: NonNull<ffi::PyObject>,
    py: Python<'py>,
}

// What `Object::call` relies on: an object is exactly one pointer.
const _: () = assert!(
    std::mem::size_of::<Object<'static>>() == std::mem::size_of::<*mut ffi::PyObject>()
        && std::mem::align_of::<Object<'static>>() == std::mem::align_of::<*mut ffi::PyObject>()
);

/// The built-in type family of an object, as the value conversions see it.
/// Subclasses count as their base (`bool` is checked before `int`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `None`
    None,
    /// `bool`
    Bool,
    /// `int`
    Int,
    /// `float`
    Float,
    /// `str`
    Str,
    /// `bytes`
    Bytes,
    /// `list`
    List,
    /// `tuple`
    Tuple,
    /// `dict`
    Dict,
    /// anything else
    Other,
}

fn cstring(s: &str) -> Result<CString, PyException> {
    CString::new(s)
        .map_err(|_| PyException::new("ValueError", format!("{s:?} contains a NUL byte")))
}

impl<'py> Object<'py> {
    /// # Safety
    /// `ptr` must be a new (owned) reference or null, in the interpreter
    /// `py` is attached to.
    #[inline]
    pub(crate) unsafe fn from_owned_ptr(py: Python<'py>, ptr: *mut ffi::PyObject) -> Option<Self> {
        NonNull::new(ptr).map(|ptr| Object { ptr, py })
    }

    /// # Safety
    /// As `from_owned_ptr`; a null `ptr` means a Python exception is set.
    #[inline]
    pub(crate) unsafe fn from_owned_or_err(
        py: Python<'py>,
        ptr: *mut ffi::PyObject,
    ) -> Result<Self, PyException> {
        // SAFETY: forwarded from the caller.
        unsafe { Self::from_owned_ptr(py, ptr) }.ok_or_else(|| PyException::fetch(py))
    }

    /// # Safety
    /// `ptr` must be a borrowed, non-null reference valid now, in the
    /// interpreter `py` is attached to.
    #[inline]
    pub(crate) unsafe fn from_borrowed_ptr(py: Python<'py>, ptr: *mut ffi::PyObject) -> Self {
        // SAFETY: attached; `ptr` is a live object, so taking a new reference is valid.
        unsafe { ffi::Py_INCREF(ptr) };
        Object {
            // SAFETY: the caller guarantees non-null.
            ptr: unsafe { NonNull::new_unchecked(ptr) },
            py,
        }
    }

    pub(crate) fn as_ptr(&self) -> *mut ffi::PyObject {
        self.ptr.as_ptr()
    }

    /// Gives up ownership of the reference (to return it to CPython).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn into_ptr(self) -> *mut ffi::PyObject {
        let p = self.as_ptr();
        std::mem::forget(self);
        p
    }

    /// The attachment token this object is bound to.
    pub fn py(&self) -> Python<'py> {
        self.py
    }

    /// The object's built-in type family.
    pub fn kind(&self) -> Kind {
        let p = self.as_ptr();
        // SAFETY: attached; `p` is a live object; the checks only read its type.
        unsafe {
            if p == ffi::Py_None() {
                Kind::None
            } else if ffi::PyBool_Check(p) != 0 {
                Kind::Bool
            } else if ffi::PyLong_Check(p) != 0 {
                Kind::Int
            } else if ffi::PyFloat_Check(p) != 0 {
                Kind::Float
            } else if ffi::PyUnicode_Check(p) != 0 {
                Kind::Str
            } else if ffi::PyBytes_Check(p) != 0 {
                Kind::Bytes
            } else if ffi::PyList_Check(p) != 0 {
                Kind::List
            } else if ffi::PyTuple_Check(p) != 0 {
                Kind::Tuple
            } else if ffi::PyDict_Check(p) != 0 {
                Kind::Dict
            } else {
                Kind::Other
            }
        }
    }

    /// The name of the object's type (`type(obj).__qualname__`, with the
    /// module for non-builtins).
    pub fn type_name(&self) -> String {
        // SAFETY: attached; Py_TYPE of a live object is a live type object,
        // borrowed, and we take our own reference.
        let ty = unsafe { Object::from_borrowed_ptr(self.py, ffi::Py_TYPE(self.as_ptr()).cast()) };
        ty.qualified_name()
    }

    /// For a type object: `module.qualname`, or just `qualname` for builtins.
    pub(crate) fn qualified_name(&self) -> String {
        let module = self
            .getattr("__module__")
            .ok()
            .and_then(|m| m.extract_str().ok())
            .unwrap_or_default();
        let name = self
            .getattr("__qualname__")
            .ok()
            .and_then(|n| n.extract_str().ok())
            .unwrap_or_else(|| "<unknown>".into());
        if module.is_empty() || module == "builtins" {
            name
        } else {
            format!("{module}.{name}")
        }
    }

    /// `getattr(self, name)`.
    pub fn getattr(&self, name: &str) -> Result<Object<'py>, PyException> {
        let name = cstring(name)?;
        // SAFETY: attached; `name` is a valid C string; the result is a new reference or null.
        unsafe {
            Object::from_owned_or_err(
                self.py,
                ffi::PyObject_GetAttrString(self.as_ptr(), name.as_ptr()),
            )
        }
    }

    /// `hasattr(self, name)`, swallowing errors as `false`.
    pub fn hasattr(&self, name: &str) -> bool {
        self.getattr(name).is_ok()
    }

    /// `callable(self)`.
    pub fn is_callable(&self) -> bool {
        // SAFETY: attached; reads the type's call slot.
        unsafe { ffi::PyCallable_Check(self.as_ptr()) != 0 }
    }

    /// Calls `self(*args, **kwargs)`.
    pub fn call(
        &self,
        args: &[Object<'py>],
        kwargs: Option<&Object<'py>>,
    ) -> Result<Object<'py>, PyException> {
        match kwargs {
            None => {
                // `Object` is `repr(transparent)` over its non-null pointer
                // (the `Python` token is zero-sized), so `args` is an array
                // of `args.len()` object pointers.
                let ptrs = args.as_ptr().cast::<*mut ffi::PyObject>();
                // SAFETY: attached; `ptrs` points at `args.len()` live
                // borrowed references kept alive by `args` (vectorcall does
                // not write to them without PY_VECTORCALL_ARGUMENTS_OFFSET);
                // no kwnames.
                let out = unsafe {
                    ffi::PyObject_Vectorcall(self.as_ptr(), ptrs, args.len(), std::ptr::null_mut())
                };
                crate::interrupt::leave_if_forked();
                // SAFETY: `out` is the call's new reference or null.
                unsafe { Object::from_owned_or_err(self.py, out) }
            }
            Some(kw) => {
                let tuple = self.py.tuple(args.iter().cloned())?;
                // SAFETY: attached; `tuple` is a tuple and `kw` the caller's
                // object (CPython type-checks it and raises if not a dict).
                let out = unsafe { ffi::PyObject_Call(self.as_ptr(), tuple.as_ptr(), kw.as_ptr()) };
                crate::interrupt::leave_if_forked();
                // SAFETY: `out` is the call's new reference or null.
                unsafe { Object::from_owned_or_err(self.py, out) }
            }
        }
    }

    /// Calls `self(arg)` with one positional argument.
    pub fn call1(&self, arg: &Object<'py>) -> Result<Object<'py>, PyException> {
        let mut ptrs = [arg.as_ptr()];
        // SAFETY: attached; one live borrowed reference kept alive by `arg`.
        let out = unsafe {
            ffi::PyObject_Vectorcall(self.as_ptr(), ptrs.as_mut_ptr(), 1, std::ptr::null_mut())
        };
        crate::interrupt::leave_if_forked();
        // SAFETY: `out` is the call's new reference or null.
        unsafe { Object::from_owned_or_err(self.py, out) }
    }

    /// Calls `self(*args)` where `self` is a Python loop that calls a user
    /// function: an exception it raises is fetched with the traceback
    /// starting below `self`'s own frame, so it reads as if the function
    /// had been called directly.
    pub fn call_loop(&self, args: &[Object<'py>]) -> Result<Object<'py>, PyException> {
        let mut ptrs = [std::ptr::null_mut(); 4];
        assert!(
            args.len() <= ptrs.len(),
            "gilpool: call_loop takes at most 4 arguments"
        );
        for (p, a) in ptrs.iter_mut().zip(args) {
            *p = a.as_ptr();
        }
        // SAFETY: attached; `ptrs` holds `args.len()` live borrowed
        // references kept alive by `args`; no kwnames.
        let out = unsafe {
            ffi::PyObject_Vectorcall(
                self.as_ptr(),
                ptrs.as_mut_ptr(),
                args.len(),
                std::ptr::null_mut(),
            )
        };
        crate::interrupt::leave_if_forked();
        if out.is_null() {
            return Err(PyException::fetch_below_caller(self.py));
        }
        // SAFETY: `out` is the call's new reference.
        unsafe { Object::from_owned_or_err(self.py, out) }
    }

    /// `iter(self)`.
    pub fn iter(&self) -> Result<Object<'py>, PyException> {
        // SAFETY: attached; PyObject_GetIter returns a new reference or null.
        unsafe { Object::from_owned_or_err(self.py, ffi::PyObject_GetIter(self.as_ptr())) }
    }

    /// `str(self)`.
    pub fn str_lossy(&self) -> Result<String, PyException> {
        // SAFETY: attached; PyObject_Str returns a new reference or null.
        let s = unsafe { Object::from_owned_or_err(self.py, ffi::PyObject_Str(self.as_ptr()))? };
        s.extract_str()
    }

    /// `repr(self)`.
    pub fn repr(&self) -> Result<String, PyException> {
        // SAFETY: attached; PyObject_Repr returns a new reference or null.
        let s = unsafe { Object::from_owned_or_err(self.py, ffi::PyObject_Repr(self.as_ptr()))? };
        s.extract_str()
    }

    fn type_error(&self, want: &str) -> PyException {
        PyException::new(
            "TypeError",
            format!("expected {want}, got {}", self.type_name()),
        )
    }

    /// The value of a `bool`.
    pub fn extract_bool(&self) -> Result<bool, PyException> {
        match self.kind() {
            // SAFETY: attached; comparing with the True singleton.
            Kind::Bool => Ok(unsafe { self.as_ptr() == ffi::Py_True() }),
            _ => Err(self.type_error("bool")),
        }
    }

    /// The value of an `int` that fits in `i64`; `Ok(None)` if it does not.
    #[inline]
    pub fn extract_i64(&self) -> Result<Option<i64>, PyException> {
        #[cfg(all(Py_3_12, not(Py_3_14)))]
        // SAFETY: attached (`self.py`); `self` is a live object.
        if let Some(v) = unsafe { compact::value(self.py, self.as_ptr()) } {
            return Ok(Some(v));
        }
        if !matches!(self.kind(), Kind::Int | Kind::Bool) {
            return Err(self.type_error("int"));
        }
        let mut overflow = 0;
        // SAFETY: attached; `self` is an int; `overflow` is a valid out-pointer.
        let v = unsafe { ffi::PyLong_AsLongLongAndOverflow(self.as_ptr(), &mut overflow) };
        if overflow != 0 {
            return Ok(None);
        }
        // SAFETY: attached; checking the error indicator.
        if v == -1 && unsafe { !ffi::PyErr_Occurred().is_null() } {
            return Err(PyException::fetch_below_caller(self.py));
        }
        Ok(Some(v))
    }

    /// Any `int` as a decimal string (for integers beyond 64 bits).
    pub fn int_to_decimal(&self) -> Result<String, PyException> {
        if !matches!(self.kind(), Kind::Int | Kind::Bool) {
            return Err(self.type_error("int"));
        }
        // SAFETY: attached; PyNumber_Long returns a new reference (an exact
        // int, so `str` gives digits even for int subclasses) or null.
        let exact =
            unsafe { Object::from_owned_or_err(self.py, ffi::PyNumber_Long(self.as_ptr()))? };
        exact.str_lossy()
    }

    /// The value of a `float` (or of an `int`, converted).
    pub fn extract_f64(&self) -> Result<f64, PyException> {
        if !matches!(self.kind(), Kind::Float | Kind::Int | Kind::Bool) {
            return Err(self.type_error("float"));
        }
        // SAFETY: attached; `self` is a number.
        let v = unsafe { ffi::PyFloat_AsDouble(self.as_ptr()) };
        // SAFETY: attached; checking the error indicator.
        if v == -1.0 && unsafe { !ffi::PyErr_Occurred().is_null() } {
            return Err(PyException::fetch_below_caller(self.py));
        }
        Ok(v)
    }

    /// The text of a `str`.
    pub fn extract_str(&self) -> Result<String, PyException> {
        if self.kind() != Kind::Str {
            return Err(self.type_error("str"));
        }
        let mut len: ffi::Py_ssize_t = 0;
        // SAFETY: attached; `self` is a str; the returned buffer is owned by
        // the object, valid while it lives, and `len` bytes long.
        unsafe {
            let data = ffi::PyUnicode_AsUTF8AndSize(self.as_ptr(), &mut len);
            if data.is_null() {
                return Err(PyException::fetch_below_caller(self.py));
            }
            let bytes = std::slice::from_raw_parts(data.cast::<u8>(), len as usize);
            Ok(String::from_utf8_lossy(bytes).into_owned())
        }
    }

    /// The content of a `bytes`.
    pub fn extract_bytes(&self) -> Result<Vec<u8>, PyException> {
        if self.kind() != Kind::Bytes {
            return Err(self.type_error("bytes"));
        }
        let mut data: *mut c_char = std::ptr::null_mut();
        let mut len: ffi::Py_ssize_t = 0;
        // SAFETY: attached; `self` is bytes; the buffer is owned by the
        // object, valid while it lives, `len` bytes long.
        unsafe {
            if ffi::PyBytes_AsStringAndSize(self.as_ptr(), &mut data, &mut len) != 0 {
                return Err(PyException::fetch_below_caller(self.py));
            }
            Ok(std::slice::from_raw_parts(data.cast::<u8>(), len as usize).to_vec())
        }
    }

    /// `len(self)`.
    pub fn len(&self) -> Result<usize, PyException> {
        // SAFETY: attached; PyObject_Size returns -1 with an exception set on failure.
        let n = unsafe { ffi::PyObject_Size(self.as_ptr()) };
        if n < 0 {
            Err(PyException::fetch(self.py))
        } else {
            Ok(n as usize)
        }
    }

    /// Whether `len(self) == 0`.
    pub fn is_empty(&self) -> Result<bool, PyException> {
        self.len().map(|n| n == 0)
    }

    /// The items of a `list` or `tuple`.
    pub fn sequence_items(&self) -> Result<Vec<Object<'py>>, PyException> {
        match self.kind() {
            Kind::List => {
                // SAFETY: attached; `self` is a list.
                let n = unsafe { ffi::PyList_Size(self.as_ptr()) };
                (0..n)
                    .map(|i| {
                        // SAFETY: attached; 0 <= i < len; GetItem returns a
                        // borrowed reference we immediately own a new one of.
                        // (No Python code runs between the size read and here.)
                        unsafe {
                            Ok(Object::from_borrowed_ptr(
                                self.py,
                                ffi::PyList_GetItem(self.as_ptr(), i),
                            ))
                        }
                    })
                    .collect()
            }
            Kind::Tuple => {
                // SAFETY: attached; `self` is a tuple.
                let n = unsafe { ffi::PyTuple_Size(self.as_ptr()) };
                (0..n)
                    .map(|i| {
                        // SAFETY: attached; 0 <= i < len; tuples are immutable.
                        unsafe {
                            Ok(Object::from_borrowed_ptr(
                                self.py,
                                ffi::PyTuple_GetItem(self.as_ptr(), i),
                            ))
                        }
                    })
                    .collect()
            }
            _ => Err(self.type_error("list or tuple")),
        }
    }

    /// Item `i` of a `list`, or `None` past its end (or if `self` is not
    /// a list). The length is read at each call, so a walk stays in bounds
    /// however Python code run between two calls changes the list.
    pub fn list_item(&self, i: usize) -> Option<Object<'py>> {
        let slot = self.list_slot(i)?;
        // SAFETY: attached; the slot is in bounds, so it holds a live item,
        // of which we take a new reference before any Python code runs.
        Some(unsafe { Object::from_borrowed_ptr(self.py, *slot) })
    }

    /// Takes item `i` out of a `list`, leaving `None` in its slot: the
    /// reference the list held becomes the caller's, with no reference
    /// count taken or given back. `None` past the list's end (or if `self`
    /// is not a list). As with [`list_item`](Self::list_item), the length
    /// is read at each call.
    pub fn list_take(&self, i: usize) -> Option<Object<'py>> {
        let slot = self.list_slot(i)?;
        // SAFETY: attached; the slot is in bounds and holds a live item
        // whose reference the list owns. Storing a new reference to `None`
        // in its place hands that reference over to us before any Python
        // code runs, and the list stays well formed.
        unsafe {
            let none = ffi::Py_None();
            ffi::Py_INCREF(none);
            let item = std::mem::replace(&mut *slot, none);
            Object::from_owned_ptr(self.py, item)
        }
    }

    /// The slot of item `i` of a `list`, or `None` past its end (or if
    /// `self` is not a list); valid until Python code runs.
    fn list_slot(&self, i: usize) -> Option<*mut *mut ffi::PyObject> {
        // SAFETY: attached; the check reads the type only, and after it
        // `self` is a list, whose size and item array are valid; `i` is
        // checked against the size before the slot's address is formed.
        unsafe {
            if ffi::PyList_Check(self.as_ptr()) == 0 {
                return None;
            }
            if i >= ffi::PyList_GET_SIZE(self.as_ptr()) as usize {
                return None;
            }
            Some((*self.as_ptr().cast::<ffi::PyListObject>()).ob_item.add(i))
        }
    }

    /// The `(key, value)` pairs of a `dict`, in insertion order.
    pub fn dict_items(&self) -> Result<Vec<(Object<'py>, Object<'py>)>, PyException> {
        if self.kind() != Kind::Dict {
            return Err(self.type_error("dict"));
        }
        let mut out = Vec::new();
        let mut pos: ffi::Py_ssize_t = 0;
        let mut key = std::ptr::null_mut();
        let mut value = std::ptr::null_mut();
        // SAFETY: attached; `self` is a dict; PyDict_Next yields borrowed
        // references that we own new ones of before running any Python code.
        unsafe {
            while ffi::PyDict_Next(self.as_ptr(), &mut pos, &mut key, &mut value) != 0 {
                out.push((
                    Object::from_borrowed_ptr(self.py, key),
                    Object::from_borrowed_ptr(self.py, value),
                ));
            }
        }
        Ok(out)
    }

    /// Keeps this object inside its interpreter beyond the attachment.
    pub fn stash(self) -> Stash {
        let ptr = self.ptr;
        std::mem::forget(self);
        Stash {
            ptr,
            tstate: attach::current(),
            _not_send: PhantomData,
        }
    }
}

impl Clone for Object<'_> {
    fn clone(&self) -> Self {
        // SAFETY: attached (the token is alive); the object is live.
        unsafe { ffi::Py_INCREF(self.as_ptr()) };
        Object {
            ptr: self.ptr,
            py: self.py,
        }
    }
}

impl Drop for Object<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: attached for 'py, which outlives `self`; we own one reference.
        unsafe { ffi::Py_DECREF(self.as_ptr()) }
    }
}

impl fmt::Debug for Object<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.repr() {
            Ok(r) => write!(f, "Object({r})"),
            Err(_) => f.write_str("Object(<unrepresentable>)"),
        }
    }
}

/// An owned reference kept inside one interpreter across attachments: a
/// worker's cache of imported modules and functions. Bind it to a token of
/// the same attachment to use it; release it while attached. Dropping it
/// unreleased leaks the reference (it cannot be freed without the GIL).
/// Not `Send`.
pub struct Stash {
    ptr: NonNull<ffi::PyObject>,
    tstate: *mut ffi::PyThreadState,
    _not_send: PhantomData<*mut ()>,
}

impl fmt::Debug for Stash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stash").field("ptr", &self.ptr).finish()
    }
}

impl Stash {
    /// A new reference to the stashed object for this attachment.
    ///
    /// # Panics
    /// If the thread is not attached through the thread state the object
    /// was stashed under (another interpreter).
    pub fn bind<'py>(&self, py: Python<'py>) -> Object<'py> {
        assert_eq!(
            attach::current(),
            self.tstate,
            "gilpool: a stashed object was used outside the interpreter that made it"
        );
        // SAFETY: attached to the same thread state the object was stashed
        // under (checked above), so it belongs to this interpreter; we hold
        // a reference, so it is live.
        unsafe { Object::from_borrowed_ptr(py, self.ptr.as_ptr()) }
    }

    /// Releases the reference, while attached to its interpreter.
    pub fn release(self, py: Python<'_>) {
        drop(self.bind(py));
        let ptr = self.ptr;
        // SAFETY: as in `bind`: same interpreter, we own this reference.
        unsafe { ffi::Py_DECREF(ptr.as_ptr()) };
    }
}

/// An owned reference kept outside any attachment, tied to the interpreter
/// that made it (by id; CPython never reuses interpreter ids) rather than
/// to a thread state: any thread attached to that interpreter may use it.
/// It has no `Drop`: it is given back with [`release`](Kept::release)
/// while attached to its interpreter, or [`forget`](Kept::forget)ten when
/// that interpreter is gone.
pub struct Kept {
    ptr: NonNull<ffi::PyObject>,
    interp: i64,
}

// SAFETY: the pointer is dereferenced (by CPython) only in `bind` and
// `release`, which check that the calling thread is attached to the
// interpreter that owns the object; moving the handle between threads does
// not touch the object.
unsafe impl Send for Kept {}
// SAFETY: as above; `&Kept` allows only the checked `bind`.
unsafe impl Sync for Kept {}

impl fmt::Debug for Kept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kept")
            .field("interpreter", &self.interp)
            .finish_non_exhaustive()
    }
}

impl<'py> Object<'py> {
    /// Keeps this reference beyond the attachment (see [`Kept`]).
    pub fn keep(self) -> Kept {
        let interp = self.py.interpreter_id();
        let ptr = self.ptr;
        std::mem::forget(self);
        Kept { ptr, interp }
    }
}

impl Kept {
    /// The id of the interpreter the object belongs to.
    pub fn interpreter_id(&self) -> i64 {
        self.interp
    }

    /// A new reference for this attachment, or `None` when the thread is
    /// attached to another interpreter.
    pub fn bind<'py>(&self, py: Python<'py>) -> Option<Object<'py>> {
        self.bind_here(py.here())
    }

    /// [`bind`](Self::bind) where the current interpreter is known.
    pub fn bind_here<'py>(&self, here: crate::Here<'py>) -> Option<Object<'py>> {
        if here.id() != self.interp {
            return None;
        }
        // SAFETY: attached to the interpreter that owns the object (checked
        // above: `here` names the current attachment's); we hold a
        // reference, so it is live.
        Some(unsafe { Object::from_borrowed_ptr(here.py(), self.ptr.as_ptr()) })
    }

    /// Gives the reference back, while attached to its interpreter;
    /// otherwise hands it back unchanged.
    pub fn release(self, py: Python<'_>) -> Result<(), Kept> {
        if py.interpreter_id() != self.interp {
            return Err(self);
        }
        // SAFETY: attached to the owning interpreter; we own this reference.
        unsafe { ffi::Py_DECREF(self.ptr.as_ptr()) };
        Ok(())
    }

    /// Gives the reference back if the current thread happens to be
    /// attached to the object's interpreter through gilpool; otherwise
    /// hands it back unchanged (to be released later, where it can be).
    pub fn release_here(self) -> Result<(), Kept> {
        if !attach::is_attached() {
            return Err(self);
        }
        // SAFETY: the thread is attached (checked above, through gilpool's
        // own record), which is what the token stands for, for this call.
        let py = unsafe { Python::assume_attached() };
        self.release(py)
    }

    /// Drops the handle without touching the object (its interpreter has
    /// ended, taking the object with it). `Kept` has no `Drop`, so this is
    /// what dropping it does; the name says it is meant.
    pub fn forget(self) {
        let Kept { ptr: _, interp: _ } = self;
    }
}

impl<'py> Python<'py> {
    /// Whether `sys.modules` still holds `sys` and `builtins` (a task that
    /// ran `sys.modules.clear()` leaves an interpreter that can import
    /// nothing).
    pub fn imports_intact(self) -> bool {
        // SAFETY: attached; the module dict is borrowed and live while the
        // interpreter is; GetItemString returns borrowed references or null
        // without raising.
        unsafe {
            let modules = ffi::PyImport_GetModuleDict();
            !modules.is_null()
                && !ffi::PyDict_GetItemString(modules, c"sys".as_ptr()).is_null()
                && !ffi::PyDict_GetItemString(modules, c"builtins".as_ptr()).is_null()
        }
    }

    /// The keys [`imports_intact_by`](Self::imports_intact_by) looks up,
    /// made once in this interpreter: `("sys", "builtins")`, interned, so
    /// each lookup finds `sys.modules`' own key by identity (no compare).
    pub fn import_keys(self) -> Result<(Object<'py>, Object<'py>), PyException> {
        let interned = |name: &std::ffi::CStr| {
            // SAFETY: attached; `name` is a NUL-terminated ASCII string;
            // returns a new reference or null with an exception set.
            unsafe {
                Object::from_owned_or_err(self, ffi::PyUnicode_InternFromString(name.as_ptr()))
            }
        };
        Ok((interned(c"sys")?, interned(c"builtins")?))
    }

    /// [`imports_intact`](Self::imports_intact) with keys made beforehand
    /// by [`import_keys`](Self::import_keys) in this interpreter: two hash
    /// lookups, no allocation.
    pub fn imports_intact_by(self, keys: &(Object<'py>, Object<'py>)) -> bool {
        // SAFETY: attached; the module dict is borrowed and live while the
        // interpreter is; the keys are live str objects of this interpreter
        // (their hash is cached); PyDict_GetItem returns borrowed references
        // or null and never raises.
        unsafe {
            let modules = ffi::PyImport_GetModuleDict();
            !modules.is_null()
                && !ffi::PyDict_GetItem(modules, keys.0.as_ptr()).is_null()
                && !ffi::PyDict_GetItem(modules, keys.1.as_ptr()).is_null()
        }
    }

    /// A copy of `sys.modules` as it is now (for [`restore_modules`](Self::restore_modules)).
    pub fn modules_snapshot(self) -> Result<Object<'py>, PyException> {
        // SAFETY: attached; the module dict is live; PyDict_Copy returns a
        // new reference or null with an exception set.
        unsafe { Object::from_owned_or_err(self, ffi::PyDict_Copy(ffi::PyImport_GetModuleDict())) }
    }

    /// Puts back every module of `snapshot` missing from `sys.modules`.
    pub fn restore_modules(self, snapshot: &Object<'py>) -> Result<(), PyException> {
        // SAFETY: attached; both are dicts of this interpreter (the snapshot
        // came from `modules_snapshot`); override = 0 keeps present entries.
        if unsafe { ffi::PyDict_Merge(ffi::PyImport_GetModuleDict(), snapshot.as_ptr(), 0) } != 0 {
            return Err(PyException::fetch(self));
        }
        Ok(())
    }

    /// `sys.getallocatedblocks()`: memory blocks this interpreter's own
    /// object allocator holds (per interpreter for own-GIL
    /// subinterpreters, which have their own obmalloc).
    pub fn allocated_blocks(self) -> Result<usize, PyException> {
        let n = self
            .import("sys")?
            .getattr("getallocatedblocks")?
            .call(&[], None)?
            .extract_i64()?
            .unwrap_or(0);
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

/// Reading a small exact `int` without a call (3.12 and 3.13): CPython's
/// `PyUnstable_Long_IsCompact` / `PyUnstable_Long_CompactValue`, inline
/// functions of its headers that pyo3-ffi does not declare. An `int` is
/// compact when it fits one digit; then its tag holds the sign and the
/// first digit the magnitude. The layout is checked once against values
/// CPython made (a build with 15-bit digits fails the check and keeps the
/// call).
#[cfg(all(Py_3_12, not(Py_3_14)))]
mod compact {
    use super::ffi;
    use crate::attach::Python;
    use std::sync::atomic::{AtomicU8, Ordering};

    /// `PyLongObject` in 3.12 and 3.13, as far as the first digit.
    #[repr(C)]
    struct Long {
        ob_base: ffi::PyObject,
        lv_tag: usize,
        digit0: u32,
    }

    /// `_PyLong_NON_SIZE_BITS`: the tag's low bits (sign and flags).
    const NON_SIZE_BITS: u32 = 3;
    /// `_PyLong_SIGN_MASK`: 0 positive, 1 zero, 2 negative.
    const SIGN_MASK: usize = 3;

    const UNKNOWN: u8 = 0;
    const USABLE: u8 = 1;
    const UNUSABLE: u8 = 2;
    static LAYOUT: AtomicU8 = AtomicU8::new(UNKNOWN);

    /// The compact value of `p` if it is an exact, compact `int`.
    ///
    /// # Safety
    /// `p` is a live object of the interpreter `py` is attached to.
    #[inline]
    pub(super) unsafe fn value(py: Python<'_>, p: *mut ffi::PyObject) -> Option<i64> {
        // SAFETY: attached (`py`); `p` is a live object, whose type the
        // check reads.
        if unsafe { ffi::PyLong_CheckExact(p) } == 0 {
            return None;
        }
        match LAYOUT.load(Ordering::Relaxed) {
            USABLE => {}
            UNKNOWN if check(py) => {}
            _ => return None,
        }
        // SAFETY: `p` is an exact int, laid out as `Long` (checked above).
        unsafe { read(p) }
    }

    /// # Safety
    /// `p` is a live exact `int` of a build whose layout passed `check`
    /// (or is being checked).
    #[inline]
    unsafe fn read(p: *mut ffi::PyObject) -> Option<i64> {
        // SAFETY: per this function's contract; a compact int has at
        // least one digit.
        let (tag, digit) = unsafe {
            let long = p.cast::<Long>();
            ((*long).lv_tag, (*long).digit0)
        };
        if tag >= (2 << NON_SIZE_BITS) {
            return None;
        }
        let sign = 1 - (tag & SIGN_MASK) as i64;
        Some(sign * i64::from(digit))
    }

    /// Reads values CPython made and compares them with what they are.
    #[cold]
    fn check(_py: Python<'_>) -> bool {
        let probes: [i64; 7] = [0, 1, -1, 255, -70_000, 1 << 20, (1 << 30) - 1];
        let ok = probes.iter().all(|&v| {
            // SAFETY: attached; a new reference or null, released below.
            let obj = unsafe { ffi::PyLong_FromLongLong(v) };
            if obj.is_null() {
                // SAFETY: attached; the failed call set an exception.
                unsafe { ffi::PyErr_Clear() };
                return false;
            }
            // SAFETY: `obj` is a live exact int.
            let read = unsafe { read(obj) };
            // SAFETY: attached; giving up the reference made above.
            unsafe { ffi::Py_DecRef(obj) };
            read == Some(v)
        });
        LAYOUT.store(if ok { USABLE } else { UNUSABLE }, Ordering::Relaxed);
        ok
    }
}
