//! Arbitrary bytes -> the policy checker of `confsum-policy`. Any panic is a
//! bug; errors and denials are the expected outcome for almost every input.
//!
//! The first byte picks what the rest is (modulo 3):
//! - 0: a policy document (Rego or an ARM template), given to
//!   `decode_policy` and, if that works, to `Enforcer::new`;
//! - 1: a start-up sequence (JSON), run against the basic vector policy;
//! - 2: the input of one rule (the second byte picks it), put to the basic
//!   vector policy after the pod's layers are mounted.
//!
//! Invariants: a denial always has a reason; a request that parsed turns
//! into an input that parses back to the same request.
#![no_main]

use std::sync::OnceLock;

use confsum_policy::check::{Enforcer, Request, Rule, Sequence, decode_policy};
use libfuzzer_sys::fuzz_target;

const BASIC: &str = include_str!("../../../shared/vectors/policy/basic/expected.rego");

fn basic() -> &'static Enforcer {
    static ENFORCER: OnceLock<Enforcer> = OnceLock::new();
    ENFORCER.get_or_init(|| Enforcer::new(BASIC).expect("the basic vector loads"))
}

fn check(enforcer: &mut Enforcer, request: &Request) {
    let decision = enforcer.decide(request);
    assert!(decision.allowed || !decision.reasons.is_empty(), "{decision:?}");
    if !matches!(request, Request::LoadFragment(_)) {
        let again = Request::from_input(request.rule(), request.to_input()).expect("round trip");
        assert_eq!(&again, request);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            if let Ok(policy) = decode_policy(rest) {
                if let Ok(mut enforcer) = Enforcer::new(&policy) {
                    let _ = enforcer.decide(&Request::GetProperties);
                }
            }
        }
        1 => {
            if let Ok(sequence) = Sequence::from_json(rest) {
                let mut enforcer = basic().clone();
                for request in sequence.steps.iter().take(64) {
                    check(&mut enforcer, request);
                }
            }
        }
        _ => {
            let Some((&pick, json)) = rest.split_first() else {
                return;
            };
            let rule = Rule::ALL[usize::from(pick) % Rule::ALL.len()];
            let Ok(input) = serde_json::from_slice::<serde_json::Value>(json) else {
                return;
            };
            if let Ok(request) = Request::from_input(rule, input) {
                check(&mut basic().clone(), &request);
            }
        }
    }
});
