//! `gilpool run np.py:f --venv V` in the default mode: numpy is routed to
//! the main lane by itself, the lines equal plain Python's, and stderr names
//! the module that refused subinterpreters. numpy comes from a virtualenv
//! made with pip under the target directory; without a registry the test
//! prints why it skips.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

const SCRIPT: &str = "import numpy as np\n\ndef f(n):\n    return int(np.arange(n).sum())\n";

#[test]
fn numpy_through_gilpool_run_in_a_venv_matches_plain_python() {
    let site = match common::venv_site(&["numpy"]) {
        Ok(site) => site,
        Err(why) => {
            println!("skipped: numpy is not available: {why}");
            return;
        }
    };
    let venv = site.join("../../..").canonicalize().unwrap();
    let dir = common::TempDir::new("cli-numpy");
    let script = dir.file("np_task.py", SCRIPT);
    let input: String = (0..200).map(|i| format!("[{}]\n", i * 37)).collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gilpool"))
        .arg("run")
        .arg(format!("{}:f", script.display()))
        .arg("--venv")
        .arg(&venv)
        .env_remove("VIRTUAL_ENV")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let text = input.clone();
    std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let plain = Command::new(venv.join("bin/python"))
        .arg("-c")
        .arg(format!(
            "{SCRIPT}\nimport json, sys\nfor line in sys.stdin:\n    print(json.dumps({{'ok': f(*json.loads(line))}}))\n"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(input.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&plain.stdout)
    );
    if gilpool::Mode::SubInterpreters.is_supported() {
        assert!(
            stderr.contains("np_task") && stderr.contains("numpy") && stderr.contains("main lane"),
            "{stderr}"
        );
    }
}
