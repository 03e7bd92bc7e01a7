//! Which virtual environment an engine runs in: the one named with
//! [`EngineBuilder::venv`](crate::EngineBuilder::venv), else `$VIRTUAL_ENV`
//! unless turned off, checked against this build's Python.

use crate::error::{Error, Result};
use gilpool_ffi::Venv;
use std::path::Path;

/// Set to anything but empty or `0`, an engine ignores `$VIRTUAL_ENV`.
pub(crate) const IGNORE_ENV: &str = "GILPOOL_IGNORE_VIRTUAL_ENV";

/// The environment to run in: `explicit`, else `$VIRTUAL_ENV` when
/// `from_env` and [`IGNORE_ENV`] is not set. A folder that is not a virtual
/// environment, or one made for another Python minor version, is a config
/// error.
pub(crate) fn resolve(explicit: Option<&Path>, from_env: bool) -> Result<Option<Venv>> {
    if let Some(dir) = explicit {
        return Venv::open(dir).map(Some).map_err(Error::config);
    }
    if !from_env || ignore_env() {
        return Ok(None);
    }
    match std::env::var_os("VIRTUAL_ENV") {
        Some(dir) if !dir.is_empty() => Venv::open(Path::new(&dir)).map(Some).map_err(|e| {
            Error::config(format!(
                "{e} (from VIRTUAL_ENV; set {IGNORE_ENV}=1 or use \
                 EngineBuilder::venv_from_env(false) to ignore it)"
            ))
        }),
        _ => Ok(None),
    }
}

fn ignore_env() -> bool {
    std::env::var_os(IGNORE_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}
