//! Start-up: attest, get the disk key released, open the sealed image,
//! load the model. Each outside party is a small trait, so tests and the
//! local demo plug in in-process services and a deployment plugs in HTTP.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use confsum_attest::{ATTEST_API_VERSION, AttestRequest, SnpEvidence};
use confsum_skr::{ReleaseRequest, ReleaseVerifier, ReleasedKey};
use confsum_summarize::{LoadOptions, Summarizer};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::documents::Documents;
use crate::keys::WorkloadKeys;
use crate::{Error, ServiceConfig};

/// Where SEV-SNP evidence comes from: the platform (on ACI, the
/// sidecar's `/dev/sev-guest` path) or, for local runs, the emulated TEE.
pub trait EvidenceSource: Send + Sync {
    /// Evidence (report and certificate chain) whose report_data is
    /// `report_data`.
    ///
    /// # Errors
    ///
    /// [`Error::Attest`] if no report can be had.
    fn evidence(&self, report_data: &[u8; 64]) -> Result<SnpEvidence, Error>;

    /// Whether the evidence proves nothing (emulated): callers warn.
    fn is_insecure(&self) -> bool;
}

/// **Insecure:** evidence from the emulated TEE (`confsum-attest`'s
/// `InsecureEmulatedTee`), with a host_data the caller chooses, as the
/// platform would set it from the CCE policy. Proves nothing.
#[cfg(feature = "insecure")]
#[derive(Debug)]
pub struct InsecureEmulatedEvidence {
    tee: confsum_attest::InsecureEmulatedTee,
    host_data: [u8; 32],
}

#[cfg(feature = "insecure")]
impl InsecureEmulatedEvidence {
    /// Evidence from `tee` with `host_data` (SHA-256 of the CCE policy).
    pub fn new(tee: confsum_attest::InsecureEmulatedTee, host_data: [u8; 32]) -> Self {
        InsecureEmulatedEvidence { tee, host_data }
    }
}

#[cfg(feature = "insecure")]
impl EvidenceSource for InsecureEmulatedEvidence {
    fn evidence(&self, report_data: &[u8; 64]) -> Result<SnpEvidence, Error> {
        self.tee
            .evidence(report_data, &self.host_data)
            .map_err(Error::Attest)
    }

    fn is_insecure(&self) -> bool {
        true
    }
}

/// An attestation service: evidence and runtime data in, token out.
pub trait Attestation: Send + Sync {
    /// Sends `request` (MAA's `attest/SevSnpVM` body) and returns the token.
    ///
    /// # Errors
    ///
    /// [`Error::Attest`] or [`Error::Http`].
    fn attest(&self, request: &AttestRequest) -> Result<String, Error>;
}

/// The attestation service in this process (tests, the local demo).
impl Attestation for confsum_attest::Service {
    fn attest(&self, request: &AttestRequest) -> Result<String, Error> {
        let body = serde_json::to_vec(request).map_err(|source| Error::Malformed {
            what: "attestation request",
            source,
        })?;
        let attested = confsum_attest::Service::attest(
            self,
            &body,
            Some(ATTEST_API_VERSION),
            SystemTime::now(),
        )
        .map_err(Error::Attest)?;
        Ok(attested.response.token)
    }
}

/// An attestation service over HTTP(S) (Azure Attestation, or
/// `confsum attest serve`).
#[derive(Debug, Clone)]
pub struct HttpAttestation {
    client: confsum_server::Client,
    base_url: String,
}

impl HttpAttestation {
    /// The service at `base_url` (`https://<maa>`).
    pub fn new(client: confsum_server::Client, base_url: &str) -> Self {
        HttpAttestation {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
        }
    }
}

impl Attestation for HttpAttestation {
    fn attest(&self, request: &AttestRequest) -> Result<String, Error> {
        self.client
            .attest(&self.base_url, request)
            .map(|r| r.token)
            .map_err(Error::Http)
    }
}

/// A key broker: an attestation token in, a release whose signature was
/// checked out (as the sidecar checks it: `confsum_skr::ReleaseVerifier`,
/// the broker's CA and endpoint).
pub trait KeyRelease: Send + Sync {
    /// Asks for the key's release to the holder of `token`.
    ///
    /// # Errors
    ///
    /// [`Error::Release`] (a denial names the failing claim) or
    /// [`Error::Http`] (a 403 carries the broker's message).
    fn release(&self, token: &str) -> Result<ReleasedKey, Error>;
}

