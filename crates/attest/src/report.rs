//! The SEV-SNP `ATTESTATION_REPORT` structure (AMD SEV-SNP firmware ABI
//! specification, table "ATTESTATION_REPORT Structure").
//!
//! Offsets (all integers little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0x000 | 4 | VERSION (2, 3 or 5) |
//! | 0x004 | 4 | GUEST_SVN |
//! | 0x008 | 8 | POLICY |
//! | 0x010 | 16 | FAMILY_ID |
//! | 0x020 | 16 | IMAGE_ID |
//! | 0x030 | 4 | VMPL |
//! | 0x034 | 4 | SIGNATURE_ALGO (1 = ECDSA P-384 with SHA-384) |
//! | 0x038 | 8 | CURRENT_TCB |
//! | 0x040 | 8 | PLATFORM_INFO |
//! | 0x048 | 4 | AUTHOR_KEY_EN (bit 0), MASK_CHIP_KEY (bit 1), SIGNING_KEY (bits 4:2) |
//! | 0x050 | 64 | REPORT_DATA |
//! | 0x090 | 48 | MEASUREMENT |
//! | 0x0C0 | 32 | HOST_DATA |
//! | 0x0E0 | 48 | ID_KEY_DIGEST |
//! | 0x110 | 48 | AUTHOR_KEY_DIGEST |
//! | 0x140 | 32 | REPORT_ID |
//! | 0x160 | 32 | REPORT_ID_MA |
//! | 0x180 | 8 | REPORTED_TCB |
//! | 0x188 | 3 | CPUID_FAM_ID, CPUID_MOD_ID, CPUID_STEP (version 3 and later; reserved in 2) |
//! | 0x1A0 | 64 | CHIP_ID |
//! | 0x1E0 | 8 | COMMITTED_TCB |
//! | 0x1E8 | 4 | CURRENT_BUILD, CURRENT_MINOR, CURRENT_MAJOR, reserved |
//! | 0x1EC | 4 | COMMITTED_BUILD, COMMITTED_MINOR, COMMITTED_MAJOR, reserved |
//! | 0x1F0 | 8 | LAUNCH_TCB |
//! | 0x1F8 | 8 | LAUNCH_MIT_VECTOR (version 5; reserved before) |
//! | 0x200 | 8 | CURRENT_MIT_VECTOR (version 5; reserved before) |
//! | 0x2A0 | 512 | SIGNATURE: R (72), S (72), reserved (368) |
//!
//! The signed part is bytes `0..0x2A0`.

use std::fmt;

use crate::{Error, roots::Product};

/// Length of an attestation report in bytes.
pub const REPORT_LEN: usize = 0x4A0;
/// Length of the signed part of a report (bytes `0..SIGNED_LEN`).
pub const SIGNED_LEN: usize = 0x2A0;
/// Length of each of the R and S fields of the signature.
const SIG_COMPONENT_LEN: usize = 72;

/// The guest policy the guest was launched with (POLICY, offset 0x08).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GuestPolicy(pub u64);

impl GuestPolicy {
    fn bit(self, n: u32) -> bool {
        self.0 >> n & 1 == 1
    }
    /// Minimum ABI minor version (bits 7:0).
    pub fn abi_minor(self) -> u8 {
        (self.0 & 0xff) as u8
    }
    /// Minimum ABI major version (bits 15:8).
    pub fn abi_major(self) -> u8 {
        (self.0 >> 8 & 0xff) as u8
    }
    /// Host SMT is allowed (bit 16).
    pub fn smt(self) -> bool {
        self.bit(16)
    }
    /// Association with a migration agent is allowed (bit 18).
    pub fn migrate_ma(self) -> bool {
        self.bit(18)
    }
    /// Debugging is allowed (bit 19): the hypervisor can read and write
    /// guest memory. A debuggable guest proves nothing about its code.
    pub fn debug(self) -> bool {
        self.bit(19)
    }
    /// The guest may only run on a single socket (bit 20).
    pub fn single_socket(self) -> bool {
        self.bit(20)
    }
    /// CXL may be populated with devices or memory (bit 21).
    pub fn cxl_allow(self) -> bool {
        self.bit(21)
    }
    /// AES-256-XTS is required for memory encryption (bit 22).
    pub fn mem_aes_256_xts(self) -> bool {
        self.bit(22)
    }
    /// Running Average Power Limit must be disabled (bit 23).
    pub fn rapl_dis(self) -> bool {
        self.bit(23)
    }
    /// Ciphertext hiding must be enabled (bit 24).
    pub fn ciphertext_hiding(self) -> bool {
        self.bit(24)
    }
    /// The page swap commands are disabled for the guest (bit 25).
    pub fn page_swap_disable(self) -> bool {
        self.bit(25)
    }
}

