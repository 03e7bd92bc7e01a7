//! The engine's calls, handlers and errors, in every mode this build has.

mod common;

use common::{block_on, builder, modes};
use gilpool::{Args, Error, Mode, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn invoke_submit_and_await_in_every_mode() {
    for mode in modes() {
        let engine = builder(mode).build().unwrap();
        let inc = engine.load("gilpool_workloads", "inc").unwrap();
        assert_eq!(inc.invoke::<_, i64>((41,)).unwrap(), 42, "{mode}");
        let fut = inc.submit::<_, i64>((1,)).unwrap();
        assert_eq!(fut.wait().unwrap(), 2);
        assert_eq!(block_on(inc.submit::<_, i64>((9,)).unwrap()).unwrap(), 10);
        let mut fut = inc.submit::<_, i64>((5,)).unwrap();
        let got = loop {
            if let Some(v) = fut.wait_timeout(Duration::from_millis(100)) {
                break v;
            }
        };
        assert_eq!(got.unwrap(), 6);
        let add = engine.load("gilpool_workloads", "add").unwrap();
        assert_eq!(add.invoke::<_, String>(("a", "b")).unwrap(), "ab");
        engine.shutdown();
    }
}

#[test]
fn invoke_with_converts_while_attached() {
    let engine = builder(Mode::Auto).build().unwrap();
    let kinds = engine.load("gilpool_workloads", "kinds").unwrap();
    let attached = Arc::new(AtomicBool::new(false));
    let seen = attached.clone();
    let n = kinds
        .invoke_with((), move |obj| {
            seen.store(gilpool::is_attached(), Ordering::SeqCst);
            Ok(obj.len().unwrap())
        })
        .unwrap();
    assert!(
        attached.load(Ordering::SeqCst),
        "the callback runs attached"
    );
    assert!(n >= 9, "kinds() has an entry per supported type, got {n}");
    assert!(!gilpool::is_attached(), "the caller is never attached");
}

#[test]
fn keyword_arguments_reach_python() {
    let engine = builder(Mode::Auto).build().unwrap();
    let echo = engine.load("gilpool_workloads", "echo").unwrap();
    let out: Value = echo
        .invoke(Args::new().arg(1).arg("x").kwarg("k", 2.5))
        .unwrap();
    assert_eq!(
        out,
        Value::List(vec![
            Value::List(vec![Value::Int(1), Value::Str("x".into())]),
            Value::Dict(vec![(Value::Str("k".into()), Value::Float(2.5))]),
        ])
    );
}

#[test]
fn load_errors_are_distinct_and_name_what_is_missing() {
    let engine = builder(Mode::Auto).build().unwrap();
    let e = engine.load("no_such_module_xyz", "f").unwrap_err();
    assert!(e.is_module_not_found(), "{e}");
    assert!(e.to_string().contains("no_such_module_xyz"), "{e}");
    let e = engine
        .load("gilpool_workloads", "no_such_function")
        .unwrap_err();
    assert!(e.is_function_not_found(), "{e}");
    assert!(e.to_string().contains("no_such_function"), "{e}");
    let e = engine
        .load("gilpool_workloads", "NOT_CALLABLE")
        .unwrap_err();
    assert!(e.is_not_callable(), "{e}");
    assert!(e.to_string().contains("int"), "{e}");
    let e = engine
        .handler("gilpool_workloads", "inc")
        .batch_size(0)
        .load()
        .unwrap_err();
    assert!(e.is_config() && e.to_string().contains("batch_size"), "{e}");
    let e = engine.load("", "f").unwrap_err();
    assert!(e.is_config(), "{e}");
}

#[test]
fn a_module_that_raises_on_import_is_an_import_error() {
    let dir = common::TempDir::new("import");
    dir.file(
        "broken_on_import.py",
        "raise RuntimeError('boom at import')\n",
    );
    dir.file(
        "needs_missing.py",
        "import not_installed_dep_xyz\ndef f(): pass\n",
    );
    let engine = builder(Mode::Auto).sys_path(dir.path()).build().unwrap();
    let e = engine.load("broken_on_import", "f").unwrap_err();
    assert!(e.is_import(), "{e}");
    assert_eq!(e.python().unwrap().type_name, "RuntimeError");
    // A missing dependency is not the module itself missing.
    let e = engine.load("needs_missing", "f").unwrap_err();
    assert!(e.is_import(), "{e}");
    assert!(e.to_string().contains("not_installed_dep_xyz"), "{e}");
}

#[test]
fn python_exceptions_become_owned_data_and_the_worker_keeps_serving() {
    for mode in modes() {
        let engine = builder(mode).build().unwrap();
        let fail = engine.load("gilpool_workloads", "fail").unwrap();
        let inc = engine.load("gilpool_workloads", "inc").unwrap();
        for i in 0..20 {
            let e: Error = fail.invoke::<_, ()>((format!("bad {i}"),)).unwrap_err();
            assert!(e.is_python(), "{e}");
            let exc = e.python().unwrap();
            assert_eq!(exc.type_name, "ValueError");
            assert_eq!(exc.message, format!("bad {i}"));
            assert!(
                exc.traceback.contains("Traceback (most recent call last)"),
                "{}",
                exc.traceback
            );
            assert!(
                exc.traceback.contains("gilpool_workloads.py"),
                "{}",
                exc.traceback
            );
            assert!(std::error::Error::source(&e).is_some());
            assert_eq!(inc.invoke::<_, i64>((i,)).unwrap(), i + 1);
        }
    }
}

#[test]
fn conversion_errors_name_the_types() {
    let engine = builder(Mode::Auto).build().unwrap();
    let add = engine.load("gilpool_workloads", "add").unwrap();
    let e = add.invoke::<_, i64>(("a", "b")).unwrap_err();
    assert!(e.is_conversion(), "{e}");
    assert!(e.to_string().contains("str"), "{e}");
    let inc = engine.load("gilpool_workloads", "inc").unwrap();
    let e = inc.invoke::<_, u8>((255,)).unwrap_err();
    assert!(e.is_conversion() && e.to_string().contains("u8"), "{e}");
    // A result with no Value form names its type.
    let e = engine
        .load("builtins", "set")
        .unwrap()
        .invoke::<_, Value>(())
        .unwrap_err();
    assert!(e.is_conversion() && e.to_string().contains("set"), "{e}");
}

#[test]
fn panics_in_commit_or_callback_fail_only_that_task() {
    let engine = builder(Mode::Auto).build().unwrap();
    let inc = engine
        .handler("gilpool_workloads", "inc")
        .batch_size(8)
        .load()
        .unwrap();
    let mut futures = Vec::new();
    for i in 0..24i64 {
        let f = match i % 6 {
            1 => inc.submit_with(
                move || -> gilpool::Result<(i64,)> { panic!("commit {i}") },
                |_| Ok(0i64),
            ),
            4 => inc.submit_with(
                move || Ok((i,)),
                move |_| -> gilpool::Result<i64> { panic!("callback {i}") },
            ),
            _ => inc.submit_with(
                move || Ok((i,)),
                |o| o.extract_i64().map(Option::unwrap).map_err(Into::into),
            ),
        };
        futures.push((i, f.unwrap()));
    }
    for (i, f) in futures {
        match (i % 6, f.wait()) {
            (1, Err(e)) => assert!(
                e.is_panic() && e.to_string().contains(&format!("commit {i}")),
                "{e}"
            ),
            (4, Err(e)) => assert!(
                e.is_panic() && e.to_string().contains(&format!("callback {i}")),
                "{e}"
            ),
            (_, Ok(v)) => assert_eq!(v, i + 1),
            (k, other) => panic!("task {i} (kind {k}) gave {other:?}"),
        }
    }
    assert_eq!(
        inc.invoke::<_, i64>((1,)).unwrap(),
        2,
        "the engine keeps serving"
    );
}

#[test]
fn modes_report_their_effective_mode() {
    let engine = builder(Mode::Auto).build().unwrap();
    let expect = if Mode::SubInterpreters.is_supported() {
        Mode::SubInterpreters
    } else {
        Mode::SingleGil
    };
    assert_eq!(engine.mode(), expect);
    // Before 3.12, Auto's fallback is a warning too, naming the Python.
    let auto_warned = engine.warnings().iter().any(|w| {
        w.contains("Mode::Auto runs SingleGil") && w.contains(gilpool::BUILD_PYTHON_EXECUTABLE)
    });
    assert_eq!(
        auto_warned,
        !Mode::SubInterpreters.is_supported(),
        "{:?}",
        engine.warnings()
    );
    drop(engine);
    let engine = builder(Mode::SubInterpreters).build().unwrap();
    assert_eq!(
        engine.mode(),
        expect,
        "SubInterpreters falls back to SingleGil before 3.12"
    );
    assert_eq!(
        engine.warnings().is_empty(),
        Mode::SubInterpreters.is_supported(),
        "{:?}",
        engine.warnings()
    );
    let v = engine.python_version();
    if !Mode::SubInterpreters.is_supported() {
        let minor = format!("Python {}.{}", v.major, v.minor);
        assert!(
            engine.warnings()[0].contains(&minor),
            "the warning names {minor}: {:?}",
            engine.warnings()
        );
    }
    assert_eq!(
        Mode::SubInterpreters.is_supported(),
        (v.major, v.minor) >= (3, 12),
        "{v}"
    );
    let engine = builder(Mode::SingleGil).build().unwrap();
    assert_eq!(engine.mode(), Mode::SingleGil);
}

#[test]
fn worker_count_defaults_to_the_cores() {
    let engine = gilpool::Engine::builder().pin(false).build().unwrap();
    assert_eq!(
        engine.workers(),
        std::thread::available_parallelism().unwrap().get()
    );
    let e = gilpool::Engine::builder().workers(0).build().unwrap_err();
    assert!(e.is_config(), "{e}");
    let e = gilpool::Engine::builder()
        .init_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(
        e.is_config() && e.to_string().contains("init_timeout"),
        "{e}"
    );
}

#[test]
fn each_subinterpreter_worker_has_its_own_interpreter() {
    let ids_for = |mode: Mode| {
        let engine = builder(mode).workers(2).build().unwrap();
        let interp = engine.load("gilpool_workloads", "interp_id").unwrap();
        let spin = engine.load("gilpool_workloads", "spin").unwrap();
        // Keep both workers busy so both run tasks.
        let futures: Vec<_> = (0..40)
            .map(|_| {
                interp.submit_with(
                    || Ok(()),
                    |o| o.extract_i64().map(Option::unwrap).map_err(Into::into),
                )
            })
            .collect();
        let _busy = spin.submit::<_, Value>((50,)).unwrap();
        let mut ids: Vec<i64> = futures
            .into_iter()
            .map(|f| f.unwrap().wait().unwrap())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    };
    assert_eq!(
        ids_for(Mode::SingleGil),
        vec![0],
        "SingleGil runs in the main interpreter"
    );
    if Mode::SubInterpreters.is_supported() {
        let ids = ids_for(Mode::SubInterpreters);
        assert!(
            !ids.is_empty() && ids.iter().all(|&i| i > 0),
            "subinterpreters have ids > 0: {ids:?}"
        );
    }
}

#[test]
fn runtime_facts_sys_executable_signals_sys_path() {
    for mode in modes() {
        let engine = builder(mode).build().unwrap();
        let eval = engine.load("builtins", "eval").unwrap();
        let exe: String = eval
            .invoke(("__import__('sys').executable", Value::Dict(vec![])))
            .unwrap();
        assert!(
            std::path::Path::new(&exe).is_file(),
            "sys.executable {exe:?} is a file"
        );
        assert!(exe.contains("python"), "{exe}");
        let version: String = eval
            .invoke((
                "'%d.%d.%d' % __import__('sys').version_info[:3]",
                Value::Dict(vec![]),
            ))
            .unwrap();
        assert_eq!(version, engine.python_version().to_string());
        let first: String = eval
            .invoke(("__import__('sys').path[0]", Value::Dict(vec![])))
            .unwrap();
        assert_eq!(
            std::fs::canonicalize(&first).unwrap(),
            std::fs::canonicalize(common::PYTHON_DIR).unwrap()
        );
        assert_eq!(engine.python_executable(), exe);
    }
    // Python installs no OS signal handler in the embedding process, even
    // after the `signal` module is imported: SIGINT stays with the host.
    let engine = builder(Mode::SingleGil).build().unwrap();
    let eval = engine.load("builtins", "eval").unwrap();
    let _: String = eval
        .invoke(("str(__import__('signal').SIGINT)", Value::Dict(vec![])))
        .unwrap();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let caught = status.lines().find(|l| l.starts_with("SigCgt:")).unwrap();
    let mask = u64::from_str_radix(caught.split_whitespace().nth(1).unwrap(), 16).unwrap();
    for (name, signo) in [("SIGINT", 2), ("SIGTERM", 15)] {
        assert_eq!(
            mask & (1 << (signo - 1)),
            0,
            "{name} is caught by someone: {caught}"
        );
    }
}

#[test]
fn same_results_in_every_mode_and_in_plain_python() {
    let n = 20;
    let mut per_mode = Vec::new();
    let mut exe = String::new();
    for mode in modes() {
        let engine = builder(mode).build().unwrap();
        exe = engine.python_executable().to_string();
        let heavy = engine.load("gilpool_workloads", "heavy").unwrap();
        let stdlib = engine.load("gilpool_workloads", "use_stdlib").unwrap();
        let library = engine.load("gilpool_workloads", "library").unwrap();
        let a: Vec<i64> = heavy
            .map((0..n).map(|i| (100 + i,)))
            .collect::<Result<_, _>>()
            .unwrap();
        let b: Vec<Value> = stdlib
            .map((0..n).map(|i| (i,)))
            .collect::<Result<_, _>>()
            .unwrap();
        let c: Vec<i64> = library
            .map((0..n).map(|i| (10 + i,)))
            .collect::<Result<_, _>>()
            .unwrap();
        per_mode.push((a, b, c));
    }
    let code = format!(
        "import json, gilpool_workloads as w\nprint(json.dumps([[w.heavy(100 + i) for i in range({n})], [w.use_stdlib(i) for i in range({n})], [w.library(10 + i) for i in range({n})]]))"
    );
    let out = std::process::Command::new(&exe)
        .arg("-c")
        .arg(code)
        .env("PYTHONPATH", common::PYTHON_DIR)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plain: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ints = |v: &serde_json::Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect()
    };
    let (plain_heavy, plain_library) = (ints(&plain[0]), ints(&plain[2]));
    for (a, b, c) in &per_mode {
        assert_eq!(a, &plain_heavy);
        assert_eq!(c, &plain_library);
        let as_json: Vec<serde_json::Value> = b
            .iter()
            .map(|v| match v {
                Value::Int(i) => serde_json::json!(i),
                Value::Str(s) => serde_json::json!(s),
                other => panic!("use_stdlib returned {other:?}"),
            })
            .collect();
        assert_eq!(&serde_json::Value::Array(as_json), &plain[1]);
    }
    assert_eq!(per_mode.first(), per_mode.last());
}

