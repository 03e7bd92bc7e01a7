//! Output: each task's outcome as its JSON line, the text `json.dumps`
//! writes for the result (`{"ok": RESULT}`), or an error record
//! (`{"error": {"type": ..., "message": ..., "traceback": ...}}`).
//!
//! [`encode_result`] runs on the worker, attached to the interpreter that
//! produced the result, so the expensive part of the output is built in
//! parallel and no intermediate `Value` tree is made; the records of
//! failed tasks are built by the writer ([`task_error_line`]).

use super::MAX_DEPTH;
use gilpool::Object;
use gilpool_ffi::Kind;
use std::fmt::Write as _;

/// A task's outcome as a worker encoded it: the whole output line, or why
/// the result has no JSON form.
pub(super) type Encoded = Result<String, String>;

/// The error record of a task that did not return: the Python exception's
/// class name (`type(e).__name__`), `str(e)` and its formatted traceback;
/// a task past its `--timeout` has type `Timeout`; gilpool's own errors (a
/// worker that could not import the module, a cancelled task) have type
/// `GilpoolError`. Both carry gilpool's description and no traceback.
pub(super) fn task_error_line(e: &gilpool::Error) -> String {
    if e.is_timeout() {
        return error_line("Timeout", &e.to_string(), None);
    }
    match e.python() {
        Some(exc) => {
            let type_name = exc.type_name.rsplit('.').next().unwrap_or(&exc.type_name);
            let message = if e.is_python() {
                exc.message.clone()
            } else {
                e.to_string()
            };
            let traceback = (!exc.traceback.is_empty()).then_some(exc.traceback.as_str());
            error_line(type_name, &message, traceback)
        }
        None => error_line("GilpoolError", &e.to_string(), None),
    }
}

/// `{"error": {"type": ..., "message": ..., "traceback": ...}}` and a newline.
pub(super) fn error_line(type_name: &str, message: &str, traceback: Option<&str>) -> String {
    let mut line = String::with_capacity(64 + message.len() + traceback.map_or(0, str::len));
    line.push_str("{\"error\": {\"type\": ");
    write_str(&mut line, type_name);
    line.push_str(", \"message\": ");
    write_str(&mut line, message);
    line.push_str(", \"traceback\": ");
    match traceback {
        Some(tb) => write_str(&mut line, tb),
        None => line.push_str("null"),
    }
    line.push_str("}}\n");
    line
}

/// Encodes a task's result as its output line `{"ok": RESULT}`; runs on the
/// worker, attached to the interpreter that produced `obj`.
pub(super) fn encode_result(obj: Object<'_>) -> gilpool::Result<Encoded> {
    let mut line = String::with_capacity(32);
    line.push_str("{\"ok\": ");
    Ok(match write_object(&mut line, &obj, 0) {
        Ok(()) => {
            line.push_str("}\n");
            Ok(line)
        }
        Err(reason) => Err(reason),
    })
}

/// Describes a Python exception raised while reading an object.
fn py_error(e: gilpool::PyException) -> String {
    e.to_string()
}

/// Appends `obj` as JSON; `Err` says why it has no JSON form.
fn write_object(out: &mut String, obj: &Object<'_>, depth: usize) -> Result<(), String> {
    match obj.kind() {
        Kind::None => out.push_str("null"),
        Kind::Bool => out.push_str(if obj.extract_bool().map_err(py_error)? {
            "true"
        } else {
            "false"
        }),
        Kind::Int => write_int(out, obj)?,
        Kind::Float => {
            let x = obj.extract_f64().map_err(py_error)?;
            if !x.is_finite() {
                let repr = if x.is_nan() {
                    "nan"
                } else if x > 0.0 {
                    "inf"
                } else {
                    "-inf"
                };
                return Err(format!(
                    "Out of range float values are not JSON compliant: {repr}"
                ));
            }
            write_float(out, x);
        }
        Kind::Str => write_str(out, &obj.extract_str().map_err(py_error)?),
        Kind::List | Kind::Tuple => {
            check_depth(depth)?;
            out.push('[');
            for (i, item) in obj.sequence_items().map_err(py_error)?.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_object(out, item, depth + 1)?;
            }
            out.push(']');
        }
        Kind::Dict => {
            check_depth(depth)?;
            out.push('{');
            for (i, (key, value)) in obj.dict_items().map_err(py_error)?.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_key(out, key)?;
                out.push_str(": ");
                write_object(out, value, depth + 1)?;
            }
            out.push('}');
        }
        Kind::Bytes | Kind::Other => {
            return Err(format!(
                "Object of type {} is not JSON serializable",
                short_type_name(obj)
            ));
        }
    }
    Ok(())
}

/// `type(obj).__name__`, as Python's `json` names types in its messages.
fn short_type_name(obj: &Object<'_>) -> String {
    let name = obj.type_name();
    match name.rsplit_once('.') {
        Some((_, short)) => short.to_string(),
        None => name,
    }
}

