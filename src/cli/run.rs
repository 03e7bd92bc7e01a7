//! `gilpool run TARGET`: a Python function over JSON Lines, in parallel, with
//! the results written in input order.
//!
//! # Data flow
//!
//! One thread (this one) reads the input a line at a time, parses the line
//! into [`Value`]s, submits the task and keeps its future in a bounded
//! window (a `VecDeque` in input order). When the window is full the oldest
//! future is waited for and its line written, so memory is bounded by the
//! window whatever the input's length. Workers turn the arguments into
//! Python objects, call the function, and — still attached to the
//! interpreter that produced the result — encode the result as the complete
//! output line ([`encode_result`]), so the expensive part of the output runs
//! in parallel and no intermediate `Value` tree is built.
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
//!   is not escaped), with `json.dumps`'s default separators.
//! - **Error records** carry `type(e).__name__`, `str(e)` and the formatted
//!   traceback of the exception the task raised; `traceback` is `null` for
//!   results JSON cannot represent and for gilpool's own errors (type
//!   `GilpoolError`).
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

use super::progress;
use gilpool::{Args, Engine, Handler, Mode, Object, TaskFuture, Value};
use gilpool_ffi::Kind;
use num_bigint::BigInt;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::mem::take;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// How deep arrays and objects may nest, in input lines and in results.
pub(crate) const MAX_DEPTH: usize = 512;

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
    /// Tasks per worker attachment. Larger batches cut the per-task cost of
    /// tiny functions; 1 balances long, uneven tasks best.
    #[arg(short, long, value_name = "N", default_value_t = DEFAULT_BATCH_SIZE)]
    batch_size: usize,
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
    /// Fail a task that runs longer than SECS (not supported yet).
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// Force the progress bar on stderr even when it is not a terminal.
    #[arg(long)]
    progress: bool,
}

