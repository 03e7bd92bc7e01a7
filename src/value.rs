//! `Value`: an interpreter-neutral Python value.
//!
//! No walk over a `Value` or a Python container here recurses with the
//! data's depth: conversions use an explicit stack on the heap ([`walk`])
//! and stop at [`max_depth`] levels; `Clone`, `PartialEq` and `Drop`
//! recurse at most [`RECURSION_LEVELS`] levels and continue from a heap
//! stack below that. Data nested deeper than a thread's stack allows
//! therefore converts (up to the limit), compares, clones and drops
//! without overflowing it.

use crate::convert::{FromPython, IntoPython};
use crate::error::{Error, Result};
use gilpool_ffi::{Kind, Object, Python};
use num_bigint::BigInt;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How deeply lists, tuples and dicts may nest in one [`Value`] or Python
/// object that gilpool converts, unless
/// [`EngineBuilder::max_depth`](crate::EngineBuilder::max_depth) says
/// otherwise: 10,000 levels. `[]` is one level, `[[1]]` two.
///
/// ```
/// assert_eq!(gilpool::DEFAULT_MAX_DEPTH, 10_000);
/// ```
pub const DEFAULT_MAX_DEPTH: usize = 10_000;

/// The process-wide nesting limit of conversions, set by every
/// [`EngineBuilder::build`](crate::EngineBuilder::build).
///
/// ## Memory ordering
///
/// `Relaxed`: the limit publishes no other data. A build stores it before it
/// spawns its workers (spawning orders the store before everything the new
/// threads do); a build that runs while another engine converts may be seen
/// by a conversion already under way or only by the next one, either of
/// which is a valid limit.
static MAX_DEPTH: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_DEPTH);

/// The nesting limit conversions enforce now.
pub(crate) fn max_depth() -> usize {
    MAX_DEPTH.load(Ordering::Relaxed)
}

/// Sets the nesting limit for every conversion in the process.
pub(crate) fn set_max_depth(levels: usize) {
    MAX_DEPTH.store(levels, Ordering::Relaxed);
}

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
///
/// # Deep data
///
/// Conversions to and from Python, `Clone`, `PartialEq` and `Drop` keep
/// their work on a heap stack rather than recursing with the depth, so a
/// deep value cannot overflow a thread's stack. Conversions refuse data
/// nested deeper than
/// the limit ([`DEFAULT_MAX_DEPTH`], 10,000 levels, unless
/// [`EngineBuilder::max_depth`](crate::EngineBuilder::max_depth) sets
/// another) with an [`Error::is_conversion`] error that names the limit;
/// a Python list, tuple or dict that contains itself gets the same error.
/// `Debug` formatting does recurse: print only values of moderate depth.
///
/// Because `Value` implements `Drop`, its contents cannot be moved out by
/// a by-value `match`; match on `&mut` and [`std::mem::take`] them (a taken
/// `Value` leaves [`Value::None`], its `Default`):
///
/// ```
/// use gilpool::Value;
/// let mut v = Value::List(vec![Value::Int(1), Value::Int(2)]);
/// let items = match &mut v {
///     Value::List(items) => std::mem::take(items),
///     _ => Vec::new(),
/// };
/// assert_eq!(items.len(), 2);
///
/// // A value far deeper than any stack allows still compares, clones and drops.
/// let mut deep = Value::List(vec![]);
/// for _ in 0..100_000 {
///     deep = Value::List(vec![deep]);
/// }
/// assert_eq!(deep.clone(), deep);
/// ```
#[derive(Debug)]
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

    /// Moves the items out of a non-empty list, tuple or dict.
    #[inline]
    fn take_contents(&mut self) -> Option<Contents> {
        match self {
            Value::List(items) | Value::Tuple(items) if !items.is_empty() => {
                Some(Contents::Seq(std::mem::take(items)))
            }
            Value::Dict(pairs) if !pairs.is_empty() => Some(Contents::Pairs(std::mem::take(pairs))),
            _ => None,
        }
    }
}

/// Levels that `Clone`, `PartialEq` and `Drop` of a [`Value`] go by plain
/// recursion before they continue from a heap stack: more than typical
/// data needs, few enough for any thread's stack.
const RECURSION_LEVELS: usize = 32;

/// The items of a container, moved out of it.
enum Contents {
    Seq(Vec<Value>),
    Pairs(Vec<(Value, Value)>),
}

/// Empties every container inside `c`, recursing `levels` deep and
/// leaving deeper contents on `spill`; then drops `c`, whose items are by
/// then leaves or empty containers.
fn dismantle(c: Contents, levels: usize, spill: &mut Vec<Contents>) {
    let mut empty = |v: &mut Value| {
        if let Some(inner) = v.take_contents() {
            match levels.checked_sub(1) {
                Some(below) => dismantle(inner, below, spill),
                None => spill.push(inner),
            }
        }
    };
    match c {
        Contents::Seq(mut items) => items.iter_mut().for_each(empty),
        Contents::Pairs(mut pairs) => pairs.iter_mut().for_each(|(k, v)| {
            empty(k);
            empty(v);
        }),
    }
}

