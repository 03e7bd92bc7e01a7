//! CUDA payloads (feature `cuda`): host data staged on the GPU by a commit
//! closure, shown to Python as a CUDA array, and CUDA arrays read back.

use crate::buffer::{check_typestr, typestr, Element, SharedBuffer};
use crate::convert::{FromPython, IntoPython};
use crate::error::{Error, ErrorKind, Result};
use gilpool_ffi::cuda::{self as ffi_cuda, CudaDevice, CudaError, DeviceMemory};
use gilpool_ffi::{Object, Python};
use std::sync::Arc;

fn cuda_error(e: CudaError) -> Error {
    match e {
        CudaError::Unavailable(m) => Error::new(ErrorKind::CudaUnavailable(m)),
        CudaError::Driver(m) => Error::new(ErrorKind::Cuda(m)),
        CudaError::Interface(m) => Error::conversion(format!("__cuda_array_interface__: {m}")),
    }
}

/// The number of CUDA devices, or an [`Error::is_cuda_unavailable`] error
/// saying why there are none (no driver library, `cuInit` failed). Safe to
/// call on any machine: the driver is probed before anything else.
///
/// ```
/// match gilpool::cuda_device_count() {
///     Ok(n) => println!("{n} CUDA device(s)"),
///     Err(e) => assert!(e.is_cuda_unavailable(), "{e}"),
/// }
/// ```
pub fn cuda_device_count() -> Result<usize> {
    ffi_cuda::device_count().map_err(cuda_error)
}

/// A GPU commit stage: one device's context, a CUDA stream of its own and
/// a pool of pinned (page-locked) host staging buffers. Make one per
/// handler (or per submitting thread) and move clones into commit
/// closures: [`upload`](Self::upload) copies host data into pinned memory
/// and queues the copy to new device memory on the stage's stream, so the
/// transfer overlaps with whatever the workers run meanwhile.
///
/// ```no_run
/// use gilpool::{CudaStage, DeviceBuffer, Engine, Mode};
/// # fn main() -> gilpool::Result<()> {
/// let stage = CudaStage::new(0)?; // Error::is_cuda_unavailable() without a GPU
/// // GPU frameworks refuse own-GIL subinterpreters: run on the main interpreter.
/// let engine = Engine::builder().mode(Mode::SingleGil).sys_path("python").build()?;
/// let total = engine.load("gpu_module", "total")?;
/// let batch: Vec<f32> = vec![1.0; 1 << 20];
/// let s = stage.clone();
/// let fut = total.submit_with(move || Ok((s.upload(&batch)?,)), |obj| f64::from_python(&obj))?;
/// let sum: f64 = fut.wait()?;
/// # use gilpool::FromPython; let _ = sum;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct CudaStage {
    device: Arc<CudaDevice>,
}

impl CudaStage {
    /// A stage on device `ordinal`; an [`Error::is_cuda_unavailable`] error
    /// without a driver or without that device.
    pub fn new(ordinal: usize) -> Result<CudaStage> {
        Ok(CudaStage {
            device: CudaDevice::new(ordinal).map_err(cuda_error)?,
        })
    }

    /// The device's ordinal.
    pub fn ordinal(&self) -> usize {
        self.device.ordinal()
    }

    /// The stage's stream (a `CUstream` handle as an integer).
    pub fn stream_handle(&self) -> usize {
        self.device.stream_handle()
    }

    /// A one-dimensional device copy of `data`: copied to pinned host
    /// memory now, to the device asynchronously (queued on the stage's
    /// stream; Python consumers see that stream and wait for it).
    pub fn upload<T: Element>(&self, data: &[T]) -> Result<DeviceBuffer> {
        let ts = typestr(T::FORMAT, std::mem::size_of::<T>())
            .ok_or_else(|| Error::config(format!("{} has no CUDA typestr", T::NAME)))?;
        let memory = self
            .device
            .upload(bytemuck::cast_slice(data))
            .map_err(cuda_error)?;
        Ok(DeviceBuffer::new(memory, ts, vec![data.len()]))
    }

    /// A device copy of `buf`, keeping its shape; its format must be
    /// numeric (an [`Error::is_config`] error otherwise).
    pub fn upload_buffer(&self, buf: &SharedBuffer) -> Result<DeviceBuffer> {
        let ts = typestr(buf.format(), buf.itemsize()).ok_or_else(|| {
            Error::config(format!(
                "a buffer of format {:?} has no CUDA typestr (numeric formats only)",
                buf.format()
            ))
        })?;
        let memory = self.device.upload(buf.as_bytes()).map_err(cuda_error)?;
        Ok(DeviceBuffer::new(memory, ts, buf.shape().to_vec()))
    }

