//! The start-up sequences of `testdata/check/`, run under confsum's
//! framework and under hcsshim's real one.
//!
//! hcsshim's `framework.rego` and `api.rego` (MIT) ship in the regorus crate
//! package, under `tests/aci/`; `cargo metadata` finds the package in the
//! local registry. Both frameworks run in the same enforcer loop (the Go
//! side, emulated), so any difference is a difference of the frameworks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use confsum_policy::check::{Decision, Enforcer, Reason};
use support::cases::{Case, hcsshim_framework, load_all, repo_root};

fn cases() -> Vec<Case> {
    let cases = load_all(&repo_root(env!("CARGO_MANIFEST_DIR")));
    assert!(cases.len() >= 40, "only {} sequences", cases.len());
    cases
}

fn messages(d: &Decision) -> Vec<String> {
    d.reasons.iter().map(ToString::to_string).collect()
}

#[test]
fn confsum_framework_decides_as_the_cases_say() {
    let mut failures = Vec::new();
    for case in cases() {
        let mut enforcer =
            Enforcer::new(&case.policy).unwrap_or_else(|e| panic!("{}: {e:?}", case.name));
        for step in &case.steps {
            let d = enforcer.decide(&step.request);
            let at = format!("{}: {}", case.name, step.label);
            if d.allowed != step.allowed {
                failures.push(format!(
                    "{at}: allowed={} reasons={:?}",
                    d.allowed,
                    messages(&d)
                ));
                break;
            }
            if !d.allowed && d.reasons.is_empty() {
                failures.push(format!("{at}: denied without a reason"));
            }
            if let Some(want) = &step.reasons {
                let mut want = want.clone();
                want.sort();
                let mut got = messages(&d);
                got.sort();
                if got != want {
                    failures.push(format!("{at}: reasons {got:?}, want {want:?}"));
                }
            }
            if let Some(want) = &step.env_list {
                if d.env_list.as_ref() != Some(want) {
                    failures.push(format!("{at}: env_list {:?}, want {want:?}", d.env_list));
                }
            }
            if let Some(want) = &step.caps_list {
                if d.caps_list.as_ref() != Some(want) {
                    failures.push(format!("{at}: caps_list {:?}, want {want:?}", d.caps_list));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn confsum_framework_agrees_with_hcsshim_framework() {
    let theirs = hcsshim_framework(&repo_root(env!("CARGO_MANIFEST_DIR")));
    let mut failures = Vec::new();
    let mut steps = 0;
    let cases = cases();
    for case in &cases {
        let mut ours =
            Enforcer::new(&case.policy).unwrap_or_else(|e| panic!("{}: {e:?}", case.name));
        let mut oracle = Enforcer::with_framework(&case.policy, &theirs)
            .unwrap_or_else(|e| panic!("{}: hcsshim framework: {e:?}", case.name));
        for step in &case.steps {
            steps += 1;
            let a = ours.decide(&step.request);
            let b = oracle.decide(&step.request);
            let at = format!("{}: {}", case.name, step.label);
            if a.allowed != b.allowed {
                failures.push(format!(
                    "{at}: confsum allowed={} {:?}, hcsshim allowed={} {:?}",
                    a.allowed,
                    messages(&a),
                    b.allowed,
                    messages(&b)
                ));
                break;
            }
            if a.result != b.result {
                failures.push(format!(
                    "{at}: results differ\n  confsum {}\n  hcsshim {}",
                    serde_json::Value::Object(a.result.clone()),
                    serde_json::Value::Object(b.result.clone())
                ));
            }
            if a.metadata != b.metadata {
                failures.push(format!(
                    "{at}: metadata operations differ\n  confsum {:?}\n  hcsshim {:?}",
                    a.metadata, b.metadata
                ));
            }
            if ours.metadata() != oracle.metadata() {
                failures.push(format!("{at}: metadata state differs"));
                break;
            }
            // hcsshim gives no reason for some denials (switches, some
            // signals); where it gives reasons, ours must be among them.
            let unexplained = [Reason::Unexplained];
            let rb = if b.reasons == unexplained {
                Vec::new()
            } else {
                messages(&b)
            };
            let ra = messages(&a);
            let invalid = a
                .reasons
                .iter()
                .any(|r| matches!(r, Reason::InvalidPolicy(_)));
            if !a.allowed && !rb.is_empty() && !invalid && !ra.iter().all(|r| rb.contains(r)) {
                failures.push(format!(
                    "{at}: confsum reasons {ra:?} not among hcsshim's {rb:?}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences over {} sequences ({steps} steps):\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
