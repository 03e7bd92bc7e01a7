//! A JSON parser for one input line: RFC 8259, plus `NaN`, `Infinity` and
//! `-Infinity` as Python's `json.loads` reads them. Integers of any size
//! stay exact (beyond `i64` they become [`Value::BigInt`]), objects become
//! dicts with string keys in document order, and an error names its
//! column (in characters).

use super::MAX_DEPTH;
use gilpool::Value;
use num_bigint::BigInt;

/// JSON's whitespace (what Python's `json.loads` skips).
pub(super) fn is_json_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Parses one JSON document (RFC 8259, plus `NaN`, `Infinity` and
/// `-Infinity` as Python's `json.loads` reads them) into a [`Value`]:
/// integers of any size stay exact, objects become dicts with string keys
/// in document order.
pub(super) fn parse_json(text: &str) -> Result<Value, String> {
    let mut p = Parser { text, pos: 0 };
    p.skip_space();
    let value = p.value(0)?;
    p.skip_space();
    if p.pos != text.len() {
        return Err(p.error("extra data after the value"));
    }
    Ok(value)
}

/// A recursive-descent JSON parser over one line.
struct Parser<'a> {
    /// The document.
    text: &'a str,
    /// Byte offset of the next unread byte.
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(is_json_space) {
            self.pos += 1;
        }
    }

    #[cold]
    fn error(&self, what: &str) -> String {
        // Count characters, not bytes (continuation bytes are 10xxxxxx).
        let column = self.text.as_bytes()[..self.pos.min(self.text.len())]
            .iter()
            .filter(|&&b| b & 0xc0 != 0x80)
            .count()
            + 1;
        format!("{what} at column {column}")
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(Value::Str),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::None),
            Some(b'N') => self.literal("NaN", Value::Float(f64::NAN)),
            Some(b'I') => self.literal("Infinity", Value::Float(f64::INFINITY)),
            None => Err(self.error("expected a value, found the end of the line")),
            Some(_) => Err(self.error("expected a value")),
        }
    }

    fn literal(&mut self, word: &str, value: Value) -> Result<Value, String> {
        if self.text[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error("expected a value"))
        }
    }

    fn nest(&self, depth: usize) -> Result<usize, String> {
        if depth >= MAX_DEPTH {
            return Err(self.error(&format!("nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(depth + 1)
    }

    fn array(&mut self, depth: usize) -> Result<Value, String> {
        let depth = self.nest(depth)?;
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_space();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::List(items));
        }
        loop {
            self.skip_space();
            items.push(self.value(depth)?);
            self.skip_space();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::List(items));
                }
                _ => return Err(self.error("expected ',' or ']'")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, String> {
        let depth = self.nest(depth)?;
        self.pos += 1;
        let mut pairs = Vec::new();
        self.skip_space();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Dict(pairs));
        }
        loop {
            self.skip_space();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a string key in double quotes"));
            }
            let key = self.string()?;
            self.skip_space();
            if self.peek() != Some(b':') {
                return Err(self.error("expected ':'"));
            }
            self.pos += 1;
            self.skip_space();
            let value = self.value(depth)?;
            pairs.push((Value::Str(key), value));
            self.skip_space();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Dict(pairs));
                }
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<Value, String> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
            if self.text[self.pos..].starts_with("Infinity") {
                self.pos += "Infinity".len();
                return Ok(Value::Float(f64::NEG_INFINITY));
            }
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.error("expected a digit")),
        }
        let mut float = false;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.error("expected a digit after '.'"));
            }
            float = true;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.error("expected a digit in the exponent"));
            }
            float = true;
        }
        let text = &self.text[start..self.pos];
        if float {
            return text
                .parse()
                .map(Value::Float)
                .map_err(|_| self.error("invalid number"));
        }
        match text.parse::<i64>() {
            Ok(i) => Ok(Value::Int(i)),
            Err(_) => text
                .parse::<BigInt>()
                .map(Value::int)
                .map_err(|_| self.error("invalid number")),
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let hex = self
            .text
            .get(self.pos..self.pos + 4)
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
        match hex {
            Some(h) => {
                self.pos += 4;
                Ok(u32::from_str_radix(h, 16).unwrap_or(0))
            }
            None => Err(self.error("expected 4 hex digits after \\u")),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.pos += 1;
        let bytes = self.text.as_bytes();
        let mut out = String::new();
        loop {
            let start = self.pos;
            while let Some(&b) = bytes.get(self.pos) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            // The scan stops only at ASCII bytes or the end: char boundaries.
            out.push_str(&self.text[start..self.pos]);
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let c = match self.peek() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.pos += 1;
                            let at = self.pos - 2;
                            let unit = self.hex4()?;
                            let code = if (0xd800..0xdc00).contains(&unit)
                                && self.text[self.pos..].starts_with("\\u")
                            {
                                self.pos += 2;
                                let low = self.hex4()?;
                                if !(0xdc00..0xe000).contains(&low) {
                                    self.pos = at;
                                    return Err(self
                                        .error("a lone surrogate \\u escape (not representable)"));
                                }
                                0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00)
                            } else {
                                unit
                            };
                            match char::from_u32(code) {
                                Some(c) => out.push(c),
                                None => {
                                    self.pos = at;
                                    return Err(self
                                        .error("a lone surrogate \\u escape (not representable)"));
                                }
                            }
                            continue;
                        }
                        _ => return Err(self.error("invalid escape")),
                    };
                    self.pos += 1;
                    out.push(c);
                }
                Some(_) => return Err(self.error("invalid control character in a string")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_numbers_keep_their_kind_and_digits() {
        assert_eq!(
            parse_json("[0, -0, 1.0, -1.5e3, 9223372036854775807]").unwrap(),
            {
                Value::List(vec![
                    Value::Int(0),
                    Value::Int(0),
                    Value::Float(1.0),
                    Value::Float(-1500.0),
                    Value::Int(i64::MAX),
                ])
            }
        );
        let big = "1267650600228229401496703205376";
        assert_eq!(
            parse_json(big).unwrap(),
            Value::BigInt(big.parse().unwrap())
        );
        assert_eq!(
            parse_json("-9223372036854775809").unwrap(),
            Value::BigInt("-9223372036854775809".parse().unwrap())
        );
        match &parse_json("[NaN, Infinity, -Infinity]").unwrap() {
            Value::List(v) => {
                assert!(matches!(v[0], Value::Float(x) if x.is_nan()));
                assert_eq!(v[1], Value::Float(f64::INFINITY));
                assert_eq!(v[2], Value::Float(f64::NEG_INFINITY));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn json_strings_and_objects() {
        let v = parse_json(
            r#" {"a": "x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00", "b": [true, false, null], "a": {}} "#,
        )
        .unwrap();
        assert_eq!(
            v,
            Value::Dict(vec![
                (
                    Value::Str("a".into()),
                    Value::Str("x\"\\/\u{8}\u{c}\n\r\té😀".into())
                ),
                (
                    Value::Str("b".into()),
                    Value::List(vec![Value::Bool(true), Value::Bool(false), Value::None])
                ),
                (Value::Str("a".into()), Value::Dict(vec![])),
            ])
        );
    }

    #[test]
    fn json_errors_name_the_column() {
        for (text, want) in [
            ("[1, 2", "expected ',' or ']' at column 6"),
            ("[1,]", "expected a value at column 4"),
            ("[01]", "expected ',' or ']' at column 3"),
            ("[1.]", "expected a digit after '.' at column 4"),
            (
                "{'a': 1}",
                "expected a string key in double quotes at column 2",
            ),
            ("[\"é\", x]", "expected a value at column 7"),
            ("[1] 2", "extra data after the value at column 5"),
            (
                "\"a\tb\"",
                "invalid control character in a string at column 3",
            ),
            (
                "\"\\ud800\"",
                "a lone surrogate \\u escape (not representable) at column 2",
            ),
            ("\"\\x\"", "invalid escape at column 3"),
            ("tru", "expected a value at column 1"),
            ("\"abc", "unterminated string at column 5"),
        ] {
            assert_eq!(parse_json(text).unwrap_err(), want, "{text}");
        }
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(parse_json(&deep).unwrap_err().contains("nested deeper"));
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse_json(&ok).is_ok());
    }
}
