//! CUDA device memory for commit stages, and its Python face (feature
//! `cuda`).
//!
//! The driver is loaded at run time (cudarc's `dynamic-loading`): a build
//! needs no CUDA toolkit, and [`driver_present`] is checked before any
//! other cudarc call, because cudarc panics when `libcuda` is absent. Every
//! other cudarc call runs under `catch_unwind` as well (cudarc also panics
//! when an old driver lacks a symbol), so a missing or old driver is an
//! error, never a crash.
//!
//! - [`CudaDevice`]: one context (the device's primary context), one
//!   stream, and a pool of pinned host staging buffers. [`CudaDevice::upload`]
//!   copies host bytes into pinned memory and from there to new device
//!   memory, asynchronously on the stream.
//! - [`DeviceMemory`]: device memory, freed only after the last handle is
//!   gone — Rust's, the Python object's, every DLPack tensor's — *and* all
//!   work queued on its context before that is done (a reaper thread
//!   synchronises the context, then frees), so a consumer's kernel still
//!   reading it is never cut off.
//! - [`Python::device_array`]: the Python object for device memory, of a
//!   heap type made per interpreter (as the buffer exporter is), with
//!   `__cuda_array_interface__` (version 3) and `__dlpack__` /
//!   `__dlpack_device__`.
//! - [`cuda_array_to_device`], [`cuda_array_to_host`]: read an object
//!   exposing `__cuda_array_interface__` back (a device copy or a host
//!   copy), synchronously, while the object is held.

use crate::attach::Python;
use crate::buffer::{free_instance, interpreter_type, slot};
use crate::error::PyException;
use crate::object::{Kind, Object};
use cudarc::driver::{result, sys, CudaContext, CudaSlice, CudaStream, DevicePtr, PinnedHostSlice};
use pyo3_ffi as ffi;
use std::collections::HashMap;
use std::ffi::{c_int, c_void, CStr, CString};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc, Mutex, OnceLock};

/// Why a CUDA operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CudaError {
    /// No usable driver or device: the driver library cannot be loaded,
    /// `cuInit` failed, the device does not exist, or the driver is too
    /// old for a call.
    Unavailable(String),
    /// A driver call failed.
    Driver(String),
    /// A Python object's `__cuda_array_interface__` is missing, malformed
    /// or not supported (not C-contiguous, masked, ...).
    Interface(String),
}

impl fmt::Display for CudaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CudaError::Unavailable(m) => write!(f, "CUDA is unavailable: {m}"),
            CudaError::Driver(m) => write!(f, "CUDA driver call failed: {m}"),
            CudaError::Interface(m) => write!(f, "__cuda_array_interface__: {m}"),
        }
    }
}

impl std::error::Error for CudaError {}

fn driver<T>(what: &str, r: Result<T, result::DriverError>) -> Result<T, CudaError> {
    r.map_err(|e| CudaError::Driver(format!("{what}: {e}")))
}

/// Runs cudarc code, turning its panics (an old driver without a symbol)
/// into `Unavailable`.
fn contained<T>(what: &str, f: impl FnOnce() -> Result<T, CudaError>) -> Result<T, CudaError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            Err(CudaError::Unavailable(format!(
                "{what}: the CUDA driver library is unusable ({msg})"
            )))
        }
    }
}

/// Whether the CUDA driver library (`libcuda.so` / `nvcuda.dll`) can be
/// loaded. Checked before every other CUDA call.
pub fn driver_present() -> bool {
    // SAFETY: only tries to open the library by its known names (and
    // closes it again); no symbol of it is called.
    unsafe { sys::is_culib_present() }
}

const NO_DRIVER: &str =
    "no CUDA driver library (libcuda.so.1) could be loaded: this machine has no NVIDIA driver";

/// The number of CUDA devices, or why there are none to use.
pub fn device_count() -> Result<usize, CudaError> {
    if !driver_present() {
        return Err(CudaError::Unavailable(NO_DRIVER.into()));
    }
    contained("cuInit", || {
        result::init().map_err(|e| CudaError::Unavailable(format!("cuInit failed: {e}")))?;
        let n = CudaContext::device_count()
            .map_err(|e| CudaError::Unavailable(format!("cuDeviceGetCount failed: {e}")))?;
        Ok(n.max(0) as usize)
    })
}

/// Staging buffers kept per device for reuse, at most.
const STAGING_KEPT: usize = 8;
/// Bytes of staging buffers kept per device, at most.
const STAGING_BYTES: usize = 512 << 20;

