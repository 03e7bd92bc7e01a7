//! `Held`: a result kept as a Python object in the interpreter that made it.
//!
//! A `Held` is Rust data (`Send`, `Sync`, refcounted by `Arc`) naming one
//! Python object and its home: the lane, the worker slot (sub lane; the
//! main lane's workers all share the main interpreter) and the
//! interpreter id. Passed as an argument, it becomes that same object again
//! — no copy, no conversion — in its own interpreter only: a task with a
//! sub-lane `Held` argument is routed to the mailbox of the worker that
//! owns the interpreter (never stolen), and anything else is a clear error.
//!
//! The last `Held` dropped gives the reference back inside its interpreter:
//! at once when the dropping thread is attached there, otherwise through
//! the home's release queue, which the owning worker drains at its next
//! attachment. When the interpreter ends, its queue is drained and closed;
//! later drops forget the pointer (the object went with the interpreter).

use crate::convert::{FromPython, IntoPython};
use crate::error::{Error, Result};
use gilpool_ffi::{Kept, Object, Python};
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Where a [`Held`] object lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Home {
    pub(crate) lane: u64,
    /// The sub-lane worker slot owning the interpreter; `None` on the main
    /// lane, whose workers all share the main interpreter.
    pub(crate) slot: Option<usize>,
    pub(crate) interp: i64,
}

/// References given back later, in their interpreter.
#[derive(Debug, Default)]
pub(crate) struct Releases {
    state: Mutex<ReleaseState>,
    pending: AtomicBool,
}

#[derive(Debug, Default)]
struct ReleaseState {
    queue: Vec<Kept>,
    closed: bool,
}

impl Releases {
    fn push(&self, kept: Kept) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.closed {
            kept.forget();
            return;
        }
        s.queue.push(kept);
        self.pending.store(true, Ordering::Release);
    }

    /// Releases every queued reference; `py` is attached to their
    /// interpreter. One atomic load when nothing is queued.
    pub(crate) fn drain(&self, py: Python<'_>) {
        if !self.pending.load(Ordering::Acquire) {
            return;
        }
        let queue = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            self.pending.store(false, Ordering::Release);
            std::mem::take(&mut s.queue)
        };
        for kept in queue {
            if let Err(k) = kept.release(py) {
                // Queued at the wrong home: cannot happen; never decref
                // an object outside its interpreter.
                k.forget();
            }
        }
    }

    /// The interpreter is ending (after a last `drain`): later drops only
    /// forget their pointer.
    pub(crate) fn close(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.closed = true;
        for k in std::mem::take(&mut s.queue) {
            k.forget();
        }
    }
}

thread_local! {
    /// The home of objects made on this thread: set by a worker for its
    /// life.
    static CONTEXT: RefCell<Option<(Home, Arc<Releases>)>> = const { RefCell::new(None) };
}

/// Marks the current thread as a worker making `Held`s at `home`.
pub(crate) fn enter(home: Home, releases: Arc<Releases>) {
    CONTEXT.with(|c| *c.borrow_mut() = Some((home, releases)));
}

/// Sets the home of `Held`s made on this thread (a caller running a call
/// in a worker's interpreter), returning the one it replaces.
pub(crate) fn swap(context: Option<(Home, Arc<Releases>)>) -> Option<(Home, Arc<Releases>)> {
    CONTEXT.with(|c| std::mem::replace(&mut *c.borrow_mut(), context))
}

/// The current thread no longer makes `Held`s.
pub(crate) fn leave() {
    CONTEXT.with(|c| *c.borrow_mut() = None);
}

struct HeldInner {
    kept: Option<Kept>,
    home: Home,
    releases: Arc<Releases>,
}

impl Drop for HeldInner {
    fn drop(&mut self) {
        if let Some(kept) = self.kept.take() {
            if let Err(kept) = kept.release_here() {
                self.releases.push(kept);
            }
        }
    }
}

/// A Python object that stays in the interpreter that made it: a result
/// kept as is ([`Handler::submit_held`](crate::Handler::submit_held), or
/// `submit::<_, Held>`) and handed to the next handler as an argument,
/// without converting it to Rust values — numpy arrays, models, anything.
///
/// `Held` is `Send`, `Sync` and cheap to clone (a refcount). As an
/// argument it is usable by any handler on the same interpreter: on the main
/// lane any main worker; on the sub lane the task is pinned to the worker
/// whose interpreter owns the object (batching sees it like any other
/// argument). Passing it to another interpreter is an
/// [`Error::is_conversion`] error. Dropping the last clone releases the
/// object inside its own interpreter.
///
/// ```no_run
/// # fn main() -> gilpool::Result<()> {
/// use gilpool::Held;
/// let engine = gilpool::Engine::builder().sys_path("python").build()?;
/// let make = engine.load("gilpool_workloads", "echo")?;
/// let add = engine.load("gilpool_workloads", "add")?;
/// let kept: Held = make.submit_held((20,))?.wait()?;      // stays a Python object
/// let sum: i64 = add.invoke((kept.clone(), 22))?;        // same interpreter, no copy
/// assert_eq!(sum, 42);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Held {
    inner: Arc<HeldInner>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("interpreter", &self.inner.home.interp)
            .field("main_lane", &self.inner.home.slot.is_none())
            .finish()
    }
}

impl Held {
    /// Keeps `obj` in its interpreter. Only on a gilpool worker (inside a
    /// callback): elsewhere there is no home to give it back to.
    pub fn keep(obj: Object<'_>) -> Result<Held> {
        let Some((home, releases)) = CONTEXT.with(|c| c.borrow().clone()) else {
            return Err(Error::conversion(
                "a Held can only be made on a gilpool worker, inside a task's callback",
            ));
        };
        let kept = obj.keep();
        debug_assert_eq!(kept.interpreter_id(), home.interp);
        Ok(Held {
            inner: Arc::new(HeldInner {
                kept: Some(kept),
                home,
                releases,
            }),
        })
    }

    /// The id of the interpreter that owns the object (0: the main one).
    pub fn interpreter_id(&self) -> i64 {
        self.inner.home.interp
    }

    /// Where the object lives.
    pub fn home(&self) -> Home {
        self.inner.home
    }
}

impl IntoPython for Held {
    fn into_python<'py>(self, py: Python<'py>) -> Result<Object<'py>> {
        let kept = self
            .inner
            .kept
            .as_ref()
            .expect("a live Held keeps its object");
        kept.bind(py).ok_or_else(|| {
            Error::conversion(format!(
                "a Held object lives in interpreter {} and cannot be used in interpreter {}: pass it to a handler on the lane that made it (on the sub lane its tasks go to the worker owning it), or convert it to a Value there first",
                kept.interpreter_id(),
                py.interpreter_id()
            ))
        })
    }

    fn home(&self) -> Option<Home> {
        Some(self.inner.home)
    }
}

impl FromPython for Held {
    fn from_python(obj: &Object<'_>) -> Result<Self> {
        Held::keep(obj.clone())
    }
}
