//! Virtual environments for the tests, made with no network: `python -m
//! venv --without-pip`, then a package and two `.pth` files written into
//! its site-packages by hand. Included with `#[path]` by the tests that use
//! it, beside `mod common`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

#[allow(unused_imports)]
pub(crate) use crate::common::TempDir;

/// The probe package in each test venv: `facts()` is what the tests check.
const PROBE: &str = "\
import sys

VALUE = 'from the venv'

def facts(*_):
    import gilpool_pth_probe
    return {
        'value': VALUE,
        'pth_value': gilpool_pth_probe.VALUE,
        'pth_runs': getattr(sys, 'gilpool_pth_runs', 0),
        'prefix': sys.prefix,
        'exec_prefix': sys.exec_prefix,
        'executable': sys.executable,
        'file': __file__,
    }
";

/// A test venv.
pub(crate) struct TestVenv {
    /// The environment's folder.
    pub(crate) root: PathBuf,
    /// Its `lib/pythonX.Y/site-packages`.
    pub(crate) site: PathBuf,
    /// How many times its own `bin/python` runs the counting `.pth` file
    /// (CPython's `site` processes a venv's site-packages twice).
    pub(crate) pth_runs: i64,
}

/// Makes a venv `parent/name` with `python` (which must be the Python of
/// the minor version `minor`), holding the package `gilpool_venv_probe`,
/// a `.pth` file that adds `parent/name-extra` (holding
/// `gilpool_pth_probe`) and one that counts its runs in `sys`.
pub(crate) fn make(parent: &Path, name: &str, python: &str, minor: &str) -> TestVenv {
    let root = parent.join(name);
    let out = Command::new(python)
        .args(["-m", "venv", "--without-pip"])
        .arg(&root)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        out.status.success(),
        "{python} -m venv failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let site = root.join(format!("lib/python{minor}/site-packages"));
    write_probe(&site, &parent.join(format!("{name}-extra")));
    let out = Command::new(root.join("bin/python"))
        .args([
            "-c",
            "import sys; print(getattr(sys, 'gilpool_pth_runs', 0))",
        ])
        .output()
        .unwrap();
    let pth_runs = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    TestVenv {
        root,
        site,
        pth_runs,
    }
}

/// Writes the probe package and the two `.pth` files into `site`.
pub(crate) fn write_probe(site: &Path, extra: &Path) {
    std::fs::create_dir_all(site.join("gilpool_venv_probe")).unwrap();
    std::fs::write(site.join("gilpool_venv_probe/__init__.py"), PROBE).unwrap();
    std::fs::create_dir_all(extra).unwrap();
    std::fs::write(
        extra.join("gilpool_pth_probe.py"),
        "VALUE = 'added by a .pth file'\n",
    )
    .unwrap();
    std::fs::write(
        site.join("gilpool_extra.pth"),
        format!("{}\n", extra.display()),
    )
    .unwrap();
    std::fs::write(
        site.join("gilpool_count.pth"),
        "import sys; sys.gilpool_pth_runs = getattr(sys, 'gilpool_pth_runs', 0) + 1\n",
    )
    .unwrap();
}

/// A hand-made venv for another minor version than `minor` (no Python
/// needed: only its `pyvenv.cfg` and `lib/pythonX.Y` are read).
pub(crate) fn make_other_version(parent: &Path, minor: &str) -> (PathBuf, String) {
    let other = if minor == "3.12" { "3.11" } else { "3.12" };
    let version = format!("{other}.4");
    let root = parent.join(format!("venv-{other}"));
    std::fs::create_dir_all(root.join(format!("lib/python{other}/site-packages"))).unwrap();
    std::fs::write(
        root.join("pyvenv.cfg"),
        format!(
            "home = /opt/python{other}/bin\ninclude-system-site-packages = false\nversion = {version}\n"
        ),
    )
    .unwrap();
    (root, version)
}
