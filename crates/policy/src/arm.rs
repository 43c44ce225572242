//! ARM templates: parameters, variables, expressions, and writing the
//! policy back.
//!
//! confcom does not evaluate ARM expressions. It substitutes
//! `[parameters('x')]` and `[variables('x')]` with a regular expression
//! (template_util.py `find_value_in_params_and_vars` and
//! `replace_params_and_vars`), leaves every other expression as literal
//! text, and turns a parameter without a value into an `.*` rule
//! (`process_env_vars_from_template`). [`ArmEval::Confcom`] does exactly
//! that, so host_data matches confcom. [`ArmEval::Full`] evaluates
//! `parameters`, `variables`, `concat` and `format` (nested), which is what
//! Azure deploys, and names any other function in an error.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

use crate::error::{Document, Error, TemplateError};
use crate::pyjson;

/// How ARM expressions in the template are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ArmEval {
    /// Substitute `[parameters('x')]`/`[variables('x')]` as az confcom 1.4.3
    /// does and leave other expressions as text: identical host_data.
    #[default]
    Confcom,
    /// Evaluate `parameters`, `variables`, `concat` and `format`, nested;
    /// any other function is an error.
    Full,
}

// template_util.py PARAMETER_AND_VARIABLE_REGEX and WHOLE_PARAMETER_AND_VARIABLE.
static PARAM_RE: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"\[(?:parameters|variables)\(\s*'([^\./]+?)'\s*\)\]").ok());
static WHOLE_RE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"(\s*\[\s*(parameters|variables))(\(\s*'([^\./]+?)'\s*\)\])").ok()
});

/// Case-insensitive object lookup, as confcom's `case_insensitive_dict_get`:
/// an exact key with a truthy value wins, else the first key equal
/// ignoring case.
pub(crate) fn get<'a>(obj: &'a Value, key: &str) -> Option<&'a Value> {
    let map = obj.as_object()?;
    if let Some(v) = map.get(key) {
        if pyjson::truthy(v) {
            return Some(v);
        }
    }
    map.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

/// Like [`get`], but `null` counts as absent.
pub(crate) fn get_some<'a>(obj: &'a Value, key: &str) -> Option<&'a Value> {
    get(obj, key).filter(|v| !v.is_null())
}

/// Parameters and variables of a template, with values from a parameters file.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    params: Value,
    vars: Value,
}

impl Scope {
    pub(crate) fn new(template: &Value, parameters_file: Option<&Value>) -> Result<Scope, Error> {
        let mut params = get(template, "parameters")
            .filter(|v| pyjson::truthy(v))
            .cloned()
            .unwrap_or_else(|| Value::Object(Map::new()));
        let vars = get(template, "variables")
            .filter(|v| pyjson::truthy(v))
            .cloned()
            .unwrap_or_else(|| Value::Object(Map::new()));
        // template_util.py get_values_for_params
        if let Some(file) = parameters_file {
            let values = get(file, "parameters")
                .filter(|v| pyjson::truthy(v))
                .ok_or_else(|| TemplateError::Missing {
                    path: "parameters (in the parameters file)".into(),
                })?;
            let values = values.as_object().ok_or(TemplateError::WrongType {
                path: "parameters (in the parameters file)".into(),
                expected: "an object",
            })?;
            for (key, entry) in values {
                let declared = get(&params, key).is_some_and(pyjson::truthy);
                if !declared {
                    return Err(TemplateError::UndeclaredParameter { name: key.clone() }.into());
                }
                let value = get(entry, "value")
                    .filter(|v| pyjson::truthy(v))
                    .or_else(|| get(entry, "secureValue"))
                    .cloned()
                    .unwrap_or(Value::Null);
                let actual_key = params
                    .as_object()
                    .and_then(|m| {
                        if m.contains_key(key) {
                            Some(key.clone())
                        } else {
                            m.keys().find(|k| k.eq_ignore_ascii_case(key)).cloned()
                        }
                    })
                    .unwrap_or_else(|| key.clone());
                if let Some(Value::Object(p)) =
                    params.as_object_mut().and_then(|m| m.get_mut(&actual_key))
                {
                    p.insert("value".into(), value);
                }
            }
        }
        Ok(Scope { params, vars })
    }

