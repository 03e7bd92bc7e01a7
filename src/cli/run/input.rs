//! Input: JSON Lines to call arguments, read and parsed on a thread of
//! its own.
//!
//! The reader thread ([`spawn_reader`]) reads a line at a time, parses it
//! into the call's [`Args`] ([`parse_task`]) and hands them to the run's
//! loop in chunks ([`Event::Tasks`]), in input order. A chunk goes out when
//! it is full or whenever the next read could block (no complete line is
//! buffered), so a slow or interactive input is run line by line. The run's
//! loop never blocks on the input itself: a signal or a finished task wakes
//! it ([`Event::Wake`]) while the reader waits for more. The first line that
//! is not a task ends the reading ([`Event::Stop`] naming it); nothing after
//! it is read.

use super::json::{is_json_space, parse_json};
use super::signals::Stopper;
use gilpool::{Args, Value};
use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::mem::take;
use std::path::Path;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

/// The most tasks in one [`Event::Tasks`] chunk.
const CHUNK: usize = 64;

/// What the run's loop receives, in order.
#[derive(Debug)]
pub(super) enum Event {
    /// The next input lines' tasks, in input order.
    Tasks(Vec<Args>),
    /// The input ended; every line was a task.
    End,
    /// Reading stopped: a line that is not a task, or a read error (the
    /// message names it). The lines before it were all sent.
    Stop(String),
    /// Nothing to read: a task finished, or a signal came. Look again.
    Wake,
}

/// The input: stdin or a file, buffered.
pub(super) type Input = BufReader<Box<dyn Read + Send>>;

/// Opens the input (`-` is stdin). The second value is the number of lines,
/// counted in a first pass only when the progress bar will show and the
/// input is a regular file (which can be read twice).
pub(super) fn open_input(path: &str, force_progress: bool) -> Result<(Input, Option<u64>), String> {
    if path == "-" {
        let stdin: Box<dyn Read + Send> = Box::new(std::io::stdin());
        return Ok((BufReader::with_capacity(1 << 16, stdin), None));
    }
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open input file {path}: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot open input file {path}: {e}"))?;
    if meta.is_dir() {
        return Err(format!("input {path} is a directory"));
    }
    let len = if meta.is_file() && (force_progress || std::io::stderr().is_terminal()) {
        count_lines(Path::new(path)).ok()
    } else {
        None
    };
    let file: Box<dyn Read + Send> = Box::new(file);
    Ok((BufReader::with_capacity(1 << 16, file), len))
}

/// The number of lines in a file: its newlines, plus one for a last line
/// without a newline.
fn count_lines(path: &Path) -> std::io::Result<u64> {
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 16];
    let mut lines = 0u64;
    let mut last = b'\n';
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        last = buf[n - 1];
    }
    Ok(lines + u64::from(last != b'\n'))
}

/// Starts the reader thread: it sends every line's task to `tx` in order,
/// then [`Event::End`] or [`Event::Stop`]. It stops early, sending nothing
/// more, once the run is stopped by a signal or its loop has gone. A
/// reader blocked on an input that never ends is left to the process's
/// exit.
pub(super) fn spawn_reader(
    input: Input,
    name: &str,
    tx: SyncSender<Event>,
    stopper: Arc<Stopper>,
) -> Result<(), String> {
    let name = if name == "-" { "stdin" } else { name }.to_string();
    std::thread::Builder::new()
        .name("gilpool-run-input".into())
        .spawn(move || {
            let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                read(input, &name, &tx, &stopper)
            }));
            if read.is_err() {
                let _ = tx.send(Event::Stop(format!("reading {name} failed (a panic)")));
            }
        })
        .map(drop)
        .map_err(|e| format!("cannot spawn the input thread: {e}"))
}

/// The reader thread's loop.
fn read(mut input: Input, name: &str, tx: &SyncSender<Event>, stopper: &Stopper) {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut line_no = 0u64;
    let end = loop {
        // The next read blocks only when no complete line is buffered:
        // hand over what was parsed first.
        if !chunk.is_empty() && !input.buffer().contains(&b'\n') {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
            if tx.send(Event::Tasks(full)).is_err() {
                return;
            }
        }
        if stopper.signalled() {
            return;
        }
        buf.clear();
        match input.read_until(b'\n', &mut buf) {
            Ok(0) => break Event::End,
            Ok(_) => {}
            Err(e) => break Event::Stop(format!("cannot read {name}: {e}")),
        }
        line_no += 1;
        match parse_task(&buf) {
            Ok(args) => chunk.push(args),
            Err(e) => break Event::Stop(format!("{name}: line {line_no}: {e}")),
        }
        if chunk.len() >= CHUNK {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
            if tx.send(Event::Tasks(full)).is_err() {
                return;
            }
        }
    };
    if !chunk.is_empty() && tx.send(Event::Tasks(chunk)).is_err() {
        return;
    }
    let _ = tx.send(end);
}

