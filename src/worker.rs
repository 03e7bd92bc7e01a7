//! The worker loop: one thread serving one lane slot with one interpreter.
//!
//! A job's tasks are parked in the slot while they run (see `slot.rs`), so
//! the watchdog can interrupt the call in progress and, if it does not
//! stop, quarantine the thread: the thread then leaves as soon as its call
//! returns, without touching the slot's queues again. A panic that escapes
//! a job (user code is contained per task; this is the last line) fails the
//! tasks the job held with an error saying so, and the worker goes on.

use crate::error::{panic_message, Error, ErrorKind, Result};
use crate::handler::HandlerCore;
use crate::lane::{Batch, Job, Lane, LaneKind};
use crate::sched::pool::{Idle, Next};
use crate::slot::{Slot, SlotInner, Target};
use crate::task::{self, contain, Control, Task};
use crate::watchdog::{expired, RunCtx};
use gilpool_ffi::{
    Attached, InterruptHandle, Kind, MainThreadState, Object, PyException, Python, Stash,
    SubInterpreter, WorkerState,
};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Default stack size of worker threads: room for Python's own recursion
/// limits (CPython sizes them for a main thread's 8 MiB) with margin.
pub const DEFAULT_STACK_SIZE: usize = 16 << 20;

/// What a worker thread starts with.
pub(crate) struct WorkerStart {
    pub(crate) lane: Arc<Lane>,
    pub(crate) slot: usize,
    pub(crate) generation: u64,
    /// Where to report start-up (the engine's build waits on it); a
    /// replacement has none and reports failures as warnings.
    pub(crate) ready: Option<Sender<std::result::Result<(), String>>>,
}

/// The interpreter a worker attaches through.
enum State {
    Sub(SubInterpreter),
    Main(MainThreadState),
}

impl State {
    fn attach(&self) -> Attached<'_> {
        match self {
            State::Sub(s) => s.attach(),
            State::Main(m) => m.attach(),
        }
    }
}

/// The body of a worker thread.
pub(crate) fn run(start: WorkerStart) {
    let WorkerStart {
        lane,
        slot: index,
        generation,
        ready,
    } = start;
    let slot = lane.slots[index].clone();
    let report = |r: std::result::Result<(), String>| match (&ready, r) {
        (Some(tx), r) => {
            let _ = tx.send(r);
        }
        (None, Err(e)) => lane.warn(format!(
            "replacement worker {}-{index} failed to start: {e}",
            lane.kind.name()
        )),
        (None, Ok(())) => {}
    };
    let cores = &lane.config.cores;
    if !cores.is_empty() {
        core_affinity::set_for_current(cores[index % cores.len()]);
    }
    let state = match lane.kind {
        LaneKind::Sub => match SubInterpreter::new(lane.config.runtime) {
            Ok(s) => State::Sub(s),
            Err(e) => {
                report(Err(e));
                leave(&lane, &slot, generation);
                return;
            }
        },
        LaneKind::Main => State::Main(MainThreadState::new(lane.config.runtime)),
    };
    let prepared = {
        let guard = state.attach();
        let py = guard.py();
        py.prepend_sys_path(&lane.config.sys_path)
            .and_then(|()| py.add_site_dirs(lane.config.runtime.site_dirs()))
            .map(|()| py.interrupt_handle())
    };
    let handle = match prepared {
        Ok(h) => h,
        Err(e) => {
            report(Err(format!(
                "cannot set sys.path in a worker interpreter: {e}"
            )));
            end(&lane, state, Instant::now());
            leave(&lane, &slot, generation);
            return;
        }
    };
    slot.lock().target = Some(Arc::new(Target {
        handle: handle.clone(),
        busy: AtomicBool::new(false),
    }));
    report(Ok(()));
    let mut worker = Worker {
        state,
        cache: HashMap::new(),
        lane: lane.clone(),
        slot: slot.clone(),
        generation,
        handle,
    };
    let spin = lane.config.idle_spin;
    let mut idle_since: Option<Instant> = None;
    loop {
        let next = {
            let local = slot.local.lock().unwrap_or_else(|e| e.into_inner());
            local.next_with(|| {
                let (published, deadline) = lane.flush_due();
                if published {
                    return Idle::Published;
                }
                let now = Instant::now();
                let since = *idle_since.get_or_insert(now);
                if now.duration_since(since) < spin {
                    std::hint::spin_loop();
                    return Idle::Published;
                }
                Idle::Sleep(deadline.map(|d| d.saturating_duration_since(now)))
            })
        };
        idle_since = None;
        match next {
            Next::Job(job) => {
                if let Err(p) = catch_unwind(AssertUnwindSafe(|| worker.run_job(job))) {
                    worker.after_panic(&panic_message(&*p));
                }
                if !slot.is_current(generation) {
                    // Quarantined while the job ran: the slot is another
                    // thread's now.
                    worker.finish(Instant::now() + Duration::from_secs(1));
                    return;
                }
            }
            Next::Exit => break,
        }
    }
    let end_by = lane.end_by();
    worker.finish(end_by);
    leave(&lane, &slot, generation);
}

