//! Ties this crate to the interpreter pyo3-ffi builds against, refuses
//! Pythons older than the oldest one gilpool supports, and hands the
//! interpreter's facts to dependents (`DEP_GILPOOL_PYTHON_*`).

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
    println!("cargo:version={}.{}", version.major, version.minor);
    if let Some(dir) = config.lib_dir() {
        println!("cargo:libdir={dir}");
    }
    println!("cargo:rustc-env=GILPOOL_BUILD_PYTHON={executable}");
    println!(
        "cargo:rustc-env=GILPOOL_BUILD_VERSION={}.{}",
        version.major, version.minor
    );
}
