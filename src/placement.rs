//! Placement: which lane a handler runs on, and recognising modules that
//! refuse subinterpreters.

use gilpool_ffi::PyException;

/// Where a handler's function runs.
///
/// ```no_run
/// use gilpool::Placement;
/// # fn main() -> gilpool::Result<()> {
/// let engine = gilpool::Engine::builder().sys_path("python").build()?;
/// // numpy refuses own-GIL subinterpreters: Auto moves it to the main lane.
/// let h = engine.handler("numpy", "sum").load()?;
/// assert_eq!(h.placement(), Placement::Main);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// The sub lane when the module imports in a subinterpreter; the main
    /// lane (with one warning naming the refusing module) when it refuses
    /// subinterpreters. Other import errors are reported as they are.
    #[default]
    Auto,
    /// The sub lane only: a module that refuses subinterpreters fails the
    /// load with an error naming it and the remedy. Needs
    /// [`Mode::SubInterpreters`](crate::Mode::SubInterpreters).
    Sub,
    /// The main lane: workers with thread states in the main interpreter,
    /// sharing its GIL (every handler in [`Mode::SingleGil`](crate::Mode::SingleGil)).
    Main,
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Placement::Auto => "Auto",
            Placement::Sub => "Sub",
            Placement::Main => "Main",
        })
    }
}

/// What CPython and extension builders say when a module refuses to load
/// in a subinterpreter (numpy wraps the first in its own long text).
const REFUSALS: &[&str] = &[
    "does not support loading in subinterpreters",
    "do not yet support subinterpreters",
    "cannot load module more than once per process",
    "Interpreter change detected",
    "failed to import from subinterpreter due to exception",
];

/// If `exc` (anywhere in its chain: its message or formatted traceback,
/// which holds the causes and contexts) says a module refuses
/// subinterpreters, the line that says so.
pub(crate) fn refusal(exc: &PyException) -> Option<String> {
    for text in [&exc.message, &exc.traceback] {
        for line in text.lines() {
            if REFUSALS.iter().any(|r| line.contains(r)) {
                return Some(clean(line));
            }
        }
    }
    None
}

/// `ImportError: module numpy._core._multiarray_umath does not support …`
/// or numpy's `Original error was: module … does not support …` →
/// `module numpy._core._multiarray_umath does not support …`.
fn clean(line: &str) -> String {
    let line = line.trim();
    if let Some(at) = REFUSALS.iter().find_map(|r| line.find(r)) {
        if let Some(m) = line[..at].rfind("module ") {
            return line[m..].to_string();
        }
    }
    match line.split_once(": ") {
        Some((head, rest)) if head.ends_with("Error") && !head.contains(' ') => rest.to_string(),
        _ => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exc(message: &str, traceback: &str) -> PyException {
        let mut e = PyException::new("ImportError", message);
        e.traceback = traceback.to_string();
        e
    }

    #[test]
    fn finds_the_refusal_anywhere_in_the_chain() {
        let numpy = exc(
            "\n\nIMPORTANT: PLEASE READ THIS FOR ADVICE ON HOW TO SOLVE THIS ISSUE!\n\nImporting the numpy C-extensions failed.",
            "Traceback (most recent call last):\n  ...\nImportError: module numpy._core._multiarray_umath does not support loading in subinterpreters\n\nThe above exception was the direct cause of the following exception:\n...",
        );
        let line = refusal(&numpy).unwrap();
        let wrapped = exc(
            "...\nOriginal error was: module numpy._core._multiarray_umath does not support loading in subinterpreters\n",
            "",
        );
        assert_eq!(refusal(&wrapped).unwrap(), line);
        assert_eq!(
            line,
            "module numpy._core._multiarray_umath does not support loading in subinterpreters"
        );
        let pyo3 = exc(
            "PyO3 modules do not yet support subinterpreters, see https://github.com/PyO3/pyo3/issues/576",
            "",
        );
        assert!(refusal(&pyo3).is_some());
        assert!(refusal(&exc("No module named 'nope'", "")).is_none());
    }
}
