//! Reading objects that expose `__cuda_array_interface__` back: into new
//! device memory or into host memory, synchronously, while the object is
//! held.

use super::export::dl_dtype;
use super::{
    contained, device_count, driver, driver_present, CudaDevice, CudaError, DeviceMemory, NO_DRIVER,
};
use crate::object::{Kind, Object};
use cudarc::driver::{result, sys};
use std::ffi::c_int;
use std::sync::Arc;

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
