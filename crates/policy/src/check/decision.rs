//! What the policy decided, and why.

use serde::Serialize;

use super::request::{Capabilities, Rule};

/// The policy's answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Decision {
    /// The rule that was asked.
    pub rule: Rule,
    /// Whether the guest goes ahead.
    pub allowed: bool,
    /// Why not (empty when allowed). The framework's reasons, or a single
    /// [`Reason::InvalidPolicy`] when the policy could not decide at all.
    pub reasons: Vec<Reason>,
    /// The environment variables the guest passes on (the others are
    /// dropped), for `create_container`, `exec_in_container` and
    /// `exec_external`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env_list: Option<Vec<String>>,
    /// The capabilities the guest grants, for `create_container` and
    /// `exec_in_container`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caps_list: Option<Capabilities>,
    /// Whether the container (or external process) gets stdio.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_stdio_access: Option<bool>,
    /// The rule's whole result, the guest's defaults applied, without
    /// `metadata` (see [`Decision::metadata`]).
    pub result: serde_json::Map<String, serde_json::Value>,
    /// The state changes the rule asked for, in order. They were applied
    /// (up to the first one that failed, as the guest does).
    pub metadata: Vec<MetadataOp>,
}

impl Decision {
    pub(crate) fn deny(rule: Rule, reasons: Vec<Reason>) -> Decision {
        Decision {
            rule,
            allowed: false,
            reasons,
            env_list: None,
            caps_list: None,
            allow_stdio_access: None,
            result: serde_json::Map::new(),
            metadata: Vec::new(),
        }
    }
}

/// A change to the framework's state, as a rule returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetadataOp {
    /// The store, e.g. `devices` or `matches`.
    pub name: String,
    /// What happens to the key.
    pub action: MetadataAction,
    /// The key in the store.
    pub key: String,
    /// The new value (absent for [`MetadataAction::Remove`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
}

/// See [`MetadataOp::action`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetadataAction {
    /// Set a key that must not exist yet.
    Add,
    /// Set a key, whether it exists or not.
    Update,
    /// Delete a key.
    Remove,
}

/// Why a request was denied.
///
/// The variants are the framework's reasons; [`std::fmt::Display`] gives
/// the framework's own words, so output stays comparable with a guest's
/// decision log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Reason {
    /// No container of the policy has a layer with this hash.
    DeviceHashNotFound,
    /// Something is already mounted at the target.
    DeviceAlreadyMounted,
    /// Nothing is mounted at the path to unmount.
    NoDeviceToUnmount,
    /// The container already has a root file system.
    OverlayAlreadyMounted,
    /// No container of the policy has these layers in this order.
    NoMatchingContainersForOverlay,
    /// No overlay is mounted at the path to unmount.
    NoOverlayToUnmount,
    /// The container id was used before.
    ContainerAlreadyStarted,
    /// The container does not run.
    ContainerNotStarted,
    /// The container asks to be privileged, and no candidate allows it.
    PrivilegeEscalation,
    /// No candidate has this command.
    InvalidCommand,
    /// No candidate has this working directory.
    InvalidWorkingDirectory,
    /// These variables (by name) match no rule, and the policy does not
    /// let the guest drop them.
    InvalidEnvList(Vec<String>),
    /// A required variable is missing.
    MissingRequiredEnv,
    /// The variables fit no candidate's rules otherwise: none are given
    /// (every rule needs one), or candidates would keep different ones.
    EnvRulesUnmet,
    /// These mounts (by destination) match no allowed mount.
    InvalidMountList(Vec<String>),
    /// No candidate has this `no_new_privileges` setting.
    InvalidNoNewPrivileges,
    /// No candidate allows this user, group or umask.
    InvalidUser,
    /// No candidate has this seccomp profile.
    InvalidSeccomp,
    /// No candidate has these capabilities.
    CapabilitiesMismatch,
    /// Candidates differ in the capabilities they would keep.
    AmbiguousCapabilities,
    /// Candidates differ in stdio access.
    AmbiguousStdio,
    /// External process candidates differ in stdio access.
    AmbiguousExternalStdio,
    /// No candidate lets the target process receive this signal.
    SignalNotAllowed,
    /// The policy forbids an unencrypted scratch disk.
    UnencryptedScratch,
    /// A scratch disk is already mounted at the target.
    ScratchAlreadyMounted,
    /// No scratch disk is mounted at the path to unmount.
    NoScratchToUnmount,
    /// The policy trusts no fragment from this issuer.
    InvalidFragmentIssuer,
    /// The policy trusts no fragment from this feed of the issuer.
    InvalidFragmentFeed,
    /// The fragment's SVN is below the policy's minimum.
    FragmentSvnTooLow,
    /// One SVN is a number, the other a semantic version.
    FragmentSvnKindMismatch,
    /// The policy's switch for this request is off (the switch's name).
    SwitchOff(String),
    /// The policy does not define the rule, its api version predates it,
    /// and the guest's default for it denies.
    DefaultDenied(super::request::Rule),
    /// The policy denied and gave no reason (hcsshim's framework gives none
    /// for some denials, e.g. a switch that is off).
    Unexplained,
    /// Another reason of the framework, in its words.
    Other(String),
    /// The policy could not decide (it failed to evaluate, or its result
    /// is malformed); the guest denies. The error, in words.
    InvalidPolicy(String),
}

