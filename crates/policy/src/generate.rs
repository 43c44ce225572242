//! From an ARM template and images to policies, following az confcom 1.4.3.
//!
//! Each rule below names the confcom function it reproduces (file and
//! function in `azext_confcom`), so a difference can be traced:
//!
//! | rule | confcom source |
//! |---|---|
//! | container groups: resources of type `containerGroups`/`containerGroupProfiles`; `initContainers` after `containers` | security_policy.py `load_policy_from_arm_template_str` |
//! | `Annotate-zero-sidecar` tag drops the infrastructure fragment; `--infrastructure-svn` sets its `minimum_svn` | same |
//! | probes: readiness, then liveness, exec only, `signals: []`; debug mode appends `/bin/sh`, `/bin/bash` | template_util.py `extract_probe`; config `DEBUG_MODE_SETTINGS` |
//! | env: `value` (may be empty) else `secureValue`; unset parameter → `NAME=.*` re2 with `--approve-wildcards`; `THIM_ENDPOINT` placeholder → `.*` | template_util.py `process_env_vars_from_template` |
//! | parameter/variable substitution in image, name, env, command, mounts, probes | container.py `parse_all_parameters_and_variables`; template_util.py `replace_params_and_vars` |
//! | volume mounts: type from the volume's key, source from the mount table, `ro` when readOnly is true | template_util.py `process_mounts`; container.py `_get_mounts_json`; internal_config.json `mount` |
//! | `configMap` adds an emptyDir mount at `/mnt/configmap` | template_util.py `process_configmap` |
//! | `/etc/resolv.conf` mount and TERM/fabric/identity/restart env rules for non-sidecar containers | container.py `UserContainerImage.from_json`, `_get_environment_rules` |
//! | privileged (bool or "true") → `allow_elevated` and the privileged capability set (also inheritable); add/drop; sorted, de-duplicated | container.py `extract_allow_elevated`, `extract_capabilities` |
//! | `runAsUser`/`runAsGroup` → id patterns | container.py `extract_user` |
//! | `allowPrivilegeEscalation: false` → `no_new_privileges` | container.py `extract_allow_privilege_escalation` |
//! | seccomp profile (base64) → SHA-256 of its normalized compact JSON | container.py `extract_seccomp_profile_sha256`; template_util.py `process_seccomp_policy` |
//! | working dir from the image, else `/`; command from Entrypoint+Cmd when the template has none; image env not set by the template; StopSignal → signals; image `User` → user/group id or name patterns | security_policy.py `populate_policy_content_for_all_images` |
//! | containers without layers are left out; the pause container is added unless every container is an ACI sidecar; `--disable-stdio` clears stdio everywhere | security_policy.py `_policy_serialization` |
//! | `--omit-id` drops `id`, and `name` when it equals the id | container.py `_populate_policy_json_elements` |

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::arm::{self, ArmEval, PathSeg, Scope, get, get_some};
use crate::error::{Document, Error, TemplateError};
use crate::image::ImageConfig;
use crate::model::{
    API_VERSION, Capabilities, Container, EnvRule, EnvStrategy, ExecProcess, FRAMEWORK_VERSION,
    Fragment, IdName, Mount, PRIVILEGED_CAPABILITIES, Policy, Switches, UNPRIVILEGED_CAPABILITIES,
    User,
};
use crate::pyjson::{self, Ordered, truthy};

/// The generator's switches, with confcom's flag names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GenerateOptions {
    /// `--debug-mode`: `/bin/sh` and `/bin/bash` exec, stack dumps and runtime logging.
    pub debug_mode: bool,
    /// `--disable-stdio`: no stdio access for any container.
    pub disable_stdio: bool,
    /// `--infrastructure-svn`: `minimum_svn` of the infrastructure fragment
    /// (default `"4"`).
    pub infrastructure_svn: Option<String>,
    /// `--approve-wildcards`: a parameter with no value becomes `NAME=.*`.
    pub approve_wildcards: bool,
    /// `--omit-id`: leave image references out.
    pub omit_id: bool,
    /// Write `secureValue` variables as `NAME=.+` (re2) instead of their
    /// value in clear text. Changes host_data relative to confcom.
    pub secure_env_as_pattern: bool,
    /// How ARM expressions are evaluated.
    pub arm_eval: ArmEval,
}

/// Something worth telling the user that does not stop generation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Warning {
    /// A `secureValue` is written into the policy in clear text.
    SecureValueInClear {
        /// Container name.
        container: String,
        /// Variable name.
        variable: String,
    },
    /// A string looks like an ARM expression that confcom leaves as text.
    UnevaluatedExpression {
        /// Container name.
        container: String,
        /// The text.
        text: String,
    },
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::SecureValueInClear {
                container,
                variable,
            } => write!(
                f,
                "container {container:?}: secureValue of {variable} is written into the policy in clear text (as az confcom does), and the policy goes into the template; --secure-env-as-pattern writes {variable}=.+ instead"
            ),
            Warning::UnevaluatedExpression { container, text } => write!(
                f,
                "container {container:?}: {text:?} is left as text, as az confcom does; Azure will deploy its evaluated value, which this policy does not allow (--arm-eval full evaluates it)"
            ),
        }
    }
}

