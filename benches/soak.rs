//! Soak: a long mixed load on one 2-worker engine per mode this build
//! supports, with the process's resident memory sampled as it goes,
//! printed as a table.
//!
//! Every task's outcome is checked against its kind. Per 10,000 tasks:
//!
//! | kind | tasks | call | outcome it must have |
//! |---|--:|---|---|
//! | ok | 8,200 | `inc(i)` | `i + 1` |
//! | conversion | 996 | `echo(nested value)` | the value back, converted both ways |
//! | Python error | 500 | `fail(msg)` | `is_python`, the message carried |
//! | callback panic | 100 | `inc(i)`, callback panics | `is_panic` |
//! | commit panic | 100 | commit closure panics | `is_panic` |
//! | cancelled queued | 100 | `inc(i)`, cancelled at once | `is_cancelled` (or `i + 1` if it won the race) |
//! | timeout | 2 | `spin(500 ms)` with a 10 ms deadline | `is_timeout`, interrupted |
//! | cancelled running | 2 | `spin(500 ms)`, cancelled a window later | `is_cancelled` (or 500 if it finished first) |
//!
//! A timeout or running cancellation that found its task still queued
//! stops it before it starts; the table counts how many were interrupted
//! while running. Up to [`WINDOW`] tasks are in flight. RSS (`/proc/self/statm`) is sampled
//! every `tasks / 20` tasks; the bound: from the sample at 20 % of the run
//! (allocator and interpreter caches warm) to the last one, RSS may grow by at
//! most [`GROWTH_BOUND_MIB`]. The bench exits 1 if any outcome is wrong or the
//! bound is exceeded.
//!
//! `cargo bench --bench soak` (1,000,000 tasks per mode, about 30 s on 2
//! cores); `-- --tasks N` for another count. `ci/soak.sh` runs it within a
//! time budget. Results: docs/TESTING.md.

use gilpool::{Engine, FromPython, Handler, Mode, Result, TaskFuture, Value};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Tasks in flight at most.
const WINDOW: usize = 256;
/// Allowed RSS growth from the warm sample (20 % of the run) to the end.
const GROWTH_BOUND_MIB: f64 = 8.0;
/// A panic payload starting with this is the soak's own, and not printed.
const OURS: &str = "soak: ";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ok,
    Conversion,
    PyError,
    CallbackPanic,
    CommitPanic,
    CancelQueued,
    Timeout,
    CancelRunning,
}

const KINDS: [Kind; 8] = [
    Kind::Ok,
    Kind::Conversion,
    Kind::PyError,
    Kind::CallbackPanic,
    Kind::CommitPanic,
    Kind::CancelQueued,
    Kind::Timeout,
    Kind::CancelRunning,
];

impl Kind {
    /// The kind of task number `i` (see the module docs' table).
    fn of(i: u64) -> Kind {
        match i % 10_000 {
            0 | 5_000 => Kind::Timeout,
            2_500 | 7_500 => Kind::CancelRunning,
            r => match r % 100 {
                0..=9 => Kind::Conversion,
                10..=14 => Kind::PyError,
                15 => Kind::CallbackPanic,
                16 => Kind::CommitPanic,
                17 => Kind::CancelQueued,
                _ => Kind::Ok,
            },
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Ok => "ok",
            Kind::Conversion => "conversion",
            Kind::PyError => "Python error",
            Kind::CallbackPanic => "callback panic",
            Kind::CommitPanic => "commit panic",
            Kind::CancelQueued => "cancelled queued",
            Kind::Timeout => "timeout",
            Kind::CancelRunning => "cancelled running",
        }
    }
}

struct Handlers {
    inc: Handler,
    echo: Handler,
    fail: Handler,
    spin: Handler,
    spin_deadline: Handler,
}

struct InFlight {
    kind: Kind,
    i: u64,
    future: Result<TaskFuture<Value>>,
}

