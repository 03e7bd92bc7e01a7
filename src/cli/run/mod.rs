//! `gilpool run TARGET`: a Python function over JSON Lines, in parallel, with
//! the results written in input order.
//!
//! # Data flow
//!
//! A reader thread ([`input`]) reads the input a line at a time and parses
//! each line into the call's arguments. The command's main thread
//! ([`stream`]) submits the tasks and keeps their futures in a bounded
//! window (a `VecDeque` in input order); when the window is full the oldest
//! future is waited for and its line written, so memory is bounded by the
//! window whatever the input's length. Workers turn the arguments into
//! Python objects, call the function, and — still attached to the
//! interpreter that produced the result — encode the result as the complete
//! output line ([`output`]), so the expensive part of the output runs in
//! parallel and no intermediate `Value` tree is built. A signal thread
//! ([`signals`]) serves SIGINT and SIGTERM and keeps the counts of the
//! summary line.
//!
//! # Policies
//!
//! - **Invalid input lines.** Every line must be a task: a JSON array of
//!   positional arguments, or an object with only the keys `"args"` (array)
//!   and `"kwargs"` (object). The first line that is not — invalid UTF-8,
//!   invalid JSON, another JSON type, or blank — stops the run: the tasks
//!   of the lines before it finish and their outputs are written, nothing
//!   is run or written for that line or any after it, and `gilpool run`
//!   exits with status 2, naming the line on stderr. Only a final newline
//!   at the end of the input does not count as a (blank) line.
//! - **Numbers.** Input integers keep every digit (beyond `i64` they become
//!   Python ints of any size); `NaN`, `Infinity` and `-Infinity` are
//!   accepted as Python's `json.loads` accepts them. Output integers are
//!   written as plain digits, whatever their size, and floats as Python's
//!   `repr` writes them — the text `json.dumps` produces. A parser that reads
//!   numbers into `f64` will round integers beyond 2^53 on reading; the
//!   output holds every digit.
//! - **Results JSON cannot represent** fail their task with a `TypeError`
//!   record naming the type: `bytes`, `set`, any other object, a float that
//!   is `nan` or infinite (standard JSON has no token for them), a dict key
//!   that is not `str`, `int`, `float`, `bool` or `None`, or nesting deeper
//!   than [`MAX_DEPTH`] (a circular structure). Dict keys that are `int`,
//!   `float`, `bool` or `None` become strings, as `json.dumps` makes them.
//! - **Output text** is one JSON document per line, UTF-8 (non-ASCII text
//!   is not escaped), with `json.dumps`'s default separators. A line is
//!   flushed once it and every line before it are done and `gilpool run`
//!   would otherwise wait (for input, or for a task): a slow or interactive
//!   input sees each result as soon as it can be written.
//! - **Error records** carry `type(e).__name__`, `str(e)` and the formatted
//!   traceback of the exception the task raised; `traceback` is `null` for
//!   results JSON cannot represent, for timeouts (type `Timeout`) and for
//!   gilpool's own errors (type `GilpoolError`).
//! - **Timeouts.** `--timeout SECS` (a positive number; fractions allowed)
//!   gives every task a deadline. A task still running at its deadline is
//!   interrupted in its own interpreter (a `KeyboardInterrupt` in its
//!   thread); one blocked in C, which an interrupt cannot reach, is given
//!   up after a grace period of 1 s and its worker replaced by a fresh one.
//!   Either way its line is `{"error": {"type": "Timeout", "message": ...,
//!   "traceback": null}}`, it counts as failed (exit status 1), and the run
//!   goes on. A deadline counts from when the task is handed to the pool,
//!   which with `--timeout` happens only when a worker has room for it, so a
//!   task is not charged for waiting behind others; with `--batch-size N`
//!   it may wait for the tasks before it in its batch (the default batch
//!   size is 1 with `--timeout`).
//! - **Signals.** SIGINT or SIGTERM stops the run: no more input is read,
//!   queued tasks are cancelled and running ones interrupted (those that do
//!   not stop are abandoned after the grace period), the finished lines up
//!   to the first unfinished one are written in input order, and
//!   `gilpool run` exits with status 130 (SIGINT) or 143 (SIGTERM), naming
//!   the signal on stderr. It does so even while it waits for input. A
//!   second signal, or one that comes once the output is complete, exits at
//!   once (lines not yet flushed are then lost). The embedded Python never
//!   installs a handler of its own for SIGINT.
//! - **Shutdown timeout.** At the end, `gilpool run` waits at most
//!   `--shutdown-timeout SECS` (default 10 s, the library's
//!   [`DEFAULT_SHUTDOWN_TIMEOUT`](gilpool::DEFAULT_SHUTDOWN_TIMEOUT)) for
//!   threads that tasks started and left running, then leaves them behind:
//!   an interpreter with such threads is abandoned rather than ended, and
//!   Python is not finalised (a warning says so) — it never hangs after
//!   writing its output. The time counts against the whole end, finalising
//!   Python included. After a signal it does not wait.
//! - **Summary.** The last line on stderr is `N ok, M failed (K timed out)
//!   in T s`: the lines written by outcome (timeouts are among the failed)
//!   and the wall time of the whole command. It is printed whenever the run
//!   reached its input — also after an invalid line, a closed output or a
//!   signal — and not for usage and setup errors (a bad option or TARGET,
//!   a missing file, a module that does not load), which print only the
//!   error.
//! - **Against `python/reference_run.py`** (a plain Python loop): the same
//!   records for every valid task, except that a blank or invalid line stops
//!   the run (exit 2) where the reference skips a blank line or writes an
//!   `InvalidTask` record; a `nan`/infinite result is an error where it
//!   writes the non-standard `NaN`; a `\ud800`-style lone surrogate escape,
//!   which Python accepts, is an invalid line; and non-ASCII text is written
//!   as UTF-8 rather than `\uXXXX` escapes. Compare parsed values.
//! - **A closed output** (`gilpool run … | head`) stops the run quietly:
//!   queued tasks are dropped, and the exit status counts the lines written.
//! - **A function that prints** to `sys.stdout` writes to the same file
//!   descriptor as the results when they go to stdout, and corrupts the
//!   stream; use `--output FILE` (or print to `sys.stderr`) for such
//!   functions.