/// The infrastructure fragment (internal_config.json `default_rego_fragments`).
const INFRA_FEED: &str = "mcr.microsoft.com/aci/aci-cc-infra-fragment";
const INFRA_ISSUER: &str =
    "did:x509:0:sha256:I__iuL25oXEVFdTP_aBLx_eT1RPHbCQ_ECBQfYZpt9s::eku:1.3.6.1.4.1.311.76.59.1.3";
const INFRA_SVN: &str = "4";

/// internal_config.json `sidecar_base_names`.
const SIDECARS: &[&str] = &[
    "mcr.microsoft.com/aci/msi-atlas-adapter",
    "mcr.microsoft.com/aci/atlas-mount-azure-file-volume",
    "mcr.microsoft.com/aci/atlas-mount-secrets-volume",
    "mcr.microsoft.com/aci/atlas-netstats",
    "mcr.microsoft.com/aci/atlas-mount-resolv-conf",
    "mcr.microsoft.com/aci/atlas-mount-gitrepo-volume",
    "k8s.gcr.io/pause",
    "mcr.microsoft.com/aci/sc-proxy",
    "mcr.microsoft.com/aci/vk-metrics-sidecar",
];

/// internal_config.json `mount.source_table`.
fn mount_source(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "azureFile" => "sandbox:///tmp/atlas/azureFileVolume/.+",
        "secret" => "sandbox:///tmp/atlas/secretsVolume/.+",
        "secretsSource" => "plan9://",
        "emptyDir" => "sandbox:///tmp/atlas/emptydir/.+",
        "resolvconf" => "sandbox:///tmp/atlas/resolvconf/.+",
        "gitRepo" => "sandbox:///tmp/atlas/gitRepoVolume/.+",
        _ => return None,
    })
}

/// config.py `SIGNALS`.
fn signal_number(name: &str) -> Option<i64> {
    Some(match name.to_ascii_uppercase().as_str() {
        "SIGHUP" => 1,
        "SIGINT" => 2,
        "SIGQUIT" => 3,
        "SIGILL" => 4,
        "SIGTRAP" => 5,
        "SIGABRT" | "SIGIOT" => 6,
        "SIGBUS" => 7,
        "SIGFPE" => 8,
        "SIGKILL" => 9,
        "SIGUSR1" => 10,
        "SIGSEGV" => 11,
        "SIGUSR2" => 12,
        "SIGPIPE" => 13,
        "SIGALRM" => 14,
        "SIGTERM" => 15,
        "SIGSTKFLT" => 16,
        "SIGCHLD" => 17,
        "SIGCONT" => 18,
        "SIGSTOP" => 19,
        "SIGTSTP" => 20,
        "SIGTTIN" => 21,
        "SIGTTOU" => 22,
        "SIGURG" => 23,
        "SIGXCPU" => 24,
        "SIGXFSZ" => 25,
        "SIGVTALRM" => 26,
        "SIGPROF" => 27,
        "SIGWINCH" => 28,
        "SIGIO" => 29,
        "SIGPWR" => 30,
        "SIGSYS" | "SIGUNUSED" => 31,
        _ => return None,
    })
}

/// Environment rules confcom adds to every user container
/// (internal_config.json `openGCS`, `fabric`, `managedIdentity`, `enableRestart`).
fn injected_env_rules() -> Vec<(String, EnvRule)> {
    let mut out = vec![(
        "TERM".to_owned(),
        EnvRule {
            pattern: "TERM=xterm".into(),
            required: false,
            strategy: EnvStrategy::String,
        },
    )];
    for name in [
        "(?i)(FABRIC)_.+",
        "HOSTNAME",
        "T(E)?MP",
        "FabricPackageFileName",
        "HostedServiceName",
        "IDENTITY_API_VERSION",
        "IDENTITY_HEADER",
        "IDENTITY_SERVER_THUMBPRINT",
        "azurecontainerinstance_restarted_by",
    ] {
        out.push((
            name.to_owned(),
            EnvRule {
                pattern: format!("{name}=.+"),
                required: false,
                strategy: EnvStrategy::Re2,
            },
        ));
    }
    out
}

/// The pause container (internal_config.json `default_containers`), whose
/// capabilities keep their config order.
pub(crate) fn pause_container() -> Container {
    let caps: Vec<String> = UNPRIVILEGED_CAPABILITIES
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    Container {
        id: None,
        name: Some("pause-container".into()),
        layers: vec!["16b514057a06ad665f92c02863aca074fd5976c755d26bff16365299169e8415".into()],
        command: Some(vec!["/pause".into()]),
        env_rules: vec![
            EnvRule {
                pattern: "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                required: true,
                strategy: EnvStrategy::String,
            },
            EnvRule {
                pattern: "TERM=xterm".into(),
                required: false,
                strategy: EnvStrategy::String,
            },
        ],
        working_dir: "/".into(),
        mounts: Vec::new(),
        exec_processes: Vec::new(),
        signals: Vec::new(),
        allow_elevated: false,
        allow_stdio_access: true,
        no_new_privileges: false,
        seccomp_profile_sha256: String::new(),
        user: User::default(),
        capabilities: Capabilities {
            ambient: Vec::new(),
            bounding: caps.clone(),
            effective: caps.clone(),
            inheritable: Vec::new(),
            permitted: caps,
        },
        extra: BTreeMap::new(),
    }
}