/// Which byte layout a TCB_VERSION field has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcbLayout {
    /// Milan and Genoa: byte 0 boot loader, 1 TEE, 6 SNP, 7 microcode.
    MilanGenoa,
    /// Turin: byte 0 FMC, 1 boot loader, 2 TEE, 3 SNP, 7 microcode.
    Turin,
}

/// The security version numbers of the platform's firmware (a
/// TCB_VERSION, 8 bytes).
///
/// Milan and Genoa lay it out as `[bootloader, tee, 0, 0, 0, 0, snp,
/// microcode]`; Turin as `[fmc, bootloader, tee, snp, 0, 0, 0,
/// microcode]`. A report says it comes from Turin only from version 3 on
/// (CPUID family 0x1A); version 2 reports are read with the Milan/Genoa
/// layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcbVersion {
    /// SVN of the PSP boot loader.
    pub bootloader: u8,
    /// SVN of the PSP operating system.
    pub tee: u8,
    /// SVN of the SNP firmware.
    pub snp: u8,
    /// Lowest current patch level of all cores.
    pub microcode: u8,
    /// SVN of the FMC firmware (Turin only).
    pub fmc: Option<u8>,
}

impl TcbVersion {
    /// Reads a TCB_VERSION in the given layout.
    pub fn from_raw(raw: u64, layout: TcbLayout) -> Self {
        let b = raw.to_le_bytes();
        let [b0, b1, b2, b3, _, _, b6, b7] = b;
        match layout {
            TcbLayout::MilanGenoa => TcbVersion {
                bootloader: b0,
                tee: b1,
                snp: b6,
                microcode: b7,
                fmc: None,
            },
            TcbLayout::Turin => TcbVersion {
                bootloader: b1,
                tee: b2,
                snp: b3,
                microcode: b7,
                fmc: Some(b0),
            },
        }
    }

    /// Writes it back (Turin layout when `fmc` is set).
    pub fn to_raw(&self) -> u64 {
        let b = match self.fmc {
            None => [
                self.bootloader,
                self.tee,
                0,
                0,
                0,
                0,
                self.snp,
                self.microcode,
            ],
            Some(fmc) => [
                fmc,
                self.bootloader,
                self.tee,
                self.snp,
                0,
                0,
                0,
                self.microcode,
            ],
        };
        u64::from_le_bytes(b)
    }

    /// Whether every component is at least the one in `min` (an `fmc` in
    /// `min` is only compared when this one has one too).
    pub fn meets(&self, min: &TcbVersion) -> bool {
        let fmc_ok = match (self.fmc, min.fmc) {
            (Some(a), Some(b)) => a >= b,
            _ => true,
        };
        fmc_ok
            && self.bootloader >= min.bootloader
            && self.tee >= min.tee
            && self.snp >= min.snp
            && self.microcode >= min.microcode
    }
}

impl fmt::Display for TcbVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(fmc) = self.fmc {
            write!(f, "fmc {fmc}, ")?;
        }
        write!(
            f,
            "bootloader {}, tee {}, snp {}, microcode {}",
            self.bootloader, self.tee, self.snp, self.microcode
        )
    }
}

/// The key that signed the report (SIGNING_KEY, bits 4:2 at 0x48).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningKey {
    /// The Versioned Chip Endorsement Key.
    Vcek,
    /// The Versioned Loaded Endorsement Key (a cloud provider's).
    Vlek,
    /// Not signed (the signature is zero).
    None,
    /// A reserved encoding.
    Reserved(u8),
}

impl SigningKey {
    /// The name used in certificates and errors.
    pub fn name(self) -> &'static str {
        match self {
            SigningKey::Vcek => "VCEK",
            SigningKey::Vlek => "VLEK",
            SigningKey::None => "no key",
            SigningKey::Reserved(_) => "a reserved key",
        }
    }
}

