//! Objects made from Rust values, imports, and code run in the attached
//! interpreter: the `Python` token's side of `Object`.

use super::{cstring, Object};
use crate::attach::Python;
use crate::error::PyException;
use pyo3_ffi as ffi;

impl<'py> Python<'py> {
    /// `import name`.
    pub fn import(self, name: &str) -> Result<Object<'py>, PyException> {
        let c = cstring(name)?;
        // SAFETY: attached; a valid C string; new reference or null.
        unsafe { Object::from_owned_or_err(self, ffi::PyImport_ImportModule(c.as_ptr())) }
    }

    /// `None`.
    pub fn none(self) -> Object<'py> {
        // SAFETY: attached; None is immortal/static, we take a new reference.
        unsafe { Object::from_borrowed_ptr(self, ffi::Py_None()) }
    }

    /// `True` or `False`.
    pub fn bool(self, v: bool) -> Object<'py> {
        // SAFETY: attached; the bool singletons are static, we take a new reference.
        unsafe { Object::from_borrowed_ptr(self, if v { ffi::Py_True() } else { ffi::Py_False() }) }
    }

    /// An `int` from an `i64`.
    #[inline]
    pub fn int(self, v: i64) -> Result<Object<'py>, PyException> {
        // SAFETY: attached; new reference or null.
        unsafe { Object::from_owned_or_err(self, ffi::PyLong_FromLongLong(v)) }
    }

    /// An `int` from a `u64`.
    pub fn int_u64(self, v: u64) -> Result<Object<'py>, PyException> {
        // SAFETY: attached; new reference or null.
        unsafe { Object::from_owned_or_err(self, ffi::PyLong_FromUnsignedLongLong(v)) }
    }

    /// An `int` from a decimal string (any size).
    pub fn int_from_decimal(self, digits: &str) -> Result<Object<'py>, PyException> {
        let c = cstring(digits)?;
        // SAFETY: attached; a valid C string; base 10; new reference or null.
        unsafe {
            Object::from_owned_or_err(
                self,
                ffi::PyLong_FromString(c.as_ptr(), std::ptr::null_mut(), 10),
            )
        }
    }

    /// A `float`.
    pub fn float(self, v: f64) -> Result<Object<'py>, PyException> {
        // SAFETY: attached; new reference or null.
        unsafe { Object::from_owned_or_err(self, ffi::PyFloat_FromDouble(v)) }
    }

    /// A `str`.
    pub fn str(self, s: &str) -> Object<'py> {
        // SAFETY: attached; `s` is valid UTF-8 of the given length.
        unsafe {
            Object::from_owned_or_err(
                self,
                ffi::PyUnicode_FromStringAndSize(s.as_ptr().cast(), s.len() as ffi::Py_ssize_t),
            )
        }
        .expect("gilpool: out of memory creating a str")
    }

    /// A `bytes`.
    pub fn bytes(self, b: &[u8]) -> Result<Object<'py>, PyException> {
        // SAFETY: attached; `b` is valid for its length; CPython copies it.
        unsafe {
            Object::from_owned_or_err(
                self,
                ffi::PyBytes_FromStringAndSize(b.as_ptr().cast(), b.len() as ffi::Py_ssize_t),
            )
        }
    }

    /// A `list` of the given items.
    pub fn list<I>(self, items: I) -> Result<Object<'py>, PyException>
    where
        I: IntoIterator<Item = Object<'py>>,
        I::IntoIter: ExactSizeIterator,
    {
        let items = items.into_iter();
        // SAFETY: attached; new list of the right size or null.
        let list = unsafe {
            Object::from_owned_or_err(self, ffi::PyList_New(items.len() as ffi::Py_ssize_t))?
        };
        fill(list, items, |s, i, p| {
            // SAFETY: `fill` passes this fresh list, an index below its
            // length whose slot is still empty, and a reference it gives up.
            unsafe { ffi::PyList_SET_ITEM(s, i, p) }
        })
    }

    /// A `tuple` of the given items.
    pub fn tuple<I>(self, items: I) -> Result<Object<'py>, PyException>
    where
        I: IntoIterator<Item = Object<'py>>,
        I::IntoIter: ExactSizeIterator,
    {
        let items = items.into_iter();
        // SAFETY: attached; new tuple of the right size or null.
        let tuple = unsafe {
            Object::from_owned_or_err(self, ffi::PyTuple_New(items.len() as ffi::Py_ssize_t))?
        };
        fill(tuple, items, |s, i, p| {
            // SAFETY: `fill` passes this fresh tuple, an index below its
            // length whose slot is still empty, and a reference it gives up.
            unsafe { ffi::PyTuple_SET_ITEM(s, i, p) }
        })
    }

    /// A `dict` of the given pairs (later keys win).
    pub fn dict(self, items: Vec<(Object<'py>, Object<'py>)>) -> Result<Object<'py>, PyException> {
        // SAFETY: attached; new dict or null.
        let dict = unsafe { Object::from_owned_or_err(self, ffi::PyDict_New())? };
        for (k, v) in items {
            // SAFETY: attached; SetItem does not steal; it raises on an unhashable key.
            if unsafe { ffi::PyDict_SetItem(dict.as_ptr(), k.as_ptr(), v.as_ptr()) } != 0 {
                return Err(PyException::fetch(self));
            }
        }
        Ok(dict)
    }

    /// Runs `source` as statements in a fresh namespace (`exec`).
    pub fn run(self, source: &str) -> Result<(), PyException> {
        self.exec(source).map(drop)
    }

    /// Runs `source` (statements defining `name`) in a fresh namespace and
    /// returns what `name` is bound to.
    pub fn define(self, source: &str, name: &str) -> Result<Object<'py>, PyException> {
        let globals = self.exec(source)?;
        let key = cstring(name)?;
        // SAFETY: attached; `globals` is a dict; GetItemString returns a
        // borrowed reference or null (no exception set).
        let item = unsafe { ffi::PyDict_GetItemString(globals.as_ptr(), key.as_ptr()) };
        if item.is_null() {
            return Err(PyException::new(
                "NameError",
                format!("the source defines no {name}"),
            ));
        }
        // SAFETY: attached; `item` is live while `globals` holds it; we
        // take a reference of our own.
        Ok(unsafe { Object::from_borrowed_ptr(self, item) })
    }

    /// Runs `source` (statements that assign `result`, an `int`) and
    /// returns `result`.
    pub fn eval_usize(self, source: &str) -> Result<usize, PyException> {
        let globals = self.exec(source)?;
        let key = cstring("result")?;
        // SAFETY: attached; `globals` is a dict; GetItemString returns a
        // borrowed reference or null (no exception set).
        let item = unsafe { ffi::PyDict_GetItemString(globals.as_ptr(), key.as_ptr()) };
        if item.is_null() {
            return Err(PyException::new("KeyError", "the snippet set no result"));
        }
        // SAFETY: attached; `item` is live while `globals` holds it.
        let obj = unsafe { Object::from_borrowed_ptr(self, item) };
        let v = obj
            .extract_i64()?
            .ok_or_else(|| PyException::new("OverflowError", "result out of range"))?;
        Ok(usize::try_from(v).unwrap_or(0))
    }

    /// `exec(source, globals)` in a fresh namespace; returns the namespace.
    fn exec(self, source: &str) -> Result<Object<'py>, PyException> {
        let code = cstring(source)?;
        // SAFETY: attached; new dict or null.
        let globals = unsafe { Object::from_owned_or_err(self, ffi::PyDict_New())? };
        let builtins = self.import("builtins")?;
        let key = cstring("__builtins__")?;
        // SAFETY: attached; SetItemString does not steal.
        if unsafe { ffi::PyDict_SetItemString(globals.as_ptr(), key.as_ptr(), builtins.as_ptr()) }
            != 0
        {
            return Err(PyException::fetch(self));
        }
        // SAFETY: attached; valid C string; globals is a dict used as locals too.
        let out = unsafe {
            ffi::PyRun_String(
                code.as_ptr(),
                ffi::Py_file_input,
                globals.as_ptr(),
                globals.as_ptr(),
            )
        };
        crate::interrupt::leave_if_forked();
        // SAFETY: `out` is a new reference or null.
        unsafe { Object::from_owned_or_err(self, out) }.map(|_| globals)
    }

    /// Puts `dirs` at the front of `sys.path` (each once).
    pub fn prepend_sys_path(self, dirs: &[String]) -> Result<(), PyException> {
        if dirs.is_empty() {
            return Ok(());
        }
        let sys = self.import("sys")?;
        let path = sys.getattr("path")?;
        let insert = path.getattr("insert")?;
        let contains = path.getattr("__contains__")?;
        for (i, d) in dirs.iter().enumerate() {
            let s = self.str(d);
            if contains.call1(&s)?.extract_bool()? {
                continue;
            }
            insert.call(&[self.int(i as i64)?, s], None)?;
        }
        Ok(())
    }

    /// Adds each of `dirs` that is not on `sys.path` yet (compared after
    /// resolving symlinks) with `site.addsitedir`: appended, its `.pth`
    /// files processed, as `site` does for an environment's site-packages.
    /// A directory already there is skipped, so its `.pth` files never run
    /// twice in one interpreter.
    pub fn add_site_dirs(self, dirs: &[String]) -> Result<(), PyException> {
        if dirs.is_empty() {
            return Ok(());
        }
        let realpath = self.import("os")?.getattr("path")?.getattr("realpath")?;
        let addsitedir = self.import("site")?.getattr("addsitedir")?;
        let path = self.import("sys")?.getattr("path")?;
        for d in dirs {
            let wanted = realpath.call1(&self.str(d))?.extract_str()?;
            let present = path.sequence_items()?.iter().any(|entry| {
                realpath
                    .call1(entry)
                    .and_then(|p| p.extract_str())
                    .is_ok_and(|p| p == wanted)
            });
            if !present {
                addsitedir.call1(&self.str(d))?;
            }
        }
        Ok(())
    }

    /// The id of the interpreter this thread is attached to (0 = main).
    pub fn interpreter_id(self) -> i64 {
        // SAFETY: attached; the current thread state and its interpreter are live.
        unsafe {
            ffi::PyInterpreterState_GetID(ffi::PyThreadState_GetInterpreter(
                ffi::PyThreadState_Get(),
            ))
        }
    }
}