mod input;
mod json;
mod output;
mod signals;
mod stream;

use super::progress;
use gilpool::{Engine, Mode};
use input::{open_input, spawn_reader, Event};
use signals::{signal_name, Stopper};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stream::{Stop, Stream};

/// How deep arrays and objects may nest, in input lines and in results.
pub(crate) const MAX_DEPTH: usize = 512;

/// Chunks of parsed lines the reader may have ready ahead of the loop.
const READ_AHEAD: usize = 16;

/// Options of `gilpool run`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub(crate) struct RunArgs {
    /// The function: `path/to/file.py:function` or `package.module:function`
    /// (the function part may be dotted, e.g. `module:Class.method`).
    target: String,
    /// JSON Lines file of tasks, one per line: `[arg, ...]` or
    /// `{"args": [...], "kwargs": {...}}`; `-` is stdin.
    #[arg(short, long, value_name = "FILE", default_value = "-")]
    input: String,
    /// Write the results here instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Number of workers (default: the number of cores).
    #[arg(short, long, value_name = "N")]
    workers: Option<usize>,
    /// Where Python runs.
    #[arg(long, value_enum, default_value_t = ModeArg::Auto)]
    mode: ModeArg,
    /// Tasks per worker attachment (default 16; 1 with --timeout). Larger
    /// batches cut the per-task cost of tiny functions; 1 balances long,
    /// uneven tasks best.
    #[arg(short, long, value_name = "N")]
    batch_size: Option<usize>,
    /// Do not pin worker threads to cores.
    #[arg(long)]
    no_pin: bool,
    /// Put DIR on the interpreters' `sys.path` (repeatable, first wins).
    #[arg(long, value_name = "DIR")]
    sys_path: Vec<PathBuf>,
    /// Run in this virtual environment (default: $VIRTUAL_ENV when set,
    /// unless GILPOOL_IGNORE_VIRTUAL_ENV=1).
    #[arg(long, value_name = "DIR")]
    venv: Option<PathBuf>,
    /// Fail a task that runs longer than SECS (a positive number, e.g. 2.5)
    /// with a "Timeout" error record; the run goes on.
    #[arg(long, value_name = "SECS", value_parser = parse_timeout, allow_negative_numbers = true)]
    timeout: Option<Duration>,
    /// At the end, wait at most SECS for threads that tasks left running,
    /// then leave them behind.
    #[arg(
        long,
        value_name = "SECS",
        value_parser = parse_shutdown_timeout,
        allow_negative_numbers = true,
        default_value = DEFAULT_SHUTDOWN_SECS
    )]
    shutdown_timeout: Duration,
    /// Force the progress bar on stderr even when it is not a terminal.
    #[arg(long)]
    progress: bool,
    /// At the end, print a table of per-worker metrics to stderr (tasks,
    /// batches, steals, busy time, timeouts, interrupts, recycles,
    /// quarantines) and the handler's latencies.
    #[arg(long)]
    stats: bool,
}

