//! Caller-runs `invoke`: a synchronous call runs on the calling thread,
//! inside an idle worker's interpreter, instead of going through the queue.
//!
//! Each worker publishes its interpreter as a [`Room`] in its slot. Between
//! jobs the worker *offers* it ([`Lend`]); a caller that is attached to no
//! interpreter *takes* it, attaches through a thread state of its own for
//! that interpreter (made once per thread and interpreter, see
//! `gilpool_ffi::guest`), converts, calls, converts the result, detaches and
//! gives it back. The worker *reclaims* it before its next job, waiting
//! while a caller holds it, and *closes* it before ending the interpreter:
//! it then deletes the callers' thread states, with the interpreter's GIL,
//! so `Py_EndInterpreter` finds its own thread state alone. No Python object
//! leaves its interpreter: the function objects callers use live in the
//! room and are released by the worker before it ends the interpreter.
//!
//! A caller that leaves the interpreter broken (`sys.modules` lost `sys` or
//! `builtins`) gives it back *retired*: callers no longer take it, and the
//! worker recycles it (sub lane) or repairs it (main lane) before its next
//! job, warning with the handler's name.

use crate::convert::IntoArgs;
use crate::error::{Error, ErrorKind, Result};
use crate::handler::{HandlerCore, IdMap};
use crate::held::{self, Home, Releases};
use crate::lane::Lane;
use crate::sched::lend::Lend;
use crate::task::contain;
use gilpool_ffi::guest::{self, GuestState, Guests, InterpRef};
use gilpool_ffi::{Here, InterruptHandle, Kept, ModulesWatch, Object, Python};
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One worker interpreter as lent to callers.
pub(crate) struct Room {
    pub(crate) lend: Lend,
    /// The worker slot lending it (where its calls are counted).
    slot: usize,
    guests: Guests,
    interp: InterpRef,
    home: Home,
    releases: Arc<Releases>,
    /// Objects callers made in the interpreter. Locked for a call's
    /// whole run, by the caller holding the lend (so never contended).
    cache: Mutex<Cache>,
    /// CPython's id of the thread holding the lend, or of the last one that
    /// did (for a shutdown interrupt, which checks that the lend is still
    /// held; a stale id only marks an idle thread state of an interpreter
    /// that is closing).
    taker: AtomicU64,
    /// Set when the worker interrupted the holder (at shutdown).
    interrupted: AtomicBool,
    /// Why a caller retired the interpreter.
    retired: Mutex<Option<String>>,
}

impl Room {
    /// The room of the interpreter `interp`, held by its worker.
    pub(crate) fn new(
        interp: InterpRef,
        slot: usize,
        home: Home,
        releases: Arc<Releases>,
        snapshot: Option<Kept>,
    ) -> Room {
        Room {
            lend: Lend::new(),
            slot,
            guests: Guests::new(interp),
            interp,
            home,
            releases,
            cache: Mutex::new(Cache {
                snapshot,
                ..Cache::default()
            }),
            taker: AtomicU64::new(0),
            interrupted: AtomicBool::new(false),
            retired: Mutex::new(None),
        }
    }

