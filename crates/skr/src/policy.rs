//! Release policies in Managed HSM's grammar, and their evaluation.
//!
//! A policy is `{"version": "1.0.0", "anyOf": [branch, …]}`; each branch
//! names one `authority` (the attestation service whose tokens it accepts)
//! and one `anyOf` or `allOf` list of conditions; conditions are claim
//! conditions (`{"claim": name, <operator>: value}`) or nested
//! `anyOf`/`allOf` lists. Version `0.2` (the confidential-VM policies) has
//! the same shape and is read and written back as `0.2`.
//!
//! # How values are compared
//!
//! Microsoft documents the grammar but not its comparison rules, so these
//! are our choices, each made so that the policies Azure's own tools write
//! behave as they do on Managed HSM, and otherwise erring towards refusal:
//!
//! - **Claim paths**: a claim name is a dot-separated path into nested
//!   objects (`x-ms-runtime.keys`, `x-ms-isolation-tee.x-ms-attestation-type`).
//!   Arrays are not indexed: a path through an array finds nothing. A
//!   missing claim (or a JSON `null`) fails every condition except
//!   `exists: false`.
//! - **Strings** compare exactly: ordinal, case-sensitive, no trimming or
//!   Unicode normalization. (`skr policy` writes host_data in lowercase hex,
//!   as MAA issues it.)
//! - **Booleans**: a boolean claim equals `true`/`false`, and also the
//!   strings `"true"`/`"false"` in any case. The recipe's
//!   `"x-ms-sevsnpvm-is-debuggable": "false"` against MAA's boolean `false`
//!   is released by Managed HSM, so string forms must match. Any other
//!   string against a boolean is a type mismatch.
//! - **Numbers**: a number claim equals a number, and a string that is a
//!   JSON number (`"0"` against MAA's `x-ms-sevsnpvm-vmpl: 0`, as the recipe
//!   writes it). Integers compare exactly; anything with a fraction or
//!   exponent compares as f64. `" 0"`, `"+0"`, `"0x0"` are not numbers.
//! - **String claims** against a number or boolean in the policy are read
//!   the same way in reverse: `"1"` equals `1`, `"TRUE"` equals `true`.
//! - **Ordering** (`less`, `lessOrEquals`, `greater`, `greaterOrEquals`):
//!   numerically when both sides are numbers or numeric strings, ordinally
//!   (byte-wise) when both are other strings, otherwise a type mismatch.
//!   The claim is the left operand: `{"claim": "svn", "greaterOrEquals": 3}`
//!   holds when svn ≥ 3.
//! - **Type mismatches** (an object, an array, a boolean against a
//!   number, …) fail the condition for every operator, `notEquals`
//!   included: "cannot compare" is never read as "different".
//! - **`exists`** takes `true` or `false` (or those strings): whether the
//!   claim is present and not `null`.
//! - **Authorities** match the token's `iss` after normalizing both: the
//!   scheme and host are compared case-insensitively, the default port
//!   (443 for https, 80 for http) is dropped, and one trailing `/` is
//!   ignored (MAA issues `https://x.attest.azure.net`, the confidential-VM
//!   policies write `https://x.attest.azure.net/`). An authority without a
//!   scheme is read as `https://`, as Azure's import tool writes it. Paths
//!   are otherwise compared exactly, and `http` never matches `https`.
//! - **Member names** are matched case-insensitively when reading, since
//!   Microsoft's own documentation spells them both `anyOf` and `anyof`;
//!   they are written in camelCase. Unknown members are refused, so a typo
//!   (`"equal"`) is an error rather than a condition that is silently
//!   dropped.

use std::cmp::Ordering;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Number, Value};

use crate::error::{Error, PolicyProblem};

/// Deepest nesting of `anyOf`/`allOf` accepted (the top-level branch list
/// counts as one level).
pub const MAX_POLICY_DEPTH: usize = 16;

/// The policy content type Key Vault stores with a release policy.
pub const POLICY_CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// A release policy: the key is released to a token that satisfies any of
/// the branches.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleasePolicy {
    /// The grammar version.
    pub version: PolicyVersion,
    /// The branches (`anyOf` at the top level); at least one.
    pub any_of: Vec<Branch>,
}