/// Text after the options in `gilpool run --help`.
const AFTER_HELP: &str = "\
Output: one JSON line per input line, in input order: {\"ok\": RESULT}, or
{\"error\": {\"type\": ..., \"message\": ..., \"traceback\": ...}} when the task raised,
ran past --timeout (type \"Timeout\", traceback null) or its result is not JSON
(type \"TypeError\", traceback null). Lines are flushed as soon as they and the
lines before them are done.

sys.path: a file TARGET puts the file's folder first; a module TARGET puts the
current directory first; the --sys-path folders follow.

Timeouts: a task still running after --timeout SECS is interrupted; one blocked
in C code is given up after 1 s more and its worker replaced. Its line is a
Timeout error record and the run goes on. The time counts from when a worker has
room for the task, not from when it was read.

Signals: SIGINT (Ctrl-C) or SIGTERM stops the run: no more input is read, queued
tasks are cancelled and running ones interrupted, the finished lines up to the
first unfinished one are written, and the exit status is 130 (SIGINT) or 143
(SIGTERM). A second signal exits at once.

At the end, gilpool run waits at most --shutdown-timeout SECS (default 10) for
threads that tasks left running, then leaves them behind: it never hangs after
writing its output.

The last line on stderr summarises the lines written:
  N ok, M failed (K timed out) in T s

Exit status: 0 when every task succeeded, 1 when any task failed or timed out, 2
for usage and setup errors: a bad option or TARGET, a missing file, a module or
function that cannot be loaded, or an invalid input line (named on stderr; the
lines before it are run and written, nothing after); 130 or 143 after a signal.
When the reader of the output goes away (gilpool run ... | head), the run stops
quietly and the status counts the lines written.

A function that prints to stdout corrupts the results when they go to stdout:
use --output FILE for such functions.";

/// Default `--batch-size` (without `--timeout`). Batching amortises the
/// per-attachment cost of tiny functions, while a batch of long tasks stays
/// short enough not to unbalance the workers at the end of a run. Measured
/// on the 2-core dev VM (best of 3): 1,000,000 `inc` lines took 2.35 s at 1,
/// 1.75 s at 16, 1.28 s at 64; 40 `spin(50)` tasks (ideal 1.0 s) took
/// 1.06 s at 1, 1.12 s at 16, 1.68 s at 64.
pub(crate) const DEFAULT_BATCH_SIZE: usize = 16;

/// Default `--shutdown-timeout`, in seconds: the library's
/// [`DEFAULT_SHUTDOWN_TIMEOUT`](gilpool::DEFAULT_SHUTDOWN_TIMEOUT).
const DEFAULT_SHUTDOWN_SECS: &str = "10";

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ModeArg {
    /// Own-GIL subinterpreters where this build supports them, else single-gil.
    Auto,
    /// One own-GIL subinterpreter per worker (CPython >= 3.12).
    #[value(alias = "sub")]
    Subinterpreters,
    /// All workers share the main interpreter's GIL.
    SingleGil,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Auto => Mode::Auto,
            ModeArg::Subinterpreters => Mode::SubInterpreters,
            ModeArg::SingleGil => Mode::SingleGil,
        }
    }
}

/// A number of seconds: finite and not negative (`positive` refuses zero).
fn parse_secs(text: &str, positive: bool) -> Result<Duration, String> {
    let want = if positive {
        "a positive number of seconds"
    } else {
        "a number of seconds, 0 or more"
    };
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("expected {want}"))?;
    if !secs.is_finite() || secs < 0.0 || (positive && secs <= 0.0) {
        return Err(format!("expected {want}"));
    }
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if !(positive && d.is_zero()) => Ok(d),
        _ => Err(format!("expected {want}")),
    }
}

