//! `SharedBuffer`: Rust-owned, immutable, reference-counted memory that
//! every interpreter sees as a read-only `memoryview` of the same bytes.

use crate::convert::{FromPython, IntoPython};
use crate::error::{Error, Result};
use gilpool_ffi::{Layout, Object, PyBufferView, Python, SharedBytes};
use std::fmt;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

mod sealed {
    pub trait Sealed {}
}

/// A plain numeric type a [`SharedBuffer`] can hold: `u8`, `i8`, `u16`,
/// `i16`, `u32`, `i32`, `u64`, `i64`, `f32`, `f64`. Its
/// [`FORMAT`](Element::FORMAT) is the buffer-protocol (`struct` module)
/// code Python sees.
///
/// ```
/// use gilpool::Element;
/// assert_eq!(<f64 as Element>::FORMAT, "d");
/// assert_eq!(<i64 as Element>::FORMAT, "q");
/// ```
pub trait Element: bytemuck::Pod + Send + Sync + sealed::Sealed {
    /// The native-order format code (`"d"` for `f64`, `"q"` for `i64`, ...).
    const FORMAT: &'static str;
    /// The Rust name, for error messages.
    const NAME: &'static str;
}

macro_rules! elements {
    ($($t:ty => $f:literal),*) => {$(
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const FORMAT: &'static str = $f;
            const NAME: &'static str = stringify!($t);
        }
    )*};
}
elements!(u8 => "B", i8 => "b", u16 => "H", i16 => "h", u32 => "I", i32 => "i",
          u64 => "Q", i64 => "q", f32 => "f", f64 => "d");

/// What a format code says about one item, beyond its size (which the
/// buffer's `itemsize` tells).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Signed,
    Unsigned,
    Float,
    Bool,
}

impl Class {
    fn describe(self) -> &'static str {
        match self {
            Class::Signed => "signed integer",
            Class::Unsigned => "unsigned integer",
            Class::Float => "float",
            Class::Bool => "bool",
        }
    }
}

/// Parses a single-item format (`"d"`, `"<i"`, `"=q"`, `"@B"`): its class
/// and whether its bytes are in this machine's order. `None` for
/// anything else (structs, counts, pointers, text).
fn classify(format: &str) -> Option<(Class, bool)> {
    let mut chars = format.chars();
    let (order_native, code) = match (chars.next()?, chars.next(), chars.next()) {
        (c, None, _) => (true, c),
        ('@', Some(c), None) => (true, c),
        ('=', Some(c), None) => (true, c),
        ('<', Some(c), None) => (cfg!(target_endian = "little"), c),
        ('>' | '!', Some(c), None) => (cfg!(target_endian = "big"), c),
        _ => return None,
    };
    let class = match code {
        'b' | 'h' | 'i' | 'l' | 'q' | 'n' => Class::Signed,
        'B' | 'H' | 'I' | 'L' | 'Q' | 'N' => Class::Unsigned,
        'e' | 'f' | 'd' => Class::Float,
        '?' => Class::Bool,
        _ => return None,
    };
    Some((class, order_native))
}

/// The `__cuda_array_interface__` typestr (`"<f8"`, `"|u1"`) of a
/// buffer format with `itemsize`-byte items, for numeric formats in this
/// machine's byte order.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn typestr(format: &str, itemsize: usize) -> Option<String> {
    let (class, native) = classify(format)?;
    if !(native || itemsize == 1) || cfg!(target_endian = "big") {
        return None;
    }
    let kind = match class {
        Class::Signed => 'i',
        Class::Unsigned => 'u',
        Class::Float => 'f',
        Class::Bool => 'b',
    };
    let order = if itemsize == 1 { '|' } else { '<' };
    Some(format!("{order}{kind}{itemsize}"))
}

/// Whether a typestr (`"<f4"`) holds `T`s; the error names both.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn check_typestr<T: Element>(typestr: &str) -> std::result::Result<(), String> {
    let want = typestr_of::<T>();
    let order_ok = matches!(typestr.chars().next(), Some('<' | '|' | '='));
    if order_ok && typestr.get(1..) == want.get(1..) {
        return Ok(());
    }
    Err(format!(
        "a CUDA array of typestr {typestr:?} cannot be read as {} (typestr {want:?})",
        T::NAME
    ))
}

