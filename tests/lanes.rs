//! Two lanes in one engine: placement (numpy auto-routed to the main lane
//! beside a pure-Python handler on the sub lane, `Placement::Sub` refused,
//! `Placement::Main` forced), `Held` results kept in their interpreter and
//! released there, initializers, and a second worker of a shared-GIL lane
//! running beside one whose task blocks with the GIL released.

mod common;

use gilpool::{Engine, EngineBuilder, Held, Mode, Placement, Value};
use std::time::Duration;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lanes");
const GENEROUS: Duration = Duration::from_secs(60);

fn builder(mode: Mode) -> EngineBuilder {
    common::builder(mode).sys_path(FIXTURES)
}

fn numpy_builder(mode: Mode) -> Option<EngineBuilder> {
    match common::venv_site(&["numpy"]) {
        Ok(site) => Some(builder(mode).sys_path(site)),
        Err(why) => {
            println!("skipped: numpy is not available: {why}");
            None
        }
    }
}

#[test]
fn numpy_runs_on_the_main_lane_beside_a_sub_lane_handler() {
    if !Mode::SubInterpreters.is_supported() {
        println!("skipped: this build (Python < 3.12) has no sub lane");
        return;
    }
    let Some(b) = numpy_builder(Mode::SubInterpreters) else {
        return;
    };
    let engine = b.main_workers(1).build().unwrap();
    let pure = engine.load("lanes_fixture", "token").unwrap();
    assert_eq!(pure.placement(), Placement::Sub);
    let np = engine.load("np_fixture", "total").unwrap();
    assert_eq!(np.placement(), Placement::Main);
    let w = engine.warnings();
    assert_eq!(
        w.iter()
            .filter(|w| w.contains("does not support loading in subinterpreters"))
            .count(),
        1,
        "{w:?}"
    );
    assert!(w.iter().any(|w| w.contains("numpy")), "{w:?}");
    // Both lanes at once, each with its own results.
    let a: Vec<_> = (0..50i64)
        .map(|i| np.submit::<_, i64>((i,)).unwrap())
        .collect();
    let b: Vec<_> = (0..50)
        .map(|_| pure.submit::<_, String>(()).unwrap())
        .collect();
    for (i, f) in a.into_iter().enumerate() {
        let i = i as i64;
        assert_eq!(common::resolve(f, GENEROUS).unwrap(), i * (i - 1) / 2);
    }
    for f in b {
        common::resolve(f, GENEROUS).unwrap();
    }
    // The verdict is cached: a second handler of the module goes straight
    // to the main lane, with no second warning.
    let np2 = engine.load("np_fixture", "rank").unwrap();
    assert_eq!(np2.placement(), Placement::Main);
    assert_eq!(
        engine
            .warnings()
            .iter()
            .filter(|w| w.contains("does not support loading in subinterpreters"))
            .count(),
        1
    );
    // Sub placement is refused with the remedy.
    let e = engine
        .handler("np_fixture", "total")
        .placement(Placement::Sub)
        .load()
        .unwrap_err();
    assert!(e.is_refused(), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("np_fixture") && msg.contains("Placement::Main"),
        "{msg}"
    );
    // Other import errors are reported as they are, never rerouted.
    let e = engine.load("no_such_module_here", "f").unwrap_err();
    assert!(e.is_module_not_found(), "{e}");
    let report = engine.shutdown();
    assert!(report.drained);
}

#[test]
fn placement_main_forces_the_main_lane_and_sub_needs_subinterpreters() {
    let engine = builder(Mode::SingleGil).build().unwrap();
    let e = engine
        .handler("lanes_fixture", "token")
        .placement(Placement::Sub)
        .load()
        .unwrap_err();
    assert!(e.is_config(), "{e}");
    engine.shutdown();
    if Mode::SubInterpreters.is_supported() {
        let engine = builder(Mode::SubInterpreters).build().unwrap();
        let main = engine
            .handler("lanes_fixture", "token")
            .placement(Placement::Main)
            .load()
            .unwrap();
        assert_eq!(main.placement(), Placement::Main);
        let sub = engine.load("lanes_fixture", "token").unwrap();
        assert_eq!(sub.placement(), Placement::Sub);
        let a: String = main.invoke(()).unwrap();
        let b: String = sub.invoke(()).unwrap();
        assert_ne!(
            a, b,
            "the main lane and a sub lane worker share no interpreter"
        );
        engine.shutdown();
    }
}