/// `--timeout`: positive, finite.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    parse_secs(text, true)
}

/// `--shutdown-timeout`: finite, zero allowed (do not wait).
fn parse_shutdown_timeout(text: &str) -> Result<Duration, String> {
    parse_secs(text, false)
}

/// Entry point: runs the command, finalises Python, prints the summary and
/// turns the outcome into the exit status.
pub(crate) fn main(args: RunArgs) -> ExitCode {
    let (tx, rx) = std::sync::mpsc::sync_channel(READ_AHEAD);
    // Before Python starts: its runtime then leaves SIGINT to us.
    let stopper = match Stopper::install(tx.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("gilpool run: cannot take over SIGINT and SIGTERM: {e}");
            return ExitCode::from(2);
        }
    };
    let ended = run(args, &stopper, tx, rx);
    // Every engine is shut down by now: flush Python's buffers and run its
    // exit handlers, within what is left of the shutdown timeout. A no-op
    // when Python was never started; refused while threads that tasks left
    // behind (or abandoned interpreters) are alive.
    let wait = match (&ended, stopper.signalled()) {
        (Ok(e), false) => e.deadline.saturating_duration_since(Instant::now()),
        _ => Duration::ZERO,
    };
    let mut notes = Vec::new();
    if let Err(e) = gilpool::finalize_timeout(wait) {
        notes.push(format!(
            "gilpool run: warning: Python was not finalised, so its exit handlers did not run: {e}"
        ));
    }
    if let Some(signal) = stopper.signal() {
        if let Ok(Ended { error: Some(e), .. }) | Err(e) = &ended {
            notes.insert(0, format!("gilpool run: {e}"));
        }
        let written = stopper.written();
        notes.push(format!(
            "gilpool run: stopped by {} after {written} line{}",
            signal_name(signal),
            if written == 1 { "" } else { "s" }
        ));
        stopper.summarize(&notes);
        return ExitCode::from(u8::try_from(128 + signal).unwrap_or(1));
    }
    match ended {
        Err(message) => {
            for note in &notes {
                eprintln!("{note}");
            }
            eprintln!("gilpool run: {message}");
            ExitCode::from(2)
        }
        Ok(Ended { error: Some(e), .. }) => {
            notes.insert(0, format!("gilpool run: {e}"));
            stopper.summarize(&notes);
            ExitCode::from(2)
        }
        Ok(Ended { error: None, .. }) => {
            stopper.summarize(&notes);
            if stopper.failed() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// How a run that reached its input ended.
#[derive(Debug)]
struct Ended {
    /// Why it stopped before the end of its input with an error (exit
    /// status 2): an invalid line, a failed read or write.
    error: Option<String>,
    /// The end of the time allowed for threads tasks left behind.
    deadline: Instant,
}

/// A parsed TARGET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// Module name to import.
    pub(crate) module: String,
    /// Function (possibly dotted) inside it.
    pub(crate) function: String,
    /// The folder to put first on `sys.path`: the file's folder for a file
    /// TARGET, the current directory for a module TARGET.
    pub(crate) dir: PathBuf,
}

/// Parses `path/to/file.py:function` or `package.module:function`, split at
/// the last `:`. A module part that ends in `.py` or holds a path separator
/// names a file, which must exist.
pub(crate) fn parse_target(target: &str) -> Result<Target, String> {
    let usage = || {
        format!("TARGET must be 'path/to/file.py:function' or 'package.module:function', got {target:?}")
    };
    let (module_part, function) = target.rsplit_once(':').ok_or_else(usage)?;
    if module_part.is_empty() || function.is_empty() || function.split('.').any(str::is_empty) {
        return Err(usage());
    }
    let is_path = module_part.ends_with(".py")
        || module_part.contains('/')
        || module_part.contains(std::path::MAIN_SEPARATOR);
    if !is_path {
        if module_part.split('.').any(str::is_empty) {
            return Err(usage());
        }
        return Ok(Target {
            module: module_part.to_string(),
            function: function.to_string(),
            dir: PathBuf::from("."),
        });
    }
    let path = Path::new(module_part);
    if !path.is_file() {
        return Err(format!(
            "TARGET file {module_part} does not exist (or is not a file)"
        ));
    }
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty() && !s.contains('.'))
        .ok_or_else(|| {
            format!("TARGET file {module_part}: its name is not a Python module name")
        })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok(Target {
        module: stem.to_string(),
        function: function.to_string(),
        dir,
    })
}

