//! Ties this crate to the interpreter pyo3-ffi builds against, refuses
//! Pythons older than the oldest one gilpool supports, warns about ones
//! without own-GIL subinterpreters, and hands the interpreter's facts to
//! the code (`GILPOOL_BUILD_*`) and to dependents (`DEP_GILPOOL_PYTHON_*`).

use std::process::Command;

fn main() {
    pyo3_build_config::use_pyo3_cfgs();
    pyo3_build_config::add_libpython_rpath_link_args();
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    let config = pyo3_build_config::get();
    let version = config.version();
    let executable = config.executable().unwrap_or("python3");
    if (version.major, version.minor) < (3, 9) {
        panic!(
            "gilpool needs CPython >= 3.9, but the build interpreter {executable} \
             (PYO3_PYTHON) is Python {}.{}; set PYO3_PYTHON to CPython 3.9 or newer",
            version.major, version.minor
        );
    }
    // The patch release, which pyo3's config does not record: the runtime
    // compares it with the libpython it loads (empty when unknown).
    let full = config
        .executable()
        .and_then(|exe| patch_version(exe, version.major, version.minor))
        .unwrap_or_default();
    let shown = if full.is_empty() {
        format!("{}.{}", version.major, version.minor)
    } else {
        full.clone()
    };
    if (version.major, version.minor) < (3, 12) {
        println!(
            "cargo:warning=gilpool: building for Python {shown} ({executable}), which has no \
             own-GIL subinterpreters (CPython >= 3.12): every engine will share one GIL \
             (Mode::SingleGil). To build for another Python, set PYO3_PYTHON to its interpreter \
             (e.g. PYO3_PYTHON=/path/to/python3.13) and rebuild."
        );
    }
    println!("cargo:version={}.{}", version.major, version.minor);
    if let Some(dir) = config.lib_dir() {
        println!("cargo:libdir={dir}");
    }
    println!("cargo:rustc-env=GILPOOL_BUILD_PYTHON={executable}");
    println!(
        "cargo:rustc-env=GILPOOL_BUILD_VERSION={}.{}",
        version.major, version.minor
    );
    println!("cargo:rustc-env=GILPOOL_BUILD_VERSION_FULL={full}");
}

/// `major.minor.micro` of `exe`, if it runs and is the version pyo3 saw.
fn patch_version(exe: &str, major: u8, minor: u8) -> Option<String> {
    let out = Command::new(exe)
        .args([
            "-S",
            "-c",
            "import sys; print('%d.%d.%d' % sys.version_info[:3])",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    let prefix = format!("{major}.{minor}.");
    (out.status.success() && text.starts_with(&prefix)).then(|| text.to_string())
}
