//! `Value`: an interpreter-neutral Python value.

use crate::convert::{FromPython, IntoPython};
use crate::error::{Error, Result};
use gilpool_ffi::{Kind, Object, Python};
use num_bigint::BigInt;

/// A Python value held in Rust, independent of any interpreter: it can be
/// built in one interpreter and rebuilt in another. Integers that fit in
/// `i64` are always `Int`; larger ones are `BigInt`.
///
/// ```
/// use gilpool::Value;
/// let v = Value::List(vec![Value::Int(1), Value::Str("a".into()), Value::None]);
/// assert_eq!(v.type_name(), "list");
/// assert_eq!(Value::from(2.5), Value::Float(2.5));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`
    None,
    /// `bool`
    Bool(bool),
    /// `int` within `i64`
    Int(i64),
    /// `int` beyond `i64`
    BigInt(BigInt),
    /// `float`
    Float(f64),
    /// `str`
    Str(String),
    /// `bytes`
    Bytes(Vec<u8>),
    /// `list`
    List(Vec<Value>),
    /// `tuple`
    Tuple(Vec<Value>),
    /// `dict`, in insertion order
    Dict(Vec<(Value, Value)>),
}

impl Value {
    /// The Python type name of this value.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "NoneType",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict(_) => "dict",
        }
    }

    /// An `int` of any size, normalised (`Int` when it fits in `i64`).
    pub fn int(v: BigInt) -> Value {
        match i64::try_from(&v) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::BigInt(v),
        }
    }
}

impl IntoPython for Value {
    fn into_python<'py>(self, py: Python<'py>) -> Result<Object<'py>> {
        Ok(match self {
            Value::None => py.none(),
            Value::Bool(b) => py.bool(b),
            Value::Int(i) => py.int(i)?,
            Value::BigInt(b) => py.int_from_decimal(&b.to_string())?,
            Value::Float(f) => py.float(f)?,
            Value::Str(s) => py.str(&s),
            Value::Bytes(b) => py.bytes(&b)?,
            Value::List(items) => py.list(
                items
                    .into_iter()
                    .map(|v| v.into_python(py))
                    .collect::<Result<_>>()?,
            )?,
            Value::Tuple(items) => py.tuple(
                items
                    .into_iter()
                    .map(|v| v.into_python(py))
                    .collect::<Result<_>>()?,
            )?,
            Value::Dict(pairs) => py.dict(
                pairs
                    .into_iter()
                    .map(|(k, v)| Ok((k.into_python(py)?, v.into_python(py)?)))
                    .collect::<Result<_>>()?,
            )?,
        })
    }
}

impl FromPython for Value {
    fn from_python(obj: &Object<'_>) -> Result<Self> {
        let conv = |e: gilpool_ffi::PyException| Error::conversion(e.to_string());
        Ok(match obj.kind() {
            Kind::None => Value::None,
            Kind::Bool => Value::Bool(obj.extract_bool().map_err(conv)?),
            Kind::Int => match obj.extract_i64().map_err(conv)? {
                Some(i) => Value::Int(i),
                None => Value::BigInt(BigInt::from_python(obj)?),
            },
            Kind::Float => Value::Float(obj.extract_f64().map_err(conv)?),
            Kind::Str => Value::Str(obj.extract_str().map_err(conv)?),
            Kind::Bytes => Value::Bytes(obj.extract_bytes().map_err(conv)?),
            Kind::List => Value::List(
                obj.sequence_items()
                    .map_err(conv)?
                    .iter()
                    .map(Value::from_python)
                    .collect::<Result<_>>()?,
            ),
            Kind::Tuple => Value::Tuple(
                obj.sequence_items()
                    .map_err(conv)?
                    .iter()
                    .map(Value::from_python)
                    .collect::<Result<_>>()?,
            ),
            Kind::Dict => Value::Dict(
                obj.dict_items()
                    .map_err(conv)?
                    .iter()
                    .map(|(k, v)| Ok((Value::from_python(k)?, Value::from_python(v)?)))
                    .collect::<Result<_>>()?,
            ),
            Kind::Other => {
                return Err(Error::conversion(format!(
                    "a {} has no gilpool Value (supported: None, bool, int, float, str, bytes, list, tuple, dict)",
                    obj.type_name()
                )))
            }
        })
    }
}

macro_rules! from_for_value {
    ($($t:ty => $v:ident as $c:ty),*) => {$(
        impl From<$t> for Value {
            fn from(x: $t) -> Value {
                Value::$v(x as $c)
            }
        }
    )*};
}
from_for_value!(i8 => Int as i64, i16 => Int as i64, i32 => Int as i64, i64 => Int as i64, u8 => Int as i64, u16 => Int as i64, u32 => Int as i64, f32 => Float as f64, f64 => Float as f64);

impl From<u64> for Value {
    fn from(x: u64) -> Value {
        Value::int(BigInt::from(x))
    }
}
impl From<bool> for Value {
    fn from(x: bool) -> Value {
        Value::Bool(x)
    }
}
impl From<&str> for Value {
    fn from(x: &str) -> Value {
        Value::Str(x.to_string())
    }
}
impl From<String> for Value {
    fn from(x: String) -> Value {
        Value::Str(x)
    }
}
impl From<BigInt> for Value {
    fn from(x: BigInt) -> Value {
        Value::int(x)
    }
}
impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(x: Vec<T>) -> Value {
        Value::List(x.into_iter().map(Into::into).collect())
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(x: Option<T>) -> Value {
        x.map_or(Value::None, Into::into)
    }
}