    /// Why a caller retired it (after [`Lend::reclaim`] said so).
    pub(crate) fn take_retired(&self) -> Option<String> {
        self.retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Worker, detached: closes the room for good before the interpreter
    /// ends. A caller still inside at `deadline` is interrupted and given
    /// `grace` more; `false` if it is still inside then (the interpreter
    /// must be abandoned, not ended).
    pub(crate) fn close(&self, deadline: Instant, grace: Duration) -> bool {
        use crate::sched::lend::Reclaimed::StillLent;
        if self.lend.close(Some(deadline)) != StillLent {
            return true;
        }
        let ident = self.taker.load(Ordering::SeqCst);
        if ident != 0 {
            self.interrupted.store(true, Ordering::SeqCst);
            let handle = InterruptHandle::for_thread(self.interp, ident);
            handle.interrupt(|| self.lend.is_lent());
        }
        self.lend.close(Some(Instant::now() + grace)) != StillLent
    }

    /// Worker, attached to this interpreter after [`close`](Self::close):
    /// releases the callers' functions and deletes their thread states.
    pub(crate) fn clear(&self, py: Python<'_>) {
        debug_assert!(self.lend.is_closed());
        let cache = std::mem::take(&mut *self.cache.lock().unwrap_or_else(|e| e.into_inner()));
        let keys = cache.keys.into_iter().flat_map(|(a, b)| [a, b]);
        for k in cache.funcs.into_values().chain(keys).chain(cache.snapshot) {
            if let Err(k) = k.release(py) {
                k.forget();
            }
        }
        self.guests.clear(py);
    }
}

/// What callers keep in a room's interpreter.
#[derive(Default)]
struct Cache {
    /// Handler functions, by handler id.
    funcs: IdMap<Kept>,
    /// `"sys"` and `"builtins"`, to check the import system after a call.
    keys: Option<(Kept, Kept)>,
    /// Skips that check while `sys.modules` saw no change.
    modules: ModulesWatch,
    /// The main interpreter's `sys.modules` as its worker found it (main
    /// lane): a caller that broke it puts it back at once, since every
    /// lane and engine shares that interpreter.
    snapshot: Option<Kept>,
}

/// A room this thread used, with its thread state there.
struct Visit {
    lane: u64,
    slot: usize,
    room: Arc<Room>,
    state: Option<GuestState>,
}

thread_local! {
    static VISITS: RefCell<Vec<Visit>> = const { RefCell::new(Vec::new()) };
}

/// Whether `core`'s calls may run on the calling thread now.
fn eligible(core: &HandlerCore) -> bool {
    let o = &core.options;
    let c = &core.lane.config;
    o.caller_runs
        && o.timeout.is_none()
        && !o.vectorized
        && c.max_tasks.is_none()
        && c.max_blocks.is_none()
        && !guest::thread_has_python()
}

/// Runs one call of `core`'s function on this thread if an interpreter of
/// its lane is idle; otherwise hands `args` and `convert` back, to be
/// queued.
pub(crate) fn run<A, R, F>(
    core: &Arc<HandlerCore>,
    args: A,
    convert: F,
    phase: &'static str,
) -> std::result::Result<Result<R>, (A, F)>
where
    A: IntoArgs,
    F: for<'py> FnOnce(Object<'py>) -> Result<R>,
{
    if !eligible(core) {
        return Err((args, convert));
    }
    let lane = &core.lane;
    let only = match lane.place(args.home(), "") {
        Ok(only) => only,
        Err(_) => return Err((args, convert)),
    };
    if core.permits.try_acquire().is_err() {
        return Err((args, convert));
    }
    let Some((room, state)) = take(lane, only) else {
        core.permits.release();
        return Err((args, convert));
    };
    if lane.pool.is_cancelled() {
        room.lend.give_back(false);
        core.permits.release();
        return Err((args, convert));
    }
    let out = call(core, &room, state, args, convert, phase);
    core.permits.release();
    Ok(out)
}

/// Takes an offered room of `lane` (only slot `only`, if given) with this
/// thread's state there, made if it has none yet.
fn take(lane: &Lane, only: Option<usize>) -> Option<(Arc<Room>, Option<GuestState>)> {
    let n = lane.slots.len();
    let start = only.unwrap_or_else(|| (guest::thread_ident() as usize >> 4) % n.max(1));
    let count = if only.is_some() { 1 } else { n };
    VISITS.with(|visits| {
        let mut visits = visits.borrow_mut();
        for k in 0..count {
            let index = (start + k) % n;
            let pos = visits
                .iter()
                .position(|v| v.lane == lane.id && v.slot == index);
            if let Some(p) = pos {
                let v = &visits[p];
                if v.room.lend.take() {
                    return Some((v.room.clone(), v.state));
                }
                if !v.room.lend.is_closed() {
                    continue;
                }
            }
            // Not visited yet, or the worker has a new interpreter since.
            let current = lane.slots[index]
                .room
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let Some(room) = current else { continue };
            let taken = room.lend.take();
            let visit = Visit {
                lane: lane.id,
                slot: index,
                room: room.clone(),
                state: None,
            };
            match pos {
                Some(p) => visits[p] = visit,
                None => visits.push(visit),
            }
            if taken {
                return Some((room, None));
            }
        }
        None
    })
}

/// Remembers this thread's new state in `room`.
fn remember(room: &Arc<Room>, state: GuestState) {
    VISITS.with(|visits| {
        if let Some(v) = visits
            .borrow_mut()
            .iter_mut()
            .find(|v| Arc::ptr_eq(&v.room, room))
        {
            v.state = Some(state);
        }
    });
}

