//! The requests the guest agent puts to the policy, as typed values.
//!
//! Field names (in JSON) are the ones hcsshim's Go enforcer
//! (`securitypolicyenforcer_rego.go`) puts in the Rego `input`, so a request
//! copied from a guest's decision log parses as it is. Unknown fields are
//! refused: a misspelt field that went unnoticed would change a decision.

use serde::{Deserialize, Serialize};

/// The enforcement points, one per kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Rule {
    /// A container layer (a dm-verity device) is mounted.
    MountDevice,
    /// A layer device is unmounted.
    UnmountDevice,
    /// A container's layers are combined into its root file system.
    MountOverlay,
    /// A root file system is taken apart.
    UnmountOverlay,
    /// A container is created.
    CreateContainer,
    /// A process is started inside a running container.
    ExecInContainer,
    /// A process is started in the utility VM itself.
    ExecExternal,
    /// A container is stopped.
    ShutdownContainer,
    /// A signal is sent to a process of a container.
    SignalContainerProcess,
    /// A plan9 share is mounted.
    Plan9Mount,
    /// A plan9 share is unmounted.
    Plan9Unmount,
    /// The host asks for container properties.
    GetProperties,
    /// The host asks the guest to dump its stacks.
    DumpStacks,
    /// The host asks for the guest's runtime logs.
    RuntimeLogging,
    /// A signed policy fragment is loaded.
    LoadFragment,
    /// The scratch disk is mounted.
    ScratchMount,
    /// The scratch disk is unmounted.
    ScratchUnmount,
}

impl Rule {
    /// Every rule, in the order the guest's API introduced them.
    pub const ALL: [Rule; 17] = [
        Rule::MountDevice,
        Rule::MountOverlay,
        Rule::CreateContainer,
        Rule::UnmountDevice,
        Rule::ExecInContainer,
        Rule::ExecExternal,
        Rule::ShutdownContainer,
        Rule::SignalContainerProcess,
        Rule::UnmountOverlay,
        Rule::Plan9Mount,
        Rule::Plan9Unmount,
        Rule::GetProperties,
        Rule::DumpStacks,
        Rule::RuntimeLogging,
        Rule::LoadFragment,
        Rule::ScratchMount,
        Rule::ScratchUnmount,
    ];

    /// The rule's name in the policy (`data.policy.<name>`).
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::MountDevice => "mount_device",
            Rule::UnmountDevice => "unmount_device",
            Rule::MountOverlay => "mount_overlay",
            Rule::UnmountOverlay => "unmount_overlay",
            Rule::CreateContainer => "create_container",
            Rule::ExecInContainer => "exec_in_container",
            Rule::ExecExternal => "exec_external",
            Rule::ShutdownContainer => "shutdown_container",
            Rule::SignalContainerProcess => "signal_container_process",
            Rule::Plan9Mount => "plan9_mount",
            Rule::Plan9Unmount => "plan9_unmount",
            Rule::GetProperties => "get_properties",
            Rule::DumpStacks => "dump_stacks",
            Rule::RuntimeLogging => "runtime_logging",
            Rule::LoadFragment => "load_fragment",
            Rule::ScratchMount => "scratch_mount",
            Rule::ScratchUnmount => "scratch_unmount",
        }
    }

    /// The rule named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request to the policy.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Request {
    /// See [`Rule::MountDevice`].
    MountDevice(MountDevice),
    /// See [`Rule::UnmountDevice`].
    UnmountDevice(Unmount),
    /// See [`Rule::MountOverlay`].
    MountOverlay(MountOverlay),
    /// See [`Rule::UnmountOverlay`].
    UnmountOverlay(Unmount),
    /// See [`Rule::CreateContainer`].
    CreateContainer(Box<CreateContainer>),
    /// See [`Rule::ExecInContainer`].
    ExecInContainer(Box<ExecInContainer>),
    /// See [`Rule::ExecExternal`].
    ExecExternal(ExecExternal),
    /// See [`Rule::ShutdownContainer`].
    ShutdownContainer(ShutdownContainer),
    /// See [`Rule::SignalContainerProcess`].
    SignalContainerProcess(SignalContainerProcess),
    /// See [`Rule::Plan9Mount`].
    Plan9Mount(Plan9Mount),
    /// See [`Rule::Plan9Unmount`].
    Plan9Unmount(Unmount),
    /// See [`Rule::GetProperties`].
    GetProperties,
    /// See [`Rule::DumpStacks`].
    DumpStacks,
    /// See [`Rule::RuntimeLogging`].
    RuntimeLogging,
    /// See [`Rule::LoadFragment`].
    LoadFragment(LoadFragment),
    /// See [`Rule::ScratchMount`].
    ScratchMount(ScratchMount),
    /// See [`Rule::ScratchUnmount`].
    ScratchUnmount(Unmount),
}

