//! VCEKs and their chains from AMD's Key Distribution Service.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use confsum_attest::{CertChain, CertificateFetcher, Product, TcbVersion};
use rustls_pki_types::{CertificateDer, pem::PemObject as _};

use crate::{Client, Error};

/// AMD's Key Distribution Service.
pub const AMD_KDS_URL: &str = "https://kdsintf.amd.com";

/// Fetches a report's VCEK and the ASK and ARK of its product line from
/// AMD's Key Distribution Service (or a mirror of it), as virtee's
/// `snpguest fetch` does:
///
/// - `GET <base>/vcek/v1/<product>/<hwid>?blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..`
///   answers the VCEK (DER); the hwid is CHIP_ID in hex (its first 8
///   bytes on Turin, whose URL also has `fmcSPL` first), the SPLs are
///   REPORTED_TCB's components in two-digit decimal;
/// - `GET <base>/vcek/v1/<product>/cert_chain` answers the ASK and the
///   ARK (PEM).
///
/// Answers are kept in memory: KDS throttles clients that ask too often.
/// The chain still has to verify ([`confsum_attest::Verifier`]); the
/// fetcher only gets it.
#[derive(Debug, Clone)]
pub struct KdsFetcher {
    client: Client,
    base: String,
    cache: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

impl KdsFetcher {
    /// A fetcher from AMD's service ([`AMD_KDS_URL`]).
    pub fn new(client: Client) -> Self {
        KdsFetcher::with_base_url(client, AMD_KDS_URL)
    }

    /// A fetcher from a mirror with the same paths.
    pub fn with_base_url(client: Client, base_url: &str) -> Self {
        KdsFetcher {
            client,
            base: base_url.trim_end_matches('/').to_owned(),
            cache: Arc::default(),
        }
    }

    /// The URL of the VCEK for `chip_id` at `tcb` on `product`.
    ///
    /// # Errors
    ///
    /// [`confsum_attest::Error::Fetch`] for a Turin TCB without an FMC
    /// component, which its URL needs.
    pub fn vcek_url(
        &self,
        product: Product,
        chip_id: &[u8; 64],
        tcb: &TcbVersion,
    ) -> Result<String, confsum_attest::Error> {
        let spl = format!(
            "blSPL={:02}&teeSPL={:02}&snpSPL={:02}&ucodeSPL={:02}",
            tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode
        );
        Ok(match product {
            Product::Turin => {
                let fmc = tcb.fmc.ok_or_else(|| {
                    confsum_attest::Error::Fetch("a Turin TCB without an FMC component".into())
                })?;
                format!(
                    "{}/vcek/v1/{product}/{}?fmcSPL={fmc:02}&{spl}",
                    self.base,
                    hex::encode(chip_id.get(..8).unwrap_or_default())
                )
            }
            _ => format!(
                "{}/vcek/v1/{product}/{}?{spl}",
                self.base,
                hex::encode(chip_id)
            ),
        })
    }

    /// The URL of the ASK and ARK of `product`.
    pub fn chain_url(&self, product: Product) -> String {
        format!("{}/vcek/v1/{product}/cert_chain", self.base)
    }

    fn get(&self, url: &str) -> Result<Vec<u8>, Error> {
        let cache = |c: &Mutex<HashMap<String, Vec<u8>>>| {
            c.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(url)
                .cloned()
        };
        if let Some(hit) = cache(&self.cache) {
            return Ok(hit);
        }
        let body = self.client.get(url)?;
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(url.to_owned(), body.clone());
        Ok(body)
    }
}

impl CertificateFetcher for KdsFetcher {
    fn fetch(
        &self,
        product: Product,
        chip_id: &[u8; 64],
        reported_tcb: &TcbVersion,
    ) -> Result<CertChain, confsum_attest::Error> {
        let fetch_error = |e: Error| confsum_attest::Error::Fetch(Box::new(e));
        let vcek = self
            .get(&self.vcek_url(product, chip_id, reported_tcb)?)
            .map_err(fetch_error)?;
        let chain = self.get(&self.chain_url(product)).map_err(fetch_error)?;
        let chain = CertificateDer::pem_slice_iter(&chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fetch_error(Error::Pem(e)))?;
        CertChain::from_der(
            std::iter::once(vcek.as_slice()).chain(chain.iter().map(|c| c.as_ref())),
        )
    }
}
