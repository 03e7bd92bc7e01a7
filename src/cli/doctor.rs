//! `gilpool doctor`: the Python this build targets and the one it loads,
//! modes, cores, warnings, and where each named module can run.

use gilpool::{Engine, EngineBuilder, Mode, Value};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Options of `gilpool doctor`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub(crate) struct DoctorArgs {
    /// Modules to check: each is imported in the main interpreter and in an
    /// own-GIL subinterpreter.
    #[arg(value_name = "MODULE")]
    modules: Vec<String>,
    /// Run in this virtual environment (default: $VIRTUAL_ENV when set,
    /// unless GILPOOL_IGNORE_VIRTUAL_ENV=1).
    #[arg(long, value_name = "DIR")]
    venv: Option<PathBuf>,
    /// Put DIR on the interpreters' `sys.path` (repeatable, first wins).
    #[arg(long, value_name = "DIR")]
    sys_path: Vec<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

const AFTER_HELP: &str = "\
Each MODULE runs on the sub lane (it imports in an own-GIL subinterpreter),
on the main interpreter only (a subinterpreter refused it: the refusal is
shown), or fails (the error is shown).

Exit status: 0 when every MODULE can run somewhere, 1 when one cannot, 2 when
Python could not be started (a bad --venv, a libpython of another version).";

/// Where a module can run.
#[derive(Debug)]
struct ModuleReport {
    name: String,
    /// `sub`, `main` or `fails`.
    runs: &'static str,
    /// The refusal text, when a subinterpreter refused the module.
    refusal: Option<String>,
    /// The error: the import's in the main interpreter (`fails`), or a
    /// subinterpreter's that is not a recognised refusal.
    error: Option<String>,
    /// What the text output says.
    summary: String,
}

pub(crate) fn main(args: DoctorArgs) -> ExitCode {
    let base = |mode: Mode| {
        let mut b: EngineBuilder = Engine::builder()
            .mode(mode)
            .workers(1)
            .pin(false)
            .shutdown_timeout(Duration::from_secs(2));
        for dir in &args.sys_path {
            b = b.sys_path(dir);
        }
        if let Some(dir) = &args.venv {
            b = b.venv(dir);
        }
        b
    };
    let auto = match base(Mode::Auto).build() {
        Ok(e) => e,
        Err(e) => return setup_failure(&args, &e.to_string()),
    };
    // The main interpreter's engine: the Auto one when it is SingleGil.
    let single = if auto.mode() == Mode::SubInterpreters {
        match base(Mode::SingleGil).build() {
            Ok(e) => Some(e),
            Err(e) => return setup_failure(&args, &e.to_string()),
        }
    } else {
        None
    };
    let (main_engine, sub_engine) = match &single {
        Some(m) => (m, Some(&auto)),
        None => (&auto, None),
    };
    let mut warnings = auto.warnings();
    if let Some(m) = &single {
        for w in m.warnings() {
            if !warnings.contains(&w) {
                warnings.push(w);
            }
        }
    }
    let fact = |expr: &str| eval(main_engine, expr).unwrap_or_else(|e| format!("({e})"));
    let prefix = fact("__import__('sys').prefix");
    let base_prefix = fact("__import__('sys').base_prefix");
    let exec_prefix = fact("__import__('sys').exec_prefix");
    let venv = (prefix != base_prefix).then(|| prefix.clone());
    let modules: Vec<ModuleReport> = args
        .modules
        .iter()
        .map(|m| check(main_engine, sub_engine, m))
        .collect();
    let ok = modules.iter().all(|m| m.runs != "fails");
    let available = gilpool::host_cores();
    let core_ids = core_affinity::get_core_ids().map_or(0, |c| c.len());
    let library = auto.python_library().unwrap_or("(unknown)").to_string();
    let build_version = if gilpool::BUILD_PYTHON_VERSION.is_empty() {
        gilpool::BUILD_PYTHON
    } else {
        gilpool::BUILD_PYTHON_VERSION
    };

    if args.json {
        let report = json!({
            "gilpool": env!("CARGO_PKG_VERSION"),
            "ok": ok,
            "warnings": warnings,
            "build": {
                "python": gilpool::BUILD_PYTHON,
                "version": build_version,
                "executable": gilpool::BUILD_PYTHON_EXECUTABLE,
            },
            "python": {
                "version": auto.python_version().to_string(),
                "library": library,
                "executable": auto.python_executable(),
                "prefix": prefix,
                "exec_prefix": exec_prefix,
                "base_prefix": base_prefix,
                "venv": venv,
            },
            "modes": {
                "own_gil": Mode::SubInterpreters.is_supported(),
                "auto": auto.mode().to_string(),
            },
            "cores": {
                "available": available,
                "core_ids": core_ids,
                "pinning": core_ids > 0,
            },
            "modules": modules.iter().map(|m| json!({
                "name": m.name,
                "runs": m.runs,
                "refusal": m.refusal,
                "error": m.error,
            })).collect::<Vec<_>>(),
        });
        println!("{report:#}");
    } else {
        for w in &warnings {
            println!("WARNING: {w}");
        }
        if !warnings.is_empty() {
            println!();
        }
        println!("gilpool:             {}", env!("CARGO_PKG_VERSION"));
        println!(
            "build python:        {build_version} ({})",
            gilpool::BUILD_PYTHON_EXECUTABLE
        );
        println!("python:              {}", auto.python_version());
        println!("libpython:           {library}");
        println!("sys.executable:      {}", auto.python_executable());
        println!("sys.prefix:          {prefix}");
        println!(
            "virtualenv:          {}",
            venv.as_deref().unwrap_or("(none)")
        );
        println!(
            "own-GIL support:     {}",
            if Mode::SubInterpreters.is_supported() {
                "yes (built for CPython >= 3.12)"
            } else {
                "no (built for CPython < 3.12): SingleGil only"
            }
        );
        println!("Mode::Auto runs as:  {}", auto.mode());
        println!(
            "cores:               {available} available; pinning {}",
            if core_ids > 0 {
                format!("on by default ({core_ids} core ids)")
            } else {
                "unavailable (no core ids)".to_string()
            }
        );
        for m in &modules {
            let label = format!("module {}:", m.name);
            println!("{label:<21}{}", m.summary);
        }
    }
    drop(single);
    auto.shutdown();
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn setup_failure(args: &DoctorArgs, error: &str) -> ExitCode {
    if args.json {
        println!("{:#}", json!({ "ok": false, "error": error }));
    } else {
        println!("engine:              FAILED: {error}");
    }
    ExitCode::from(2)
}

/// `eval(expr)` in the engine's interpreter, as a string.
fn eval(engine: &Engine, expr: &str) -> gilpool::Result<String> {
    engine
        .load("builtins", "eval")?
        .invoke((format!("str({expr})"), Value::Dict(vec![])))
}

/// Imports `name` in the engine's interpreter.
fn import(engine: &Engine, name: &str) -> gilpool::Result<()> {
    engine
        .load("importlib", "import_module")?
        .invoke_with((name.to_string(),), |_module| Ok(()))
}

/// Where `name` can run: the main interpreter first (a module that loads
/// only once per process must load there), then a subinterpreter.
fn check(main: &Engine, sub: Option<&Engine>, name: &str) -> ModuleReport {
    let report = |runs, refusal, error, summary| ModuleReport {
        name: name.to_string(),
        runs,
        refusal,
        error,
        summary,
    };
    if let Err(e) = import(main, name) {
        let text = e.to_string();
        return report("fails", None, Some(text.clone()), format!("fails: {text}"));
    }
    let Some(sub) = sub else {
        return report(
            "main",
            None,
            None,
            "main interpreter (this build has no own-GIL subinterpreters)".to_string(),
        );
    };
    match import(sub, name) {
        Ok(()) => report(
            "sub",
            None,
            None,
            "sub lane (imports in an own-GIL subinterpreter)".to_string(),
        ),
        Err(e) => match e.subinterpreter_refusal() {
            Some(r) => report(
                "main",
                Some(r.clone()),
                None,
                format!("main interpreter only: a subinterpreter refuses it: {r}"),
            ),
            None => {
                let text = e.to_string();
                report(
                    "main",
                    None,
                    Some(text.clone()),
                    format!(
                        "main interpreter only: it fails in a subinterpreter \
                         (not a known refusal): {text}"
                    ),
                )
            }
        },
    }
}