/// The grammar version of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyVersion {
    /// `"1.0.0"`, what Azure's import tool writes.
    V1_0_0,
    /// `"0.2"`, the confidential-VM policies.
    V0_2,
}

impl PolicyVersion {
    fn as_str(self) -> &'static str {
        match self {
            PolicyVersion::V1_0_0 => "1.0.0",
            PolicyVersion::V0_2 => "0.2",
        }
    }
}

/// One top-level branch: an authority and its conditions.
#[derive(Debug, Clone, PartialEq)]
pub struct Branch {
    /// The attestation service whose tokens this branch accepts.
    pub authority: String,
    /// Whether all or any of `conditions` must hold.
    pub combinator: Combinator,
    /// The conditions; at least one.
    pub conditions: Vec<Condition>,
}

/// `anyOf` or `allOf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combinator {
    /// At least one condition holds.
    AnyOf,
    /// Every condition holds.
    AllOf,
}

impl Combinator {
    fn as_str(self) -> &'static str {
        match self {
            Combinator::AnyOf => "anyOf",
            Combinator::AllOf => "allOf",
        }
    }
}

/// A condition: a claim condition, or a nested group.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// `{"claim": …, <operator>: value}`.
    Claim(ClaimCondition),
    /// A nested `anyOf`/`allOf` list (never empty).
    Group(Combinator, Vec<Condition>),
}

/// `{"claim": name, <operator>: value}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimCondition {
    /// The claim's dot-separated path.
    pub claim: String,
    /// The comparison.
    pub operator: Operator,
    /// The value compared with.
    pub value: ClaimValue,
}

impl ClaimCondition {
    /// `{"claim": claim, "equals": value}`.
    pub fn equals(claim: impl Into<String>, value: impl Into<ClaimValue>) -> Self {
        ClaimCondition {
            claim: claim.into(),
            operator: Operator::Equals,
            value: value.into(),
        }
    }
}

/// The comparison operators of the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `equals`
    Equals,
    /// `notEquals`
    NotEquals,
    /// `less`: claim < value.
    Less,
    /// `lessOrEquals`: claim ≤ value.
    LessOrEquals,
    /// `greater`: claim > value.
    Greater,
    /// `greaterOrEquals`: claim ≥ value.
    GreaterOrEquals,
    /// `exists`: the claim is present (value `true`) or absent (`false`).
    Exists,
}

impl Operator {
    /// Every operator, in the grammar's order.
    pub const ALL: [Operator; 7] = [
        Operator::Equals,
        Operator::NotEquals,
        Operator::Less,
        Operator::LessOrEquals,
        Operator::Greater,
        Operator::GreaterOrEquals,
        Operator::Exists,
    ];

