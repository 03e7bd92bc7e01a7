//! Conversions between Rust values and Python objects.
//!
//! [`IntoPython`] turns a Rust value into an object of the interpreter the
//! token is attached to; [`FromPython`] reads one back into Rust. Arguments
//! of a call are [`IntoArgs`]: a tuple of `IntoPython` values, or [`Args`]
//! for keyword arguments.

use crate::error::{Error, Result};
use crate::held::Home;
use crate::value::Value;
use gilpool_ffi::{Kind, Object, Python};
use num_bigint::BigInt;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// A Rust value that can become a Python object in any interpreter.
pub trait IntoPython {
    /// Builds the object inside the interpreter `py` is attached to.
    fn into_python<'py>(self, py: Python<'py>) -> Result<Object<'py>>;
    /// The interpreter this value must be converted in, if it is bound to
    /// one (a [`Held`](crate::Held) object); `None` (the default) for
    /// values that can become objects anywhere.
    fn home(&self) -> Option<Home> {
        None
    }
}

/// A Rust value that can be read from a Python object.
pub trait FromPython: Sized {
    /// Reads `obj`; a [`Error::is_conversion`] error names the type found.
    fn from_python(obj: &Object<'_>) -> Result<Self>;
}

fn conv<T>(r: std::result::Result<T, gilpool_ffi::PyException>) -> Result<T> {
    r.map_err(|e| Error::conversion(e.to_string()))
}

macro_rules! signed {
    ($($t:ty),*) => {$(
        impl IntoPython for $t {
            #[inline]
            fn into_python<'py>(self, py: Python<'py>) -> Result<Object<'py>> {
                Ok(py.int(self as i64)?)
            }
        }
        impl FromPython for $t {
            #[inline]
            fn from_python(obj: &Object<'_>) -> Result<Self> {
                let v = conv(obj.extract_i64())?
                    .ok_or_else(|| Error::conversion(format!("int out of range for {}", stringify!($t))))?;
                <$t>::try_from(v).map_err(|_| Error::conversion(format!("{v} is out of range for {}", stringify!($t))))
            }
        }
    )*};
}
signed!(i8, i16, i32, i64, isize);

macro_rules! unsigned {
    ($($t:ty),*) => {$(
        impl IntoPython for $t {
            fn into_python<'py>(self, py: Python<'py>) -> Result<Object<'py>> {
                Ok(py.int_u64(self as u64)?)
            }
        }
        impl FromPython for $t {
            fn from_python(obj: &Object<'_>) -> Result<Self> {
                let big = BigInt::from_python(obj)?;
                <$t>::try_from(&big).map_err(|_| Error::conversion(format!("{big} is out of range for {}", stringify!($t))))
            }
        }
    )*};
}
unsigned!(u8, u16, u32, u64, usize);

impl IntoPython for i128 {
    fn into_python<'py>(self, py: Python<'py>) -> Result<Object<'py>> {
        Ok(py.int_from_decimal(&self.to_string())?)
    }
}
impl FromPython for i128 {
    fn from_python(obj: &Object<'_>) -> Result<Self> {
        let big = BigInt::from_python(obj)?;
        i128::try_from(&big)
            .map_err(|_| Error::conversion(format!("{big} is out of range for i128")))
    }
}

impl IntoPython for BigInt {
    fn into_python<'py>(self, py: Python<'py>) -> Result<Object<'py>> {
        Ok(py.int_from_decimal(&self.to_string())?)
    }
}
impl FromPython for BigInt {
    fn from_python(obj: &Object<'_>) -> Result<Self> {
        if let Some(v) = conv(obj.extract_i64())? {
            return Ok(BigInt::from(v));
        }
        let digits = conv(obj.int_to_decimal())?;
        digits
            .parse()
            .map_err(|_| Error::conversion(format!("cannot parse int {digits:?}")))
    }
}

