//! Binaries, tests, examples and benches of this crate find libpython
//! through an rpath: a dependency's rpath does not reach them, so the
//! library directory comes from `gilpool-ffi`'s build metadata. The same
//! directory goes on to this crate's dependents as `DEP_GILPOOL_LIBDIR`
//! (`links = "gilpool"`), for their own binaries' rpath.

fn main() {
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    if let Ok(dir) = std::env::var("DEP_GILPOOL_PYTHON_LIBDIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        println!("cargo:libdir={dir}");
    }
    if let Ok(version) = std::env::var("DEP_GILPOOL_PYTHON_VERSION") {
        println!("cargo:python={version}");
    }
}
