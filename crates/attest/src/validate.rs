//! Checking a report's contents against what the relying party expects.

use crate::{Error, report::AttestationReport, report::TcbVersion};

/// What to check in a report. Every `None` is "not checked"; debug is
/// forbidden unless `allow_debug` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ValidationOptions {
    /// The expected HOST_DATA (on ACI, the SHA-256 of the CCE policy).
    pub host_data: Option<[u8; 32]>,
    /// The expected REPORT_DATA.
    pub report_data: Option<[u8; 64]>,
    /// Accept a guest whose policy allows debugging. Default: no.
    pub allow_debug: bool,
    /// The expected VMPL.
    pub vmpl: Option<u32>,
    /// The lowest acceptable REPORTED_TCB, component by component.
    pub minimum_tcb: Option<TcbVersion>,
    /// The acceptable launch measurements.
    pub measurements: Option<Vec<[u8; 48]>>,
}

impl ValidationOptions {
    /// Options that check nothing but that debugging is off.
    pub fn new() -> ValidationOptions {
        ValidationOptions::default()
    }
}

fn mismatch(field: &'static str, expected: String, actual: String) -> Error {
    Error::Mismatch {
        field,
        expected,
        actual,
    }
}

/// Checks `report` against `opts`; the first failing field is named in
/// the error with both values.
pub fn validate(report: &AttestationReport, opts: &ValidationOptions) -> Result<(), Error> {
    if !opts.allow_debug && report.policy.debug() {
        return Err(mismatch(
            "policy.debug",
            "false".into(),
            format!("true (policy {:#x})", report.policy.0),
        ));
    }
    if let Some(expected) = &opts.host_data {
        if *expected != report.host_data {
            return Err(mismatch(
                "host_data",
                hex::encode(expected),
                hex::encode(report.host_data),
            ));
        }
    }
    if let Some(expected) = &opts.report_data {
        if *expected != report.report_data {
            return Err(mismatch(
                "report_data",
                hex::encode(expected),
                hex::encode(report.report_data),
            ));
        }
    }
    if let Some(expected) = opts.vmpl {
        if expected != report.vmpl {
            return Err(mismatch(
                "vmpl",
                expected.to_string(),
                report.vmpl.to_string(),
            ));
        }
    }
    if let Some(min) = &opts.minimum_tcb {
        if !report.reported_tcb.meets(min) {
            return Err(mismatch(
                "reported_tcb",
                format!("at least {min}"),
                report.reported_tcb.to_string(),
            ));
        }
    }
    if let Some(allowed) = &opts.measurements {
        if !allowed.contains(&report.measurement) {
            let list: Vec<String> = allowed.iter().map(hex::encode).collect();
            return Err(mismatch(
                "measurement",
                format!("one of [{}]", list.join(", ")),
                hex::encode(report.measurement),
            ));
        }
    }
    Ok(())
}