/// Text after the options in `gilpool run --help`.
const AFTER_HELP: &str = "\
Output: one JSON line per input line, in input order: {\"ok\": RESULT}, or
{\"error\": {\"type\": ..., \"message\": ..., \"traceback\": ...}} when the task raised
or its result is not JSON (type \"TypeError\", traceback null).

sys.path: a file TARGET puts the file's folder first; a module TARGET puts the
current directory first; the --sys-path folders follow.

Exit status: 0 when every task succeeded, 1 when any task failed, 2 for usage
and setup errors: a bad TARGET, a missing file, a module or function that cannot
be loaded, or an invalid input line (named on stderr; the lines before it are
run and written, nothing after). When the reader of the output goes away
(gilpool run ... | head), the run stops quietly and the status counts the lines
written.

A function that prints to stdout corrupts the results when they go to stdout:
use --output FILE for such functions.";

/// Default `--batch-size`. Batching amortises the per-attachment cost of
/// tiny functions, while a batch of long tasks stays short enough not to
/// unbalance the workers at the end of a run. Measured on the 2-core dev VM
/// (best of 3): 1,000,000 `inc` lines took 2.35 s at 1, 1.75 s at 16,
/// 1.28 s at 64; 40 `spin(50)` tasks (ideal 1.0 s) took 1.06 s at 1,
/// 1.12 s at 16, 1.68 s at 64.
pub(crate) const DEFAULT_BATCH_SIZE: usize = 16;

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ModeArg {
    /// Own-GIL subinterpreters where this build supports them, else single-gil.
    Auto,
    /// One own-GIL subinterpreter per worker (CPython >= 3.12).
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

/// Entry point: runs the command and turns its outcome into the exit status.
pub(crate) fn main(args: RunArgs) -> ExitCode {
    let outcome = run(args);
    // Every engine is gone by now: flush Python's buffers and run its exit
    // handlers. A no-op when Python was never started.
    let _ = gilpool::finalize();
    match outcome {
        Ok(summary) if summary.failed == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(message) => {
            eprintln!("gilpool run: {message}");
            ExitCode::from(2)
        }
    }
}

/// What a completed run did.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Summary {
    /// Tasks run.
    pub(crate) tasks: u64,
    /// Tasks whose line is an error record.
    pub(crate) failed: u64,
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

/// Runs `gilpool run`; `Err` is a usage or setup error (exit status 2).
fn run(args: RunArgs) -> Result<Summary, String> {
    if args.timeout.is_some() {
        return Err("--timeout is not supported yet".into());
    }
    if args.workers == Some(0) {
        return Err("--workers must be at least 1".into());
    }
    if args.batch_size == 0 {
        return Err("--batch-size must be at least 1".into());
    }
    let target = parse_target(&args.target)?;
    let (input, input_len) = open_input(&args.input, args.progress)?;

    let mut builder = Engine::builder()
        .mode(args.mode.into())
        .pin(!args.no_pin)
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
    let window = (4 * engine.workers() * args.batch_size).clamp(256, 65_536);
    let handler = engine
        .handler(&target.module, &target.function)
        .batch_size(args.batch_size)
        .max_in_flight(window)
        .load()
        .map_err(|e| format!("cannot load {}: {e}", args.target))?;

    let output: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(
            std::fs::File::create(path)
                .map_err(|e| format!("cannot create output file {}: {e}", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut stream = Stream {
        handler,
        window,
        pending: VecDeque::with_capacity(window),
        output: BufWriter::with_capacity(1 << 16, output),
        bar: progress(input_len, args.progress, &args.target),
        summary: Summary::default(),
    };
    let result = stream.run(input, &args.input);
    let summary = stream.summary;
    match result {
        Ok(()) => {
            stream.bar.finish_and_clear();
            drop(stream);
            engine.shutdown();
            Ok(summary)
        }
        Err(Stop::OutputClosed) => {
            // Nobody reads the rest: drop what is queued, report what was
            // written (exit 1 if any of those tasks failed, else 0).
            stream.bar.finish_and_clear();
            drop(stream);
            engine.shutdown_now();
            Ok(summary)
        }
        Err(Stop::Error(e)) => {
            stream.bar.abandon();
            drop(stream);
            // Whatever is still queued was abandoned: cancel it.
            engine.shutdown_now();
            Err(e)
        }
    }
}

/// Opens the input (`-` is stdin). The second value is the number of lines,
/// counted in a first pass only when the progress bar will show and the
/// input is a regular file (which can be read twice).
fn open_input(path: &str, force_progress: bool) -> Result<(Box<dyn BufRead>, Option<u64>), String> {
    if path == "-" {
        return Ok((
            Box::new(BufReader::with_capacity(1 << 16, std::io::stdin())),
            None,
        ));
    }
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open input file {path}: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot open input file {path}: {e}"))?;
    if meta.is_dir() {
        return Err(format!("input {path} is a directory"));
    }
    let len = if meta.is_file() && (force_progress || std::io::stderr().is_terminal()) {
        count_lines(Path::new(path)).ok()
    } else {
        None
    };
    Ok((Box::new(BufReader::with_capacity(1 << 16, file)), len))
}

/// The number of lines in a file: its newlines, plus one for a last line
/// without a newline.
fn count_lines(path: &Path) -> std::io::Result<u64> {
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 16];
    let mut lines = 0u64;
    let mut last = b'\n';
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        last = buf[n - 1];
    }
    Ok(lines + u64::from(last != b'\n'))
}

/// A task's outcome as a worker encoded it: the whole output line, or why
/// the result has no JSON form.
type Encoded = Result<String, String>;

/// Why a run stopped early.
#[derive(Debug)]
enum Stop {
    /// The reader of the output went away (`gilpool run … | head`): stop
    /// quietly, like a command killed by `SIGPIPE`, without an error.
    OutputClosed,
    /// A usage or setup error, or an input line that is not a task.
    Error(String),
}

impl From<String> for Stop {
    fn from(message: String) -> Stop {
        Stop::Error(message)
    }
}

/// A failed write to the output: `OutputClosed` for a closed pipe.
fn write_failed(e: std::io::Error) -> Stop {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Stop::OutputClosed
    } else {
        Stop::Error(format!("cannot write output: {e}"))
    }
}

/// The running part of `gilpool run`: the window of futures in input order
/// and the output they are written to.
struct Stream {
    /// The bound function.
    handler: Handler,
    /// The most futures kept at once.
    window: usize,
    /// Submitted tasks in input order, oldest first.
    pending: VecDeque<TaskFuture<Encoded>>,
    /// Where result lines go.
    output: BufWriter<Box<dyn Write>>,
    /// Progress on stderr (hidden unless a terminal or forced).
    bar: indicatif::ProgressBar,
    /// Counts so far.
    summary: Summary,
}

impl Stream {
    /// Reads, submits and writes every line. On an invalid line, finishes
    /// and writes the lines before it, then returns the error naming it.
    fn run(&mut self, mut input: Box<dyn BufRead>, name: &str) -> Result<(), Stop> {
        let name = if name == "-" { "stdin" } else { name };
        let mut buf = Vec::with_capacity(256);
        let mut line_no = 0u64;
        let mut stop = None;
        loop {
            buf.clear();
            match input.read_until(b'\n', &mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    stop = Some(format!("cannot read {name}: {e}"));
                    break;
                }
            }
            line_no += 1;
            let args = match parse_task(&buf) {
                Ok(args) => args,
                Err(e) => {
                    stop = Some(format!("{name}: line {line_no}: {e}"));
                    break;
                }
            };
            if self.pending.len() >= self.window {
                self.write_next()?;
            }
            let future = self
                .handler
                .submit_with(move || Ok(args), encode_result)
                .map_err(|e| e.to_string())?;
            self.pending.push_back(future);
        }
        while !self.pending.is_empty() {
            self.write_next()?;
        }
        self.output.flush().map_err(write_failed)?;
        match stop {
            None => Ok(()),
            Some(e) => Err(Stop::Error(e)),
        }
    }

    /// Waits for the oldest task and writes its line.
    fn write_next(&mut self) -> Result<(), Stop> {
        let Some(future) = self.pending.pop_front() else {
            return Ok(());
        };
        let line = match future.wait() {
            Ok(Ok(line)) => line,
            Ok(Err(reason)) => {
                self.summary.failed += 1;
                error_line(
                    "TypeError",
                    &format!("result is not JSON serializable: {reason}"),
                    None,
                )
            }
            Err(e) => {
                self.summary.failed += 1;
                task_error_line(&e)
            }
        };
        self.output
            .write_all(line.as_bytes())
            .map_err(write_failed)?;
        self.summary.tasks += 1;
        self.bar.inc(1);
        Ok(())
    }
}

/// The error record of a task that did not return: the Python exception's
/// class name (`type(e).__name__`), `str(e)` and its formatted traceback;
/// gilpool's own errors (a worker that could not import the module, a
/// cancelled task) carry their description.
fn task_error_line(e: &gilpool::Error) -> String {
    match e.python() {
        Some(exc) => {
            let type_name = exc.type_name.rsplit('.').next().unwrap_or(&exc.type_name);
            let message = if e.is_python() {
                exc.message.clone()
            } else {
                e.to_string()
            };
            let traceback = (!exc.traceback.is_empty()).then_some(exc.traceback.as_str());
            error_line(type_name, &message, traceback)
        }
        None => error_line("GilpoolError", &e.to_string(), None),
    }
}

/// `{"error": {"type": ..., "message": ..., "traceback": ...}}` and a newline.
fn error_line(type_name: &str, message: &str, traceback: Option<&str>) -> String {
    let mut line = String::with_capacity(64 + message.len() + traceback.map_or(0, str::len));
    line.push_str("{\"error\": {\"type\": ");
    write_str(&mut line, type_name);
    line.push_str(", \"message\": ");
    write_str(&mut line, message);
    line.push_str(", \"traceback\": ");
    match traceback {
        Some(tb) => write_str(&mut line, tb),
        None => line.push_str("null"),
    }
    line.push_str("}}\n");
    line
}

// ---------------------------------------------------------------------------
// Output: Python objects to JSON text, as `json.dumps` writes them.

/// Encodes a task's result as its output line `{"ok": RESULT}`; runs on the
/// worker, attached to the interpreter that produced `obj`.
fn encode_result(obj: Object<'_>) -> gilpool::Result<Encoded> {
    let mut line = String::with_capacity(32);
    line.push_str("{\"ok\": ");
    Ok(match write_object(&mut line, &obj, 0) {
        Ok(()) => {
            line.push_str("}\n");
            Ok(line)
        }
        Err(reason) => Err(reason),
    })
}

/// Describes a Python exception raised while reading an object.
fn py_error(e: gilpool::PyException) -> String {
    e.to_string()
}

/// Appends `obj` as JSON; `Err` says why it has no JSON form.
fn write_object(out: &mut String, obj: &Object<'_>, depth: usize) -> Result<(), String> {
    match obj.kind() {
        Kind::None => out.push_str("null"),
        Kind::Bool => out.push_str(if obj.extract_bool().map_err(py_error)? {
            "true"
        } else {
            "false"
        }),
        Kind::Int => write_int(out, obj)?,
        Kind::Float => {
            let x = obj.extract_f64().map_err(py_error)?;
            if !x.is_finite() {
                let repr = if x.is_nan() {
                    "nan"
                } else if x > 0.0 {
                    "inf"
                } else {
                    "-inf"
                };
                return Err(format!(
                    "Out of range float values are not JSON compliant: {repr}"
                ));
            }
            write_float(out, x);
        }
        Kind::Str => write_str(out, &obj.extract_str().map_err(py_error)?),
        Kind::List | Kind::Tuple => {
            check_depth(depth)?;
            out.push('[');
            for (i, item) in obj.sequence_items().map_err(py_error)?.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_object(out, item, depth + 1)?;
            }
            out.push(']');
        }
        Kind::Dict => {
            check_depth(depth)?;
            out.push('{');
            for (i, (key, value)) in obj.dict_items().map_err(py_error)?.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_key(out, key)?;
                out.push_str(": ");
                write_object(out, value, depth + 1)?;
            }
            out.push('}');
        }
        Kind::Bytes | Kind::Other => {
            return Err(format!(
                "Object of type {} is not JSON serializable",
                short_type_name(obj)
            ));
        }
    }
    Ok(())
}