/// One device's context, a stream of gilpool's own on it, and pinned host
/// staging buffers for uploads.
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    /// Pinned buffers a finished upload gave back, reused for uploads of
    /// the same size (a pipeline's batches usually are). Reuse waits for
    /// the buffer's previous copy (its event) before writing.
    staging: Mutex<Vec<PinnedHostSlice<u8>>>,
}

impl fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CudaDevice")
            .field("ordinal", &self.ctx.ordinal())
            .field("stream", &self.stream_handle())
            .finish()
    }
}

impl CudaDevice {
    /// Device `ordinal`'s primary context with a new stream on it.
    pub fn new(ordinal: usize) -> Result<Arc<CudaDevice>, CudaError> {
        let count = device_count()?;
        if ordinal >= count {
            return Err(CudaError::Unavailable(format!(
                "there is no CUDA device {ordinal}: the driver reports {count}"
            )));
        }
        contained("creating a CUDA context", || {
            let ctx = driver("cuDevicePrimaryCtxRetain", CudaContext::new(ordinal))?;
            let stream = driver("cuStreamCreate", ctx.new_stream())?;
            Ok(Arc::new(CudaDevice {
                ctx,
                stream,
                staging: Mutex::new(Vec::new()),
            }))
        })
    }

    /// A process-wide device for `ordinal` (made on first use), for copies
    /// that have no stage of their own (reading results).
    pub fn shared(ordinal: usize) -> Result<Arc<CudaDevice>, CudaError> {
        static SHARED: Mutex<Option<HashMap<usize, Arc<CudaDevice>>>> = Mutex::new(None);
        let mut map = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        let map = map.get_or_insert_with(HashMap::new);
        if let Some(d) = map.get(&ordinal) {
            return Ok(d.clone());
        }
        let d = CudaDevice::new(ordinal)?;
        map.insert(ordinal, d.clone());
        Ok(d)
    }

    /// The device's ordinal.
    pub fn ordinal(&self) -> usize {
        self.ctx.ordinal()
    }

    /// The stream's `CUstream` handle as an integer (what
    /// `__cuda_array_interface__["stream"]` says).
    pub fn stream_handle(&self) -> usize {
        self.stream.cu_stream() as usize
    }

    /// Waits until everything queued on the stream is done.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        contained("cuStreamSynchronize", || {
            driver("cuStreamSynchronize", self.stream.synchronize())
        })
    }

    fn take_staging(&self, len: usize) -> Result<PinnedHostSlice<u8>, CudaError> {
        let mut pool = self.staging.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = pool.iter().position(|p| p.len() == len) {
            return Ok(pool.swap_remove(i));
        }
        drop(pool);
        // SAFETY: the memory is uninitialised; `upload` overwrites all of it
        // (`copy_from_slice` of exactly `len` bytes) before the copy reads it.
        driver("cuMemHostAlloc", unsafe {
            self.ctx.alloc_pinned::<u8>(len)
        })
    }

    fn give_staging(&self, buf: PinnedHostSlice<u8>) {
        let mut pool = self.staging.lock().unwrap_or_else(|e| e.into_inner());
        let kept: usize = pool.iter().map(PinnedHostSlice::len).sum();
        if pool.len() < STAGING_KEPT && kept + buf.len() <= STAGING_BYTES {
            pool.push(buf);
        }
    }

    /// New device memory holding a copy of `bytes`: `bytes` is copied into
    /// pinned host memory (now), and from there to the device
    /// asynchronously on the stream — this returns once the copy is
    /// queued. Work queued on the stream later sees the data; other
    /// streams must wait for it (the Python object says which stream).
    pub fn upload(self: &Arc<Self>, bytes: &[u8]) -> Result<DeviceMemory, CudaError> {
        contained("uploading to the device", || {
            let len = bytes.len();
            if len == 0 {
                let slice = driver("cuMemAlloc", self.stream.null::<u8>())?;
                return Ok(DeviceMemory::new(self.clone(), slice, 0));
            }
            let mut staging = self.take_staging(len)?;
            // Waits for this buffer's previous copy, if any, to finish.
            driver("cuEventSynchronize", staging.as_mut_slice())?.copy_from_slice(bytes);
            // SAFETY: uninitialised device memory of `len` bytes; the copy
            // queued next on the same stream overwrites all of it before
            // anything else on the stream (or waiting for it) reads it.
            let mut dst = driver("cuMemAlloc", unsafe { self.stream.alloc::<u8>(len) })?;
            driver(
                "cuMemcpyHtoDAsync",
                self.stream.memcpy_htod(&staging, &mut dst),
            )?;
            self.give_staging(staging);
            Ok(DeviceMemory::new(self.clone(), dst, len))
        })
    }

    fn bind(&self) -> Result<(), CudaError> {
        driver("cuCtxSetCurrent", self.ctx.bind_to_thread())
    }
}

