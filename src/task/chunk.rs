//! A `map` chunk: many calls of one function as one unit of work, run
//! through one Python loop (`Loops`) where the inputs allow.

use super::{contain, contain_each, Completer, Control};
use crate::convert::{CallArgs, FromPython, IntoArgs, Packed};
use crate::error::{Error, ErrorKind, Result};
use crate::watchdog::{Reason, RunCtx};
use gilpool_ffi::{Object, Python};
use std::sync::Arc;

/// Many calls of one function as one unit of work: the fast path of
/// [`Handler::map`](crate::Handler::map). One allocation, one permit and one
/// completion for the whole chunk; each input is converted, called and its
/// result converted inside the worker's interpreter.
pub(crate) trait Chunk: Send {
    /// The chunk's shared state (its one future).
    fn control(&self) -> Arc<dyn Control>;
    /// Runs every input, attached: through `loops` when given (one call
    /// into Python for the chunk), else one call per input.
    fn run<'py>(
        self: Box<Self>,
        py: Python<'py>,
        func: &Object<'py>,
        ctx: &RunCtx<'_>,
        loops: Option<&Loops<'py>>,
    );
    /// Completes the chunk's future with `err`.
    fn fail(self: Box<Self>, err: Error);
    /// Inputs in the chunk.
    fn len(&self) -> usize;
}

/// The Python loops a chunk's inputs run through: `each(f, inputs,
/// out)` calls `f(x)`, `each_star` calls `f(*x)`, for every `x` the
/// iterator `inputs` yields, and appends each result to the list `out`. A chunk makes one call
/// into Python instead of one per input; Python's own calls from the loop
/// are its fast path. An exception stops the loop at the input that raised
/// it; the chunk records it as that input's error and calls the loop again
/// with the same iterator, which goes on after it.
pub(crate) struct Loops<'py> {
    pub(crate) each: Object<'py>,
    pub(crate) each_star: Object<'py>,
}

/// The source of [`Loops`], defined once per interpreter.
pub(crate) const LOOPS_SOURCE: &str = "\
def each(f, inputs, out):
    for x in inputs:
        out.append(f(x))

def each_star(f, inputs, out):
    for x in inputs:
        out.append(f(*x))
";

/// A [`Chunk`] of inputs of type `A` and results of type `R`.
pub(crate) struct ChunkTask<A, R> {
    inputs: Vec<A>,
    done: Completer<Vec<Result<R>>>,
}

impl<A, R> ChunkTask<A, R> {
    pub(crate) fn new(inputs: Vec<A>, done: Completer<Vec<Result<R>>>) -> Self {
        ChunkTask { inputs, done }
    }
}

impl<A: IntoArgs, R: FromPython + Send + 'static> Chunk for ChunkTask<A, R> {
    fn control(&self) -> Arc<dyn Control> {
        self.done.control()
    }

    fn run<'py>(
        mut self: Box<Self>,
        py: Python<'py>,
        func: &Object<'py>,
        ctx: &RunCtx<'_>,
        loops: Option<&Loops<'py>>,
    ) {
        ctx.begin();
        let inputs = self.inputs.drain(..);
        let outcome = match loops {
            Some(loops) => {
                // Compact (16 bytes an input), so a chunk's inputs stay in
                // cache between conversion and the loop.
                let xs = contain_each("argument conversion", inputs, |a| a.pack(py));
                let shape = Shape::of(&xs);
                if shape.call {
                    let args = xs.into_iter().map(|x| x?.into_args()).collect();
                    run_each_call::<R>(py, func, ctx, args)
                } else {
                    run_looped::<R>(py, func, ctx, loops, xs, shape)
                }
            }
            None => {
                let args = contain_each("argument conversion", inputs, |a| a.into_args(py));
                run_each_call::<R>(py, func, ctx, args)
            }
        };
        self.done
            .complete(outcome.map_err(|reason| self.done.interrupted(reason)));
    }

    fn fail(self: Box<Self>, err: Error) {
        self.done.complete(Err(err));
    }

    fn len(&self) -> usize {
        self.inputs.len()
    }
}

/// Which kinds of packed inputs a chunk has, found in one pass.
#[derive(Debug, Clone, Copy, Default)]
struct Shape {
    /// One takes keywords (`Packed::Call`): the chunk runs one call each.
    call: bool,
    /// One is a tuple of positional arguments (`f(*x)`).
    tuple: bool,
    /// One is a single argument (`f(x)`).
    one: bool,
    /// One failed to convert.
    failed: bool,
}

impl Shape {
    fn of(inputs: &[Result<Packed<'_>>]) -> Shape {
        let mut s = Shape::default();
        for x in inputs {
            match x {
                Ok(Packed::Call(_)) => s.call = true,
                Ok(Packed::Tuple(_)) => s.tuple = true,
                Ok(Packed::One(_)) => s.one = true,
                Err(_) => s.failed = true,
            }
        }
        s
    }
}

/// A chunk's inputs, one call each; `Err` if a call was interrupted.
fn run_each_call<'py, R: FromPython>(
    py: Python<'py>,
    func: &Object<'py>,
    ctx: &RunCtx<'_>,
    args: Vec<Result<CallArgs<'py>>>,
) -> std::result::Result<Vec<Result<R>>, Reason> {
    let mut out = Vec::with_capacity(args.len());
    // One clock read per input: each `returned` is the next one's start.
    for a in args {
        let item = a.and_then(|args| {
            let obj = func.call(&args.positional, args.keywords.as_ref())?;
            contain("result conversion", || R::from_python(&obj))
        });
        if let Some(reason) = ctx.returned(py, 1) {
            return Err(reason);
        }
        out.push(item);
    }
    Ok(out)
}