/// `type(obj).__name__`, as Python's `json` names types in its messages.
fn short_type_name(obj: &Object<'_>) -> String {
    let name = obj.type_name();
    match name.rsplit_once('.') {
        Some((_, short)) => short.to_string(),
        None => name,
    }
}

/// Refuses to go deeper than [`MAX_DEPTH`] (a circular structure, or one
/// `json.dumps` would refuse with `RecursionError`).
fn check_depth(depth: usize) -> Result<(), String> {
    if depth >= MAX_DEPTH {
        return Err(format!(
            "nested deeper than {MAX_DEPTH} levels (a circular reference?)"
        ));
    }
    Ok(())
}

/// Appends a dict key: strings as they are; `int`, `float`, `bool` and
/// `None` keys as strings, the way `json.dumps` converts them.
fn write_key(out: &mut String, key: &Object<'_>) -> Result<(), String> {
    match key.kind() {
        Kind::Str => write_str(out, &key.extract_str().map_err(py_error)?),
        Kind::Bool => out.push_str(if key.extract_bool().map_err(py_error)? {
            "\"true\""
        } else {
            "\"false\""
        }),
        Kind::None => out.push_str("\"null\""),
        Kind::Int => {
            out.push('"');
            write_int(out, key)?;
            out.push('"');
        }
        Kind::Float => {
            let x = key.extract_f64().map_err(py_error)?;
            out.push('"');
            if x.is_finite() {
                write_float(out, x);
            } else {
                out.push_str(float_name(x));
            }
            out.push('"');
        }
        _ => {
            return Err(format!(
                "keys must be str, int, float, bool or None, not {}",
                short_type_name(key)
            ));
        }
    }
    Ok(())
}

