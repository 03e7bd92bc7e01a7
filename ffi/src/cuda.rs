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
//! - [`Python::device_array`](crate::Python::device_array): the Python object for device memory, of a
//!   heap type made per interpreter (as the buffer exporter is), with
//!   `__cuda_array_interface__` (version 3) and `__dlpack__` /
//!   `__dlpack_device__`.
//! - [`cuda_array_to_device`], [`cuda_array_to_host`]: read an object
//!   exposing `__cuda_array_interface__` back (a device copy or a host
//!   copy), synchronously, while the object is held.

mod export;
mod import;

pub use import::{cuda_array_info, cuda_array_to_device, cuda_array_to_host, CudaArrayInfo};

use cudarc::driver::{result, sys, CudaContext, CudaSlice, CudaStream, DevicePtr, PinnedHostSlice};
use std::collections::HashMap;
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