    /// The JSON member name (`equals`, `notEquals`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Equals => "equals",
            Operator::NotEquals => "notEquals",
            Operator::Less => "less",
            Operator::LessOrEquals => "lessOrEquals",
            Operator::Greater => "greater",
            Operator::GreaterOrEquals => "greaterOrEquals",
            Operator::Exists => "exists",
        }
    }

    fn from_lowercase(name: &str) -> Option<Self> {
        Operator::ALL
            .into_iter()
            .find(|op| op.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value in a claim condition: string, number or boolean.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimValue {
    /// A JSON string.
    String(String),
    /// A JSON number, kept as written.
    Number(Number),
    /// `true` or `false`.
    Bool(bool),
}

impl From<&str> for ClaimValue {
    fn from(s: &str) -> Self {
        ClaimValue::String(s.to_owned())
    }
}

impl From<String> for ClaimValue {
    fn from(s: String) -> Self {
        ClaimValue::String(s)
    }
}

impl From<bool> for ClaimValue {
    fn from(b: bool) -> Self {
        ClaimValue::Bool(b)
    }
}

impl From<u64> for ClaimValue {
    fn from(n: u64) -> Self {
        ClaimValue::Number(n.into())
    }
}

impl From<i64> for ClaimValue {
    fn from(n: i64) -> Self {
        ClaimValue::Number(n.into())
    }
}

impl ClaimValue {
    fn to_json(&self) -> Value {
        match self {
            ClaimValue::String(s) => Value::String(s.clone()),
            ClaimValue::Number(n) => Value::Number(n.clone()),
            ClaimValue::Bool(b) => Value::Bool(*b),
        }
    }
}

impl fmt::Display for ClaimValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

// ---------------------------------------------------------------- parsing

impl ReleasePolicy {
    /// A `1.0.0` policy with one `allOf` branch per list of conditions,
    /// all under `authority` (what `importkeyconfig.json` describes).
    pub fn all_of(authority: &str, branches: Vec<Vec<ClaimCondition>>) -> Self {
        ReleasePolicy {
            version: PolicyVersion::V1_0_0,
            any_of: branches
                .into_iter()
                .map(|conditions| Branch {
                    authority: authority.to_owned(),
                    combinator: Combinator::AllOf,
                    conditions: conditions.into_iter().map(Condition::Claim).collect(),
                })
                .collect(),
        }
    }

    /// Reads a policy from its JSON text.
    ///
    /// # Errors
    ///
    /// [`Error::Json`] for text that is not JSON, [`Error::Policy`] (with
    /// the JSON path of the offending part) for JSON that is not a policy.
    pub fn decode(json: &[u8]) -> Result<Self, Error> {
        let value: Value = serde_json::from_slice(json).map_err(Error::json("release policy"))?;
        Self::from_json(&value)
    }

    /// Reads a policy from the base64url `data` of a Key Vault
    /// `release_policy` (padding tolerated).
    ///
    /// # Errors
    ///
    /// As [`ReleasePolicy::decode`], and [`Error::Encoding`] if `data` is
    /// not base64url.
    pub fn decode_base64url(data: &str) -> Result<Self, Error> {
        let bytes = URL_SAFE_NO_PAD
            .decode(data.trim_end_matches('='))
            .map_err(|_| Error::Encoding {
                what: "release_policy.data",
                encoding: "base64url",
            })?;
        Self::decode(&bytes)
    }

    /// Reads a policy from a parsed JSON value.
    ///
    /// # Errors
    ///
    /// [`Error::Policy`] naming the offending part.
    pub fn from_json(value: &Value) -> Result<Self, Error> {
        let path = "$";
        let members = Members::new(value, path)?;
        members.only(&["version", "anyof"])?;
        let version = match members.get("version") {
            None => return Err(Error::policy(path, PolicyProblem::Missing("version"))),
            Some(Value::String(v)) if v == "1.0.0" => PolicyVersion::V1_0_0,
            Some(Value::String(v)) if v == "0.2" => PolicyVersion::V0_2,
            Some(Value::String(v)) => {
                return Err(Error::policy(path, PolicyProblem::Version(v.clone())));
            }
            Some(other) => {
                return Err(Error::policy(
                    path,
                    PolicyProblem::Version(other.to_string()),
                ));
            }
        };
        let branches = members
            .get("anyof")
            .ok_or_else(|| Error::policy(path, PolicyProblem::Missing("anyOf")))?;
        let branch_path = format!("{path}.anyOf");
        let branches = array(branches, &branch_path)?;
        let any_of = branches
            .iter()
            .enumerate()
            .map(|(i, b)| parse_branch(b, &format!("{branch_path}[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ReleasePolicy { version, any_of })
    }

    /// The policy as a JSON value, members in the order Azure's tools
    /// write them.
    pub fn to_json(&self) -> Value {
        // serde_json's map is ordered by key unless `preserve_order` is on,
        // so the canonical text comes from `encode`.
        serde_json::json!({
            "version": self.version.as_str(),
            "anyOf": self.any_of.iter().map(branch_json).collect::<Vec<_>>(),
        })
    }

    /// The policy as compact JSON text, members in the order Azure's import
    /// tool writes them: `version`, `anyOf`; `authority`, `allOf`/`anyOf`;
    /// `claim`, operator.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::new();
        out.push_str("{\"version\":");
        push_json(&mut out, &Value::String(self.version.as_str().to_owned()));
        out.push_str(",\"anyOf\":[");
        for (i, branch) in self.any_of.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"authority\":");
            push_json(&mut out, &Value::String(branch.authority.clone()));
            out.push_str(",\"");
            out.push_str(branch.combinator.as_str());
            out.push_str("\":");
            push_conditions(&mut out, &branch.conditions);
            out.push('}');
        }
        out.push_str("]}");
        out.into_bytes()
    }

    /// [`ReleasePolicy::encode`] as unpadded base64url: the `data` of a
    /// Key Vault `release_policy`.
    pub fn encode_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.encode())
    }
}

