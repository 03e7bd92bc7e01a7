//! Running initializers under the start-up timeout
//! ([`EngineBuilder::init_timeout`](crate::EngineBuilder::init_timeout)).
//!
//! An interpreter's initializers run on the thread that will serve it,
//! attached to it. A watcher thread waits beside them. Past the timeout it
//! interrupts them (a `KeyboardInterrupt` in that thread, as for a task
//! past its deadline), again every [`REPEAT`]; they then fail with an error
//! naming the initializer and the timeout. If they still run `grace` after
//! the first interrupt (they swallow it, or are blocked in C), the watcher
//! gives up on the thread: `give_up` reports the failure from the watcher,
//! so nobody waits on the thread, and the thread, whenever it returns,
//! finds itself abandoned and leaves without reporting again.
//!
//! A lane's running initializers are listed in its [`InitWatches`], so a
//! shutdown interrupts them at once instead of waiting for them.

use super::run_initializer;
use crate::engine::Initializer;
use crate::slot::Target;
use crate::watchdog::REPEAT;
use gilpool_ffi::{InterruptHandle, Python};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// The start-up timeout and the grace after its first interrupt.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) timeout: Duration,
    pub(crate) grace: Duration,
}

/// Why initializers did not complete.
#[derive(Debug)]
pub(crate) enum InitFailure {
    /// One raised, or was interrupted past the timeout: the message.
    Failed(String),
    /// The watcher gave up on this thread and reported the failure.
    Abandoned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Past the timeout, or stopped by a shutdown: being interrupted.
    Interrupted,
    Done,
    GivenUp,
}

struct WatchState {
    phase: Phase,
    /// The initializer running (`module:function`).
    current: String,
    /// The lane is shutting down: interrupt now.
    shutdown: bool,
}

/// One interpreter's initializers as their watcher sees them.
pub(crate) struct Watched {
    state: Mutex<WatchState>,
    changed: Condvar,
}

impl Watched {
    fn lock(&self) -> MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stop(&self) {
        self.lock().shutdown = true;
        self.changed.notify_all();
    }
}

/// The initializers running in one lane's interpreters.
#[derive(Default)]
pub(crate) struct InitWatches {
    inner: Mutex<(bool, Vec<Weak<Watched>>)>,
}

impl InitWatches {
    /// The lane is shutting down: interrupts every initializer running
    /// and any that starts later.
    pub(crate) fn stop(&self) {
        let running = {
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            g.0 = true;
            std::mem::take(&mut g.1)
        };
        for w in running.iter().filter_map(Weak::upgrade) {
            w.stop();
        }
    }

    fn register(&self, watched: &Arc<Watched>) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.0 {
            drop(g);
            watched.stop();
            return;
        }
        g.1.retain(|w| w.strong_count() > 0);
        g.1.push(Arc::downgrade(watched));
    }
}

/// Runs `inits` in order in the interpreter `py` is attached to, watched
/// as the module docs say, and listed in `watches` (when given). `handle`
/// interrupts this thread there (the caller retires it, detached, before
/// ending the interpreter).
pub(crate) fn run_watched(
    py: Python<'_>,
    inits: &[Initializer],
    handle: &Arc<InterruptHandle>,
    limits: Limits,
    watches: Option<&InitWatches>,
    give_up: impl FnOnce(String) + Send + 'static,
) -> Result<(), InitFailure> {
    if inits.is_empty() {
        return Ok(());
    }
    let watched = Arc::new(Watched {
        state: Mutex::new(WatchState {
            phase: Phase::Running,
            current: String::new(),
            shutdown: false,
        }),
        changed: Condvar::new(),
    });
    let target = Arc::new(Target::new(handle.clone()));
    let spawned = std::thread::Builder::new()
        .name("gilpool-init-watch".into())
        .spawn({
            let watched = watched.clone();
            move || watch(&watched, &target, limits, give_up)
        });
    if let Err(e) = spawned {
        return Err(InitFailure::Failed(format!(
            "cannot spawn the thread that watches the initializers: {e}"
        )));
    }
    if let Some(w) = watches {
        w.register(&watched);
    }
    let mut outcome = Ok(());
    for init in inits {
        watched.lock().current = format!("{}:{}", init.module, init.function);
        outcome = run_initializer(py, init);
        if outcome.is_err() {
            break;
        }
    }
    // Attached, so no interrupt attempt is between its check and its
    // effect: after this, none can hit this thread for these initializers.
    let (phase, current, shutdown) = {
        let mut st = watched.lock();
        let phase = st.phase;
        if phase != Phase::GivenUp {
            st.phase = Phase::Done;
        }
        (phase, std::mem::take(&mut st.current), st.shutdown)
    };
    watched.changed.notify_all();
    match phase {
        Phase::GivenUp => Err(InitFailure::Abandoned),
        Phase::Interrupted => {
            // One scheduled but not fired yet must not hit later code.
            py.clear_pending_interrupt();
            let after = outcome.err().map_or_else(
                || "it returned after the interrupt".to_string(),
                |e| {
                    let first = e.lines().next().unwrap_or_default();
                    let cause = first.split_once(" failed: ").map_or(first, |(_, c)| c);
                    cause.to_string()
                },
            );
            Err(InitFailure::Failed(format!(
                "initializer {current} {} and was interrupted ({after})",
                overran(shutdown, limits)
            )))
        }
        _ => outcome.map_err(InitFailure::Failed),
    }
}

/// Why initializers were interrupted.
fn overran(shutdown: bool, limits: Limits) -> String {
    if shutdown {
        "was running when the engine shut down".into()
    } else {
        format!("ran past the start-up timeout of {:?}", limits.timeout)
    }
}

/// The watcher's body: waits out the timeout (or a shutdown), then
/// interrupts until the initializers return or the grace runs out.
fn watch(
    watched: &Arc<Watched>,
    target: &Arc<Target>,
    limits: Limits,
    give_up: impl FnOnce(String),
) {
    let due = Instant::now() + limits.timeout;
    let mut st = watched.lock();
    loop {
        if st.phase != Phase::Running {
            return;
        }
        let now = Instant::now();
        if now >= due || st.shutdown {
            break;
        }
        st = watched
            .changed
            .wait_timeout(st, due - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    st.phase = Phase::Interrupted;
    let give_up_at = Instant::now() + limits.grace;
    loop {
        drop(st);
        // The check runs holding the target's GIL, and the initializers'
        // thread marks them done while attached: an interrupt lands only
        // while they run.
        let check = {
            let watched = watched.clone();
            move || watched.lock().phase == Phase::Interrupted
        };
        target.attempt(check);
        st = watched.lock();
        let now = Instant::now();
        if st.phase != Phase::Interrupted {
            return;
        }
        if now >= give_up_at {
            st.phase = Phase::GivenUp;
            let what = std::mem::take(&mut st.current);
            let why = overran(st.shutdown, limits);
            drop(st);
            give_up(format!(
                "initializer {what} {why} and did not stop when interrupted (blocked in C code?); its thread and interpreter were abandoned"
            ));
            return;
        }
        st = watched
            .changed
            .wait_timeout(st, REPEAT.min(give_up_at - now))
            .unwrap_or_else(|e| e.into_inner())
            .0;
        if st.phase != Phase::Interrupted {
            return;
        }
    }
}
