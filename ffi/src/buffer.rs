//! Rust-owned memory shown to Python through the buffer protocol, and
//! Python buffers read back into Rust.
//!
//! [`SharedBytes`] is immutable, reference-counted memory kept alive by an
//! owner. [`Python::memoryview`] shows it to the interpreter the thread is
//! attached to as a read-only `memoryview` of the same memory (no copy):
//! an *exporter* object implementing `bf_getbuffer`/`bf_releasebuffer`
//! holds a clone of the `SharedBytes`, and the memoryview holds the
//! exporter, so the memory outlives every view (every buffer handed out
//! keeps its own reference to the exporter until `PyBuffer_Release`).
//!
//! The exporter's type is a heap type made with `PyType_FromSpec` **per
//! interpreter**, on first use there, and cached in that interpreter's own
//! state dict (`PyInterpreterState_GetDict`), so it lives and dies with
//! the interpreter: no type object is ever shared between own-GIL
//! interpreters, and no cache outlives the interpreter it belongs to.
//!
//! [`Object::buffer`] requests a buffer from any object that exports one
//! (`bytes`, `bytearray`, `memoryview`, `array.array`, numpy arrays) and
//! [`PyBufferView::copy_to`] copies a C-contiguous one out.

use crate::attach::Python;
use crate::error::PyException;
use crate::object::Object;
use pyo3_ffi as ffi;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Immutable bytes kept alive by a reference-counted owner: cloning is an
/// `Arc` increment, and the bytes stay where they are until the last clone
/// (in Rust or held by a Python view) is dropped.
///
/// ```
/// use gilpool_ffi::SharedBytes;
/// let b = SharedBytes::from_owner(vec![1u8, 2, 3, 4]);
/// let tail = b.slice(2, 2);
/// assert_eq!(tail.as_slice(), &[3, 4]);
/// assert_eq!(b.as_slice().as_ptr().wrapping_add(2), tail.as_slice().as_ptr());
/// ```
#[derive(Clone)]
pub struct SharedBytes {
    owner: Arc<dyn Send + Sync>,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: `ptr..ptr+len` lies in memory that `owner` (Send + Sync) owns
// and never changes (see `from_owner`); sharing or sending a pointer to
// immutable memory together with its owner is as safe as sending the
// owner.
unsafe impl Send for SharedBytes {}
// SAFETY: as for Send: only shared, immutable access is ever given out.
unsafe impl Sync for SharedBytes {}

impl std::fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBytes")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .finish()
    }
}

impl SharedBytes {
    /// Bytes owned by `owner`: `owner.as_ref()` is called once, after the
    /// owner is moved to its final place on the heap, and the slice it
    /// returned is what these bytes are from then on. The owner is dropped
    /// when the last clone of these bytes (or of a slice of them) is.
    ///
    /// This is sound for the same reason `bytes::Bytes::from_owner` is: the
    /// owner is never moved, never mutably borrowed and never dropped while
    /// a clone exists, so the shared borrow `as_ref` returned stays valid;
    /// an owner whose `as_ref` could return memory that changes behind a
    /// shared reference would need `unsafe` code of its own.
    pub fn from_owner<T: AsRef<[u8]> + Send + Sync + 'static>(owner: T) -> SharedBytes {
        let owner = Arc::new(owner);
        let bytes: &[u8] = (*owner).as_ref();
        let len = bytes.len();
        let ptr = NonNull::from(bytes).cast::<u8>();
        SharedBytes { owner, ptr, len }
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` is the slice the owner returned in
        // `from_owner` (or a sub-range of it), which stays valid and
        // unchanged while `self.owner` lives, i.e. for the borrow of `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The address of the first byte.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `len` bytes from `offset`, sharing the owner.
    ///
    /// # Panics
    /// If the range is out of bounds.
    pub fn slice(&self, offset: usize, len: usize) -> SharedBytes {
        let end = offset.checked_add(len).expect("slice range overflows");
        assert!(
            end <= self.len,
            "slice {offset}..{end} out of bounds of {} bytes",
            self.len
        );
        SharedBytes {
            owner: self.owner.clone(),
            // SAFETY: `offset <= len` (checked), so the result stays within
            // (or one past the end of) the owner's slice; it is non-null.
            ptr: unsafe { NonNull::new_unchecked(self.ptr.as_ptr().add(offset)) },
            len,
        }
    }

