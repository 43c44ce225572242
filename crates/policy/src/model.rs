//! The policy model, its byte-exact Rego rendering, and parsing it back.
//!
//! The layout is confcom's `data/customer_rego_policy.txt` filled in by
//! `AciPolicy._add_rego_boilerplate` (security_policy.py): `fragments` with
//! `pretty_print_func` (indent 2, sorted keys) and `containers` with
//! `print_func` (compact, sorted keys), both `ensure_ascii`. There is no
//! trailing newline; host_data is the SHA-256 of exactly these bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Document, Error, PolicyError};
use crate::pyjson::{self, Style};

/// `api_version` that confcom 1.4.3 writes.
pub const API_VERSION: &str = "0.10.0";
/// `framework_version` that confcom 1.4.3 writes.
pub const FRAMEWORK_VERSION: &str = "0.2.3";

/// A CCE policy: what `az confcom acipolicygen` writes for one container group.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// `api_version`.
    pub api_version: String,
    /// `framework_version`.
    pub framework_version: String,
    /// Policy fragments the group accepts (the infrastructure fragment).
    pub fragments: Vec<Fragment>,
    /// The containers, the pause container last.
    pub containers: Vec<Container>,
    /// The six `allow_*` switches.
    pub switches: Switches,
}

/// The `allow_*` switches at the end of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switches {
    /// `allow_properties_access`.
    pub properties_access: bool,
    /// `allow_dump_stacks`.
    pub dump_stacks: bool,
    /// `allow_runtime_logging`.
    pub runtime_logging: bool,
    /// `allow_environment_variable_dropping`.
    pub environment_variable_dropping: bool,
    /// `allow_unencrypted_scratch`.
    pub unencrypted_scratch: bool,
    /// `allow_capability_dropping`.
    pub capability_dropping: bool,
}

impl Default for Switches {
    /// confcom's defaults (`AciPolicy.__init__` without debug mode).
    fn default() -> Self {
        Switches {
            properties_access: true,
            dump_stacks: false,
            runtime_logging: false,
            environment_variable_dropping: true,
            unencrypted_scratch: false,
            capability_dropping: true,
        }
    }
}

/// One entry of `fragments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fragment {
    /// The fragment's registry feed.
    pub feed: String,
    /// Which parts of the fragment are used.
    pub includes: Vec<String>,
    /// The DID of the fragment's signer.
    pub issuer: String,
    /// The lowest accepted security version, as a decimal string.
    pub minimum_svn: String,
    /// Any other fields, kept so that a parsed policy renders unchanged.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// One entry of `containers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Container {
    /// The image reference (absent with `--omit-id` and for the pause container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The container name (absent with `--omit-id` when it equals the id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// dm-verity root hashes of the layers, base layer first.
    pub layers: Vec<String>,
    /// The exact command line (`null` when the image has neither
    /// Entrypoint nor Cmd and the template gives none).
    pub command: Option<Vec<String>>,
    /// Environment variable rules, in confcom's order.
    pub env_rules: Vec<EnvRule>,
    /// The working directory.
    pub working_dir: String,
    /// Allowed mounts.
    pub mounts: Vec<Mount>,
    /// Processes that may be started inside the container.
    pub exec_processes: Vec<ExecProcess>,
    /// Signals that may be sent to the container's process (numbers, or
    /// names confcom could not translate).
    pub signals: Vec<Value>,
    /// Whether the container may be privileged.
    pub allow_elevated: bool,
    /// Whether the container's stdio is passed through.
    pub allow_stdio_access: bool,
    /// Whether `no_new_privileges` must be set.
    pub no_new_privileges: bool,
    /// SHA-256 of the seccomp profile, or empty.
    pub seccomp_profile_sha256: String,
    /// Allowed user and groups.
    pub user: User,
    /// Capability sets.
    pub capabilities: Capabilities,
    /// Any other fields, kept so that a parsed policy renders unchanged.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// One environment variable rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvRule {
    /// `NAME=value`, or a regular expression over that.
    pub pattern: String,
    /// Whether the variable must be present.
    pub required: bool,
    /// How `pattern` matches.
    pub strategy: EnvStrategy,
}

/// How an environment variable rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvStrategy {
    /// Exact string comparison.
    String,
    /// RE2 regular expression.
    Re2,
}

