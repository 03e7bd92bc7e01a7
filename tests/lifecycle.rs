//! Process-global runtime behaviour: one runtime per process, several
//! engines over it, finalisation only when no worker is alive, and no
//! re-initialisation after it. Kept in one test so the order is fixed.

mod common;

use common::builder;
use gilpool::Mode;

#[test]
fn engines_share_one_runtime_and_finalize_is_guarded() {
    // Two engines alive at once, in different modes, over one runtime.
    let a = builder(Mode::Auto).build().unwrap();
    let b = builder(Mode::SingleGil).workers(1).build().unwrap();
    let ia = a.load("gilpool_workloads", "inc").unwrap();
    let ib = b.load("gilpool_workloads", "inc").unwrap();
    assert_eq!(ia.invoke::<_, i64>((1,)).unwrap(), 2);
    assert_eq!(ib.invoke::<_, i64>((2,)).unwrap(), 3);

    // Finalising while workers are alive is refused, clearly.
    let e = gilpool::finalize().unwrap_err();
    assert!(e.is_init(), "{e}");
    assert!(e.to_string().contains("still alive"), "{e}");
    drop(b);
    a.shutdown();

    // A later engine in the same process works.
    let c = builder(Mode::Auto).build().unwrap();
    assert_eq!(
        c.load("gilpool_workloads", "inc")
            .unwrap()
            .invoke::<_, i64>((3,))
            .unwrap(),
        4
    );
    c.shutdown();

    // Finalise once; then no engine can start, and the error says why.
    gilpool::finalize().unwrap();
    let e = builder(Mode::Auto).build().unwrap_err();
    assert!(e.is_init(), "{e}");
    assert!(e.to_string().contains("finalised"), "{e}");
    assert!(gilpool::finalize().unwrap_err().is_init());
}