    /// How many clones of the owner exist (this one included): a test hook
    /// that shows whether Python still holds a view.
    pub fn owner_count(&self) -> usize {
        Arc::strong_count(&self.owner)
    }
}

/// How exported bytes are laid out: a buffer-protocol `format` (`"B"`,
/// `"d"`, `"<i"`, ...), the size of one item, and a C-contiguous `shape`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The `struct`-module format string of one item.
    pub format: String,
    /// Bytes per item.
    pub itemsize: usize,
    /// Items per dimension, outermost first (C order).
    pub shape: Vec<usize>,
}

/// The exporter object: a Python header and the export it serves.
#[repr(C)]
struct Exporter {
    ob_base: ffi::PyObject,
    /// A `Box<Export>` made by `Python::memoryview`, freed by `dealloc`;
    /// null for an exporter not made by gilpool.
    export: *mut Export,
}

/// What one exporter hands to every buffer request.
struct Export {
    bytes: SharedBytes,
    format: CString,
    itemsize: ffi::Py_ssize_t,
    shape: Box<[ffi::Py_ssize_t]>,
    strides: Box<[ffi::Py_ssize_t]>,
    /// Buffers handed out and not released yet.
    views: AtomicUsize,
}

/// The key of the exporter type in each interpreter's state dict. The
/// version keeps two builds of this crate in one process apart.
const TYPE_KEY: &CStr = c"gilpool_ffi.buffer.SharedBufferExporter/0.1";
const TYPE_NAME: &CStr = c"gilpool.SharedBufferExporter";
const READONLY: &CStr = c"gilpool: a SharedBuffer is read-only; copy it (bytearray(view), numpy.array(view)) to change it";
const EMPTY: &CStr = c"gilpool: this SharedBufferExporter exports nothing";
const NOT_F_CONTIGUOUS: &CStr =
    c"gilpool: a SharedBuffer is C-contiguous; it is not Fortran-contiguous";

/// Static tables the type points to: CPython keeps the `PyGetSetDef`
/// pointers for the type's life, so they must be `'static`.
struct GetSets([ffi::PyGetSetDef; 4]);
// SAFETY: the table is immutable (CPython only reads it) and holds
// pointers to static C strings and functions only.
unsafe impl Sync for GetSets {}

static GETSETS: GetSets = GetSets([
    ffi::PyGetSetDef {
        name: c"address".as_ptr(),
        get: Some(get_address),
        set: None,
        doc: c"The address of the first byte (an int).".as_ptr(),
        closure: std::ptr::null_mut(),
    },
    ffi::PyGetSetDef {
        name: c"nbytes".as_ptr(),
        get: Some(get_nbytes),
        set: None,
        doc: c"The length in bytes.".as_ptr(),
        closure: std::ptr::null_mut(),
    },
    ffi::PyGetSetDef {
        name: c"exports".as_ptr(),
        get: Some(get_exports),
        set: None,
        doc: c"Buffers handed out and not released yet.".as_ptr(),
        closure: std::ptr::null_mut(),
    },
    ffi::PyGetSetDef {
        name: std::ptr::null(),
        get: None,
        set: None,
        doc: std::ptr::null(),
        closure: std::ptr::null_mut(),
    },
]);

/// # Safety
/// `slf` must be a live instance of the exporter type.
unsafe fn export_of<'a>(slf: *mut ffi::PyObject) -> Option<&'a Export> {
    // SAFETY: `slf` is an exporter (the caller), so it has the `Exporter`
    // layout; `export` is null or a live `Box<Export>` owned by `slf`.
    unsafe { (*slf.cast::<Exporter>()).export.as_ref() }
}

