//! Which container or field differs between two policies, and therefore
//! why their host_data differ.

use std::fmt;

use serde_json::Value;

use crate::model::{Container, Policy};

/// One difference between two policies.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Change {
    /// Where: `containers[NAME].env_rules[3].pattern`, `fragments[0].minimum_svn`, ...
    pub path: String,
    /// The value in the first policy (`None`: absent there).
    pub old: Option<Value>,
    /// The value in the second policy (`None`: absent there).
    pub new: Option<Value>,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.old, &self.new) {
            (Some(o), Some(n)) => write!(f, "{}: {} -> {}", self.path, o, n),
            (Some(o), None) => write!(f, "{}: removed (was {})", self.path, o),
            (None, Some(n)) => write!(f, "{}: added {}", self.path, n),
            (None, None) => write!(f, "{}", self.path),
        }
    }
}

fn label(c: &Container, index: usize) -> String {
    match (&c.name, &c.id) {
        (Some(n), _) => n.clone(),
        (None, Some(id)) => id.clone(),
        (None, None) => format!("#{index}"),
    }
}

/// Every difference between `a` and `b`. Containers are paired by name
/// (else id, else position); within them, fields are compared value by
/// value and lists element by element.
pub fn diff(a: &Policy, b: &Policy) -> Vec<Change> {
    let mut out = Vec::new();
    let mut leaf = |path: &str, x: Value, y: Value| compare(path, Some(&x), Some(&y), &mut out);
    leaf(
        "api_version",
        a.api_version.clone().into(),
        b.api_version.clone().into(),
    );
    leaf(
        "framework_version",
        a.framework_version.clone().into(),
        b.framework_version.clone().into(),
    );
    for (name, x, y) in [
        (
            "allow_properties_access",
            a.switches.properties_access,
            b.switches.properties_access,
        ),
        (
            "allow_dump_stacks",
            a.switches.dump_stacks,
            b.switches.dump_stacks,
        ),
        (
            "allow_runtime_logging",
            a.switches.runtime_logging,
            b.switches.runtime_logging,
        ),
        (
            "allow_environment_variable_dropping",
            a.switches.environment_variable_dropping,
            b.switches.environment_variable_dropping,
        ),
        (
            "allow_unencrypted_scratch",
            a.switches.unencrypted_scratch,
            b.switches.unencrypted_scratch,
        ),
        (
            "allow_capability_dropping",
            a.switches.capability_dropping,
            b.switches.capability_dropping,
        ),
    ] {
        leaf(name, x.into(), y.into());
    }
    let fa = serde_json::to_value(&a.fragments).unwrap_or(Value::Null);
    let fb = serde_json::to_value(&b.fragments).unwrap_or(Value::Null);
    compare("fragments", Some(&fa), Some(&fb), &mut out);

    let la: Vec<String> = a
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| label(c, i))
        .collect();
    let lb: Vec<String> = b
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| label(c, i))
        .collect();
    for (i, ca) in a.containers.iter().enumerate() {
        let path = format!("containers[{}]", la[i]);
        let va = serde_json::to_value(ca).unwrap_or(Value::Null);
        match lb.iter().position(|l| *l == la[i]) {
            Some(j) => {
                let vb = serde_json::to_value(&b.containers[j]).unwrap_or(Value::Null);
                compare(&path, Some(&va), Some(&vb), &mut out);
            }
            None => compare(&path, Some(&va), None, &mut out),
        }
    }
    for (j, cb) in b.containers.iter().enumerate() {
        if !la.contains(&lb[j]) {
            let vb = serde_json::to_value(cb).unwrap_or(Value::Null);
            compare(&format!("containers[{}]", lb[j]), None, Some(&vb), &mut out);
        }
    }
    out
}

fn compare(path: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Change>) {
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                compare(&format!("{path}.{k}"), x.get(k), y.get(k), out);
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            for i in 0..x.len().max(y.len()) {
                compare(&format!("{path}[{i}]"), x.get(i), y.get(i), out);
            }
        }
        (x, y) if x == y => {}
        (x, y) => out.push(Change {
            path: path.to_owned(),
            old: x.cloned(),
            new: y.cloned(),
        }),
    }
}