impl Default for Value {
    /// `Value::None`.
    fn default() -> Value {
        Value::None
    }
}

impl Drop for Value {
    /// Empties nested containers before they are dropped: by recursion for
    /// the first 32 levels, then from a heap stack, so that no drop
    /// overflows a thread's stack whatever the depth.
    #[inline]
    fn drop(&mut self) {
        if let Some(c) = self.take_contents() {
            let mut spill = Vec::new();
            dismantle(c, RECURSION_LEVELS, &mut spill);
            while let Some(c) = spill.pop() {
                dismantle(c, RECURSION_LEVELS, &mut spill);
            }
        }
    }
}

impl Clone for Value {
    fn clone(&self) -> Value {
        clone_within(self, RECURSION_LEVELS)
    }
}

/// `v.clone()` by recursion for `levels` levels, then by [`clone_deep`].
fn clone_within(v: &Value, levels: usize) -> Value {
    let Some(below) = levels.checked_sub(1) else {
        return clone_deep(v);
    };
    match v {
        Value::List(items) => Value::List(items.iter().map(|c| clone_within(c, below)).collect()),
        Value::Tuple(items) => Value::Tuple(items.iter().map(|c| clone_within(c, below)).collect()),
        Value::Dict(pairs) => Value::Dict(
            pairs
                .iter()
                .map(|(k, c)| (clone_within(k, below), clone_within(c, below)))
                .collect(),
        ),
        leaf => clone_leaf(leaf),
    }
}

/// A copy of a value that is not a list, tuple or dict.
fn clone_leaf(v: &Value) -> Value {
    match v {
        Value::None => Value::None,
        Value::Bool(b) => Value::Bool(*b),
        Value::Int(i) => Value::Int(*i),
        Value::BigInt(b) => Value::BigInt(b.clone()),
        Value::Float(f) => Value::Float(*f),
        Value::Str(s) => Value::Str(s.clone()),
        Value::Bytes(b) => Value::Bytes(b.clone()),
        Value::List(_) | Value::Tuple(_) | Value::Dict(_) => unreachable!("a container"),
    }
}

/// `v.clone()` from a heap stack, at any depth.
#[inline(never)]
fn clone_deep(v: &Value) -> Value {
    let cloned: std::result::Result<Value, Infallible> = walk(
        v,
        usize::MAX,
        |v| {
            Ok(match v {
                Value::List(items) => Node::Branch(Shape::List, RefItems::Seq(items.iter()), ()),
                Value::Tuple(items) => Node::Branch(Shape::Tuple, RefItems::Seq(items.iter()), ()),
                Value::Dict(pairs) => {
                    Node::Branch(Shape::Dict, RefItems::Pairs(pairs.iter(), None), ())
                }
                leaf => Node::Leaf(clone_leaf(leaf)),
            })
        },
        |shape, items| Ok(shape.value(items)),
        |_, _| unreachable!("no depth limit"),
    );
    match cloned {
        Ok(v) => v,
        Err(never) => match never {},
    }
}

impl PartialEq for Value {
    /// Structural equality, as a derived `PartialEq` would compare (`Int`
    /// and `BigInt` never equal, `NaN != NaN`), by recursion for the first
    /// 32 levels, then from a heap stack.
    fn eq(&self, other: &Value) -> bool {
        eq_within(self, other, RECURSION_LEVELS)
    }
}

fn eq_within(a: &Value, b: &Value, levels: usize) -> bool {
    let Some(below) = levels.checked_sub(1) else {
        return eq_deep(a, b);
    };
    match (a, b) {
        (Value::List(x), Value::List(y)) | (Value::Tuple(x), Value::Tuple(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| eq_within(a, b, below))
        }
        (Value::Dict(x), Value::Dict(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((ka, a), (kb, b))| eq_within(ka, kb, below) && eq_within(a, b, below))
        }
        _ => eq_leaf(a, b),
    }
}

/// Equality of two values, at least one of them not a list, tuple or dict.
fn eq_leaf(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::None, Value::None) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::BigInt(x), Value::BigInt(y)) => x == y,
        (Value::Float(x), Value::Float(y)) => x == y,
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::Bytes(x), Value::Bytes(y)) => x == y,
        _ => false,
    }
}