/// The call itself, holding `room`'s lend; gives it back.
fn call<A, R, F>(
    core: &Arc<HandlerCore>,
    room: &Arc<Room>,
    state: Option<GuestState>,
    args: A,
    convert: F,
    phase: &'static str,
) -> Result<R>
where
    A: IntoArgs,
    F: for<'py> FnOnce(Object<'py>) -> Result<R>,
{
    let lane = &core.lane;
    let stats = &lane.slots[room.slot].stats;
    let me = guest::thread_ident();
    if room.taker.load(Ordering::Relaxed) != me {
        room.taker.store(me, Ordering::SeqCst);
    }
    let fresh = state.is_none();
    let state = state.unwrap_or_else(|| {
        // SAFETY: we hold the room's lend, so its interpreter is alive and
        // its worker cannot close it (and delete guest states) until we give
        // it back; this thread is not attached (`eligible`).
        let s = unsafe { room.guests.make_state() };
        remember(room, s);
        s
    });
    core.stats.submitted.fetch_add(1, Ordering::Relaxed);
    let timing = lane.config.metrics;
    let begun = timing.then(crate::metrics::Stamp::now);
    if timing {
        core.stats.wait.record(Duration::ZERO);
    }
    crate::metrics::add(&stats.tasks, 1);
    crate::metrics::add(&stats.lent, 1);
    let previous = held::swap(Some((room.home, room.releases.clone())));
    let (result, broken) = {
        // SAFETY: `state` is this thread's state in the room's interpreter,
        // made under a lend held then or now; the lend is held until after
        // this guard is dropped.
        let guard = unsafe { room.guests.attach(state) };
        let py = guard.py();
        if fresh {
            room.guests.sweep(py);
        }
        room.releases.drain(py);
        let mut cache = room.cache.lock().unwrap_or_else(|e| e.into_inner());
        let here = py.here();
        let result = function(&mut cache, here, core).and_then(|func| {
            let called = contain("argument conversion", move || args.into_args(py)).and_then(|a| {
                func.call(&a.positional, a.keywords.as_ref())
                    .map_err(Error::from)
            });
            called.and_then(|obj| contain(phase, move || convert(obj)))
        });
        let result = if room.interrupted.load(Ordering::SeqCst) {
            py.clear_pending_interrupt();
            Err(Error::new(ErrorKind::Cancelled(
                "the engine shut down while the call ran on the calling thread".into(),
            )))
        } else {
            result
        };
        let Cache {
            keys,
            modules,
            snapshot,
            ..
        } = &mut *cache;
        let mut broken = !modules.intact(here, || {
            let bound = keys
                .as_ref()
                .and_then(|(a, b)| Some((a.bind_here(here)?, b.bind_here(here)?)));
            let k = bound.unwrap_or_else(|| {
                let k = py.import_keys().expect("two str objects");
                *keys = Some((k.0.clone().keep(), k.1.clone().keep()));
                k
            });
            py.imports_intact_by(&k)
        });
        if broken {
            if let Some(snap) = snapshot.as_ref().and_then(|s| s.bind_here(here)) {
                let restored = py.restore_modules(&snap).is_ok();
                lane.warn(format!(
                    "a call of {} on a calling thread broke the main interpreter's import system (sys.modules lost sys or builtins); {}",
                    core.target(),
                    if restored {
                        "the modules it had were put back"
                    } else {
                        "they could not be put back"
                    }
                ));
                broken = !restored;
            }
        }
        drop(cache);
        (result, broken)
    };
    if room.interp.id() != 0 {
        // CPython bound this thread to the guest state while attached;
        // point it back at the thread's own state before the lend is given
        // back, so the worker may delete the guest state.
        guest::rebind_own_main();
    }
    held::swap(previous);
    if let Some(begun) = begun {
        core.stats.run.record(begun.elapsed());
    }
    core.stats.count(&result);
    if broken {
        *room.retired.lock().unwrap_or_else(|e| e.into_inner()) = Some(core.target());
    }
    room.lend.give_back(broken);
    result
}

/// The handler's function in the room's interpreter, imported on first use.
fn function<'py>(cache: &mut Cache, here: Here<'py>, core: &HandlerCore) -> Result<Object<'py>> {
    if let Some(f) = cache.funcs.get(&core.id).and_then(|k| k.bind_here(here)) {
        return Ok(f);
    }
    let py = here.py();
    let func = contain("module import", || {
        crate::worker::import_function(py, &core.module, &core.function)
    })?;
    cache.funcs.insert(core.id, func.clone().keep());
    Ok(func)
}