/// Appends an `int` in full decimal precision.
fn write_int(out: &mut String, obj: &Object<'_>) -> Result<(), String> {
    match obj.extract_i64().map_err(py_error)? {
        Some(i) => {
            let _ = write!(out, "{i}");
        }
        None => out.push_str(&obj.int_to_decimal().map_err(py_error)?),
    }
    Ok(())
}

/// `json.dumps`'s spelling of a non-finite float.
fn float_name(x: f64) -> &'static str {
    if x.is_nan() {
        "NaN"
    } else if x > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

/// Appends a finite float as Python's `repr` writes it: the shortest digits
/// that round-trip, positional for exponents -4 to 15 (with `.0` when
/// integral), else `d.ddde+XX`.
pub(crate) fn write_float(out: &mut String, x: f64) {
    // `{:e}` gives the shortest round-trip digits, e.g. `-1.2345e2`, `0e0`.
    let mut sci = format!("{x:e}");
    // When the value lies exactly halfway between two shortest candidates,
    // `{:e}` takes the upper one and Python the even one; the correctly
    // rounded (half-to-even) form of the same length is Python's choice
    // whenever it round-trips.
    let n = sci
        .bytes()
        .take_while(|&b| b != b'e')
        .filter(u8::is_ascii_digit)
        .count();
    let even = format!("{:.*e}", n.saturating_sub(1), x);
    if even != sci && even.parse::<f64>() == Ok(x) {
        sci = even;
    }
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let digits = match digits.trim_end_matches('0') {
        "" => "0",
        d => d,
    };
    if negative {
        out.push('-');
    }
    if !(-4..16).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(
            out,
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        );
    } else if exp >= 0 {
        let whole = exp as usize + 1;
        if digits.len() <= whole {
            out.push_str(digits);
            out.extend(std::iter::repeat('0').take(whole - digits.len()));
            out.push_str(".0");
        } else {
            out.push_str(&digits[..whole]);
            out.push('.');
            out.push_str(&digits[whole..]);
        }
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat('0').take((-exp - 1) as usize));
        out.push_str(digits);
    }
}