#[test]
fn submit_after_shutdown_is_a_shutdown_error() {
    let engine = builder(Mode::Auto).build().unwrap();
    let inc = engine.load("gilpool_workloads", "inc").unwrap();
    engine.shutdown();
    let e = inc.submit::<_, i64>((1,)).unwrap_err();
    assert!(e.is_shutdown(), "{e}");
    let e = inc.try_submit::<_, i64>((1,)).unwrap_err();
    assert!(e.is_shutdown());
    assert_eq!(e.into_inner(), (1,));
}

#[test]
fn submitting_from_inside_a_callback_is_refused() {
    let engine = builder(Mode::Auto).build().unwrap();
    let inc = engine.load("gilpool_workloads", "inc").unwrap();
    let inner = inc.clone();
    let e = inc
        .invoke_with((1,), move |_| match inner.submit::<_, i64>((2,)) {
            Ok(_) => Ok(String::from("accepted")),
            Err(e) => Ok(e.to_string()),
        })
        .unwrap();
    assert!(e.contains("attached"), "{e}");
}

#[test]
fn map_chunks_keep_order_and_fail_item_by_item() {
    for mode in modes() {
        let engine = builder(mode).build().unwrap();
        let inc = engine
            .handler("gilpool_workloads", "inc")
            .batch_size(8)
            .load()
            .unwrap();
        // Every 7th input is a str: `x + 1` raises TypeError for that item only.
        let inputs = (0..1000i64).map(|i| {
            if i % 7 == 3 {
                (Value::Str(format!("s{i}")),)
            } else {
                (Value::Int(i),)
            }
        });
        let out: Vec<gilpool::Result<i64>> = inc.map_window(inputs, 100).collect();
        assert_eq!(out.len(), 1000);
        for (i, r) in out.into_iter().enumerate() {
            let i = i as i64;
            match r {
                Ok(v) => assert_eq!(v, i + 1, "{mode}"),
                Err(e) => {
                    assert_eq!(i % 7, 3, "only the str inputs fail: {e}");
                    let py = e.python().unwrap();
                    assert_eq!(py.type_name, "TypeError");
                    // The traceback starts at the function, as for a direct
                    // call (a sub-lane chunk runs its inputs in a Python loop).
                    assert!(py.traceback.contains("in inc"), "{mode}: {}", py.traceback);
                    assert!(
                        !py.traceback.contains("in each"),
                        "{mode}: {}",
                        py.traceback
                    );
                }
            }
        }
        assert_eq!(inc.in_flight(), 0);

        // One chunk whose first and last inputs fail, with two arguments
        // each: the others still give their results, in order.
        let add = engine
            .handler("gilpool_workloads", "add")
            .batch_size(6)
            .map_chunks(gilpool::MapChunks::Batch)
            .load()
            .unwrap();
        let pairs = vec![
            (Value::Str("a".into()), Value::Int(1)),
            (Value::Int(1), Value::Int(2)),
            (Value::Int(3), Value::Int(4)),
            (Value::Str("b".into()), Value::Str("c".into())),
            (Value::Int(5), Value::Int(6)),
            (Value::Int(7), Value::Str("d".into())),
        ];
        let got: Vec<gilpool::Result<Value>> = add.map(pairs).collect();
        let shown: Vec<String> = got
            .iter()
            .map(|r| match r {
                Ok(v) => format!("{v:?}"),
                Err(e) => e.python().map(|p| p.type_name.clone()).unwrap_or_default(),
            })
            .collect();
        assert_eq!(
            shown,
            [
                "TypeError",
                "Int(3)",
                "Int(7)",
                "Str(\"bc\")",
                "Int(11)",
                "TypeError"
            ],
            "{mode}"
        );
    }
}