    /// template_util.py `find_value_in_params_and_vars` with
    /// `ignore_undefined_parameters=True`: the value of the first
    /// `[parameters('x')]`/`[variables('x')]` in `search`, `None` when it
    /// has no value, or `search` itself when there is no reference.
    fn confcom_find(&self, search: &str) -> Result<Found, Error> {
        let Some(re) = PARAM_RE.as_ref() else {
            return Ok(Found::NoReference);
        };
        let Some(name) = re
            .captures(search)
            .and_then(|c| c.get(1))
            .map(|m| m.as_str().to_owned())
        else {
            return Ok(Found::NoReference);
        };
        // confcom decides by a substring test on the whole value.
        if search.contains("parameters") {
            let param = get(&self.params, &name)
                .ok_or_else(|| TemplateError::UnknownParameter { name: name.clone() })?;
            let has_value = param.as_object().is_some_and(|m| m.contains_key("value"));
            let value = if has_value {
                get(param, "value")
            } else {
                get(param, "defaultValue")
            };
            Ok(match value {
                Some(v) if !v.is_null() => Found::Value(v.clone()),
                _ => Found::Undefined,
            })
        } else {
            Ok(match get(&self.vars, &name) {
                Some(v) if !v.is_null() => Found::Value(v.clone()),
                _ => Found::Undefined,
            })
        }
    }

    /// template_util.py `replace_params_and_vars` on one string.
    pub(crate) fn confcom_replace(&self, attribute: &str) -> Result<String, Error> {
        let out = match self.confcom_find(attribute)? {
            Found::Value(v) => pyjson::python_str(&v),
            Found::Undefined | Found::NoReference => attribute.to_owned(),
        };
        let whole = WHOLE_RE
            .as_ref()
            .and_then(|re| re.find(attribute))
            .map(|m| m.as_str().to_owned());
        Ok(match whole {
            Some(full) => attribute.replace(&full, &out),
            None => out,
        })
    }

    /// Whether an environment value is a reference without a value, which
    /// confcom turns into a wildcard rule.
    pub(crate) fn confcom_is_unset_reference(&self, value: &str) -> Result<bool, Error> {
        Ok(matches!(self.confcom_find(value)?, Found::Undefined))
    }

    /// Evaluates one string in the chosen mode. `Ok(None)` means the string
    /// depends on a parameter that has no value.
    pub(crate) fn eval(&self, mode: ArmEval, s: &str) -> Result<Option<String>, Error> {
        match mode {
            ArmEval::Confcom => self.confcom_replace(s).map(Some),
            ArmEval::Full => self.full_eval(s),
        }
    }

    fn full_eval(&self, s: &str) -> Result<Option<String>, Error> {
        if let Some(rest) = s.strip_prefix("[[") {
            return Ok(Some(format!("[{rest}")));
        }
        if !(s.starts_with('[') && s.ends_with(']')) || s.len() < 2 {
            return Ok(Some(s.to_owned()));
        }
        let inner = &s[1..s.len() - 1];
        let mut parser = ExprParser {
            src: inner,
            pos: 0,
            whole: s,
        };
        let expr = parser.expr()?;
        parser.skip_ws();
        if parser.pos != inner.len() {
            return Err(bad(s, "unexpected text after the expression"));
        }
        match self.apply(&expr, s)? {
            Some(v) => Ok(Some(pyjson::python_str(&v))),
            None => Ok(None),
        }
    }

