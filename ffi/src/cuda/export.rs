//! The Python object for device memory: a heap type per interpreter with
//! `__cuda_array_interface__` (version 3) and `__dlpack__` /
//! `__dlpack_device__` ([`Python::device_array`]).

use super::{contained, driver, DeviceMemory};
use crate::attach::Python;
use crate::buffer::{free_instance, interpreter_type, slot};
use crate::error::PyException;
use crate::object::{Kind, Object};
use cudarc::driver::{result, sys};
use pyo3_ffi as ffi;
use std::ffi::{c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// DLPack (legacy, unversioned ABI) as in `dlpack.h`.
#[repr(C)]
#[derive(Clone, Copy)]
struct DLDevice {
    device_type: i32,
    device_id: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct DLDataType {
    code: u8,
    pub(super) bits: u8,
    lanes: u16,
}

#[repr(C)]
struct DLTensor {
    data: *mut c_void,
    device: DLDevice,
    ndim: i32,
    dtype: DLDataType,
    shape: *mut i64,
    strides: *mut i64,
    byte_offset: u64,
}

#[repr(C)]
struct DLManagedTensor {
    dl_tensor: DLTensor,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}

/// `kDLCUDA`.
const DL_CUDA: i32 = 2;

/// One DLPack export: the managed tensor first (its address is the box's),
/// then what it points at and what keeps the memory alive.
#[repr(C)]
struct Managed {
    tensor: DLManagedTensor,
    shape: Box<[i64]>,
    _memory: Arc<DeviceMemory>,
}

/// The DLPack deleter: drops the export (any thread, with or without a
/// GIL: it touches only Rust data).
unsafe extern "C" fn dl_deleter(tensor: *mut DLManagedTensor) {
    if tensor.is_null() {
        return;
    }
    // SAFETY: `tensor` is the first field of a `Box<Managed>` leaked in
    // `dlpack`; the consumer calls the deleter once.
    let managed = unsafe { Box::from_raw(tensor.cast::<Managed>()) };
    let _ = catch_unwind(AssertUnwindSafe(|| drop(managed)));
}

const DLTENSOR: &CStr = c"dltensor";

/// The capsule's destructor: frees the tensor unless a consumer took it
/// (and renamed the capsule `used_dltensor`).
unsafe extern "C" fn capsule_destructor(capsule: *mut ffi::PyObject) {
    // SAFETY: CPython calls this attached, with the capsule being freed;
    // IsValid with our name sets no exception; the pointer is our tensor.
    unsafe {
        if ffi::PyCapsule_IsValid(capsule, DLTENSOR.as_ptr()) == 1 {
            let tensor = ffi::PyCapsule_GetPointer(capsule, DLTENSOR.as_ptr());
            dl_deleter(tensor.cast::<DLManagedTensor>());
        }
    }
}

/// What a device array object serves.
struct DeviceExport {
    memory: Arc<DeviceMemory>,
    typestr: String,
    shape: Vec<usize>,
    dtype: DLDataType,
}

#[repr(C)]
struct DeviceArray {
    ob_base: ffi::PyObject,
    export: *mut DeviceExport,
}

const ARRAY_KEY: &CStr = c"gilpool_ffi.cuda.DeviceArray/0.1";
const ARRAY_NAME: &CStr = c"gilpool.DeviceArray";

/// # Safety
/// `slf` must be a live instance of the device array type.
unsafe fn device_export<'a>(slf: *mut ffi::PyObject) -> Option<&'a DeviceExport> {
    // SAFETY: the `DeviceArray` layout; `export` is null or a live box.
    unsafe { (*slf.cast::<DeviceArray>()).export.as_ref() }
}

/// Raises `e` as the Python exception its type name says, returning null.
fn raise(e: &PyException) -> *mut ffi::PyObject {
    let msg = CString::new(e.message.replace('\0', " ")).unwrap_or_default();
    // SAFETY: inside a slot CPython called, attached; the exception types
    // are static; PyErr_SetString copies the message.
    unsafe {
        let ty = match e.type_name.as_str() {
            "BufferError" => ffi::PyExc_BufferError,
            "TypeError" => ffi::PyExc_TypeError,
            "ValueError" => ffi::PyExc_ValueError,
            _ => ffi::PyExc_RuntimeError,
        };
        ffi::PyErr_SetString(ty, msg.as_ptr());
    }
    std::ptr::null_mut()
}

/// Runs a slot's body with a token, turning errors and panics into a
/// raised exception.
fn slot_body(
    f: impl for<'py> FnOnce(Python<'py>) -> Result<Object<'py>, PyException>,
) -> *mut ffi::PyObject {
    // SAFETY: only called from slots and methods CPython is running.
    let py = unsafe { Python::assume_called_by_cpython() };
    match catch_unwind(AssertUnwindSafe(|| f(py))) {
        Ok(Ok(obj)) => obj.into_ptr(),
        Ok(Err(e)) => raise(&e),
        Err(_) => raise(&PyException::new(
            "RuntimeError",
            "gilpool: a panic in a DeviceArray method (the CUDA driver may be unusable)",
        )),
    }
}

fn missing() -> PyException {
    PyException::new("RuntimeError", "gilpool: this DeviceArray holds no memory")
}

unsafe extern "C" fn get_cai(slf: *mut ffi::PyObject, _closure: *mut c_void) -> *mut ffi::PyObject {
    slot_body(|py| {
        // SAFETY: CPython calls the getter with an instance of the type.
        let e = unsafe { device_export(slf) }.ok_or_else(missing)?;
        let shape = e
            .shape
            .iter()
            .map(|&n| py.int_u64(n as u64))
            .collect::<Result<Vec<_>, _>>()?;
        let data = py.tuple(vec![py.int_u64(e.memory.device_ptr())?, py.bool(false)])?;
        py.dict(vec![
            (py.str("shape"), py.tuple(shape)?),
            (py.str("typestr"), py.str(&e.typestr)),
            (py.str("data"), data),
            (py.str("version"), py.int(3)?),
            (py.str("strides"), py.none()),
            (
                py.str("stream"),
                py.int_u64(e.memory.device().stream_handle() as u64)?,
            ),
        ])
    })
}

unsafe extern "C" fn dlpack_device(
    slf: *mut ffi::PyObject,
    _noargs: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    slot_body(|py| {
        // SAFETY: CPython calls the method with an instance of the type.
        let e = unsafe { device_export(slf) }.ok_or_else(missing)?;
        py.tuple(vec![
            py.int(DL_CUDA as i64)?,
            py.int(e.memory.device().ordinal() as i64)?,
        ])
    })
}

/// A borrowed keyword argument, if given and not None.
fn kwarg<'py>(py: Python<'py>, kwargs: *mut ffi::PyObject, name: &CStr) -> Option<Object<'py>> {
    if kwargs.is_null() {
        return None;
    }
    // SAFETY: attached; `kwargs` is the call's keyword dict; a borrowed
    // reference or null (no exception).
    let p = unsafe { ffi::PyDict_GetItemString(kwargs, name.as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: live while the dict holds it; we take our own reference.
    let obj = unsafe { Object::from_borrowed_ptr(py, p) };
    (obj.kind() != Kind::None).then_some(obj)
}

unsafe extern "C" fn dlpack(
    slf: *mut ffi::PyObject,
    args: *mut ffi::PyObject,
    kwargs: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    slot_body(|py| {
        // SAFETY: CPython calls the method with an instance of the type
        // and an args tuple.
        let e = unsafe { device_export(slf) }.ok_or_else(missing)?;
        // SAFETY: `args` is a tuple.
        if unsafe { ffi::PyTuple_Size(args) } != 0 {
            return Err(PyException::new(
                "TypeError",
                "__dlpack__() takes keyword arguments only",
            ));
        }
        let device = e.memory.device();
        if let Some(want) = kwarg(py, kwargs, c"dl_device") {
            let items = want.sequence_items()?;
            let ids: Vec<Option<i64>> = items
                .iter()
                .map(|i| i.extract_i64().ok().flatten())
                .collect();
            if ids != [Some(DL_CUDA as i64), Some(device.ordinal() as i64)] {
                return Err(PyException::new(
                    "BufferError",
                    format!(
                        "gilpool: the array lives on CUDA device {}; it cannot be exported to {}",
                        device.ordinal(),
                        want.repr().unwrap_or_default()
                    ),
                ));
            }
        }
        if let Some(copy) = kwarg(py, kwargs, c"copy") {
            if copy.extract_bool().unwrap_or(false) {
                return Err(PyException::new(
                    "BufferError",
                    "gilpool: __dlpack__(copy=True) is not supported; the consumer can copy",
                ));
            }
        }
        // The consumer's stream: None is the legacy default stream (1).
        let consumer = match kwarg(py, kwargs, c"stream") {
            None => 1,
            Some(s) => s.extract_i64()?.ok_or_else(|| {
                PyException::new("ValueError", "the stream is not a valid pointer")
            })?,
        };
        if consumer == 0 {
            return Err(PyException::new(
                "ValueError",
                "stream=0 is ambiguous and not allowed for CUDA (use 1 for the legacy default stream)",
            ));
        }
        if consumer != -1 && consumer as usize != device.stream_handle() {
            // Make the consumer's stream wait for our queued work.
            contained("cuStreamWaitEvent", || {
                device.bind()?;
                let event = driver("cuEventCreate", device.ctx.new_event(None))?;
                driver("cuEventRecord", event.record(&device.stream))?;
                // SAFETY: the consumer's stream is live (the caller is about
                // to use it); the event is live for the call; destroying it
                // right after is allowed (released once complete).
                driver("cuStreamWaitEvent", unsafe {
                    result::stream::wait_event(
                        consumer as usize as sys::CUstream,
                        event.cu_event(),
                        sys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT,
                    )
                })
            })
            .map_err(|e| PyException::new("BufferError", e.to_string()))?;
        }
        let mut shape: Box<[i64]> = e.shape.iter().map(|&n| n as i64).collect();
        let managed = Box::new(Managed {
            tensor: DLManagedTensor {
                dl_tensor: DLTensor {
                    data: e.memory.device_ptr() as usize as *mut c_void,
                    device: DLDevice {
                        device_type: DL_CUDA,
                        device_id: device.ordinal() as i32,
                    },
                    ndim: shape.len() as i32,
                    dtype: e.dtype,
                    shape: shape.as_mut_ptr(),
                    strides: std::ptr::null_mut(),
                    byte_offset: 0,
                },
                manager_ctx: std::ptr::null_mut(),
                deleter: Some(dl_deleter),
            },
            shape,
            _memory: e.memory.clone(),
        });
        let raw = Box::into_raw(managed);
        // SAFETY: `raw` is a live box; its shape pointer stays valid (the
        // boxed slice does not move when the box moves).
        unsafe { (*raw).tensor.manager_ctx = raw.cast() };
        // SAFETY: attached; the capsule owns `raw` from here (its
        // destructor frees it unless a consumer takes it); null on failure,
        // in which case we free it ourselves.
        let capsule =
            unsafe { ffi::PyCapsule_New(raw.cast(), DLTENSOR.as_ptr(), Some(capsule_destructor)) };
        if capsule.is_null() {
            // SAFETY: nothing else owns `raw`.
            unsafe { dl_deleter(raw.cast()) };
            return Err(PyException::fetch(py));
        }
        // SAFETY: a new reference.
        unsafe { Object::from_owned_or_err(py, capsule) }
    })
}

unsafe extern "C" fn device_dealloc(slf: *mut ffi::PyObject) {
    // SAFETY: tp_dealloc of a device array, attached, called once.
    unsafe {
        let ty = ffi::Py_TYPE(slf);
        let export = std::mem::replace(
            &mut (*slf.cast::<DeviceArray>()).export,
            std::ptr::null_mut(),
        );
        if !export.is_null() {
            let export = Box::from_raw(export);
            let _ = catch_unwind(AssertUnwindSafe(|| drop(export)));
        }
        free_instance(slf, ty);
    }
}

struct GetSets([ffi::PyGetSetDef; 2]);
// SAFETY: immutable, pointers to statics only.
unsafe impl Sync for GetSets {}
static GETSETS: GetSets = GetSets([
    ffi::PyGetSetDef {
        name: c"__cuda_array_interface__".as_ptr(),
        get: Some(get_cai),
        set: None,
        doc: c"The CUDA Array Interface, version 3.".as_ptr(),
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

struct Methods([ffi::PyMethodDef; 3]);
// SAFETY: immutable, pointers to statics only.
unsafe impl Sync for Methods {}
static METHODS: Methods = Methods([
    ffi::PyMethodDef {
        ml_name: c"__dlpack__".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunctionWithKeywords: dlpack,
        },
        ml_flags: ffi::METH_VARARGS | ffi::METH_KEYWORDS,
        ml_doc: c"__dlpack__(*, stream=None, max_version=None, dl_device=None, copy=None): a DLPack capsule (legacy ABI) of the device memory".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"__dlpack_device__".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunction: dlpack_device,
        },
        ml_flags: ffi::METH_NOARGS,
        ml_doc: c"(2, device ordinal): CUDA".as_ptr(),
    },
    ffi::PyMethodDef::zeroed(),
]);

/// The DLPack data type of a `__cuda_array_interface__` typestr.
pub(super) fn dl_dtype(typestr: &str) -> Option<DLDataType> {
    let mut c = typestr.chars();
    let order = c.next()?;
    let kind = c.next()?;
    let size: u8 = c.as_str().parse().ok()?;
    if !matches!(order, '<' | '|' | '=') {
        return None;
    }
    let code = match kind {
        'i' => 0,
        'u' => 1,
        'f' => 2,
        'b' => 6,
        _ => return None,
    };
    Some(DLDataType {
        code,
        bits: size.checked_mul(8)?,
        lanes: 1,
    })
}

impl<'py> Python<'py> {
    /// A Python object for `memory` (`typestr` like `"<f4"`, C-contiguous
    /// `shape`) with `__cuda_array_interface__` v3 (its `stream` is the
    /// stream the data was queued on) and `__dlpack__`/`__dlpack_device__`.
    /// It holds `memory` until it and every DLPack tensor made from it are
    /// gone.
    pub fn device_array(
        self,
        memory: &Arc<DeviceMemory>,
        typestr: &str,
        shape: &[usize],
    ) -> Result<Object<'py>, PyException> {
        let dtype = dl_dtype(typestr).ok_or_else(|| {
            PyException::new("ValueError", format!("unsupported typestr {typestr:?}"))
        })?;
        let items = shape.iter().try_fold(1usize, |a, &n| a.checked_mul(n));
        if items.and_then(|n| n.checked_mul(dtype.bits as usize / 8)) != Some(memory.len()) {
            return Err(PyException::new(
                "ValueError",
                format!(
                    "shape {shape:?} of {typestr} does not cover {} bytes",
                    memory.len()
                ),
            ));
        }
        let slots = [
            slot(ffi::Py_tp_dealloc, device_dealloc as *mut c_void),
            slot(ffi::Py_tp_getset, GETSETS.0.as_ptr().cast_mut().cast()),
            slot(ffi::Py_tp_methods, METHODS.0.as_ptr().cast_mut().cast()),
            slot(
                ffi::Py_tp_doc,
                c"CUDA device memory staged by gilpool (see DeviceBuffer)."
                    .as_ptr()
                    .cast_mut()
                    .cast(),
            ),
            slot(0, std::ptr::null_mut()),
        ];
        // SAFETY: 'static slot functions of the right signatures, tables,
        // doc and name; instances are `DeviceArray`s.
        let ty = unsafe {
            interpreter_type(
                self,
                ARRAY_KEY,
                ARRAY_NAME,
                std::mem::size_of::<DeviceArray>(),
                &slots,
            )?
        };
        let export = Box::new(DeviceExport {
            memory: memory.clone(),
            typestr: typestr.to_string(),
            shape: shape.to_vec(),
            dtype,
        });
        // SAFETY: attached; a zeroed instance of our type or null.
        let obj = unsafe {
            Object::from_owned_or_err(
                self,
                ffi::PyType_GenericAlloc(ty.as_ptr().cast::<ffi::PyTypeObject>(), 0),
            )?
        };
        // SAFETY: a fresh `DeviceArray`; its dealloc owns the box from here.
        unsafe { (*obj.as_ptr().cast::<DeviceArray>()).export = Box::into_raw(export) };
        Ok(obj)
    }
}
