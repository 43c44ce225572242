//! The guest's side of enforcement, around regorus: what hcsshim's Go
//! enforcer (`securitypolicyenforcer_rego.go`) and its Rego interpreter
//! (`regopolicyinterpreter.go`) do between two calls of the framework.
//!
//! For each request the guest:
//! 1. evaluates `data.policy.<rule>` with the request as `input`, and
//!    applies the `metadata` operations of the result to `data.metadata`
//!    at once, in order, keeping those before one that fails;
//! 2. asks `data.framework.enforcement_point_info` whether the policy's
//!    api version must define the rule, and fills in the rule's defaults;
//! 3. if the result is not allowed, evaluates `data.policy.reason` with
//!    `input.rule` set, for the reasons.
//!
//! Errors in any step deny the request. Before `create_container`, the
//! guest also adds the pod's `/etc/hostname`, `/etc/hosts` and
//! `/etc/resolv.conf` bind mounts to the default mounts (unless the
//! container mounts them itself), as hcsshim's guest agent does.

use std::num::{NonZeroU32, NonZeroUsize};

use serde_json::{Map, Value, json};

use super::decision::{Decision, MetadataAction, MetadataOp, Reason};
use super::request::{Capabilities, CreateContainer, LoadFragment, Request, Rule};
use crate::Error;
use crate::model::{PRIVILEGED_CAPABILITIES, UNPRIVILEGED_CAPABILITIES};

/// The Rego modules that make the decisions a policy delegates to
/// `data.framework`.
#[derive(Debug, Clone)]
pub struct Framework {
    modules: Vec<(String, String)>,
}

impl Framework {
    /// confsum's own framework (`crates/policy/rego/framework.rego`),
    /// with the semantics of hcsshim's framework 0.3.0 (api 0.10.0).
    pub fn confsum() -> Framework {
        Framework {
            modules: vec![(
                "framework.rego".to_owned(),
                include_str!("../../rego/framework.rego").to_owned(),
            )],
        }
    }

    /// Another framework, e.g. hcsshim's own `framework.rego` and
    /// `api.rego`: `(file name, Rego text)` pairs. They must define
    /// `package framework` with the rules the policy delegates to,
    /// `enforcement_point_info` and `errors`.
    pub fn from_modules<I, N, T>(modules: I) -> Framework
    where
        I: IntoIterator<Item = (N, T)>,
        N: Into<String>,
        T: Into<String>,
    {
        Framework {
            modules: modules
                .into_iter()
                .map(|(n, t)| (n.into(), t.into()))
                .collect(),
        }
    }
}

impl Default for Framework {
    fn default() -> Self {
        Framework::confsum()
    }
}

/// A policy, its framework and the state the guest keeps between
/// requests: one utility VM, as far as the policy can tell.
///
/// Cloning gives an independent copy of the state (cheap: regorus shares
/// the parsed modules).
#[derive(Clone)]
pub struct Enforcer {
    engine: regorus::Engine,
    metadata: Map<String, Value>,
    default_mounts: Vec<Value>,
    data_current: bool,
}

impl std::fmt::Debug for Enforcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enforcer")
            .field("metadata", &self.metadata)
            .field("default_mounts", &self.default_mounts.len())
            .finish_non_exhaustive()
    }
}

impl Enforcer {
    /// An enforcer for `policy` (Rego text) with confsum's framework.
    pub fn new(policy: &str) -> Result<Enforcer, Error> {
        Enforcer::with_framework(policy, &Framework::confsum())
    }