/// A chunk's inputs through [`Loops`] (none takes keywords): one call into
/// Python for all of them, again after each input that raised. Each
/// input's run time is the chunk's divided evenly. `Err` if the loop was
/// interrupted.
fn run_looped<'py, R: FromPython>(
    py: Python<'py>,
    func: &Object<'py>,
    ctx: &RunCtx<'_>,
    loops: &Loops<'py>,
    inputs: Vec<Result<Packed<'py>>>,
    shape: Shape,
) -> std::result::Result<Vec<Result<R>>, Reason> {
    let n = inputs.len();
    let star = shape.tuple;
    // Inputs whose arguments converted go to Python; the rest keep their
    // error in place (`early` stays empty when none failed).
    let mut early: Vec<Option<Error>> = Vec::new();
    // Single arguments beside tuples each become a 1-tuple below.
    let mixed = star && shape.one;
    let list = if !(shape.failed || mixed) {
        // The common case: every input packed alike, straight into the list.
        let xs = inputs.into_iter().map(|x| match x {
            Ok(Packed::One(x) | Packed::Tuple(x)) => x,
            _ => unreachable!("checked above: every input packed, none with keywords"),
        });
        py.list(xs)
    } else {
        let mut xs = Vec::with_capacity(n);
        early.reserve(n);
        for x in inputs {
            let x = x.and_then(|x| match x {
                Packed::One(x) if star => Ok(py.tuple([x])?),
                Packed::One(x) | Packed::Tuple(x) => Ok(x),
                Packed::Call(_) => unreachable!("a chunk with keywords is not looped"),
            });
            match x {
                Ok(x) => {
                    xs.push(x);
                    early.push(None);
                }
                Err(e) => early.push(Some(e)),
            }
        }
        py.list(xs)
    };
    let setup = (|| -> Result<_> {
        let list = list?;
        let called = list.len()?;
        let out = py.list([])?;
        let inputs = list.iter()?;
        Ok((out, inputs, called))
    })();
    let (out, inputs, called) = match setup {
        Ok(s) => s,
        Err(e) => {
            if let Some(reason) = ctx.returned_each(py, n) {
                return Err(reason);
            }
            return Ok((0..n).map(|_| Err(e.clone())).collect());
        }
    };
    let each = if star { &loops.each_star } else { &loops.each };
    // `out.append(..)` in the loop, not a bound `append` passed in:
    // CPython specializes the method form to an inline list append.
    let call = [func.clone(), inputs, out.clone()];
    // (index among the called inputs, its error), in input order.
    let mut raised: Vec<(usize, Error)> = Vec::new();
    loop {
        match each.call_loop(&call) {
            Ok(_) => break,
            Err(e) => {
                if let Some(reason) = ctx.interrupted(py) {
                    return Err(reason);
                }
                let done = out.len().unwrap_or(0) + raised.len();
                raised.push((done, Error::from(e)));
                if done + 1 >= called {
                    break;
                }
            }
        }
    }
    if let Some(reason) = ctx.returned_each(py, n) {
        return Err(reason);
    }
    let returned = out.len().map_err(Error::from);
    match returned {
        Ok(r) if r + raised.len() == called => {}
        other => {
            let e = other.err().unwrap_or_else(|| {
                Error::new(ErrorKind::BatchShape(format!(
                    "a map chunk of {called} calls gave {} results and {} errors (did the function reach into the caller's frame?)",
                    out.len().unwrap_or(0),
                    raised.len()
                )))
            });
            return Ok((0..n).map(|_| Err(e.clone())).collect());
        }
    }
    let mut raised = raised.into_iter().peekable();
    let mut index = 0;
    let mut next_result = 0;
    // Everything but `from_python` runs before it, so a panic there leaves
    // the cursors at the next input. Results are read off `out` one by one
    // (`list_take` re-reads its length, so a conversion that runs Python
    // and changes the list cannot take the walk out of bounds).
    let mut early = early.into_iter();
    Ok(contain_each("result conversion", 0..n, |_| {
        if let Some(Some(e)) = early.next() {
            return Err(e);
        }
        let i = index;
        index += 1;
        if raised.peek().is_some_and(|(at, _)| *at == i) {
            return Err(raised.next().expect("peeked").1);
        }
        let at = next_result;
        next_result += 1;
        let obj = out.list_take(at).ok_or_else(|| {
            Error::new(ErrorKind::BatchShape(format!(
                "a map chunk's results changed while they were read (result {at} is gone)"
            )))
        })?;
        R::from_python(&obj)
    }))
}