fn is_sidecar(image: &str) -> bool {
    let base = image.split(':').next().unwrap_or(image);
    SIDECARS.contains(&base)
}

/// An ARM template, kept as text so the policy can be written back into it
/// with every other byte unchanged.
#[derive(Debug, Clone)]
pub struct Template {
    text: String,
    value: Value,
    /// Indexes (in `resources`) of the container groups.
    groups: Vec<usize>,
    parameters: Option<Value>,
}

/// One container group of a template, ready for its images.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    /// The group's index among the template's container groups.
    pub index: usize,
    /// The group's `name`, as written.
    pub name: String,
    fragments: Vec<Fragment>,
    containers: Vec<ContainerSpec>,
    switches: Switches,
    disable_stdio: bool,
    omit_id: bool,
}

#[derive(Debug, Clone)]
struct ContainerSpec {
    image: String,
    name: String,
    sidecar: bool,
    env_rules: Vec<EnvRule>,
    command: Vec<String>,
    mounts: Vec<Mount>,
    exec_processes: Vec<ExecProcess>,
    allow_elevated: bool,
    allow_stdio_access: bool,
    no_new_privileges: bool,
    seccomp_profile_sha256: String,
    user: User,
    capabilities: Capabilities,
}

fn missing(path: impl Into<String>) -> Error {
    TemplateError::Missing { path: path.into() }.into()
}

fn wrong(path: impl Into<String>, expected: &'static str) -> Error {
    TemplateError::WrongType {
        path: path.into(),
        expected,
    }
    .into()
}

fn strings(v: &Value, path: &str) -> Result<Vec<String>, Error> {
    v.as_array()
        .ok_or_else(|| wrong(path, "a list of strings"))?
        .iter()
        .map(|s| {
            s.as_str()
                .map(str::to_owned)
                .ok_or_else(|| wrong(path, "a list of strings"))
        })
        .collect()
}