/// Appends a JSON string, escaped as `json.dumps(..., ensure_ascii=False)`
/// escapes it: `"`, `\`, and control characters.
pub(crate) fn write_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

// ---------------------------------------------------------------------------
// Input: one JSON Lines task to call arguments.

/// Parses one input line (with or without its newline) into the call's
/// arguments: `[...]` is positional, `{"args": [...], "kwargs": {...}}`
/// (both optional, no other keys) adds keywords.
pub(crate) fn parse_task(line: &[u8]) -> Result<Args, String> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let text = std::str::from_utf8(line)
        .map_err(|e| format!("not valid UTF-8 (at byte {})", e.valid_up_to() + 1))?;
    if text.bytes().all(is_json_space) {
        return Err("blank line (every line must be a task)".into());
    }
    let mut value = parse_json(text).map_err(|e| format!("invalid JSON: {e}"))?;
    // `Value` implements `Drop`: parts are taken out through `&mut`.
    match &mut value {
        Value::List(items) => Ok(Args::from_parts(take(items), Vec::new())),
        Value::Dict(pairs) => {
            let mut positional = Vec::new();
            let mut keywords = Vec::new();
            // A repeated key: the last one wins, as in Python's json.loads.
            for (key, value) in pairs.iter_mut() {
                let Value::Str(k) = key else {
                    return Err(format!("unexpected key {key:?}"));
                };
                match (k.as_str(), value) {
                    ("args", Value::List(items)) => positional = take(items),
                    ("kwargs", Value::Dict(kw)) => {
                        // The parser makes every object key a `Value::Str`.
                        keywords = take(kw)
                            .into_iter()
                            .filter_map(|(mut k, v)| match &mut k {
                                Value::Str(k) => Some((take(k), v)),
                                _ => None,
                            })
                            .collect();
                    }
                    ("args", v) => {
                        return Err(format!("\"args\" must be an array, got {}", json_type(v)))
                    }
                    ("kwargs", v) => {
                        return Err(format!("\"kwargs\" must be an object, got {}", json_type(v)))
                    }
                    (k, _) => {
                        return Err(format!("unknown task key {k:?} (a task object has only \"args\" and \"kwargs\")"))
                    }
                }
            }
            Ok(Args::from_parts(positional, keywords))
        }
        other => Err(format!(
            "a task must be a JSON array of arguments or an object with \"args\"/\"kwargs\", got {}",
            json_type(other)
        )),
    }
}