/// `T`'s typestr.
fn typestr_of<T: Element>() -> String {
    typestr(T::FORMAT, std::mem::size_of::<T>()).unwrap_or_default()
}

/// The size of one item of a single-code native format, where it is fixed.
fn native_itemsize(format: &str) -> Option<usize> {
    let code = format.strip_prefix('@').unwrap_or(format);
    let size = match code {
        "b" | "B" | "c" | "?" => 1,
        "h" | "H" | "e" => 2,
        "i" | "I" | "f" => 4,
        "l" | "L" => std::mem::size_of::<std::ffi::c_long>(),
        "q" | "Q" | "d" => 8,
        "n" | "N" => std::mem::size_of::<isize>(),
        _ => return None,
    };
    Some(size)
}

/// Whether a buffer of `format` with `itemsize`-byte items holds `T`s:
/// same class, same size, this machine's byte order (or single bytes).
fn check_element<T: Element>(format: &str, itemsize: usize) -> Result<()> {
    let want = classify(T::FORMAT).map(|(c, _)| c);
    let found = classify(format);
    let size = std::mem::size_of::<T>();
    let ok = match found {
        Some((class, native)) => {
            Some(class) == want && itemsize == size && (native || itemsize == 1)
        }
        None => false,
    };
    if ok {
        return Ok(());
    }
    let what = match found {
        Some((class, native)) => format!(
            "{itemsize}-byte {}{}",
            class.describe(),
            if native || itemsize == 1 {
                ""
            } else {
                " in the other byte order"
            }
        ),
        None => format!("{itemsize}-byte items"),
    };
    Err(Error::conversion(format!(
        "a buffer of format {format:?} ({what}) cannot be read as {} (format {:?}, {size}-byte {})",
        T::NAME,
        T::FORMAT,
        want.map_or("item", Class::describe),
    )))
}

/// Rust-owned, immutable, reference-counted bytes with a buffer-protocol
/// element format, an item size and a C-contiguous shape. Cheap to clone
/// (an `Arc`), `Send + Sync`, and plain Rust data: a commit closure can
/// make one with no GIL held.
///
/// As an argument of a call it appears in the worker's interpreter — an
/// own-GIL subinterpreter or the main interpreter — as a **read-only
/// `memoryview` of the same memory**: nothing is copied, and the memory
/// stays alive until every Rust clone and every Python view of it (a view
/// kept in a module global, a numpy array made with `numpy.frombuffer`)
/// is gone — ending a subinterpreter frees the views it kept; an
/// interpreter abandoned at shutdown or in quarantine keeps them, and the
/// memory, for the life of the process. Writes through a view are refused (`TypeError` for
/// `view[0] = 1`, `BufferError` for any writable buffer request).
///
/// ```no_run
/// use gilpool::{Engine, SharedBuffer};
/// # fn main() -> gilpool::Result<()> {
/// let engine = Engine::builder().sys_path("python").build()?;
/// let head = engine.load("gilpool_workloads", "buffer_head")?;
/// let buf = SharedBuffer::from_vec(vec![1.5f64, 2.5, 3.5]);
/// // Python: `def buffer_head(mv): return (mv.format, mv.shape, mv.readonly, mv[0])`
/// let (format, shape, readonly, first): (String, Vec<usize>, bool, f64) =
///     head.invoke((buf.clone(),))?;
/// assert_eq!((format.as_str(), shape, readonly, first), ("d", vec![3], true, 1.5));
/// # Ok(()) }
/// ```
///
/// As a result it is read from anything that exports a buffer (`bytes`,
/// `bytearray`, `memoryview`, `array.array`, a numpy array), with one copy
/// into Rust memory; a buffer that is not C-contiguous is refused with an
/// [`Error::is_conversion`] error. [`to_vec`](Self::to_vec) and
/// [`BufferVec`] read typed elements, checking the format.
///
/// ```
/// use gilpool::SharedBuffer;
/// let buf = SharedBuffer::from_vec((0..12).map(|i| i as f32).collect())
///     .with_shape([3, 4])
///     .unwrap();
/// assert_eq!((buf.format(), buf.itemsize(), buf.shape()), ("f", 4, &[3, 4][..]));
/// let rows = buf.slice(1..3); // rows 1 and 2, same memory
/// assert_eq!(rows.shape(), &[2, 4]);
/// assert_eq!(rows.to_vec::<f32>().unwrap()[0], 4.0);
/// assert_eq!(rows.as_ptr(), buf.as_ptr().wrapping_add(16));
/// assert!(buf.to_vec::<f64>().unwrap_err().is_conversion());
/// ```
#[derive(Clone)]
pub struct SharedBuffer {
    bytes: SharedBytes,
    layout: Arc<Layout>,
}

