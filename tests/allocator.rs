//! `EngineBuilder::allocator`: the first engine of a process picks CPython's
//! allocator before the runtime starts; a later engine asking for another
//! gets a warning. Each case is a child process (the runtime is
//! process-wide); the parent reads the allocator statistics the child's
//! tasks printed (`sys._debugmallocstats()`).

mod common;

use gilpool::{Allocator, Mode};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/alloc");
const CHILD_ENV: &str = "GILPOOL_ALLOCATOR_CHILD";

fn parse(name: &str) -> Allocator {
    match name {
        "malloc" => Allocator::Malloc,
        "mimalloc" => Allocator::Mimalloc,
        _ => Allocator::Pymalloc,
    }
}

fn child(name: &str) {
    let allocator = parse(name);
    for mode in common::modes() {
        let engine = common::builder(mode)
            .sys_path(FIXTURES)
            .allocator(allocator)
            .build()
            .unwrap();
        let stats = engine.load("alloc_fixture", "stats").unwrap();
        let blocks: i64 = stats.invoke(()).unwrap();
        assert_eq!(
            blocks == 0,
            allocator == Allocator::Malloc,
            "{mode}: {blocks} blocks"
        );
        engine.shutdown();
    }
    // The runtime is started: another allocator cannot apply.
    let other = if allocator == Allocator::Malloc {
        Allocator::Pymalloc
    } else {
        Allocator::Malloc
    };
    let engine = common::builder(Mode::SingleGil)
        .allocator(other)
        .build()
        .unwrap();
    assert!(
        engine
            .warnings()
            .iter()
            .any(|w| w.contains("cannot change")),
        "{:?}",
        engine.warnings()
    );
    engine.shutdown();
}

#[test]
fn the_first_engine_chooses_the_allocator() {
    if let Ok(name) = std::env::var(CHILD_ENV) {
        return child(&name);
    }
    let mut names = vec!["pymalloc", "malloc"];
    if gilpool_ffi::BUILD_PYTHON == "3.13" {
        names.push("mimalloc");
    }
    for name in names {
        let out = common::run_self(
            "the_first_engine_chooses_the_allocator",
            Some((CHILD_ENV, name)),
        );
        out.assert_success(name);
        let err = &out.stderr;
        let marker = match name {
            "pymalloc" => "Small block threshold = 512,",
            "mimalloc" => "Small block threshold = 16384,",
            _ => "free PyDictObjects",
        };
        assert!(err.contains(marker), "{name}: no {marker:?} in\n{err}");
        if name == "malloc" {
            assert!(!err.contains("Small block threshold"), "{err}");
        }
    }
    if gilpool_ffi::BUILD_PYTHON != "3.13" {
        common::run_self("mimalloc_needs_3_13", None).assert_success("mimalloc_needs_3_13");
    }
}

#[test]
fn mimalloc_needs_3_13() {
    if gilpool_ffi::BUILD_PYTHON == "3.13" || std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    // Only meaningful as the first engine of a process: the parent test
    // runs this one in a child of its own.
    if std::env::args().all(|a| a != "mimalloc_needs_3_13") {
        return;
    }
    let e = common::builder(Mode::SingleGil)
        .allocator(Allocator::Mimalloc)
        .build()
        .unwrap_err();
    assert!(e.is_init() && e.to_string().contains("3.13"), "{e}");
}