    /// An enforcer for `policy` with another framework.
    pub fn with_framework(policy: &str, framework: &Framework) -> Result<Enforcer, Error> {
        let mut engine = regorus::Engine::new();
        // hcsshim evaluates policies with OPA: Rego v0, and builtins that
        // fail are undefined rather than errors.
        engine.set_rego_v0(true);
        engine.set_strict_builtin_errors(false);
        // confcom writes `containers := [...]` on one line, and reformatting
        // would change host_data.
        engine.set_policy_length_config(regorus::PolicyLengthConfig {
            max_col: NonZeroU32::MAX,
            max_file_bytes: NonZeroUsize::new(64 << 20).unwrap_or(NonZeroUsize::MIN),
            max_lines: NonZeroUsize::new(1 << 20).unwrap_or(NonZeroUsize::MIN),
        });
        for (name, text) in &framework.modules {
            add_module(&mut engine, name, text)?;
        }
        let package = add_module(&mut engine, "policy.rego", policy)?;
        if package != "data.policy" {
            return Err(Error::NotAPolicy {
                package: package.trim_start_matches("data.").to_owned(),
            });
        }
        let mut enforcer = Enforcer {
            engine,
            metadata: Map::new(),
            default_mounts: default_mounts(),
            data_current: false,
        };
        // regorus analyses the modules on first use; do it now, so that a
        // broken policy is an error here and not a denial of everything.
        enforcer.load_data();
        enforcer
            .engine
            .eval_query("true".to_owned(), false)
            .map_err(|e| Error::Rego {
                module: "policy.rego".to_owned(),
                source: e.into(),
            })?;
        Ok(enforcer)
    }

    /// The framework's state (`data.metadata`): stores by name, each a map
    /// from key to value.
    pub fn metadata(&self) -> &Map<String, Value> {
        &self.metadata
    }

    /// Puts `request` to the policy, as the guest would, and keeps the
    /// state changes it asks for.
    pub fn decide(&mut self, request: &Request) -> Decision {
        match request {
            Request::CreateContainer(create) => self.add_network_mounts(create),
            Request::LoadFragment(fragment) => return self.load_fragment(fragment, request),
            _ => {}
        }
        self.enforce(request.rule(), request.to_input())
    }

    /// Puts the requests to the policy in order, each seeing the state the
    /// ones before it left.
    pub fn run(&mut self, requests: &[Request]) -> Vec<Decision> {
        requests.iter().map(|r| self.decide(r)).collect()
    }

    /// The guest loads the fragment's module, asks the policy, and keeps
    /// the module only if the policy says `add_module`.
    fn load_fragment(&mut self, fragment: &LoadFragment, request: &Request) -> Decision {
        let rule = Rule::LoadFragment;
        let namespace = match fragment.namespace() {
            Ok(n) => n.to_owned(),
            Err(e) => return Decision::deny(rule, vec![Reason::InvalidPolicy(e)]),
        };
        let without = self.engine.clone();
        if let Err(e) = self
            .engine
            .add_policy(format!("{namespace}.rego"), fragment.rego.clone())
        {
            self.engine = without;
            return Decision::deny(rule, vec![Reason::InvalidPolicy(format!("{e:#}"))]);
        }
        self.data_current = false;
        let decision = self.enforce(rule, request.to_input());
        let keep =
            decision.allowed && decision.result.get("add_module") == Some(&Value::Bool(true));
        if !keep {
            self.engine = without;
            self.data_current = false;
        }
        decision
    }