impl fmt::Debug for SharedBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBuffer")
            .field("ptr", &self.as_ptr())
            .field("nbytes", &self.nbytes())
            .field("format", &self.format())
            .field("itemsize", &self.itemsize())
            .field("shape", &self.shape())
            .finish()
    }
}

/// A `Vec<T>` seen as bytes, for [`SharedBytes::from_owner`].
struct PodVec<T>(Vec<T>);

impl<T: Element> AsRef<[u8]> for PodVec<T> {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

/// Bytes in 8-byte-aligned memory (a copy of a Python buffer), so that
/// views of them as `f64` or `i64` are aligned.
struct AlignedBytes {
    words: Vec<u64>,
    len: usize,
}

impl AlignedBytes {
    fn zeroed(len: usize) -> AlignedBytes {
        AlignedBytes {
            words: bytemuck::zeroed_vec(len.div_ceil(8)),
            len,
        }
    }
    fn as_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.words)[..self.len]
    }
}

impl AsRef<[u8]> for AlignedBytes {
    fn as_ref(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }
}

impl SharedBuffer {
    fn new(bytes: SharedBytes, format: &str, itemsize: usize, shape: Vec<usize>) -> SharedBuffer {
        SharedBuffer {
            bytes,
            layout: Arc::new(Layout {
                format: format.to_string(),
                itemsize,
                shape,
            }),
        }
    }

    /// A one-dimensional buffer of `T`s, taking the vector (no copy).
    pub fn from_vec<T: Element>(v: Vec<T>) -> SharedBuffer {
        let n = v.len();
        SharedBuffer::new(
            SharedBytes::from_owner(PodVec(v)),
            T::FORMAT,
            std::mem::size_of::<T>(),
            vec![n],
        )
    }

    /// A one-dimensional buffer of `T`s copied from `items`.
    pub fn copy_from_slice<T: Element>(items: &[T]) -> SharedBuffer {
        SharedBuffer::from_vec(items.to_vec())
    }

    /// Unsigned bytes (format `"B"`), taking the vector (no copy).
    pub fn from_bytes(bytes: Vec<u8>) -> SharedBuffer {
        SharedBuffer::from_vec(bytes)
    }