unsafe extern "C" fn get_address(
    slf: *mut ffi::PyObject,
    _closure: *mut c_void,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a getter of the exporter type with an instance
    // of it, attached to its interpreter.
    unsafe {
        let addr = export_of(slf).map_or(0, |e| e.bytes.as_ptr() as usize);
        ffi::PyLong_FromSize_t(addr)
    }
}

unsafe extern "C" fn get_nbytes(
    slf: *mut ffi::PyObject,
    _closure: *mut c_void,
) -> *mut ffi::PyObject {
    // SAFETY: as in `get_address`.
    unsafe { ffi::PyLong_FromSize_t(export_of(slf).map_or(0, |e| e.bytes.len())) }
}

unsafe extern "C" fn get_exports(
    slf: *mut ffi::PyObject,
    _closure: *mut c_void,
) -> *mut ffi::PyObject {
    // SAFETY: as in `get_address`.
    unsafe { ffi::PyLong_FromSize_t(export_of(slf).map_or(0, |e| e.views.load(Ordering::Relaxed))) }
}

/// `bf_getbuffer`: fills `view` with the export, read-only; refuses
/// writable and Fortran-order requests with `BufferError`.
unsafe extern "C" fn get_buffer(
    slf: *mut ffi::PyObject,
    view: *mut ffi::Py_buffer,
    flags: c_int,
) -> c_int {
    // SAFETY: CPython calls this slot attached to the exporter's
    // interpreter, with `slf` an instance of the type and `view` a
    // writable `Py_buffer`. The pointers stored in `view` (data, format,
    // shape, strides) live in the `Export`, which lives as long as `slf`,
    // and `view.obj` takes a reference to `slf` that `PyBuffer_Release`
    // gives back: so they stay valid until the buffer is released.
    unsafe {
        let refuse = |msg: &CStr| {
            (*view).obj = std::ptr::null_mut();
            ffi::PyErr_SetString(ffi::PyExc_BufferError, msg.as_ptr());
            -1
        };
        let Some(export) = export_of(slf) else {
            return refuse(EMPTY);
        };
        if flags & ffi::PyBUF_WRITABLE != 0 {
            return refuse(READONLY);
        }
        let ndim = export.shape.len();
        let fortran_ok = export.shape.iter().filter(|&&n| n > 1).count() <= 1;
        if flags & ffi::PyBUF_F_CONTIGUOUS == ffi::PyBUF_F_CONTIGUOUS && !fortran_ok {
            return refuse(NOT_F_CONTIGUOUS);
        }
        let v = &mut *view;
        v.buf = export.bytes.as_ptr().cast_mut().cast::<c_void>();
        v.len = export.bytes.len() as ffi::Py_ssize_t;
        v.readonly = 1;
        v.itemsize = export.itemsize;
        v.format = if flags & ffi::PyBUF_FORMAT != 0 {
            export.format.as_ptr().cast_mut()
        } else {
            std::ptr::null_mut()
        };
        if flags & ffi::PyBUF_ND == ffi::PyBUF_ND {
            v.ndim = ndim as c_int;
            v.shape = export.shape.as_ptr().cast_mut();
        } else {
            // A simple request: one dimension of bytes.
            v.ndim = 1;
            v.shape = std::ptr::null_mut();
        }
        v.strides = if flags & ffi::PyBUF_STRIDES == ffi::PyBUF_STRIDES {
            export.strides.as_ptr().cast_mut()
        } else {
            std::ptr::null_mut()
        };
        v.suboffsets = std::ptr::null_mut();
        v.internal = std::ptr::null_mut();
        ffi::Py_IncRef(slf);
        v.obj = slf;
        export.views.fetch_add(1, Ordering::Relaxed);
        0
    }
}