    fn apply(&self, expr: &Expr, whole: &str) -> Result<Option<Value>, Error> {
        match expr {
            Expr::Str(s) => Ok(Some(Value::String(s.clone()))),
            Expr::Num(n) => Ok(Some(Value::from(*n))),
            Expr::Bool(b) => Ok(Some(Value::Bool(*b))),
            Expr::Call(name, args) => {
                let mut values = Vec::with_capacity(args.len());
                for a in args {
                    match self.apply(a, whole)? {
                        Some(v) => values.push(v),
                        None => return Ok(None),
                    }
                }
                match name.to_ascii_lowercase().as_str() {
                    "parameters" => {
                        let key = one_string(&values, whole)?;
                        let param = get(&self.params, &key)
                            .ok_or(TemplateError::UnknownParameter { name: key.clone() })?;
                        let v =
                            get_some(param, "value").or_else(|| get_some(param, "defaultValue"));
                        Ok(v.cloned())
                    }
                    "variables" => {
                        let key = one_string(&values, whole)?;
                        let v = get(&self.vars, &key)
                            .ok_or(TemplateError::UnknownVariable { name: key.clone() })?;
                        // A variable may itself be an expression.
                        match v {
                            Value::String(s) => Ok(self.full_eval(s)?.map(Value::String)),
                            other => Ok(Some(other.clone())),
                        }
                    }
                    "concat" => {
                        if values.iter().all(Value::is_array) {
                            let mut out = Vec::new();
                            for v in values {
                                if let Value::Array(a) = v {
                                    out.extend(a);
                                }
                            }
                            return Ok(Some(Value::Array(out)));
                        }
                        let mut out = String::new();
                        for v in &values {
                            out.push_str(&arm_string(v));
                        }
                        Ok(Some(Value::String(out)))
                    }
                    "format" => {
                        let Some((fmt, rest)) = values.split_first() else {
                            return Err(bad(whole, "format() needs a format string"));
                        };
                        let fmt = fmt
                            .as_str()
                            .ok_or_else(|| bad(whole, "format() needs a format string"))?;
                        Ok(Some(Value::String(format_net(fmt, rest, whole)?)))
                    }
                    other => Err(TemplateError::UnsupportedFunction {
                        function: other.to_owned(),
                        expression: whole.to_owned(),
                    }
                    .into()),
                }
            }
        }
    }
}

enum Found {
    NoReference,
    Undefined,
    Value(Value),
}

fn bad(expression: &str, reason: &'static str) -> Error {
    TemplateError::BadExpression {
        expression: expression.to_owned(),
        reason,
    }
    .into()
}

fn one_string(values: &[Value], whole: &str) -> Result<String, Error> {
    match values {
        [Value::String(s)] => Ok(s.clone()),
        _ => Err(bad(whole, "expects one string argument")),
    }
}

/// How ARM prints a value inside `concat`/`format`.
fn arm_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        other => other.to_string(),
    }
}

/// .NET composite formatting (`{0}`, `{{`, `}}`), which ARM's `format` uses.
fn format_net(fmt: &str, args: &[Value], whole: &str) -> Result<String, Error> {
    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let mut index = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(d) => index.push(d),
                        None => return Err(bad(whole, "unterminated {} in format()")),
                    }
                }
                let i: usize = index
                    .trim()
                    .parse()
                    .map_err(|_| bad(whole, "format() placeholder is not a number"))?;
                let arg = args
                    .get(i)
                    .ok_or_else(|| bad(whole, "format() placeholder has no argument"))?;
                out.push_str(&arm_string(arg));
            }
            '}' => return Err(bad(whole, "lone } in format()")),
            c => out.push(c),
        }
    }
    Ok(out)
}

#[derive(Debug)]
enum Expr {
    Str(String),
    Num(i64),
    Bool(bool),
    Call(String, Vec<Expr>),
}

struct ExprParser<'a> {
    src: &'a str,
    pos: usize,
    whole: &'a str,
}