/// The version of the SNP firmware (build, minor, major).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FirmwareVersion {
    /// Build number.
    pub build: u8,
    /// Minor version.
    pub minor: u8,
    /// Major version.
    pub major: u8,
}

impl fmt::Display for FirmwareVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.build)
    }
}

/// CPUID family, model and stepping of the chip (report version 3 and
/// later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cpuid {
    /// Combined family (0x19 Milan and Genoa, 0x1A Turin).
    pub family: u8,
    /// Combined model.
    pub model: u8,
    /// Stepping.
    pub stepping: u8,
}

impl Cpuid {
    /// The product these CPUID values belong to, when known.
    pub fn product(&self) -> Option<Product> {
        match (self.family, self.model) {
            (0x19, 0x00..=0x0f) => Some(Product::Milan),
            (0x19, 0x10..=0x1f | 0xa0..=0xaf) => Some(Product::Genoa),
            (0x1a, 0x00..=0x11) => Some(Product::Turin),
            _ => None,
        }
    }
}

/// A parsed SEV-SNP attestation report. It keeps its 1184 bytes, so that
/// the signature can be checked against exactly what was parsed.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttestationReport {
    /// Format version (2, 3 or 5).
    pub version: u32,
    /// The guest's security version number.
    pub guest_svn: u32,
    /// The guest policy.
    pub policy: GuestPolicy,
    /// Family ID given at launch.
    pub family_id: [u8; 16],
    /// Image ID given at launch.
    pub image_id: [u8; 16],
    /// The VMPL the report was requested from.
    pub vmpl: u32,
    /// Signature algorithm (1 = ECDSA P-384 with SHA-384).
    pub signature_algo: u32,
    /// The platform's current TCB.
    pub current_tcb: TcbVersion,
    /// PLATFORM_INFO bits (bit 0 SMT enabled, 1 TSME enabled, 2 ECC
    /// memory, 3 RAPL disabled, 4 ciphertext hiding enabled, ...).
    pub platform_info: u64,
    /// The digest of the author key is in `author_key_digest`.
    pub author_key_en: bool,
    /// The chip key was masked: the report is not signed.
    pub mask_chip_key: bool,
    /// The key that signed the report.
    pub signing_key: SigningKey,
    /// Data the guest put in its request (64 bytes at 0x50).
    pub report_data: [u8; 64],
    /// The launch measurement (SHA-384).
    pub measurement: [u8; 48],
    /// Data the host gave at launch (32 bytes at 0xC0; on ACI the
    /// SHA-256 of the CCE policy).
    pub host_data: [u8; 32],
    /// SHA-384 of the ID key that signed the ID block.
    pub id_key_digest: [u8; 48],
    /// SHA-384 of the author key that certified the ID key.
    pub author_key_digest: [u8; 48],
    /// Report ID of the guest.
    pub report_id: [u8; 32],
    /// Report ID of the guest's migration agent.
    pub report_id_ma: [u8; 32],
    /// The TCB the VCEK that signed this report was derived from.
    pub reported_tcb: TcbVersion,
    /// CPUID family, model and stepping (version 3 and later).
    pub cpuid: Option<Cpuid>,
    /// The chip's unique ID (zero when masked).
    pub chip_id: [u8; 64],
    /// The committed TCB.
    pub committed_tcb: TcbVersion,
    /// Current firmware version.
    pub current_version: FirmwareVersion,
    /// Committed firmware version.
    pub committed_version: FirmwareVersion,
    /// The TCB at the time the guest was launched.
    pub launch_tcb: TcbVersion,
    /// LAUNCH_MIT_VECTOR (version 5 and later).
    pub launch_mit_vector: Option<u64>,
    /// CURRENT_MIT_VECTOR (version 5 and later).
    pub current_mit_vector: Option<u64>,
    bytes: Box<[u8; REPORT_LEN]>,
}

fn array<const N: usize>(bytes: &[u8], offset: usize) -> Result<[u8; N], Error> {
    offset
        .checked_add(N)
        .and_then(|end| bytes.get(offset..end))
        .and_then(|s| s.try_into().ok())
        .ok_or(Error::ReportLength(bytes.len()))
}

