//! Checking requests against a CCE policy, as the utility VM would.
//!
//! A CCE policy lists what may run; the decisions themselves are made by an
//! enforcement framework that the guest agent (hcsshim's GCS) supplies and
//! evaluates with OPA. [`Enforcer`] does the same with regorus:
//! confsum's own framework ([`Framework::confsum`], Rego written for this
//! crate with the semantics of hcsshim's framework 0.3.0, api 0.10.0, which
//! policies of framework 0.2.3 such as `az confcom` 1.4.3 writes are checked
//! with) and the Go side's loop around it: state kept between calls
//! (mounted devices, overlays, started containers, scratch, loaded
//! fragments), the rules' defaults by api version, the guest's default
//! mounts, and the reasons for a denial.
//!
//! Known differences from hcsshim releases newer than that framework:
//! those anchor `re2` environment rules (`^...$`, since 2025), check
//! `mount_device` targets against `/run/mounts/scsi/m[0-9]+` (2026), and
//! let policies older than framework 0.4.1 send SIGTERM and SIGKILL to a
//! container's init process (2026). Here, as in framework 0.3.0, an `re2`
//! rule matches anywhere in `NAME=value`, any target is accepted, and
//! signals need the policy's `signals`.
//!
//! ```
//! use confsum_policy::check::{Enforcer, Reason, Sequence};
//!
//! // A policy in az confcom's shape, cut down to one container and one rule.
//! let policy = r#"package policy
//!
//! api_version := "0.10.0"
//! framework_version := "0.2.3"
//!
//! containers := [{"layers": ["16b514057a06ad665f92c02863aca074fd5976c755d26bff16365299169e8415"]}]
//!
//! mount_device := data.framework.mount_device
//! reason := {"errors": data.framework.errors}
//! "#;
//! let mut enforcer = Enforcer::new(policy)?;
//! let steps = Sequence::from_json(br#"[
//!   {"rule": "mount_device", "input": {"target": "/run/mounts/scsi/m0",
//!     "deviceHash": "16b514057a06ad665f92c02863aca074fd5976c755d26bff16365299169e8415"}},
//!   {"rule": "mount_device", "input": {"target": "/run/mounts/scsi/m1",
//!     "deviceHash": "0000000000000000000000000000000000000000000000000000000000000000"}}
//! ]"#)?;
//! let decisions = enforcer.run(&steps.steps);
//! assert!(decisions[0].allowed);
//! assert!(!decisions[1].allowed);
//! assert_eq!(decisions[1].reasons, [Reason::DeviceHashNotFound]);
//! // The guest remembers what is mounted where.
//! assert!(enforcer.metadata()["devices"].get("/run/mounts/scsi/m0").is_some());
//! # Ok::<(), confsum_policy::Error>(())
//! ```
//!
//! Why regorus and not a hand-written checker: the policy is Rego, can
//! override any rule, and its `host_data` pins its exact text, so the only
//! faithful reading of it is a Rego interpreter.

mod decision;
mod document;
mod enforcer;
mod request;
mod sequence;

pub use decision::{Decision, MetadataAction, MetadataOp, Reason};
pub use document::{DocumentError, decode_policy};
pub use enforcer::{Enforcer, Framework};
pub use request::{
    Capabilities, CreateContainer, ExecExternal, ExecInContainer, IdName, LoadFragment, Mount,
    MountDevice, MountOverlay, Plan9Mount, Request, RequestError, Rule, ScratchMount,
    ShutdownContainer, SignalContainerProcess, Unmount,
};
pub use sequence::Sequence;