/// `bf_releasebuffer`: counts the release (CPython drops `view.obj`'s
/// reference itself).
unsafe extern "C" fn release_buffer(slf: *mut ffi::PyObject, _view: *mut ffi::Py_buffer) {
    // SAFETY: called by `PyBuffer_Release` with the exporter that filled
    // the buffer, still alive (the buffer holds a reference to it).
    if let Some(export) = unsafe { export_of(slf) } {
        export.views.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `tp_dealloc`: drops the export (and with it this exporter's clone of
/// the bytes), frees the object and releases the type, as a heap type's
/// instance must.
unsafe extern "C" fn dealloc(slf: *mut ffi::PyObject) {
    // SAFETY: CPython calls tp_dealloc once, attached, when the last
    // reference to `slf` (an exporter) is gone. The export box is taken
    // out before the object's memory is freed; `tp_free` of a type made
    // by `PyType_FromSpec` without GC is `PyObject_Free`-compatible; every
    // instance of a heap type holds a reference to its type, released last.
    unsafe {
        let ty = ffi::Py_TYPE(slf);
        let export = std::mem::replace(&mut (*slf.cast::<Exporter>()).export, std::ptr::null_mut());
        if !export.is_null() {
            let export = Box::from_raw(export);
            // The owner's `Drop` is user code: it must not unwind into C.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(export))).is_err() {
                eprintln!("gilpool: a SharedBuffer owner panicked while being dropped");
            }
        }
        free_instance(slf, ty);
    }
}

/// Frees a heap type's instance whose Rust contents are already dropped,
/// then releases the reference every such instance holds to its type.
///
/// # Safety
/// Inside `tp_dealloc` of a type made by [`interpreter_type`] (no GC),
/// attached; `ty` is `Py_TYPE(slf)`, read before; `slf` is not used after.
pub(crate) unsafe fn free_instance(slf: *mut ffi::PyObject, ty: *mut ffi::PyTypeObject) {
    // SAFETY: forwarded from the caller; `tp_free` of such a type is
    // `PyObject_Free`-compatible (and is `PyObject_Free` when unset).
    unsafe {
        let free = ffi::PyType_GetSlot(ty, ffi::Py_tp_free);
        if free.is_null() {
            ffi::PyObject_Free(slf.cast());
        } else {
            let free: ffi::freefunc = std::mem::transmute::<*mut c_void, ffi::freefunc>(free);
            free(slf.cast());
        }
        ffi::Py_DecRef(ty.cast());
    }
}

/// Only gilpool makes instances of its types; Python cannot instantiate
/// them (`Py_TPFLAGS_DISALLOW_INSTANTIATION`, or before 3.10 a `tp_new`
/// that raises).
fn type_flags() -> std::ffi::c_uint {
    #[cfg(Py_3_10)]
    let flags = ffi::Py_TPFLAGS_DEFAULT | ffi::Py_TPFLAGS_DISALLOW_INSTANTIATION;
    #[cfg(not(Py_3_10))]
    let flags = ffi::Py_TPFLAGS_DEFAULT;
    flags as std::ffi::c_uint
}

/// `tp_new` before 3.10: refuses, as the flag does from 3.10 on.
#[cfg(not(Py_3_10))]
unsafe extern "C" fn refuse_new(
    _ty: *mut ffi::PyTypeObject,
    _args: *mut ffi::PyObject,
    _kwargs: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls tp_new attached; the message is static.
    unsafe {
        ffi::PyErr_SetString(
            ffi::PyExc_TypeError,
            c"gilpool's buffer and device types cannot be instantiated from Python".as_ptr(),
        )
    };
    std::ptr::null_mut()
}

/// The heap type `key` of the interpreter this thread is attached to: made
/// from `slots` with `PyType_FromSpec` on first use there and kept in that
/// interpreter's state dict, so it is never shared with another interpreter
/// and goes when its interpreter ends.
///
/// # Safety
/// `name` must be `'static`; `slots` must end with a zeroed slot, and
/// every slot function must have the signature its slot expects and stay
/// valid for the life of the process (`'static` tables and functions);
/// `basicsize` must be the size of the instances' `#[repr(C)]` layout.
pub(crate) unsafe fn interpreter_type<'py>(
    py: Python<'py>,
    key: &CStr,
    name: &'static CStr,
    basicsize: usize,
    slots: &[ffi::PyType_Slot],
) -> Result<Object<'py>, PyException> {
    // SAFETY: attached; the current interpreter is live, and its state
    // dict (borrowed) lives as long as the interpreter.
    let dict = unsafe { ffi::PyInterpreterState_GetDict(ffi::PyInterpreterState_Get()) };
    if dict.is_null() {
        return Err(PyException::new(
            "RuntimeError",
            "this interpreter has no state dict to keep gilpool's types in",
        ));
    }
    // SAFETY: attached; `dict` is a dict; GetItemString returns a borrowed
    // reference or null (and sets no exception).
    let found = unsafe { ffi::PyDict_GetItemString(dict, key.as_ptr()) };
    if !found.is_null() {
        // SAFETY: attached; `found` is live while the dict holds it.
        let ty = unsafe { Object::from_borrowed_ptr(py, found) };
        // SAFETY: attached; a type check on a live object.
        if unsafe { ffi::PyType_Check(ty.as_ptr()) } != 0 {
            return Ok(ty);
        }
    }
    debug_assert_eq!(slots.last().map(|s| s.slot), Some(0));
    let mut slots = slots.to_vec();
    #[cfg(not(Py_3_10))]
    slots.insert(0, slot(ffi::Py_tp_new, refuse_new as *mut c_void));
    let mut spec = ffi::PyType_Spec {
        name: name.as_ptr(),
        basicsize: basicsize as c_int,
        itemsize: 0,
        flags: type_flags(),
        slots: slots.as_mut_ptr(),
    };
    // SAFETY: attached; `spec` and `slots` are valid for the call (CPython
    // copies them into the new type); the caller guarantees the slots and
    // the name (`refuse_new` has tp_new's signature); the result is a new
    // reference or null.
    let ty = unsafe { Object::from_owned_or_err(py, ffi::PyType_FromSpec(&mut spec))? };
    // SAFETY: attached; SetItemString does not steal the reference.
    if unsafe { ffi::PyDict_SetItemString(dict, key.as_ptr(), ty.as_ptr()) } != 0 {
        return Err(PyException::fetch(py));
    }
    Ok(ty)
}