/// `a == b` from a heap stack, at any depth.
#[inline(never)]
fn eq_deep(a: &Value, b: &Value) -> bool {
    let mut pending = vec![(a, b)];
    while let Some((a, b)) = pending.pop() {
        let same = match (a, b) {
            (Value::List(x), Value::List(y)) | (Value::Tuple(x), Value::Tuple(y)) => {
                x.len() == y.len() && {
                    pending.extend(x.iter().zip(y));
                    true
                }
            }
            (Value::Dict(x), Value::Dict(y)) => {
                x.len() == y.len() && {
                    for ((ka, va), (kb, vb)) in x.iter().zip(y) {
                        pending.push((ka, kb));
                        pending.push((va, vb));
                    }
                    true
                }
            }
            _ => eq_leaf(a, b),
        };
        if !same {
            return false;
        }
    }
    true
}

/// Which container a branch of a walk builds.
#[derive(Debug, Clone, Copy)]
enum Shape {
    List,
    Tuple,
    Dict,
}

impl Shape {
    /// The `Value` of this shape holding `items` (a dict's keys and values
    /// alternate).
    fn value(self, items: Vec<Value>) -> Value {
        match self {
            Shape::List => Value::List(items),
            Shape::Tuple => Value::Tuple(items),
            Shape::Dict => Value::Dict(pairs(items)),
        }
    }
}

/// `[k0, v0, k1, v1, ...]` as `[(k0, v0), (k1, v1), ...]`.
fn pairs<T>(flat: Vec<T>) -> Vec<(T, T)> {
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    out
}

/// One step of a walk: a finished leaf, or a container whose children
/// (a dict's as key, value, key, value, ...) are still to visit. `K` is
/// what the walk keeps of each open container for its depth error.
enum Node<I, O, K> {
    Leaf(O),
    Branch(Shape, I, K),
}

/// An open container of a walk: its remaining children and the outputs of
/// those already visited.
struct Frame<I, O, K> {
    shape: Shape,
    children: I,
    done: Vec<O>,
    key: K,
}

/// Converts the tree under `root` bottom-up with an explicit stack:
/// `split` turns a node into a leaf output or a container of children,
/// `build` assembles a container's outputs. A container `limit` levels
/// deep with another inside fails with `too_deep(keys of the open
/// containers, key of the one refused)`.
fn walk<T, I, O, K, E>(
    root: T,
    limit: usize,
    mut split: impl FnMut(T) -> std::result::Result<Node<I, O, K>, E>,
    mut build: impl FnMut(Shape, Vec<O>) -> std::result::Result<O, E>,
    too_deep: impl FnOnce(Vec<K>, K) -> E,
) -> std::result::Result<O, E>
where
    I: Iterator<Item = T>,
{
    let frame = |shape, children: I, key| Frame {
        shape,
        done: Vec::with_capacity(children.size_hint().0),
        children,
        key,
    };
    let mut open = match split(root)? {
        Node::Leaf(o) => return Ok(o),
        Node::Branch(_, _, key) if limit == 0 => return Err(too_deep(Vec::new(), key)),
        Node::Branch(shape, children, key) => vec![frame(shape, children, key)],
    };
    loop {
        let top = open.last_mut().expect("a container is open");
        match top.children.next() {
            Some(child) => match split(child)? {
                Node::Leaf(o) => top.done.push(o),
                Node::Branch(_, _, key) if open.len() >= limit => {
                    return Err(too_deep(open.into_iter().map(|f| f.key).collect(), key));
                }
                Node::Branch(shape, children, key) => open.push(frame(shape, children, key)),
            },
            None => {
                let f = open.pop().expect("a container is open");
                let out = build(f.shape, f.done)?;
                match open.last_mut() {
                    Some(parent) => parent.done.push(out),
                    None => return Ok(out),
                }
            }
        }
    }
}

/// Owned children of one container, a dict's flattened to key, value, ...
enum Items<T> {
    Seq(std::vec::IntoIter<T>),
    Pairs(std::vec::IntoIter<(T, T)>, Option<T>),
}

impl<T> Iterator for Items<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        match self {
            Items::Seq(it) => it.next(),
            Items::Pairs(it, value) => value.take().or_else(|| {
                let (k, v) = it.next()?;
                *value = Some(v);
                Some(k)
            }),
        }
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match self {
            Items::Seq(it) => it.len(),
            Items::Pairs(it, value) => 2 * it.len() + usize::from(value.is_some()),
        };
        (n, Some(n))
    }
}

/// Borrowed children of one `Value` container (for `Clone`).
enum RefItems<'a> {
    Seq(std::slice::Iter<'a, Value>),
    Pairs(std::slice::Iter<'a, (Value, Value)>, Option<&'a Value>),
}