/// Input of `mount_device`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MountDevice {
    /// Where the guest mounts the device, e.g. `/run/mounts/scsi/m0`.
    pub target: String,
    /// The dm-verity root hash of the layer (lowercase hex).
    pub device_hash: String,
    /// Sent by newer guests (api 0.11 and later) and passed on as it is;
    /// frameworks of api 0.10.0 do not read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_path_regex: Option<String>,
}

/// Input of the unmount rules: the path that is unmounted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Unmount {
    /// The mount point.
    pub unmount_target: String,
}

/// Input of `mount_overlay`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MountOverlay {
    /// The container the root file system is for.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Mount points of the layer devices, top layer first.
    pub layer_paths: Vec<String>,
    /// Where the overlay is mounted.
    pub target: String,
}

/// A user or group, as the guest resolved it from the image's
/// `/etc/passwd` and `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdName {
    /// The numeric id, in decimal.
    pub id: String,
    /// The name, or empty when the image does not know it.
    pub name: String,
}

/// An OCI mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    /// Path inside the container.
    pub destination: String,
    /// Path (or pseudo file system) in the utility VM.
    pub source: String,
    /// Mount options.
    #[serde(default)]
    pub options: Vec<String>,
    /// Mount type, e.g. `bind`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// The five Linux capability sets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Bounding set.
    #[serde(default)]
    pub bounding: Vec<String>,
    /// Effective set.
    #[serde(default)]
    pub effective: Vec<String>,
    /// Inheritable set.
    #[serde(default)]
    pub inheritable: Vec<String>,
    /// Permitted set.
    #[serde(default)]
    pub permitted: Vec<String>,
    /// Ambient set.
    #[serde(default)]
    pub ambient: Vec<String>,
}

/// Input of `create_container`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateContainer {
    /// The container's id.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// The command, argument by argument.
    pub arg_list: Vec<String>,
    /// Environment variables, `NAME=value`.
    #[serde(default)]
    pub env_list: Vec<String>,
    /// Working directory.
    pub working_dir: String,
    /// Where `sandbox://` mount sources live: `/run/gcs/c/<sandbox id>/sandboxMounts`.
    pub sandbox_dir: String,
    /// Where `hugepages://` mount sources live: `/run/gcs/c/<sandbox id>/hugepages`.
    pub huge_pages_dir: String,
    /// Every mount of the OCI spec, the guest's own included.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Whether the container asks to be privileged.
    pub privileged: bool,
    /// Whether `no_new_privileges` is set.
    pub no_new_privileges: bool,
    /// The user the process runs as.
    pub user: IdName,
    /// Its groups.
    #[serde(default)]
    pub groups: Vec<IdName>,
    /// The umask, four octal digits.
    pub umask: String,
    /// The capabilities asked for.
    pub capabilities: Capabilities,
    /// SHA-256 of the seccomp profile, or empty for none.
    #[serde(rename = "seccompProfileSHA256")]
    pub seccomp_profile_sha256: String,
    /// Sent by newer guests and passed on; api 0.10.0 frameworks ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<serde_json::Value>>,
    /// Sent by newer guests and passed on; api 0.10.0 frameworks ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_sandbox_container: Option<bool>,
}

impl CreateContainer {
    /// The pod's directory, `/run/gcs/c/<sandbox id>`, from `sandbox_dir`.
    pub(crate) fn sandbox_root(&self) -> Option<&str> {
        self.sandbox_dir
            .strip_suffix("/sandboxMounts")
            .filter(|root| !root.is_empty())
    }
}

