//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    // --- generation (branch `policy`) ---
    /// A document is not valid JSON.
    #[error("{what} is not valid JSON")]
    Json {
        /// Which document.
        what: Document,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// The ARM template cannot be turned into a policy.
    #[error("template: {0}")]
    Template(#[from] TemplateError),
    /// Text is not a policy in the shape `az confcom` writes.
    #[error("policy: {0}")]
    Policy(#[from] PolicyError),
    /// An image archive, layout or manifest is unusable.
    #[error("image {reference}: {kind}")]
    Image {
        /// The image reference (or file) concerned.
        reference: String,
        /// What is wrong.
        #[source]
        kind: ImageError,
    },
    /// Converting or hashing one layer failed.
    #[error("layer {digest}: cannot convert it to ext4")]
    Layer {
        /// The layer's digest.
        digest: String,
        /// The converter's complaint.
        #[source]
        source: confsum_ext4::Error,
    },
    /// Building the dm-verity tree of a layer failed.
    #[error("layer {digest}: cannot hash it")]
    Verity {
        /// The layer's digest.
        digest: String,
        /// The hasher's complaint.
        #[source]
        source: confsum_verity::Error,
    },
    /// Talking to a registry failed.
    #[cfg(feature = "registry")]
    #[error("registry {reference}: {source}")]
    Registry {
        /// The image reference.
        reference: String,
        /// The client's complaint.
        #[source]
        source: Box<oci_client::errors::OciDistributionError>,
    },
    /// The Docker credentials file could not be used.
    #[error("docker credentials {}: {reason}", path.display())]
    Credentials {
        /// The config.json.
        path: PathBuf,
        /// What is wrong.
        reason: CredentialsError,
    },
    // --- end generation ---
    // --- check (policy-check branch) ---
    /// regorus refused a module of the policy or of the framework.
    #[error("regorus cannot load {module}")]
    Rego {
        /// The module's file name (`policy.rego` for the policy).
        module: String,
        /// regorus's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The Rego is not a policy: its package is not `policy`.
    #[error("the policy must be `package policy`, not `package {package}`")]
    NotAPolicy {
        /// The package it declares.
        package: String,
    },
    /// The document holds no usable policy.
    #[error(transparent)]
    Document(#[from] crate::check::DocumentError),
    /// A start-up sequence is not a JSON list of steps.
    #[error("the steps are not a JSON list of {{\"rule\", \"input\"}} objects")]
    Steps {
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A step of a start-up sequence is malformed.
    #[error("step {index} is malformed")]
    Step {
        /// Its position, from 1.
        index: usize,
        /// What is wrong.
        #[source]
        source: crate::check::RequestError,
    },
    // --- end check ---
}

/// Which JSON document failed to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Document {
    /// The ARM template.
    Template,
    /// An ARM parameters file.
    Parameters,
    /// The `containers` or `fragments` value of a policy.
    Policy,
    /// An image manifest, index or `manifest.json`.
    Manifest,
    /// An image config.
    ImageConfig,
}

impl std::fmt::Display for Document {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Document::Template => "the template",
            Document::Parameters => "the parameters file",
            Document::Policy => "the policy",
            Document::Manifest => "the image manifest",
            Document::ImageConfig => "the image config",
        })
    }
}

/// Why an ARM template cannot become a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The template has no `Microsoft.ContainerInstance/containerGroups` resource.
    #[error(
        "no resource of type Microsoft.ContainerInstance/containerGroups or containerGroupProfiles"
    )]
    NoContainerGroups,
    /// A required field is missing or empty.
    #[error("field {path} is missing or empty")]
    Missing {
        /// JSON path of the field.
        path: String,
    },
    /// A field has the wrong JSON type.
    #[error("field {path} must be {expected}")]
    WrongType {
        /// JSON path of the field.
        path: String,
        /// What it must be.
        expected: &'static str,
    },
    /// A volume mount names a volume that the group does not declare.
    #[error("volume {name:?} is mounted but not declared in the group's volumes")]
    UnknownVolume {
        /// The volume name.
        name: String,
    },
    /// A volume has no type that a policy can express.
    #[error("volume {name:?} has no supported type (azureFile, secret, emptyDir, gitRepo)")]
    UnsupportedVolume {
        /// The volume name.
        name: String,
    },
    /// `parameters('X')` names no parameter.
    #[error("parameter {name:?} is not declared in the template")]
    UnknownParameter {
        /// The name used.
        name: String,
    },
    /// A parameters file sets a parameter that the template does not declare.
    #[error("the parameters file sets {name:?}, which the template does not declare")]
    UndeclaredParameter {
        /// The name used.
        name: String,
    },
    /// `variables('X')` names no variable.
    #[error("variable {name:?} is not declared in the template")]
    UnknownVariable {
        /// The name used.
        name: String,
    },
    /// An environment variable's value is a parameter with no value, and
    /// wildcards were not approved.
    #[error(
        "environment variable {name:?} takes its value from a parameter with no value; pass --approve-wildcards to allow any value ({name}=.*), or give the parameter a value"
    )]
    WildcardNotApproved {
        /// The variable name.
        name: String,
    },
    /// An ARM expression uses a function this crate does not evaluate.
    #[error("unsupported ARM function {function:?} in {expression:?}")]
    UnsupportedFunction {
        /// The function name.
        function: String,
        /// The whole expression.
        expression: String,
    },
    /// An ARM expression does not parse.
    #[error("cannot parse ARM expression {expression:?}: {reason}")]
    BadExpression {
        /// The whole expression.
        expression: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The template's ccePolicy is not base64.
    #[error("ccePolicy of container group {group} is not base64")]
    BadCcePolicy {
        /// Index of the group among the container groups.
        group: usize,
    },
    /// The template has no `confidentialComputeProperties` to hold a policy.
    #[error(
        "container group {group} has no properties.confidentialComputeProperties.ccePolicy to write to; add \"confidentialComputeProperties\": {{\"ccePolicy\": \"\"}}"
    )]
    NoCcePolicyField {
        /// Index of the group.
        group: usize,
    },
    /// The template's ccePolicy field is not a string.
    #[error("container group {group}: ccePolicy is not a string")]
    CcePolicyNotString {
        /// Index of the group.
        group: usize,
    },
    /// No image source was given for an image the template uses, and
    /// registry access is off.
    #[error("no source for image {reference:?}: give --image {reference}=ARCHIVE")]
    NoImageSource {
        /// The image reference.
        reference: String,
    },
    /// The seccomp profile is unusable.
    #[error("container {container:?}: seccompProfile is not base64 JSON")]
    BadSeccompProfile {
        /// The container name.
        container: String,
    },
    /// A baseline ACI sidecar image is the group's first container; confcom
    /// then writes its sidecar policy template, which is not supported.
    #[error("first container uses ACI sidecar image {image:?}; sidecar policies are not supported")]
    SidecarFirst {
        /// The image.
        image: String,
    },
    /// An image config `Env` entry has no `=`.
    #[error("image {image:?}: Env entry {entry:?} has no '='")]
    BadImageEnv {
        /// The image.
        image: String,
        /// The entry.
        entry: String,
    },
    /// A `Localhost` seccomp profile needs the profile JSON, which we do not take.
    #[error("container {container:?}: seccompProfile type Localhost is not supported")]
    LocalhostSeccomp {
        /// The container name.
        container: String,
    },
}

