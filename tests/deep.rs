//! Deeply nested data: conversions in both directions, `Clone`,
//! `PartialEq` and `Drop` of `Value` use no recursion; data deeper than the
//! limit (`DEFAULT_MAX_DEPTH`, or `EngineBuilder::max_depth`) and containers
//! that contain themselves fail with a conversion error naming the limit,
//! and the worker keeps serving.

mod common;

use common::{builder, modes};
use gilpool::{Args, Engine, Handler, Mode, Value, DEFAULT_MAX_DEPTH};
use std::sync::{Mutex, MutexGuard};

/// The limit is process-wide and set by every `build`: the tests of this
/// binary take turns.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

struct Fixture {
    engine: Engine,
    nest: Handler,
    depth: Handler,
    cycle: Handler,
    inc: Handler,
}

fn fixture(mode: Mode, max_depth: Option<usize>) -> Fixture {
    let mut b = builder(mode);
    if let Some(n) = max_depth {
        b = b.max_depth(n);
    }
    let engine = b.build().unwrap();
    let load = |f: &str| engine.load("gilpool_workloads", f).unwrap();
    Fixture {
        nest: load("nest"),
        depth: load("depth"),
        cycle: load("cycle"),
        inc: load("inc"),
        engine,
    }
}

impl Fixture {
    fn still_serves(&self) {
        assert_eq!(self.inc.invoke::<_, i64>((41,)).unwrap(), 42);
    }
}

/// `n` levels of `kind` around `Int(0)`, built without recursion (the
/// shape `nest(n, kind)` returns).
fn nested(n: usize, kind: &str) -> Value {
    let mut v = Value::Int(0);
    for _ in 0..n {
        v = match kind {
            "list" => Value::List(vec![v]),
            "tuple" => Value::Tuple(vec![v]),
            "dict" => Value::Dict(vec![(Value::Str("k".into()), v)]),
            _ => unreachable!(),
        };
    }
    v
}

/// How deeply containers nest in `v` (`depth` in Python), iteratively.
fn depth_of(v: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 1)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::List(items) | Value::Tuple(items) => {
                stack.extend(items.iter().map(|c| (c, d + 1)));
            }
            Value::Dict(pairs) => {
                stack.extend(pairs.iter().flat_map(|(k, c)| [(k, d + 1), (c, d + 1)]));
            }
            _ => continue,
        }
        deepest = deepest.max(d);
    }
    deepest
}

fn assert_too_deep(r: gilpool::Result<impl std::fmt::Debug>, limit: usize, context: &str) {
    let e = r.expect_err(context);
    assert!(e.is_conversion(), "{context}: {e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("nested deeper than {limit} levels"))
            && msg.contains("EngineBuilder::max_depth"),
        "{context}: {msg}"
    );
}

#[test]
fn nine_thousand_levels_convert_both_ways() {
    let _turn = serial();
    for mode in modes() {
        let f = fixture(mode, None);
        for kind in ["list", "tuple", "dict"] {
            let v: Value = f.nest.invoke((9_000, kind)).unwrap();
            assert_eq!(depth_of(&v), 9_000, "{mode} {kind}");
            assert_eq!(v, nested(9_000, kind), "{mode} {kind}");
            assert_eq!(f.depth.invoke::<_, i64>((v,)).unwrap(), 9_000);
            let args = Args::new().kwarg("v", nested(9_000, kind));
            assert_eq!(f.depth.invoke::<_, i64>(args).unwrap(), 9_000);
        }
        // Exactly the limit converts; one more level does not.
        let at: Value = f.nest.invoke((DEFAULT_MAX_DEPTH, "list")).unwrap();
        assert_eq!(depth_of(&at), DEFAULT_MAX_DEPTH);
        assert_eq!(
            f.depth.invoke::<_, i64>((at,)).unwrap(),
            DEFAULT_MAX_DEPTH as i64
        );
        assert_too_deep(
            f.nest.invoke::<_, Value>((DEFAULT_MAX_DEPTH + 1, "list")),
            DEFAULT_MAX_DEPTH,
            "limit + 1 returned",
        );
        assert_too_deep(
            f.depth
                .invoke::<_, i64>((nested(DEFAULT_MAX_DEPTH + 1, "tuple"),)),
            DEFAULT_MAX_DEPTH,
            "limit + 1 passed",
        );
        f.still_serves();
        f.engine.shutdown();
    }
}

