//! Finding the policy in what a user has at hand: the Rego text itself, or
//! an ARM template that carries it base64-encoded in
//! `properties.confidentialComputeProperties.ccePolicy`.

use base64::Engine as _;
use serde_json::Value;

/// Why a document holds no usable policy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DocumentError {
    /// The document is not UTF-8 text.
    #[error("the policy is not UTF-8 text")]
    NotUtf8,
    /// It looks like JSON (an ARM template) but does not parse.
    #[error("the document starts like JSON but is not valid JSON")]
    Json(#[source] serde_json::Error),
    /// The template has no `ccePolicy`.
    #[error("the template has no properties.confidentialComputeProperties.ccePolicy")]
    NoPolicy,
    /// The template has more than one container group with a policy.
    #[error("the template has {0} ccePolicy values; pass the policy itself")]
    SeveralPolicies(usize),
    /// `ccePolicy` is not a string (e.g. an ARM expression object).
    #[error("ccePolicy is not a string")]
    NotAString,
    /// `ccePolicy` is not base64 (an unevaluated ARM expression, say).
    #[error("ccePolicy is not base64")]
    Base64(#[source] base64::DecodeError),
}

/// The policy's Rego text from `document`: Rego as it is, or the
/// base64-decoded `ccePolicy` of an ARM template (JSON).
pub fn decode_policy(document: &[u8]) -> Result<String, DocumentError> {
    let text = std::str::from_utf8(document).map_err(|_| DocumentError::NotUtf8)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if !text.trim_start().starts_with('{') {
        return Ok(text.to_owned());
    }
    let template: Value = serde_json::from_str(text).map_err(DocumentError::Json)?;
    let mut found = Vec::new();
    find_policies(&template, &mut found);
    let encoded = match found.as_slice() {
        [] => return Err(DocumentError::NoPolicy),
        [one] => one,
        many => return Err(DocumentError::SeveralPolicies(many.len())),
    };
    let Value::String(encoded) = encoded else {
        return Err(DocumentError::NotAString);
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(DocumentError::Base64)?;
    String::from_utf8(bytes).map_err(|_| DocumentError::NotUtf8)
}

/// Every `confidentialComputeProperties.ccePolicy`, at any depth (nested
/// deployments included).
fn find_policies<'a>(value: &'a Value, found: &mut Vec<&'a Value>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if key == "confidentialComputeProperties" {
                    if let Some(policy) = child.get("ccePolicy") {
                        found.push(policy);
                    }
                }
                find_policies(child, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| find_policies(v, found)),
        _ => {}
    }
}