impl IntoPython for f64 {
    fn into_python<'py>(self, py: Python<'py>) -> Result<Object<'py>> {
        Ok(py.float(self)?)
    }
}
impl FromPython for f64 {
    fn from_python(obj: &Object<'_>) -> Result<Self> {
        conv(obj.extract_f64())
    }
}
impl IntoPython for f32 {
    fn into_python<'py>(self, py: Python<'py>) -> Result<Object<'py>> {
        Ok(py.float(self as f64)?)
    }
}
impl FromPython for f32 {
    fn from_python(obj: &Object<'_>) -> Result<Self> {
        Ok(conv(obj.extract_f64())? as f32)
    }
}

impl IntoPython for bool {
    fn into_python<'py>(self, py: Python<'py>) -> Result<Object<'py>> {
        Ok(py.bool(self))
    }
}
impl FromPython for bool {
    fn from_python(obj: &Object<'_>) -> Result<Self> {
        conv(obj.extract_bool())
    }
}

impl IntoPython for String {
    fn into_python<'py>(self, py: Python<'py>) -> Result<Object<'py>> {
        Ok(py.str(&self))
    }
}
impl IntoPython for &str {
    fn into_python<'py>(self, py: Python<'py>) -> Result<Object<'py>> {
        Ok(py.str(self))
    }
}
impl FromPython for String {
    fn from_python(obj: &Object<'_>) -> Result<Self> {
        conv(obj.extract_str())
    }
}

impl IntoPython for () {
    fn into_python<'py>(self, py: Python<'py>) -> Result<Object<'py>> {
        Ok(py.none())
    }
}
impl FromPython for () {
    fn from_python(obj: &Object<'_>) -> Result<Self> {
        match obj.kind() {
            Kind::None => Ok(()),
            _ => Err(Error::conversion(format!(
                "expected None, got {}",
                obj.type_name()
            ))),
        }
    }
}

impl<T: IntoPython> IntoPython for Option<T> {
    fn into_python<'py>(self, py: Python<'py>) -> Result<Object<'py>> {
        match self {
            None => Ok(py.none()),
            Some(v) => v.into_python(py),
        }
    }
    fn home(&self) -> Option<Home> {
        self.as_ref().and_then(IntoPython::home)
    }
}
impl<T: FromPython> FromPython for Option<T> {
    fn from_python(obj: &Object<'_>) -> Result<Self> {
        match obj.kind() {
            Kind::None => Ok(None),
            _ => T::from_python(obj).map(Some),
        }
    }
}

impl<T: IntoPython> IntoPython for Vec<T> {
    fn into_python<'py>(self, py: Python<'py>) -> Result<Object<'py>> {
        let items = self
            .into_iter()
            .map(|v| v.into_python(py))
            .collect::<Result<Vec<_>>>()?;
        Ok(py.list(items)?)
    }
    fn home(&self) -> Option<Home> {
        self.iter().find_map(IntoPython::home)
    }
}
impl<T: FromPython> FromPython for Vec<T> {
    fn from_python(obj: &Object<'_>) -> Result<Self> {
        match obj.kind() {
            Kind::List | Kind::Tuple => conv(obj.sequence_items())?
                .iter()
                .map(T::from_python)
                .collect(),
            _ => Err(Error::conversion(format!(
                "expected list, got {}",
                obj.type_name()
            ))),
        }
    }
}

fn dict_into<'py, K: IntoPython, V: IntoPython>(
    py: Python<'py>,
    it: impl Iterator<Item = (K, V)>,
) -> Result<Object<'py>> {
    let pairs = it
        .map(|(k, v)| Ok((k.into_python(py)?, v.into_python(py)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(py.dict(pairs)?)
}

fn dict_from<K: FromPython, V: FromPython, C: FromIterator<(K, V)>>(obj: &Object<'_>) -> Result<C> {
    match obj.kind() {
        Kind::Dict => conv(obj.dict_items())?
            .iter()
            .map(|(k, v)| Ok((K::from_python(k)?, V::from_python(v)?)))
            .collect(),
        _ => Err(Error::conversion(format!(
            "expected dict, got {}",
            obj.type_name()
        ))),
    }
}

impl<K: IntoPython, V: IntoPython, S> IntoPython for HashMap<K, V, S> {
    fn into_python<'py>(self, py: Python<'py>) -> Result<Object<'py>> {
        dict_into(py, self.into_iter())
    }
}
impl<K: FromPython + Eq + Hash, V: FromPython, S: std::hash::BuildHasher + Default> FromPython
    for HashMap<K, V, S>
{
    fn from_python(obj: &Object<'_>) -> Result<Self> {
        dict_from(obj)
    }
}
impl<K: IntoPython, V: IntoPython> IntoPython for BTreeMap<K, V> {
    fn into_python<'py>(self, py: Python<'py>) -> Result<Object<'py>> {
        dict_into(py, self.into_iter())
    }
}
impl<K: FromPython + Ord, V: FromPython> FromPython for BTreeMap<K, V> {
    fn from_python(obj: &Object<'_>) -> Result<Self> {
        dict_from(obj)
    }
}