    fn enforce(&mut self, rule: Rule, input: Value) -> Decision {
        let path = format!("data.policy.{rule}");
        let (result, metadata) = match self.query(&path, &input) {
            Ok(r) => r,
            Err((e, ops)) => {
                let mut d = Decision::deny(rule, vec![Reason::InvalidPolicy(e)]);
                d.metadata = ops;
                return d;
            }
        };
        let deny = |error: String| {
            let mut d = Decision::deny(rule, vec![Reason::InvalidPolicy(error)]);
            d.metadata = metadata.clone();
            d
        };
        let (available, defaults) = match self.enforcement_point(rule) {
            Ok(info) => info,
            Err(e) => return deny(e),
        };
        let undefined = result.is_empty();
        if undefined && available {
            return deny(format!("rule for {rule} is missing from policy"));
        }
        let mut merged = defaults;
        merged.extend(result);
        let allowed = match merged.get("allowed") {
            Some(Value::Bool(b)) => *b,
            Some(_) => return deny("value for 'allowed' is not a boolean".to_owned()),
            None => return deny("unable to find value for key 'allowed'".to_owned()),
        };
        if !allowed {
            let mut reasons = self.reasons(rule, &input);
            if undefined && reasons.is_empty() {
                reasons.push(Reason::DefaultDenied(rule));
            }
            if reasons.is_empty() {
                reasons.push(Reason::Unexplained);
            }
            let mut d = Decision::deny(rule, reasons);
            d.result = merged;
            d.metadata = metadata;
            return d;
        }
        // What the guest makes of an allowed result; a malformed one fails
        // the request there too.
        let requested_env = input.get("envList").and_then(Value::as_array);
        let env_list = match kept_env(merged.get("env_list"), requested_env) {
            Ok(e) => e,
            Err(e) => return deny(e),
        };
        let caps_list = match kept_caps(merged.get("caps_list"), input.get("capabilities")) {
            Ok(c) => c,
            Err(e) => return deny(e),
        };
        let allow_stdio_access = match merged.get("allow_stdio_access") {
            Some(Value::Bool(b)) => Some(*b),
            None => None,
            Some(_) => return deny("value for 'allow_stdio_access' is not a boolean".to_owned()),
        };
        if allow_stdio_access.is_none()
            && matches!(rule, Rule::CreateContainer | Rule::ExecExternal)
        {
            return deny("unable to find value for key 'allow_stdio_access'".to_owned());
        }
        Decision {
            rule,
            allowed: true,
            reasons: Vec::new(),
            env_list,
            caps_list,
            allow_stdio_access,
            result: merged,
            metadata,
        }
    }

    /// `(available, defaults)` of an enforcement point, for this policy's
    /// api version.
    fn enforcement_point(&mut self, rule: Rule) -> Result<(bool, Map<String, Value>), String> {
        let input = json!({"name": rule.as_str(), "rule": rule.as_str()});
        let (info, _) = self
            .query("data.framework.enforcement_point_info", &input)
            .map_err(|(e, _)| format!("error querying enforcement point information: {e}"))?;
        let flag = |key: &str| match info.get(key) {
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(format!("value for '{key}' is not a boolean")),
            None => Err(format!("unable to find value for key '{key}'")),
        };
        if flag("unknown")? {
            return Err(format!("enforcement point rule {rule} does not exist"));
        }
        if flag("invalid")? {
            return Err(format!("enforcement point rule {rule} is invalid"));
        }
        if flag("version_missing")? {
            return Err("policy does not define api_version".to_owned());
        }
        let Some(Value::Object(defaults)) = info.get("default_results") else {
            return Err(format!("enforcement point {rule} result missing defaults"));
        };
        let defaults = defaults.clone();
        let available = flag("available")
            .map_err(|_| format!("enforcement point {rule} result missing availability info"))?;
        Ok((available, defaults))
    }

    /// The policy's `reason.errors` for a denied request.
    fn reasons(&mut self, rule: Rule, input: &Value) -> Vec<Reason> {
        let mut input = input.clone();
        if let Value::Object(map) = &mut input {
            map.insert("rule".to_owned(), Value::from(rule.as_str()));
        }
        let Ok((reason, _)) = self.query("data.policy.reason", &input) else {
            return Vec::new();
        };
        let mut reasons: Vec<Reason> = match reason.get("errors") {
            Some(Value::Array(errors)) => errors
                .iter()
                .map(|e| match e {
                    Value::String(s) => Reason::from_message(s),
                    other => Reason::Other(other.to_string()),
                })
                .collect(),
            _ => Vec::new(),
        };
        reasons.sort();
        reasons.dedup();
        reasons
    }