/// One allowed mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Path inside the container.
    pub destination: String,
    /// Mount options (`rbind`, `rshared`, `rw`/`ro`).
    pub options: Vec<String>,
    /// Source pattern (`sandbox:///tmp/atlas/...`).
    pub source: String,
    /// Mount type (`bind`).
    #[serde(rename = "type")]
    pub kind: String,
}

/// One allowed exec process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecProcess {
    /// The exact command line.
    pub command: Vec<String>,
    /// Signals that may be sent to it.
    pub signals: Vec<Value>,
}

/// Allowed user and groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Allowed groups.
    pub group_idnames: Vec<IdName>,
    /// The umask, as four octal digits.
    pub umask: String,
    /// Allowed user.
    pub user_idname: IdName,
}

impl Default for User {
    /// confcom's `default_user`: any user, any group, umask 0022.
    fn default() -> Self {
        User {
            group_idnames: vec![IdName::any()],
            umask: "0022".into(),
            user_idname: IdName::any(),
        }
    }
}

/// A user or group pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdName {
    /// The id, name or pattern.
    pub pattern: String,
    /// `any`, `id`, `name` or `re2`.
    pub strategy: String,
}

impl IdName {
    /// Matches anything.
    pub fn any() -> Self {
        IdName {
            pattern: String::new(),
            strategy: "any".into(),
        }
    }
}

/// The five capability sets.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Capabilities {
    /// Ambient set.
    pub ambient: Vec<String>,
    /// Bounding set.
    pub bounding: Vec<String>,
    /// Effective set.
    pub effective: Vec<String>,
    /// Inheritable set.
    pub inheritable: Vec<String>,
    /// Permitted set.
    pub permitted: Vec<String>,
}

/// SHA-256 of the exact policy bytes, as lowercase hex: the SEV-SNP
/// `host_data` of a container group running under this policy.
pub fn host_data(policy: &[u8]) -> String {
    hex::encode(Sha256::digest(policy))
}

const RULES: &str = "mount_device := data.framework.mount_device
unmount_device := data.framework.unmount_device
mount_overlay := data.framework.mount_overlay
unmount_overlay := data.framework.unmount_overlay
create_container := data.framework.create_container
exec_in_container := data.framework.exec_in_container
exec_external := data.framework.exec_external
shutdown_container := data.framework.shutdown_container
signal_container_process := data.framework.signal_container_process
plan9_mount := data.framework.plan9_mount
plan9_unmount := data.framework.plan9_unmount
get_properties := data.framework.get_properties
dump_stacks := data.framework.dump_stacks
runtime_logging := data.framework.runtime_logging
load_fragment := data.framework.load_fragment
scratch_mount := data.framework.scratch_mount
scratch_unmount := data.framework.scratch_unmount

reason := {\"errors\": data.framework.errors}";

impl Policy {
    /// The Rego text, byte for byte as confcom 1.4.3 writes it.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        out.push_str(
            "package policy\n\nimport future.keywords.every\nimport future.keywords.in\n\n",
        );
        out.push_str("api_version := ");
        pyjson::write_str(&mut out, &self.api_version);
        out.push_str("\nframework_version := ");
        pyjson::write_str(&mut out, &self.framework_version);
        out.push_str("\n\nfragments := ");
        out.push_str(&pyjson::dumps(&to_value(&self.fragments), Style::Indent2));
        out.push_str("\n\ncontainers := ");
        out.push_str(&self.containers_json());
        out.push_str("\n\n");
        let s = &self.switches;
        for (name, value) in [
            ("allow_properties_access", s.properties_access),
            ("allow_dump_stacks", s.dump_stacks),
            ("allow_runtime_logging", s.runtime_logging),
            (
                "allow_environment_variable_dropping",
                s.environment_variable_dropping,
            ),
            ("allow_unencrypted_scratch", s.unencrypted_scratch),
            ("allow_capability_dropping", s.capability_dropping),
        ] {
            out.push_str(name);
            out.push_str(" := ");
            out.push_str(if value { "true" } else { "false" });
            out.push('\n');
        }
        out.push('\n');
        out.push_str(RULES);
        out
    }

    /// The `containers` value alone, as the one line of compact JSON that
    /// the policy holds.
    pub fn containers_json(&self) -> String {
        pyjson::dumps(&to_value(&self.containers), Style::Compact)
    }

    /// [`host_data`] of [`Policy::render`].
    pub fn host_data(&self) -> String {
        host_data(self.render().as_bytes())
    }

    /// Reads a policy in the shape confcom writes: the `fragments`,
    /// `containers`, version and `allow_*` definitions. Other rules are
    /// ignored, so a policy written by another generator parses too;
    /// render it to see whether it is in confcom's exact layout.
    pub fn parse(text: &str) -> Result<Policy, Error> {
        let api_version = string_rule(text, "api_version")?;
        let framework_version = string_rule(text, "framework_version")?;
        let fragments = match rule_value(text, "fragments")? {
            Some(v) => serde_json::from_value(v).map_err(|e| bad("fragments", e))?,
            None => Vec::new(),
        };
        let containers = rule_value(text, "containers")?
            .ok_or(PolicyError::MissingRule { name: "containers" })?;
        let containers: Vec<Container> =
            serde_json::from_value(containers).map_err(|e| bad("containers", e))?;
        let defaults = Switches::default();
        let switch = |name: &'static str, default: bool| -> Result<bool, Error> {
            match rule_value(text, name)? {
                None => Ok(default),
                Some(Value::Bool(b)) => Ok(b),
                Some(_) => Err(PolicyError::BadValue {
                    name,
                    reason: "not true or false".into(),
                }
                .into()),
            }
        };
        let switches = Switches {
            properties_access: switch("allow_properties_access", defaults.properties_access)?,
            dump_stacks: switch("allow_dump_stacks", defaults.dump_stacks)?,
            runtime_logging: switch("allow_runtime_logging", defaults.runtime_logging)?,
            environment_variable_dropping: switch(
                "allow_environment_variable_dropping",
                defaults.environment_variable_dropping,
            )?,
            unencrypted_scratch: switch("allow_unencrypted_scratch", defaults.unencrypted_scratch)?,
            capability_dropping: switch("allow_capability_dropping", defaults.capability_dropping)?,
        };
        Ok(Policy {
            api_version,
            framework_version,
            fragments,
            containers,
            switches,
        })
    }
}

