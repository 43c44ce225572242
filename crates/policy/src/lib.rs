//! Confidential container (CCE) policies for Azure Confidential Container
//! Instances.
//!
//! A container group starts only if its CCE policy allows every layer,
//! command, environment variable and mount; the policy's SHA-256 becomes
//! the SEV-SNP `host_data` that key-release policies pin. This crate
//! generates that policy from an ARM template and container images,
//! byte-identical to `az confcom acipolicygen` 1.4.3, and checks container
//! start-ups against it with regorus.
//!
//! Images come from `docker save` archives, OCI image layouts or (with the
//! default `registry` feature) registries; layers are hashed in parallel and
//! their root hashes cached by digest.
//!
//! ```no_run
//! use confsum_policy::{GenerateOptions, ImageSources, LayerCache, Template, generate};
//!
//! let template = Template::parse(&std::fs::read_to_string("template.json")?)?;
//! let mut images = ImageSources::new();
//! images.insert("confsum/oracle:v1", "oracle.tar");
//! let out = generate(&template, &images, &GenerateOptions::default(), &LayerCache::disabled(), None)?;
//! for group in &out.groups {
//!     println!("host_data: {}", group.host_data);
//! }
//! std::fs::write("template.out.json", template.with_policies(&out.texts())?)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A policy parses back into the same model for reading, hashing and diffing:
//!
//! ```
//! use confsum_policy::{Policy, diff, host_data};
//!
//! let text = "package policy\n\napi_version := \"0.10.0\"\nframework_version := \"0.2.3\"\n\ncontainers := [{\"allow_elevated\":false,\"allow_stdio_access\":true,\"capabilities\":{\"ambient\":[],\"bounding\":[],\"effective\":[],\"inheritable\":[],\"permitted\":[]},\"command\":[\"/pause\"],\"env_rules\":[],\"exec_processes\":[],\"layers\":[\"aa\"],\"mounts\":[],\"name\":\"pause-container\",\"no_new_privileges\":false,\"seccomp_profile_sha256\":\"\",\"signals\":[],\"user\":{\"group_idnames\":[],\"umask\":\"0022\",\"user_idname\":{\"pattern\":\"\",\"strategy\":\"any\"}},\"working_dir\":\"/\"}]\n";
//! let policy = Policy::parse(text)?;
//! assert_eq!(policy.containers[0].command.as_deref(), Some(&["/pause".to_owned()][..]));
//! assert!(diff(&policy, &policy).is_empty());
//! assert_eq!(host_data(text.as_bytes()).len(), 64);
//! # Ok::<(), confsum_policy::Error>(())
//! ```
//!
//! [`check`] puts the guest agent's requests (mount a layer, create a
//! container, exec a process...) to a policy as the utility VM would, and
//! says what it allows and why not.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod arm;
mod diff;
mod error;
mod generate;
mod image;
mod model;
mod pyjson;
mod sources;
// Its own namespace: requests have types (Mount, Capabilities) that
// differ from the policy model's of the same name.
pub mod check;

pub use crate::arm::ArmEval;
pub use crate::diff::{Change, diff};
pub use crate::error::{CredentialsError, Document, Error, ImageError, PolicyError, TemplateError};
pub use crate::generate::{GenerateOptions, GroupSpec, ImageFacts, Template, Warning};
pub use crate::image::cache::LayerCache;
pub use crate::image::hash::{Progress, ProgressEvent, layer_hashes};
#[cfg(feature = "registry")]
pub use crate::image::registry::{Credentials, RegistryOptions};
pub use crate::image::{Image, ImageConfig, ImageSource};
pub use crate::model::{
    API_VERSION, Capabilities, Container, EnvRule, EnvStrategy, ExecProcess, FRAMEWORK_VERSION,
    Fragment, IdName, Mount, Policy, Switches, User, host_data,
};
pub use crate::sources::{Generated, GeneratedGroup, ImageSources, generate, read_policy_input};
