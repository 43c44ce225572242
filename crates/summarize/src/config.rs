//! Reading `config.json` fields with errors that name the field.

use serde_json::Value;

use crate::error::{Error, Result};

const CONFIG: &str = "config.json";

/// A key that is present and not null (transformers treats null as unset).
pub(crate) fn field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

pub(crate) fn opt_usize(v: &Value, key: &str) -> Result<Option<usize>> {
    field(v, key)
        .map(|x| {
            x.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    Error::config(
                        CONFIG,
                        format!("{key} must be a non-negative integer, not {x}"),
                    )
                })
        })
        .transpose()
}

/// A count of at least 1; `default` when absent.
pub(crate) fn positive(v: &Value, key: &str, default: Option<usize>) -> Result<usize> {
    let n = opt_usize(v, key)?
        .or(default)
        .ok_or_else(|| Error::config(CONFIG, format!("{key} is missing")))?;
    if n == 0 {
        return Err(Error::config(CONFIG, format!("{key} must be at least 1")));
    }
    Ok(n)
}

pub(crate) fn opt_bool(v: &Value, key: &str) -> Result<Option<bool>> {
    field(v, key)
        .map(|x| {
            x.as_bool().ok_or_else(|| {
                Error::config(CONFIG, format!("{key} must be true or false, not {x}"))
            })
        })
        .transpose()
}