/// Refuses to go deeper than [`MAX_DEPTH`] (a circular structure, or one
/// `json.dumps` would refuse with `RecursionError`).
fn check_depth(depth: usize) -> Result<(), String> {
    if depth >= MAX_DEPTH {
        return Err(format!(
            "nested deeper than {MAX_DEPTH} levels (a circular reference?)"
        ));
    }
    Ok(())
}

/// Appends a dict key: strings as they are; `int`, `float`, `bool` and
/// `None` keys as strings, the way `json.dumps` converts them.
fn write_key(out: &mut String, key: &Object<'_>) -> Result<(), String> {
    match key.kind() {
        Kind::Str => write_str(out, &key.extract_str().map_err(py_error)?),
        Kind::Bool => out.push_str(if key.extract_bool().map_err(py_error)? {
            "\"true\""
        } else {
            "\"false\""
        }),
        Kind::None => out.push_str("\"null\""),
        Kind::Int => {
            out.push('"');
            write_int(out, key)?;
            out.push('"');
        }
        Kind::Float => {
            let x = key.extract_f64().map_err(py_error)?;
            out.push('"');
            if x.is_finite() {
                write_float(out, x);
            } else {
                out.push_str(float_name(x));
            }
            out.push('"');
        }
        _ => {
            return Err(format!(
                "keys must be str, int, float, bool or None, not {}",
                short_type_name(key)
            ));
        }
    }
    Ok(())
}

/// Appends an `int` in full decimal precision.
fn write_int(out: &mut String, obj: &Object<'_>) -> Result<(), String> {
    match obj.extract_i64().map_err(py_error)? {
        Some(i) => {
            let _ = write!(out, "{i}");
        }
        None => out.push_str(&obj.int_to_decimal().map_err(py_error)?),
    }
    Ok(())
}

/// `json.dumps`'s spelling of a non-finite float.
fn float_name(x: f64) -> &'static str {
    if x.is_nan() {
        "NaN"
    } else if x > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

/// Appends a finite float as Python's `repr` writes it: the shortest digits
/// that round-trip, positional for exponents -4 to 15 (with `.0` when
/// integral), else `d.ddde+XX`.
fn write_float(out: &mut String, x: f64) {
    // `{:e}` gives the shortest round-trip digits, e.g. `-1.2345e2`, `0e0`.
    let mut sci = format!("{x:e}");
    // When the value lies exactly halfway between two shortest candidates,
    // `{:e}` takes the upper one and Python the even one; the correctly
    // rounded (half-to-even) form of the same length is Python's choice
    // whenever it round-trips.
    let n = sci
        .bytes()
        .take_while(|&b| b != b'e')
        .filter(u8::is_ascii_digit)
        .count();
    let even = format!("{:.*e}", n.saturating_sub(1), x);
    if even != sci && even.parse::<f64>() == Ok(x) {
        sci = even;
    }
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let digits = match digits.trim_end_matches('0') {
        "" => "0",
        d => d,
    };
    if negative {
        out.push('-');
    }
    if !(-4..16).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(
            out,
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        );
    } else if exp >= 0 {
        let whole = exp as usize + 1;
        if digits.len() <= whole {
            out.push_str(digits);
            out.extend(std::iter::repeat('0').take(whole - digits.len()));
            out.push_str(".0");
        } else {
            out.push_str(&digits[..whole]);
            out.push('.');
            out.push_str(&digits[whole..]);
        }
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat('0').take((-exp - 1) as usize));
        out.push_str(digits);
    }
}

/// Appends a JSON string, escaped as `json.dumps(..., ensure_ascii=False)`
/// escapes it: `"`, `\`, and control characters.
fn write_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float(x: f64) -> String {
        let mut s = String::new();
        write_float(&mut s, x);
        s
    }

    #[test]
    fn floats_are_written_like_python_repr() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (1.5, "1.5"),
            (0.1, "0.1"),
            (-2.25, "-2.25"),
            (123.456, "123.456"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e100, "1e+100"),
            (0.0001, "0.0001"),
            (0.00012, "0.00012"),
            (1e-5, "1e-05"),
            (1.25e-7, "1.25e-07"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (1.0 / 3.0, "0.3333333333333333"),
            (9007199254740992.0, "9007199254740992.0"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            // Halfway between two shortest candidates: Python takes the even one.
            (-(714_680_204_616.0 + 21.0 / 32.0), "-714680204616.6562"),
            (0.5, "0.5"),
            (2.5, "2.5"),
        ];
        for &(x, want) in cases {
            assert_eq!(float(x), want, "{x:?}");
        }
    }

    #[test]
    fn strings_are_escaped_like_json_dumps() {
        let mut s = String::new();
        write_str(&mut s, "a\"b\\c\n\t\u{1}\u{7f}é☃");
        assert_eq!(s, "\"a\\\"b\\\\c\\n\\t\\u0001\u{7f}é☃\"");
    }
}