macro_rules! tuples {
    ($(($($n:tt $t:ident),+)),*) => {$(
        impl<$($t: IntoPython),+> IntoPython for ($($t,)+) {
            fn into_python<'py>(self, py: Python<'py>) -> Result<Object<'py>> {
                Ok(py.tuple([$(self.$n.into_python(py)?),+])?)
            }
            fn home(&self) -> Option<Home> {
                None$(.or_else(|| self.$n.home()))+
            }
        }
        impl<$($t: FromPython),+> FromPython for ($($t,)+) {
            fn from_python(obj: &Object<'_>) -> Result<Self> {
                let items = match obj.kind() {
                    Kind::Tuple | Kind::List => conv(obj.sequence_items())?,
                    _ => return Err(Error::conversion(format!("expected tuple, got {}", obj.type_name()))),
                };
                let want = [$($n),+].len();
                if items.len() != want {
                    return Err(Error::conversion(format!("expected a tuple of {want}, got {} items", items.len())));
                }
                Ok(($($t::from_python(&items[$n])?,)+))
            }
        }
        impl<$($t: IntoPython + Send + 'static),+> IntoArgs for ($($t,)+) {
            fn into_args<'py>(self, py: Python<'py>) -> Result<CallArgs<'py>> {
                Ok(CallArgs { positional: smallvec::smallvec![$(self.$n.into_python(py)?),+], keywords: None })
            }
            fn pack<'py>(self, py: Python<'py>) -> Result<Packed<'py>> {
                Packed::positional(py, [$(self.$n.into_python(py)?),+])
            }
            fn home(&self) -> Option<Home> {
                None$(.or_else(|| self.$n.home()))+
            }
        }
    )*};
}
tuples!(
    (0 A),
    (0 A, 1 B),
    (0 A, 1 B, 2 C),
    (0 A, 1 B, 2 C, 3 D),
    (0 A, 1 B, 2 C, 3 D, 4 E),
    (0 A, 1 B, 2 C, 3 D, 4 E, 5 F)
);

/// Positional arguments of one call: up to four are kept inline, with no
/// heap allocation; a `Vec` converts with `.into()`.
pub type Positional<'py> = smallvec::SmallVec<[Object<'py>; 4]>;

/// Positional and keyword arguments converted for one call.
#[derive(Debug)]
pub struct CallArgs<'py> {
    /// Positional arguments.
    pub positional: Positional<'py>,
    /// A `dict` of keyword arguments, if any.
    pub keywords: Option<Object<'py>>,
}

