//! Start-up sequences: the requests a guest makes, in order, as JSON.

use serde::Deserialize;

use super::request::{Request, Rule};
use crate::Error;

/// A list of requests, as `confsum policy-check --input` reads it.
///
/// JSON: a list of steps `{"rule": "<rule>", "input": {...}}`; `input` uses
/// hcsshim's field names (see [`Request::from_input`]) and may be left out
/// for rules without one. A step may carry a `"note"` for the reader.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    /// The requests, in order.
    pub steps: Vec<Request>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    rule: String,
    #[serde(default)]
    input: serde_json::Value,
    #[serde(default, rename = "note")]
    _note: Option<String>,
}

impl Sequence {
    /// Parses a sequence from JSON.
    pub fn from_json(json: &[u8]) -> Result<Sequence, Error> {
        let raw: Vec<RawStep> =
            serde_json::from_slice(json).map_err(|source| Error::Steps { source })?;
        let steps = raw
            .into_iter()
            .enumerate()
            .map(|(i, step)| {
                let index = i + 1;
                let rule = Rule::from_name(&step.rule).ok_or_else(|| Error::Step {
                    index,
                    source: super::request::RequestError::UnknownRule(step.rule.clone()),
                })?;
                Request::from_input(rule, step.input)
                    .map_err(|source| Error::Step { index, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Sequence { steps })
    }
}