    /// Waits until everything queued on the stage's stream is done.
    pub fn synchronize(&self) -> Result<()> {
        self.device.synchronize().map_err(cuda_error)
    }
}

/// Device memory holding a C-contiguous array (a typestr like `"<f4"` and
/// a shape), reference-counted. As an argument it becomes, in the worker's
/// interpreter, a `gilpool.DeviceArray` with `__cuda_array_interface__`
/// (version 3: shape, typestr, `data = (pointer, False)`, `strides =
/// None`, `stream` = the stream the data was queued on) and
/// `__dlpack__`/`__dlpack_device__` (`(2, ordinal)`), so CuPy, PyTorch,
/// Numba and JAX read it without a copy. The memory is freed only after
/// every handle is gone — Rust clones, the Python object, DLPack tensors
/// made from it — and the device has finished the work queued before.
///
/// As a result it copies any object exposing `__cuda_array_interface__`
/// (C-contiguous) into new device memory; [`CudaVec`] copies one to the
/// host instead.
#[derive(Clone, Debug)]
pub struct DeviceBuffer {
    memory: Arc<DeviceMemory>,
    typestr: Arc<str>,
    shape: Arc<[usize]>,
}

impl DeviceBuffer {
    fn new(memory: DeviceMemory, typestr: String, shape: Vec<usize>) -> DeviceBuffer {
        DeviceBuffer {
            memory: Arc::new(memory),
            typestr: typestr.into(),
            shape: shape.into(),
        }
    }

    /// The device address.
    pub fn device_ptr(&self) -> u64 {
        self.memory.device_ptr()
    }

    /// The device's ordinal.
    pub fn ordinal(&self) -> usize {
        self.memory.device().ordinal()
    }

    /// The length in bytes.
    pub fn nbytes(&self) -> usize {
        self.memory.len()
    }

    /// The CUDA Array Interface typestr (`"<f4"`, `"|u1"`, ...).
    pub fn typestr(&self) -> &str {
        &self.typestr
    }

    /// Items per dimension (C order).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The same memory with another C-contiguous shape covering it.
    pub fn with_shape(self, shape: impl AsRef<[usize]>) -> Result<DeviceBuffer> {
        let shape = shape.as_ref().to_vec();
        let itemsize: usize = self.typestr[2..].parse().unwrap_or(1);
        if shape.iter().product::<usize>() * itemsize != self.nbytes() {
            return Err(Error::config(format!(
                "shape {shape:?} of {} does not cover {} bytes",
                self.typestr,
                self.nbytes()
            )));
        }
        Ok(DeviceBuffer {
            shape: shape.into(),
            ..self
        })
    }

    /// A host copy as `T`s (after the work queued on its stream); the
    /// typestr must say `T`.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        check_typestr::<T>(&self.typestr).map_err(Error::conversion)?;
        let mut out: Vec<T> = bytemuck::zeroed_vec(self.nbytes() / std::mem::size_of::<T>());
        self.memory
            .copy_to_host(bytemuck::cast_slice_mut(&mut out))
            .map_err(cuda_error)?;
        Ok(out)
    }
}

impl IntoPython for DeviceBuffer {
    fn into_python<'py>(self, py: Python<'py>) -> Result<Object<'py>> {
        py.device_array(&self.memory, &self.typestr, &self.shape)
            .map_err(|e| Error::conversion(e.to_string()))
    }
}

impl FromPython for DeviceBuffer {
    /// A device copy of an object's CUDA array, finished before the
    /// conversion returns.
    fn from_python(obj: &Object<'_>) -> Result<Self> {
        let (info, memory) = ffi_cuda::cuda_array_to_device(obj).map_err(cuda_error)?;
        Ok(DeviceBuffer::new(
            memory,
            info.typestr().to_string(),
            info.shape().to_vec(),
        ))
    }
}

/// A host `Vec<T>` read from an object exposing `__cuda_array_interface__`
/// (a CuPy or PyTorch CUDA tensor): one device-to-host copy, checked for
/// the element type (an [`Error::is_conversion`] error naming both
/// typestrs) and C-contiguity.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CudaVec<T>(pub Vec<T>);

impl<T: Element> FromPython for CudaVec<T> {
    fn from_python(obj: &Object<'_>) -> Result<Self> {
        let (_, v) =
            ffi_cuda::cuda_array_to_host::<T>(obj, |info| check_typestr::<T>(info.typestr()))
                .map_err(cuda_error)?;
        Ok(CudaVec(v))
    }
}
