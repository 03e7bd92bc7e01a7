//! Round trips Rust -> Python -> Rust through a real interpreter, for
//! `Value` (property-tested, also wrapped 30-80 levels deep) and for the
//! typed conversions.

mod common;

use common::builder;
use gilpool::{Engine, Handler, Mode, Value};
use num_bigint::BigInt;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

fn engine() -> &'static (Engine, Handler) {
    static E: OnceLock<(Engine, Handler)> = OnceLock::new();
    E.get_or_init(|| {
        let e = builder(Mode::Auto).build().unwrap();
        let h = e.load("copy", "deepcopy").unwrap();
        (e, h)
    })
}

fn identity() -> &'static Handler {
    &engine().1
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::None),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        (any::<i128>(), any::<u64>())
            .prop_map(|(a, b)| Value::int(BigInt::from(a) * BigInt::from(b) * 1_000_003)),
        any::<f64>()
            .prop_filter("NaN != NaN", |f| !f.is_nan())
            .prop_map(Value::Float),
        ".*".prop_map(Value::Str),
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::Bytes),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::List),
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Tuple),
            proptest::collection::vec(("[a-z]{0,6}", inner), 0..5).prop_map(|kv| {
                // Python dicts keep the last value of a repeated key.
                let mut seen: Vec<(Value, Value)> = Vec::new();
                for (k, v) in kv {
                    let k = Value::Str(k);
                    match seen.iter_mut().find(|(sk, _)| *sk == k) {
                        Some(slot) => slot.1 = v,
                        None => seen.push((k, v)),
                    }
                }
                Value::Dict(seen)
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn value_round_trips(v in value()) {
        let back: Value = identity().invoke((v.clone(),)).unwrap();
        prop_assert_eq!(back, v);
    }

    #[test]
    fn deeply_wrapped_values_round_trip(
        v in value(),
        wraps in proptest::collection::vec(0..3u8, 30..80),
    ) {
        // Deeper than the levels `Clone`, `PartialEq` and `Drop` recurse
        // through before they switch to a heap stack.
        let mut w = v;
        for (i, kind) in wraps.iter().enumerate() {
            w = match kind {
                0 => Value::List(vec![Value::Int(i as i64), w]),
                1 => Value::Tuple(vec![w]),
                _ => Value::Dict(vec![(Value::Str(format!("k{i}")), w)]),
            };
        }
        let copy = w.clone();
        prop_assert!(copy == w);
        let back: Value = identity().invoke((copy,)).unwrap();
        prop_assert!(back == w);
        // A leaf at the bottom that `value()` cannot make (a 6-tuple).
        let mut changed = back.clone();
        let mut cur = &mut changed;
        for _ in 0..wraps.len() {
            cur = match cur {
                Value::List(items) => &mut items[1],
                Value::Tuple(items) => &mut items[0],
                Value::Dict(pairs) => &mut pairs[0].1,
                _ => unreachable!("a wrapper"),
            };
        }
        *cur = Value::Tuple(vec![Value::None; 6]);
        prop_assert!(changed != back);
    }

    #[test]
    fn integers_round_trip(a in any::<i64>(), b in any::<u64>(), c in any::<i128>(), d in any::<i32>()) {
        let h = identity();
        prop_assert_eq!(h.invoke::<_, i64>((a,)).unwrap(), a);
        prop_assert_eq!(h.invoke::<_, u64>((b,)).unwrap(), b);
        prop_assert_eq!(h.invoke::<_, i128>((c,)).unwrap(), c);
        prop_assert_eq!(h.invoke::<_, i32>((d,)).unwrap(), d);
    }

    #[test]
    fn strings_and_floats_round_trip(s in ".*", f in any::<f64>().prop_filter("NaN", |f| !f.is_nan())) {
        let h = identity();
        prop_assert_eq!(h.invoke::<_, String>((s.clone(),)).unwrap(), s);
        prop_assert_eq!(h.invoke::<_, f64>((f,)).unwrap(), f);
    }
}

/// An `int` of one 30-bit digit is read inline on 3.12 and 3.13, any
/// other through CPython's call: values on both sides of each digit
/// boundary, of both signs, and a `bool` (an `int` subclass) read alike.
#[test]
fn integers_at_digit_boundaries_round_trip() {
    let h = identity();
    for base in [0i64, 1 << 15, 1 << 30, 1 << 31, 1 << 32, 1 << 60, i64::MAX] {
        for v in [base.saturating_sub(1), base, base.saturating_add(1)] {
            for v in [v, -v] {
                assert_eq!(h.invoke::<_, i64>((v,)).unwrap(), v, "{v}");
            }
        }
    }
    assert_eq!(h.invoke::<_, i64>((i64::MIN,)).unwrap(), i64::MIN);
    assert_eq!(h.invoke::<_, i64>((true,)).unwrap(), 1);
    assert_eq!(h.invoke::<_, i64>((false,)).unwrap(), 0);
    let too_big = h.invoke::<_, i32>(((1i64 << 31),)).unwrap_err();
    assert!(too_big.is_conversion(), "{too_big}");
}

#[test]
fn typed_containers_round_trip() {
    let h = identity();
    let v = vec![1i64, 2, 3];
    assert_eq!(h.invoke::<_, Vec<i64>>((v.clone(),)).unwrap(), v);
    let m: HashMap<String, f64> = [("a".to_string(), 1.5), ("b".to_string(), -2.0)].into();
    assert_eq!(
        h.invoke::<_, HashMap<String, f64>>((m.clone(),)).unwrap(),
        m
    );
    let b: BTreeMap<i64, Vec<String>> = [(1, vec!["x".to_string()]), (2, vec![])].into();
    assert_eq!(
        h.invoke::<_, BTreeMap<i64, Vec<String>>>((b.clone(),))
            .unwrap(),
        b
    );
    let t = (1i64, "two".to_string(), 3.0f64, true);
    assert_eq!(
        h.invoke::<_, (i64, String, f64, bool)>((t.clone(),))
            .unwrap(),
        t
    );
    assert_eq!(h.invoke::<_, Option<i64>>((None::<i64>,)).unwrap(), None);
    assert_eq!(h.invoke::<_, Option<i64>>((Some(7i64),)).unwrap(), Some(7));
    let big: BigInt = "123456789012345678901234567890123456789".parse().unwrap();
    assert_eq!(h.invoke::<_, BigInt>((big.clone(),)).unwrap(), big);
    assert_eq!(
        h.invoke::<_, Value>((big.clone(),)).unwrap(),
        Value::BigInt(big)
    );
    assert_eq!(h.invoke::<_, u64>((u64::MAX,)).unwrap(), u64::MAX);
    h.invoke::<_, ()>(((),)).unwrap();
}

#[test]
fn python_side_types_are_the_expected_ones() {
    let (engine, _) = engine();
    let kinds = engine.load("gilpool_workloads", "kinds").unwrap();
    let v: Value = kinds.invoke(()).unwrap();
    let Value::Dict(pairs) = &v else {
        panic!("kinds() is a dict")
    };
    let names: Vec<&str> = pairs.iter().map(|(_, v)| v.type_name()).collect();
    for want in [
        "NoneType", "bool", "int", "float", "str", "bytes", "list", "tuple", "dict",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert!(
        pairs.iter().any(|(_, v)| matches!(v, Value::BigInt(_))),
        "kinds() has a big int"
    );
}