/// A key at a Managed HSM or a `confsum skr serve` broker, over HTTP(S)
/// (`confsum_server::HsmClient`, which sends the sidecar's request and
/// checks the answer).
#[derive(Debug, Clone)]
pub struct HsmKeyRelease {
    hsm: confsum_server::HsmClient,
    key_name: String,
}

impl HsmKeyRelease {
    /// Key `key_name` at `hsm`.
    pub fn new(hsm: confsum_server::HsmClient, key_name: &str) -> Self {
        HsmKeyRelease {
            hsm,
            key_name: key_name.to_owned(),
        }
    }
}

impl KeyRelease for HsmKeyRelease {
    fn release(&self, token: &str) -> Result<ReleasedKey, Error> {
        self.hsm.release(&self.key_name, token).map_err(Error::Http)
    }
}

/// A `confsum_skr::Broker` in this process (tests, the local demo), with
/// the token check it applies.
pub struct LocalBroker {
    broker: Arc<confsum_skr::Broker>,
    key_name: String,
    check: Box<dyn confsum_skr::TokenCheck>,
    verifier: ReleaseVerifier,
}

impl std::fmt::Debug for LocalBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBroker")
            .field("key_name", &self.key_name)
            .finish_non_exhaustive()
    }
}

impl LocalBroker {
    /// Releases key `key_name` of `broker` to tokens that pass `check`;
    /// `verifier` checks the signed answer, as over HTTP.
    pub fn new(
        broker: Arc<confsum_skr::Broker>,
        key_name: &str,
        check: Box<dyn confsum_skr::TokenCheck>,
        verifier: ReleaseVerifier,
    ) -> Self {
        LocalBroker {
            broker,
            key_name: key_name.to_owned(),
            check,
            verifier,
        }
    }
}

impl KeyRelease for LocalBroker {
    fn release(&self, token: &str) -> Result<ReleasedKey, Error> {
        let request = ReleaseRequest {
            target: token.to_owned(),
            enc: None,
            nonce: None,
        };
        let jws = self
            .broker
            .release_token(
                &self.key_name,
                &request,
                self.check.as_ref(),
                SystemTime::now(),
            )
            .map_err(Error::Release)?
            .value;
        self.verifier
            .verify(&jws, SystemTime::now())
            .map_err(Error::Release)
    }
}

/// How the released key becomes the image's key file, as the encfs
/// sidecar does it: an `oct` key is the key file itself; an `RSA` key is
/// put through `confsum_skr::derive_rsa_hsm_key` with this salt and label.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyDerivation {
    /// Hex salt for RSA keys.
    pub salt_hex: String,
    /// Label for RSA keys (empty: the sidecar's default).
    pub label: String,
}

/// What the workload needs to start.
pub struct StartOptions<'a> {
    /// The evidence source.
    pub evidence: &'a dyn EvidenceSource,
    /// The attestation service.
    pub attestation: &'a dyn Attestation,
    /// The key broker.
    pub release: &'a dyn KeyRelease,
    /// How the released key unlocks the image.
    pub derivation: KeyDerivation,
    /// The sealed image (LUKS2).
    pub image: PathBuf,
    /// The model checkpoint folder.
    pub model: PathBuf,
    /// Model load options.
    pub load: LoadOptions,
}

impl std::fmt::Debug for StartOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartOptions")
            .field("image", &self.image)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

/// A start-up step, reported as it happens (the library never prints).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// The two ephemeral keys exist.
    KeysGenerated {
        /// The key-release key's id.
        wrapping_kid: String,
        /// The response-signing key's id.
        signing_kid: String,
    },
    /// Evidence was produced; `insecure` when it is emulated.
    Evidence {
        /// Emulated evidence.
        insecure: bool,
        /// The report's host_data, hex.
        host_data: String,
    },
    /// The attestation service issued a token.
    Attested,
    /// The broker released the key and it unwrapped.
    KeyReleased {
        /// The released key's `kid`.
        kid: String,
    },
    /// The sealed image opened.
    ImageOpened {
        /// How many documents it holds.
        documents: usize,
    },
    /// The model loaded.
    ModelLoaded,
}

