//! Virtual environments through the library: `EngineBuilder::venv` puts the
//! environment's site-packages (with `.pth` processing) on every
//! interpreter's `sys.path` and makes `sys.prefix`/`sys.executable` the
//! environment's, in every mode; a venv of another Python version is a
//! config error naming both; the runtime is once per process, so a later
//! engine asking for another venv is refused. Its own binary (the venv is
//! process-global), one test so the order is fixed.

mod common;
#[path = "common/venv.rs"]
mod venv;

use common::{builder, modes};
use gilpool::{Mode, Value};
use std::path::Path;

fn field<'a>(facts: &'a Value, key: &str) -> &'a Value {
    let Value::Dict(items) = facts else {
        panic!("facts() returned {facts:?}");
    };
    items
        .iter()
        .find(|(k, _)| *k == Value::Str(key.into()))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {key} in {facts:?}"))
}

fn text<'a>(facts: &'a Value, key: &str) -> &'a str {
    match field(facts, key) {
        Value::Str(s) => s,
        v => panic!("{key} is {v:?}"),
    }
}

#[test]
fn engines_run_in_the_venv_and_another_venv_is_refused() {
    let tmp = venv::TempDir::new("venv-lib");
    let minor = gilpool::BUILD_PYTHON;

    // Another Python version: refused before anything starts, naming both.
    let (other, other_version) = venv::make_other_version(tmp.path(), minor);
    let e = builder(Mode::SingleGil).venv(&other).build().unwrap_err();
    assert!(e.is_config(), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("is for Python {other_version}")),
        "{msg}"
    );
    assert!(msg.contains(&format!("embeds Python {minor}")), "{msg}");
    // Not a venv at all.
    let e = builder(Mode::SingleGil)
        .venv(tmp.path())
        .build()
        .unwrap_err();
    assert!(e.is_config() && e.to_string().contains("pyvenv.cfg"), "{e}");

    let env = venv::make(tmp.path(), "env", gilpool::BUILD_PYTHON_EXECUTABLE, minor);
    let root = env.root.to_str().unwrap();
    for mode in modes() {
        let engine = builder(mode).venv(&env.root).build().unwrap();
        assert_eq!(engine.mode(), mode);
        assert_eq!(
            engine.python_executable(),
            format!("{root}/bin/python"),
            "sys.executable is the venv's interpreter"
        );
        let facts: Value = engine
            .load("gilpool_venv_probe", "facts")
            .unwrap()
            .invoke(())
            .unwrap();
        assert_eq!(text(&facts, "value"), "from the venv");
        assert_eq!(text(&facts, "pth_value"), "added by a .pth file");
        assert_eq!(text(&facts, "prefix"), root, "{mode}");
        assert_eq!(text(&facts, "exec_prefix"), root, "{mode}");
        assert_eq!(text(&facts, "executable"), format!("{root}/bin/python"));
        assert!(
            Path::new(text(&facts, "file")).starts_with(&env.site),
            "{facts:?}"
        );
        // The .pth files ran as often as under the venv's own python: the
        // site directory is not processed again where `site` did it.
        assert_eq!(
            field(&facts, "pth_runs"),
            &Value::Int(env.pth_runs),
            "{mode}"
        );
        // The bundled sys_path entries still come first.
        let eval = engine.load("builtins", "eval").unwrap();
        let first: String = eval
            .invoke(("__import__('sys').path[0]", Value::Dict(vec![])))
            .unwrap();
        assert_eq!(
            std::fs::canonicalize(first).unwrap(),
            std::fs::canonicalize(common::PYTHON_DIR).unwrap()
        );
        engine.shutdown();
    }

    // An engine naming no venv runs in the running one.
    let engine = builder(Mode::Auto).venv_from_env(false).build().unwrap();
    let facts: Value = engine
        .load("gilpool_venv_probe", "facts")
        .unwrap()
        .invoke(())
        .unwrap();
    assert_eq!(text(&facts, "prefix"), root);
    // The same venv again is fine.
    let same = builder(Mode::SingleGil).venv(&env.root).build().unwrap();
    same.shutdown();

    // Another venv of the right version: refused, naming both.
    let second = venv::make(
        tmp.path(),
        "second",
        gilpool::BUILD_PYTHON_EXECUTABLE,
        minor,
    );
    let e = builder(Mode::SingleGil)
        .venv(&second.root)
        .build()
        .unwrap_err();
    assert!(e.is_config(), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(second.root.to_str().unwrap()) && msg.contains(root),
        "{msg}"
    );
    assert!(msg.contains("once per process"), "{msg}");
    // The running engine is unaffected.
    let facts: Value = engine
        .load("gilpool_venv_probe", "facts")
        .unwrap()
        .invoke(())
        .unwrap();
    assert_eq!(text(&facts, "value"), "from the venv");
    engine.shutdown();
}