impl<'a> Iterator for RefItems<'a> {
    type Item = &'a Value;
    fn next(&mut self) -> Option<&'a Value> {
        match self {
            RefItems::Seq(it) => it.next(),
            RefItems::Pairs(it, value) => value.take().or_else(|| {
                let (k, v) = it.next()?;
                *value = Some(v);
                Some(k)
            }),
        }
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match self {
            RefItems::Seq(it) => it.len(),
            RefItems::Pairs(it, value) => 2 * it.len() + usize::from(value.is_some()),
        };
        (n, Some(n))
    }
}

#[cold]
fn too_deep(what: &str, limit: usize, note: &str) -> Error {
    Error::conversion(format!(
        "{what} nested deeper than {limit} levels (EngineBuilder::max_depth){note}"
    ))
}

impl IntoPython for Value {
    fn into_python<'py>(self, py: Python<'py>) -> Result<Object<'py>> {
        let limit = max_depth();
        walk(
            self,
            limit,
            |mut v| {
                Ok(match &mut v {
                    Value::List(items) => Node::Branch(
                        Shape::List,
                        Items::Seq(std::mem::take(items).into_iter()),
                        (),
                    ),
                    Value::Tuple(items) => Node::Branch(
                        Shape::Tuple,
                        Items::Seq(std::mem::take(items).into_iter()),
                        (),
                    ),
                    Value::Dict(pairs) => Node::Branch(
                        Shape::Dict,
                        Items::Pairs(std::mem::take(pairs).into_iter(), None),
                        (),
                    ),
                    Value::None => Node::Leaf(py.none()),
                    Value::Bool(b) => Node::Leaf(py.bool(*b)),
                    Value::Int(i) => Node::Leaf(py.int(*i)?),
                    Value::BigInt(b) => Node::Leaf(py.int_from_decimal(&b.to_string())?),
                    Value::Float(f) => Node::Leaf(py.float(*f)?),
                    Value::Str(s) => Node::Leaf(py.str(s)),
                    Value::Bytes(b) => Node::Leaf(py.bytes(b)?),
                })
            },
            |shape, items| {
                Ok(match shape {
                    Shape::List => py.list(items)?,
                    Shape::Tuple => py.tuple(items)?,
                    Shape::Dict => py.dict(pairs(items))?,
                })
            },
            |_, ()| too_deep("a Value", limit, ""),
        )
    }
}

impl FromPython for Value {
    fn from_python(obj: &Object<'_>) -> Result<Self> {
        let conv = |e: gilpool_ffi::PyException| Error::conversion(e.to_string());
        let limit = max_depth();
        walk(
            obj.clone(),
            limit,
            |obj| {
                let kind = obj.kind();
                Ok(match kind {
                    Kind::List | Kind::Tuple => {
                        let shape = match kind {
                            Kind::List => Shape::List,
                            _ => Shape::Tuple,
                        };
                        let items = obj.sequence_items().map_err(conv)?;
                        Node::Branch(shape, Items::Seq(items.into_iter()), obj)
                    }
                    Kind::Dict => {
                        let items = obj.dict_items().map_err(conv)?;
                        Node::Branch(Shape::Dict, Items::Pairs(items.into_iter(), None), obj)
                    }
                    Kind::None => Node::Leaf(Value::None),
                    Kind::Bool => Node::Leaf(Value::Bool(obj.extract_bool().map_err(conv)?)),
                    Kind::Int => Node::Leaf(match obj.extract_i64().map_err(conv)? {
                        Some(i) => Value::Int(i),
                        None => Value::BigInt(BigInt::from_python(&obj)?),
                    }),
                    Kind::Float => Node::Leaf(Value::Float(obj.extract_f64().map_err(conv)?)),
                    Kind::Str => Node::Leaf(Value::Str(obj.extract_str().map_err(conv)?)),
                    Kind::Bytes => Node::Leaf(Value::Bytes(obj.extract_bytes().map_err(conv)?)),
                    Kind::Other => {
                        return Err(Error::conversion(format!(
                            "a {} has no gilpool Value (supported: None, bool, int, float, str, bytes, list, tuple, dict)",
                            obj.type_name()
                        )))
                    }
                })
            },
            |shape, items| Ok(shape.value(items)),
            |mut path, refused| {
                path.push(refused);
                let note = match repeated(&path) {
                    Some(ty) => format!(": a {ty} in it contains itself"),
                    None => String::new(),
                };
                too_deep("Python data", limit, &note)
            },
        )
    }
}

/// The type of the first container that occurs twice on `path` (a cycle),
/// if any. Only the refused conversion's error path calls this.
#[cold]
fn repeated(path: &[Object<'_>]) -> Option<String> {
    let py = path.first()?.py();
    let id = py.import("builtins").ok()?.getattr("id").ok()?;
    let mut seen = std::collections::HashSet::with_capacity(path.len());
    for obj in path {
        let key = id.call1(obj).ok()?.extract_i64().ok()??;
        if !seen.insert(key) {
            return Some(obj.type_name());
        }
    }
    None
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
