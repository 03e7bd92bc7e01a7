//! Python exceptions as owned Rust data.

use crate::attach::Python;
use crate::object::Object;
use pyo3_ffi as ffi;
use std::cell::Cell;
use std::fmt;

thread_local! {
    /// Set while a traceback is being formatted: an exception raised by the
    /// formatting itself is fetched without one (no recursion).
    static FORMATTING: Cell<bool> = const { Cell::new(false) };
}

/// A Python exception, copied out of the interpreter that raised it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PyException {
    /// The exception type's qualified name, e.g. `ValueError` or
    /// `json.decoder.JSONDecodeError`.
    pub type_name: String,
    /// `str(exception)`.
    pub message: String,
    /// The formatted traceback (`traceback.format_exception`), empty when
    /// it could not be formatted.
    pub traceback: String,
}

impl fmt::Display for PyException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            f.write_str(&self.type_name)
        } else {
            write!(f, "{}: {}", self.type_name, self.message)
        }
    }
}

impl std::error::Error for PyException {}

impl PyException {
    /// Takes the exception currently set in the interpreter `py` is attached
    /// to (clearing it). If none is set, describes that instead.
    pub fn fetch(py: Python<'_>) -> PyException {
        Self::fetch_skipping(py, false)
    }

    /// [`fetch`](Self::fetch) for an exception that came out of a Python
    /// loop calling a user function: the traceback leaves out its first
    /// entry (the loop's own frame) when there is one below it.
    pub fn fetch_below_caller(py: Python<'_>) -> PyException {
        Self::fetch_skipping(py, true)
    }

    fn fetch_skipping(py: Python<'_>, skip_first: bool) -> PyException {
        let mut ptype = std::ptr::null_mut();
        let mut pvalue = std::ptr::null_mut();
        let mut ptb = std::ptr::null_mut();
        // SAFETY: attached (`py`); the out-pointers are valid locals and
        // receive new references (or null) that we own from here on.
        #[allow(deprecated)]
        unsafe {
            ffi::PyErr_Fetch(&mut ptype, &mut pvalue, &mut ptb);
            if ptype.is_null() {
                return PyException {
                    type_name: "SystemError".into(),
                    message: "a Python call failed without setting an exception".into(),
                    traceback: String::new(),
                };
            }
            ffi::PyErr_NormalizeException(&mut ptype, &mut pvalue, &mut ptb);
            if !ptb.is_null() && !pvalue.is_null() {
                ffi::PyException_SetTraceback(pvalue, ptb);
            }
        }
        // SAFETY: each pointer is a new reference or null, owned here.
        let (ty, value, mut tb) = unsafe {
            (
                Object::from_owned_ptr(py, ptype),
                Object::from_owned_ptr(py, pvalue),
                Object::from_owned_ptr(py, ptb),
            )
        };
        if skip_first {
            if let Some(next) = tb.as_ref().and_then(|t| t.getattr("tb_next").ok()) {
                if next.kind() != crate::object::Kind::None {
                    tb = Some(next);
                }
            }
        }
        let type_name = ty
            .as_ref()
            .map(Object::qualified_name)
            .unwrap_or_else(|| "<unknown>".into());
        let message = value
            .as_ref()
            .and_then(|v| v.str_lossy().ok())
            .unwrap_or_default();
        let traceback = match (&ty, &value) {
            (Some(t), Some(v)) if !FORMATTING.with(|f| f.get()) => {
                FORMATTING.with(|f| f.set(true));
                let text = format_traceback(py, t, v, tb.as_ref()).unwrap_or_default();
                FORMATTING.with(|f| f.set(false));
                text
            }
            _ => String::new(),
        };
        PyException {
            type_name,
            message,
            traceback,
        }
    }

    /// An exception described from Rust (not raised by Python).
    pub fn new(type_name: &str, message: impl Into<String>) -> PyException {
        PyException {
            type_name: type_name.into(),
            message: message.into(),
            traceback: String::new(),
        }
    }
}

fn format_traceback<'py>(
    py: Python<'py>,
    ty: &Object<'py>,
    value: &Object<'py>,
    tb: Option<&Object<'py>>,
) -> Option<String> {
    let result = (|| {
        let tbmod = py.import("traceback")?;
        let none = py.none();
        let lines = tbmod.getattr("format_exception")?.call(
            &[ty.clone(), value.clone(), tb.cloned().unwrap_or(none)],
            None,
        )?;
        let joined = py.str("").getattr("join")?.call(&[lines], None)?;
        joined.extract_str()
    })();
    // If formatting failed, its own exception was already fetched.
    result.ok()
}