impl Template {
    /// Parses template text.
    pub fn parse(text: &str) -> Result<Template, Error> {
        let value = arm::parse_json(text, Document::Template)?;
        let resources = get(&value, "resources")
            .filter(|v| truthy(v))
            .ok_or_else(|| missing("resources"))?
            .as_array()
            .ok_or_else(|| wrong("resources", "a list"))?;
        let groups: Vec<usize> = resources
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                matches!(
                    r.get("type").and_then(Value::as_str),
                    Some(
                        "Microsoft.ContainerInstance/containerGroups"
                            | "Microsoft.ContainerInstance/containerGroupProfiles"
                    )
                )
            })
            .map(|(i, _)| i)
            .collect();
        if groups.is_empty() {
            return Err(TemplateError::NoContainerGroups.into());
        }
        Ok(Template {
            text: text.to_owned(),
            value,
            groups,
            parameters: None,
        })
    }

    /// Uses the values of an ARM parameters file (`az confcom -p`).
    pub fn with_parameters(mut self, parameters_text: &str) -> Result<Template, Error> {
        self.parameters = Some(arm::parse_json(parameters_text, Document::Parameters)?);
        Ok(self)
    }

    /// The template text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// How many container groups the template has.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    fn group(&self, index: usize) -> Option<&Value> {
        let resources = get(&self.value, "resources")?.as_array()?;
        resources.get(*self.groups.get(index)?)
    }

    /// The base64 `ccePolicy` of each container group, decoded (`None`
    /// where it is missing or empty).
    pub fn existing_policies(&self) -> Result<Vec<Option<String>>, Error> {
        (0..self.groups.len())
            .map(|i| {
                let group = self.group(i);
                let props = group.and_then(|g| get(g, "properties"));
                let cce = props
                    .and_then(|p| get(p, "confidentialComputeProperties"))
                    .and_then(|c| get(c, "ccePolicy"));
                match cce {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) if s.is_empty() => Ok(None),
                    Some(Value::String(s)) => {
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(s.trim())
                            .map_err(|_| TemplateError::BadCcePolicy { group: i })?;
                        let text = String::from_utf8(bytes)
                            .map_err(|_| TemplateError::BadCcePolicy { group: i })?;
                        Ok(Some(text))
                    }
                    Some(_) => Err(TemplateError::CcePolicyNotString { group: i }.into()),
                }
            })
            .collect()
    }

    /// The template text with each group's `ccePolicy` set to the base64 of
    /// the matching policy text. Only those string values change.
    pub fn with_policies(&self, policies: &[String]) -> Result<String, Error> {
        let mut text = self.text.clone();
        for (group, policy) in policies.iter().enumerate() {
            let Some(resource) = self.groups.get(group) else {
                break;
            };
            let b64 = base64::engine::general_purpose::STANDARD.encode(policy.as_bytes());
            let path = [
                PathSeg::Key("resources"),
                PathSeg::Index(*resource),
                PathSeg::Key("properties"),
                PathSeg::Key("confidentialComputeProperties"),
                PathSeg::Key("ccePolicy"),
            ];
            text = match arm::replace_string_at(&text, &path, &b64) {
                Ok(Some(t)) => t,
                Ok(None) => return Err(TemplateError::NoCcePolicyField { group }.into()),
                Err(arm::SpanError::NotString) => {
                    return Err(TemplateError::CcePolicyNotString { group }.into());
                }
                Err(arm::SpanError::Syntax) => {
                    // Cannot happen for text serde_json accepted; report it plainly.
                    return Err(TemplateError::NoCcePolicyField { group }.into());
                }
            };
        }
        Ok(text)
    }

    /// Reads every container group into a [`GroupSpec`], applying the
    /// template-only rules; warnings go to `warnings`.
    pub fn groups(
        &self,
        options: &GenerateOptions,
        warnings: &mut Vec<Warning>,
    ) -> Result<Vec<GroupSpec>, Error> {
        let scope = Scope::new(&self.value, self.parameters.as_ref())?;
        (0..self.groups.len())
            .map(|i| self.group_spec(i, &scope, options, warnings))
            .collect()
    }

    fn group_spec(
        &self,
        index: usize,
        scope: &Scope,
        options: &GenerateOptions,
        warnings: &mut Vec<Warning>,
    ) -> Result<GroupSpec, Error> {
        let resource = self.group(index).ok_or_else(|| missing("resources"))?;
        let gpath = format!(
            "resources[{}]",
            self.groups.get(index).copied().unwrap_or(0)
        );
        let name = get(resource, "name")
            .map(pyjson::python_str)
            .unwrap_or_default();
        let mut exclude_fragments = false;
        if let Some(tags) = get(resource, "tags").filter(|t| truthy(t)) {
            exclude_fragments = match get(tags, "Annotate-zero-sidecar") {
                Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
                Some(v) => truthy(v),
                None => false,
            };
        }
        let props = get(resource, "properties")
            .filter(|p| p.is_object())
            .ok_or_else(|| missing(format!("{gpath}.properties")))?;
        let mut containers: Vec<Value> = get(props, "containers")
            .filter(|c| truthy(c))
            .ok_or_else(|| missing(format!("{gpath}.properties.containers")))?
            .as_array()
            .ok_or_else(|| wrong(format!("{gpath}.properties.containers"), "a list"))?
            .clone();
        if let Some(init) = get(props, "initContainers").filter(|c| truthy(c)) {
            containers.extend(
                init.as_array()
                    .ok_or_else(|| wrong(format!("{gpath}.properties.initContainers"), "a list"))?
                    .iter()
                    .cloned(),
            );
        }
        let volumes: Vec<Value> = match get(props, "volumes").filter(|v| truthy(v)) {
            None => Vec::new(),
            Some(Value::Array(v)) => v.clone(),
            Some(_) => return Err(wrong(format!("{gpath}.properties.volumes"), "a list")),
        };
        let fragments = if exclude_fragments {
            Vec::new()
        } else {
            vec![Fragment {
                feed: INFRA_FEED.into(),
                includes: vec!["containers".into(), "fragments".into()],
                issuer: INFRA_ISSUER.into(),
                minimum_svn: options
                    .infrastructure_svn
                    .clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| INFRA_SVN.into()),
                extra: BTreeMap::new(),
            }]
        };
        let specs = containers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                container_spec(
                    c,
                    &format!("{gpath}.properties.containers[{i}]"),
                    &volumes,
                    scope,
                    options,
                    warnings,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(first) = specs.first() {
            if first.sidecar {
                return Err(TemplateError::SidecarFirst {
                    image: first.image.clone(),
                }
                .into());
            }
        }
        let switches = if options.debug_mode {
            Switches {
                dump_stacks: true,
                runtime_logging: true,
                ..Switches::default()
            }
        } else {
            Switches::default()
        };
        Ok(GroupSpec {
            index,
            name,
            fragments,
            containers: specs,
            switches,
            disable_stdio: options.disable_stdio,
            omit_id: options.omit_id,
        })
    }
}