/// Device memory gilpool allocated. Freed when dropped — later, on the
/// reaper thread, once all work queued on its context before the drop is
/// done.
pub struct DeviceMemory {
    device: Arc<CudaDevice>,
    slice: Option<CudaSlice<u8>>,
    ptr: u64,
    len: usize,
}

impl fmt::Debug for DeviceMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceMemory")
            .field("ordinal", &self.device.ordinal())
            .field("ptr", &format_args!("{:#x}", self.ptr))
            .field("len", &self.len)
            .finish()
    }
}

impl DeviceMemory {
    fn new(device: Arc<CudaDevice>, slice: CudaSlice<u8>, len: usize) -> DeviceMemory {
        let ptr = {
            let (ptr, _record) = slice.device_ptr(&device.stream);
            ptr
        };
        DeviceMemory {
            device,
            ptr,
            slice: Some(slice),
            len,
        }
    }

    /// The device address.
    pub fn device_ptr(&self) -> u64 {
        self.ptr
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the length is zero.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The device it lives on.
    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.device
    }

    /// Copies the memory to `dst` (exactly [`len`](Self::len) bytes) after
    /// everything queued on its stream, and waits for the copy.
    pub fn copy_to_host(&self, dst: &mut [u8]) -> Result<(), CudaError> {
        if dst.len() != self.len {
            return Err(CudaError::Driver(format!(
                "a host copy of {} bytes needs a {}-byte destination, not {}",
                self.len,
                self.len,
                dst.len()
            )));
        }
        if dst.is_empty() {
            return Ok(());
        }
        let slice = self.slice.as_ref().expect("memory is live until drop");
        contained("copying to the host", || {
            let stream = &self.device.stream;
            driver("cuMemcpyDtoHAsync", stream.memcpy_dtoh(slice, dst))?;
            driver("cuStreamSynchronize", stream.synchronize())
        })
    }
}

impl Drop for DeviceMemory {
    fn drop(&mut self) {
        if let Some(slice) = self.slice.take() {
            reap(self.device.clone(), slice);
        }
    }
}

type Reaped = (Arc<CudaDevice>, CudaSlice<u8>);

/// Hands device memory to the reaper thread, which synchronises the
/// context (every stream on it, a consumer's included) and then frees it
/// — so the freeing thread (often one holding a GIL, in a `tp_dealloc`)
/// never waits for the device. Without the thread, it waits here.
fn reap(device: Arc<CudaDevice>, slice: CudaSlice<u8>) {
    static REAPER: OnceLock<Option<Mutex<mpsc::Sender<Reaped>>>> = OnceLock::new();
    let reaper = REAPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Reaped>();
        std::thread::Builder::new()
            .name("gilpool-cuda-free".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    free_all(batch);
                }
            })
            .ok()
            .map(|_| Mutex::new(tx))
    });
    let item = (device, slice);
    let item = match reaper {
        Some(tx) => match tx.lock().unwrap_or_else(|e| e.into_inner()).send(item) {
            Ok(()) => return,
            Err(mpsc::SendError(item)) => item,
        },
        None => item,
    };
    free_all(vec![item]);
}

fn free_all(batch: Vec<Reaped>) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let mut synced: Vec<*const CudaContext> = Vec::new();
        for (device, _) in &batch {
            let key = Arc::as_ptr(&device.ctx);
            if !synced.contains(&key) {
                synced.push(key);
                if let Err(e) = device.ctx.synchronize() {
                    eprintln!("gilpool: cuCtxSynchronize before freeing device memory failed: {e}");
                }
            }
        }
        // Dropping a CudaSlice frees it (stream-ordered).
        drop(batch);
    }));
}

// ---------------------------------------------------------------------
// The Python object.

