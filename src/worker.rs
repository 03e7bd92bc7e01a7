//! The worker loop: binds one scheduler worker to one interpreter.

use crate::error::{Error, ErrorKind, Result};
use crate::handler::HandlerCore;
use crate::lane::{Batch, Job, Lane, LaneKind};
use crate::sched::pool::{Idle, Local, Next};
use gilpool_ffi::{
    Kind, MainThreadState, Object, PyException, Python, Runtime, Stash, SubInterpreter, WorkerState,
};
use std::collections::HashMap;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything a worker thread starts with.
pub(crate) struct WorkerSetup {
    pub(crate) lane: Arc<Lane>,
    pub(crate) local: Local<Job>,
    pub(crate) core: Option<core_affinity::CoreId>,
    pub(crate) runtime: &'static Runtime,
    pub(crate) sys_path: Vec<String>,
    pub(crate) idle_spin: Duration,
    pub(crate) ready: Sender<std::result::Result<(), String>>,
}

/// The body of a worker thread.
pub(crate) fn run(setup: WorkerSetup) {
    if let Some(core) = setup.core {
        core_affinity::set_for_current(core);
    }
    let state: Box<dyn WorkerState> = match setup.lane.kind {
        LaneKind::Sub => match SubInterpreter::new(setup.runtime) {
            Ok(s) => Box::new(s),
            Err(e) => {
                let _ = setup.ready.send(Err(e));
                return;
            }
        },
        LaneKind::Main => Box::new(MainThreadState::new(setup.runtime)),
    };
    let prepared = gilpool_ffi::attach(&*state, |py| py.prepend_sys_path(&setup.sys_path));
    if let Err(e) = prepared {
        let _ = setup.ready.send(Err(format!(
            "cannot set sys.path in a worker interpreter: {e}"
        )));
        return;
    }
    let _ = setup.ready.send(Ok(()));
    let mut worker = Worker {
        state,
        cache: HashMap::new(),
    };
    let lane = setup.lane;
    let spin = setup.idle_spin;
    let mut idle_since: Option<Instant> = None;
    loop {
        let next = setup.local.next_with(|| {
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
        });
        idle_since = None;
        match next {
            Next::Job(Job::Batch(batch)) => worker.execute(batch),
            Next::Job(Job::Resolve { handler, reply }) => {
                let _ = reply.send(worker.resolve_only(&handler));
            }
            Next::Exit => break,
        }
    }
    worker.finish();
}

struct Worker {
    state: Box<dyn WorkerState>,
    /// Each handler's function, resolved in this worker's interpreter.
    cache: HashMap<u64, Stash>,
}

impl Worker {
    fn resolve_only(&mut self, handler: &Arc<HandlerCore>) -> Result<()> {
        let guard = self.state.attach();
        let py = guard.py();
        lookup(&mut self.cache, py, handler).map(drop)
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
        let guard = self.state.attach();
        let py = guard.py();
        let func = match lookup(&mut self.cache, py, &handler) {
            Ok(f) => f,
            Err(e) => {
                for t in tasks {
                    t.fail(e.clone());
                }
                return;
            }
        };
        if handler.options.vectorized {
            run_vectorized(py, &func, &handler, tasks);
        } else {
            for task in tasks {
                task.execute(py, &func);
            }
        }
    }

    fn finish(self) {
        let Worker { state, cache } = self;
        gilpool_ffi::attach(&*state, |py| {
            for (_, stash) in cache {
                stash.release(py);
            }
        });
        drop(state);
    }
}

fn run_vectorized<'py>(
    py: Python<'py>,
    func: &Object<'py>,
    handler: &HandlerCore,
    mut tasks: Vec<Box<dyn crate::task::Task>>,
) {
    let n = tasks.len();
    let mut inputs = Vec::with_capacity(n);
    let mut ok = Vec::with_capacity(n);
    for mut task in tasks.drain(..) {
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
    if ok.is_empty() {
        return;
    }
    let list = match py.list(inputs) {
        Ok(l) => l,
        Err(e) => {
            let e = Error::from(e);
            ok.into_iter().for_each(|t| t.fail(e.clone()));
            return;
        }
    };
    let outcome = func.call1(&list).map_err(Error::from).and_then(|out| {
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
    let func = import_function(py, &handler.module, &handler.function)?;
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