fn container_spec(
    container: &Value,
    path: &str,
    volumes: &[Value],
    scope: &Scope,
    options: &GenerateOptions,
    warnings: &mut Vec<Warning>,
) -> Result<ContainerSpec, Error> {
    let mode = options.arm_eval;
    let props = get(container, "properties")
        .filter(|p| p.is_object())
        .ok_or_else(|| missing(format!("{path}.properties")))?;
    let raw_image = get(props, "image")
        .filter(|v| truthy(v))
        .ok_or_else(|| missing(format!("{path}.properties.image")))?
        .as_str()
        .ok_or_else(|| wrong(format!("{path}.properties.image"), "a string"))?;
    let raw_name = get(container, "name")
        .filter(|v| truthy(v))
        .ok_or_else(|| missing(format!("{path}.name")))?
        .as_str()
        .ok_or_else(|| wrong(format!("{path}.name"), "a string"))?;
    let subst = |s: &str, what: &str| -> Result<String, Error> {
        match scope.eval(mode, s)? {
            Some(v) => Ok(v),
            None => Err(TemplateError::WildcardNotApproved {
                name: what.to_owned(),
            }
            .into()),
        }
    };
    let image = subst(raw_image, "image")?;
    let name = subst(raw_name, "name")?;
    let sidecar = is_sidecar(&image);

    // Probes (readiness, then liveness), then debug-mode shells.
    let mut exec_processes = Vec::new();
    for probe in ["readinessProbe", "livenessProbe"] {
        let Some(probe_v) = get(props, probe).filter(|v| truthy(v)) else {
            continue;
        };
        let Some(exec) = get(probe_v, "exec").filter(|v| truthy(v)) else {
            continue;
        };
        let ppath = format!("{path}.properties.{probe}.exec.command");
        let command = get(exec, "command")
            .filter(|v| truthy(v))
            .ok_or_else(|| missing(ppath.clone()))?;
        let command = strings(command, &ppath)?
            .iter()
            .map(|s| subst(s, "probe command"))
            .collect::<Result<Vec<_>, _>>()?;
        exec_processes.push(ExecProcess {
            command,
            signals: Vec::new(),
        });
    }
    if options.debug_mode {
        for shell in ["/bin/sh", "/bin/bash"] {
            exec_processes.push(ExecProcess {
                command: vec![shell.into()],
                signals: Vec::new(),
            });
        }
    }

    // Environment variables.
    let mut env_rules = Vec::new();
    let epath = format!("{path}.properties.environmentVariables");
    let envs = match get(props, "environmentVariables").filter(|v| truthy(v)) {
        None => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(wrong(epath, "a list")),
    };
    for (i, env) in envs.iter().enumerate() {
        let var_name = get(env, "name")
            .filter(|v| truthy(v))
            .ok_or_else(|| missing(format!("{epath}[{i}].name")))?;
        let var_name = var_name
            .as_str()
            .ok_or_else(|| wrong(format!("{epath}[{i}].name"), "a string"))?;
        let (value, secure) = match get_some(env, "value") {
            Some(v) => (v, false),
            None => (
                get_some(env, "secureValue")
                    .ok_or_else(|| missing(format!("{epath}[{i}].value")))?,
                true,
            ),
        };
        let value = value
            .as_str()
            .ok_or_else(|| wrong(format!("{epath}[{i}].value"), "a string"))?;
        let wildcard = |rules: &mut Vec<EnvRule>| -> Result<(), Error> {
            if !options.approve_wildcards {
                return Err(TemplateError::WildcardNotApproved {
                    name: var_name.to_owned(),
                }
                .into());
            }
            rules.push(EnvRule {
                pattern: subst(&format!("{var_name}=.*"), var_name)?,
                required: false,
                strategy: EnvStrategy::Re2,
            });
            Ok(())
        };
        if secure && options.secure_env_as_pattern {
            env_rules.push(EnvRule {
                pattern: format!("{}=.+", subst(var_name, var_name)?),
                required: false,
                strategy: EnvStrategy::Re2,
            });
            continue;
        }
        let unset = match mode {
            ArmEval::Confcom => scope.confcom_is_unset_reference(value)?,
            _ => scope.eval(mode, value)?.is_none(),
        };
        if unset {
            wildcard(&mut env_rules)?;
            continue;
        }
        if var_name == "THIM_ENDPOINT" && value == "===CONFIDENTIAL.THIM.ENDPOINT===" {
            env_rules.push(EnvRule {
                pattern: "THIM_ENDPOINT=.*".into(),
                required: false,
                strategy: EnvStrategy::Re2,
            });
            continue;
        }
        let pattern = match mode {
            ArmEval::Confcom => scope.confcom_replace(&format!("{var_name}={value}"))?,
            _ => format!("{}={}", subst(var_name, var_name)?, subst(value, var_name)?),
        };
        if mode == ArmEval::Confcom && looks_like_expression(value) {
            warnings.push(Warning::UnevaluatedExpression {
                container: name.clone(),
                text: value.to_owned(),
            });
        }
        if secure {
            warnings.push(Warning::SecureValueInClear {
                container: name.clone(),
                variable: var_name.to_owned(),
            });
        }
        env_rules.push(EnvRule {
            pattern,
            required: false,
            strategy: EnvStrategy::String,
        });
    }

    // Command.
    let cpath = format!("{path}.properties.command");
    let command = match get(props, "command").filter(|v| truthy(v)) {
        None => Vec::new(),
        Some(v) => strings(v, &cpath)?
            .iter()
            .map(|s| subst(s, "command"))
            .collect::<Result<_, _>>()?,
    };

    // Mounts.
    let mut mounts = Vec::new();
    let mpath = format!("{path}.properties.volumeMounts");
    let volume_mounts = match get(props, "volumeMounts").filter(|v| truthy(v)) {
        None => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(wrong(mpath, "a list")),
    };
    for (i, m) in volume_mounts.iter().enumerate() {
        let mount_name = get(m, "name").cloned().unwrap_or(Value::Null);
        let volume = volumes
            .iter()
            .find(|v| get(v, "name").cloned().unwrap_or(Value::Null) == mount_name)
            .ok_or_else(|| TemplateError::UnknownVolume {
                name: pyjson::python_str(&mount_name),
            })?;
        let kind = volume
            .as_object()
            .and_then(|o| o.keys().rfind(|k| mount_source(k).is_some()))
            .cloned();
        let source = kind.as_deref().and_then(mount_source).ok_or_else(|| {
            TemplateError::UnsupportedVolume {
                name: pyjson::python_str(&mount_name),
            }
        })?;
        let dest = get(m, "mountPath")
            .filter(|v| truthy(v))
            .ok_or_else(|| missing(format!("{mpath}[{i}].mountPath")))?
            .as_str()
            .ok_or_else(|| wrong(format!("{mpath}[{i}].mountPath"), "a string"))?;
        let read_only = match get(m, "readOnly") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(wrong(format!("{mpath}[{i}].readOnly"), "true or false")),
        };
        mounts.push(bind_mount(source, &subst(dest, "mountPath")?, read_only));
    }
    if get(props, "configMap").is_some_and(truthy) {
        mounts.push(bind_mount(
            "sandbox:///tmp/atlas/emptydir/.+",
            "/mnt/configmap",
            false,
        ));
    }
    if !sidecar {
        mounts.push(bind_mount(
            "sandbox:///tmp/atlas/resolvconf/.+",
            "/etc/resolv.conf",
            false,
        ));
    }

    // Security context.
    let sc = get(props, "securityContext").filter(|v| truthy(v));
    let sc_path = format!("{path}.properties.securityContext");
    let allow_elevated = match sc.and_then(|s| get(s, "privileged")) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        Some(v) if !truthy(v) => false,
        Some(_) => {
            return Err(wrong(
                format!("{sc_path}.privileged"),
                "a boolean or string",
            ));
        }
    };
    let capabilities = capabilities(sc, allow_elevated, &sc_path)?;
    let mut user = User::default();
    for (key, group) in [("runAsUser", false), ("runAsGroup", true)] {
        match sc.and_then(|s| get(s, key)) {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) if n.as_u64().is_some() => {
                let id = IdName {
                    pattern: n.to_string(),
                    strategy: "id".into(),
                };
                if group {
                    user.group_idnames = vec![id];
                } else {
                    user.user_idname = id;
                }
            }
            Some(_) => return Err(wrong(format!("{sc_path}.{key}"), "a non-negative integer")),
        }
    }
    let no_new_privileges = match sc.and_then(|s| get(s, "allowPrivilegeEscalation")) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => !b,
        Some(Value::String(s)) => !s.eq_ignore_ascii_case("true"),
        Some(_) => {
            return Err(wrong(
                format!("{sc_path}.allowPrivilegeEscalation"),
                "a boolean or string",
            ));
        }
    };
    let seccomp_profile_sha256 = match sc.and_then(|s| get(s, "seccompProfile")) {
        Some(Value::String(b64)) => {
            seccomp_hash(b64).ok_or_else(|| TemplateError::BadSeccompProfile {
                container: name.clone(),
            })?
        }
        Some(Value::Object(o)) if o.get("type").and_then(Value::as_str) == Some("Localhost") => {
            return Err(TemplateError::LocalhostSeccomp {
                container: name.clone(),
            }
            .into());
        }
        _ => String::new(),
    };

    Ok(ContainerSpec {
        image,
        name,
        sidecar,
        env_rules,
        command,
        mounts,
        exec_processes,
        allow_elevated,
        allow_stdio_access: !options.disable_stdio,
        no_new_privileges,
        seccomp_profile_sha256,
        user,
        capabilities,
    })
}