/// The JSON name of a parsed value's type, for messages.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::None => "null",
        Value::Bool(_) => "a boolean",
        Value::Int(_) | Value::BigInt(_) | Value::Float(_) => "a number",
        Value::Str(_) => "a string",
        Value::List(_) | Value::Tuple(_) => "an array",
        Value::Dict(_) => "an object",
        Value::Bytes(_) => "bytes",
    }
}

/// JSON's whitespace (what Python's `json.loads` skips).
fn is_json_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Parses one JSON document (RFC 8259, plus `NaN`, `Infinity` and
/// `-Infinity` as Python's `json.loads` reads them) into a [`Value`]:
/// integers of any size stay exact, objects become dicts with string keys
/// in document order.
pub(crate) fn parse_json(text: &str) -> Result<Value, String> {
    let mut p = Parser { text, pos: 0 };
    p.skip_space();
    let value = p.value(0)?;
    p.skip_space();
    if p.pos != text.len() {
        return Err(p.error("extra data after the value"));
    }
    Ok(value)
}

/// A recursive-descent JSON parser over one line.
struct Parser<'a> {
    /// The document.
    text: &'a str,
    /// Byte offset of the next unread byte.
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(is_json_space) {
            self.pos += 1;
        }
    }

    #[cold]
    fn error(&self, what: &str) -> String {
        // Count characters, not bytes (continuation bytes are 10xxxxxx).
        let column = self.text.as_bytes()[..self.pos.min(self.text.len())]
            .iter()
            .filter(|&&b| b & 0xc0 != 0x80)
            .count()
            + 1;
        format!("{what} at column {column}")
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(Value::Str),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::None),
            Some(b'N') => self.literal("NaN", Value::Float(f64::NAN)),
            Some(b'I') => self.literal("Infinity", Value::Float(f64::INFINITY)),
            None => Err(self.error("expected a value, found the end of the line")),
            Some(_) => Err(self.error("expected a value")),
        }
    }

    fn literal(&mut self, word: &str, value: Value) -> Result<Value, String> {
        if self.text[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error("expected a value"))
        }
    }

    fn nest(&self, depth: usize) -> Result<usize, String> {
        if depth >= MAX_DEPTH {
            return Err(self.error(&format!("nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(depth + 1)
    }

    fn array(&mut self, depth: usize) -> Result<Value, String> {
        let depth = self.nest(depth)?;
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_space();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::List(items));
        }
        loop {
            self.skip_space();
            items.push(self.value(depth)?);
            self.skip_space();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::List(items));
                }
                _ => return Err(self.error("expected ',' or ']'")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, String> {
        let depth = self.nest(depth)?;
        self.pos += 1;
        let mut pairs = Vec::new();
        self.skip_space();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Dict(pairs));
        }
        loop {
            self.skip_space();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a string key in double quotes"));
            }
            let key = self.string()?;
            self.skip_space();
            if self.peek() != Some(b':') {
                return Err(self.error("expected ':'"));
            }
            self.pos += 1;
            self.skip_space();
            let value = self.value(depth)?;
            pairs.push((Value::Str(key), value));
            self.skip_space();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Dict(pairs));
                }
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<Value, String> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
            if self.text[self.pos..].starts_with("Infinity") {
                self.pos += "Infinity".len();
                return Ok(Value::Float(f64::NEG_INFINITY));
            }
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.error("expected a digit")),
        }
        let mut float = false;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.error("expected a digit after '.'"));
            }
            float = true;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.error("expected a digit in the exponent"));
            }
            float = true;
        }
        let text = &self.text[start..self.pos];
        if float {
            return text
                .parse()
                .map(Value::Float)
                .map_err(|_| self.error("invalid number"));
        }
        match text.parse::<i64>() {
            Ok(i) => Ok(Value::Int(i)),
            Err(_) => text
                .parse::<BigInt>()
                .map(Value::int)
                .map_err(|_| self.error("invalid number")),
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let hex = self
            .text
            .get(self.pos..self.pos + 4)
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
        match hex {
            Some(h) => {
                self.pos += 4;
                Ok(u32::from_str_radix(h, 16).unwrap_or(0))
            }
            None => Err(self.error("expected 4 hex digits after \\u")),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.pos += 1;
        let bytes = self.text.as_bytes();
        let mut out = String::new();
        loop {
            let start = self.pos;
            while let Some(&b) = bytes.get(self.pos) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            // The scan stops only at ASCII bytes or the end: char boundaries.
            out.push_str(&self.text[start..self.pos]);
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let c = match self.peek() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.pos += 1;
                            let at = self.pos - 2;
                            let unit = self.hex4()?;
                            let code = if (0xd800..0xdc00).contains(&unit)
                                && self.text[self.pos..].starts_with("\\u")
                            {
                                self.pos += 2;
                                let low = self.hex4()?;
                                if !(0xdc00..0xe000).contains(&low) {
                                    self.pos = at;
                                    return Err(self
                                        .error("a lone surrogate \\u escape (not representable)"));
                                }
                                0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00)
                            } else {
                                unit
                            };
                            match char::from_u32(code) {
                                Some(c) => out.push(c),
                                None => {
                                    self.pos = at;
                                    return Err(self
                                        .error("a lone surrogate \\u escape (not representable)"));
                                }
                            }
                            continue;
                        }
                        _ => return Err(self.error("invalid escape")),
                    };
                    self.pos += 1;
                    out.push(c);
                }
                Some(_) => return Err(self.error("invalid control character in a string")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float(x: f64) -> String {
        let mut s = String::new();
        write_float(&mut s, x);
        s
    }

    #[test]
    fn floats_are_written_like_python_repr() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (1.5, "1.5"),
            (0.1, "0.1"),
            (-2.25, "-2.25"),
            (123.456, "123.456"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e100, "1e+100"),
            (0.0001, "0.0001"),
            (0.00012, "0.00012"),
            (1e-5, "1e-05"),
            (1.25e-7, "1.25e-07"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (1.0 / 3.0, "0.3333333333333333"),
            (9007199254740992.0, "9007199254740992.0"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            // Halfway between two shortest candidates: Python takes the even one.
            (-(714_680_204_616.0 + 21.0 / 32.0), "-714680204616.6562"),
            (0.5, "0.5"),
            (2.5, "2.5"),
        ];
        for &(x, want) in cases {
            assert_eq!(float(x), want, "{x:?}");
        }
    }

    #[test]
    fn strings_are_escaped_like_json_dumps() {
        let mut s = String::new();
        write_str(&mut s, "a\"b\\c\n\t\u{1}\u{7f}é☃");
        assert_eq!(s, "\"a\\\"b\\\\c\\n\\t\\u0001\u{7f}é☃\"");
    }

    #[test]
    fn json_numbers_keep_their_kind_and_digits() {
        assert_eq!(
            parse_json("[0, -0, 1.0, -1.5e3, 9223372036854775807]").unwrap(),
            {
                Value::List(vec![
                    Value::Int(0),
                    Value::Int(0),
                    Value::Float(1.0),
                    Value::Float(-1500.0),
                    Value::Int(i64::MAX),
                ])
            }
        );
        let big = "1267650600228229401496703205376";
        assert_eq!(
            parse_json(big).unwrap(),
            Value::BigInt(big.parse().unwrap())
        );
        assert_eq!(
            parse_json("-9223372036854775809").unwrap(),
            Value::BigInt("-9223372036854775809".parse().unwrap())
        );
        match &parse_json("[NaN, Infinity, -Infinity]").unwrap() {
            Value::List(v) => {
                assert!(matches!(v[0], Value::Float(x) if x.is_nan()));
                assert_eq!(v[1], Value::Float(f64::INFINITY));
                assert_eq!(v[2], Value::Float(f64::NEG_INFINITY));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn json_strings_and_objects() {
        let v = parse_json(
            r#" {"a": "x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00", "b": [true, false, null], "a": {}} "#,
        )
        .unwrap();
        assert_eq!(
            v,
            Value::Dict(vec![
                (
                    Value::Str("a".into()),
                    Value::Str("x\"\\/\u{8}\u{c}\n\r\té😀".into())
                ),
                (
                    Value::Str("b".into()),
                    Value::List(vec![Value::Bool(true), Value::Bool(false), Value::None])
                ),
                (Value::Str("a".into()), Value::Dict(vec![])),
            ])
        );
    }

    #[test]
    fn json_errors_name_the_column() {
        for (text, want) in [
            ("[1, 2", "expected ',' or ']' at column 6"),
            ("[1,]", "expected a value at column 4"),
            ("[01]", "expected ',' or ']' at column 3"),
            ("[1.]", "expected a digit after '.' at column 4"),
            (
                "{'a': 1}",
                "expected a string key in double quotes at column 2",
            ),
            ("[\"é\", x]", "expected a value at column 7"),
            ("[1] 2", "extra data after the value at column 5"),
            (
                "\"a\tb\"",
                "invalid control character in a string at column 3",
            ),
            (
                "\"\\ud800\"",
                "a lone surrogate \\u escape (not representable) at column 2",
            ),
            ("\"\\x\"", "invalid escape at column 3"),
            ("tru", "expected a value at column 1"),
            ("\"abc", "unterminated string at column 5"),
        ] {
            assert_eq!(parse_json(text).unwrap_err(), want, "{text}");
        }
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(parse_json(&deep).unwrap_err().contains("nested deeper"));
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse_json(&ok).is_ok());
    }

    #[test]
    fn tasks_are_arrays_or_args_kwargs_objects() {
        let a = parse_task(b"[1, \"two\"]\n").unwrap();
        assert_eq!(a.positional(), &[Value::Int(1), Value::Str("two".into())]);
        assert!(a.keywords().is_empty());
        let a = parse_task(b"{\"kwargs\": {\"b\": 2}, \"args\": [1]}\r\n").unwrap();
        assert_eq!(a.positional(), &[Value::Int(1)]);
        assert_eq!(a.keywords(), &[("b".to_string(), Value::Int(2))]);
        assert!(parse_task(b"{}").unwrap().positional().is_empty());
        for (line, want) in [
            (&b"\n"[..], "blank line"),
            (b"  \r\n", "blank line"),
            (b"5", "a task must be a JSON array"),
            (b"{\"args\": 1}", "\"args\" must be an array, got a number"),
            (
                b"{\"kwargs\": []}",
                "\"kwargs\" must be an object, got an array",
            ),
            (b"{\"x\": 1}", "unknown task key \"x\""),
            (b"[1", "invalid JSON: expected ',' or ']' at column 3"),
            (b"[\"\xff\"]", "not valid UTF-8 (at byte 3)"),
        ] {
            let e = parse_task(line).unwrap_err();
            assert!(e.contains(want), "{e:?} lacks {want:?}");
        }
    }

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
}