/// A slot entry.
pub(crate) fn slot(slot: c_int, pfunc: *mut c_void) -> ffi::PyType_Slot {
    ffi::PyType_Slot { slot, pfunc }
}

impl<'py> Python<'py> {
    /// The exporter type of the interpreter this thread is attached to.
    fn exporter_type(self) -> Result<Object<'py>, PyException> {
        let slots = [
            slot(ffi::Py_bf_getbuffer, get_buffer as *mut c_void),
            slot(ffi::Py_bf_releasebuffer, release_buffer as *mut c_void),
            slot(ffi::Py_tp_dealloc, dealloc as *mut c_void),
            slot(ffi::Py_tp_getset, GETSETS.0.as_ptr().cast_mut().cast()),
            slot(
                ffi::Py_tp_doc,
                c"Rust-owned, read-only memory exported by gilpool (see SharedBuffer)."
                    .as_ptr()
                    .cast_mut()
                    .cast(),
            ),
            slot(0, std::ptr::null_mut()),
        ];
        // SAFETY: the slot functions have the signatures of their slots and
        // are 'static, as are the getset table, the doc and the name; the
        // instances are `Exporter`s.
        unsafe {
            interpreter_type(
                self,
                TYPE_KEY,
                TYPE_NAME,
                std::mem::size_of::<Exporter>(),
                &slots,
            )
        }
    }

    /// A read-only `memoryview` of `bytes`, laid out as `layout` says, in
    /// the interpreter this thread is attached to. No byte is copied: the
    /// view's memory is `bytes`' memory, kept alive (through an exporter
    /// object that holds a clone of `bytes`) until the last view of it is
    /// released. The view's `obj` is the exporter, whose `address`,
    /// `nbytes` and `exports` attributes say where the memory is, how long
    /// it is and how many buffers of it are open.
    pub fn memoryview(
        self,
        bytes: &SharedBytes,
        layout: &Layout,
    ) -> Result<Object<'py>, PyException> {
        let bad = |m: String| Err(PyException::new("ValueError", m));
        if layout.itemsize == 0 {
            return bad("a buffer's itemsize must be at least 1".into());
        }
        if layout.shape.is_empty() || layout.shape.len() > 64 {
            return bad(format!(
                "a buffer has 1 to 64 dimensions, not {}",
                layout.shape.len()
            ));
        }
        let items = layout
            .shape
            .iter()
            .try_fold(1usize, |acc, &n| acc.checked_mul(n));
        if items.and_then(|n| n.checked_mul(layout.itemsize)) != Some(bytes.len()) {
            return bad(format!(
                "shape {:?} of {}-byte items does not cover {} bytes",
                layout.shape,
                layout.itemsize,
                bytes.len()
            ));
        }
        if bytes.len() > isize::MAX as usize {
            return bad("a buffer is at most isize::MAX bytes".into());
        }
        let format = CString::new(layout.format.as_str())
            .map_err(|_| PyException::new("ValueError", "the format contains a NUL byte"))?;
        let shape: Box<[ffi::Py_ssize_t]> =
            layout.shape.iter().map(|&n| n as ffi::Py_ssize_t).collect();
        let mut strides = vec![0 as ffi::Py_ssize_t; shape.len()].into_boxed_slice();
        let mut step = layout.itemsize as ffi::Py_ssize_t;
        for (s, &n) in strides.iter_mut().zip(shape.iter()).rev() {
            *s = step;
            step = step.saturating_mul(n.max(1));
        }
        let export = Box::new(Export {
            bytes: bytes.clone(),
            format,
            itemsize: layout.itemsize as ffi::Py_ssize_t,
            shape,
            strides,
            views: AtomicUsize::new(0),
        });
        let ty = self.exporter_type()?;
        // SAFETY: attached; `ty` is our exporter type; GenericAlloc returns a
        // zeroed instance (so `export` is null) holding a type reference,
        // or null with an exception set.
        let exporter = unsafe {
            Object::from_owned_or_err(
                self,
                ffi::PyType_GenericAlloc(ty.as_ptr().cast::<ffi::PyTypeObject>(), 0),
            )?
        };
        // SAFETY: `exporter` is a fresh instance with the `Exporter` layout;
        // from here its dealloc owns the box.
        unsafe { (*exporter.as_ptr().cast::<Exporter>()).export = Box::into_raw(export) };
        // SAFETY: attached; the exporter implements the buffer protocol; the
        // result is a new reference or null.
        unsafe { Object::from_owned_or_err(self, ffi::PyMemoryView_FromObject(exporter.as_ptr())) }
    }
}