fn nested(i: u64) -> Value {
    let i = i as i64;
    Value::List(vec![
        Value::Int(i),
        Value::Str(format!("task {i}")),
        Value::Bytes(i.to_le_bytes().to_vec()),
        Value::Float(i as f64 / 7.0),
        Value::Dict(vec![
            (
                Value::Str("k".into()),
                Value::Tuple(vec![Value::None, Value::Bool(i % 2 == 0)]),
            ),
            (Value::Int(i), Value::List(vec![Value::Int(-i); 3])),
        ]),
    ])
}

fn value(o: gilpool::Object<'_>) -> Result<Value> {
    Value::from_python(&o)
}

fn submit(h: &Handlers, kind: Kind, i: u64) -> Result<TaskFuture<Value>> {
    let n = i as i64;
    match kind {
        Kind::Ok | Kind::CancelQueued => {
            let f = h.inc.submit::<_, Value>((n,))?;
            if kind == Kind::CancelQueued {
                f.cancel();
            }
            Ok(f)
        }
        Kind::Conversion => h.echo.submit((nested(i),)),
        Kind::PyError => h.fail.submit((format!("soak error {i}"),)),
        Kind::CallbackPanic => h.inc.submit_with(
            move || Ok((n,)),
            |_o| -> Result<Value> { panic!("{OURS}callback") },
        ),
        Kind::CommitPanic => h
            .inc
            .submit_with(|| -> Result<(i64,)> { panic!("{OURS}commit") }, value),
        Kind::Timeout => h.spin_deadline.submit((500,)),
        Kind::CancelRunning => h.spin.submit((500,)),
    }
}

/// Whether `outcome` is the one a task of `kind` must have.
fn check(kind: Kind, i: u64, outcome: &Result<Value>) -> bool {
    let n = i as i64;
    match (kind, outcome) {
        (Kind::Ok, Ok(v)) => *v == Value::Int(n + 1),
        (Kind::Conversion, Ok(v)) => {
            *v == Value::List(vec![Value::List(vec![nested(i)]), Value::Dict(vec![])])
        }
        (Kind::PyError, Err(e)) => {
            e.is_python() && e.to_string().contains(&format!("soak error {i}"))
        }
        (Kind::CallbackPanic | Kind::CommitPanic, Err(e)) => e.is_panic(),
        (Kind::CancelQueued, Ok(v)) => *v == Value::Int(n + 1),
        (Kind::CancelQueued | Kind::CancelRunning, Err(e)) => e.is_cancelled(),
        (Kind::Timeout, Err(e)) => e.is_timeout(),
        (Kind::CancelRunning, Ok(v)) => *v == Value::Int(500),
        _ => false,
    }
}

/// Resident set size from `/proc/self/statm` (pages), in MiB.
fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    // SAFETY: sysconf only reads a constant of the system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1);
    pages * page as f64 / (1024.0 * 1024.0)
}

struct Sample {
    tasks: u64,
    secs: f64,
    rss: f64,
}

/// Outcomes checked so far.
#[derive(Default)]
struct Tally {
    /// Per kind, in the order of [`KINDS`].
    counts: [u64; 8],
    /// Timeouts and running cancellations that interrupted a running task.
    interrupted: u64,
    wrong: u64,
}

impl Tally {
    /// Waits for `t` (cancelling it first if its kind says so) and checks
    /// its outcome.
    fn record(&mut self, t: InFlight) {
        if t.kind == Kind::CancelRunning {
            if let Ok(f) = &t.future {
                f.cancel();
            }
        }
        let outcome = t.future.and_then(|f| f.wait());
        self.counts[t.kind as usize] += 1;
        if let Err(e) = &outcome {
            if (e.is_timeout() || e.is_cancelled()) && e.to_string().contains("interrupted") {
                self.interrupted += 1;
            }
        }
        if !check(t.kind, t.i, &outcome) {
            self.wrong += 1;
            if self.wrong <= 10 {
                eprintln!(
                    "task {} ({}): unexpected outcome {:?}",
                    t.i,
                    t.kind.name(),
                    outcome
                );
            }
        }
    }
}

struct Outcome {
    samples: Vec<Sample>,
    tally: Tally,
    after_shutdown: f64,
    before_engine: f64,
}