    /// Evaluates `path`; an undefined result is an empty object. Applies
    /// the result's metadata operations. On error, also returns the
    /// operations that were applied before it.
    #[allow(clippy::type_complexity)]
    fn query(
        &mut self,
        path: &str,
        input: &Value,
    ) -> Result<(Map<String, Value>, Vec<MetadataOp>), (String, Vec<MetadataOp>)> {
        self.load_data();
        self.engine.set_input(regorus::Value::from(input.clone()));
        let results = self
            .engine
            .eval_query(path.to_owned(), false)
            .map_err(|e| (format!("{e:#}"), Vec::new()))?;
        let Some(value) = results
            .result
            .first()
            .and_then(|r| r.expressions.first())
            .map(|e| &e.value)
        else {
            return Ok((Map::new(), Vec::new()));
        };
        let value = serde_json::to_value(value).map_err(|e| (e.to_string(), Vec::new()))?;
        let Value::Object(mut result) = value else {
            return Err((
                "unable to load results object from Rego query".to_owned(),
                Vec::new(),
            ));
        };
        let ops = match result.remove("metadata") {
            None => Vec::new(),
            Some(Value::Array(raw)) => raw
                .iter()
                .map(parse_op)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| (format!("error loading metadata operation: {e}"), Vec::new()))?,
            Some(_) => {
                return Err((
                    "error loading metadata array: invalid type".to_owned(),
                    Vec::new(),
                ));
            }
        };
        let mut applied = Vec::new();
        for op in ops {
            if let Err(e) = self.apply(&op) {
                return Err((format!("error applying metadata operations: {e}"), applied));
            }
            applied.push(op);
        }
        Ok((result, applied))
    }

    fn apply(&mut self, op: &MetadataOp) -> Result<(), String> {
        let store = self
            .metadata
            .entry(op.name.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(store) = store else {
            return Err(format!("metadata {} is not a map", op.name));
        };
        match op.action {
            MetadataAction::Add if store.contains_key(&op.key) => {
                return Err(format!(
                    "cannot add metadata value, key {}[{}] already exists",
                    op.name, op.key
                ));
            }
            MetadataAction::Add | MetadataAction::Update => {
                store.insert(op.key.clone(), op.value.clone().unwrap_or(Value::Null));
            }
            MetadataAction::Remove => {
                store.remove(&op.key);
            }
        }
        self.data_current = false;
        Ok(())
    }

    fn add_network_mounts(&mut self, create: &CreateContainer) {
        let Some(root) = create.sandbox_root() else {
            return;
        };
        for (destination, file) in [
            ("/etc/hostname", "hostname"),
            ("/etc/hosts", "hosts"),
            ("/etc/resolv.conf", "resolv.conf"),
        ] {
            if create.mounts.iter().any(|m| m.destination == destination) {
                continue;
            }
            self.default_mounts.push(json!({
                "destination": destination,
                "source": format!("{root}/{file}"),
                "options": ["bind"],
                "type": "bind",
            }));
            self.data_current = false;
        }
    }

    /// Gives regorus the data document, if it changed.
    fn load_data(&mut self) {
        if self.data_current {
            return;
        }
        let data = json!({
            "metadata": self.metadata,
            "defaultMounts": self.default_mounts,
            "privilegedMounts": privileged_mounts(),
            "sandboxPrefix": "sandbox://",
            "hugePagesPrefix": "hugepages://",
            "plan9Prefix": "plan9://",
            "defaultUnprivilegedCapabilities": UNPRIVILEGED_CAPABILITIES.as_slice(),
            "defaultPrivilegedCapabilities": PRIVILEGED_CAPABILITIES.as_slice(),
        });
        self.engine.clear_data();
        // An object cannot conflict with the empty data document.
        let _ = self.engine.add_data(regorus::Value::from(data));
        self.data_current = true;
    }
}

fn add_module(engine: &mut regorus::Engine, name: &str, text: &str) -> Result<String, Error> {
    engine
        .add_policy(name.to_owned(), text.to_owned())
        .map_err(|e| Error::Rego {
            module: name.to_owned(),
            source: e.into(),
        })
}