/// A buffer requested from a Python object (`PyObject_GetBuffer` with
/// `PyBUF_FULL_RO`), released when dropped. Bound to the attachment.
pub struct PyBufferView<'py> {
    /// Boxed: exporters may point `shape` and `strides` into the
    /// `Py_buffer` itself (`PyBuffer_FillInfo` does), so it never moves.
    view: Box<ffi::Py_buffer>,
    _py: PhantomData<Python<'py>>,
}

impl std::fmt::Debug for PyBufferView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PyBufferView")
            .field("format", &self.format())
            .field("itemsize", &self.itemsize())
            .field("shape", &self.shape())
            .field("len", &self.len())
            .finish()
    }
}

impl<'py> Object<'py> {
    /// Whether the object exports the buffer protocol.
    pub fn has_buffer(&self) -> bool {
        // SAFETY: attached; reads the type's buffer slot.
        unsafe { ffi::PyObject_CheckBuffer(self.as_ptr()) != 0 }
    }

    /// Requests a read-only buffer with its format, shape and strides
    /// (`PyBUF_FULL_RO`).
    pub fn buffer(&self) -> Result<PyBufferView<'py>, PyException> {
        let mut view = Box::new(ffi::Py_buffer::new());
        // SAFETY: attached; `view` is a valid out-parameter at an address
        // that stays put until release; on success it is filled and must be
        // released (our Drop), on failure an exception is set and nothing
        // is to be released.
        let rc = unsafe { ffi::PyObject_GetBuffer(self.as_ptr(), &mut *view, ffi::PyBUF_FULL_RO) };
        if rc != 0 {
            return Err(PyException::fetch(self.py()));
        }
        Ok(PyBufferView {
            view,
            _py: PhantomData,
        })
    }
}

