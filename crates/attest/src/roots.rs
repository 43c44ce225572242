//! AMD's root (ARK) and intermediate (ASK, ASVK) certificates for each
//! product line, and the set of roots a [`crate::Verifier`] trusts.
//!
//! The PEM files in `src/roots/` are copied unchanged from
//! confidential-containers/trustee (Apache-2.0),
//! `deps/verifier/src/snp/{milan,genoa,turin}_ask_ark_asvk.pem` at commit
//! 78962cd416dcc8a32f9377e0066a28fe21420f69. Each holds the ASK
//! (`SEV-<product>`), the ARK (`ARK-<product>`) and the ASVK
//! (`SEV-VLEK-<product>`) as served by AMD's key distribution service
//! (`https://kdsintf.amd.com/vcek/v1/<product>/cert_chain` and
//! `.../vlek/v1/<product>/cert_chain`). The Milan ASK and ARK are
//! byte-identical to virtee/sev `tests/certs_data/cert_chain_milan` and to
//! the ones inside the ACI capture in `testdata/`.

use std::fmt;

use crate::{CertRole, Error, certs::Cert};

/// The warning a program should print, loudly and once, whenever it makes
/// or accepts emulated (insecure) evidence. Libraries never print it.
pub const INSECURE_WARNING: &str = "WARNING: insecure emulated TEE: this evidence proves nothing";

/// An AMD EPYC product line with its own ARK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Product {
    /// 3rd generation EPYC (family 19h, models 00h-0Fh).
    Milan,
    /// 4th generation EPYC (family 19h, models 10h-1Fh and A0h-AFh).
    Genoa,
    /// 5th generation EPYC (family 1Ah).
    Turin,
}

impl Product {
    /// The name AMD uses in certificate names and URLs.
    pub fn name(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }
}

impl fmt::Display for Product {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const BUILTIN: [(Product, &str); 3] = [
    (Product::Milan, include_str!("roots/milan_ask_ark_asvk.pem")),
    (Product::Genoa, include_str!("roots/genoa_ask_ark_asvk.pem")),
    (Product::Turin, include_str!("roots/turin_ask_ark_asvk.pem")),
];

/// One trusted ARK with the intermediates (ASK, ASVK) that belong to it.
#[derive(Debug, Clone)]
pub(crate) struct Root {
    pub(crate) product: Option<Product>,
    pub(crate) ark: Cert,
    pub(crate) intermediates: Vec<Cert>,
    pub(crate) insecure: bool,
}

/// The ARKs a [`crate::Verifier`] accepts at the end of a chain.
#[derive(Debug, Clone, Default)]
pub struct TrustedRoots {
    pub(crate) roots: Vec<Root>,
}

impl TrustedRoots {
    /// AMD's ARKs for Milan, Genoa and Turin, with their ASKs and ASVKs
    /// (used when a chain brings only the VCEK or VLEK).
    pub fn amd() -> TrustedRoots {
        let roots = BUILTIN
            .iter()
            .filter_map(|(product, pem)| {
                let certs = Cert::from_pem_bundle(pem.as_bytes()).ok()?;
                let (arks, intermediates): (Vec<Cert>, Vec<Cert>) = certs
                    .into_iter()
                    .partition(|c| c.common_name().is_some_and(|cn| cn.starts_with("ARK-")));
                let ark = arks.into_iter().next()?;
                Some(Root {
                    product: Some(*product),
                    ark,
                    intermediates,
                    insecure: false,
                })
            })
            .collect();
        TrustedRoots { roots }
    }

    /// An empty set: nothing verifies until a root is added.
    pub fn empty() -> TrustedRoots {
        TrustedRoots::default()
    }

    /// **Insecure:** also trusts `ark_der`, a self-signed RSA-PSS root
    /// that is not AMD's, such as the emulated TEE's. A report that chains
    /// to it proves nothing about real hardware; the
    /// [`crate::VerifiedReport`] says so with `insecure_root() == true`,
    /// and callers should warn loudly ([`INSECURE_WARNING`]) whenever it
    /// is used.
    ///
    /// # Errors
    ///
    /// [`Error::BadCert`] if `ark_der` is not a certificate.
    pub fn add_insecure_root(&mut self, ark_der: &[u8]) -> Result<&mut Self, Error> {
        let ark = Cert::from_der(ark_der, CertRole::Ark)?;
        self.roots.push(Root {
            product: None,
            ark,
            intermediates: Vec::new(),
            insecure: true,
        });
        Ok(self)
    }

    /// Whether an insecure root (added with
    /// [`add_insecure_root`](Self::add_insecure_root)) is trusted.
    pub fn has_insecure(&self) -> bool {
        self.roots.iter().any(|r| r.insecure)
    }

    /// How many roots are trusted.
    pub fn len(&self) -> usize {
        self.roots.len()
    }

    /// Whether no root is trusted.
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// The products whose built-in roots are trusted.
    pub fn products(&self) -> Vec<Product> {
        self.roots.iter().filter_map(|r| r.product).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn builtin_roots_are_self_consistent() {
        let roots = TrustedRoots::amd();
        assert_eq!(roots.len(), 3);
        for root in &roots.roots {
            let product = root.product.unwrap().name();
            assert_eq!(root.ark.common_name().unwrap(), format!("ARK-{product}"));
            root.ark
                .verify_signed_by(&root.ark, CertRole::Ark, CertRole::Ark)
                .unwrap();
            let mut names: Vec<String> = root
                .intermediates
                .iter()
                .map(|c| c.common_name().unwrap())
                .collect();
            names.sort();
            assert_eq!(
                names,
                [format!("SEV-{product}"), format!("SEV-VLEK-{product}")]
            );
            for ask in &root.intermediates {
                assert!(ask.is_issued_by(&root.ark));
                ask.verify_signed_by(&root.ark, CertRole::Ask, CertRole::Ark)
                    .unwrap();
            }
        }
    }
}