fn push_json(out: &mut String, value: &Value) {
    out.push_str(&value.to_string());
}

fn push_conditions(out: &mut String, conditions: &[Condition]) {
    out.push('[');
    for (i, condition) in conditions.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match condition {
            Condition::Claim(c) => {
                out.push_str("{\"claim\":");
                push_json(out, &Value::String(c.claim.clone()));
                out.push_str(",\"");
                out.push_str(c.operator.as_str());
                out.push_str("\":");
                push_json(out, &c.value.to_json());
                out.push('}');
            }
            Condition::Group(combinator, children) => {
                out.push_str("{\"");
                out.push_str(combinator.as_str());
                out.push_str("\":");
                push_conditions(out, children);
                out.push('}');
            }
        }
    }
    out.push(']');
}

fn branch_json(branch: &Branch) -> Value {
    let mut map = Map::new();
    map.insert("authority".into(), Value::String(branch.authority.clone()));
    map.insert(
        branch.combinator.as_str().into(),
        Value::Array(branch.conditions.iter().map(condition_json).collect()),
    );
    Value::Object(map)
}

pub(crate) fn condition_json(condition: &Condition) -> Value {
    let mut map = Map::new();
    match condition {
        Condition::Claim(c) => {
            map.insert("claim".into(), Value::String(c.claim.clone()));
            map.insert(c.operator.as_str().into(), c.value.to_json());
        }
        Condition::Group(combinator, children) => {
            map.insert(
                combinator.as_str().into(),
                Value::Array(children.iter().map(condition_json).collect()),
            );
        }
    }
    Value::Object(map)
}

/// An object's members, looked up by lowercase name.
struct Members<'a> {
    path: &'a str,
    entries: Vec<(String, &'a String, &'a Value)>,
}

impl<'a> Members<'a> {
    fn new(value: &'a Value, path: &'a str) -> Result<Self, Error> {
        let Value::Object(map) = value else {
            return Err(Error::policy(path, PolicyProblem::NotObject));
        };
        let mut entries: Vec<(String, &String, &Value)> = Vec::with_capacity(map.len());
        for (name, value) in map {
            let lower = name.to_ascii_lowercase();
            if let Some((_, first, _)) = entries.iter().find(|(l, _, _)| *l == lower) {
                return Err(Error::policy(
                    path,
                    PolicyProblem::Conflict((*first).clone(), name.clone()),
                ));
            }
            entries.push((lower, name, value));
        }
        Ok(Members { path, entries })
    }

    fn get(&self, lower: &str) -> Option<&'a Value> {
        self.entries
            .iter()
            .find(|(l, _, _)| l == lower)
            .map(|(_, _, v)| *v)
    }

    fn only(&self, allowed: &[&str]) -> Result<(), Error> {
        match self
            .entries
            .iter()
            .find(|(l, _, _)| !allowed.contains(&l.as_str()))
        {
            Some((_, name, _)) => Err(Error::policy(
                self.path,
                PolicyProblem::UnknownMember((*name).clone()),
            )),
            None => Ok(()),
        }
    }

    /// The one of `anyOf`/`allOf` present, if exactly one is.
    fn group(&self) -> Result<Option<(Combinator, &'a Value)>, Error> {
        match (self.get("anyof"), self.get("allof")) {
            (Some(_), Some(_)) => Err(Error::policy(
                self.path,
                PolicyProblem::Conflict("anyOf".into(), "allOf".into()),
            )),
            (Some(v), None) => Ok(Some((Combinator::AnyOf, v))),
            (None, Some(v)) => Ok(Some((Combinator::AllOf, v))),
            (None, None) => Ok(None),
        }
    }
}

fn array<'a>(value: &'a Value, path: &str) -> Result<&'a Vec<Value>, Error> {
    match value {
        Value::Array(items) if items.is_empty() => Err(Error::policy(path, PolicyProblem::Empty)),
        Value::Array(items) => Ok(items),
        _ => Err(Error::policy(path, PolicyProblem::NotArray)),
    }
}

