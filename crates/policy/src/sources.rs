//! Putting it together: template + image sources → policies.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use rayon::prelude::*;

use crate::error::{Error, PolicyError, TemplateError};
use crate::generate::{GenerateOptions, ImageFacts, Template, Warning};
use crate::image::cache::LayerCache;
use crate::image::hash::{Progress, layer_hashes};
use crate::image::{Image, ImageSource, archive, normalize_reference};
use crate::model::{Policy, host_data};
use crate::pyjson::truthy;

/// Where each image of a template comes from.
#[derive(Debug, Clone, Default)]
pub struct ImageSources {
    local: Vec<(String, PathBuf)>,
    default_local: Option<PathBuf>,
    #[cfg(feature = "registry")]
    registry: Option<crate::image::registry::RegistryOptions>,
}

impl ImageSources {
    /// No sources yet.
    pub fn new() -> ImageSources {
        ImageSources::default()
    }

    /// Reads `reference` from a local archive or layout (`docker save`
    /// tar, OCI layout directory or tar).
    pub fn insert(&mut self, reference: impl Into<String>, path: impl Into<PathBuf>) {
        self.local.push((reference.into(), path.into()));
    }

    /// Reads every image not named by [`ImageSources::insert`] from this
    /// archive (confcom's `--tar` with one archive).
    pub fn set_default_archive(&mut self, path: impl Into<PathBuf>) {
        self.default_local = Some(path.into());
    }

    /// Pulls images without a local source from their registries.
    #[cfg(feature = "registry")]
    pub fn allow_registry(&mut self, options: crate::image::registry::RegistryOptions) {
        self.registry = Some(options);
    }

    /// Where `reference` comes from, if anywhere.
    pub fn source(&self, reference: &str) -> Option<ImageSource> {
        let wanted = normalize_reference(reference);
        let local = self
            .local
            .iter()
            .find(|(r, _)| r == reference)
            .or_else(|| {
                self.local
                    .iter()
                    .find(|(r, _)| normalize_reference(r) == wanted)
            })
            .map(|(_, p)| p.clone())
            .or_else(|| self.default_local.clone());
        if let Some(path) = local {
            return Some(ImageSource::Local(path));
        }
        #[cfg(feature = "registry")]
        if self.registry.is_some() {
            return Some(ImageSource::Registry);
        }
        None
    }

    /// Opens `reference` from its source: reads its config and locates its
    /// layers (nothing is hashed yet).
    pub fn open(&self, reference: &str) -> Result<Image, Error> {
        match self.source(reference) {
            Some(ImageSource::Local(path)) => Image::open_local(&path, reference),
            #[cfg(feature = "registry")]
            Some(ImageSource::Registry) => match &self.registry {
                Some(options) => crate::image::registry::open_registry(reference, options),
                None => Err(no_source(reference)),
            },
            #[cfg(not(feature = "registry"))]
            Some(ImageSource::Registry) => Err(no_source(reference)),
            None => Err(no_source(reference)),
        }
    }
}

fn no_source(reference: &str) -> Error {
    TemplateError::NoImageSource {
        reference: reference.to_owned(),
    }
    .into()
}

impl Image {
    /// Opens `reference` in a `docker save` archive (legacy or Docker 25
    /// layout) or an OCI image layout (directory or tar). An archive with
    /// one image gives that image whatever its tag.
    pub fn open_local(path: &Path, reference: &str) -> Result<Image, Error> {
        archive::open_local(path, reference)
    }

    /// Reads the manifest and config of `reference` from its registry.
    #[cfg(feature = "registry")]
    pub fn open_registry(
        reference: &str,
        options: &crate::image::registry::RegistryOptions,
    ) -> Result<Image, Error> {
        crate::image::registry::open_registry(reference, options)
    }