#[test]
fn map_chunks_mix_argument_shapes_and_keywords() {
    for mode in modes() {
        let engine = builder(mode).build().unwrap();
        // One chunk of 1, 2, 0 and 3 positional arguments: `join(*x)` for
        // each, the one-argument inputs as well (were "ab" unpacked, it
        // would join to "a/b").
        let join = engine
            .handler("os.path", "join")
            .batch_size(5)
            .map_chunks(gilpool::MapChunks::Batch)
            .load()
            .unwrap();
        let shapes: Vec<Vec<&str>> = vec![
            vec!["ab"],
            vec!["a", "b"],
            vec![],
            vec!["x", "y", "z"],
            vec!["cd"],
        ];
        let inputs = shapes
            .iter()
            .map(|parts| parts.iter().fold(Args::new(), |a, p| a.arg(*p)));
        let got: Vec<String> = join
            .map(inputs)
            .map(|r| r.unwrap_or_else(|e| format!("error {}", e.python().unwrap().type_name)))
            .collect();
        // `join()` with no argument raises TypeError; the rest join.
        assert_eq!(
            got,
            ["ab", "a/b", "error TypeError", "x/y/z", "cd"],
            "{mode}"
        );

        // One chunk where some inputs have keywords: every input is still
        // called with exactly its own arguments.
        let dict = engine
            .handler("builtins", "dict")
            .batch_size(4)
            .map_chunks(gilpool::MapChunks::Batch)
            .load()
            .unwrap();
        let pairs = Value::List(vec![Value::Tuple(vec![
            Value::Str("p".into()),
            Value::Int(1),
        ])]);
        let inputs = vec![
            Args::new().arg(pairs.clone()),
            Args::new().kwarg("k", 2),
            Args::new(),
            Args::new().arg(pairs).kwarg("q", 3),
        ];
        let got: Vec<Value> = dict.map(inputs).map(|r| r.unwrap()).collect();
        let d = |kv: &[(&str, i64)]| {
            Value::Dict(
                kv.iter()
                    .map(|(k, v)| (Value::Str((*k).into()), Value::Int(*v)))
                    .collect(),
            )
        };
        assert_eq!(
            got,
            [
                d(&[("p", 1)]),
                d(&[("k", 2)]),
                d(&[]),
                d(&[("p", 1), ("q", 3)])
            ],
            "{mode}"
        );
    }
}

#[test]
fn calls_pass_every_positional_argument_in_order() {
    // `os.path.join` shows both the count and the order of the arguments.
    for mode in modes() {
        let engine = builder(mode).build().unwrap();
        let join = engine.load("os.path", "join").unwrap();
        for n in [1usize, 2, 8, 9, 15] {
            let parts: Vec<String> = (0..n).map(|i| format!("p{i}")).collect();
            let args = parts.iter().fold(Args::new(), |a, p| a.arg(p.as_str()));
            let got: String = join.invoke(args).unwrap();
            assert_eq!(got, parts.join("/"), "{mode}: os.path.join of {n} parts");
        }
    }
}
