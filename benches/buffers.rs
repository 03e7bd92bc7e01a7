//! What handing 64 MiB to Python costs: a `SharedBuffer` (a read-only
//! memoryview of Rust memory, no copy) against 64 bytes, in SubInterpreters
//! and SingleGil, beside a copied `bytes` argument; pickling the same
//! 64 MiB to a `ProcessPoolExecutor` worker and `multiprocessing.shared_memory`
//! (`python/gilpool_buffer_baselines.py`, a child process of this bench,
//! same run); numpy's sum over the buffer on the main interpreter against
//! plain numpy on the same array. Prints a Markdown table and the ratios.
//!
//! `cargo bench --bench buffers` (about a minute). numpy comes from
//! `GILPOOL_BENCH_VENV` (a virtualenv with numpy), else the virtualenv the
//! tests made under the target directory; without either, the numpy rows
//! say why they are skipped.

mod common;

use common::fmt_duration;

use gilpool::{Engine, Handler, Mode, SharedBuffer, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BIG: usize = 64 << 20;
const SMALL: usize = 64;

fn python_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Median time of `reps` calls of `call`, after 3 unmeasured ones.
fn time_calls(reps: usize, mut call: impl FnMut()) -> Duration {
    for _ in 0..3 {
        call();
    }
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                call();
                t.elapsed()
            })
            .collect(),
    )
}

fn pass_buffer(h: &Handler, buf: &SharedBuffer, reps: usize) -> Duration {
    let n = buf.nbytes() as u64;
    time_calls(reps, || {
        let got: u64 = h.invoke((buf.clone(),)).expect("buffer_len");
        assert_eq!(got, n);
    })
}

fn pass_bytes(h: &Handler, len: usize, reps: usize) -> Duration {
    // The copies are made before timing: only handing them over is timed.
    let mut payloads: Vec<Value> = (0..reps + 3)
        .map(|_| Value::Bytes(vec![7u8; len]))
        .collect();
    time_calls(reps, || {
        let got: u64 = h
            .invoke((payloads.pop().expect("a payload"),))
            .expect("buffer_len");
        assert_eq!(got as usize, len);
    })
}

fn secs(d: f64) -> Duration {
    Duration::from_secs_f64(d.max(0.0))
}