fn non_empty_string(
    value: Option<&Value>,
    path: &str,
    name: &'static str,
) -> Result<String, Error> {
    match value {
        None => Err(Error::policy(path, PolicyProblem::Missing(name))),
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(Error::policy(
            &format!("{path}.{name}"),
            PolicyProblem::NotString,
        )),
    }
}

fn parse_branch(value: &Value, path: &str) -> Result<Branch, Error> {
    let members = Members::new(value, path)?;
    members.only(&["authority", "anyof", "allof"])?;
    let authority = non_empty_string(members.get("authority"), path, "authority")?;
    let (combinator, list) = members
        .group()?
        .ok_or_else(|| Error::policy(path, PolicyProblem::Missing("allOf")))?;
    let list_path = format!("{path}.{}", combinator.as_str());
    let conditions = parse_conditions(list, &list_path, 2)?;
    Ok(Branch {
        authority,
        combinator,
        conditions,
    })
}

fn parse_conditions(value: &Value, path: &str, depth: usize) -> Result<Vec<Condition>, Error> {
    if depth > MAX_POLICY_DEPTH {
        return Err(Error::policy(
            path,
            PolicyProblem::TooDeep(MAX_POLICY_DEPTH),
        ));
    }
    array(value, path)?
        .iter()
        .enumerate()
        .map(|(i, c)| parse_condition(c, &format!("{path}[{i}]"), depth))
        .collect()
}

fn parse_condition(value: &Value, path: &str, depth: usize) -> Result<Condition, Error> {
    let members = Members::new(value, path)?;
    if let Some((combinator, list)) = members.group()? {
        members.only(&["anyof", "allof"])?;
        let list_path = format!("{path}.{}", combinator.as_str());
        let children = parse_conditions(list, &list_path, depth + 1)?;
        return Ok(Condition::Group(combinator, children));
    }
    let claim = non_empty_string(members.get("claim"), path, "claim")?;
    let mut found: Option<(Operator, &String, &Value)> = None;
    for (lower, name, v) in &members.entries {
        if lower == "claim" {
            continue;
        }
        let Some(op) = Operator::from_lowercase(lower) else {
            return Err(Error::policy(
                path,
                PolicyProblem::UnknownMember((*name).clone()),
            ));
        };
        if let Some((_, first, _)) = found {
            return Err(Error::policy(
                path,
                PolicyProblem::Conflict(first.clone(), (*name).clone()),
            ));
        }
        found = Some((op, name, v));
    }
    let Some((operator, name, raw)) = found else {
        return Err(Error::policy(path, PolicyProblem::Missing("equals")));
    };
    let value_path = format!("{path}.{name}");
    let value = match raw {
        Value::String(s) => ClaimValue::String(s.clone()),
        Value::Number(n) => ClaimValue::Number(n.clone()),
        Value::Bool(b) => ClaimValue::Bool(*b),
        _ => return Err(Error::policy(&value_path, PolicyProblem::BadValue)),
    };
    if operator == Operator::Exists && as_bool(&value).is_none() {
        return Err(Error::policy(&value_path, PolicyProblem::BadExists));
    }
    Ok(Condition::Claim(ClaimCondition {
        claim,
        operator,
        value,
    }))
}

/// Reads one claim condition (not a group), as `importkeyconfig.json`
/// lists them.
pub(crate) fn parse_claim_condition(value: &Value, path: &str) -> Result<ClaimCondition, Error> {
    match parse_condition(value, path, 0)? {
        Condition::Claim(c) => Ok(c),
        Condition::Group(..) => Err(Error::policy(
            path,
            PolicyProblem::UnknownMember("anyOf/allOf".to_owned()),
        )),
    }
}

