//! `gilpool bench` end to end, on a small trivial workload: every peer of
//! the Python side runs through the baselines' serve mode, gilpool's rows
//! run in the same rounds, and the report (stdout, JSON, SVG) holds every
//! round's figure, the paired comparisons and the targets. The chart and
//! the JSON are written only where `--chart` and `--json` say.

use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use std::process::Command;

fn gilpool() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gilpool"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gilpool-cli-bench-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn entries(report: &Json) -> &Vec<Json> {
    report["workloads"][0]["entries"].as_array().unwrap()
}

fn entry<'a>(report: &'a Json, key: &str) -> &'a Json {
    entries(report)
        .iter()
        .find(|e| e["key"] == key)
        .unwrap_or_else(|| panic!("no entry {key} in {report:#}"))
}

/// `gilpool bench ARGS --chart CHART --json JSON`, which must exit 0: its
/// stdout.
fn bench_ok(args: &[&str], chart: &Path, json: &Path) -> String {
    let out = gilpool()
        .arg("bench")
        .args(args)
        .arg("--chart")
        .arg(chart)
        .arg("--json")
        .arg(json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

#[test]
fn bench_runs_every_peer_in_interleaved_rounds() {
    let dir = scratch("full");
    let (chart, json) = (dir.join("chart.svg"), dir.join("bench.json"));
    let stdout = bench_ok(
        &[
            "--workload",
            "trivial",
            "--tasks-trivial",
            "400",
            "--workers",
            "2",
            "--repeat",
            "2",
            "--paired",
            "2",
            "--latency-samples",
            "300",
        ],
        &chart,
        &json,
    );
    let report: Json = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["repeat"], 2);
    assert_eq!(report["paired_passes_per_round"], 2);
    // Runs per entry: one a round, two a round for the paired group.
    let runs = |key: &str| {
        if [
            "ceiling",
            "ceiling_sub",
            "mp_pool_default",
            "mp_pool_chunk1",
            "gilpool_sub_x2_b64_guided",
        ]
        .contains(&key)
        {
            4
        } else {
            2
        }
    };

    // Every Python peer ran both rounds with right results, or says why not.
    for key in [
        "sequential",
        "threads",
        "mp_pool_default",
        "mp_pool_chunk1",
        "ppe_chunk1",
        "ppe_tuned",
        "interpreters",
        "interpreters_per_task",
        "ceiling",
        "ceiling_sub",
    ] {
        let e = entry(&report, key);
        if e.get("skipped").is_some() {
            assert!(
                key.starts_with("interpreters") || key == "ceiling_sub",
                "{key} skipped: {e}"
            );
            continue;
        }
        assert_eq!(e["verified"], true, "{key}: {e}");
        assert_eq!(
            e["seconds_all"].as_array().unwrap().len(),
            runs(key),
            "{key}: {e}"
        );
        assert_eq!(e["tasks"], 400, "{key}: {e}");
    }
    // gilpool's rows: guided, chunks of 64, one task per input; every configuration.
    let ours: Vec<&Json> = entries(&report)
        .iter()
        .filter(|e| e["key"].as_str().unwrap().starts_with("gilpool_"))
        .collect();
    assert!(ours.len() >= 6, "{ours:?}");
    for suffix in ["b64_guided", "b64_chunks", "b1_chunks"] {
        assert!(
            ours.iter()
                .any(|e| e["key"].as_str().unwrap().ends_with(suffix)),
            "no {suffix} row: {ours:?}"
        );
    }
    for e in &ours {
        assert_eq!(e["verified"], true, "{e}");
        let key = e["key"].as_str().unwrap();
        assert_eq!(e["seconds_all"].as_array().unwrap().len(), runs(key), "{e}");
        let best = e["seconds"].as_f64().unwrap();
        let all: Vec<f64> = e["seconds_all"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_f64().unwrap())
            .collect();
        assert_eq!(best, all.iter().copied().fold(f64::INFINITY, f64::min));
    }
    // Paired runs: gilpool with both workers against both ceilings and the
    // pools, and the two ceilings against each other; one ratio per pass
    // (only where subinterpreters exist).
    let paired = report["workloads"][0]["paired"].as_array().unwrap();
    let sub = ours.iter().any(|e| e["key"] == "gilpool_sub_x2_b64_guided");
    if sub {
        assert_eq!(paired.len(), 4, "{paired:?}");
        for p in paired {
            let ratios = p["ratios_peer_s_over_gilpool_s"].as_array().unwrap();
            assert_eq!(ratios.len(), 4, "{p}");
            let (q1, median, q3) = (
                p["q1"].as_f64().unwrap(),
                p["median"].as_f64().unwrap(),
                p["q3"].as_f64().unwrap(),
            );
            assert!(q1 <= median && median <= q3, "{p}");
            assert!(ratios.iter().all(|r| r.as_f64().unwrap() > 0.0), "{p}");
        }
        assert!(stdout.contains("Paired runs"), "{stdout}");
    } else {
        assert!(paired.is_empty(), "{paired:?}");
    }
    // The raw answers of the serve mode are kept.
    let raw = &report["workloads"][0]["baselines_raw"];
    assert!(raw["ready"]["ready"].is_array(), "{raw}");
    assert!(!raw["runs"].as_array().unwrap().is_empty(), "{raw}");
    // Targets and chart.
    assert!(stdout.contains("## targets (this run)"), "{stdout}");
    assert!(!report["targets"].as_array().unwrap().is_empty());
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "{svg}");
    assert!(svg.contains("ceiling"), "chart without the ceiling row");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_writes_no_file_unless_asked() {
    // Run from an empty folder: without --chart and --json the report goes
    // to stdout only, and nothing lands in the current directory.
    let dir = scratch("no-files");
    let out = Command::new(env!("CARGO_BIN_EXE_gilpool"))
        .current_dir(&dir)
        .args(["bench", "--workload", "trivial", "--tasks-trivial", "64"])
        .args(["--workers", "1", "--repeat", "1", "--paired", "1"])
        .args(["--latency-samples", "0", "--skip-python"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("## trivial"), "{stdout}");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "bench wrote {left:?}");
    assert!(!stderr.contains("written to"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_rejects_zero_rounds_with_usage_error() {
    let out = gilpool()
        .args(["bench", "--repeat", "0", "--chart"])
        .arg(Path::new("/nonexistent/never-written.svg"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--repeat"), "{stderr}");
}

#[test]
fn bench_with_several_worker_counts_prints_the_scaling_table() {
    let dir = scratch("scaling");
    let (chart, json) = (dir.join("scaling.svg"), dir.join("scaling.json"));
    let stdout = bench_ok(
        &[
            "--workload",
            "trivial",
            "--tasks-trivial",
            "300",
            "--workers",
            "1,2",
            "--repeat",
            "2",
            "--paired",
            "1",
            "--latency-samples",
            "0",
        ],
        &chart,
        &json,
    );
    assert!(stdout.contains("# gilpool bench: scaling"), "{stdout}");
    // One row per N, each with N times the tasks per worker.
    assert!(stdout.contains("\n| 1 | 300 | "), "{stdout}");
    assert!(stdout.contains("\n| 2 | 600 | "), "{stdout}");
    let report: Json = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let points = report["workloads"][0]["points"].as_array().unwrap();
    assert_eq!(points.len(), 2, "{report:#}");
    for (p, n) in points.iter().zip([1, 2]) {
        assert_eq!(p["workers"], n);
        assert_eq!(p["tasks"], 300 * n);
        for key in ["gilpool_tasks_per_s", "ceiling_tasks_per_s"] {
            assert!(p[key].as_f64().unwrap() > 0.0, "{key} in {p:#}");
        }
        // Two rounds, one paired pass each: two ratios per comparison.
        for key in ["vs_ceiling", "vs_best_pool"] {
            let ratios = p[key]["ratios_peer_s_over_gilpool_s"].as_array().unwrap();
            assert_eq!(ratios.len(), 2, "{key} in {p:#}");
            assert!(ratios.iter().all(|r| r.as_f64().unwrap() > 0.0));
        }
    }
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");
    for label in ["trivial: vs N-process ceiling", "trivial: vs best Pool(N)"] {
        assert!(svg.contains(label), "no {label:?} in the chart");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_rejects_a_repeated_worker_count() {
    let out = gilpool()
        .args(["bench", "--workers", "1,2,2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--workers 1,2,2"), "{stderr}");
}