    /// Its config and layer root hashes: what a policy needs.
    pub fn facts(
        &self,
        cache: &LayerCache,
        progress: Option<&Progress>,
    ) -> Result<ImageFacts, Error> {
        if let Some(arch) = &self.config.architecture {
            if arch != "amd64" {
                return Err(Error::Image {
                    reference: self.reference.clone(),
                    kind: crate::error::ImageError::Architecture {
                        architecture: arch.clone(),
                    },
                });
            }
        }
        Ok(ImageFacts {
            config: self.config.clone(),
            layers: layer_hashes(self, cache, progress)?,
        })
    }
}

/// The policies of a template.
#[derive(Debug, Clone)]
pub struct Generated {
    /// One per container group, in template order.
    pub groups: Vec<GeneratedGroup>,
    /// Things the user should know.
    pub warnings: Vec<Warning>,
}

impl Generated {
    /// The policy texts, in group order (for [`Template::with_policies`]).
    pub fn texts(&self) -> Vec<String> {
        self.groups.iter().map(|g| g.text.clone()).collect()
    }
}

/// The policy of one container group.
#[derive(Debug, Clone)]
pub struct GeneratedGroup {
    /// The group's `name` in the template.
    pub name: String,
    /// The policy.
    pub policy: Policy,
    /// Its exact text.
    pub text: String,
    /// SHA-256 of the text, lowercase hex.
    pub host_data: String,
}

/// Generates the policy of every container group of `template`.
///
/// Each distinct image is opened and hashed once, images in parallel and
/// their layers in parallel. The output depends only on the inputs, not on
/// thread count or cache state.
pub fn generate(
    template: &Template,
    sources: &ImageSources,
    options: &GenerateOptions,
    cache: &LayerCache,
    progress: Option<&Progress>,
) -> Result<Generated, Error> {
    let mut warnings = Vec::new();
    let specs = template.groups(options, &mut warnings)?;
    let mut references: Vec<String> = Vec::new();
    for s in &specs {
        for r in s.images() {
            if !references.contains(&r) {
                references.push(r);
            }
        }
    }
    let facts: Vec<ImageFacts> = references
        .par_iter()
        .map(|r| sources.open(r)?.facts(cache, progress))
        .collect::<Result<_, _>>()?;
    let by_ref: HashMap<&str, &ImageFacts> = references
        .iter()
        .map(String::as_str)
        .zip(facts.iter())
        .collect();
    let groups = specs
        .iter()
        .map(|s| {
            let policy = s.policy(&|r: &str| by_ref.get(r).map(|f| (*f).clone()))?;
            let text = policy.render();
            Ok(GeneratedGroup {
                name: s.name.clone(),
                host_data: host_data(text.as_bytes()),
                policy,
                text,
            })
        })
        .collect::<Result<_, Error>>()?;
    Ok(Generated { groups, warnings })
}

/// Policies in `input`, which may be an ARM template (one per container
/// group, from `ccePolicy`), Rego text, or base64 of Rego text. Returns
/// `(label, text)` pairs.
pub fn read_policy_input(input: &[u8]) -> Result<Vec<(String, String)>, Error> {
    let text = std::str::from_utf8(input).map_err(|_| PolicyError::NotUtf8)?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        let template = Template::parse(text)?;
        let policies = template.existing_policies()?;
        if policies.iter().all(Option::is_none) {
            return Err(TemplateError::Missing {
                path: "properties.confidentialComputeProperties.ccePolicy".into(),
            }
            .into());
        }
        return Ok(policies
            .into_iter()
            .enumerate()
            .filter_map(|(i, p)| p.map(|p| (format!("container group {i}"), p)))
            .collect());
    }
    if trimmed.starts_with("package") {
        return Ok(vec![("policy".into(), text.to_owned())]);
    }
    let compact: String = text.split_whitespace().collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|_| PolicyError::NotBase64)?;
    let decoded = String::from_utf8(bytes).map_err(|_| PolicyError::NotUtf8)?;
    if !truthy(&serde_json::Value::String(decoded.clone())) {
        return Err(PolicyError::NotBase64.into());
    }
    Ok(vec![("policy".into(), decoded)])
}