fn as_bool(value: &ClaimValue) -> Option<bool> {
    match value {
        ClaimValue::Bool(b) => Some(*b),
        ClaimValue::String(s) => parse_bool(s),
        ClaimValue::Number(_) => None,
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

// ------------------------------------------------------------- evaluation

/// The outcome of evaluating a policy against a token's claims.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The key may be released: `branch` (index into `anyOf`) is satisfied.
    Allowed {
        /// The first satisfied branch.
        branch: usize,
    },
    /// No branch is satisfied.
    Denied(Denial),
}

impl Decision {
    /// Whether the key may be released.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }
}

/// Why a policy refused a token: one entry per branch.
#[derive(Debug, Clone, PartialEq)]
pub struct Denial {
    /// Every branch, in policy order, with why it failed.
    pub branches: Vec<BranchDenial>,
}

/// Why one branch failed.
#[derive(Debug, Clone, PartialEq)]
pub struct BranchDenial {
    /// The branch's index in `anyOf`.
    pub index: usize,
    /// The branch's authority.
    pub authority: String,
    /// What failed.
    pub reason: BranchFailure,
}

/// What failed in a branch.
#[derive(Debug, Clone, PartialEq)]
pub enum BranchFailure {
    /// The token's issuer is not the branch's authority.
    WrongAuthority {
        /// The token's `iss`.
        issuer: String,
    },
    /// Claim conditions failed: every failing one in an `allOf`, all of
    /// them in an `anyOf` where none held.
    Claims(Vec<ClaimFailure>),
}

/// One failing claim condition.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimFailure {
    /// Where the condition is, as a JSON path into the policy.
    pub path: String,
    /// The claim's name.
    pub claim: String,
    /// The operator.
    pub operator: Operator,
    /// The policy's value.
    pub expected: ClaimValue,
    /// The claim's value in the token, or `None` if it is absent.
    pub actual: Option<Value>,
    /// Why the comparison failed.
    pub kind: FailureKind,
}

/// Why a claim comparison failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// The claim is absent (or `null`).
    Missing,
    /// The claim is present but `exists: false` asks for its absence.
    Present,
    /// The values compare, and the comparison is false.
    Mismatch,
    /// The values cannot be compared (object, array, bool against number,
    /// a non-numeric string against a number, …).
    TypeMismatch,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, branch) in self.branches.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{branch}")?;
        }
        Ok(())
    }
}

impl fmt::Display for BranchDenial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "branch {} (authority {}): ", self.index, self.authority)?;
        match &self.reason {
            BranchFailure::WrongAuthority { issuer } => {
                write!(f, "token issuer {issuer} is not this authority")
            }
            BranchFailure::Claims(failures) => {
                for (i, failure) in failures.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{failure}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for ClaimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "claim {} {} {}: ",
            self.claim, self.operator, self.expected
        )?;
        match (&self.kind, &self.actual) {
            (FailureKind::Missing, _) | (_, None) => f.write_str("claim is absent"),
            (FailureKind::Present, Some(actual)) => write!(f, "claim is present ({actual})"),
            (FailureKind::Mismatch, Some(actual)) => write!(f, "actual {actual}"),
            (FailureKind::TypeMismatch, Some(actual)) => {
                write!(f, "actual {actual} cannot be compared")
            }
        }
    }
}

impl ReleasePolicy {
    /// Evaluates the policy against a token's claims. `issuer` is the
    /// token's verified `iss`; `claims` its verified payload. Nothing here
    /// checks signatures or times: pass only claims of a verified token.
    pub fn evaluate(&self, issuer: &str, claims: &Map<String, Value>) -> Decision {
        let mut branches = Vec::with_capacity(self.any_of.len());
        for (index, branch) in self.any_of.iter().enumerate() {
            let reason = if !authority_matches(&branch.authority, issuer) {
                BranchFailure::WrongAuthority {
                    issuer: issuer.to_owned(),
                }
            } else {
                let path = format!("$.anyOf[{index}].{}", branch.combinator.as_str());
                let mut failures = Vec::new();
                if evaluate_group(
                    branch.combinator,
                    &branch.conditions,
                    claims,
                    &path,
                    &mut failures,
                ) {
                    return Decision::Allowed { branch: index };
                }
                BranchFailure::Claims(failures)
            };
            branches.push(BranchDenial {
                index,
                authority: branch.authority.clone(),
                reason,
            });
        }
        Decision::Denied(Denial { branches })
    }
}

