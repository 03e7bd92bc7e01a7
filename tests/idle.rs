//! An idle pool burns no CPU: once its work is done, workers sleep instead
//! of polling, with and without a handler that has a batching delay.
//!
//! The bound is on CPU time consumed (a resource), read from
//! `/proc/self/stat`; wall time is only the length of the idle window.
//! This binary holds one test so nothing else runs in the process while it
//! measures.

use gilpool::Engine;
use std::time::Duration;

/// The bundled workloads (`gilpool_workloads`).
const WORKLOADS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python");
/// How long the pool sits idle while measured.
const IDLE: Duration = Duration::from_secs(2);
/// The most CPU the whole process may use in that window.
const BUDGET: Duration = Duration::from_millis(100);

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`; 100 on Linux).
fn ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// User plus system CPU time of this process, every thread included
/// (`/proc/self/stat` fields 14 `utime` and 15 `stime`).
fn process_cpu(ticks: u64) -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Field 2 (comm) is parenthesised and may hold spaces: count from the
    // last ')', after which field 3 comes first.
    let rest = &stat[stat.rfind(')').expect("comm field") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields[14 - 3].parse().expect("utime");
    let stime: u64 = fields[15 - 3].parse().expect("stime");
    Duration::from_secs_f64((utime + stime) as f64 / ticks as f64)
}

/// CPU time the process used while sleeping through `IDLE`.
fn cpu_while_idle(ticks: u64) -> Duration {
    let before = process_cpu(ticks);
    std::thread::sleep(IDLE);
    process_cpu(ticks).saturating_sub(before)
}

#[test]
fn an_idle_pool_burns_no_cpu() {
    let ticks = ticks_per_second();
    let engine = Engine::builder()
        .workers(2)
        .sys_path(WORKLOADS)
        .build()
        .expect("the engine builds");
    let inc = engine
        .handler("gilpool_workloads", "inc")
        .batch_size(8)
        .load()
        .unwrap();
    let out: Vec<i64> = inc
        .map((0..1000i64).map(|i| (i,)))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(out[999], 1000);

    let used = cpu_while_idle(ticks);
    println!("idle pool: {:?} CPU in {IDLE:?}", used);
    assert!(
        used < BUDGET,
        "an idle pool used {used:?} of CPU in {IDLE:?} (budget {BUDGET:?})"
    );

    // A handler with a batching delay: once its batches ran, no deadline is
    // left, so workers must not wake up periodically.
    let delayed = engine
        .handler("gilpool_workloads", "inc")
        .batch_size(8)
        .max_batch_delay(Duration::from_millis(5))
        .load()
        .unwrap();
    let futures: Vec<_> = (0..20i64)
        .map(|i| delayed.submit::<_, i64>((i,)).unwrap())
        .collect();
    for (i, mut f) in futures.into_iter().enumerate() {
        let v = f
            .wait_timeout(Duration::from_secs(10))
            .expect("a delayed task did not run");
        assert_eq!(v.unwrap(), i as i64 + 1);
    }
    let used = cpu_while_idle(ticks);
    println!(
        "idle pool with a delayed handler: {:?} CPU in {IDLE:?}",
        used
    );
    assert!(
        used < BUDGET,
        "an idle pool with a delayed handler used {used:?} of CPU in {IDLE:?} (budget {BUDGET:?})"
    );
    engine.shutdown();
}
