//! `gilpool run` end to end: the built binary against `python/reference_run.py`
//! (the same function called in a plain Python loop), and the documented
//! behaviour for raising tasks, results JSON cannot represent, invalid input
//! lines and bad targets.
//!
//! The reference runs under the Python this build embeds (`sys.executable`
//! from `gilpool doctor`; `GILPOOL_TEST_PYTHON` overrides it). Outputs are
//! compared as parsed JSON, line by line.

mod common;

use common::TempDir;
use serde_json::Value as Json;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const FIXTURE: &str = "tests/fixtures/run/gilpool_run_fixture.py";
const HOSTILE: &str = "tests/fixtures/run/hostile.py";
/// A `gilpool run` still running after this long is hung (and killed).
const HANG_LIMIT: Duration = Duration::from_secs(60);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn gilpool() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gilpool"));
    cmd.current_dir(root());
    cmd
}

/// The Python this build embeds.
fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        if let Ok(p) = std::env::var("GILPOOL_TEST_PYTHON") {
            return p;
        }
        let out = gilpool()
            .arg("doctor")
            .output()
            .expect("gilpool doctor runs");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.strip_prefix("sys.executable:"))
            .map(|p| p.trim().to_string())
            .unwrap_or_else(|| panic!("gilpool doctor printed no sys.executable:\n{text}"))
    })
}

/// Runs `gilpool run ARGS`, feeding `stdin` when given.
fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = gilpool();
    cmd.arg("run").args(args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().expect("gilpool starts");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let text = text.to_string();
        // Write from a thread: the child may fill stdout before reading all input.
        std::thread::spawn(move || {
            let _ = pipe.write_all(text.as_bytes());
        });
    }
    child.wait_with_output().unwrap()
}

/// `python reference_run.py TARGET INPUT`: one output line per task.
fn reference(target: &str, input: &Path) -> Vec<Json> {
    let out = Command::new(python())
        .current_dir(root())
        .arg("python/reference_run.py")
        .arg(target)
        .arg(input)
        .output()
        .expect("the reference runs");
    assert!(
        out.status.success(),
        "reference failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lines(&out.stdout)
}

fn lines(bytes: &[u8]) -> Vec<Json> {
    let text = std::str::from_utf8(bytes).expect("output is UTF-8");
    text.lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("output line {l:?} is not JSON: {e}"))
        })
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the child exited with `code`; names the signal if one ended it.
fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{} (signal {:?})",
        stderr(out),
        std::os::unix::process::ExitStatusExt::signal(&out.status)
    );
}

/// The counts of the summary, which must be stderr's last line and read
/// exactly `N ok, M failed (K timed out) in T s` (T with one decimal).
fn summary(stderr: &str) -> (u64, u64, u64) {
    let last = stderr.lines().last().unwrap_or("");
    let parse = || -> Option<(u64, u64, u64)> {
        let (ok, rest) = last.split_once(" ok, ")?;
        let (failed, rest) = rest.split_once(" failed (")?;
        let (timed_out, rest) = rest.split_once(" timed out) in ")?;
        let secs = rest.strip_suffix(" s")?;
        let (whole, tenths) = secs.split_once('.')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || tenths.len() != 1 || !digits(tenths) {
            return None;
        }
        Some((
            ok.parse().ok()?,
            failed.parse().ok()?,
            timed_out.parse().ok()?,
        ))
    };
    parse().unwrap_or_else(|| panic!("stderr's last line is not the summary:\n{stderr}"))
}

/// The `--mode` values this build runs as asked.
fn modes() -> Vec<&'static str> {
    let mut m = vec!["single-gil"];
    if gilpool::Mode::SubInterpreters.is_supported() {
        m.push("subinterpreters");
    }
    m
}