/// Why text is not a confcom-shaped policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A required `NAME := value` line is missing.
    #[error("no {name} := ... definition")]
    MissingRule {
        /// The rule name.
        name: &'static str,
    },
    /// A value is not what confcom writes.
    #[error("{name} is not valid: {reason}")]
    BadValue {
        /// The rule name.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The text is not UTF-8.
    #[error("not UTF-8 text")]
    NotUtf8,
    /// Base64 input does not decode.
    #[error("not base64")]
    NotBase64,
}

/// What is wrong with an image source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The file is neither a docker archive nor an OCI layout.
    #[error("not a docker-save archive or OCI image layout (no manifest.json or index.json)")]
    UnknownFormat,
    /// The archive holds no image of that name.
    #[error("the archive has no image tagged {wanted:?} (it has {available:?})")]
    NotInArchive {
        /// The reference looked for.
        wanted: String,
        /// The tags found.
        available: Vec<String>,
    },
    /// A path in the archive points outside it.
    #[error("path {path:?} escapes the archive")]
    PathTraversal {
        /// The offending path.
        path: String,
    },
    /// A file the manifest names is missing.
    #[error("{path:?} is missing")]
    Missing {
        /// The path inside the archive or layout.
        path: String,
    },
    /// A digest is malformed or uses an unsupported algorithm.
    #[error("bad digest {digest:?} (want sha256:<64 hex digits>)")]
    BadDigest {
        /// The digest string.
        digest: String,
    },
    /// A layer's bytes do not hash to the digest its manifest gives.
    #[error(
        "layer {index} does not match its digest: manifest says {expected}, content is {actual}"
    )]
    DigestMismatch {
        /// Index of the layer, base first.
        index: usize,
        /// The manifest's digest.
        expected: String,
        /// The digest of the bytes read.
        actual: String,
    },
    /// A manifest lacks a field or has the wrong shape.
    #[error("manifest: {reason}")]
    BadManifest {
        /// What is wrong.
        reason: String,
    },
    /// The image is for another architecture.
    #[error("architecture {architecture:?} is not supported by Confidential ACI (only amd64)")]
    Architecture {
        /// The image's architecture.
        architecture: String,
    },
    /// The number of layers and of diff_ids disagree.
    #[error("the manifest lists {layers} layers but the config {diff_ids} diff_ids")]
    LayerCount {
        /// Layers in the manifest.
        layers: usize,
        /// diff_ids in the config.
        diff_ids: usize,
    },
    /// A symbolic link chain inside the archive is too long or loops.
    #[error("symbolic link loop at {path:?}")]
    LinkLoop {
        /// Where it started.
        path: String,
    },
    /// Reading the archive failed.
    #[error("cannot read the archive")]
    Read(#[source] std::io::Error),
    /// The reference is not a valid image reference.
    #[error("not a valid image reference")]
    BadReference,
}

/// What is wrong with a Docker `config.json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// `auths.<host>.auth` is not base64 of `user:password`.
    #[error("auths entry for {host} is not base64 of user:password")]
    BadAuth {
        /// The registry host.
        host: String,
    },
    /// The file is not JSON.
    #[error("not valid JSON")]
    NotJson,
}