impl PyBufferView<'_> {
    /// The item format (`"B"` when the exporter gave none).
    pub fn format(&self) -> String {
        if self.view.format.is_null() {
            return "B".into();
        }
        // SAFETY: a non-null format of a filled buffer is a NUL-terminated
        // string valid until release.
        unsafe { CStr::from_ptr(self.view.format as *const c_char) }
            .to_string_lossy()
            .into_owned()
    }

    /// Bytes per item.
    pub fn itemsize(&self) -> usize {
        self.view.itemsize.max(0) as usize
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.view.len.max(0) as usize
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Items per dimension (`[]` for a scalar; `[len / itemsize]` when the
    /// exporter gave no shape).
    pub fn shape(&self) -> Vec<usize> {
        let ndim = self.view.ndim.max(0) as usize;
        if self.view.shape.is_null() {
            return if ndim == 0 {
                Vec::new()
            } else {
                vec![self.len() / self.itemsize().max(1)]
            };
        }
        // SAFETY: a non-null shape of a filled buffer has `ndim` entries,
        // valid until release.
        unsafe { std::slice::from_raw_parts(self.view.shape, ndim) }
            .iter()
            .map(|&n| n.max(0) as usize)
            .collect()
    }

    /// Whether the memory is one C-contiguous block (no suboffsets, row
    /// major strides).
    pub fn is_c_contiguous(&self) -> bool {
        // SAFETY: a filled buffer; the check only reads it.
        unsafe { ffi::PyBuffer_IsContiguous(&*self.view, b'C' as c_char) != 0 }
    }

    /// The address of the first byte.
    pub fn as_ptr(&self) -> *const u8 {
        self.view.buf.cast::<u8>()
    }

    /// Copies a C-contiguous buffer into `dst`, which must be exactly
    /// [`len`](Self::len) bytes; `false` (nothing copied) otherwise.
    pub fn copy_to(&self, dst: &mut [u8]) -> bool {
        if !self.is_c_contiguous() || dst.len() != self.len() {
            return false;
        }
        if dst.is_empty() {
            return true;
        }
        // SAFETY: a C-contiguous filled buffer is `len` readable bytes at
        // `buf`, valid until release; `dst` is a distinct Rust slice of the
        // same length. A raw copy (no Rust reference to the exporter's
        // memory is made) reads what is there now.
        unsafe { std::ptr::copy_nonoverlapping(self.as_ptr(), dst.as_mut_ptr(), dst.len()) };
        true
    }
}

impl Drop for PyBufferView<'_> {
    fn drop(&mut self) {
        // SAFETY: attached for 'py (the view borrows the token's lifetime);
        // the buffer was filled by a successful PyObject_GetBuffer and is
        // released exactly once.
        unsafe { ffi::PyBuffer_Release(&mut *self.view) }
    }
}
