//! The Python-side peers: one `python/gilpool_baselines.py --serve` child
//! per workload, which starts and warms every peer once, then answers one
//! timed run per `run NAME` line, as JSON.

use super::measure::{Runner, Slot};
use super::{Entry, Outcome, Plan, Source, Workload};
use serde_json::{json, Value as Json};
use std::io::{BufRead, BufReader, Write as _};
use std::process::{Command, Stdio};

/// The baselines script in serve mode: every peer started once, then one
/// timed run per `run NAME` line.
#[derive(Debug)]
pub(super) struct Baselines {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
    /// The first line: the run's header and each entry's start-up.
    ready: Json,
    /// Every answer, in order (kept for `--json`).
    answers: Vec<Json>,
    tasks: usize,
}

impl Baselines {
    pub(super) fn start(
        plan: &Plan,
        executable: &str,
        wl: Workload,
        tasks: usize,
    ) -> Result<Baselines, String> {
        let script = plan.dir.join("gilpool_baselines.py");
        let mut command = Command::new(executable);
        command
            .arg(&script)
            .arg("--serve")
            .args(["--workload", wl.name()])
            .args(["--tasks", &tasks.to_string()])
            .args(["--workers", &plan.workers.to_string()]);
        if plan.scaling {
            command.args(["--only", &super::scaling::peers(wl).join(",")]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {executable}: {e}"))?;
        let stdin = child
            .stdin
            .take()
            .ok_or("the baselines' stdin is missing")?;
        let stdout = BufReader::new(
            child
                .stdout
                .take()
                .ok_or("the baselines' stdout is missing")?,
        );
        let mut me = Baselines {
            child,
            stdin,
            stdout,
            ready: Json::Null,
            answers: Vec::new(),
            tasks,
        };
        me.ready = me.read_line().map_err(|e| {
            format!(
                "{executable} {} --serve did not start: {e}",
                script.display()
            )
        })?;
        if !me.ready["ready"].is_array() {
            return Err(format!(
                "the baselines' first line has no \"ready\" list: {}",
                me.ready
            ));
        }
        Ok(me)
    }

    fn read_line(&mut self) -> Result<Json, String> {
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .map_err(|e| format!("cannot read from the baselines: {e}"))?;
        if n == 0 {
            let status = self
                .child
                .wait()
                .map_or("unknown".into(), |s| s.to_string());
            return Err(format!("the baselines process ended ({status})"));
        }
        serde_json::from_str(&line)
            .map_err(|e| format!("cannot parse the baselines' answer ({e}): {}", line.trim()))
    }

    /// One slot per entry the script reported, started or not.
    pub(super) fn slots(&self) -> Result<Vec<Slot>, String> {
        let workers_all = self.ready["workers"].as_u64().unwrap_or(1) as usize;
        let mut out = Vec::new();
        for e in self.ready["ready"].as_array().into_iter().flatten() {
            let name = e["name"]
                .as_str()
                .ok_or_else(|| format!("a baselines entry without a name: {e}"))?
                .to_string();
            let (source, label, grouping) =
                python_entry_meta(&name, e["chunksize"].as_u64(), e["module"].as_str());
            let (outcome, runner) = if let Some(why) = e["skipped"].as_str() {
                (Outcome::Skipped(why.to_string()), None)
            } else if let Some(err) = e["error"].as_str() {
                (Outcome::Failed(err.to_string()), None)
            } else {
                (
                    Outcome::Skipped(String::new()),
                    Some(Runner::Python(name.clone())),
                )
            };
            let entry = Entry {
                key: name,
                label,
                grouping,
                source,
                workers: e["workers"].as_u64().map_or(workers_all, |w| w as usize),
                tasks: self.tasks,
                outcome,
            };
            out.push(Slot::new(entry, runner, e["startup_s"].as_f64()));
        }
        Ok(out)
    }

    /// Times one run of `name`: `Ok(Ok((seconds, verified)))`, or
    /// `Ok(Err(why))` when that entry failed (the others go on).
    pub(super) fn run(&mut self, name: &str) -> Result<Result<(f64, bool), String>, String> {
        writeln!(self.stdin, "run {name}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("cannot write to the baselines: {e}"))?;
        let answer = self.read_line()?;
        if answer["name"].as_str() != Some(name) {
            return Err(format!("asked the baselines for {name}, got {answer}"));
        }
        let result = if let Some(err) = answer["error"].as_str() {
            Err(err.to_string())
        } else {
            match answer["seconds"].as_f64() {
                Some(s) => Ok((s, answer["verified"].as_bool().unwrap_or(false))),
                None => Err(format!("no seconds in {answer}")),
            }
        };
        self.answers.push(answer);
        Ok(result)
    }

    /// Closes every peer; returns everything the script said.
    pub(super) fn finish(mut self) -> Json {
        let _ = writeln!(self.stdin, "quit").and_then(|()| self.stdin.flush());
        let _ = self.child.wait();
        json!({ "ready": self.ready, "runs": self.answers })
    }
}

/// Row label, grouping and colour of a Python-side entry.
fn python_entry_meta(
    name: &str,
    chunk: Option<u64>,
    module: Option<&str>,
) -> (Source, String, String) {
    let module = module.unwrap_or("_interpreters");
    let (source, label, grouping) = match name {
        "sequential" => (Source::Sequential, "sequential Python", String::new()),
        "threads" => (
            Source::Threads,
            "threads (ThreadPoolExecutor)",
            String::new(),
        ),
        "mp_pool_default" => (
            Source::ProcessPool,
            "multiprocessing.Pool.map",
            chunk.map_or("default chunks".into(), |c| format!("chunk {c} (default)")),
        ),
        "mp_pool_chunk1" => (
            Source::ProcessPool,
            "multiprocessing.Pool.map",
            "chunk 1".into(),
        ),
        "ppe_chunk1" => (
            Source::ProcessPool,
            "ProcessPoolExecutor.map",
            "chunk 1".into(),
        ),
        "ppe_tuned" => (
            Source::ProcessPool,
            "ProcessPoolExecutor.map",
            chunk.map_or("tuned chunks".into(), |c| format!("chunk {c} (tuned)")),
        ),
        "interpreters" => (Source::Interpreters, module, "one exec per share".into()),
        "interpreters_per_task" => (Source::Interpreters, module, "one exec per task".into()),
        "ceiling" => (
            Source::Ceiling,
            "ceiling: independent processes",
            String::new(),
        ),
        "ceiling_sub" => (
            Source::Interpreters,
            "ceiling: independent processes",
            "each in a subinterpreter".into(),
        ),
        other => (Source::Threads, other, String::new()),
    };
    (source, label.to_string(), grouping)
}

impl Drop for Baselines {
    fn drop(&mut self) {
        // Reached without `finish` only on an error path: do not leave the
        // peers (and their pools) running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
