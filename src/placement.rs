//! Placement: which lane can run a module. A module that refuses own-GIL
//! subinterpreters says so in its import error; [`refusal`] recognises the
//! known wordings anywhere in the exception chain, so that such a handler
//! can run on the main interpreter instead.

use gilpool_ffi::PyException;

/// What a module (or the machinery importing it) raises when it cannot be
/// loaded in a subinterpreter, from CPython and the extension builders
/// (DESIGN.md, "Facts gathered later"):
/// - CPython, for single-phase and `Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED`
///   modules (numpy, mypyc, PyO3, Cython without `subinterpreters_compatible`);
///   numpy wraps it in its own long ImportError text;
/// - PyO3's own guard;
/// - numpy, in the second interpreter that tries to load it;
/// - old Cython;
/// - CPython 3.13+, for an import that failed in another interpreter.
pub(crate) const REFUSALS: &[&str] = &[
    "does not support loading in subinterpreters",
    "do not yet support subinterpreters",
    "cannot load module more than once per process",
    "Interpreter change detected",
    "failed to import from subinterpreter due to exception",
];

/// The refusal in `exc` — its message or any exception chained to it (the
/// formatted traceback holds the whole chain) — as the first line that
/// carries one of the [`REFUSALS`], trimmed; `None` when the exception is
/// some other failure.
pub(crate) fn refusal(exc: &PyException) -> Option<String> {
    [exc.message.as_str(), exc.traceback.as_str()]
        .into_iter()
        .flat_map(str::lines)
        .find(|line| REFUSALS.iter().any(|r| line.contains(r)))
        .map(|line| line.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exc(message: &str, traceback: &str) -> PyException {
        PyException {
            type_name: "ImportError".into(),
            message: message.into(),
            traceback: traceback.into(),
        }
    }

    #[test]
    fn each_known_wording_is_a_refusal() {
        for r in REFUSALS {
            let e = exc(&format!("module x: {r}"), "");
            assert_eq!(
                refusal(&e).as_deref(),
                Some(format!("module x: {r}").as_str())
            );
        }
    }

    #[test]
    fn a_refusal_deep_in_the_chain_is_found() {
        // numpy's shape: its own long text, the CPython refusal chained below.
        let tb = "Traceback (most recent call last):\n  File \"numpy/_core/__init__.py\", line 23, in <module>\n    from . import multiarray\n\
                  ImportError: module numpy._core._multiarray_umath does not support loading in subinterpreters\n\n\
                  During handling of the above exception, another exception occurred:\n\n\
                  ImportError: \nIMPORTANT: PLEASE READ THIS FOR ADVICE ON HOW TO SOLVE THIS ISSUE!\n";
        let e = exc(
            "\nIMPORTANT: PLEASE READ THIS FOR ADVICE ON HOW TO SOLVE THIS ISSUE!\n",
            tb,
        );
        assert_eq!(
            refusal(&e).as_deref(),
            Some("ImportError: module numpy._core._multiarray_umath does not support loading in subinterpreters")
        );
    }

    #[test]
    fn other_failures_are_not_refusals() {
        assert_eq!(
            refusal(&exc(
                "No module named 'nope'",
                "Traceback ...\nModuleNotFoundError: No module named 'nope'\n"
            )),
            None
        );
        assert_eq!(refusal(&exc("", "")), None);
    }
}