fn soak(mode: Mode, tasks: u64) -> Outcome {
    let before_engine = rss_mib();
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python");
    let engine = Engine::builder()
        .mode(mode)
        .workers(2)
        .pin(false)
        .sys_path(python)
        .build()
        .expect("the engine builds");
    let load = |f: &str| engine.load("gilpool_workloads", f).expect("loads");
    let h = Handlers {
        inc: load("inc"),
        echo: load("echo"),
        fail: load("fail"),
        spin: load("spin"),
        spin_deadline: engine
            .handler("gilpool_workloads", "spin")
            .timeout(Duration::from_millis(10))
            .load()
            .expect("loads"),
    };
    let every = (tasks / 20).max(1);
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut tally = Tally::default();
    let mut window: VecDeque<InFlight> = VecDeque::with_capacity(WINDOW);
    for i in 0..tasks {
        if window.len() == WINDOW {
            tally.record(window.pop_front().expect("full window"));
        }
        let kind = Kind::of(i);
        window.push_back(InFlight {
            kind,
            i,
            future: submit(&h, kind, i),
        });
        if (i + 1) % every == 0 {
            samples.push(Sample {
                tasks: i + 1,
                secs: start.elapsed().as_secs_f64(),
                rss: rss_mib(),
            });
        }
    }
    while let Some(t) = window.pop_front() {
        tally.record(t);
    }
    drop(h);
    let report = engine.shutdown();
    assert!(report.drained, "{report:?}");
    Outcome {
        samples,
        tally,
        after_shutdown: rss_mib(),
        before_engine,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let tasks: u64 = args
        .iter()
        .position(|a| a == "--tasks")
        .and_then(|i| args.get(i + 1))
        .map(|t| t.parse().expect("--tasks takes a number"))
        .unwrap_or(1_000_000);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let ours = info
            .payload()
            .downcast_ref::<String>()
            .is_some_and(|s| s.starts_with(OURS));
        if !ours {
            default_hook(info);
        }
    }));
    let mut modes = Vec::new();
    if Mode::SubInterpreters.is_supported() {
        modes.push(Mode::SubInterpreters);
    }
    modes.push(Mode::SingleGil);
    let mut failed = false;
    for mode in modes {
        let o = soak(mode, tasks);
        println!();
        println!("## soak: {mode}, 2 workers, {tasks} tasks, window {WINDOW}");
        println!();
        println!("| tasks | s | tasks/s | RSS MiB | Δ from warm sample |");
        println!("|--:|--:|--:|--:|--:|");
        let warm_at = o.samples.len() / 5;
        let warm = o
            .samples
            .get(warm_at.saturating_sub(1))
            .map_or(0.0, |s| s.rss);
        for (k, s) in o.samples.iter().enumerate() {
            let delta = if k + 1 >= warm_at.max(1) {
                format!("{:+.2}", s.rss - warm)
            } else {
                String::new()
            };
            println!(
                "| {} | {:.1} | {:.0} | {:.1} | {} |",
                s.tasks,
                s.secs,
                s.tasks as f64 / s.secs,
                s.rss,
                delta
            );
        }
        let last = o.samples.last().map_or(0.0, |s| s.rss);
        let growth = last - warm;
        println!();
        println!(
            "RSS before the engine {:.1} MiB; after shutdown {:.1} MiB",
            o.before_engine, o.after_shutdown
        );
        let mix: Vec<String> = KINDS
            .iter()
            .zip(o.tally.counts)
            .map(|(k, n)| format!("{} {n}", k.name()))
            .collect();
        println!(
            "outcomes checked: {}; wrong: {}; interrupted while running: {}",
            mix.join(", "),
            o.tally.wrong,
            o.tally.interrupted
        );
        let ok = growth <= GROWTH_BOUND_MIB;
        println!(
            "RSS growth from the warm sample to the end: {growth:+.2} MiB (bound {GROWTH_BOUND_MIB} MiB): {}",
            if ok { "within" } else { "EXCEEDED" }
        );
        failed |= !ok || o.tally.wrong > 0;
    }
    if failed {
        std::process::exit(1);
    }
}
