//! `gilpool demo`: the bundled CPU-bound workload through 1 worker and all
//! workers in each mode this build supports, with a table of speedups.

use super::{progress, workloads_dir};
use gilpool::{Args, Engine, Mode};
use std::process::ExitCode;
use std::time::Instant;

/// Options of `gilpool demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Tasks per configuration.
    #[arg(long, default_value_t = 1200)]
    tasks: usize,
    /// Size argument of each task (`gilpool_workloads.heavy(n)`; the default
    /// is about 1 ms of pure Python).
    #[arg(long)]
    n: Option<i64>,
    /// Workers for the "all workers" rows (default: the number of cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Rounds: every row runs once per round, rounds interleaved, and the
    /// table shows each row's median and range, so one slow spell of a
    /// busy host shows as spread rather than as a result.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Force the progress bar on stderr even when it is not a terminal.
    #[arg(long)]
    progress: bool,
}

struct Row {
    mode: Mode,
    workers: usize,
    /// One per round.
    seconds: Vec<f64>,
    checksum: i64,
}

impl Row {
    fn median(&self) -> f64 {
        let mut s = self.seconds.clone();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    }
    fn range(&self) -> (f64, f64) {
        let min = self.seconds.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.seconds.iter().copied().fold(0.0, f64::max);
        (min, max)
    }
}

pub(crate) fn main(args: DemoArgs) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gilpool demo: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: DemoArgs) -> Result<(), String> {
    if args.tasks == 0 {
        return Err("--tasks must be at least 1".into());
    }
    if args.repeat == 0 {
        return Err("--repeat must be at least 1".into());
    }
    let all = args.workers.unwrap_or_else(gilpool::host_cores);
    if all == 0 {
        return Err("--workers must be at least 1".into());
    }
    let dir = workloads_dir();
    let mut modes = vec![];
    if Mode::SubInterpreters.is_supported() {
        modes.push(Mode::SubInterpreters);
    }
    modes.push(Mode::SingleGil);
    let mut counts = vec![1];
    if all > 1 {
        counts.push(all);
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut version = String::new();
    let mut executable = String::new();
    let configs: Vec<(Mode, usize)> = modes
        .iter()
        .flat_map(|&m| counts.iter().map(move |&w| (m, w)))
        .collect();
    for round in 0..args.repeat {
        for &(mode, workers) in &configs {
            let engine = Engine::builder()
                .mode(mode)
                .workers(workers)
                .sys_path(&dir)
                .build()
                .map_err(|e| e.to_string())?;
            // Every interpreter up before the warm-up and the clock.
            engine.wait_ready().map_err(|e| e.to_string())?;
            version = engine.python_version().to_string();
            executable = engine.python_executable().to_string();
            let heavy = engine
                .load("gilpool_workloads", "heavy")
                .map_err(|e| e.to_string())?;
            let task_args = || match args.n {
                Some(n) => Args::new().arg(n),
                None => Args::new(),
            };
            // Warm every interpreter (import, first-call caches) off the clock.
            for f in (0..workers * 2)
                .map(|_| heavy.submit::<_, i64>(task_args()))
                .collect::<Vec<_>>()
            {
                f.map_err(|e| e.to_string())?
                    .wait()
                    .map_err(|e| e.to_string())?;
            }
            let bar = progress(
                Some(args.tasks as u64),
                args.progress,
                &format!("{mode} x{workers} ({}/{})", round + 1, args.repeat),
            );
            let start = Instant::now();
            let mut checksum: i64 = 0;
            for r in heavy.map((0..args.tasks).map(|_| task_args())) {
                let v: i64 = r.map_err(|e| e.to_string())?;
                checksum = checksum.wrapping_add(v);
                bar.inc(1);
            }
            let seconds = start.elapsed().as_secs_f64();
            bar.finish_and_clear();
            engine.shutdown();
            match rows
                .iter_mut()
                .find(|r| r.mode == mode && r.workers == workers)
            {
                Some(row) => {
                    row.seconds.push(seconds);
                    if row.checksum != checksum {
                        return Err(format!("{mode} x{workers}: results differ between rounds"));
                    }
                }
                None => rows.push(Row {
                    mode,
                    workers,
                    seconds: vec![seconds],
                    checksum,
                }),
            }
        }
    }
    let reference = plain_python(&executable, &dir, args.n);
    println!(
        "gilpool demo: gilpool_workloads.heavy, {} tasks per row, {} interleaved round(s), Python {version}",
        args.tasks, args.repeat
    );
    println!();
    println!(
        "| {:<15} | {:>7} | {:>9} | {:>17} | {:>9} | {:>7} | {:>14} |",
        "mode", "workers", "median s", "range s", "tasks/s", "speedup", "result"
    );
    println!(
        "|{:-<17}|{:->9}|{:->11}|{:->19}|{:->11}|{:->9}|{:->16}|",
        "", "", "", "", "", "", ""
    );
    for row in &rows {
        let base = rows
            .iter()
            .find(|r| r.mode == row.mode && r.workers == 1)
            .map_or(row.median(), Row::median);
        let per_task = row.checksum / args.tasks as i64;
        let (lo, hi) = row.range();
        println!(
            "| {:<15} | {:>7} | {:>9.3} | {:>17} | {:>9.1} | {:>6.2}x | {:>14} |",
            row.mode.to_string(),
            row.workers,
            row.median(),
            format!("{lo:.3}–{hi:.3}"),
            args.tasks as f64 / row.median(),
            base / row.median(),
            per_task
        );
    }
    println!();
    println!("speedup: median tasks/s against 1 worker of the same mode, same run; range: fastest and slowest round (a wide one means a busy host); result: heavy(n) as returned");
    match reference {
        Ok(v) => {
            let same = rows
                .iter()
                .all(|r| r.checksum == v.wrapping_mul(args.tasks as i64));
            println!(
                "plain Python ({executable}): heavy(n) = {v} — {}",
                if same {
                    "identical in every row"
                } else {
                    "MISMATCH"
                }
            );
            if !same {
                return Err("results differ between modes and plain Python".into());
            }
        }
        Err(e) => println!("plain Python reference not run: {e}"),
    }
    Ok(())
}

/// `heavy(n)` computed by a plain `python` process from the same install.
fn plain_python(executable: &str, dir: &std::path::Path, n: Option<i64>) -> Result<i64, String> {
    let arg = n.map_or("gilpool_workloads.HEAVY_N".to_string(), |n| n.to_string());
    let code = format!("import gilpool_workloads; print(gilpool_workloads.heavy({arg}))");
    let out = std::process::Command::new(executable)
        .arg("-c")
        .arg(code)
        .env("PYTHONPATH", dir)
        .output()
        .map_err(|e| format!("cannot start {executable}: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("unexpected output: {e}"))
}
