//! Binaries, tests, examples and benches of this crate find libpython
//! through an rpath: a dependency's rpath does not reach them, so the
//! library directory comes from `gilpool-ffi`'s build metadata.

fn main() {
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    if let Ok(dir) = std::env::var("DEP_GILPOOL_PYTHON_LIBDIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
