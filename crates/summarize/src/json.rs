//! Reading the checkpoint's JSON files the way transformers reads them: a
//! null field counts as absent, and every error names the field.
//!
//! The value readers ([`count`], [`flag`], [`string`], [`token_id`],
//! [`token_ids`]) say what is wrong in a message that names the key.
//! [`Fields`] reads the fields of one file's object and turns those
//! messages into [`Error::Config`] for that file. Generation settings use
//! the value readers alone, because the same keys also arrive as
//! `generate()` keyword arguments, whose errors are [`Error::Generation`].

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};

/// Reads `dir/file` as a JSON object; `Ok(None)` when it does not exist.
pub(crate) fn read_object(dir: &Path, file: &'static str) -> Result<Option<Value>> {
    let path = dir.join(file);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::config(file, format!("not JSON: {e}")))?;
    Fields::new(file, &value)?;
    Ok(Some(value))
}

/// The object of one checkpoint file, read field by field.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields<'a> {
    file: &'static str,
    value: &'a Value,
}

impl<'a> Fields<'a> {
    /// The fields of `value`, which must be an object, from `file`.
    pub(crate) fn new(file: &'static str, value: &'a Value) -> Result<Self> {
        if !value.is_object() {
            return Err(Error::config(file, "not a JSON object"));
        }
        Ok(Self { file, value })
    }

    /// A field that is present and not null.
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.value.get(key).filter(|x| !x.is_null())
    }

    /// Whether `key` is there at all, null included.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.value.get(key).is_some()
    }

    /// A field read with `read`; `None` when absent or null.
    pub(crate) fn opt<T>(
        &self,
        key: &str,
        read: fn(&str, &'a Value) -> Result<T, String>,
    ) -> Result<Option<T>> {
        self.get(key)
            .map(|x| read(key, x))
            .transpose()
            .map_err(|reason| self.error(reason))
    }

    /// A field read with `read` that must be there.
    pub(crate) fn required<T>(
        &self,
        key: &str,
        read: fn(&str, &'a Value) -> Result<T, String>,
    ) -> Result<T> {
        self.opt(key, read)?
            .ok_or_else(|| self.error(format!("{key} is missing")))
    }

    /// A count of at least 1; `default` when absent.
    pub(crate) fn positive(&self, key: &str, default: Option<usize>) -> Result<usize> {
        let n = match self.opt(key, count)? {
            Some(n) => n,
            None => default.ok_or_else(|| self.error(format!("{key} is missing")))?,
        };
        if n == 0 {
            return Err(self.error(format!("{key} must be at least 1")));
        }
        Ok(n)
    }

    /// A configuration error in this file.
    pub(crate) fn error(&self, reason: impl Into<String>) -> Error {
        Error::config(self.file, reason)
    }
}

/// `read` on `value`, with null as `None` (transformers drops a setting
/// that is null).
pub(crate) fn opt<'v, T>(
    key: &str,
    value: &'v Value,
    read: fn(&str, &'v Value) -> Result<T, String>,
) -> Result<Option<T>, String> {
    match value {
        Value::Null => Ok(None),
        _ => read(key, value).map(Some),
    }
}

/// A non-negative integer.
pub(crate) fn count(key: &str, value: &Value) -> Result<usize, String> {
    value
        .as_u64()
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| format!("{key} must be a non-negative integer, not {value}"))
}

pub(crate) fn flag(key: &str, value: &Value) -> Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| format!("{key} must be true or false, not {value}"))
}

pub(crate) fn string<'v>(key: &str, value: &'v Value) -> Result<&'v str, String> {
    value
        .as_str()
        .ok_or_else(|| format!("{key} must be a string, not {value}"))
}

pub(crate) fn token_id(key: &str, value: &Value) -> Result<u32, String> {
    value
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| format!("{key} must be a non-negative token id, not {value}"))
}

/// One id or a list of them, as transformers takes `eos_token_id`.
pub(crate) fn token_ids(key: &str, value: &Value) -> Result<Vec<u32>, String> {
    match value {
        Value::Array(items) => items.iter().map(|v| token_id(key, v)).collect(),
        _ => Ok(vec![token_id(key, value)?]),
    }
}

/// Python's truth value of the JSON value, which transformers tests
/// flags with.
pub(crate) fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}