fn looks_like_expression(s: &str) -> bool {
    s.starts_with('[') && s.ends_with(']') && !s.starts_with("[[")
}

fn bind_mount(source: &str, destination: &str, read_only: bool) -> Mount {
    Mount {
        destination: destination.into(),
        options: vec![
            "rbind".into(),
            "rshared".into(),
            if read_only { "ro" } else { "rw" }.into(),
        ],
        source: source.into(),
        kind: "bind".into(),
    }
}

/// container.py `extract_capabilities`.
fn capabilities(sc: Option<&Value>, privileged: bool, path: &str) -> Result<Capabilities, Error> {
    let base: Vec<String> = if privileged {
        PRIVILEGED_CAPABILITIES.as_slice()
    } else {
        UNPRIVILEGED_CAPABILITIES.as_slice()
    }
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut sets: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    sets.insert("ambient", Vec::new());
    sets.insert("bounding", base.clone());
    sets.insert("effective", base.clone());
    sets.insert("permitted", base.clone());
    sets.insert("inheritable", if privileged { base } else { Vec::new() });
    let added: &[&str] = if privileged {
        &["bounding", "effective", "permitted", "inheritable"]
    } else {
        &["bounding", "effective", "permitted"]
    };
    if let Some(caps) = sc
        .and_then(|s| get(s, "capabilities"))
        .filter(|c| truthy(c))
    {
        if !caps.is_object() {
            return Err(wrong(format!("{path}.capabilities"), "an object"));
        }
        if let Some(add) = get(caps, "add").filter(|a| truthy(a)) {
            let add = strings(add, &format!("{path}.capabilities.add"))?;
            for key in added {
                if let Some(set) = sets.get_mut(key) {
                    set.extend(add.iter().cloned());
                }
            }
        }
        if let Some(drop) = get(caps, "drop").filter(|d| truthy(d)) {
            let drop = strings(drop, &format!("{path}.capabilities.drop"))?;
            for set in sets.values_mut() {
                set.retain(|c| !drop.contains(c));
            }
        }
    }
    let mut take = |k: &str| {
        let mut v = sets.remove(k).unwrap_or_default();
        v.sort();
        v.dedup();
        v
    };
    Ok(Capabilities {
        ambient: take("ambient"),
        bounding: take("bounding"),
        effective: take("effective"),
        inheritable: take("inheritable"),
        permitted: take("permitted"),
    })
}