/// Two tasks on a lane whose workers share one GIL, each waiting with the
/// GIL released until the other runs: the second task must get the second
/// worker while the first blocks its own. A lane that left the second task
/// queued behind the first (a worker woken only when none is awake, say)
/// would make both wait out their timeout and return `false`.
fn rendezvous_on_a_shared_gil(engine: &Engine, placement: Placement, key: &str) {
    let meet = engine
        .handler("rendezvous", "meet")
        .placement(placement)
        .load()
        .unwrap();
    for round in 0..3 {
        let key = format!("{key}-{round}");
        let a = meet.submit::<_, bool>((key.clone(), 0)).unwrap();
        let b = meet.submit::<_, bool>((key.clone(), 1)).unwrap();
        assert!(
            common::resolve(a, GENEROUS).unwrap(),
            "{key}: side 0 waited in vain"
        );
        assert!(
            common::resolve(b, GENEROUS).unwrap(),
            "{key}: side 1 waited in vain"
        );
    }
}

#[test]
fn a_shared_gil_lane_wakes_a_second_worker_beside_a_blocked_one() {
    let engine = builder(Mode::SingleGil).workers(2).build().unwrap();
    rendezvous_on_a_shared_gil(&engine, Placement::Main, "single-gil");
    engine.shutdown();
    if Mode::SubInterpreters.is_supported() {
        let engine = builder(Mode::SubInterpreters)
            .workers(1)
            .main_workers(2)
            .build()
            .unwrap();
        rendezvous_on_a_shared_gil(&engine, Placement::Main, "main-lane");
        engine.shutdown();
    }
}

/// `Held` across two handlers (plain and batched), then released in the
/// interpreter that made it.
fn held_round_trip(engine: &Engine, placement: Placement) {
    let make = engine
        .handler("lanes_fixture", "make")
        .placement(placement)
        .load()
        .unwrap();
    let double = engine
        .handler("lanes_fixture", "double")
        .placement(placement)
        .load()
        .unwrap();
    let doubles = engine
        .handler("lanes_fixture", "doubles")
        .placement(placement)
        .vectorized(true)
        .batch_size(4)
        .load()
        .unwrap();
    let released = engine
        .handler("lanes_fixture", "released")
        .placement(placement)
        .load()
        .unwrap();
    let held: Vec<Held> = (0..40i64)
        .map(|i| make.submit_held((i,)).unwrap())
        .map(|f| common::resolve(f, GENEROUS).unwrap())
        .collect();
    let plain: Vec<_> = held
        .iter()
        .map(|h| double.submit::<_, i64>((h.clone(),)).unwrap())
        .collect();
    let batched: Vec<_> = held
        .iter()
        .map(|h| doubles.submit::<_, i64>((h.clone(),)).unwrap())
        .collect();
    for (i, (p, b)) in plain.into_iter().zip(batched).enumerate() {
        assert_eq!(common::resolve(p, GENEROUS).unwrap(), 2 * i as i64);
        assert_eq!(common::resolve(b, GENEROUS).unwrap(), 2 * i as i64);
    }
    drop(held);
    // One worker: every object lives in its interpreter, and it gives them
    // back when it next attaches, before this task runs.
    let mut back: Vec<i64> = released.invoke(()).unwrap();
    back.sort();
    assert_eq!(back, (0..40).collect::<Vec<_>>());
}

#[test]
fn held_results_stay_in_their_interpreter_and_are_released_there() {
    for mode in common::modes() {
        let engine = builder(mode).workers(1).main_workers(1).build().unwrap();
        let placement = if mode == Mode::SubInterpreters {
            Placement::Sub
        } else {
            Placement::Main
        };
        held_round_trip(&engine, placement);
        engine.shutdown();
    }
}

#[test]
fn held_objects_route_to_their_worker_and_refuse_other_lanes() {
    if !Mode::SubInterpreters.is_supported() {
        println!("skipped: this build (Python < 3.12) has no sub lane");
        return;
    }
    let engine = builder(Mode::SubInterpreters).workers(2).build().unwrap();
    let make = engine.load("lanes_fixture", "make").unwrap();
    let double = engine.load("lanes_fixture", "double").unwrap();
    let held: Vec<Held> = (0..100i64)
        .map(|i| make.submit_held((i,)).unwrap())
        .map(|f| common::resolve(f, GENEROUS).unwrap())
        .collect();
    // Made on both workers' interpreters; each use is routed to its own.
    let interps: std::collections::BTreeSet<i64> = held.iter().map(Held::interpreter_id).collect();
    println!("held objects live in interpreters {interps:?}");
    let futs: Vec<_> = held
        .iter()
        .map(|h| double.submit::<_, i64>((h.clone(),)).unwrap())
        .collect();
    for (i, f) in futs.into_iter().enumerate() {
        assert_eq!(common::resolve(f, GENEROUS).unwrap(), 2 * i as i64);
    }
    let main = engine
        .handler("lanes_fixture", "double")
        .placement(Placement::Main)
        .load()
        .unwrap();
    let e = main.invoke::<_, i64>((held[0].clone(),)).unwrap_err();
    assert!(e.is_conversion(), "{e}");
    assert!(e.to_string().contains("lane that made it"), "{e}");
    // Outside a worker there is nothing to keep it in.
    let v: Value = make.invoke((1,)).map(|_: Held| Value::None).unwrap();
    assert_eq!(v, Value::None);
    engine.shutdown();
}

