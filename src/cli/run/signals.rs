//! SIGINT and SIGTERM during `gilpool run`, and the counts its summary
//! line reports.
//!
//! [`Stopper::install`] takes both signals over before Python starts (so
//! the embedded runtime never installs a handler of its own for SIGINT)
//! and serves them on a thread of its own. The first signal:
//!
//! 1. is recorded ([`Stopper::signalled`]): the reader stops reading, the
//!    run's loop stops submitting;
//! 2. wakes the run's loop ([`Event::Wake`]) if it waits for input;
//! 3. shuts the engine down at once on another thread
//!    ([`Engine::shutdown_now`]): queued tasks are cancelled, running ones
//!    interrupted, so every future the loop waits for resolves, and it
//!    writes the finished lines up to the first unfinished one.
//!
//! A signal once the output is complete (the run is only waiting for
//! threads its tasks left behind), or a second signal at any time, needs no
//! such care: the summary is printed and the process exits at once with
//! status 128 + the signal's number. The summary is printed once in all, by
//! whichever comes first: this thread or the run's end
//! ([`Stopper::summarize`]), so two threads never race to exit.

use super::input::Event;
use gilpool::Engine;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// What the run's loop, its reader and the signal thread share.
#[derive(Debug)]
pub(super) struct Stopper {
    /// When the run began (for the summary's time).
    start: Instant,
    /// The first signal's number; 0 while none came.
    signal: AtomicI32,
    /// The engine while the run uses it; whoever shuts it down takes it.
    engine: Mutex<Option<Engine>>,
    /// Set once every line that will be written is written and flushed.
    output_done: AtomicBool,
    /// Whether the summary was printed (held while printing it).
    summarized: Mutex<bool>,
    /// The lines written so far.
    tally: Tally,
}

/// The lines written, by outcome.
#[derive(Debug, Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
}

/// How a written line ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// `{"ok": ...}`.
    Ok,
    /// An error record of any other type.
    Failed,
    /// An error record of type `Timeout`.
    TimedOut,
}

/// The name of a signal this module handles.
pub(super) fn signal_name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Stopper {
    /// Takes SIGINT and SIGTERM over and starts the signal thread; `wake`
    /// reaches the run's loop.
    pub(super) fn install(wake: SyncSender<Event>) -> std::io::Result<Arc<Stopper>> {
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        let stopper = Arc::new(Stopper {
            start: Instant::now(),
            signal: AtomicI32::new(0),
            engine: Mutex::new(None),
            output_done: AtomicBool::new(false),
            summarized: Mutex::new(false),
            tally: Tally::default(),
        });
        let this = stopper.clone();
        std::thread::Builder::new()
            .name("gilpool-run-signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    this.on_signal(signal, &wake);
                }
            })?;
        Ok(stopper)
    }

    /// The first signal that came, if one did.
    pub(super) fn signal(&self) -> Option<i32> {
        match self.signal.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }

    /// Whether a signal came: stop reading, submitting and waiting.
    pub(super) fn signalled(&self) -> bool {
        self.signal().is_some()
    }

    /// Hands the engine over for the rest of the run: a signal shuts it
    /// down from now on. The caller checks [`signalled`](Self::signalled)
    /// afterwards: a signal that came before found no engine to stop.
    pub(super) fn hold(&self, engine: Engine) {
        *lock(&self.engine) = Some(engine);
    }

    /// Takes the engine back to shut it down; `None` when a signal's
    /// shutdown has it (this waits until that shutdown is over).
    pub(super) fn take_engine(&self) -> Option<Engine> {
        lock(&self.engine).take()
    }

    /// Every line that will be written is written: a signal from now on
    /// exits at once.
    pub(super) fn output_done(&self) {
        self.output_done.store(true, Ordering::SeqCst);
    }

    /// Counts a written line.
    pub(super) fn record(&self, outcome: Outcome) {
        let t = &self.tally;
        match outcome {
            Outcome::Ok => &t.ok,
            Outcome::Failed => &t.failed,
            Outcome::TimedOut => {
                t.failed.fetch_add(1, Ordering::Relaxed);
                &t.timed_out
            }
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// Lines written so far.
    pub(super) fn written(&self) -> u64 {
        self.tally.ok.load(Ordering::Relaxed) + self.failed()
    }

    /// Failed lines written so far (timeouts included).
    pub(super) fn failed(&self) -> u64 {
        self.tally.failed.load(Ordering::Relaxed)
    }

    /// `N ok, M failed (K timed out) in T s`.
    pub(super) fn summary(&self) -> String {
        let t = &self.tally;
        format!(
            "{} ok, {} failed ({} timed out) in {:.1} s",
            t.ok.load(Ordering::Relaxed),
            t.failed.load(Ordering::Relaxed),
            t.timed_out.load(Ordering::Relaxed),
            self.start.elapsed().as_secs_f64()
        )
    }

    /// Prints `notes` and then the summary on stderr, unless the signal
    /// thread printed it already (and is ending the process). Returns
    /// whether it printed.
    pub(super) fn summarize(&self, notes: &[String]) -> bool {
        let mut printed = lock(&self.summarized);
        if *printed {
            return false;
        }
        for note in notes {
            eprintln!("{note}");
        }
        eprintln!("{}", self.summary());
        *printed = true;
        true
    }

    /// The signal thread's reaction to `signal`.
    fn on_signal(self: &Arc<Self>, signal: i32, wake: &SyncSender<Event>) {
        let first = self
            .signal
            .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if !first || self.output_done.load(Ordering::SeqCst) {
            let note = if first {
                None
            } else {
                Some(format!(
                    "gilpool run: {} again: exiting at once",
                    signal_name(signal)
                ))
            };
            self.exit_now(signal, note);
            return;
        }
        // The loop may wait for input: let it look at the flag. A full
        // channel means it is not waiting there.
        let _ = wake.try_send(Event::Wake);
        // Shut down on a thread of its own, so that a second signal is
        // served while this one's shutdown runs.
        let this = self.clone();
        let spawned = std::thread::Builder::new()
            .name("gilpool-run-stop".into())
            .spawn(move || this.stop_engine());
        if spawned.is_err() {
            self.stop_engine();
        }
    }

    /// Cancels and interrupts everything, holding the engine's slot so
    /// that [`take_engine`](Self::take_engine) waits for it.
    fn stop_engine(&self) {
        let mut slot = lock(&self.engine);
        if let Some(engine) = slot.take() {
            engine.shutdown_now();
        }
    }

    /// Prints the summary (unless the run printed it: then it is exiting
    /// on its own) and exits with 128 + `signal`, holding the summary's
    /// lock so that the run cannot exit concurrently.
    fn exit_now(&self, signal: i32, note: Option<String>) {
        let mut printed = lock(&self.summarized);
        if *printed {
            return;
        }
        if let Some(note) = note {
            eprintln!("{note}");
        }
        eprintln!("{}", self.summary());
        *printed = true;
        std::process::exit(128 + signal);
    }
}