fn evaluate_group(
    combinator: Combinator,
    conditions: &[Condition],
    claims: &Map<String, Value>,
    path: &str,
    failures: &mut Vec<ClaimFailure>,
) -> bool {
    let mut group_failures = Vec::new();
    let mut any = false;
    let mut all = true;
    for (i, condition) in conditions.iter().enumerate() {
        let here = format!("{path}[{i}]");
        let held = match condition {
            Condition::Claim(c) => match check(c, claims) {
                Ok(()) => true,
                Err(failure) => {
                    group_failures.push(ClaimFailure {
                        path: here,
                        ..failure
                    });
                    false
                }
            },
            Condition::Group(inner, children) => {
                let inner_path = format!("{here}.{}", inner.as_str());
                evaluate_group(*inner, children, claims, &inner_path, &mut group_failures)
            }
        };
        any |= held;
        all &= held;
    }
    let held = match combinator {
        Combinator::AnyOf => any,
        Combinator::AllOf => all,
    };
    if !held {
        failures.append(&mut group_failures);
    }
    held
}

/// Looks a dot-separated claim path up; `null` counts as absent.
fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut segments = path.split('.');
    let first = segments.next()?;
    let mut value = claims.get(first)?;
    for segment in segments {
        value = value.as_object()?.get(segment)?;
    }
    (!value.is_null()).then_some(value)
}

fn check(condition: &ClaimCondition, claims: &Map<String, Value>) -> Result<(), ClaimFailure> {
    let actual = lookup(claims, &condition.claim);
    let fail = |kind| ClaimFailure {
        path: String::new(),
        claim: condition.claim.clone(),
        operator: condition.operator,
        expected: condition.value.clone(),
        actual: actual.cloned(),
        kind,
    };
    if condition.operator == Operator::Exists {
        let want = as_bool(&condition.value).unwrap_or(true);
        return match (want, actual.is_some()) {
            (true, true) | (false, false) => Ok(()),
            (true, false) => Err(fail(FailureKind::Missing)),
            (false, true) => Err(fail(FailureKind::Present)),
        };
    }
    let Some(actual) = actual else {
        return Err(fail(FailureKind::Missing));
    };
    let holds = match condition.operator {
        Operator::Equals => equal(&condition.value, actual),
        Operator::NotEquals => equal(&condition.value, actual).map(|eq| !eq),
        Operator::Less => order(&condition.value, actual).map(Ordering::is_lt),
        Operator::LessOrEquals => order(&condition.value, actual).map(Ordering::is_le),
        Operator::Greater => order(&condition.value, actual).map(Ordering::is_gt),
        Operator::GreaterOrEquals => order(&condition.value, actual).map(Ordering::is_ge),
        Operator::Exists => Some(true),
    };
    match holds {
        Some(true) => Ok(()),
        Some(false) => Err(fail(FailureKind::Mismatch)),
        None => Err(fail(FailureKind::TypeMismatch)),
    }
}

/// A number read from a claim or policy, exact for integers.
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    fn from_number(n: &Number) -> Option<Num> {
        if let Some(i) = n.as_i64() {
            Some(Num::Int(i.into()))
        } else if let Some(u) = n.as_u64() {
            Some(Num::Int(u.into()))
        } else {
            n.as_f64().map(Num::Float)
        }
    }

    /// A string that is exactly a JSON number.
    fn from_str(s: &str) -> Option<Num> {
        if s.is_empty() || s.trim() != s {
            return None;
        }
        let n: Number = serde_json::from_str(s).ok()?;
        Num::from_number(&n)
    }

    fn cmp(self, other: Num) -> Option<Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            (a, b) => a.as_f64().partial_cmp(&b.as_f64()),
        }
    }

    #[allow(clippy::cast_precision_loss)]
    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

/// `Some(actual == expected)`, or `None` when they cannot be compared.
fn equal(expected: &ClaimValue, actual: &Value) -> Option<bool> {
    match (actual, expected) {
        (Value::String(a), ClaimValue::String(e)) => Some(a == e),
        (Value::Bool(a), ClaimValue::Bool(e)) => Some(a == e),
        (Value::Bool(a), ClaimValue::String(e)) => parse_bool(e).map(|e| *a == e),
        (Value::String(a), ClaimValue::Bool(e)) => parse_bool(a).map(|a| a == *e),
        (Value::Number(a), ClaimValue::Number(e)) => {
            Some(Num::from_number(a)?.cmp(Num::from_number(e)?)? == Ordering::Equal)
        }
        (Value::Number(a), ClaimValue::String(e)) => {
            Some(Num::from_number(a)?.cmp(Num::from_str(e)?)? == Ordering::Equal)
        }
        (Value::String(a), ClaimValue::Number(e)) => {
            Some(Num::from_str(a)?.cmp(Num::from_number(e)?)? == Ordering::Equal)
        }
        _ => None,
    }
}

