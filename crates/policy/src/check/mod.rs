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