fn u32_at(bytes: &[u8], offset: usize) -> Result<u32, Error> {
    array(bytes, offset).map(u32::from_le_bytes)
}

fn u64_at(bytes: &[u8], offset: usize) -> Result<u64, Error> {
    array(bytes, offset).map(u64::from_le_bytes)
}

fn version_at(bytes: &[u8], offset: usize) -> Result<FirmwareVersion, Error> {
    let [build, minor, major] = array(bytes, offset)?;
    Ok(FirmwareVersion {
        build,
        minor,
        major,
    })
}

impl AttestationReport {
    /// Parses a 1184-byte report. Versions 2, 3 and 5 are known; any
    /// other version, or another length, is an error. The signature is not
    /// checked here (see [`crate::Verifier`]).
    pub fn parse(bytes: &[u8]) -> Result<AttestationReport, Error> {
        let owned: Box<[u8; REPORT_LEN]> = bytes
            .try_into()
            .map(Box::new)
            .map_err(|_| Error::ReportLength(bytes.len()))?;
        let b = &owned[..];
        let version = u32_at(b, 0x00)?;
        if !matches!(version, 2 | 3 | 5) {
            return Err(Error::UnsupportedReportVersion(version));
        }
        let cpuid = if version >= 3 {
            let [family, model, stepping] = array(b, 0x188)?;
            Some(Cpuid {
                family,
                model,
                stepping,
            })
        } else {
            None
        };
        let layout = match cpuid {
            Some(Cpuid { family: 0x1a, .. }) => TcbLayout::Turin,
            _ => TcbLayout::MilanGenoa,
        };
        let tcb = |offset| u64_at(b, offset).map(|raw| TcbVersion::from_raw(raw, layout));
        let key_info = u32_at(b, 0x48)?;
        let signing_key = match (key_info >> 2 & 7) as u8 {
            0 => SigningKey::Vcek,
            1 => SigningKey::Vlek,
            7 => SigningKey::None,
            other => SigningKey::Reserved(other),
        };
        let (launch_mit_vector, current_mit_vector) = if version >= 5 {
            (Some(u64_at(b, 0x1F8)?), Some(u64_at(b, 0x200)?))
        } else {
            (None, None)
        };
        Ok(AttestationReport {
            version,
            guest_svn: u32_at(b, 0x04)?,
            policy: GuestPolicy(u64_at(b, 0x08)?),
            family_id: array(b, 0x10)?,
            image_id: array(b, 0x20)?,
            vmpl: u32_at(b, 0x30)?,
            signature_algo: u32_at(b, 0x34)?,
            current_tcb: tcb(0x38)?,
            platform_info: u64_at(b, 0x40)?,
            author_key_en: key_info & 1 == 1,
            mask_chip_key: key_info >> 1 & 1 == 1,
            signing_key,
            report_data: array(b, 0x50)?,
            measurement: array(b, 0x90)?,
            host_data: array(b, 0xC0)?,
            id_key_digest: array(b, 0xE0)?,
            author_key_digest: array(b, 0x110)?,
            report_id: array(b, 0x140)?,
            report_id_ma: array(b, 0x160)?,
            reported_tcb: tcb(0x180)?,
            cpuid,
            chip_id: array(b, 0x1A0)?,
            committed_tcb: tcb(0x1E0)?,
            current_version: version_at(b, 0x1E8)?,
            committed_version: version_at(b, 0x1EC)?,
            launch_tcb: tcb(0x1F0)?,
            launch_mit_vector,
            current_mit_vector,
            bytes: owned,
        })
    }

    /// The report's 1184 bytes, as parsed.
    pub fn as_bytes(&self) -> &[u8; REPORT_LEN] {
        &self.bytes
    }

    /// The signed part: bytes `0..0x2A0`.
    pub fn signed_bytes(&self) -> &[u8] {
        self.bytes.get(..SIGNED_LEN).unwrap_or_default()
    }

    /// The signature's R field: 72 bytes, little-endian; only the first
    /// 48 are significant for P-384.
    pub fn signature_r(&self) -> [u8; SIG_COMPONENT_LEN] {
        array(&self.bytes[..], SIGNED_LEN).unwrap_or([0; SIG_COMPONENT_LEN])
    }

