//! JSON text exactly as Python's `json.dumps` writes it.
//!
//! confcom serializes with `json.dumps(x, separators=(",", ":"),
//! sort_keys=True)` (template_util.py `print_func`) and
//! `json.dumps(x, indent=2, sort_keys=True)` (`pretty_print_func`), both
//! with the default `ensure_ascii=True`. serde_json differs in escaping
//! (it keeps non-ASCII as UTF-8, writes `\u001f` in upper case only for some
//! characters) and in pretty-printing, and its map order depends on a
//! workspace-wide feature, so this module writes the bytes itself.

use std::fmt::Write;

use serde_json::Value;

/// How to lay out the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// `separators=(",", ":")`, one line.
    Compact,
    /// `indent=2`: newline and two spaces per level, `": "` after keys.
    Indent2,
}

/// `json.dumps(value, sort_keys=True, ...)` in the given style.
pub(crate) fn dumps(value: &Value, style: Style) -> String {
    let mut out = String::new();
    write_value(&mut out, value, style, 0, true);
    out
}

/// `json.dumps(value, separators=(",", ":"))` without sorting: object keys
/// in the order given. Used for the seccomp profile hash.
pub(crate) fn dumps_ordered(value: &Ordered) -> String {
    let mut out = String::new();
    write_ordered(&mut out, value);
    out
}

/// A JSON value whose object keys keep a chosen order.
#[derive(Debug, Clone)]
pub(crate) enum Ordered {
    /// Any value without objects inside, or whose objects may be sorted.
    Plain(Value),
    /// A list.
    List(Vec<Ordered>),
    /// An object with keys in this order.
    Object(Vec<(String, Ordered)>),
}

fn write_ordered(out: &mut String, value: &Ordered) {
    match value {
        Ordered::Plain(v) => write_value(out, v, Style::Compact, 0, false),
        Ordered::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_ordered(out, item);
            }
            out.push(']');
        }
        Ordered::Object(fields) => {
            out.push('{');
            for (i, (k, v)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(out, k);
                out.push(':');
                write_ordered(out, v);
            }
            out.push('}');
        }
    }
}

fn newline(out: &mut String, level: usize) {
    out.push('\n');
    for _ in 0..level {
        out.push_str("  ");
    }
}

fn write_value(out: &mut String, value: &Value, style: Style, level: usize, sort: bool) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            if items.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if style == Style::Indent2 {
                    newline(out, level + 1);
                }
                write_value(out, item, style, level + 1, sort);
            }
            if style == Style::Indent2 {
                newline(out, level);
            }
            out.push(']');
        }
        Value::Object(map) => {
            if map.is_empty() {
                out.push_str("{}");
                return;
            }
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            if sort {
                // Python compares str by code point; UTF-8 byte order is the same.
                entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            }
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if style == Style::Indent2 {
                    newline(out, level + 1);
                }
                write_str(out, k);
                out.push_str(if style == Style::Indent2 { ": " } else { ":" });
                write_value(out, v, style, level + 1, sort);
            }
            if style == Style::Indent2 {
                newline(out, level);
            }
            out.push('}');
        }
    }
}

fn write_number(out: &mut String, n: &serde_json::Number) {
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(f) = n.as_f64() {
        out.push_str(&float_repr(f));
    }
}

/// Python's `repr(float)`: shortest round-trip digits, fixed notation for
/// decimal exponents in [-4, 16), scientific (`1e+16`, `1.5e-05`) otherwise.
pub(crate) fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let sci = format!("{f:e}"); // e.g. "-1.5e-5", "1e16"
    let (mantissa, exp) = match sci.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (sci.as_str(), 0),
    };
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            out.push_str(&digits);
        } else {
            let point = exp as usize + 1;
            if digits.len() <= point {
                out.push_str(&digits);
                for _ in digits.len()..point {
                    out.push('0');
                }
                out.push_str(".0");
            } else {
                out.push_str(&digits[..point]);
                out.push('.');
                out.push_str(&digits[point..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    out
}

/// A string literal with `ensure_ascii=True` escaping.
pub(crate) fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// Python's `str(value)` for a JSON value, as confcom's f-strings print
/// parameter values (`True`, `None`, `['a', 'b']`).
pub(crate) fn python_str(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => python_repr(other),
    }
}

fn python_repr(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => {
            let mut s = String::new();
            write_number(&mut s, n);
            s
        }
        Value::String(s) => {
            let quote = if s.contains('\'') && !s.contains('"') {
                '"'
            } else {
                '\''
            };
            let mut out = String::new();
            out.push(quote);
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c == quote => {
                        out.push('\\');
                        out.push(c);
                    }
                    c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                        let _ = write!(out, "\\x{:02x}", c as u32);
                    }
                    c => out.push(c),
                }
            }
            out.push(quote);
            out
        }
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(python_repr).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}: {}",
                        python_repr(&Value::String(k.clone())),
                        python_repr(v)
                    )
                })
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

/// Python truthiness of a JSON value.
pub(crate) fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escapes_like_python_ensure_ascii() {
        // json.dumps("say \"hi\" \\ \t 日本 é \x7f 😀")
        let v = json!("say \"hi\" \\ \t 日本 é \u{7f} 😀");
        assert_eq!(
            dumps(&v, Style::Compact),
            r#""say \"hi\" \\ \t \u65e5\u672c \u00e9 \u007f \ud83d\ude00""#
        );
    }

    #[test]
    fn indent_two_like_python() {
        // json.dumps({"b": [1, []], "a": {}}, indent=2, sort_keys=True)
        let v = json!({"b": [1, []], "a": {}});
        assert_eq!(
            dumps(&v, Style::Indent2),
            "{\n  \"a\": {},\n  \"b\": [\n    1,\n    []\n  ]\n}"
        );
    }

    #[test]
    fn floats_like_python_repr() {
        for (f, want) in [
            (1.5, "1.5"),
            (1.0, "1.0"),
            (1e16, "1e+16"),
            (1.5e-5, "1.5e-05"),
            (0.0001, "0.0001"),
            (123456.789, "123456.789"),
            (-2.5e20, "-2.5e+20"),
        ] {
            assert_eq!(float_repr(f), want, "{f}");
        }
    }

    #[test]
    fn python_str_of_values() {
        assert_eq!(python_str(&json!(true)), "True");
        assert_eq!(python_str(&json!(null)), "None");
        assert_eq!(python_str(&json!(["a", 1])), "['a', 1]");
        assert_eq!(python_str(&json!("x")), "x");
    }
}