/// Input of `exec_in_container`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecInContainer {
    /// The running container.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// The command, argument by argument.
    pub arg_list: Vec<String>,
    /// Environment variables, `NAME=value`.
    #[serde(default)]
    pub env_list: Vec<String>,
    /// Working directory.
    pub working_dir: String,
    /// Whether `no_new_privileges` is set.
    pub no_new_privileges: bool,
    /// The user the process runs as.
    pub user: IdName,
    /// Its groups.
    #[serde(default)]
    pub groups: Vec<IdName>,
    /// The umask, four octal digits.
    pub umask: String,
    /// The capabilities asked for.
    pub capabilities: Capabilities,
}

/// Input of `exec_external`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecExternal {
    /// The command, argument by argument.
    pub arg_list: Vec<String>,
    /// Environment variables, `NAME=value`.
    #[serde(default)]
    pub env_list: Vec<String>,
    /// Working directory.
    pub working_dir: String,
}

/// Input of `shutdown_container`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShutdownContainer {
    /// The container.
    #[serde(rename = "containerID")]
    pub container_id: String,
}

/// Input of `signal_container_process`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignalContainerProcess {
    /// The container.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// The signal number (9 is SIGKILL, 15 SIGTERM).
    pub signal: i64,
    /// Whether the target is the container's init process.
    pub is_init_process: bool,
    /// The target process's command.
    #[serde(default)]
    pub arg_list: Vec<String>,
}

/// Input of `plan9_mount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Plan9Mount {
    /// Where the share is mounted.
    pub target: String,
    /// The guest's container root, `/run/gcs/c`.
    #[serde(default = "plan9_root_prefix")]
    pub root_prefix: String,
    /// The pattern of share mount points under a container, `/mounts/m[0-9]+`.
    #[serde(default = "plan9_mount_path_prefix")]
    pub mount_path_prefix: String,
}

fn plan9_root_prefix() -> String {
    "/run/gcs/c".to_owned()
}

fn plan9_mount_path_prefix() -> String {
    "/mounts/m[0-9]+".to_owned()
}

/// Input of `scratch_mount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScratchMount {
    /// Where the scratch disk is mounted.
    pub target: String,
    /// Whether it is encrypted.
    pub encrypted: bool,
}

/// A fragment to load: who signed it, which feed it is from, and its Rego.
///
/// The guest checks the COSE signature before it asks the policy; here the
/// issuer and feed are taken as given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadFragment {
    /// The signer, e.g. a `did:x509:...` identifier.
    pub issuer: String,
    /// The feed, e.g. `mcr.microsoft.com/aci/aci-cc-infra-fragment`.
    pub feed: String,
    /// The fragment's Rego; its first line is `package <namespace>`.
    pub rego: String,
}

impl LoadFragment {
    /// The fragment's namespace: the name on its first line,
    /// `package <name>`. Names the guest keeps for itself are refused.
    pub fn namespace(&self) -> Result<&str, String> {
        let first = self.rego.lines().next().unwrap_or_default();
        let name = first
            .strip_prefix("package ")
            .map(str::trim)
            .filter(|name| {
                let mut chars = name.chars();
                chars
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
            .ok_or_else(|| format!("a fragment starts with `package <name>`, not {first:?}"))?;
        if ["framework", "api", "policy", "metadata"].contains(&name) {
            return Err(format!(
                "namespace {name:?} is reserved and cannot be used for fragments"
            ));
        }
        Ok(name)
    }
}

/// A request that names no rule, or whose input does not fit its rule.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The rule is not one of [`Rule::ALL`].
    #[error("unknown rule {0:?}")]
    UnknownRule(String),
    /// The input does not have the rule's fields.
    #[error("invalid input for {rule}")]
    Input {
        /// The rule.
        rule: Rule,
        /// What is wrong.
        #[source]
        source: serde_json::Error,
    },
}

impl Request {
    /// The rule this request is for.
    pub fn rule(&self) -> Rule {
        match self {
            Request::MountDevice(_) => Rule::MountDevice,
            Request::UnmountDevice(_) => Rule::UnmountDevice,
            Request::MountOverlay(_) => Rule::MountOverlay,
            Request::UnmountOverlay(_) => Rule::UnmountOverlay,
            Request::CreateContainer(_) => Rule::CreateContainer,
            Request::ExecInContainer(_) => Rule::ExecInContainer,
            Request::ExecExternal(_) => Rule::ExecExternal,
            Request::ShutdownContainer(_) => Rule::ShutdownContainer,
            Request::SignalContainerProcess(_) => Rule::SignalContainerProcess,
            Request::Plan9Mount(_) => Rule::Plan9Mount,
            Request::Plan9Unmount(_) => Rule::Plan9Unmount,
            Request::GetProperties => Rule::GetProperties,
            Request::DumpStacks => Rule::DumpStacks,
            Request::RuntimeLogging => Rule::RuntimeLogging,
            Request::LoadFragment(_) => Rule::LoadFragment,
            Request::ScratchMount(_) => Rule::ScratchMount,
            Request::ScratchUnmount(_) => Rule::ScratchUnmount,
        }
    }