    /// Unsigned bytes (format `"B"`) owned by `owner`, which is dropped
    /// when the last clone and the last Python view are gone: memory from
    /// anywhere (an arena, a frame from a decoder) with no copy. Reshape
    /// or retype it with [`with_shape`](Self::with_shape),
    /// [`with_format`](Self::with_format) or [`cast`](Self::cast).
    ///
    /// ```
    /// use gilpool::SharedBuffer;
    /// let buf = SharedBuffer::from_owner(Box::<[u8]>::from(&b"abcd"[..]));
    /// assert_eq!(buf.as_bytes(), b"abcd");
    /// ```
    pub fn from_owner<O: AsRef<[u8]> + Send + Sync + 'static>(owner: O) -> SharedBuffer {
        let bytes = SharedBytes::from_owner(owner);
        let n = bytes.len();
        SharedBuffer::new(bytes, "B", 1, vec![n])
    }

    /// The whole content of a file, read once into memory, as bytes
    /// (format `"B"`).
    pub fn from_file(path: impl AsRef<Path>) -> std::io::Result<SharedBuffer> {
        Ok(SharedBuffer::from_bytes(std::fs::read(path)?))
    }

    /// The same memory with another C-contiguous shape; its items must
    /// cover every byte. An [`Error::is_config`] error otherwise.
    pub fn with_shape(self, shape: impl AsRef<[usize]>) -> Result<SharedBuffer> {
        let shape = shape.as_ref().to_vec();
        if shape.is_empty() || shape.len() > 64 {
            return Err(Error::config(format!(
                "a SharedBuffer has 1 to 64 dimensions, not {}",
                shape.len()
            )));
        }
        let items = shape.iter().try_fold(1usize, |a, &n| a.checked_mul(n));
        if items.and_then(|n| n.checked_mul(self.itemsize())) != Some(self.nbytes()) {
            return Err(Error::config(format!(
                "shape {shape:?} of {}-byte items does not cover the buffer's {} bytes",
                self.itemsize(),
                self.nbytes()
            )));
        }
        Ok(SharedBuffer::new(
            self.bytes,
            &self.layout.format,
            self.layout.itemsize,
            shape,
        ))
    }

    /// The same memory with another single-item format (`"B"`, `"d"`,
    /// `"<i"`, ...) and the item size that format has, one-dimensional.
    /// For a format whose size this cannot tell (a struct like `"ii"`),
    /// use [`with_layout`](Self::with_layout).
    pub fn with_format(self, format: &str) -> Result<SharedBuffer> {
        let itemsize = native_itemsize(format)
            .or_else(|| {
                // Standard sizes for '<', '>', '=', '!'.
                let code = format.strip_prefix(['<', '>', '=', '!'])?;
                match code {
                    "b" | "B" | "c" | "?" => Some(1),
                    "h" | "H" | "e" => Some(2),
                    "i" | "I" | "l" | "L" | "f" => Some(4),
                    "q" | "Q" | "d" => Some(8),
                    _ => None,
                }
            })
            .ok_or_else(|| {
                Error::config(format!(
                    "cannot tell the item size of format {format:?}; use with_layout"
                ))
            })?;
        self.with_layout(format, itemsize, None)
    }

    /// The same memory with any format, item size and shape (`None`: one
    /// dimension of `nbytes / itemsize` items).
    pub fn with_layout(
        self,
        format: &str,
        itemsize: usize,
        shape: Option<&[usize]>,
    ) -> Result<SharedBuffer> {
        if format.is_empty() || format.contains('\0') {
            return Err(Error::config(format!("invalid buffer format {format:?}")));
        }
        if itemsize == 0 || self.nbytes() % itemsize != 0 {
            return Err(Error::config(format!(
                "{} bytes are not a whole number of {itemsize}-byte items",
                self.nbytes()
            )));
        }
        let n = self.nbytes() / itemsize;
        let flat = SharedBuffer::new(self.bytes, format, itemsize, vec![n]);
        match shape {
            None => Ok(flat),
            Some(s) => flat.with_shape(s),
        }
    }

    /// The same memory as `T`s, one-dimensional.
    pub fn cast<T: Element>(self) -> Result<SharedBuffer> {
        self.with_layout(T::FORMAT, std::mem::size_of::<T>(), None)
    }

    /// Rows `range` of the outermost dimension (items, for a
    /// one-dimensional buffer), sharing the memory.
    ///
    /// # Panics
    /// If the range is out of bounds or decreasing, like slice indexing.
    pub fn slice(&self, range: impl RangeBounds<usize>) -> SharedBuffer {
        let rows = self.layout.shape[0];
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e + 1,
            Bound::Excluded(&e) => e,
            Bound::Unbounded => rows,
        };
        assert!(
            start <= end && end <= rows,
            "SharedBuffer::slice: rows {start}..{end} out of range of {rows}"
        );
        let row = self.nbytes().checked_div(rows).unwrap_or(0);
        let mut shape = self.layout.shape.clone();
        shape[0] = end - start;
        SharedBuffer::new(
            self.bytes.slice(start * row, (end - start) * row),
            &self.layout.format,
            self.layout.itemsize,
            shape,
        )
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }

    /// The address of the first byte (what Python's views point at).
    pub fn as_ptr(&self) -> *const u8 {
        self.bytes.as_ptr()
    }

    /// The length in bytes.
    pub fn nbytes(&self) -> usize {
        self.bytes.len()
    }

    /// The number of items (the product of the shape).
    pub fn items(&self) -> usize {
        self.layout.shape.iter().product()
    }

    /// The buffer-protocol format of one item.
    pub fn format(&self) -> &str {
        &self.layout.format
    }

    /// Bytes per item.
    pub fn itemsize(&self) -> usize {
        self.layout.itemsize
    }

    /// Items per dimension, outermost first (C order).
    pub fn shape(&self) -> &[usize] {
        &self.layout.shape
    }

    /// The items as a slice of `T`, when the format says `T`s and the
    /// memory is aligned for `T` (memory gilpool allocated always is).
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        check_element::<T>(self.format(), self.itemsize())?;
        bytemuck::try_cast_slice(self.as_bytes()).map_err(|e| {
            Error::conversion(format!("the buffer cannot be viewed as {}: {e}", T::NAME))
        })
    }

    /// A copy of the items as `T`s, when the format says `T`s (any
    /// alignment); an [`Error::is_conversion`] error naming both formats
    /// otherwise.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        check_element::<T>(self.format(), self.itemsize())?;
        Ok(bytemuck::pod_collect_to_vec(self.as_bytes()))
    }

    /// How many handles share the memory now: Rust clones (this one
    /// included) plus one per Python exporter alive.
    pub fn handles(&self) -> usize {
        self.bytes.owner_count()
    }

    pub(crate) fn shared_bytes(&self) -> &SharedBytes {
        &self.bytes
    }

    fn layout(&self) -> &Layout {
        &self.layout
    }
}