    /// The signature's S field: 72 bytes, little-endian; only the first
    /// 48 are significant for P-384.
    pub fn signature_s(&self) -> [u8; SIG_COMPONENT_LEN] {
        array(&self.bytes[..], SIGNED_LEN + SIG_COMPONENT_LEN).unwrap_or([0; SIG_COMPONENT_LEN])
    }

    /// The TCB layout the TCB fields were read with.
    pub fn tcb_layout(&self) -> TcbLayout {
        match self.cpuid {
            Some(Cpuid { family: 0x1a, .. }) => TcbLayout::Turin,
            _ => TcbLayout::MilanGenoa,
        }
    }

    /// A readable multi-line dump, byte strings in lowercase hex.
    pub fn describe(&self) -> String {
        self.to_string()
    }
}

impl fmt::Debug for AttestationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttestationReport")
            .field("version", &self.version)
            .field("policy", &format_args!("{:#x}", self.policy.0))
            .field("vmpl", &self.vmpl)
            .field("signing_key", &self.signing_key)
            .field("report_data", &hex::encode(self.report_data))
            .field("measurement", &hex::encode(self.measurement))
            .field("host_data", &hex::encode(self.host_data))
            .field("reported_tcb", &self.reported_tcb)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for AttestationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.policy;
        let raw = |offset: usize| u64_at(&self.bytes[..], offset).unwrap_or(0);
        writeln!(f, "SEV-SNP attestation report")?;
        writeln!(f, "  version:            {}", self.version)?;
        writeln!(f, "  guest_svn:          {}", self.guest_svn)?;
        writeln!(
            f,
            "  policy:             {:#018x} (abi {}.{}, smt {}, migrate_ma {}, debug {}, single_socket {})",
            p.0,
            p.abi_major(),
            p.abi_minor(),
            p.smt(),
            p.migrate_ma(),
            p.debug(),
            p.single_socket()
        )?;
        writeln!(f, "  family_id:          {}", hex::encode(self.family_id))?;
        writeln!(f, "  image_id:           {}", hex::encode(self.image_id))?;
        writeln!(f, "  vmpl:               {}", self.vmpl)?;
        writeln!(f, "  signature_algo:     {}", self.signature_algo)?;
        for (name, tcb, offset) in [
            ("current_tcb", &self.current_tcb, 0x38),
            ("reported_tcb", &self.reported_tcb, 0x180),
            ("committed_tcb", &self.committed_tcb, 0x1E0),
            ("launch_tcb", &self.launch_tcb, 0x1F0),
        ] {
            writeln!(f, "  {name:<19} {:#018x} ({tcb})", raw(offset))?;
        }
        writeln!(f, "  platform_info:      {:#x}", self.platform_info)?;
        writeln!(
            f,
            "  key_info:           signing_key {}, author_key_en {}, mask_chip_key {}",
            self.signing_key.name(),
            self.author_key_en,
            self.mask_chip_key
        )?;
        for (name, value) in [
            ("report_data", &self.report_data[..]),
            ("measurement", &self.measurement[..]),
            ("host_data", &self.host_data[..]),
            ("id_key_digest", &self.id_key_digest[..]),
            ("author_key_digest", &self.author_key_digest[..]),
            ("report_id", &self.report_id[..]),
            ("report_id_ma", &self.report_id_ma[..]),
            ("chip_id", &self.chip_id[..]),
        ] {
            writeln!(f, "  {name:<19} {}", hex::encode(value))?;
        }
        if let Some(c) = self.cpuid {
            writeln!(
                f,
                "  cpuid:              family {:#x}, model {:#x}, stepping {:#x}",
                c.family, c.model, c.stepping
            )?;
        }
        writeln!(f, "  current_version:    {}", self.current_version)?;
        writeln!(f, "  committed_version:  {}", self.committed_version)?;
        if let (Some(l), Some(c)) = (self.launch_mit_vector, self.current_mit_vector) {
            writeln!(f, "  launch_mit_vector:  {l:#x}")?;
            writeln!(f, "  current_mit_vector: {c:#x}")?;
        }
        writeln!(
            f,
            "  signature.r:        {}",
            hex::encode(self.signature_r())
        )?;
        write!(
            f,
            "  signature.s:        {}",
            hex::encode(self.signature_s())
        )
    }
}
