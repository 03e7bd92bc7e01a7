//! `gilpool doctor`: the build's and the loaded Python, modes, warnings,
//! and where each named module runs; exit 0 when every module runs
//! somewhere, 1 otherwise. With a venv holding numpy (installed from PyPI;
//! skipped, saying why, when pip cannot get it), numpy runs on the main
//! interpreter only and the refusal is shown.

mod common;
#[path = "common/venv.rs"]
mod venv;

use serde_json::Value as Json;
use std::process::{Command, Output};

fn doctor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gilpool"))
        .arg("doctor")
        .args(args)
        .env_remove("VIRTUAL_ENV")
        .output()
        .expect("gilpool doctor runs")
}

fn json(out: &Output) -> Json {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON object ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn module<'a>(report: &'a Json, name: &str) -> &'a Json {
    report["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {report:#}"))
}

#[test]
fn doctor_reports_pythons_modes_and_modules() {
    let sub = gilpool::Mode::SubInterpreters.is_supported();
    let minor = gilpool::BUILD_PYTHON;

    let out = doctor(&["json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for label in [
        "build python:",
        "libpython:",
        "sys.executable:",
        "module json:",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(label)),
            "{label}\n{text}"
        );
    }
    let line = text
        .lines()
        .find(|l| l.starts_with("module json:"))
        .unwrap();
    let expect = if sub { "sub lane" } else { "main interpreter" };
    assert!(line.contains(expect), "{line}");
    // Before 3.12 the fallback of Mode::Auto is a warning, shown first.
    assert_eq!(text.starts_with("WARNING: "), !sub, "{text}");

    let out = doctor(&["--json", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let r = json(&out);
    assert_eq!(r["ok"], true);
    assert_eq!(r["build"]["python"], minor);
    assert_eq!(r["modes"]["own_gil"], sub);
    let lib = r["python"]["library"].as_str().unwrap();
    assert!(lib.contains(&format!("libpython{minor}")), "{lib}");
    assert!(r["python"]["version"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{minor}.")));
    assert_eq!(module(&r, "json")["runs"], if sub { "sub" } else { "main" });
    let warned = r["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap().contains("Mode::Auto runs SingleGil"));
    assert_eq!(warned, !sub, "{r:#}");

    // A missing module: exit 1, the error named.
    let out = doctor(&["--json", "json", "gilpool_no_such_module"]);
    assert_eq!(out.status.code(), Some(1));
    let r = json(&out);
    assert_eq!(r["ok"], false);
    let m = module(&r, "gilpool_no_such_module");
    assert_eq!(m["runs"], "fails");
    assert!(
        m["error"].as_str().unwrap().contains("No module named"),
        "{m}"
    );
    let out = doctor(&["gilpool_no_such_module"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("fails: "));
}

#[test]
fn doctor_in_a_venv_with_numpy() {
    let tmp = venv::TempDir::new("doctor-numpy");
    let root = tmp.path().join("np");
    let python = gilpool::BUILD_PYTHON_EXECUTABLE;
    let made = Command::new(python)
        .args(["-m", "venv"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{python} -m venv: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let pip = Command::new(root.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--only-binary",
            ":all:",
            "numpy",
        ])
        .output()
        .unwrap();
    if !pip.status.success() {
        eprintln!(
            "SKIPPED doctor_in_a_venv_with_numpy: pip could not install numpy: {}",
            String::from_utf8_lossy(&pip.stderr)
        );
        return;
    }
    let out = doctor(&["--venv", root.to_str().unwrap(), "--json", "numpy", "json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let r = json(&out);
    assert_eq!(r["python"]["venv"], root.to_str().unwrap(), "{r:#}");
    let np = module(&r, "numpy");
    assert_eq!(np["runs"], "main", "{np}");
    if gilpool::Mode::SubInterpreters.is_supported() {
        let refusal = np["refusal"].as_str().unwrap_or_else(|| panic!("{np}"));
        assert!(
            refusal.contains("does not support loading in subinterpreters")
                || refusal.contains("cannot load module more than once per process"),
            "{refusal}"
        );
        assert_eq!(module(&r, "json")["runs"], "sub");
        let out = doctor(&["--venv", root.to_str().unwrap(), "numpy"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("module numpy:"))
            .unwrap();
        assert!(
            line.contains("main interpreter only") && line.contains(refusal),
            "{line}"
        );
    }
}

/// A libpython of another patch release than the build's (the system's,
/// found first through `LD_LIBRARY_PATH`) runs with a warning naming both.
/// Skipped, saying why, where the system has no libpython of this minor
/// version or it is the build's own release.
#[test]
fn another_patch_release_of_libpython_is_a_warning() {
    let minor = gilpool::BUILD_PYTHON;
    let dir = ["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"]
        .into_iter()
        .find(|d| std::path::Path::new(&format!("{d}/libpython{minor}.so.1.0")).exists());
    let Some(dir) = dir else {
        eprintln!("SKIPPED: no system libpython{minor}.so.1.0");
        return;
    };
    let out = Command::new(env!("CARGO_BIN_EXE_gilpool"))
        .args(["doctor", "--json"])
        .env_remove("VIRTUAL_ENV")
        .env("LD_LIBRARY_PATH", dir)
        .output()
        .unwrap();
    let r = json(&out);
    let running = r["python"]["version"].as_str().unwrap();
    if running == gilpool::BUILD_PYTHON_VERSION {
        eprintln!("SKIPPED: the system's libpython{minor} is the build's release {running}");
        return;
    }
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let warned = r["warnings"].as_array().unwrap().iter().any(|w| {
        let w = w.as_str().unwrap();
        w.contains(gilpool::BUILD_PYTHON_VERSION) && w.contains(running) && w.contains(dir)
    });
    assert!(warned, "{r:#}");
}