/// Stops counting this thread as its slot's, unless it no longer is.
fn leave(lane: &Lane, slot: &Slot, generation: u64) {
    if slot.is_current(generation) {
        lane.worker_left();
    }
}

/// Ends the worker's interpreter, abandoning it if threads its tasks
/// started are still alive at `deadline`.
fn end(lane: &Lane, state: State, deadline: Instant) {
    match state {
        State::Sub(s) => {
            let id = s.interpreter_id();
            if let Err(threads) = s.end_within(deadline) {
                lane.stats.abandoned.fetch_add(1, Ordering::Relaxed);
                lane.warn(format!(
                    "interpreter {id} abandoned: {threads} thread(s) started by tasks were still running at shutdown (ending it would abort the process)"
                ));
            }
        }
        State::Main(m) => drop(m),
    }
}

struct Worker {
    state: State,
    /// Each handler's function, resolved in this worker's interpreter.
    cache: HashMap<u64, Stash>,
    lane: Arc<Lane>,
    slot: Arc<Slot>,
    generation: u64,
    handle: Arc<InterruptHandle>,
}

/// Why a task taken from the slot is not run.
fn unrunnable(lane: &Lane, control: &dyn Control) -> Option<Error> {
    if lane.pool.is_cancelled() {
        return Some(Error::new(ErrorKind::Cancelled(
            "the engine shut down before the task ran".into(),
        )));
    }
    match control.deadline() {
        Some(d) if Instant::now() >= d.at => Some(expired(Some(d))),
        _ => None,
    }
}

impl Worker {
    fn run_job(&mut self, job: Job) {
        match job {
            Job::Batch(batch) => self.execute(batch),
            Job::Chunk { handler, chunk } => self.execute_chunk(&handler, chunk),
            Job::Resolve { handler, reply } => {
                let guard = self.state.attach();
                let py = guard.py();
                let _ = reply.send(lookup(&mut self.cache, py, &handler).map(drop));
            }
        }
    }

    /// The next task of the parked batch that may run, begun. Tasks
    /// stopped, cancelled or expired meanwhile are completed (or dropped,
    /// if already complete) on the way.
    fn next_task(&self, inner: &mut SlotInner) -> Option<(Box<dyn Task>, Arc<dyn Control>)> {
        loop {
            let task = inner.rest.as_mut()?.1.pop_front()?;
            let control = task.control();
            if let Some(err) = unrunnable(&self.lane, &*control) {
                control.stop_queued(err);
                continue;
            }
            if control.begin() {
                return Some((task, control));
            }
        }
    }

    fn execute(&mut self, batch: Batch) {
        let Batch {
            handler,
            tasks,
            prefetched,
        } = batch;
        // This batch leaves the prefetch window: commit the next one now,
        // before attaching (no GIL held), so it is ready ahead of time.
        if prefetched {
            if let Some(next) = handler.batcher.started(handler.clock()) {
                Lane::publish(&handler, next);
            }
        }
        self.slot.lock().rest = Some((handler.clone(), tasks.into()));
        let guard = self.state.attach();
        let py = guard.py();
        let func = match lookup(&mut self.cache, py, &handler) {
            Ok(f) => f,
            Err(e) => {
                let rest = self.slot.lock().rest.take();
                for t in rest.into_iter().flat_map(|(_, r)| r) {
                    t.fail(e.clone());
                }
                return;
            }
        };
        let ctx = RunCtx { slot: &self.slot };
        if handler.options.vectorized {
            self.run_vectorized(py, &func, &handler, &ctx);
            return;
        }
        loop {
            let task = {
                let mut inner = self.slot.lock();
                if inner.generation != self.generation {
                    return;
                }
                match self.next_task(&mut inner) {
                    Some((t, c)) => {
                        self.slot.start_run(&mut inner, vec![c]);
                        t
                    }
                    None => {
                        inner.rest = None;
                        return;
                    }
                }
            };
            task::execute(task, py, &func, &ctx);
            if !self.end_run(py) {
                return;
            }
        }
    }

    /// Ends the run in progress; `false` if this thread was quarantined.
    fn end_run(&self, py: Python<'_>) -> bool {
        let current = {
            let mut inner = self.slot.lock();
            inner.end_run();
            inner.generation == self.generation
        };
        // An interrupt that landed after the call returned (while its
        // callback ran Python) must not reach the next call.
        if self.slot.interrupt.swap(0, Ordering::SeqCst) != 0 {
            py.clear_pending_interrupt();
        }
        current
    }

