//! Running a chunk task, and a vectorized batch as one call.

use super::{import::lookup, unrunnable, Worker};
use crate::convert::Packed;
use crate::error::{Error, ErrorKind};
use crate::handler::{HandlerCore, IdMap};
use crate::lane::LaneKind;
use crate::metrics::Stamp;
use crate::task::{self, Loops, Task, LOOPS_SOURCE};
use crate::watchdog::RunCtx;
use gilpool_ffi::{Kind, Object, Python, Stash};
use std::sync::Arc;

/// Keys of the chunk loops in a worker's function cache, beside handler
/// ids (which count up from 1, so never reach these).
const LOOP_EACH: u64 = u64::MAX;
const LOOP_EACH_STAR: u64 = u64::MAX - 1;

impl Worker {
    pub(super) fn execute_chunk(
        &mut self,
        handler: &Arc<HandlerCore>,
        chunk: Box<dyn task::Chunk>,
    ) {
        let control = chunk.control();
        if let Some(err) = unrunnable(&self.lane, &*control) {
            chunk.fail(err);
            return;
        }
        if !control.begin() {
            return;
        }
        let guard = self.state.attach();
        let py = guard.py();
        self.releases.drain(py);
        let func = match lookup(&mut self.cache, py, handler) {
            Ok(f) => f,
            Err(e) => {
                chunk.fail(e);
                return;
            }
        };
        let began = self.lane.config.metrics.then(Stamp::now);
        if let (Some(now), Some(at)) = (began, control.submitted()) {
            handler.stats.wait.record(now.saturating_duration_since(at));
        }
        crate::metrics::add(&self.slot.stats.tasks, chunk.len() as u64);
        {
            let mut inner = self.slot.lock();
            self.slot.start_run(&mut inner, vec![control]);
        }
        let loops = loops(&mut self.cache, self.lane.kind, py);
        chunk.run(
            py,
            &func,
            &RunCtx::new(&self.slot, self.run_time(handler)),
            loops.as_ref(),
        );
        self.end_run(py);
        self.check_health(py, handler);
        if let Some(began) = began {
            crate::metrics::add_time(&self.slot.stats.attached_ns, began.elapsed());
        }
    }

    pub(super) fn run_vectorized<'py>(
        &self,
        py: Python<'py>,
        func: &Object<'py>,
        handler: &HandlerCore,
        ctx: &RunCtx<'_>,
    ) {
        let mut tasks = Vec::new();
        let began = ctx.begin();
        {
            let mut inner = self.slot.lock();
            let mut controls = Vec::new();
            while let Some((t, c)) = self.next_task(&mut inner) {
                if let (Some(now), Some(at)) = (began, c.submitted()) {
                    handler.stats.wait.record(now.saturating_duration_since(at));
                }
                tasks.push(t);
                controls.push(c);
            }
            crate::metrics::add(&self.slot.stats.tasks, tasks.len() as u64);
            inner.rest = None;
            self.slot.start_run(&mut inner, controls);
        }
        let mut inputs = Vec::with_capacity(tasks.len());
        let mut ok = Vec::with_capacity(tasks.len());
        for mut task in tasks {
            match task.args(py).and_then(|a| match Packed::new(py, a)? {
                Packed::One(x) | Packed::Tuple(x) => Ok(x),
                _ => Err(Error::config(format!(
                    "{} is vectorized: its tasks cannot take keyword arguments",
                    handler.target()
                ))),
            }) {
                Ok(input) => {
                    inputs.push(input);
                    ok.push(task);
                }
                Err(e) => task.fail(e),
            }
        }
        if !ok.is_empty() {
            call_vectorized(py, func, handler, inputs, ok, ctx);
        }
        self.end_run(py);
    }
}

fn call_vectorized<'py>(
    py: Python<'py>,
    func: &Object<'py>,
    handler: &HandlerCore,
    inputs: Vec<Object<'py>>,
    ok: Vec<Box<dyn Task>>,
    ctx: &RunCtx<'_>,
) {
    let list = match py.list(inputs) {
        Ok(l) => l,
        Err(e) => {
            let e = Error::from(e);
            ok.into_iter().for_each(|t| t.fail(e.clone()));
            return;
        }
    };
    let outcome = func.call1(&list).map_err(Error::from);
    if let Some(reason) = ctx.returned(py, ok.len()) {
        for t in ok {
            let err = t.interrupted(reason);
            t.fail(err);
        }
        return;
    }
    let outcome = outcome.and_then(|out| {
        if out.kind() != Kind::List {
            return Err(Error::new(ErrorKind::BatchShape(format!(
                "{} must return a list of {} results, returned a {}",
                handler.target(),
                ok.len(),
                out.type_name()
            ))));
        }
        let items = out.sequence_items().map_err(Error::from)?;
        if items.len() != ok.len() {
            return Err(Error::new(ErrorKind::BatchShape(format!(
                "{} got a list of {} inputs and returned a list of {} results",
                handler.target(),
                ok.len(),
                items.len()
            ))));
        }
        Ok(items)
    });
    match outcome {
        Ok(items) => {
            for (task, item) in ok.into_iter().zip(items) {
                task.finish(Ok(item));
            }
        }
        Err(e) => ok.into_iter().for_each(|t| t.fail(e.clone())),
    }
}

/// The chunk loops in this interpreter, defined on first use and kept
/// with the handlers' functions. Sub lane only: there `os.fork` is
/// refused, so no forked child can go on running a chunk's remaining
/// inputs in Python before it returns to gilpool (which ends it). The
/// main lane calls once per input. `None` (one call per input) if they
/// cannot be defined.
fn loops<'py>(cache: &mut IdMap<Stash>, lane: LaneKind, py: Python<'py>) -> Option<Loops<'py>> {
    if lane != LaneKind::Sub {
        return None;
    }
    if let (Some(a), Some(b)) = (cache.get(&LOOP_EACH), cache.get(&LOOP_EACH_STAR)) {
        return Some(Loops {
            each: a.bind(py),
            each_star: b.bind(py),
        });
    }
    let each = py.define(LOOPS_SOURCE, "each").ok()?;
    let each_star = py.define(LOOPS_SOURCE, "each_star").ok()?;
    cache.insert(LOOP_EACH, each.clone().stash());
    cache.insert(LOOP_EACH_STAR, each_star.clone().stash());
    Some(Loops { each, each_star })
}
