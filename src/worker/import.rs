//! Importing handlers' functions and running initializers in a worker's
//! interpreter.

use crate::convert::IntoPython;
use crate::engine::Initializer;
use crate::error::{Error, ErrorKind, Result};
use crate::handler::{HandlerCore, IdMap};
use crate::task::contain;
use gilpool_ffi::{Object, PyException, Python, Stash};

/// Runs one initializer (`module.function(*args)`) in the interpreter `py`
/// is attached to; a failure is returned with its traceback.
pub(crate) fn run_initializer(
    py: Python<'_>,
    init: &Initializer,
) -> std::result::Result<(), String> {
    let run = || -> Result<()> {
        let f = import_function(py, &init.module, &init.function)?;
        let args = init
            .args
            .iter()
            .cloned()
            .map(|v| v.into_python(py))
            .collect::<Result<Vec<_>>>()?;
        f.call(&args, None)?;
        Ok(())
    };
    contain("initializer", run).map_err(|e| {
        let tb = e.python().map(|p| p.traceback.clone()).unwrap_or_default();
        format!(
            "initializer {}:{} failed: {e}\n{tb}",
            init.module, init.function
        )
    })
}

/// The handler's function in this interpreter: imported and looked up on
/// first use, then cached.
pub(super) fn lookup<'py>(
    cache: &mut IdMap<Stash>,
    py: Python<'py>,
    handler: &HandlerCore,
) -> Result<Object<'py>> {
    if let Some(s) = cache.get(&handler.id) {
        return Ok(s.bind(py));
    }
    let func = contain("module import", || {
        import_function(py, &handler.module, &handler.function)
    })?;
    cache.insert(handler.id, func.clone().stash());
    Ok(func)
}

pub(crate) fn import_function<'py>(
    py: Python<'py>,
    module: &str,
    function: &str,
) -> Result<Object<'py>> {
    let m = py
        .import(module)
        .map_err(|exception| import_error(module, exception))?;
    let mut obj = m;
    for part in function.split('.') {
        obj = obj.getattr(part).map_err(|_| {
            Error::new(ErrorKind::FunctionNotFound {
                module: module.to_string(),
                function: function.to_string(),
            })
        })?;
    }
    if !obj.is_callable() {
        return Err(Error::new(ErrorKind::NotCallable {
            module: module.to_string(),
            function: function.to_string(),
            type_name: obj.type_name(),
        }));
    }
    Ok(obj)
}

fn import_error(module: &str, exception: PyException) -> Error {
    let missing_itself = exception.type_name == "ModuleNotFoundError"
        && module
            .split('.')
            .scan(String::new(), |acc, part| {
                if !acc.is_empty() {
                    acc.push('.');
                }
                acc.push_str(part);
                Some(acc.clone())
            })
            .any(|prefix| exception.message == format!("No module named '{prefix}'"));
    if missing_itself {
        Error::new(ErrorKind::ModuleNotFound {
            module: module.to_string(),
            exception,
        })
    } else {
        Error::new(ErrorKind::Import {
            module: module.to_string(),
            exception,
        })
    }
}