impl Reason {
    /// The reason the framework gave as `message`.
    pub fn from_message(message: &str) -> Reason {
        let list = |rest: &str| rest.split(',').map(str::to_owned).collect();
        if let Some(rest) = message.strip_prefix("invalid env list: ") {
            return Reason::InvalidEnvList(list(rest));
        }
        if let Some(rest) = message.strip_prefix("invalid mount list: ") {
            return Reason::InvalidMountList(list(rest));
        }
        for (switch, text) in SWITCHES {
            if message == text {
                return Reason::SwitchOff(switch.to_owned());
            }
        }
        for (reason, text) in FIXED {
            if message == *text {
                return reason.clone();
            }
        }
        Reason::Other(message.to_owned())
    }
}

const SWITCHES: [(&str, &str); 3] = [
    (
        "allow_properties_access",
        "properties access not allowed (allow_properties_access)",
    ),
    (
        "allow_dump_stacks",
        "dumping stacks not allowed (allow_dump_stacks)",
    ),
    (
        "allow_runtime_logging",
        "runtime logging not allowed (allow_runtime_logging)",
    ),
];

const FIXED: &[(Reason, &str)] = &[
    (Reason::DeviceHashNotFound, "deviceHash not found"),
    (
        Reason::DeviceAlreadyMounted,
        "device already mounted at path",
    ),
    (Reason::NoDeviceToUnmount, "no device at path to unmount"),
    (
        Reason::OverlayAlreadyMounted,
        "overlay has already been mounted",
    ),
    (
        Reason::NoMatchingContainersForOverlay,
        "no matching containers for overlay",
    ),
    (Reason::NoOverlayToUnmount, "no overlay at path to unmount"),
    (Reason::ContainerAlreadyStarted, "container already started"),
    (Reason::ContainerNotStarted, "container not started"),
    (
        Reason::PrivilegeEscalation,
        "privileged escalation not allowed",
    ),
    (Reason::InvalidCommand, "invalid command"),
    (Reason::InvalidWorkingDirectory, "invalid working directory"),
    (
        Reason::MissingRequiredEnv,
        "missing required environment variable",
    ),
    (
        Reason::EnvRulesUnmet,
        "environment variables fit no candidate's env_rules",
    ),
    (Reason::InvalidNoNewPrivileges, "invalid noNewPrivileges"),
    (Reason::InvalidUser, "invalid user"),
    (Reason::InvalidSeccomp, "invalid seccomp"),
    (Reason::CapabilitiesMismatch, "capabilities don't match"),
    // The misspelling is the guest's own.
    (
        Reason::AmbiguousCapabilities,
        "containers only distinguishable by capabilties",
    ),
    (
        Reason::AmbiguousStdio,
        "containers only distinguishable by allow_stdio_access",
    ),
    (
        Reason::AmbiguousExternalStdio,
        "external processes only distinguishable by allow_stdio_access",
    ),
    (
        Reason::SignalNotAllowed,
        "target isn't allowed to receive the signal",
    ),
    (
        Reason::UnencryptedScratch,
        "unencrypted scratch not allowed",
    ),
    (
        Reason::ScratchAlreadyMounted,
        "scratch already mounted at path",
    ),
    (Reason::NoScratchToUnmount, "no scratch at path to unmount"),
    (Reason::InvalidFragmentIssuer, "invalid fragment issuer"),
    (Reason::InvalidFragmentFeed, "invalid fragment feed"),
    (
        Reason::FragmentSvnTooLow,
        "fragment svn is below the specified minimum",
    ),
    (
        Reason::FragmentSvnKindMismatch,
        "fragment svn and the specified minimum are different types",
    ),
];

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::InvalidEnvList(names) => write!(f, "invalid env list: {}", names.join(",")),
            Reason::InvalidMountList(paths) => {
                write!(f, "invalid mount list: {}", paths.join(","))
            }
            Reason::SwitchOff(switch) => {
                let text = SWITCHES
                    .iter()
                    .find(|(s, _)| s == switch)
                    .map_or("not allowed by the policy", |(_, t)| t);
                f.write_str(text)
            }
            Reason::DefaultDenied(rule) => write!(
                f,
                "the policy does not define {rule} and the guest's default for its api version denies"
            ),
            Reason::Unexplained => f.write_str("the policy gave no reason"),
            Reason::Other(text) => f.write_str(text),
            Reason::InvalidPolicy(error) => write!(f, "invalid policy: {error}"),
            fixed => {
                let text = FIXED
                    .iter()
                    .find(|(r, _)| r == fixed)
                    .map_or("denied", |(_, t)| t);
                f.write_str(text)
            }
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