impl ExprParser<'_> {
    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<char> {
        self.src.get(self.pos..).and_then(|s| s.chars().next())
    }

    fn expr(&mut self) -> Result<Expr, Error> {
        self.skip_ws();
        match self.peek() {
            Some('\'') => {
                self.pos += 1;
                let mut s = String::new();
                loop {
                    let c = self
                        .peek()
                        .ok_or_else(|| bad(self.whole, "unterminated string"))?;
                    self.pos += c.len_utf8();
                    if c == '\'' {
                        if self.peek() == Some('\'') {
                            self.pos += 1;
                            s.push('\'');
                        } else {
                            return Ok(Expr::Str(s));
                        }
                    } else {
                        s.push(c);
                    }
                }
            }
            Some(c) if c.is_ascii_digit() || c == '-' => {
                let start = self.pos;
                self.pos += 1;
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.pos += 1;
                }
                let n = self.src[start..self.pos]
                    .parse()
                    .map_err(|_| bad(self.whole, "bad number"))?;
                Ok(Expr::Num(n))
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                {
                    self.pos += 1;
                }
                let name = self.src[start..self.pos].to_owned();
                self.skip_ws();
                if self.peek() != Some('(') {
                    return match name.as_str() {
                        "true" => Ok(Expr::Bool(true)),
                        "false" => Ok(Expr::Bool(false)),
                        _ => Err(bad(self.whole, "expected ( after a function name")),
                    };
                }
                self.pos += 1;
                let mut args = Vec::new();
                self.skip_ws();
                if self.peek() == Some(')') {
                    self.pos += 1;
                } else {
                    loop {
                        args.push(self.expr()?);
                        self.skip_ws();
                        match self.peek() {
                            Some(',') => self.pos += 1,
                            Some(')') => {
                                self.pos += 1;
                                break;
                            }
                            _ => return Err(bad(self.whole, "expected , or )")),
                        }
                    }
                }
                // Property access and indexing (`.x`, `[0]`) are not evaluated.
                self.skip_ws();
                if matches!(self.peek(), Some('.') | Some('[')) {
                    return Err(TemplateError::UnsupportedFunction {
                        function: format!("{name}(...) property access"),
                        expression: self.whole.to_owned(),
                    }
                    .into());
                }
                Ok(Expr::Call(name, args))
            }
            _ => Err(bad(
                self.whole,
                "expected a string, number or function call",
            )),
        }
    }
}

/// Parses template JSON text.
pub(crate) fn parse_json(text: &str, what: Document) -> Result<Value, Error> {
    serde_json::from_str(text).map_err(|source| Error::Json { what, source })
}

/// Replaces the string value at `path` (keys matched ignoring case) in JSON
/// `text`, keeping every other byte. Returns `None` when the path is absent.
pub(crate) fn replace_string_at(
    text: &str,
    path: &[PathSeg<'_>],
    new_value: &str,
) -> Result<Option<String>, SpanError> {
    let bytes = text.as_bytes();
    let mut s = Scanner { b: bytes, pos: 0 };
    s.ws();
    let Some((start, end)) = s.locate(path)? else {
        return Ok(None);
    };
    if bytes.get(start) != Some(&b'"') {
        return Err(SpanError::NotString);
    }
    let mut out = String::with_capacity(text.len() + new_value.len());
    out.push_str(&text[..start]);
    pyjson::write_str(&mut out, new_value);
    out.push_str(&text[end..]);
    Ok(Some(out))
}

/// One step of a JSON path.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PathSeg<'a> {
    Key(&'a str),
    Index(usize),
}

/// Why a value could not be replaced in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpanError {
    Syntax,
    NotString,
}