/// The attestation a running workload shows its consumers
/// (`GET /v1/attestation`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AttestationDocument {
    /// The attestation token (JWT).
    pub token: String,
    /// The evidence sent for it: MAA's `report` field (base64url of the
    /// JSON `{SnpReport, VcekCertChain, …}`).
    pub evidence: String,
    /// The runtime data (JWKS JSON) as hashed into report_data.
    pub runtime_data: String,
}

/// A started workload: attested, key released, image open, model loaded.
pub struct Workload {
    pub(crate) keys: WorkloadKeys,
    pub(crate) attestation: AttestationDocument,
    pub(crate) documents: Documents,
    pub(crate) summarizer: Summarizer,
}

impl std::fmt::Debug for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workload")
            .field("keys", &self.keys)
            .field("documents", &self.documents.len())
            .finish_non_exhaustive()
    }
}

/// The disk key (key file bytes) from a released key.
fn disk_key(
    kty: &str,
    material: &[u8],
    derivation: &KeyDerivation,
) -> Result<Zeroizing<Vec<u8>>, Error> {
    match kty {
        "oct" | "oct-HSM" => Ok(Zeroizing::new(material.to_vec())),
        "RSA" | "RSA-HSM" => {
            let key =
                confsum_skr::derive_rsa_hsm_key(material, &derivation.salt_hex, &derivation.label)
                    .map_err(Error::Release)?;
            Ok(Zeroizing::new(key.to_vec()))
        }
        other => Err(Error::UnusableKey {
            kty: other.to_owned(),
        }),
    }
}

impl Workload {
    /// Starts the workload, calling `progress` after each step: makes the
    /// keys, attests with their runtime data, has the key released and
    /// checks and unwraps the release, opens the image with the key, reads
    /// its documents, and loads the model.
    ///
    /// # Errors
    ///
    /// The error of the step that failed.
    pub fn start(options: StartOptions<'_>, progress: &mut dyn FnMut(Step)) -> Result<Self, Error> {
        let keys = WorkloadKeys::generate()?;
        progress(Step::KeysGenerated {
            wrapping_kid: keys
                .wrapping()
                .public_key()
                .kid()
                .unwrap_or_default()
                .to_owned(),
            signing_kid: keys.signer().kid().to_owned(),
        });
        let runtime = keys.runtime_json()?;
        let mut report_data = [0u8; 64];
        report_data[..32].copy_from_slice(&Sha256::digest(runtime.as_bytes()));
        let evidence = options.evidence.evidence(&report_data)?;
        let host_data = evidence
            .report_bytes()
            .ok()
            .and_then(|r| confsum_attest::AttestationReport::parse(&r).ok())
            .map(|r| hex::encode(r.host_data))
            .unwrap_or_default();
        progress(Step::Evidence {
            insecure: options.evidence.is_insecure(),
            host_data,
        });
        let request = AttestRequest::new(&evidence, runtime.as_bytes(), None);
        let token = options.attestation.attest(&request)?;
        progress(Step::Attested);

        let released = options.release.release(&token)?;
        let material = released.unwrap(keys.wrapping()).map_err(Error::Release)?;
        let key_file = disk_key(released.kty(), &material, &options.derivation)?;
        progress(Step::KeyReleased {
            kid: released.payload.response.key.key.kid.clone(),
        });

        let documents = Documents::open(&options.image, &key_file)?;
        drop(key_file);
        progress(Step::ImageOpened {
            documents: documents.len(),
        });
        let summarizer = load_model(&options.model, &options.load)?;
        progress(Step::ModelLoaded);
        Ok(Workload {
            keys,
            attestation: AttestationDocument {
                token,
                evidence: evidence.encode(),
                runtime_data: runtime,
            },
            documents,
            summarizer,
        })
    }

    /// The attestation consumers check.
    pub fn attestation(&self) -> &AttestationDocument {
        &self.attestation
    }

    /// The documents' ids, in order.
    pub fn document_ids(&self) -> Vec<String> {
        self.documents.ids()
    }

    /// The service state for [`crate::router`]: starts the summarizing
    /// thread.
    pub fn into_service(self, config: ServiceConfig) -> crate::Service {
        crate::Service::start(self, config)
    }
}

fn load_model(dir: &Path, load: &LoadOptions) -> Result<Summarizer, Error> {
    Summarizer::load(dir, load).map_err(Error::Model)
}