fn miscounted(slots: usize) -> PyException {
    PyException::new(
        "SystemError",
        format!("gilpool: an iterator said it had {slots} items and gave another count"),
    )
}

/// Moves `items` into the fresh list or tuple `seq` of `items.len()`
/// slots through `set_item` (`PyList_SET_ITEM` or `PyTuple_SET_ITEM`:
/// called only with an empty slot below that length and a reference given
/// up to it). An iterator whose length was wrong is an error, never an
/// unfilled or overrun slot.
#[inline]
fn fill<'py>(
    seq: Object<'py>,
    items: impl ExactSizeIterator<Item = Object<'py>>,
    set_item: impl Fn(*mut ffi::PyObject, ffi::Py_ssize_t, *mut ffi::PyObject),
) -> Result<Object<'py>, PyException> {
    let slots = items.len();
    let mut filled = 0;
    for item in items {
        if filled == slots {
            return Err(miscounted(slots));
        }
        let p = item.as_ptr();
        std::mem::forget(item);
        // `filled` is below the fresh sequence's length and its slot is
        // empty; the slot takes the reference just given up.
        set_item(seq.as_ptr(), filled as ffi::Py_ssize_t, p);
        filled += 1;
    }
    if filled != slots {
        // Unfilled slots are NULL, which the sequence's deallocation
        // skips.
        return Err(miscounted(slots));
    }
    Ok(seq)
}