#[test]
fn twenty_thousand_levels_are_a_conversion_error() {
    let _turn = serial();
    for mode in modes() {
        let f = fixture(mode, None);
        for kind in ["list", "tuple", "dict"] {
            let context = format!("{mode} {kind}");
            assert_too_deep(
                f.nest.invoke::<_, Value>((20_000, kind)),
                10_000,
                &format!("{context} returned"),
            );
            f.still_serves();
            assert_too_deep(
                f.depth.invoke::<_, i64>((nested(20_000, kind),)),
                10_000,
                &format!("{context} as an argument"),
            );
            f.still_serves();
            assert_too_deep(
                f.depth
                    .invoke::<_, i64>(Args::new().kwarg("v", nested(20_000, kind))),
                10_000,
                &format!("{context} as a keyword argument"),
            );
            let wait = f
                .depth
                .submit::<_, i64>((nested(20_000, kind),))
                .unwrap()
                .wait();
            assert_too_deep(wait, 10_000, &format!("{context} submitted"));
        }
        // In `map`, the deep input fails alone.
        let inputs = vec![
            (nested(3, "list"),),
            (nested(20_000, "list"),),
            (nested(5, "dict"),),
        ];
        let out: Vec<_> = f.depth.map::<_, _, i64>(inputs).collect();
        assert_eq!(out.len(), 3);
        assert_eq!(*out[0].as_ref().unwrap(), 3);
        assert_too_deep(out[1].clone(), 10_000, "map item");
        assert_eq!(*out[2].as_ref().unwrap(), 5);
        f.still_serves();
        f.engine.shutdown();
    }
}

#[test]
fn a_container_that_contains_itself_is_refused() {
    let _turn = serial();
    for mode in modes() {
        let f = fixture(mode, None);
        for kind in ["list", "dict"] {
            let r = f.cycle.invoke::<_, Value>((kind,));
            let msg = r.as_ref().map_err(|e| e.to_string()).unwrap_err();
            assert!(msg.contains("contains itself"), "{mode} {kind}: {msg}");
            assert_too_deep(r, 10_000, &format!("{mode} {kind}"));
            f.still_serves();
        }
        f.engine.shutdown();
    }
}

#[test]
fn a_configured_limit_is_enforced() {
    let _turn = serial();
    for mode in modes() {
        let f = fixture(mode, Some(50));
        let v: Value = f.nest.invoke((50, "list")).unwrap();
        assert_eq!(f.depth.invoke::<_, i64>((v,)).unwrap(), 50);
        assert_too_deep(f.nest.invoke::<_, Value>((60, "list")), 50, "60 returned");
        assert_too_deep(
            f.depth.invoke::<_, i64>((nested(60, "dict"),)),
            50,
            "60 passed",
        );
        f.still_serves();
        f.engine.shutdown();

        // A limit far beyond what recursion could reach on a worker's stack
        // (the conversion that fails drops a 200,000-deep partial `Value`
        // on the worker thread).
        let f = fixture(mode, Some(200_000));
        let v: Value = f.nest.invoke((150_000, "list")).unwrap();
        assert_eq!(depth_of(&v), 150_000);
        assert_eq!(f.depth.invoke::<_, i64>((v,)).unwrap(), 150_000);
        assert_too_deep(
            f.nest.invoke::<_, Value>((250_000, "list")),
            200_000,
            "250,000 returned",
        );
        assert_too_deep(
            f.depth.invoke::<_, i64>((nested(250_000, "list"),)),
            200_000,
            "250,000 passed",
        );
        f.still_serves();
        f.engine.shutdown();
    }
    let e = builder(Mode::Auto).max_depth(0).build().unwrap_err();
    assert!(e.is_config() && e.to_string().contains("max_depth"), "{e}");
}

#[test]
fn deep_values_drop_clone_and_compare_without_recursion() {
    // A small stack: derived (recursive) drop, clone or eq of a value this
    // deep would overflow even the 8 MiB main-thread stack.
    let t = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            for kind in ["list", "tuple", "dict"] {
                let v = nested(1_000_000, kind);
                let c = v.clone();
                assert!(c == v, "{kind}");
                let mut other = nested(999_999, kind);
                other = match kind {
                    "list" => Value::List(vec![other, Value::None]),
                    "tuple" => Value::Tuple(vec![other]),
                    _ => Value::Dict(vec![(Value::Str("j".into()), other)]),
                };
                if kind == "tuple" {
                    // Same shape, a different leaf at the bottom.
                    other = nested(1_000_000, kind);
                    let mut cur = &mut other;
                    while let Value::Tuple(items) = cur {
                        cur = &mut items[0];
                    }
                    *cur = Value::Int(1);
                }
                assert!(c != other, "{kind}");
                drop(v);
                drop(c);
                drop(other);
            }
            // Wide and deep at once.
            let mut v = Value::List(vec![]);
            for i in 0..200_000i64 {
                v = Value::Dict(vec![
                    (Value::Int(i), Value::List(vec![v, Value::Str("x".into())])),
                    (Value::Tuple(vec![]), Value::Bytes(vec![1, 2])),
                ]);
            }
            assert_eq!(v.clone(), v);
        })
        .unwrap();
    t.join().expect("no stack overflow, no panic");
}