fn conv<T>(r: std::result::Result<T, gilpool_ffi::PyException>) -> Result<T> {
    r.map_err(|e| Error::conversion(e.to_string()))
}

/// A C-contiguous buffer of `obj`, or a conversion error that names what
/// was found.
fn contiguous_buffer<'py>(obj: &Object<'py>) -> Result<PyBufferView<'py>> {
    if !obj.has_buffer() {
        return Err(Error::conversion(format!(
            "expected an object with the buffer protocol (bytes, bytearray, memoryview, array.array, numpy array), got {}",
            obj.type_name()
        )));
    }
    let view = conv(obj.buffer())?;
    if !view.is_c_contiguous() {
        return Err(Error::conversion(format!(
            "a {} buffer of format {:?} and shape {:?} is not C-contiguous; make it contiguous first (numpy.ascontiguousarray, bytes(view))",
            obj.type_name(),
            view.format(),
            view.shape()
        )));
    }
    Ok(view)
}

impl IntoPython for SharedBuffer {
    /// A read-only `memoryview` of the same memory (no copy).
    fn into_python<'py>(self, py: Python<'py>) -> Result<Object<'py>> {
        conv(py.memoryview(self.shared_bytes(), self.layout()))
    }
}

impl FromPython for SharedBuffer {
    /// One copy of any C-contiguous buffer, keeping its format, item size
    /// and shape (a 0-dimensional one becomes shape `[1]`).
    fn from_python(obj: &Object<'_>) -> Result<Self> {
        let view = contiguous_buffer(obj)?;
        let mut mem = AlignedBytes::zeroed(view.len());
        if !view.copy_to(mem.as_mut()) {
            return Err(Error::conversion("the buffer changed while it was copied"));
        }
        let mut shape = view.shape();
        if shape.is_empty() {
            shape.push(1);
        }
        let itemsize = view.itemsize().max(1);
        if shape.iter().product::<usize>() * itemsize != view.len() {
            // An exporter whose shape does not match its length: keep the bytes.
            shape = vec![view.len() / itemsize];
        }
        Ok(SharedBuffer::new(
            SharedBytes::from_owner(mem),
            &view.format(),
            itemsize,
            shape,
        ))
    }
}