fn to_value<T: Serialize>(value: &T) -> Value {
    // Serializing plain structs of strings, bools and Values cannot fail.
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn bad(name: &'static str, e: serde_json::Error) -> Error {
    PolicyError::BadValue {
        name,
        reason: e.to_string(),
    }
    .into()
}

/// The JSON value of `NAME := <json>` at the start of a line, if present.
fn rule_value(text: &str, name: &'static str) -> Result<Option<Value>, Error> {
    let Some(start) = rule_start(text, name) else {
        return Ok(None);
    };
    let rest = text.get(start..).unwrap_or("");
    let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
    match stream.next() {
        Some(Ok(v)) => Ok(Some(v)),
        Some(Err(e)) => Err(Error::Json {
            what: Document::Policy,
            source: e,
        }),
        None => Err(PolicyError::BadValue {
            name,
            reason: "no value".into(),
        }
        .into()),
    }
}

fn string_rule(text: &str, name: &'static str) -> Result<String, Error> {
    match rule_value(text, name)? {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(PolicyError::BadValue {
            name,
            reason: "not a string".into(),
        }
        .into()),
        None => Err(PolicyError::MissingRule { name }.into()),
    }
}

/// Byte offset just after `NAME := ` on a line of its own.
fn rule_start(text: &str, name: &str) -> Option<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix(name) {
            let trimmed = rest.trim_start_matches([' ', '\t']);
            if let Some(after) = trimmed.strip_prefix(":=") {
                let value = after.trim_start_matches([' ', '\t']);
                return Some(offset + line.len() - value.len());
            }
        }
        offset += line.len();
    }
    None
}

/// hcsshim `DefaultUnprivilegedCapabilities`, which confcom's config.py
/// repeats: what generate writes for an unprivileged container, and what
/// the enforcer assumes for policies older than framework 0.2.2 (which
/// list none).
pub(crate) const UNPRIVILEGED_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// hcsshim `DefaultPrivilegedCapabilities`, likewise for privileged
/// containers.
pub(crate) const PRIVILEGED_CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_start_needs_line_start() {
        let text = "x := 1\nfoo_containers := 2\ncontainers := [1]\n";
        let at = rule_start(text, "containers");
        assert_eq!(at.map(|i| &text[i..]), Some("[1]\n"));
    }

    #[test]
    fn missing_containers_is_an_error() {
        let err =
            Policy::parse("package policy\napi_version := \"1\"\nframework_version := \"2\"\n");
        assert!(matches!(
            err,
            Err(Error::Policy(PolicyError::MissingRule {
                name: "containers"
            }))
        ));
    }
}