#[test]
fn initializers_run_once_per_interpreter_and_failures_fail_build() {
    for mode in common::modes() {
        let engine = builder(mode)
            .workers(2)
            .initializer("lanes_fixture", "init_state", [Value::from("ready")])
            .build()
            .unwrap();
        let get = engine.load("lanes_fixture", "get_state").unwrap();
        let futs: Vec<_> = (0..40)
            .map(|_| get.submit::<_, String>(()).unwrap())
            .collect();
        for f in futs {
            assert_eq!(common::resolve(f, GENEROUS).unwrap(), "ready");
        }
        if mode == Mode::SubInterpreters {
            let main = engine
                .handler("lanes_fixture", "get_state")
                .placement(Placement::Main)
                .load()
                .unwrap();
            assert_eq!(main.invoke::<_, String>(()).unwrap(), "ready");
        }
        engine.shutdown();
        let e = builder(mode)
            .initializer(
                "lanes_fixture",
                "init_fails",
                [Value::from("no model file")],
            )
            .build()
            .unwrap_err();
        assert!(e.is_init(), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("init_fails")
                && msg.contains("no model file")
                && msg.contains("Traceback"),
            "{msg}"
        );
    }
}

#[test]
fn a_worker_that_fails_to_start_beside_one_that_did_is_a_warning() {
    // Own interpreters only: the main lane runs its initializers once.
    if !Mode::SubInterpreters.is_supported() {
        return;
    }
    let flag = std::env::temp_dir().join(format!("gilpool-first-only-{}", std::process::id()));
    let _ = std::fs::remove_file(&flag);
    let engine = builder(Mode::SubInterpreters)
        .workers(3)
        .initializer(
            "lanes_fixture",
            "init_first_only",
            [Value::from(flag.to_string_lossy().into_owned())],
        )
        .build()
        .unwrap();
    // Exactly one interpreter ran the initializer without raising: the
    // other two workers fail to start, and wait_ready names both.
    let e = engine.wait_ready().unwrap_err();
    assert!(e.is_init(), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("2 worker(s) failed to start") && msg.contains("not the first interpreter"),
        "{msg}"
    );
    let warned: Vec<String> = engine
        .warnings()
        .into_iter()
        .filter(|w| w.contains("failed to start") && w.contains("the lane runs without it"))
        .collect();
    assert_eq!(warned.len(), 2, "{:?}", engine.warnings());
    // The worker that started takes every task.
    let get = engine.load("lanes_fixture", "get_state").unwrap();
    let futs: Vec<_> = (0..30)
        .map(|_| get.submit::<_, Value>(()).unwrap())
        .collect();
    for f in futs {
        common::resolve(f, GENEROUS).unwrap();
    }
    let tasks: u64 = engine.metrics().workers.iter().map(|w| w.tasks).sum();
    assert_eq!(tasks, 30);
    engine.shutdown();
    let _ = std::fs::remove_file(&flag);
}

#[test]
fn numpy_matrices_pass_between_handlers_as_held() {
    for mode in common::modes() {
        let Some(b) = numpy_builder(mode) else {
            return;
        };
        let engine = b.main_workers(2).build().unwrap();
        let matrix = engine.load("np_fixture", "matrix").unwrap();
        let rank = engine.load("np_fixture", "rank").unwrap();
        assert_eq!(matrix.placement(), Placement::Main);
        let held: Vec<Held> = (0..30u64)
            .map(|s| matrix.submit_held((s,)).unwrap())
            .map(|f| common::resolve(f, GENEROUS).unwrap())
            .collect();
        for h in held {
            assert_eq!(rank.invoke::<_, i64>((h,)).unwrap(), 8);
        }
        engine.shutdown();
    }
}

#[path = "../examples/svd_pipeline.rs"]
mod svd;

#[test]
fn the_svd_pipeline_hands_matrices_over_as_held_and_matches_numpy() {
    let site = match common::venv_site(&["numpy"]) {
        Ok(site) => site,
        Err(why) => {
            println!("skipped: numpy is not available: {why}");
            return;
        }
    };
    let expected = svd::reference(&site, svd::MATRICES).unwrap();
    for mode in common::modes() {
        let (ranks, _) = svd::pipeline(mode, 2, &site, svd::MATRICES).unwrap();
        assert_eq!(ranks, expected, "{mode}");
    }
}