struct Scanner<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Scanner<'_> {
    fn ws(&mut self) {
        while matches!(self.b.get(self.pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn locate(&mut self, path: &[PathSeg<'_>]) -> Result<Option<(usize, usize)>, SpanError> {
        let Some((first, rest)) = path.split_first() else {
            let start = self.pos;
            self.skip_value()?;
            return Ok(Some((start, self.pos)));
        };
        match (first, self.b.get(self.pos)) {
            (PathSeg::Key(key), Some(b'{')) => {
                self.pos += 1;
                let mut found = None;
                let mut exact = None;
                loop {
                    self.ws();
                    if self.b.get(self.pos) == Some(&b'}') {
                        self.pos += 1;
                        break;
                    }
                    let k = self.string()?;
                    self.ws();
                    if self.b.get(self.pos) != Some(&b':') {
                        return Err(SpanError::Syntax);
                    }
                    self.pos += 1;
                    self.ws();
                    if k == *key {
                        exact = self.locate(rest)?;
                    } else if found.is_none() && k.eq_ignore_ascii_case(key) {
                        found = self.locate(rest)?;
                    } else {
                        self.skip_value()?;
                    }
                    self.ws();
                    match self.b.get(self.pos) {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {
                            self.pos += 1;
                            break;
                        }
                        _ => return Err(SpanError::Syntax),
                    }
                }
                Ok(exact.or(found))
            }
            (PathSeg::Index(want), Some(b'[')) => {
                self.pos += 1;
                let mut found = None;
                let mut i = 0;
                loop {
                    self.ws();
                    if self.b.get(self.pos) == Some(&b']') {
                        self.pos += 1;
                        break;
                    }
                    if i == *want {
                        found = self.locate(rest)?;
                    } else {
                        self.skip_value()?;
                    }
                    i += 1;
                    self.ws();
                    match self.b.get(self.pos) {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            break;
                        }
                        _ => return Err(SpanError::Syntax),
                    }
                }
                Ok(found)
            }
            _ => {
                self.skip_value()?;
                Ok(None)
            }
        }
    }

    fn string(&mut self) -> Result<String, SpanError> {
        let start = self.pos;
        self.skip_string()?;
        let raw = std::str::from_utf8(&self.b[start..self.pos]).map_err(|_| SpanError::Syntax)?;
        serde_json::from_str(raw).map_err(|_| SpanError::Syntax)
    }

    fn skip_string(&mut self) -> Result<(), SpanError> {
        if self.b.get(self.pos) != Some(&b'"') {
            return Err(SpanError::Syntax);
        }
        self.pos += 1;
        loop {
            match self.b.get(self.pos) {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => self.pos += 2,
                Some(_) => self.pos += 1,
                None => return Err(SpanError::Syntax),
            }
        }
    }

    fn skip_value(&mut self) -> Result<(), SpanError> {
        self.ws();
        match self.b.get(self.pos) {
            Some(b'"') => self.skip_string(),
            Some(open @ (b'{' | b'[')) => {
                let close = if *open == b'{' { b'}' } else { b']' };
                self.pos += 1;
                loop {
                    self.ws();
                    if self.b.get(self.pos) == Some(&close) {
                        self.pos += 1;
                        return Ok(());
                    }
                    if close == b'}' {
                        self.skip_string()?;
                        self.ws();
                        if self.b.get(self.pos) != Some(&b':') {
                            return Err(SpanError::Syntax);
                        }
                        self.pos += 1;
                    }
                    self.skip_value()?;
                    self.ws();
                    match self.b.get(self.pos) {
                        Some(b',') => self.pos += 1,
                        Some(c) if *c == close => {
                            self.pos += 1;
                            return Ok(());
                        }
                        _ => return Err(SpanError::Syntax),
                    }
                }
            }
            Some(_) => {
                let start = self.pos;
                while let Some(c) = self.b.get(self.pos) {
                    if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.pos += 1;
                }
                if self.pos == start {
                    Err(SpanError::Syntax)
                } else {
                    Ok(())
                }
            }
            None => Err(SpanError::Syntax),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> Scope {
        let t = json!({
            "parameters": {
                "p": {"type": "string", "defaultValue": "P"},
                "n": {"type": "int", "defaultValue": 5},
                "b": {"type": "bool", "defaultValue": true},
                "unset": {"type": "securestring"}
            },
            "variables": {"v": "V", "nested": "[concat('x-', parameters('p'))]"}
        });
        Scope::new(&t, None).unwrap()
    }

    #[test]
    fn confcom_substitution_table() {
        let s = scope();
        for (input, want) in [
            ("[parameters('p')]", "P"),
            ("[variables('v')]", "V"),
            ("[parameters('n')]", "5"),
            ("[parameters('b')]", "True"),
            ("/mnt/[variables('v')]/x", "/mnt/V/x"),
            // confcom's WHOLE regex swallows the blank before '['.
            ("a [variables('v')]", "aV"),
            // Not a bare reference: confcom leaves it as text.
            (
                "[concat('a', parameters('p'))]",
                "[concat('a', parameters('p'))]",
            ),
            ("[parameters('unset')]", "[parameters('unset')]"),
            ("plain", "plain"),
        ] {
            assert_eq!(s.confcom_replace(input).unwrap(), want, "{input}");
        }
        assert!(
            s.confcom_is_unset_reference("[parameters('unset')]")
                .unwrap()
        );
        assert!(!s.confcom_is_unset_reference("[parameters('p')]").unwrap());
        assert!(matches!(
            s.confcom_replace("[parameters('nope')]"),
            Err(Error::Template(TemplateError::UnknownParameter { .. }))
        ));
    }

    #[test]
    fn full_evaluation_table() {
        let s = scope();
        for (input, want) in [
            ("[parameters('p')]", Some("P")),
            (
                "[concat('a', parameters('p'), '-', variables('v'))]",
                Some("aP-V"),
            ),
            (
                "[format('{0}/{1}', parameters('p'), concat('x', 'y'))]",
                Some("P/xy"),
            ),
            (
                "[format('{{literal}} {0}', parameters('n'))]",
                Some("{literal} 5"),
            ),
            ("[variables('nested')]", Some("x-P")),
            ("[CONCAT('it''s', ' ok')]", Some("it's ok")),
            ("[[not an expression]", Some("[not an expression]")),
            ("[parameters('unset')]", None),
            ("[concat('a', parameters('unset'))]", None),
        ] {
            assert_eq!(
                s.eval(ArmEval::Full, input).unwrap().as_deref(),
                want,
                "{input}"
            );
        }
        match s.eval(ArmEval::Full, "[resourceGroup().location]") {
            Err(Error::Template(TemplateError::UnsupportedFunction { function, .. })) => {
                assert!(function.starts_with("resourceGroup"))
            }
            other => panic!("{other:?}"),
        }
        for bad in ["[concat('a']", "[format('{0}')]", "[concat('a') x]"] {
            assert!(s.eval(ArmEval::Full, bad).is_err(), "{bad}");
        }
        assert!(matches!(
            s.eval(ArmEval::Full, "[toUpper('a')]"),
            Err(Error::Template(TemplateError::UnsupportedFunction { .. }))
        ));
    }

    #[test]
    fn replaces_only_the_value() {
        let text = "{\n  \"resources\" : [ {\"x\":1}, {\"Properties\": {\"confidentialComputeProperties\": {\"ccePolicy\": \"old\\\"\", \"y\": 2}}} ]\n}\n";
        let path = [
            PathSeg::Key("resources"),
            PathSeg::Index(1),
            PathSeg::Key("properties"),
            PathSeg::Key("confidentialComputeProperties"),
            PathSeg::Key("ccePolicy"),
        ];
        let out = replace_string_at(text, &path, "NEW=").unwrap().unwrap();
        assert_eq!(out, text.replace("\"old\\\"\"", "\"NEW=\""));
        let missing = [PathSeg::Key("nope")];
        assert_eq!(replace_string_at(text, &missing, "x").unwrap(), None);
        assert_eq!(
            replace_string_at("{\"a\": ", &[PathSeg::Key("a")], "x"),
            Err(SpanError::Syntax)
        );
    }
}