/// DLPack (legacy, unversioned ABI) as in `dlpack.h`.
#[repr(C)]
#[derive(Clone, Copy)]
struct DLDevice {
    device_type: i32,
    device_id: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct DLDataType {
    code: u8,
    bits: u8,
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
fn dl_dtype(typestr: &str) -> Option<DLDataType> {
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

// ---------------------------------------------------------------------
// Reading `__cuda_array_interface__` objects.

/// What an object's `__cuda_array_interface__` says (only [`cuda_array_info`]
/// makes one, from a live object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaArrayInfo {
    ptr: u64,
    shape: Vec<usize>,
    typestr: String,
    itemsize: usize,
    stream: Option<i64>,
    readonly: bool,
}

impl CudaArrayInfo {
    /// The device address.
    pub fn ptr(&self) -> u64 {
        self.ptr
    }
    /// Items per dimension (C order).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// The typestr (`"<f4"`, ...).
    pub fn typestr(&self) -> &str {
        &self.typestr
    }
    /// Bytes per item.
    pub fn itemsize(&self) -> usize {
        self.itemsize
    }
    /// The length in bytes.
    pub fn nbytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.itemsize
    }
    /// The producer's stream to synchronise with, if any.
    pub fn stream(&self) -> Option<i64> {
        self.stream
    }
    /// Whether the producer marked the data read-only.
    pub fn readonly(&self) -> bool {
        self.readonly
    }
}

fn iface(m: impl Into<String>) -> CudaError {
    CudaError::Interface(m.into())
}

/// Reads `obj.__cuda_array_interface__` (version 2 or 3): C-contiguous
/// (strides None or row-major), no mask.
pub fn cuda_array_info(obj: &Object<'_>) -> Result<CudaArrayInfo, CudaError> {
    let d = obj.getattr("__cuda_array_interface__").map_err(|_| {
        iface(format!(
            "a {} has no __cuda_array_interface__",
            obj.type_name()
        ))
    })?;
    if d.kind() != Kind::Dict {
        return Err(iface(format!("it is a {}, not a dict", d.type_name())));
    }
    let items = d.dict_items().map_err(|e| iface(e.to_string()))?;
    let get = |k: &str| {
        items
            .iter()
            .find(|(key, _)| key.extract_str().ok().as_deref() == Some(k))
            .map(|(_, v)| v.clone())
    };
    let int = |o: &Object<'_>, what: &str| -> Result<i64, CudaError> {
        o.extract_i64()
            .ok()
            .flatten()
            .ok_or_else(|| iface(format!("{what} is not an integer")))
    };
    let shape = get("shape").ok_or_else(|| iface("no shape"))?;
    let shape = shape
        .sequence_items()
        .map_err(|_| iface("shape is not a tuple"))?
        .iter()
        .map(|n| {
            int(n, "a shape entry")
                .and_then(|n| usize::try_from(n).map_err(|_| iface("a negative shape entry")))
        })
        .collect::<Result<Vec<usize>, _>>()?;
    let typestr = get("typestr")
        .and_then(|t| t.extract_str().ok())
        .ok_or_else(|| iface("no typestr"))?;
    let dtype = dl_dtype(&typestr).ok_or_else(|| {
        iface(format!(
            "typestr {typestr:?} is not a little-endian integer, float or bool"
        ))
    })?;
    let itemsize = dtype.bits as usize / 8;
    let data = get("data").ok_or_else(|| iface("no data"))?;
    let data = data
        .sequence_items()
        .map_err(|_| iface("data is not a (pointer, readonly) tuple"))?;
    if data.len() != 2 {
        return Err(iface("data is not a (pointer, readonly) tuple"));
    }
    let ptr = int(&data[0], "the data pointer")? as u64;
    let readonly = data[1].extract_bool().unwrap_or(false);
    if let Some(mask) = get("mask") {
        if mask.kind() != Kind::None {
            return Err(iface("masked arrays are not supported"));
        }
    }
    if let Some(strides) = get("strides") {
        if strides.kind() != Kind::None {
            let strides = strides
                .sequence_items()
                .map_err(|_| iface("strides is not a tuple"))?
                .iter()
                .map(|s| int(s, "a stride"))
                .collect::<Result<Vec<i64>, _>>()?;
            let mut want = itemsize as i64;
            for (i, &n) in shape.iter().enumerate().rev() {
                if n > 1 && strides.get(i) != Some(&want) {
                    return Err(iface(format!(
                        "strides {strides:?} of shape {shape:?} are not C-contiguous"
                    )));
                }
                want *= n as i64;
            }
        }
    }
    let stream = match get("stream") {
        Some(s) if s.kind() != Kind::None => Some(int(&s, "stream")?),
        _ => None,
    };
    Ok(CudaArrayInfo {
        ptr,
        shape,
        typestr,
        itemsize,
        stream,
        readonly,
    })
}

