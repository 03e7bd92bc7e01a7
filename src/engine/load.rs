//! `HandlerBuilder`: a handler's options, and loading it on a lane
//! (placement: which lane runs it).

use super::{Engine, Mode, Verdict};
use crate::error::{Error, ErrorKind, Result};
use crate::handler::{Handler, HandlerCore, HandlerOptions, MapChunks};
use crate::lane::Lane;
use crate::placement::Placement;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Configures one handler; see [`Engine::handler`].
#[derive(Debug)]
pub struct HandlerBuilder<'e> {
    pub(super) engine: &'e Engine,
    pub(super) module: String,
    pub(super) function: String,
    pub(super) options: HandlerOptions,
}

impl HandlerBuilder<'_> {
    /// Tasks run per attachment (default 1). With
    /// [`vectorized`](Self::vectorized), the function receives them as one list.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.options.batch_size = n;
        self
    }
    /// The function takes a list of inputs and returns a list of results of
    /// the same length. Each task's input is its single argument, or the
    /// tuple of its arguments.
    pub fn vectorized(mut self, on: bool) -> Self {
        self.options.vectorized = on;
        self
    }
    /// Committed batches allowed ahead of execution (default 2 per worker).
    pub fn prefetch_depth(mut self, n: usize) -> Self {
        self.options.prefetch_depth = n;
        self
    }
    /// Wait up to `delay` for a batch to fill before running a partial one
    /// (default: never wait).
    pub fn max_batch_delay(mut self, delay: Duration) -> Self {
        self.options.max_batch_delay = Some(delay);
        self
    }
    /// Bound on submitted-but-unfinished tasks (default 8192).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.options.max_in_flight = n;
        self
    }
    /// A deadline for each of the handler's tasks, counted from submit
    /// (default none). A task past it that has not started never runs; one
    /// that is running is interrupted in its own interpreter (a
    /// `KeyboardInterrupt` in its thread only), and its worker goes on. Its
    /// future resolves with [`Error::is_timeout`]. A task that cannot be
    /// interrupted (blocked in C) resolves with the timeout after the
    /// engine's [`interrupt_grace`](crate::EngineBuilder::interrupt_grace), and its
    /// worker is quarantined and replaced. With a timeout, `map` submits
    /// each input as its own task (each gets its deadline).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }
    /// Whether a synchronous [`invoke`](crate::Handler::invoke) may run on
    /// the calling thread (default `true`): when one of the lane's workers
    /// is idle, a thread attached to no interpreter borrows that worker's
    /// interpreter between its jobs, through a thread state of its own, and
    /// calls the function there, with no queue and no wakeup. When no
    /// worker is idle the call is queued as usual. Calls run this way count
    /// as that worker's tasks in [`Engine::metrics`](crate::Engine::metrics)
    /// (and in its `lent` count). Handlers with a
    /// [`timeout`](Self::timeout) or [`vectorized`](Self::vectorized), and
    /// lanes that recycle interpreters by count or memory, always queue: a
    /// deadline needs a worker that can be given up on, and recycling
    /// happens on the worker's thread between its tasks.
    ///
    /// After a caller's call in a subinterpreter, the calling thread takes
    /// the main interpreter's GIL for a moment (to give CPython's
    /// `PyGILState` binding back to the thread's own state); in an engine
    /// whose main lane keeps that GIL busy, turn this off for sub-lane
    /// handlers.
    pub fn caller_runs(mut self, on: bool) -> Self {
        self.options.caller_runs = on;
        self
    }
    /// Which lane runs the function (default [`Placement::Auto`]: the sub
    /// lane unless the module refuses subinterpreters).
    pub fn placement(mut self, placement: Placement) -> Self {
        self.options.placement = placement;
        self
    }
    /// How [`Handler::map`](crate::Handler::map) groups inputs into tasks
    /// (default [`MapChunks::Guided`]).
    pub fn map_chunks(mut self, chunks: MapChunks) -> Self {
        self.options.map_chunks = chunks;
        self
    }

    /// Validates the options, imports the module on one worker and checks
    /// that the function exists and is callable.
    pub fn load(self) -> Result<Handler> {
        let o = &self.options;
        for (name, v) in [
            ("batch_size", o.batch_size),
            ("prefetch_depth", o.prefetch_depth),
            ("max_in_flight", o.max_in_flight),
        ] {
            if v == 0 {
                return Err(Error::config(format!("{name} must be at least 1")));
            }
        }
        if self.module.is_empty() || self.function.is_empty() {
            return Err(Error::config(format!(
                "a handler needs a module and a function, got module {:?} function {:?}",
                self.module, self.function
            )));
        }
        let shared = &self.engine.shared;
        if shared.closed.load(Ordering::SeqCst) {
            return Err(Error::new(ErrorKind::Shutdown));
        }
        let module = self.module.clone();
        let placement = self.options.placement;
        if shared.mode == Mode::SingleGil && placement == Placement::Sub {
            return Err(Error::config(format!(
                "{}:{} asks for Placement::Sub, but this engine runs Mode::SingleGil (no subinterpreters)",
                self.module, self.function
            )));
        }
        let verdict = shared.verdicts.lock().unwrap().get(&module).cloned();
        let on_sub = shared.mode == Mode::SubInterpreters
            && match (placement, &verdict) {
                (Placement::Main, _) => false,
                (Placement::Auto, Some(Verdict::Refuses(_))) => false,
                (Placement::Sub, Some(Verdict::Refuses(line))) => {
                    return Err(refused(&module, line));
                }
                _ => true,
            };
        let lane = if on_sub {
            shared
                .sub
                .lock()
                .unwrap()
                .clone()
                .expect("the sub lane runs")
        } else {
            shared.main_lane()?
        };
        let handler = self.resolve_on(lane);
        let handler = match handler {
            Err(e) if on_sub => match e.python().and_then(crate::placement::refusal) {
                Some(line) if e.is_import() => {
                    shared
                        .verdicts
                        .lock()
                        .unwrap()
                        .insert(module.clone(), Verdict::Refuses(line.clone()));
                    if placement == Placement::Sub {
                        return Err(refused(&module, &line));
                    }
                    shared.warn(format!(
                        "handlers of module {module} run on the main lane, since it refuses subinterpreters: {line}"
                    ));
                    self.resolve_on(shared.main_lane()?)?
                }
                _ => return Err(e),
            },
            other => {
                let h = other?;
                if on_sub {
                    shared
                        .verdicts
                        .lock()
                        .unwrap()
                        .entry(module)
                        .or_insert(Verdict::Sub);
                }
                h
            }
        };
        let core = handler.core.clone();
        shared.handlers.lock().unwrap().push(core.clone());
        if core.options.max_batch_delay.is_some() {
            let lane = core.lane.clone();
            lane.delayed.lock().unwrap().push(core);
        }
        Ok(handler)
    }

    /// A handler of these options on `lane`, its function resolved there.
    fn resolve_on(&self, lane: Arc<Lane>) -> Result<Handler> {
        let core = Arc::new(HandlerCore::new(
            &self.module,
            &self.function,
            self.options,
            lane,
        ));
        let handler = Handler { core };
        handler.resolve()?;
        Ok(handler)
    }
}

/// The error of a `Placement::Sub` handler whose module refuses
/// subinterpreters.
fn refused(module: &str, line: &str) -> Error {
    Error::new(ErrorKind::Refused {
        module: module.to_string(),
        reason: line.to_string(),
    })
}