/// A virtualenv with numpy: `(its python, its site-packages)`.
fn numpy_venv(version: &str) -> Result<(PathBuf, String), String> {
    let dir = match std::env::var_os("GILPOOL_BENCH_VENV") {
        Some(d) => PathBuf::from(d),
        None => {
            let d =
                PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("numpy-venv-{version}"));
            if !d.exists() {
                return Err(format!(
                    "no GILPOOL_BENCH_VENV and no test virtualenv at {} (run `cargo test --release --test buffers` once, or point GILPOOL_BENCH_VENV at a virtualenv with numpy for Python {version})",
                    d.display()
                ));
            }
            d
        }
    };
    let python = dir.join("bin/python");
    let out = Command::new(&python)
        .args([
            "-c",
            "import numpy, sysconfig; print(sysconfig.get_paths()['purelib'])",
        ])
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} cannot import numpy: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok((
        python,
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

fn baselines(python: &Path) -> Result<serde_json::Value, String> {
    let out = Command::new(python)
        .arg(python_dir().join("gilpool_buffer_baselines.py"))
        .args(["--bytes", &BIG.to_string(), "--reps", "20"])
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

struct Table {
    rows: Vec<[String; 4]>,
}

impl Table {
    fn row(&mut self, what: &str, payload: &str, t: Option<Duration>, note: String) {
        self.rows.push([
            what.into(),
            payload.into(),
            t.map_or("—".into(), fmt_duration),
            note,
        ]);
    }
}

fn main() {
    // Probe the interpreter once to find numpy for its version.
    let probe = Engine::builder()
        .mode(Mode::SingleGil)
        .workers(1)
        .pin(false)
        .sys_path(python_dir())
        .build()
        .expect("engine starts");
    let version = probe.python_version();
    let short = format!("{}.{}", version.major, version.minor);
    let executable = probe.python_executable().to_string();
    probe.shutdown();
    let venv = numpy_venv(&short);

    let mut t = Table { rows: Vec::new() };
    let mut ratios: Vec<String> = Vec::new();
    let big = SharedBuffer::from_vec(vec![1u8; BIG]);
    let small = SharedBuffer::from_vec(vec![1u8; SMALL]);
    let mut shared_big = Vec::new();
    let mut numpy_gilpool: Option<Duration> = None;
    let mut modes = Vec::new();
    if Mode::SubInterpreters.is_supported() {
        modes.push(Mode::SubInterpreters);
    }
    modes.push(Mode::SingleGil);
    for mode in modes {
        let mut b = Engine::builder()
            .mode(mode)
            .workers(1)
            .pin(false)
            .sys_path(python_dir());
        if let Ok((_, site)) = &venv {
            b = b.sys_path(site);
        }
        let engine = b.build().expect("engine starts");
        let h = engine
            .load("gilpool_workloads", "buffer_len")
            .expect("buffer_len");
        let s = pass_buffer(&h, &small, 2000);
        let g = pass_buffer(&h, &big, 2000);
        let c = pass_bytes(&h, BIG, 10);
        let name = format!("gilpool {mode}: SharedBuffer");
        t.row(&name, "64 B", Some(s), String::new());
        t.row(
            &name,
            "64 MiB",
            Some(g),
            format!("{:.2}x the 64 B call", g.as_secs_f64() / s.as_secs_f64()),
        );
        t.row(
            &format!("gilpool {mode}: bytes (copied)"),
            "64 MiB",
            Some(c),
            format!(
                "{:.0}x the SharedBuffer call",
                c.as_secs_f64() / g.as_secs_f64()
            ),
        );
        ratios.push(format!(
            "SharedBuffer 64 MiB / 64 B in {mode}: {:.2}x",
            g.as_secs_f64() / s.as_secs_f64()
        ));
        shared_big.push((mode, g));
        if mode == Mode::SingleGil {
            match &venv {
                Ok(_) => {
                    let sum = engine
                        .load("gilpool_workloads", "buffer_sum")
                        .expect("buffer_sum");
                    let arr = SharedBuffer::from_vec((0..BIG / 8).map(|i| i as f64).collect());
                    let n = (BIG / 8) as f64;
                    let want = n * (n - 1.0) / 2.0;
                    let d = time_calls(20, || {
                        let got: f64 = sum.invoke((arr.clone(),)).expect("buffer_sum");
                        assert!((got - want).abs() <= want * 1e-9, "{got} != {want}");
                    });
                    t.row(
                        "gilpool SingleGil: numpy.frombuffer(view).sum()",
                        "64 MiB f64",
                        Some(d),
                        String::new(),
                    );
                    numpy_gilpool = Some(d);
                }
                Err(why) => t.row(
                    "gilpool SingleGil: numpy.frombuffer(view).sum()",
                    "64 MiB f64",
                    None,
                    format!("skipped: {why}"),
                ),
            }
        }
        engine.shutdown();
    }

    let child_python = venv
        .as_ref()
        .map(|(p, _)| p.clone())
        .unwrap_or_else(|_| PathBuf::from(&executable));
    match baselines(&child_python) {
        Ok(j) => {
            let get = |k: &str| j.get(k).and_then(serde_json::Value::as_f64);
            let (ps, pb) = (get("pickle_small"), get("pickle_big"));
            let (ss, sb) = (get("shm_small"), get("shm_big"));
            t.row(
                "ProcessPoolExecutor(1): pickled",
                "64 B",
                ps.map(secs),
                String::new(),
            );
            t.row(
                "ProcessPoolExecutor(1): pickled",
                "64 MiB",
                pb.map(secs),
                ps.zip(pb).map_or(String::new(), |(s, b)| {
                    format!("{:.0}x the 64 B call", b / s)
                }),
            );
            t.row(
                "ProcessPoolExecutor(1): shared_memory by name",
                "64 B",
                ss.map(secs),
                String::new(),
            );
            t.row(
                "ProcessPoolExecutor(1): shared_memory by name",
                "64 MiB",
                sb.map(secs),
                format!(
                    "{:.2}x the 64 B call; creating the block and copying the data in once: {}",
                    sb.zip(ss).map_or(f64::NAN, |(b, s)| b / s),
                    get("shm_setup").map_or("?".into(), |v| fmt_duration(secs(v)))
                ),
            );
            if let Some(pb) = pb {
                for (mode, g) in &shared_big {
                    ratios.push(format!(
                        "pickling 64 MiB to a ProcessPoolExecutor worker / SharedBuffer 64 MiB in {mode}: {:.0}x",
                        pb / g.as_secs_f64()
                    ));
                }
                if let Some(ps) = ps {
                    ratios.push(format!("pickle 64 MiB / 64 B: {:.0}x", pb / ps));
                }
            }
            if let (Some(sb), Some(ss)) = (sb, ss) {
                ratios.push(format!("shared_memory 64 MiB / 64 B: {:.2}x", sb / ss));
            }
            match get("numpy_sum") {
                Some(n) => {
                    t.row(
                        "plain numpy (child process): a.sum()",
                        "64 MiB f64",
                        Some(secs(n)),
                        format!(
                            "numpy {}",
                            j.get("numpy_version")
                                .and_then(|v| v.as_str())
                                .unwrap_or("?")
                        ),
                    );
                    if let Some(d) = numpy_gilpool {
                        ratios.push(format!(
                            "numpy sum through gilpool (SingleGil, SharedBuffer) / plain numpy: {:.2}x",
                            d.as_secs_f64() / n
                        ));
                    }
                }
                None => t.row(
                    "plain numpy (child process): a.sum()",
                    "64 MiB f64",
                    None,
                    format!(
                        "skipped: {}",
                        j.get("numpy_error")
                            .and_then(|v| v.as_str())
                            .unwrap_or("no numpy")
                    ),
                ),
            }
        }
        Err(e) => t.row(
            "python/gilpool_buffer_baselines.py",
            "",
            None,
            format!("failed: {}", e.trim()),
        ),
    }

    println!(
        "Python {version} ({executable}); numpy: {}",
        match &venv {
            Ok((p, _)) => p.display().to_string(),
            Err(e) => format!("none ({e})"),
        }
    );
    println!();
    println!("| path | payload | median per call | note |");
    println!("|---|---|--:|---|");
    for r in &t.rows {
        println!("| {} | {} | {} | {} |", r[0], r[1], r[2], r[3]);
    }
    println!();
    for r in &ratios {
        println!("- {r}");
    }
}