/// Parses one input line (with or without its newline) into the call's
/// arguments: `[...]` is positional, `{"args": [...], "kwargs": {...}}`
/// (both optional, no other keys) adds keywords.
pub(super) fn parse_task(line: &[u8]) -> Result<Args, String> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let text = std::str::from_utf8(line)
        .map_err(|e| format!("not valid UTF-8 (at byte {})", e.valid_up_to() + 1))?;
    if text.bytes().all(is_json_space) {
        return Err("blank line (every line must be a task)".into());
    }
    let mut value = parse_json(text).map_err(|e| format!("invalid JSON: {e}"))?;
    // `Value` implements `Drop`: parts are taken out through `&mut`.
    match &mut value {
        Value::List(items) => Ok(Args::from_parts(take(items), Vec::new())),
        Value::Dict(pairs) => {
            let mut positional = Vec::new();
            let mut keywords = Vec::new();
            // A repeated key: the last one wins, as in Python's json.loads.
            for (key, value) in pairs.iter_mut() {
                let Value::Str(k) = key else {
                    return Err(format!("unexpected key {key:?}"));
                };
                match (k.as_str(), value) {
                    ("args", Value::List(items)) => positional = take(items),
                    ("kwargs", Value::Dict(kw)) => {
                        // The parser makes every object key a `Value::Str`.
                        keywords = take(kw)
                            .into_iter()
                            .filter_map(|(mut k, v)| match &mut k {
                                Value::Str(k) => Some((take(k), v)),
                                _ => None,
                            })
                            .collect();
                    }
                    ("args", v) => {
                        return Err(format!("\"args\" must be an array, got {}", json_type(v)))
                    }
                    ("kwargs", v) => {
                        return Err(format!("\"kwargs\" must be an object, got {}", json_type(v)))
                    }
                    (k, _) => {
                        return Err(format!("unknown task key {k:?} (a task object has only \"args\" and \"kwargs\")"))
                    }
                }
            }
            Ok(Args::from_parts(positional, keywords))
        }
        other => Err(format!(
            "a task must be a JSON array of arguments or an object with \"args\"/\"kwargs\", got {}",
            json_type(other)
        )),
    }
}

/// The JSON name of a parsed value's type, for messages.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::None => "null",
        Value::Bool(_) => "a boolean",
        Value::Int(_) | Value::BigInt(_) | Value::Float(_) => "a number",
        Value::Str(_) => "a string",
        Value::List(_) | Value::Tuple(_) => "an array",
        Value::Dict(_) => "an object",
        Value::Bytes(_) => "bytes",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_are_arrays_or_args_kwargs_objects() {
        let a = parse_task(b"[1, \"two\"]\n").unwrap();
        assert_eq!(a.positional(), &[Value::Int(1), Value::Str("two".into())]);
        assert!(a.keywords().is_empty());
        let a = parse_task(b"{\"kwargs\": {\"b\": 2}, \"args\": [1]}\r\n").unwrap();
        assert_eq!(a.positional(), &[Value::Int(1)]);
        assert_eq!(a.keywords(), &[("b".to_string(), Value::Int(2))]);
        assert!(parse_task(b"{}").unwrap().positional().is_empty());
        for (line, want) in [
            (&b"\n"[..], "blank line"),
            (b"  \r\n", "blank line"),
            (b"5", "a task must be a JSON array"),
            (b"{\"args\": 1}", "\"args\" must be an array, got a number"),
            (
                b"{\"kwargs\": []}",
                "\"kwargs\" must be an object, got an array",
            ),
            (b"{\"x\": 1}", "unknown task key \"x\""),
            (b"[1", "invalid JSON: expected ',' or ']' at column 3"),
            (b"[\"\xff\"]", "not valid UTF-8 (at byte 3)"),
        ] {
            let e = parse_task(line).unwrap_err();
            assert!(e.contains(want), "{e:?} lacks {want:?}");
        }
    }
}