    /// Parses the input of `rule` (a JSON object with hcsshim's field
    /// names). Rules without input take `null` or `{}`.
    pub fn from_input(rule: Rule, input: serde_json::Value) -> Result<Request, RequestError> {
        fn typed<T: serde::de::DeserializeOwned>(
            rule: Rule,
            input: serde_json::Value,
        ) -> Result<T, RequestError> {
            serde_json::from_value(input).map_err(|source| RequestError::Input { rule, source })
        }
        Ok(match rule {
            Rule::MountDevice => Request::MountDevice(typed(rule, input)?),
            Rule::UnmountDevice => Request::UnmountDevice(typed(rule, input)?),
            Rule::MountOverlay => Request::MountOverlay(typed(rule, input)?),
            Rule::UnmountOverlay => Request::UnmountOverlay(typed(rule, input)?),
            Rule::CreateContainer => Request::CreateContainer(typed(rule, input)?),
            Rule::ExecInContainer => Request::ExecInContainer(typed(rule, input)?),
            Rule::ExecExternal => Request::ExecExternal(typed(rule, input)?),
            Rule::ShutdownContainer => Request::ShutdownContainer(typed(rule, input)?),
            Rule::SignalContainerProcess => Request::SignalContainerProcess(typed(rule, input)?),
            Rule::Plan9Mount => Request::Plan9Mount(typed(rule, input)?),
            Rule::Plan9Unmount => Request::Plan9Unmount(typed(rule, input)?),
            Rule::LoadFragment => Request::LoadFragment(typed(rule, input)?),
            Rule::ScratchMount => Request::ScratchMount(typed(rule, input)?),
            Rule::ScratchUnmount => Request::ScratchUnmount(typed(rule, input)?),
            Rule::GetProperties | Rule::DumpStacks | Rule::RuntimeLogging => {
                let _: NoInputOrNull = typed(rule, input)?;
                match rule {
                    Rule::GetProperties => Request::GetProperties,
                    Rule::DumpStacks => Request::DumpStacks,
                    _ => Request::RuntimeLogging,
                }
            }
        })
    }

    /// The request as the framework's `input` (hcsshim's field names). For
    /// `load_fragment`, the Rego is left out and `namespace` is given
    /// instead, as the guest does.
    pub fn to_input(&self) -> serde_json::Value {
        fn json<T: Serialize>(value: &T) -> serde_json::Value {
            // Serializing these plain structs cannot fail.
            serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
        }
        match self {
            Request::MountDevice(i) => json(i),
            Request::UnmountDevice(i)
            | Request::UnmountOverlay(i)
            | Request::Plan9Unmount(i)
            | Request::ScratchUnmount(i) => json(i),
            Request::MountOverlay(i) => json(i),
            Request::CreateContainer(i) => json(i),
            Request::ExecInContainer(i) => json(i),
            Request::ExecExternal(i) => json(i),
            Request::ShutdownContainer(i) => json(i),
            Request::SignalContainerProcess(i) => json(i),
            Request::Plan9Mount(i) => json(i),
            Request::ScratchMount(i) => json(i),
            Request::GetProperties | Request::DumpStacks | Request::RuntimeLogging => {
                serde_json::Value::Object(serde_json::Map::new())
            }
            Request::LoadFragment(i) => serde_json::json!({
                "issuer": i.issuer,
                "feed": i.feed,
                "namespace": i.namespace().unwrap_or_default(),
            }),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoInput {}

/// The input of rules that take none: `null` or `{}`.
struct NoInputOrNull;

impl<'de> Deserialize<'de> for NoInputOrNull {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<NoInput>::deserialize(d).map(|_| NoInputOrNull)
    }
}
