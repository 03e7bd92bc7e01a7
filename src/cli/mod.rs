//! Subcommands of the `gilpool` binary.

pub(crate) mod bench;
pub(crate) mod demo;
pub(crate) mod doctor;
pub(crate) mod run;

use std::path::PathBuf;

/// The folder holding gilpool's bundled Python modules (`python/`): the
/// one under the current directory, else the one in the source tree this
/// binary was built from.
pub(crate) fn workloads_dir() -> PathBuf {
    let here = PathBuf::from("python");
    if here.join("gilpool_workloads.py").is_file() {
        return here;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// A progress bar on stderr when it is a terminal (or when `force`d);
/// hidden otherwise.
pub(crate) fn progress(len: Option<u64>, force: bool, message: &str) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    use std::io::IsTerminal;
    let bar = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::no_length(),
    };
    if std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::stderr());
    } else if force {
        // indicatif hides its own stderr target when it is not a terminal;
        // a TermLike target draws regardless.
        bar.set_draw_target(ProgressDrawTarget::term_like_with_hz(
            Box::new(console::Term::stderr()),
            4,
        ));
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let template = if len.is_some() {
        "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} ETA {eta}"
    } else {
        "{msg} [{elapsed_precise}] {pos} tasks {per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.set_message(message.to_string());
    bar
}