/// One call's arguments packed for a `map` chunk's Python loop, which
/// calls `f(x)` for [`Packed::One`] and `f(*x)` for [`Packed::Tuple`].
/// Arguments with keywords stay [`Packed::Call`]; a chunk with any calls
/// its function once per input.
#[derive(Debug)]
#[non_exhaustive]
pub enum Packed<'py> {
    /// The one positional argument.
    One(Object<'py>),
    /// A `tuple` of the positional arguments (any number but one).
    Tuple(Object<'py>),
    /// Arguments with keywords.
    Call(Box<CallArgs<'py>>),
}

impl<'py> Packed<'py> {
    /// Packs converted arguments.
    pub fn new(py: Python<'py>, a: CallArgs<'py>) -> Result<Self> {
        if a.keywords.is_some() {
            return Ok(Packed::Call(Box::new(a)));
        }
        Packed::positional(py, a.positional)
    }

    /// Packs positional arguments: one alone, any other number as a
    /// `tuple`.
    pub fn positional<I>(py: Python<'py>, items: I) -> Result<Self>
    where
        I: IntoIterator<Item = Object<'py>>,
        I::IntoIter: ExactSizeIterator,
    {
        let mut items = items.into_iter();
        if items.len() == 1 {
            return Ok(Packed::One(items.next().expect("one item")));
        }
        Ok(Packed::Tuple(py.tuple(items)?))
    }

    /// Back to call arguments, for a chunk that calls once per input.
    pub fn into_args(self) -> Result<CallArgs<'py>> {
        Ok(match self {
            Packed::One(x) => CallArgs {
                positional: smallvec::smallvec![x],
                keywords: None,
            },
            Packed::Tuple(t) => CallArgs {
                positional: t.sequence_items()?.into(),
                keywords: None,
            },
            Packed::Call(a) => *a,
        })
    }
}

/// The arguments of one call, convertible in any interpreter. Implemented
/// for `()`, tuples of up to six [`IntoPython`] values and [`Args`].
pub trait IntoArgs: Send + 'static {
    /// Converts the arguments inside the interpreter `py` is attached to.
    fn into_args<'py>(self, py: Python<'py>) -> Result<CallArgs<'py>>;
    /// Converts the arguments packed for a loop of many calls (`map`'s
    /// chunks). The default packs what [`into_args`](IntoArgs::into_args)
    /// gives; an implementation may build the packed form directly, which
    /// saves a [`CallArgs`] per input on `map`'s hot path.
    fn pack<'py>(self, py: Python<'py>) -> Result<Packed<'py>>
    where
        Self: Sized,
    {
        Packed::new(py, self.into_args(py)?)
    }
    /// The interpreter the arguments must be converted in, if any is bound
    /// to one (see [`IntoPython::home`]); the task is routed there.
    fn home(&self) -> Option<Home> {
        None
    }
}

impl IntoArgs for () {
    fn into_args<'py>(self, _py: Python<'py>) -> Result<CallArgs<'py>> {
        Ok(CallArgs {
            positional: Positional::new(),
            keywords: None,
        })
    }
}

/// Interpreter-neutral call arguments with keywords.
///
/// ```
/// use gilpool::{Args, Value};
/// let args = Args::new().arg(1).arg("two").kwarg("three", 3.0);
/// assert_eq!(args.positional().len(), 2);
/// assert_eq!(args.keywords()[0].0, "three");
/// # let _ = Value::None;
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Args {
    positional: Vec<Value>,
    keywords: Vec<(String, Value)>,
}

impl Args {
    /// No arguments.
    pub fn new() -> Args {
        Args::default()
    }
    /// From positional values and keyword pairs.
    pub fn from_parts(positional: Vec<Value>, keywords: Vec<(String, Value)>) -> Args {
        Args {
            positional,
            keywords,
        }
    }
    /// Adds a positional argument.
    pub fn arg(mut self, v: impl Into<Value>) -> Args {
        self.positional.push(v.into());
        self
    }
    /// Adds a keyword argument.
    pub fn kwarg(mut self, name: impl Into<String>, v: impl Into<Value>) -> Args {
        self.keywords.push((name.into(), v.into()));
        self
    }
    /// The positional arguments.
    pub fn positional(&self) -> &[Value] {
        &self.positional
    }
    /// The keyword arguments.
    pub fn keywords(&self) -> &[(String, Value)] {
        &self.keywords
    }
}

impl IntoArgs for Args {
    fn into_args<'py>(self, py: Python<'py>) -> Result<CallArgs<'py>> {
        let positional = self
            .positional
            .into_iter()
            .map(|v| v.into_python(py))
            .collect::<Result<Positional<'py>>>()?;
        let keywords = if self.keywords.is_empty() {
            None
        } else {
            let pairs = self
                .keywords
                .into_iter()
                .map(|(k, v)| Ok((py.str(&k), v.into_python(py)?)))
                .collect::<Result<Vec<_>>>()?;
            Some(py.dict(pairs)?)
        };
        Ok(CallArgs {
            positional,
            keywords,
        })
    }
}
