//! The binary in a virtual environment: `gilpool run --venv DIR` and
//! `VIRTUAL_ENV` import from the environment in every mode, with
//! `sys.prefix` the environment's; `GILPOOL_IGNORE_VIRTUAL_ENV=1` turns
//! `VIRTUAL_ENV` off; a venv of another Python version exits 2 naming both.

mod common;
#[path = "common/venv.rs"]
mod venv;

use serde_json::Value as Json;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const TARGET: &str =
    "def facts(_):\n    import gilpool_venv_probe\n    return gilpool_venv_probe.facts()\n";

fn gilpool(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gilpool"));
    cmd.current_dir(dir)
        .env_remove("VIRTUAL_ENV")
        .env_remove("GILPOOL_IGNORE_VIRTUAL_ENV");
    cmd
}

fn run(mut cmd: Command, args: &[&str]) -> Output {
    cmd.arg("run")
        .args(["--workers", "1", "--no-pin"])
        .args(args)
        .arg("probe.py:facts");
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("gilpool runs");
    // A setup error exits before reading: the pipe may be closed.
    let _ = child.stdin.take().unwrap().write_all(b"[1]\n[2]\n");
    child.wait_with_output().unwrap()
}

fn results(out: &Output) -> Vec<Json> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn run_in_a_venv_by_flag_and_by_environment() {
    let tmp = venv::TempDir::new("venv-cli");
    let dir = tmp.path();
    std::fs::write(dir.join("probe.py"), TARGET).unwrap();
    let minor = gilpool::BUILD_PYTHON;
    let env = venv::make(dir, "env", gilpool::BUILD_PYTHON_EXECUTABLE, minor);
    let root = env.root.to_str().unwrap();
    let modes: &[&str] = if gilpool::Mode::SubInterpreters.is_supported() {
        &["subinterpreters", "single-gil"]
    } else {
        &["single-gil"]
    };
    let check = |out: &Output, how: &str| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{how}: {stderr}");
        let rs = results(out);
        assert_eq!(rs.len(), 2, "{how}: {rs:?}");
        for r in rs {
            let facts = &r["ok"];
            assert_eq!(facts["value"], "from the venv", "{how}: {r}");
            assert_eq!(facts["pth_value"], "added by a .pth file", "{how}: {r}");
            assert_eq!(facts["prefix"], root, "{how}: {r}");
            assert_eq!(facts["executable"], format!("{root}/bin/python"), "{how}");
        }
    };
    for mode in modes {
        let out = run(gilpool(dir), &["--mode", mode, "--venv", "env"]);
        check(&out, &format!("--venv, {mode}"));
        let mut cmd = gilpool(dir);
        cmd.env("VIRTUAL_ENV", &env.root);
        let out = run(cmd, &["--mode", mode]);
        check(&out, &format!("VIRTUAL_ENV, {mode}"));
    }

    // GILPOOL_IGNORE_VIRTUAL_ENV=1: the venv's package is not there, so
    // each task fails (exit 1).
    let mut cmd = gilpool(dir);
    cmd.env("VIRTUAL_ENV", &env.root)
        .env("GILPOOL_IGNORE_VIRTUAL_ENV", "1");
    let out = run(cmd, &[]);
    assert_eq!(out.status.code(), Some(1));
    for r in results(&out) {
        assert_eq!(r["error"]["type"], "ModuleNotFoundError", "{r}");
    }

    // A venv of another Python version: a setup error naming both.
    let (other, other_version) = venv::make_other_version(dir, minor);
    for by_env in [false, true] {
        let mut cmd = gilpool(dir);
        let out = if by_env {
            cmd.env("VIRTUAL_ENV", &other);
            run(cmd, &[])
        } else {
            run(cmd, &["--venv", other.to_str().unwrap()])
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!("is for Python {other_version}"))
                && stderr.contains(&format!("embeds Python {minor}")),
            "{stderr}"
        );
        if by_env {
            assert!(stderr.contains("GILPOOL_IGNORE_VIRTUAL_ENV"), "{stderr}");
        }
    }
}