/// template_util.py `process_seccomp_policy`, then
/// `json.dumps(separators=(',', ':'))` (key order kept) and SHA-256.
fn seccomp_hash(b64: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    let obj = v.as_object()?;
    let pick = |obj: &serde_json::Map<String, Value>, keys: &[&str], defaults: &[(&str, Value)]| {
        let mut fields = Vec::new();
        for k in keys {
            let val = obj.get(*k).cloned().or_else(|| {
                defaults
                    .iter()
                    .find(|(d, _)| d == k)
                    .map(|(_, v)| v.clone())
            });
            if let Some(val) = val {
                fields.push(((*k).to_owned(), val));
            }
        }
        fields
    };
    let top = pick(
        obj,
        &[
            "defaultAction",
            "defaultErrnoRet",
            "architectures",
            "flags",
            "listenerPath",
            "listenerMetadata",
            "syscalls",
        ],
        &[("defaultAction", Value::String(String::new()))],
    );
    let mut out = Vec::new();
    for (k, val) in top {
        if k == "syscalls" {
            let list = val.as_array()?;
            let mut syscalls = Vec::new();
            for s in list {
                let so = s.as_object()?;
                let fields = pick(
                    so,
                    &["names", "action", "errnoRet", "args"],
                    &[
                        ("names", Value::Array(Vec::new())),
                        ("action", Value::String(String::new())),
                    ],
                );
                let mut sc = Vec::new();
                for (sk, sv) in fields {
                    if sk == "args" {
                        let mut args = Vec::new();
                        for a in sv.as_array()? {
                            let ao = a.as_object()?;
                            let af = pick(
                                ao,
                                &["index", "value", "valueTwo", "op"],
                                &[
                                    ("value", Value::from(0)),
                                    ("op", Value::String(String::new())),
                                    ("index", Value::from(0)),
                                ],
                            );
                            args.push(Ordered::Object(
                                af.into_iter()
                                    .map(|(k, v)| (k, Ordered::Plain(v)))
                                    .collect(),
                            ));
                        }
                        sc.push((sk, Ordered::List(args)));
                    } else {
                        sc.push((sk, Ordered::Plain(sv)));
                    }
                }
                syscalls.push(Ordered::Object(sc));
            }
            out.push((k, Ordered::List(syscalls)));
        } else {
            out.push((k, Ordered::Plain(val)));
        }
    }
    let text = pyjson::dumps_ordered(&Ordered::Object(out));
    Some(hex::encode(Sha256::digest(text.as_bytes())))
}

/// What a policy needs from one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFacts {
    /// The image config.
    pub config: ImageConfig,
    /// Layer root hashes, base first.
    pub layers: Vec<String>,
}

impl GroupSpec {
    /// Image references this group needs, in order, without repeats.
    pub fn images(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for c in &self.containers {
            if !out.contains(&c.image) {
                out.push(c.image.clone());
            }
        }
        out
    }

    /// The policy, given each image's config and layer hashes (looked up
    /// by the reference [`GroupSpec::images`] returned).
    pub fn policy(&self, images: &dyn Fn(&str) -> Option<ImageFacts>) -> Result<Policy, Error> {
        let mut containers = Vec::new();
        for spec in &self.containers {
            let facts = images(&spec.image).ok_or_else(|| TemplateError::NoImageSource {
                reference: spec.image.clone(),
            })?;
            if let Some(c) = self.container(spec, &facts)? {
                containers.push(c);
            }
        }
        let all_sidecars = self.containers.iter().all(|c| c.sidecar);
        if !all_sidecars || self.containers.is_empty() {
            containers.push(pause_container());
            if self.disable_stdio {
                for c in &mut containers {
                    c.allow_stdio_access = false;
                }
            }
        }
        Ok(Policy {
            api_version: API_VERSION.into(),
            framework_version: FRAMEWORK_VERSION.into(),
            fragments: self.fragments.clone(),
            containers,
            switches: self.switches,
        })
    }