    fn execute_chunk(&mut self, handler: &Arc<HandlerCore>, chunk: Box<dyn task::Chunk>) {
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
        let func = match lookup(&mut self.cache, py, handler) {
            Ok(f) => f,
            Err(e) => {
                chunk.fail(e);
                return;
            }
        };
        {
            let mut inner = self.slot.lock();
            self.slot.start_run(&mut inner, vec![control]);
        }
        chunk.run(py, &func, &RunCtx { slot: &self.slot });
        self.end_run(py);
    }

    fn run_vectorized<'py>(
        &self,
        py: Python<'py>,
        func: &Object<'py>,
        handler: &HandlerCore,
        ctx: &RunCtx<'_>,
    ) {
        let mut tasks = Vec::new();
        {
            let mut inner = self.slot.lock();
            let mut controls = Vec::new();
            while let Some((t, c)) = self.next_task(&mut inner) {
                tasks.push(t);
                controls.push(c);
            }
            inner.rest = None;
            self.slot.start_run(&mut inner, controls);
        }
        let mut inputs = Vec::with_capacity(tasks.len());
        let mut ok = Vec::with_capacity(tasks.len());
        for mut task in tasks {
            match task.args(py).and_then(|a| {
                if a.keywords.is_some() {
                    return Err(Error::config(format!(
                        "{} is vectorized: its tasks cannot take keyword arguments",
                        handler.target()
                    )));
                }
                let mut pos = a.positional;
                if pos.len() == 1 {
                    Ok(pos.pop().expect("one item"))
                } else {
                    Ok(py.tuple(pos)?)
                }
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

    /// After a panic escaped a job: the tasks it held fail, saying so.
    fn after_panic(&self, message: &str) {
        let (running, rest) = {
            let mut inner = self.slot.lock();
            let running = std::mem::take(&mut inner.running);
            inner.end_run();
            (running, inner.rest.take())
        };
        let err = Error::new(ErrorKind::WorkerLost(format!(
            "a panic escaped the worker's job ({message}); the worker goes on"
        )));
        for c in running {
            c.resolve(err.clone());
        }
        for t in rest.into_iter().flat_map(|(_, r)| r) {
            t.fail(err.clone());
        }
        self.lane.warn(format!(
            "worker {}-{}: a panic escaped a job ({message}); its tasks failed, the worker goes on",
            self.lane.kind.name(),
            self.slot.index
        ));
    }

    fn finish(self, deadline: Instant) {
        let Worker {
            state,
            cache,
            lane,
            slot,
            generation,
            handle,
        } = self;
        handle.retire();
        {
            let mut inner = slot.lock();
            if inner.generation == generation {
                inner.target = None;
            }
        }
        {
            let guard = state.attach();
            let py = guard.py();
            for (_, stash) in cache {
                stash.release(py);
            }
        }
        end(&lane, state, deadline);
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
    if let Some(reason) = ctx.interrupted(py) {
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

/// The handler's function in this interpreter: imported and looked up on
/// first use, then cached.
fn lookup<'py>(
    cache: &mut HashMap<u64, Stash>,
    py: Python<'py>,
    handler: &HandlerCore,
) -> Result<Object<'py>> {
    if let Some(s) = cache.get(&handler.id) {
        return Ok(s.bind(py));
    }
    let func = contain("module import", || {
        import_function(py, &handler.module, &handler.function)
    })?;
    cache.insert(handler.id, func.clone().stash());
    Ok(func)
}

fn import_function<'py>(py: Python<'py>, module: &str, function: &str) -> Result<Object<'py>> {
    let m = py
        .import(module)
        .map_err(|exception| import_error(module, exception))?;
    let mut obj = m;
    for part in function.split('.') {
        obj = obj.getattr(part).map_err(|_| {
            Error::new(ErrorKind::FunctionNotFound {
                module: module.to_string(),
                function: function.to_string(),
            })
        })?;
    }
    if !obj.is_callable() {
        return Err(Error::new(ErrorKind::NotCallable {
            module: module.to_string(),
            function: function.to_string(),
            type_name: obj.type_name(),
        }));
    }
    Ok(obj)
}

fn import_error(module: &str, exception: PyException) -> Error {
    let missing_itself = exception.type_name == "ModuleNotFoundError"
        && module
            .split('.')
            .scan(String::new(), |acc, part| {
                if !acc.is_empty() {
                    acc.push('.');
                }
                acc.push_str(part);
                Some(acc.clone())
            })
            .any(|prefix| exception.message == format!("No module named '{prefix}'"));
    if missing_itself {
        Error::new(ErrorKind::ModuleNotFound {
            module: module.to_string(),
            exception,
        })
    } else {
        Error::new(ErrorKind::Import {
            module: module.to_string(),
            exception,
        })
    }
}