/// A `Vec<T>` that crosses to Python through the buffer protocol: as an
/// argument it is a read-only `memoryview` of the vector's own memory (no
/// copy, like [`SharedBuffer::from_vec`]); as a result it reads any
/// C-contiguous buffer whose format holds `T`s with one copy, where
/// `Vec<T>` itself reads a Python `list`.
///
/// ```no_run
/// use gilpool::BufferVec;
/// # fn main() -> gilpool::Result<()> {
/// # let engine = gilpool::Engine::builder().sys_path("python").build()?;
/// let to_bytes = engine.load("builtins", "bytes")?;
/// let BufferVec(back) = to_bytes.invoke::<_, BufferVec<u8>>((BufferVec(vec![1u8, 2, 3]),))?;
/// assert_eq!(back, [1, 2, 3]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BufferVec<T>(pub Vec<T>);

impl<T: Element> IntoPython for BufferVec<T> {
    fn into_python<'py>(self, py: Python<'py>) -> Result<Object<'py>> {
        SharedBuffer::from_vec(self.0).into_python(py)
    }
}

impl<T: Element> FromPython for BufferVec<T> {
    fn from_python(obj: &Object<'_>) -> Result<Self> {
        let view = contiguous_buffer(obj)?;
        check_element::<T>(&view.format(), view.itemsize())?;
        let mut out: Vec<T> = bytemuck::zeroed_vec(view.len() / std::mem::size_of::<T>());
        if !view.copy_to(bytemuck::cast_slice_mut(&mut out)) {
            return Err(Error::conversion(format!(
                "a buffer of {} bytes is not a whole number of {}",
                view.len(),
                T::NAME
            )));
        }
        Ok(BufferVec(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_classify() {
        assert!(check_element::<f64>("d", 8).is_ok());
        assert!(check_element::<f64>("<d", 8).is_ok() == cfg!(target_endian = "little"));
        assert!(check_element::<i64>("l", 8).is_ok());
        assert!(check_element::<i64>("q", 8).is_ok());
        assert!(check_element::<i32>("l", 4).is_ok());
        assert!(check_element::<u8>(">B", 1).is_ok());
        let e = check_element::<f64>("l", 8).unwrap_err();
        assert!(e.is_conversion());
        let msg = e.to_string();
        assert!(msg.contains("\"l\"") && msg.contains("\"d\""), "{msg}");
        assert!(check_element::<f32>("d", 8).is_err());
        assert!(check_element::<u8>("ii", 8).is_err());
    }

    #[test]
    fn layout_changes_are_checked() {
        let b = SharedBuffer::from_vec(vec![0u8; 24]);
        assert!(b.clone().with_shape([2, 3]).unwrap_err().is_config());
        let d = b.clone().cast::<f64>().unwrap();
        assert_eq!((d.format(), d.shape()), ("d", &[3][..]));
        let i = b.clone().with_format("<i").unwrap();
        assert_eq!((i.itemsize(), i.shape()), (4, &[6][..]));
        assert!(b.clone().with_format("ii").unwrap_err().is_config());
        let s = b.with_layout("ii", 8, Some(&[3, 1])).unwrap();
        assert_eq!(s.shape(), &[3, 1]);
    }

    #[test]
    fn slices_share_memory_and_owner() {
        let b = SharedBuffer::from_vec((0..10i32).collect());
        let s = b.slice(2..=4);
        assert_eq!(s.to_vec::<i32>().unwrap(), [2, 3, 4]);
        assert_eq!(s.as_slice::<i32>().unwrap(), &[2, 3, 4]);
        assert_eq!(b.handles(), 2);
        drop(b);
        assert_eq!(s.handles(), 1);
        assert_eq!(s.slice(..0).nbytes(), 0);
    }
}