    fn container(
        &self,
        spec: &ContainerSpec,
        facts: &ImageFacts,
    ) -> Result<Option<Container>, Error> {
        if facts.layers.is_empty() {
            // confcom drops containers whose image yielded no layers.
            return Ok(None);
        }
        let cfg = &facts.config;
        let working_dir = cfg
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into());
        let mut env_rules = spec.env_rules.clone();
        let mut command = Some(spec.command.clone());
        let mut signals = Vec::new();
        let mut user = spec.user.clone();
        if !spec.sidecar {
            if spec.command.is_empty() {
                let entry = cfg.entrypoint.clone().filter(|e| !e.is_empty());
                let cmd = cfg.cmd.clone();
                command = match (entry, cmd) {
                    (Some(mut e), Some(c)) if !c.is_empty() => {
                        e.extend(c);
                        Some(e)
                    }
                    (Some(e), _) => Some(e),
                    (None, c) => c,
                };
            }
            let names: Vec<String> = spec
                .env_rules
                .iter()
                .map(|r| r.pattern.split('=').next().unwrap_or("").to_owned())
                .collect();
            for entry in &cfg.env {
                let (n, _) = entry
                    .split_once('=')
                    .ok_or_else(|| TemplateError::BadImageEnv {
                        image: spec.image.clone(),
                        entry: entry.clone(),
                    })?;
                if !names.iter().any(|x| x == n) {
                    env_rules.push(EnvRule {
                        pattern: entry.clone(),
                        required: false,
                        strategy: EnvStrategy::String,
                    });
                }
            }
            if let Some(sig) = cfg.stop_signal.as_ref().filter(|s| !s.is_empty()) {
                signals = vec![match signal_number(sig) {
                    Some(n) => Value::from(n),
                    None => Value::String(sig.clone()),
                }];
            }
            if user == User::default() {
                if let Some(u) = cfg.user.as_ref().filter(|u| !u.is_empty()) {
                    let (uname, group) = match u.split_once(':') {
                        Some((a, b)) => (a, Some(b)),
                        None => (u.as_str(), None),
                    };
                    user.user_idname = IdName {
                        pattern: uname.into(),
                        strategy: id_or_name(uname).into(),
                    };
                    if let Some(g) = group {
                        user.group_idnames = vec![IdName {
                            pattern: g.into(),
                            strategy: id_or_name(g).into(),
                        }];
                    }
                }
            }
            let all_names: Vec<String> = env_rules
                .iter()
                .map(|r| r.pattern.split('=').next().unwrap_or("").to_owned())
                .collect();
            for (n, rule) in injected_env_rules() {
                if !all_names.contains(&n) {
                    env_rules.push(rule);
                }
            }
        } else if spec.command.is_empty() {
            command = Some(Vec::new());
        }
        let mut name = Some(spec.name.clone());
        let id = if self.omit_id {
            if spec.name == spec.image {
                name = None;
            }
            None
        } else {
            Some(spec.image.clone())
        };
        Ok(Some(Container {
            id,
            name,
            layers: facts.layers.clone(),
            command,
            env_rules,
            working_dir,
            mounts: spec.mounts.clone(),
            exec_processes: spec.exec_processes.clone(),
            signals,
            allow_elevated: spec.allow_elevated,
            allow_stdio_access: spec.allow_stdio_access,
            no_new_privileges: spec.no_new_privileges,
            seccomp_profile_sha256: spec.seccomp_profile_sha256.clone(),
            user,
            capabilities: spec.capabilities.clone(),
            extra: BTreeMap::new(),
        }))
    }
}

/// Python's `str.isdigit()` for ASCII: non-empty, all digits.
fn id_or_name(s: &str) -> &'static str {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
        "id"
    } else {
        "name"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_privileged_and_add_drop() {
        let sc = serde_json::json!({"capabilities": {"add": ["CAP_SYS_ADMIN", "CAP_CHOWN"], "drop": ["CAP_KILL"]}});
        let c = capabilities(Some(&sc), false, "p").unwrap();
        assert!(c.bounding.contains(&"CAP_SYS_ADMIN".to_owned()));
        assert!(!c.bounding.contains(&"CAP_KILL".to_owned()));
        assert!(c.inheritable.is_empty());
        let mut sorted = c.bounding.clone();
        sorted.sort();
        assert_eq!(c.bounding, sorted);
        let p = capabilities(None, true, "p").unwrap();
        assert_eq!(p.inheritable.len(), PRIVILEGED_CAPABILITIES.len());
        assert!(p.ambient.is_empty());
    }

    #[test]
    fn seccomp_normalization() {
        // {"syscalls":[{"action":"SCMP_ACT_ALLOW","names":["read"],"x":1}],"defaultAction":"SCMP_ACT_ERRNO","junk":true}
        let profile = r#"{"syscalls":[{"action":"SCMP_ACT_ALLOW","names":["read"],"x":1,"args":[{"op":"SCMP_CMP_EQ","index":1}]}],"defaultAction":"SCMP_ACT_ERRNO","junk":true}"#;
        let b64 = base64::engine::general_purpose::STANDARD.encode(profile);
        let want = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":1,"value":0,"op":"SCMP_CMP_EQ"}]}]}"#;
        assert_eq!(
            seccomp_hash(&b64).unwrap(),
            hex::encode(Sha256::digest(want.as_bytes()))
        );
        assert!(seccomp_hash("!!").is_none());
    }

    #[test]
    fn user_strategies() {
        assert_eq!(id_or_name("1000"), "id");
        assert_eq!(id_or_name("app"), "name");
        assert_eq!(id_or_name(""), "name");
    }
}