/// Runs `gilpool run` and shuts its engine down; `Err` is a usage or setup
/// error (exit status 2) before any task ran.
fn run(
    args: RunArgs,
    stopper: &Arc<Stopper>,
    tx: SyncSender<Event>,
    rx: Receiver<Event>,
) -> Result<Ended, String> {
    if args.workers == Some(0) {
        return Err("--workers must be at least 1".into());
    }
    let batch_size = args.batch_size.unwrap_or(match args.timeout {
        Some(_) => 1,
        None => DEFAULT_BATCH_SIZE,
    });
    if batch_size == 0 {
        return Err("--batch-size must be at least 1".into());
    }
    let target = parse_target(&args.target)?;
    let (input, input_len) = open_input(&args.input, args.progress)?;

    let mut builder = Engine::builder()
        .mode(args.mode.into())
        .pin(!args.no_pin)
        .shutdown_timeout(args.shutdown_timeout)
        .sys_path(&target.dir);
    for dir in &args.sys_path {
        builder = builder.sys_path(dir);
    }
    if let Some(n) = args.workers {
        builder = builder.workers(n);
    }
    if let Some(dir) = &args.venv {
        builder = builder.venv(dir);
    }
    let engine = builder.build().map_err(|e| e.to_string())?;
    let workers = engine.workers();
    let window = (4 * workers * batch_size).clamp(256, 65_536);
    let handler = engine
        .handler(&target.module, &target.function)
        .batch_size(batch_size);
    let handler = match args.timeout {
        // A deadline counts from submit: keep in flight only what the
        // workers can start at once, so that a task's time is its own run,
        // not a wait behind a window of others.
        Some(timeout) => handler.timeout(timeout).max_in_flight(workers * batch_size),
        None => handler.max_in_flight(window),
    };
    let handler = handler
        .load()
        .map_err(|e| format!("cannot load {}: {e}", args.target))?;

    let output: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(
            std::fs::File::create(path)
                .map_err(|e| format!("cannot create output file {}: {e}", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    // From here on a signal stops the engine.
    stopper.hold(engine);
    let mut stream = Stream::new(
        handler,
        window,
        output,
        progress(input_len, args.progress, &args.target),
        stopper.clone(),
        tx.clone(),
    );
    let result = if stopper.signalled() {
        Err(Stop::Signal)
    } else {
        match spawn_reader(input, &args.input, tx, stopper.clone()) {
            Ok(()) => stream.run(&rx),
            Err(e) => Err(Stop::Error(e)),
        }
    };
    match &result {
        Ok(()) | Err(Stop::OutputClosed) => stream.bar().finish_and_clear(),
        Err(_) => stream.bar().abandon(),
    }
    drop(stream);
    // The reader's next send fails: it stops.
    drop(rx);
    stopper.output_done();
    let deadline = Instant::now() + args.shutdown_timeout;
    // `None`: a signal's shutdown had the engine (and is over now).
    if let Some(engine) = stopper.take_engine() {
        if args.stats {
            eprint!("{}", stats_table(&engine.metrics()));
        }
        match result {
            // Every task finished: wait (boundedly) for threads they left.
            Ok(()) | Err(Stop::Input(_)) => drop(engine.shutdown()),
            // Nobody reads the rest, or a signal or an error stopped the
            // run: drop what is queued.
            Err(_) => drop(engine.shutdown_now()),
        }
    }
    Ok(Ended {
        error: match result {
            Err(Stop::Input(e)) | Err(Stop::Error(e)) => Some(e),
            Ok(()) | Err(Stop::OutputClosed) | Err(Stop::Signal) => None,
        },
        deadline,
    })
}

/// `--stats`: one row per worker, then the handler's latencies.
fn stats_table(m: &gilpool::Metrics) -> String {
    use std::fmt::Write as _;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut out = String::from(
        "worker  core  gen  tasks  batches  steals  busy_ms  attached_ms  timeouts  interrupts  recycles  quarantines\n",
    );
    for w in &m.workers {
        let name = format!("{}-{}", w.lane.to_string().to_lowercase(), w.index);
        let core = w.core.map_or("-".to_string(), |c| c.to_string());
        let _ = writeln!(
            out,
            "{name:<7} {core:>4} {:>4} {:>6} {:>8} {:>7} {:>8.1} {:>12.1} {:>9} {:>11} {:>9} {:>12}",
            w.generation,
            w.tasks,
            w.batches,
            w.steals,
            ms(w.busy),
            ms(w.attached),
            w.timeouts,
            w.interrupts,
            w.recycles,
            w.quarantines
        );
    }
    for h in &m.handlers {
        let _ = writeln!(
            out,
            "{}:{} on the {} lane: {} ok, {} failed, {} timed out, {} cancelled; queue wait p50 {:.3} ms p99 {:.3} ms; run time p50 {:.3} ms p99 {:.3} ms max {:.3} ms",
            h.module,
            h.function,
            h.placement.to_string().to_lowercase(),
            h.completed,
            h.failed,
            h.timed_out,
            h.cancelled,
            ms(h.queue_wait.p50),
            ms(h.queue_wait.p99),
            ms(h.run_time.p50),
            ms(h.run_time.p99),
            ms(h.run_time.max)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_target("pkg.mod:func").unwrap();
        assert_eq!(
            (t.module.as_str(), t.function.as_str(), t.dir.as_path()),
            ("pkg.mod", "func", Path::new("."))
        );
        let t = parse_target("mod:Class.method").unwrap();
        assert_eq!(t.function, "Class.method");
        for bad in ["mod", ":f", "mod:", "a..b:f", "mod:f.", ""] {
            assert!(
                parse_target(bad).unwrap_err().contains("TARGET must be"),
                "{bad}"
            );
        }
        assert!(parse_target("no/such/file.py:f")
            .unwrap_err()
            .contains("does not exist"));
        let here = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/python/gilpool_workloads.py:inc"
        );
        let t = parse_target(here).unwrap();
        assert_eq!(t.module, "gilpool_workloads");
        assert!(t.dir.ends_with("python"));
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_timeout("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_timeout(" 1 "), Ok(Duration::from_secs(1)));
        for bad in ["0", "-1", "nan", "inf", "-inf", "1e-30", "", "two", "1s"] {
            let e = parse_timeout(bad).unwrap_err();
            assert!(e.contains("positive number of seconds"), "{bad}: {e}");
        }
        assert_eq!(parse_shutdown_timeout("0"), Ok(Duration::ZERO));
        for bad in ["-0.5", "nan", "inf", "x"] {
            assert!(parse_shutdown_timeout(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_shutdown_timeout(DEFAULT_SHUTDOWN_SECS),
            Ok(gilpool::DEFAULT_SHUTDOWN_TIMEOUT)
        );
    }
}