fn parse_op(raw: &Value) -> Result<MetadataOp, String> {
    let Value::Object(op) = raw else {
        return Err("unable to load metadata object".to_owned());
    };
    let text = |key: &str, what: &str| match op.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(format!("unable to load metadata {what}")),
    };
    let name = text("name", "name")?;
    let action = match text("action", "action")?.as_str() {
        "add" => MetadataAction::Add,
        "update" => MetadataAction::Update,
        "remove" => MetadataAction::Remove,
        other => return Err(format!("unrecognized metadata action: {other}")),
    };
    let key = text("key", "key")?;
    let value = op.get("value").cloned();
    if action != MetadataAction::Remove && value.is_none() {
        return Err("unable to load metadata value".to_owned());
    }
    Ok(MetadataOp {
        name,
        action,
        key,
        value: if action == MetadataAction::Remove {
            None
        } else {
            value
        },
    })
}

/// The variables the guest keeps: those of the request the policy's
/// `env_list` names, in the request's order. No `env_list` keeps all.
fn kept_env(
    returned: Option<&Value>,
    requested: Option<&Vec<Value>>,
) -> Result<Option<Vec<String>>, String> {
    let Some(requested) = requested else {
        return Ok(None);
    };
    let requested = requested.iter().filter_map(Value::as_str);
    let keep = match returned {
        None | Some(Value::Null) => return Ok(Some(requested.map(str::to_owned).collect())),
        Some(Value::Array(keep)) => keep
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| "members of env_list from policy must be strings".to_owned())
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err("policy returned incorrect type for 'env_list'".to_owned()),
    };
    Ok(Some(
        requested
            .filter(|e| keep.contains(e))
            .map(str::to_owned)
            .collect(),
    ))
}

/// The capabilities the guest grants: those asked for that the policy's
/// `caps_list` names.
fn kept_caps(
    returned: Option<&Value>,
    requested: Option<&Value>,
) -> Result<Option<Capabilities>, String> {
    let Some(requested) = requested else {
        return Ok(None);
    };
    let requested: Capabilities = serde_json::from_value(requested.clone()).unwrap_or_default();
    let returned = match returned {
        None | Some(Value::Null) => return Ok(Some(requested)),
        Some(Value::Object(map)) => map,
        Some(_) => return Err("policy returned incorrect type for 'caps_list'".to_owned()),
    };
    let filter = |kind: &str, asked: &[String]| -> Result<Vec<String>, String> {
        let Some(Value::Array(allowed)) = returned.get(kind) else {
            return Err("capability sets of caps_list from policy must be arrays".to_owned());
        };
        let mut allowed_names = Vec::new();
        for cap in allowed {
            allowed_names.push(cap.as_str().ok_or_else(|| {
                "members of capability sets from policy must be strings".to_owned()
            })?);
        }
        Ok(asked
            .iter()
            .filter(|c| allowed_names.contains(&c.as_str()))
            .cloned()
            .collect())
    };
    Ok(Some(Capabilities {
        bounding: filter("bounding", &requested.bounding)?,
        effective: filter("effective", &requested.effective)?,
        inheritable: filter("inheritable", &requested.inheritable)?,
        permitted: filter("permitted", &requested.permitted)?,
        ambient: filter("ambient", &requested.ambient)?,
    }))
}

fn mount(destination: &str, kind: &str, source: &str, options: &[&str]) -> Value {
    json!({"destination": destination, "type": kind, "source": source, "options": options})
}

/// The mounts containerd's CRI adds to every Linux container (hcsshim
/// `DefaultCRIMounts`); the policy allows them without listing them.
fn default_mounts() -> Vec<Value> {
    let ro = ["nosuid", "noexec", "nodev", "relatime", "ro"];
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        mount(
            "/run",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount("/sys/fs/cgroup", "cgroup", "cgroup", &ro),
        mount("/sys/fs/cgroup", "cgroup2", "cgroup2", &ro),
    ]
}

/// The mounts CRI adds to privileged containers (hcsshim
/// `DefaultCRIPrivilegedMounts`).
fn privileged_mounts() -> Vec<Value> {
    let rw = ["nosuid", "noexec", "nodev", "relatime", "rw"];
    vec![
        mount("/sys/fs/cgroup", "cgroup", "cgroup", &rw),
        mount("/sys/fs/cgroup", "cgroup2", "cgroup2", &rw),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "rw"],
        ),
    ]
}
