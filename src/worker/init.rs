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

use super::run_initializer;
use crate::engine::Initializer;
use crate::slot::Target;
use crate::watchdog::REPEAT;
use gilpool_ffi::{InterruptHandle, Python};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
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
    /// Past the timeout: being interrupted.
    Interrupted,
    Done,
    GivenUp,
}

struct Watched {
    state: Mutex<(Phase, String)>,
    changed: Condvar,
}

impl Watched {
    fn lock(&self) -> MutexGuard<'_, (Phase, String)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs `inits` in order in the interpreter `py` is attached to, watched
/// as the module docs say. `handle` interrupts this thread there (the
/// caller retires it, detached, before ending the interpreter).
pub(crate) fn run_watched(
    py: Python<'_>,
    inits: &[Initializer],
    handle: &Arc<InterruptHandle>,
    limits: Limits,
    give_up: impl FnOnce(String) + Send + 'static,
) -> Result<(), InitFailure> {
    if inits.is_empty() {
        return Ok(());
    }
    let watched = Arc::new(Watched {
        state: Mutex::new((Phase::Running, String::new())),
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
    let mut outcome = Ok(());
    for init in inits {
        watched.lock().1 = format!("{}:{}", init.module, init.function);
        outcome = run_initializer(py, init);
        if outcome.is_err() {
            break;
        }
    }
    // Attached, so no interrupt attempt is between its check and its
    // effect: after this, none can hit this thread for these initializers.
    let (phase, current) = {
        let mut st = watched.lock();
        let phase = st.0;
        if phase != Phase::GivenUp {
            st.0 = Phase::Done;
        }
        (phase, std::mem::take(&mut st.1))
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
                "initializer {current} ran past the start-up timeout of {:?} and was interrupted ({after})",
                limits.timeout
            )))
        }
        _ => outcome.map_err(InitFailure::Failed),
    }
}

/// The watcher's body: waits out the timeout, then interrupts until the
/// initializers return or the grace runs out.
fn watch(
    watched: &Arc<Watched>,
    target: &Arc<Target>,
    limits: Limits,
    give_up: impl FnOnce(String),
) {
    let due = Instant::now() + limits.timeout;
    let mut st = watched.lock();
    loop {
        if st.0 != Phase::Running {
            return;
        }
        let now = Instant::now();
        if now >= due {
            break;
        }
        st = watched
            .changed
            .wait_timeout(st, due - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    st.0 = Phase::Interrupted;
    let give_up_at = Instant::now() + limits.grace;
    loop {
        drop(st);
        // The check runs holding the target's GIL, and the initializers'
        // thread marks them done while attached: an interrupt lands only
        // while they run.
        let check = {
            let watched = watched.clone();
            move || watched.lock().0 == Phase::Interrupted
        };
        target.attempt(check);
        st = watched.lock();
        let now = Instant::now();
        if st.0 != Phase::Interrupted {
            return;
        }
        if now >= give_up_at {
            st.0 = Phase::GivenUp;
            let what = std::mem::take(&mut st.1);
            drop(st);
            give_up(format!(
                "initializer {what} ran past the start-up timeout of {:?} and did not stop when interrupted (blocked in C code?); its thread and interpreter were abandoned",
                limits.timeout
            ));
            return;
        }
        st = watched
            .changed
            .wait_timeout(st, REPEAT.min(give_up_at - now))
            .unwrap_or_else(|e| e.into_inner())
            .0;
        if st.0 != Phase::Interrupted {
            return;
        }
    }
}
