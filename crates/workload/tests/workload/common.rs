//! A local confidential flow in one process: the owner's sealed image and
//! key, the emulated TEE, the attestation service and the key broker.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use confsum_attest::{InsecureEmulatedTee, Service, TokenIssuer, TrustedRoots};
use confsum_skr::{
    AttestAuthorities, Broker, BrokerConfig, ClaimCondition, ImportAttributes, ImportKeyRequest,
    MasterKey, ReleasePolicy, ReleasePolicyBody, ReleaseVerifier, SigningIdentity,
};
use confsum_workload::{
    InsecureEmulatedEvidence, KeyDerivation, LocalBroker, StartOptions, Step, Workload,
};

pub const ISSUER: &str = "https://attest.test";
pub const BROKER: &str = "broker.test";
pub const ADMIN: &str = "admin-token-0123456789";
pub const KEY: &str = "disk";

pub const DOCS: &[(&str, &str)] = &[
    (
        "a.txt",
        "The council approved the budget on Tuesday after a long debate about roads.",
    ),
    (
        "notes/b.txt",
        "Rain is expected across the north for most of the week, with wind.",
    ),
];

pub fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../summarize/testdata/t5_v1_0")
}

pub struct Flow {
    pub dir: tempfile::TempDir,
    pub image: PathBuf,
    pub tee_pem: String,
    pub attest: Service,
    pub broker: Arc<Broker>,
    pub release_verifier: ReleaseVerifier,
    pub host_data: [u8; 32],
    /// The broker's CA (PEM), for HTTP clients.
    pub ca_pem: String,
}

impl Flow {
    /// Seals DOCS with a random oct key pinned to `host_data`.
    pub fn new(host_data: [u8; 32]) -> Flow {
        Flow::with_broker_name(host_data, BROKER)
    }

    /// As `new`, with a broker whose release certificate names `broker`.
    pub fn with_broker_name(host_data: [u8; 32], broker_name: &str) -> Flow {
        let dir = tempfile::tempdir().unwrap();
        let docs = dir.path().join("docs");
        for (name, text) in DOCS {
            let path = docs.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let key = confsum_encfs::KeyFile::generate().unwrap();
        let image = dir.path().join("docs.img");
        confsum_encfs::seal(
            confsum_encfs::SealSource::Dir(&docs),
            &image,
            key.expose(),
            &confsum_encfs::SealOptions::default(),
            &mut |_| {},
        )
        .unwrap();

        let tee = InsecureEmulatedTee::generate().unwrap();
        let mut roots = TrustedRoots::empty();
        roots
            .add_insecure_root(&tee.insecure_ark_der().unwrap())
            .unwrap();
        let attest = Service::new(TokenIssuer::generate(ISSUER).unwrap(), roots);

        let now = SystemTime::now();
        let (signer, ca) = SigningIdentity::generate_with_local_ca(&[broker_name], now).unwrap();
        let broker = Broker::open(
            &dir.path().join("broker.redb"),
            &MasterKey::generate().unwrap(),
            signer,
            BrokerConfig::new(&format!("https://{BROKER}")),
        )
        .unwrap();
        broker.set_admin_token(ADMIN).unwrap();
        let policy = ReleasePolicy::all_of(
            ISSUER,
            vec![vec![
                ClaimCondition::equals("x-ms-sevsnpvm-hostdata", hex::encode(host_data)),
                ClaimCondition::equals("x-ms-sevsnpvm-is-debuggable", "false"),
                ClaimCondition::equals("x-ms-sevsnpvm-vmpl", "0"),
            ]],
        );
        let request = ImportKeyRequest {
            key: serde_json::json!({"kty": "oct-HSM", "k": URL_SAFE_NO_PAD.encode(key.expose())}),
            hsm: Some(true),
            attributes: Some(ImportAttributes {
                exportable: Some(true),
                ..ImportAttributes::default()
            }),
            release_policy: Some(ReleasePolicyBody {
                content_type: None,
                data: policy.encode_base64url(),
                immutable: None,
            }),
            tags: None,
        };
        broker
            .import(Some(&format!("Bearer {ADMIN}")), KEY, &request, now)
            .unwrap();
        let release_verifier =
            ReleaseVerifier::new(std::slice::from_ref(&ca.cert_der), broker_name).unwrap();
        Flow {
            tee_pem: tee.to_insecure_state_pem().unwrap().to_string(),
            dir,
            image,
            attest,
            broker: Arc::new(broker),
            release_verifier,
            host_data,
            ca_pem: ca.cert_pem(),
        }
    }

    pub fn tee(&self) -> InsecureEmulatedTee {
        InsecureEmulatedTee::from_insecure_state_pem(&self.tee_pem).unwrap()
    }

    /// Starts a workload whose platform reports `host_data`.
    pub fn start(
        &self,
        host_data: [u8; 32],
        steps: &mut Vec<Step>,
    ) -> Result<Workload, confsum_workload::Error> {
        let evidence = InsecureEmulatedEvidence::new(self.tee(), host_data);
        let mut authorities = AttestAuthorities::new();
        authorities.trust(ISSUER, self.attest.jwks());
        let release = LocalBroker::new(
            Arc::clone(&self.broker),
            KEY,
            Box::new(authorities),
            self.release_verifier.clone(),
        );
        Workload::start(
            StartOptions {
                evidence: &evidence,
                attestation: &self.attest,
                release: &release,
                derivation: KeyDerivation::default(),
                image: self.image.clone(),
                model: model_dir(),
                load: confsum_summarize::LoadOptions::default(),
            },
            &mut |step| steps.push(step),
        )
    }
}