/// `actual` compared with `expected`, or `None` when they cannot be.
fn order(expected: &ClaimValue, actual: &Value) -> Option<Ordering> {
    let actual_num = match actual {
        Value::Number(n) => Num::from_number(n),
        Value::String(s) => Num::from_str(s),
        _ => None,
    };
    let expected_num = match expected {
        ClaimValue::Number(n) => Num::from_number(n),
        ClaimValue::String(s) => Num::from_str(s),
        ClaimValue::Bool(_) => None,
    };
    match (actual_num, expected_num, actual, expected) {
        (Some(a), Some(e), _, _) => a.cmp(e),
        (_, _, Value::String(a), ClaimValue::String(e)) => Some(a.as_bytes().cmp(e.as_bytes())),
        _ => None,
    }
}

/// A URL reduced to what authority matching compares.
#[derive(Debug, PartialEq, Eq)]
struct NormalUrl {
    scheme: String,
    host: String,
    port: Option<String>,
    rest: String,
}

fn normalize_url(url: &str, default_https: bool) -> Option<NormalUrl> {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None if default_https => ("https".to_owned(), url),
        None => return None,
    };
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = match authority.rsplit_once(':') {
        // An IPv6 literal's colons sit inside brackets.
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (authority, None),
    };
    let default_port = match scheme.as_str() {
        "https" => Some("443"),
        "http" => Some("80"),
        _ => None,
    };
    let port = port.filter(|p| Some(*p) != default_port).map(str::to_owned);
    let rest = path.strip_suffix('/').unwrap_or(path).to_owned();
    Some(NormalUrl {
        scheme,
        host: host.to_ascii_lowercase(),
        port,
        rest,
    })
}

/// Whether a policy's `authority` names the token's issuer (see the module
/// docs for the normalization).
pub fn authority_matches(authority: &str, issuer: &str) -> bool {
    match (normalize_url(authority, true), normalize_url(issuer, false)) {
        (Some(a), Some(i)) => a == i,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_normalization() {
        let cases = [
            (
                "https://a.attest.azure.net",
                "https://a.attest.azure.net",
                true,
            ),
            (
                "https://a.attest.azure.net/",
                "https://a.attest.azure.net",
                true,
            ),
            (
                "https://a.attest.azure.net",
                "https://a.attest.azure.net/",
                true,
            ),
            ("a.attest.azure.net", "https://a.attest.azure.net", true),
            (
                "HTTPS://A.Attest.Azure.Net",
                "https://a.attest.azure.net",
                true,
            ),
            (
                "https://a.attest.azure.net:443",
                "https://a.attest.azure.net",
                true,
            ),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080/", true),
            (
                "http://a.attest.azure.net",
                "https://a.attest.azure.net",
                false,
            ),
            (
                "https://a.attest.azure.net",
                "http://a.attest.azure.net",
                false,
            ),
            (
                "https://a.attest.azure.net:8443",
                "https://a.attest.azure.net",
                false,
            ),
            (
                "https://a.attest.azure.net/x",
                "https://a.attest.azure.net/X",
                false,
            ),
            (
                "https://b.attest.azure.net",
                "https://a.attest.azure.net",
                false,
            ),
            ("https://a.attest.azure.net", "a.attest.azure.net", false),
            (
                "https://user@a.attest.azure.net",
                "https://a.attest.azure.net",
                false,
            ),
            ("https://[::1]:8443", "https://[::1]:8443", true),
            ("https://[::1]", "https://[::1]:443", true),
        ];
        for (authority, issuer, want) in cases {
            assert_eq!(
                authority_matches(authority, issuer),
                want,
                "{authority} vs {issuer}"
            );
        }
    }

    #[test]
    fn numbers_from_strings() {
        assert!(Num::from_str("0").is_some());
        assert!(Num::from_str("-1.5e3").is_some());
        for bad in ["", " 0", "0 ", "+0", "0x0", "01", "NaN", "1_000"] {
            assert!(Num::from_str(bad).is_none(), "{bad:?}");
        }
    }
}
