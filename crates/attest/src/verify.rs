//! Checking a report's signature and its certificate chain.

use std::{ops::Deref, time::SystemTime};

use crate::{
    CertChain, Error,
    certs::Cert,
    report::{AttestationReport, REPORT_LEN, SIGNED_LEN, SigningKey},
    roots::{Product, Root, TrustedRoots},
};

/// Length of the significant (P-384) part of each 72-byte R and S field.
const SCALAR_LEN: usize = 48;
const FIELD_LEN: usize = 72;

/// Verifies reports against a set of trusted roots.
#[derive(Debug, Clone)]
pub struct Verifier {
    roots: TrustedRoots,
}

/// A report whose signature and chain verified. It dereferences to the
/// [`AttestationReport`].
#[derive(Debug, Clone)]
pub struct VerifiedReport {
    report: AttestationReport,
    product: Option<Product>,
    signing_key: SigningKey,
    insecure_root: bool,
}

impl VerifiedReport {
    /// The report.
    pub fn report(&self) -> &AttestationReport {
        &self.report
    }

    /// The product line whose ARK the chain ends in (`None` for an
    /// insecure root).
    pub fn product(&self) -> Option<Product> {
        self.product
    }

    /// The kind of key that signed the report (VCEK or VLEK).
    pub fn signing_key(&self) -> SigningKey {
        self.signing_key
    }

    /// Whether the chain ends in a root added with
    /// [`TrustedRoots::add_insecure_root`]: such a report proves nothing
    /// about real hardware.
    pub fn insecure_root(&self) -> bool {
        self.insecure_root
    }

    /// The report, taken out.
    pub fn into_report(self) -> AttestationReport {
        self.report
    }
}

impl Deref for VerifiedReport {
    type Target = AttestationReport;
    fn deref(&self) -> &AttestationReport {
        &self.report
    }
}

/// Turns a 72-byte little-endian R or S field into a big-endian P-384
/// scalar; the 24 bytes past the first 48 must be zero.
fn scalar(field: &[u8; FIELD_LEN]) -> Result<[u8; SCALAR_LEN], Error> {
    let (low, high) = field.split_at(SCALAR_LEN);
    if high.iter().any(|&b| b != 0) {
        return Err(Error::BadReportSignature);
    }
    let mut be: [u8; SCALAR_LEN] = low.try_into().map_err(|_| Error::BadReportSignature)?;
    be.reverse();
    Ok(be)
}

impl Verifier {
    /// A verifier that trusts `roots`.
    pub fn new(roots: TrustedRoots) -> Verifier {
        Verifier { roots }
    }

    /// The roots trusted.
    pub fn roots(&self) -> &TrustedRoots {
        &self.roots
    }

    /// The ASK (or ASVK) that the chain brings or, if it brings none, the
    /// trusted one that issued the VCEK (VLEK).
    fn find_ask<'a>(&'a self, chain: &'a CertChain) -> Result<&'a Cert, Error> {
        if let Some(ask) = &chain.ask {
            return Ok(ask);
        }
        self.roots
            .roots
            .iter()
            .flat_map(|r| r.intermediates.iter())
            .find(|ask| chain.vek.is_issued_by(ask))
            .ok_or(Error::MissingCert(chain.ask_label()))
    }

    /// The trusted root that `ark` (the chain's) is, or that issued
    /// `ask` when the chain brings no ARK.
    fn find_root(&self, chain: &CertChain, ask: &Cert) -> Result<&Root, Error> {
        match &chain.ark {
            Some(ark) => self.roots.roots.iter().find(|r| r.ark.same_key(ark)),
            None => self.roots.roots.iter().find(|r| ask.is_issued_by(&r.ark)),
        }
        .ok_or(Error::UnknownRoot)
    }

    /// Checks the chain (signatures, issuers, validity at `now`), that it
    /// ends in a trusted ARK, and the report's signature with the VCEK or
    /// VLEK. Nonzero reserved bytes in the signature area are an error,
    /// so that no byte of the report is unchecked.
    pub fn verify(
        &self,
        report_bytes: &[u8],
        chain: &CertChain,
        now: SystemTime,
    ) -> Result<VerifiedReport, Error> {
        let report = AttestationReport::parse(report_bytes)?;
        let vek_label = chain.vek_label();
        let ask_label = chain.ask_label();
        let expected = if chain.vek_is_vlek {
            SigningKey::Vlek
        } else {
            SigningKey::Vcek
        };
        if report.signing_key != expected {
            return Err(Error::SigningKeyMismatch {
                report: report.signing_key.name(),
                cert: vek_label,
            });
        }

        // The chain, from the root down.
        let ask = self.find_ask(chain)?;
        let root = self.find_root(chain, ask)?;
        let ark = chain.ark.as_ref().unwrap_or(&root.ark);
        ark.verify_signed_by(ark, "ARK", "ARK")?;
        ark.check_validity(now, "ARK")?;
        if !ask.is_issued_by(ark) {
            return Err(Error::CertWrongIssuer {
                cert: ask_label,
                issuer: "ARK",
            });
        }
        ask.verify_signed_by(ark, ask_label, "ARK")?;
        ask.check_validity(now, ask_label)?;
        if !chain.vek.is_issued_by(ask) {
            return Err(Error::CertWrongIssuer {
                cert: vek_label,
                issuer: ask_label,
            });
        }
        chain.vek.verify_signed_by(ask, vek_label, ask_label)?;
        chain.vek.check_validity(now, vek_label)?;

        // The report.
        if report.signature_algo != 1 {
            return Err(Error::BadReportSignature);
        }
        let bytes = report.as_bytes();
        let reserved = bytes
            .get(SIGNED_LEN + 2 * FIELD_LEN..REPORT_LEN)
            .ok_or(Error::BadReportSignature)?;
        if reserved.iter().any(|&b| b != 0) {
            return Err(Error::BadReportSignature);
        }
        let r = scalar(&report.signature_r())?;
        let s = scalar(&report.signature_s())?;
        let signature =
            p384::ecdsa::Signature::from_scalars(r, s).map_err(|_| Error::BadReportSignature)?;
        chain
            .vek
            .verify_p384(vek_label, report.signed_bytes(), &signature)?;

        if let (Some(signed_by), Some(claimed)) =
            (root.product, report.cpuid.and_then(|c| c.product()))
        {
            if signed_by != claimed {
                return Err(Error::Mismatch {
                    field: "product",
                    expected: signed_by.to_string(),
                    actual: claimed.to_string(),
                });
            }
        }
        Ok(VerifiedReport {
            report,
            product: root.product,
            signing_key: expected,
            insecure_root: root.insecure,
        })
    }
}
