//! Request and response bodies of Microsoft Azure Attestation's
//! `POST /attest/SevSnpVM?api-version=2020-10-01`, as the confidential
//! sidecar sends them.
//!
//! The sidecar (Go) encodes every binary field with `base64.URLEncoding`,
//! which is base64url *with* `=` padding; the decoders here take it with or
//! without padding, and the encoders write it padded, as the sidecar does.

use base64::Engine as _;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::{Deserialize, Deserializer, Serialize};

use crate::{Error, RequestError, RequestField};

/// base64url, padded when encoding (like Go's `base64.URLEncoding`), padding
/// optional when decoding.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes one base64url field, naming it in the error.
fn decode_field(text: &str, field: RequestField) -> Result<Vec<u8>, Error> {
    B64URL
        .decode(text)
        .map_err(|_| Error::BadRequest(RequestError::Base64(field)))
}

/// The body of an attestation request.
///
/// ```json
/// {"report":"<base64url(JSON SnpEvidence)>",
///  "runtimeData":{"data":"<base64url(JWKS JSON)>","dataType":"JSON"},
///  "initTimeData":{"data":"","dataType":""},
///  "nonce":1234}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttestRequest {
    /// base64url of the JSON [`SnpEvidence`].
    pub report: String,
    /// The runtime data (the TEE's JWKS) whose SHA-256 is in report_data.
    pub runtime_data: RuntimeData,
    /// Init-time data; the sidecar sends `{"data":"","dataType":""}`.
    /// Read and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_time_data: Option<RuntimeData>,
    /// A nonce for the token. The REST API documents a string, the sidecar
    /// sends a number; both are read, as text.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "string_or_number"
    )]
    pub nonce: Option<String>,
}

impl AttestRequest {
    /// A request for `evidence`, binding `runtime_json` (the exact JSON bytes
    /// whose SHA-256 the TEE put in report_data).
    pub fn new(evidence: &SnpEvidence, runtime_json: &[u8], nonce: Option<String>) -> Self {
        AttestRequest {
            report: evidence.encode(),
            runtime_data: RuntimeData::json(runtime_json),
            init_time_data: None,
            nonce,
        }
    }

    /// Decodes [`report`](Self::report) into the evidence it carries.
    ///
    /// # Errors
    ///
    /// [`Error::BadRequest`] if it is not base64url of the evidence JSON.
    pub fn evidence(&self) -> Result<SnpEvidence, Error> {
        SnpEvidence::decode(&self.report)
    }
}

/// Runtime (or init-time) data of an attestation request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeData {
    /// base64url of the data.
    pub data: String,
    /// `"JSON"` (the only type the sidecar uses) or `"Binary"`.
    pub data_type: String,
}

impl RuntimeData {
    /// Runtime data of type `"JSON"` holding these exact bytes.
    pub fn json(bytes: &[u8]) -> Self {
        RuntimeData {
            data: B64URL.encode(bytes),
            data_type: "JSON".to_owned(),
        }
    }

    /// The bytes of [`data`](Self::data): these, exactly, are what
    /// report_data must hold the SHA-256 of.
    ///
    /// # Errors
    ///
    /// [`Error::BadRequest`] if `data` is not base64url.
    pub fn bytes(&self) -> Result<Vec<u8>, Error> {
        decode_field(&self.data, RequestField::RuntimeData)
    }
}

/// Reads an optional nonce given as a JSON string or an unsigned number.
fn string_or_number<'de, D: Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Nonce {
        Text(String),
        Number(u64),
    }
    Ok(Option::<Nonce>::deserialize(de)?.map(|n| match n {
        Nonce::Text(s) => s,
        Nonce::Number(v) => v.to_string(),
    }))
}

/// The evidence inside [`AttestRequest::report`]:
/// `{"SnpReport":…,"VcekCertChain":…,"Endorsements":…}`, each member
/// base64url.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnpEvidence {
    /// base64url of the 1184-byte SNP attestation report.
    #[serde(rename = "SnpReport")]
    pub snp_report: String,
    /// base64url of the PEM certificates VCEK, ASK, ARK, concatenated.
    #[serde(rename = "VcekCertChain")]
    pub vcek_cert_chain: String,
    /// base64url of the JSON `{"Uvm":[base64url(COSE_Sign1)…]}` holding the
    /// UVM reference information; absent or empty when there is none.
    #[serde(
        rename = "Endorsements",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub endorsements: String,
}

/// The JSON inside [`SnpEvidence::endorsements`].
#[derive(Debug, Serialize, Deserialize)]
struct Endorsements {
    #[serde(rename = "Uvm")]
    uvm: Vec<String>,
}

impl SnpEvidence {
    /// Evidence from the raw report, the PEM certificate chain and the UVM
    /// endorsements (COSE_Sign1 documents; none for emulated evidence).
    pub fn new(report: &[u8], vcek_cert_chain_pem: &[u8], uvm_endorsements: &[Vec<u8>]) -> Self {
        let endorsements = if uvm_endorsements.is_empty() {
            String::new()
        } else {
            let doc = Endorsements {
                uvm: uvm_endorsements.iter().map(|e| B64URL.encode(e)).collect(),
            };
            // Serializing a struct of strings cannot fail.
            B64URL.encode(serde_json::to_vec(&doc).unwrap_or_default())
        };
        SnpEvidence {
            snp_report: B64URL.encode(report),
            vcek_cert_chain: B64URL.encode(vcek_cert_chain_pem),
            endorsements,
        }
    }

    /// base64url of this evidence's JSON, the form that goes in
    /// [`AttestRequest::report`].
    pub fn encode(&self) -> String {
        // Serializing a struct of strings cannot fail.
        B64URL.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Decodes evidence from its base64url JSON form.
    ///
    /// # Errors
    ///
    /// [`Error::BadRequest`] if it is not base64url of the evidence JSON.
    pub fn decode(report: &str) -> Result<Self, Error> {
        let json = decode_field(report, RequestField::Report)?;
        serde_json::from_slice(&json).map_err(|err| RequestError::Evidence(err).into())
    }

    /// The raw SNP report bytes (not checked here: parse them with the
    /// report module).
    ///
    /// # Errors
    ///
    /// [`Error::BadRequest`] if `SnpReport` is not base64url.
    pub fn report_bytes(&self) -> Result<Vec<u8>, Error> {
        decode_field(&self.snp_report, RequestField::SnpReport)
    }

    /// The PEM certificate chain bytes.
    ///
    /// # Errors
    ///
    /// [`Error::BadRequest`] if `VcekCertChain` is not base64url.
    pub fn cert_chain_pem(&self) -> Result<Vec<u8>, Error> {
        decode_field(&self.vcek_cert_chain, RequestField::VcekCertChain)
    }

    /// The UVM endorsements (COSE_Sign1 documents), empty when there are none.
    ///
    /// # Errors
    ///
    /// [`Error::BadRequest`] if `Endorsements` is not base64url of
    /// `{"Uvm":[base64url…]}`.
    pub fn uvm_endorsements(&self) -> Result<Vec<Vec<u8>>, Error> {
        if self.endorsements.is_empty() {
            return Ok(Vec::new());
        }
        let json = decode_field(&self.endorsements, RequestField::Endorsements)?;
        let doc: Endorsements =
            serde_json::from_slice(&json).map_err(RequestError::Endorsements)?;
        doc.uvm
            .iter()
            .map(|e| decode_field(e, RequestField::UvmEndorsement))
            .collect()
    }
}

/// The body of an attestation response: `{"token":"<JWT>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestResponse {
    /// The attestation token (an RS256 JWT).
    #[serde(alias = "Token")]
    pub token: String,
}