/// The device the pointer belongs to.
fn device_of(ptr: u64) -> Result<Arc<CudaDevice>, CudaError> {
    if !driver_present() {
        return Err(CudaError::Unavailable(NO_DRIVER.into()));
    }
    device_count()?;
    let mut ordinal: c_int = 0;
    contained("cuPointerGetAttribute", || {
        // SAFETY: `ordinal` is a valid out-pointer for this attribute (an
        // int); the driver checks the pointer value itself.
        driver("cuPointerGetAttribute", unsafe {
            sys::cuPointerGetAttribute(
                (&mut ordinal as *mut c_int).cast(),
                sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
                ptr,
            )
            .result()
        })
    })?;
    CudaDevice::shared(ordinal.max(0) as usize)
}

/// Waits for the producer's stream, if it named one.
fn wait_producer(info: &CudaArrayInfo) -> Result<(), CudaError> {
    match info.stream {
        None | Some(-1) => Ok(()),
        // SAFETY: the producer says its work is queued on this live stream
        // (1 and 2 are the legacy and per-thread default stream handles).
        Some(s) => driver("cuStreamSynchronize (producer's stream)", unsafe {
            result::stream::synchronize(s as usize as sys::CUstream)
        }),
    }
}

/// A device copy of `obj`'s CUDA array in new memory on the array's own
/// device, finished before this returns (so `obj` may go right after).
pub fn cuda_array_to_device(obj: &Object<'_>) -> Result<(CudaArrayInfo, DeviceMemory), CudaError> {
    let info = cuda_array_info(obj)?;
    let n = info.nbytes();
    let device = if n == 0 {
        CudaDevice::shared(0)?
    } else {
        device_of(info.ptr)?
    };
    contained("copying a CUDA array", || {
        device.bind()?;
        wait_producer(&info)?;
        if n == 0 {
            let slice = driver("cuMemAlloc", device.stream.null::<u8>())?;
            return Ok((info.clone(), DeviceMemory::new(device.clone(), slice, 0)));
        }
        // SAFETY: uninitialised device memory, fully written by the copy
        // below before anyone reads it.
        let dst = driver("cuMemAlloc", unsafe { device.stream.alloc::<u8>(n) })?;
        let memory = DeviceMemory::new(device.clone(), dst, n);
        // SAFETY: `info.ptr` is `n` bytes of device memory (the interface
        // says so) kept alive by `obj`, which the caller holds until we
        // synchronise below; `memory` is `n` fresh bytes on this stream.
        driver("cuMemcpyDtoDAsync", unsafe {
            result::memcpy_dtod_async(memory.ptr, info.ptr, n, device.stream.cu_stream())
        })?;
        driver("cuStreamSynchronize", device.stream.synchronize())?;
        Ok((info.clone(), memory))
    })
}

/// A host copy of `obj`'s CUDA array as `T`s, after `check` accepted the
/// interface (format and size); finished before this returns.
pub fn cuda_array_to_host<T: bytemuck::Pod>(
    obj: &Object<'_>,
    check: impl FnOnce(&CudaArrayInfo) -> Result<(), String>,
) -> Result<(CudaArrayInfo, Vec<T>), CudaError> {
    let info = cuda_array_info(obj)?;
    check(&info).map_err(CudaError::Interface)?;
    let n = info.nbytes();
    let size = std::mem::size_of::<T>();
    if size == 0 || n % size != 0 {
        return Err(iface(format!(
            "{n} bytes are not a whole number of {size}-byte items"
        )));
    }
    let mut out: Vec<T> = bytemuck::zeroed_vec(n / size);
    if n == 0 {
        return Ok((info, out));
    }
    let device = device_of(info.ptr)?;
    contained("copying a CUDA array to the host", || {
        device.bind()?;
        wait_producer(&info)?;
        let dst: &mut [u8] = bytemuck::cast_slice_mut(&mut out);
        // SAFETY: `info.ptr` is `n` bytes of device memory kept alive by
        // `obj` (held by the caller) until the synchronise below; `dst` is
        // `n` bytes of host memory we own, not touched until then.
        driver("cuMemcpyDtoHAsync", unsafe {
            result::memcpy_dtoh_async(dst, info.ptr, device.stream.cu_stream())
        })?;
        driver("cuStreamSynchronize", device.stream.synchronize())
    })?;
    Ok((info, out))
}