/// Drains a pipe on a thread of its own.
fn drain(mut pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// Waits for `child`, killing it and failing the test past [`HANG_LIMIT`].
fn wait_limited(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > HANG_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: hung, killed after {HANG_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`run`] with the hang limit: the input is written and closed.
fn run_limited(args: &[&str], stdin: &str) -> Output {
    let mut child = gilpool()
        .arg("run")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gilpool starts");
    let mut pipe = child.stdin.take().unwrap();
    let text = stdin.to_string();
    std::thread::spawn(move || {
        let _ = pipe.write_all(text.as_bytes());
    });
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let status = wait_limited(&mut child, &format!("gilpool run {args:?}"));
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Same records line by line; error records must agree on `type` (and on
/// `message` when `messages`), the reference has no traceback.
fn assert_same(ours: &[Json], theirs: &[Json], messages: bool) {
    assert_eq!(ours.len(), theirs.len(), "line counts differ");
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        match (a.get("ok"), b.get("ok")) {
            (Some(x), Some(y)) => assert_eq!(x, y, "line {}", i + 1),
            _ => {
                let (ea, eb) = (&a["error"], &b["error"]);
                assert!(
                    ea.is_object() && eb.is_object(),
                    "line {}: {a} vs {b}",
                    i + 1
                );
                assert_eq!(ea["type"], eb["type"], "line {}: {a} vs {b}", i + 1);
                if messages {
                    assert_eq!(ea["message"], eb["message"], "line {}", i + 1);
                }
            }
        }
    }
}

#[test]
fn hundred_thousand_lines_match_a_plain_python_loop_in_order() {
    let tmp = TempDir::new("cli-run");
    let mut text = String::with_capacity(1 << 21);
    for i in 0..100_000i64 {
        match i % 10 {
            0 => text.push_str(&format!("[{}]\n", -i)),
            1 => text.push_str(&format!("[{}.5]\n", i)),
            2 => text.push_str(&format!("{{\"args\": [{}]}}\n", i)),
            3 if i % 1000 == 3 => text.push_str(&format!("[{}{:06}]\n", "1".repeat(25), i)),
            _ => text.push_str(&format!("[{i}]\n")),
        }
    }
    let input = tmp.file("inc.jsonl", &text);
    let out = run(
        &[
            "gilpool_workloads:inc",
            "--sys-path",
            "python",
            "--batch-size",
            "64",
            "-i",
            input.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).lines().count(),
        1,
        "no progress bar or noise off a terminal, only the summary: {}",
        stderr(&out)
    );
    assert_eq!(summary(&stderr(&out)), (100_000, 0, 0));
    let ours = lines(&out.stdout);
    assert_eq!(ours.len(), 100_000);
    assert_same(&ours, &reference("gilpool_workloads:inc", &input), true);
    // Integers keep every digit (serde_json alone would round them).
    let raw = String::from_utf8(out.stdout).unwrap();
    assert!(raw.contains(&format!("{{\"ok\": {}{:06}}}\n", "1".repeat(25), 1004)));
}

#[test]
fn kwargs_reach_the_function() {
    let tmp = TempDir::new("cli-run");
    let input = tmp.file(
        "echo.jsonl",
        concat!(
            "[1, \"two\", [3], {\"four\": 4}]\n",
            "{\"args\": [1], \"kwargs\": {\"k\": [1, 2], \"z\": null}}\n",
            "{\"kwargs\": {\"only\": \"kw\", \"big\": 123456789012345678901234567890}}\n",
            "{}\n",
            "[]\n",
            "{\"args\": [\"h\\u00e9\", true, 1.25e-7]}\n",
        ),
    );
    let out = run(
        &[
            "python/gilpool_workloads.py:echo",
            "-i",
            input.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let ours = lines(&out.stdout);
    assert_same(
        &ours,
        &reference("python/gilpool_workloads.py:echo", &input),
        true,
    );
    assert_eq!(
        ours[1]["ok"],
        serde_json::json!([[1], {"k": [1, 2], "z": null}])
    );
}

#[test]
fn a_raising_task_is_an_error_record_and_exit_1() {
    let tmp = TempDir::new("cli-run");
    let input = tmp.file("check.jsonl", "[1]\n[-2]\n[3]\n[-4.5]\n[5]\n");
    let target = format!("{FIXTURE}:check");
    let out = run(&[&target, "-i", input.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let ours = lines(&out.stdout);
    assert_same(&ours, &reference(&target, &input), true);
    assert_eq!(ours[0], serde_json::json!({"ok": 1}));
    let err = &ours[1]["error"];
    assert_eq!(err["type"], "ValueError");
    assert_eq!(err["message"], "negative: -2");
    let tb = err["traceback"].as_str().expect("a traceback string");
    assert!(tb.starts_with("Traceback (most recent call last):"), "{tb}");
    assert!(
        tb.contains("in check") && tb.contains("ValueError: negative: -2"),
        "{tb}"
    );
    let keys: Vec<&str> = err
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["type", "message", "traceback"]);

    assert_eq!(summary(&stderr(&out)), (3, 2, 0));

    // Every task failing is still exit 1, not a setup error.
    let out = run(
        &["gilpool_workloads:fail", "--sys-path", "python"],
        Some("[\"boom\"]\n[\"bang\"]\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    let ours = lines(&out.stdout);
    assert_eq!(ours[1]["error"]["message"], "bang");
}

#[test]
fn results_json_cannot_represent_are_errors_naming_the_type() {
    let tmp = TempDir::new("cli-run");
    let kinds = [
        "int", "bigint", "negbig", "floats", "str", "control", "none", "bools", "tuple", "nested",
        "keys", "bytes", "set", "object", "badkey", "cycle",
    ];
    let text: String = kinds.iter().map(|k| format!("[\"{k}\"]\n")).collect();
    let input = tmp.file("kinds.jsonl", &text);
    let target = format!("{FIXTURE}:value");
    let out = run(&[&target, "-i", input.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let ours = lines(&out.stdout);
    // The reference reports a cycle with json's own wording; the rest match exactly.
    assert_same(&ours, &reference(&target, &input), false);
    let message = |kind: &str| {
        let i = kinds.iter().position(|k| *k == kind).unwrap();
        assert_eq!(ours[i]["error"]["type"], "TypeError", "{kind}: {}", ours[i]);
        assert!(ours[i]["error"]["traceback"].is_null());
        ours[i]["error"]["message"].as_str().unwrap().to_string()
    };
    assert_eq!(
        message("bytes"),
        "result is not JSON serializable: Object of type bytes is not JSON serializable"
    );
    assert_eq!(
        message("set"),
        "result is not JSON serializable: Object of type set is not JSON serializable"
    );
    assert!(message("object").contains("Object of type Opaque is not JSON serializable"));
    assert!(message("badkey").contains("not tuple"));
    assert!(message("cycle").contains("circular"));
    // Exact digits and Python's float spelling in the raw text.
    let raw = String::from_utf8(out.stdout).unwrap();
    assert!(raw.contains("{\"ok\": 1267650600228229401496703205376}\n"));
    assert!(raw.contains("{\"ok\": -1180591620717411303424}\n"));
    assert!(raw.contains("{\"ok\": [0.1, 1.5, -0.0, 1e+16, 1e-05, 123.456, 5e-324, 1e+300]}\n"));

    // nan and infinities have no standard JSON token: errors too (the
    // reference writes the non-standard NaN/-Infinity instead).
    let out = run(&[&target], Some("[\"nan\"]\n[\"inf\"]\n[\"int\"]\n"));
    assert_eq!(out.status.code(), Some(1));
    let ours = lines(&out.stdout);
    assert!(ours[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not JSON compliant: nan"));
    assert!(ours[1]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not JSON compliant: -inf"));
    assert_eq!(ours[2], serde_json::json!({"ok": 7}));
}

#[test]
fn an_invalid_line_stops_with_exit_2_naming_it() {
    // The lines before it are run and written; nothing from it on.
    let out = run(
        &["gilpool_workloads:inc", "--sys-path", "python"],
        Some("[1]\n[2]\n[3,\n[4]\n"),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("line 3") && err.contains("invalid JSON"),
        "{err}"
    );
    assert_eq!(
        lines(&out.stdout),
        [serde_json::json!({"ok": 2}), serde_json::json!({"ok": 3})]
    );
    // The error comes before the summary, which counts the lines written.
    let err_lines: Vec<&str> = err.lines().collect();
    assert!(err_lines[err_lines.len() - 2].contains("line 3"), "{err}");
    assert_eq!(summary(&err), (2, 0, 0));

    for (input, line, what) in [
        ("[1]\n5\n", "line 2", "a task must be a JSON array"),
        ("[1]\n\n[2]\n", "line 2", "blank line"),
        (
            "{\"args\": [1], \"extra\": 2}\n",
            "line 1",
            "unknown task key \"extra\"",
        ),
        ("{\"args\": 1}\n", "line 1", "\"args\" must be an array"),
        ("[1]\n[2]\n[3]\n[\"\\ud800\"]\n", "line 4", "lone surrogate"),
        ("[1] [2]\n", "line 1", "extra data"),
    ] {
        let out = run(
            &["gilpool_workloads:inc", "--sys-path", "python"],
            Some(input),
        );
        assert_eq!(out.status.code(), Some(2), "{input:?}");
        let err = stderr(&out);
        assert!(err.contains(line) && err.contains(what), "{input:?}: {err}");
    }
    // Invalid UTF-8 names its line too.
    let tmp = TempDir::new("cli-run");
    let path = tmp.0.join("latin1.jsonl");
    std::fs::write(&path, b"[1]\n[\"caf\xe9\"]\n").unwrap();
    let out = run(
        &[
            "gilpool_workloads:inc",
            "--sys-path",
            "python",
            "-i",
            path.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("line 2: not valid UTF-8"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn input_edges_are_not_errors() {
    // No input: no output, success. A last line without a newline counts;
    // the final newline does not make a blank line; \r\n line ends work.
    let out = run(&["gilpool_workloads:inc", "--sys-path", "python"], Some(""));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let out = run(
        &["gilpool_workloads:inc", "--sys-path", "python"],
        Some("[1]\r\n  [2]  \n[3]"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "{\"ok\": 2}\n{\"ok\": 3}\n{\"ok\": 4}\n"
    );
}

#[test]
fn usage_and_setup_errors_exit_2_with_a_clear_message() {
    for (args, what) in [
        (&["gilpool_workloads"][..], "TARGET must be"),
        (&[":inc"], "TARGET must be"),
        (&["gilpool_workloads:"], "TARGET must be"),
        (&["python/no_such_file.py:inc"], "does not exist"),
        (&["no_such_module_xyz:f"], "no_such_module_xyz"),
        (
            &["gilpool_workloads:no_such_function", "--sys-path", "python"],
            "no_such_function",
        ),
        (
            &["gilpool_workloads:NOT_CALLABLE", "--sys-path", "python"],
            "not a callable",
        ),
        (
            &[
                "gilpool_workloads:inc",
                "--sys-path",
                "python",
                "-i",
                "/no/such/input.jsonl",
            ],
            "/no/such/input.jsonl",
        ),
        (
            &["gilpool_workloads:inc", "--sys-path", "no/such/dir"],
            "no/such/dir",
        ),
        (
            &["gilpool_workloads:inc", "--venv", "venv"],
            "virtual environment venv: No such file",
        ),
        (
            &["gilpool_workloads:inc", "--timeout", "0"],
            "positive number of seconds",
        ),
        (
            &["gilpool_workloads:inc", "--timeout", "-1"],
            "positive number of seconds",
        ),
        (
            &["gilpool_workloads:inc", "--timeout", "nan"],
            "positive number of seconds",
        ),
        (
            &["gilpool_workloads:inc", "--timeout", "inf"],
            "positive number of seconds",
        ),
        (
            &["gilpool_workloads:inc", "--shutdown-timeout", "-0.5"],
            "0 or more",
        ),
        (
            &["gilpool_workloads:inc", "--workers", "0"],
            "--workers must be at least 1",
        ),
        (
            &["gilpool_workloads:inc", "--batch-size", "0"],
            "--batch-size must be at least 1",
        ),
        (
            &["gilpool_workloads:inc", "--mode", "threads"],
            "invalid value",
        ),
    ] {
        let out = run(args, Some("[1]\n"));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(what), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

/// Runs `gilpool run ARGS` on `input` (a file), reads `keep` lines of its
/// stdout, then closes the pipe, as `gilpool run … | head -n KEEP` does.
fn run_closing_stdout_after(args: &[&str], input: &Path, keep: usize) -> (Vec<String>, Output) {
    use std::io::BufRead;
    let mut child = gilpool()
        .arg("run")
        .args(args)
        .arg("--input")
        .arg(input)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gilpool starts");
    let mut lines = Vec::new();
    {
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        while lines.len() < keep {
            let mut line = String::new();
            assert!(out.read_line(&mut line).unwrap() > 0, "output ended early");
            lines.push(line);
        }
    } // the read end closes here
    (lines, child.wait_with_output().unwrap())
}

#[test]
fn a_closed_output_stops_quietly() {
    let tmp = TempDir::new("cli-run");
    // Far more output than a pipe buffer holds, so the writer meets the
    // closed pipe while tasks are still queued.
    let many: String = (0..200_000).map(|i| format!("[{i}]\n")).collect();
    let input = tmp.file("many.jsonl", &many);
    let (lines, out) = run_closing_stdout_after(&["python/gilpool_workloads.py:inc"], &input, 2);
    assert_eq!(lines, ["{\"ok\": 1}\n", "{\"ok\": 2}\n"]);
    assert_exit(&out, 0);
    // No error; the summary counts at least the lines read.
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    let (ok, failed, timed_out) = summary(&stderr(&out));
    assert!(ok >= 2 && failed == 0 && timed_out == 0, "{}", stderr(&out));
    // A task that failed before the pipe closed still makes it exit 1.
    let failing: String = std::iter::once("[\"x\"]\n".to_string())
        .chain((0..200_000).map(|i| format!("[{i}]\n")))
        .collect();
    let input = tmp.file("failing.jsonl", &failing);
    let (lines, out) = run_closing_stdout_after(&["python/gilpool_workloads.py:inc"], &input, 2);
    assert!(
        lines[0].starts_with("{\"error\": {\"type\": \"TypeError\""),
        "{}",
        lines[0]
    );
    assert_exit(&out, 1);
}

#[test]
fn output_file_gets_the_results() {
    let tmp = TempDir::new("cli-run");
    let output = tmp.0.join("out.jsonl");
    let out = run(
        &[
            "python/gilpool_workloads.py:add",
            "--output",
            output.to_str().unwrap(),
        ],
        Some("[1, 2]\n[\"a\", \"b\"]\n[[1], [2]]\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let written = std::fs::read_to_string(&output).unwrap();
    assert_eq!(written, "{\"ok\": 3}\n{\"ok\": \"ab\"}\n{\"ok\": [1, 2]}\n");
}

#[test]
fn stdin_is_the_default_input_and_dash_names_it() {
    for extra in [&[][..], &["-i", "-"]] {
        let mut args = vec!["gilpool_workloads:add", "--sys-path", "python"];
        args.extend_from_slice(extra);
        let out = run(
            &args,
            Some("[1, 2]\n{\"args\": [3], \"kwargs\": {\"b\": 4}}\n"),
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(
            lines(&out.stdout),
            [serde_json::json!({"ok": 3}), serde_json::json!({"ok": 7})]
        );
    }
}

#[test]
fn file_targets_load_the_file_and_its_folder() {
    // The folder of a file TARGET is on sys.path, so the module can import
    // its siblings; a relative path, a `./` path and an absolute one work.
    let tmp = TempDir::new("cli-run");
    tmp.file(
        "helper_mod_for_run.py",
        "def double(x):\n    return 2 * x\n",
    );
    tmp.file("entry_for_run.py", "import helper_mod_for_run\n\ndef quad(x):\n    return helper_mod_for_run.double(helper_mod_for_run.double(x))\n");
    let absolute = format!("{}:quad", tmp.0.join("entry_for_run.py").display());
    let out = run(&[&absolute, "--workers", "2"], Some("[1]\n[2]\n[-3]\n"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "{\"ok\": 4}\n{\"ok\": 8}\n{\"ok\": -12}\n"
    );
    for target in [
        "python/gilpool_workloads.py:inc",
        "./python/gilpool_workloads.py:inc",
    ] {
        let out = run(&[target], Some("[41]\n"));
        assert_eq!(out.status.code(), Some(0), "{target}: {}", stderr(&out));
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "{\"ok\": 42}\n");
    }
}

#[test]
fn single_gil_mode_gives_the_same_outputs() {
    let tmp = TempDir::new("cli-run");
    let mut text: String = (0..5000).map(|i| format!("[{i}]\n")).collect();
    text.push_str("[\"x\"]\n[-1]\n");
    let input = tmp.file("mixed.jsonl", &text);
    let input = input.to_str().unwrap();
    let mut outputs = Vec::new();
    for mode in ["auto", "single-gil", "subinterpreters"] {
        for batch in ["1", "7"] {
            let out = run(
                &[
                    "gilpool_workloads:inc",
                    "--sys-path",
                    "python",
                    "--mode",
                    mode,
                    "-b",
                    batch,
                    "--no-pin",
                    "-i",
                    input,
                ],
                None,
            );
            assert_eq!(out.status.code(), Some(1), "{mode}: {}", stderr(&out));
            outputs.push((mode, lines(&out.stdout)));
        }
    }
    for (mode, o) in &outputs[1..] {
        assert_same(o, &outputs[0].1, true);
        assert_eq!(o.len(), 5002, "{mode}");
    }
    assert_eq!(outputs[0].1[5000]["error"]["type"], "TypeError");
}

#[test]
fn the_summary_is_the_last_stderr_line_of_a_normal_run() {
    for mode in modes() {
        let target = format!("{FIXTURE}:check");
        let out = run_limited(&[&target, "--mode", mode], "[1]\n[-2]\n[3]\n");
        assert_eq!(out.status.code(), Some(1), "{mode}: {}", stderr(&out));
        assert_eq!(summary(&stderr(&out)), (2, 1, 0), "{mode}");
        let out = run_limited(&[&target, "--mode", mode], "[1]\n[2]\n");
        assert_eq!(out.status.code(), Some(0), "{mode}: {}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1, "{mode}: {}", stderr(&out));
        assert_eq!(summary(&stderr(&out)), (2, 0, 0), "{mode}");
        // No input at all still has its summary.
        let out = run_limited(&[&target, "--mode", mode], "");
        assert_eq!(out.status.code(), Some(0), "{mode}: {}", stderr(&out));
        assert_eq!(summary(&stderr(&out)), (0, 0, 0), "{mode}");
    }
}

/// The Timeout record of a task past its `--timeout`.
fn assert_timeout(record: &Json, context: &str) {
    let err = &record["error"];
    assert_eq!(err["type"], "Timeout", "{context}: {record}");
    assert!(err["traceback"].is_null(), "{context}: {record}");
    let message = err["message"].as_str().expect("a message");
    assert!(message.contains("deadline"), "{context}: {message}");
    let keys: Vec<&str> = err
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["type", "message", "traceback"], "{context}");
}

#[test]
fn a_task_past_its_timeout_is_interrupted_and_the_run_goes_on() {
    let target = format!("{HOSTILE}:spin");
    for mode in modes() {
        // With one worker the second task waits for the first to time out:
        // its own time starts only when a worker has room for it.
        for workers in ["2", "1"] {
            let context = format!("{mode}, {workers} workers");
            let out = run_limited(
                &[&target, "--timeout", "1", "--mode", mode, "-w", workers],
                "[0]\n[1]\n",
            );
            assert_eq!(out.status.code(), Some(1), "{context}: {}", stderr(&out));
            let ours = lines(&out.stdout);
            assert_eq!(ours.len(), 2, "{context}");
            assert_timeout(&ours[0], &context);
            assert_eq!(ours[1], serde_json::json!({"ok": 1}), "{context}");
            assert_eq!(summary(&stderr(&out)), (1, 1, 1), "{context}");
        }
    }
}

#[test]
fn a_task_blocked_in_c_past_its_timeout_is_given_up_and_its_worker_replaced() {
    // time.sleep(3600) cannot be interrupted: after the grace period (1 s)
    // the task is resolved as timed out and its worker quarantined.
    let target = format!("{HOSTILE}:block");
    for mode in modes() {
        for workers in ["2", "1"] {
            let context = format!("{mode}, {workers} workers");
            let out = run_limited(
                &[&target, "--timeout", "1", "--mode", mode, "-w", workers],
                "[0]\n[1]\n",
            );
            assert_eq!(out.status.code(), Some(1), "{context}: {}", stderr(&out));
            let ours = lines(&out.stdout);
            assert_eq!(ours.len(), 2, "{context}");
            assert_timeout(&ours[0], &context);
            assert_eq!(ours[1], serde_json::json!({"ok": 1}), "{context}");
            assert_eq!(summary(&stderr(&out)), (1, 1, 1), "{context}");
        }
    }
}

#[test]
fn threads_tasks_leave_behind_never_hang_the_end() {
    let target = format!("{HOSTILE}:leave_thread");
    for mode in modes() {
        for wait in [
            &["--shutdown-timeout", "0.5"][..],
            &["--shutdown-timeout", "0"],
        ] {
            let mut args = vec![target.as_str(), "--mode", mode];
            args.extend_from_slice(wait);
            let out = run_limited(&args, "[1]\n[2]\n[3]\n");
            assert_eq!(out.status.code(), Some(0), "{mode}: {}", stderr(&out));
            assert_eq!(summary(&stderr(&out)), (3, 0, 0), "{mode}");
            assert_eq!(
                String::from_utf8(out.stdout).unwrap(),
                "{\"ok\": 1}\n{\"ok\": 2}\n{\"ok\": 3}\n",
                "{mode}"
            );
        }
    }
}

/// Starts `gilpool run ARGS` on a pipe it keeps open, writes `input`, waits
/// until `ready` output lines arrived, sends `signal` with `kill`, and
/// returns the exit status, every output line and stderr.
fn signal_while_running(
    args: &[&str],
    input: &str,
    ready: usize,
    signal: &str,
) -> (std::process::ExitStatus, Vec<String>, String) {
    use std::io::BufRead;
    let mut child = gilpool()
        .arg("run")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gilpool starts");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let reader = std::thread::spawn(move || {
        for line in stdout.lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let err = drain(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    while seen.len() < ready {
        match rx.recv_timeout(HANG_LIMIT) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{args:?}: only {seen:?} written before the signal");
            }
        }
    }
    let killed = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(killed.success(), "kill -{signal} failed");
    let status = wait_limited(&mut child, &format!("{args:?} after SIG{signal}"));
    // The input stays open until gilpool has exited.
    drop(stdin);
    reader.join().unwrap();
    seen.extend(rx.try_iter());
    (
        status,
        seen,
        String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
    )
}

#[test]
fn a_signal_stops_the_run_and_keeps_the_finished_lines() {
    let target = format!("{HOSTILE}:spin");
    for mode in modes() {
        for (signal, code) in [("INT", 130), ("TERM", 143)] {
            // The last line spins forever: the signal interrupts it, and it
            // is not written. Then a run whose tasks are all done, waiting
            // for input that never comes.
            for (input, done) in [("[1]\n[2]\n[3]\n[0]\n", 3), ("[4]\n[5]\n", 2)] {
                let context = format!("{mode}, SIG{signal}, {input:?}");
                let (status, out, err) = signal_while_running(
                    &[&target, "--mode", mode, "-w", "2"],
                    input,
                    done,
                    signal,
                );
                assert_eq!(status.code(), Some(code), "{context}: {err}");
                let want: Vec<String> = input
                    .lines()
                    .take(done)
                    .map(|l| format!("{{\"ok\": {}}}", &l[1..l.len() - 1]))
                    .collect();
                assert_eq!(out, want, "{context}");
                assert!(
                    err.contains(&format!("stopped by SIG{signal}")),
                    "{context}: {err}"
                );
                assert_eq!(summary(&err), (done as u64, 0, 0), "{context}");
            }
        }
    }
}

#[test]
fn stats_prints_a_table_per_worker_before_the_summary() {
    let workloads = root().join("python/gilpool_workloads.py");
    let target = format!("{}:inc", workloads.display());
    for mode in modes() {
        let input: String = (0..200).map(|i| format!("[{i}]\n")).collect();
        let out = run(
            &[&target, "--stats", "--workers", "2", "--mode", mode],
            Some(&input),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(lines(&out.stdout).len(), 200);
        let err = stderr(&out);
        let rows: Vec<&str> = err.lines().collect();
        let header = rows
            .iter()
            .position(|l| {
                l.starts_with("worker ") && l.contains("steals") && l.contains("quarantines")
            })
            .unwrap_or_else(|| panic!("no stats table: {err}"));
        let workers = rows[header + 1..]
            .iter()
            .take_while(|l| l.starts_with("sub-") || l.starts_with("main-"))
            .count();
        assert_eq!(workers, 2, "{err}");
        assert!(err.contains(":inc on the "), "{err}");
        assert!(err.contains("200 ok, 0 failed"), "{err}");
        assert_eq!(summary(&err), (200, 0, 0));
    }
}
