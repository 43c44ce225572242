//! Release policies: evaluation table, parse errors, JSON round trips.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use confsum_skr::{
    BranchFailure, ClaimValue, Combinator, Condition, Decision, Error, FailureKind, Operator,
    PolicyProblem, PolicyVersion, ReleasePolicy,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const MAA: &str = "https://sharedeus.eus.attest.azure.net";
const HOST_DATA: &str = "73973b78d70cc68353426de188db5dfc57e5b766e399935fb73a61127ea26d20";

/// Claims shaped as MAA issues them for SevSnpVM, plus odd values.
fn claims() -> Map<String, Value> {
    let value = json!({
        "iss": MAA,
        "x-ms-attestation-type": "sevsnpvm",
        "x-ms-compliance-status": "azure-compliant-uvm",
        "x-ms-sevsnpvm-hostdata": HOST_DATA,
        "x-ms-sevsnpvm-is-debuggable": false,
        "x-ms-sevsnpvm-vmpl": 0,
        "x-ms-sevsnpvm-bootloader-svn": 3,
        "x-ms-ver": "1.0",
        "x-ms-isolation-tee": {
            "x-ms-attestation-type": "sevsnpvm",
            "x-ms-compliance-status": "azure-compliant-cvm",
        },
        "x-ms-runtime": {"keys": [{"kty": "RSA", "kid": "k"}]},
        "nullclaim": null,
        "listclaim": [1, 2],
        "ratio": 1.5,
        "big": u64::MAX,
    });
    value.as_object().unwrap().clone()
}

fn one(condition: Value) -> ReleasePolicy {
    ReleasePolicy::from_json(&json!({
        "version": "1.0.0",
        "anyOf": [{"authority": MAA, "allOf": [condition]}],
    }))
    .unwrap()
}

fn failures(decision: &Decision) -> Vec<FailureKind> {
    match decision {
        Decision::Allowed { .. } => vec![],
        Decision::Denied(denial) => denial
            .branches
            .iter()
            .flat_map(|b| match &b.reason {
                BranchFailure::Claims(f) => f.iter().map(|f| f.kind).collect(),
                BranchFailure::WrongAuthority { .. } => vec![],
            })
            .collect(),
    }
}

/// Every operator, with the comparison choices the module docs list.
#[test]
fn claim_condition_table() {
    use FailureKind::{Mismatch, Missing, Present, TypeMismatch};
    let c = claims();
    #[rustfmt::skip]
    let table: Vec<(Value, Option<FailureKind>)> = vec![
        // equals: strings exact and case-sensitive.
        (json!({"claim": "x-ms-sevsnpvm-hostdata", "equals": HOST_DATA}), None),
        (json!({"claim": "x-ms-sevsnpvm-hostdata", "equals": HOST_DATA.to_uppercase()}), Some(Mismatch)),
        (json!({"claim": "x-ms-compliance-status", "equals": "azure-compliant-uvm "}), Some(Mismatch)),
        // equals: booleans, and their string forms in any case (the recipe's "false").
        (json!({"claim": "x-ms-sevsnpvm-is-debuggable", "equals": false}), None),
        (json!({"claim": "x-ms-sevsnpvm-is-debuggable", "equals": "false"}), None),
        (json!({"claim": "x-ms-sevsnpvm-is-debuggable", "equals": "False"}), None),
        (json!({"claim": "x-ms-sevsnpvm-is-debuggable", "equals": true}), Some(Mismatch)),
        (json!({"claim": "x-ms-sevsnpvm-is-debuggable", "equals": "true"}), Some(Mismatch)),
        (json!({"claim": "x-ms-sevsnpvm-is-debuggable", "equals": "no"}), Some(TypeMismatch)),
        (json!({"claim": "x-ms-sevsnpvm-is-debuggable", "equals": 0}), Some(TypeMismatch)),
        // equals: numbers, and strings that are JSON numbers (the recipe's "0").
        (json!({"claim": "x-ms-sevsnpvm-vmpl", "equals": 0}), None),
        (json!({"claim": "x-ms-sevsnpvm-vmpl", "equals": "0"}), None),
        (json!({"claim": "x-ms-sevsnpvm-vmpl", "equals": 0.0}), None),
        (json!({"claim": "x-ms-sevsnpvm-vmpl", "equals": "1"}), Some(Mismatch)),
        (json!({"claim": "x-ms-sevsnpvm-vmpl", "equals": " 0"}), Some(TypeMismatch)),
        (json!({"claim": "x-ms-sevsnpvm-vmpl", "equals": "00"}), Some(TypeMismatch)),
        (json!({"claim": "x-ms-sevsnpvm-vmpl", "equals": false}), Some(TypeMismatch)),
        (json!({"claim": "big", "equals": u64::MAX}), None),
        (json!({"claim": "big", "equals": u64::MAX - 1}), Some(Mismatch)),
        // A string claim against a number: read as a number.
        (json!({"claim": "x-ms-ver", "equals": 1}), None),
        (json!({"claim": "x-ms-attestation-type", "equals": 1}), Some(TypeMismatch)),
        // Objects, arrays, null and absent claims.
        (json!({"claim": "x-ms-isolation-tee", "equals": "x"}), Some(TypeMismatch)),
        (json!({"claim": "listclaim", "equals": 1}), Some(TypeMismatch)),
        (json!({"claim": "nullclaim", "equals": "null"}), Some(Missing)),
        (json!({"claim": "x-ms-nonexistent", "equals": "x"}), Some(Missing)),
        // Nested paths.
        (json!({"claim": "x-ms-isolation-tee.x-ms-compliance-status", "equals": "azure-compliant-cvm"}), None),
        (json!({"claim": "x-ms-isolation-tee.x-ms-compliance-status", "equals": "azure-compliant-uvm"}), Some(Mismatch)),
        (json!({"claim": "x-ms-isolation-tee.missing", "equals": "x"}), Some(Missing)),
        (json!({"claim": "listclaim.0", "equals": 1}), Some(Missing)),
        (json!({"claim": "x-ms-ver.x", "equals": 1}), Some(Missing)),
        (json!({"claim": "x-ms-runtime.keys", "exists": true}), None),
        // notEquals: present and different; never on absence or mismatch.
        (json!({"claim": "x-ms-sevsnpvm-hostdata", "notEquals": "00"}), None),
        (json!({"claim": "x-ms-sevsnpvm-hostdata", "notEquals": HOST_DATA}), Some(Mismatch)),
        (json!({"claim": "x-ms-sevsnpvm-is-debuggable", "notEquals": "true"}), None),
        (json!({"claim": "x-ms-nonexistent", "notEquals": "x"}), Some(Missing)),
        (json!({"claim": "x-ms-sevsnpvm-is-debuggable", "notEquals": "maybe"}), Some(TypeMismatch)),
        // Ordering: the claim is the left operand.
        (json!({"claim": "x-ms-sevsnpvm-bootloader-svn", "greaterOrEquals": 3}), None),
        (json!({"claim": "x-ms-sevsnpvm-bootloader-svn", "greaterOrEquals": "2"}), None),
        (json!({"claim": "x-ms-sevsnpvm-bootloader-svn", "greaterOrEquals": 4}), Some(Mismatch)),
        (json!({"claim": "x-ms-sevsnpvm-bootloader-svn", "greater": 3}), Some(Mismatch)),
        (json!({"claim": "x-ms-sevsnpvm-bootloader-svn", "greater": 2.5}), None),
        (json!({"claim": "x-ms-sevsnpvm-bootloader-svn", "less": 4}), None),
        (json!({"claim": "x-ms-sevsnpvm-bootloader-svn", "less": 3}), Some(Mismatch)),
        (json!({"claim": "x-ms-sevsnpvm-bootloader-svn", "lessOrEquals": 3}), None),
        (json!({"claim": "x-ms-sevsnpvm-bootloader-svn", "lessOrEquals": 2}), Some(Mismatch)),
        (json!({"claim": "x-ms-sevsnpvm-bootloader-svn", "less": "abc"}), Some(TypeMismatch)),
        (json!({"claim": "ratio", "less": 2}), None),
        (json!({"claim": "big", "greater": 1}), None),
        (json!({"claim": "x-ms-attestation-type", "greater": "abc"}), None),
        (json!({"claim": "x-ms-attestation-type", "less": "abc"}), Some(Mismatch)),
        (json!({"claim": "x-ms-sevsnpvm-is-debuggable", "less": true}), Some(TypeMismatch)),
        (json!({"claim": "x-ms-nonexistent", "greater": 1}), Some(Missing)),
        // exists.
        (json!({"claim": "x-ms-sevsnpvm-hostdata", "exists": true}), None),
        (json!({"claim": "x-ms-sevsnpvm-hostdata", "exists": "true"}), None),
        (json!({"claim": "x-ms-sevsnpvm-hostdata", "exists": false}), Some(Present)),
        (json!({"claim": "x-ms-nonexistent", "exists": false}), None),
        (json!({"claim": "x-ms-nonexistent", "exists": true}), Some(Missing)),
        (json!({"claim": "nullclaim", "exists": true}), Some(Missing)),
    ];
    let mut seen = std::collections::HashSet::new();
    for (condition, want) in table {
        let policy = one(condition.clone());
        if let Condition::Claim(c) = &policy.any_of[0].conditions[0] {
            seen.insert(c.operator.as_str());
        }
        let decision = policy.evaluate(MAA, &c);
        match want {
            None => assert!(
                decision.is_allowed(),
                "{condition} should hold: {decision:?}"
            ),
            Some(kind) => assert_eq!(failures(&decision), vec![kind], "{condition}"),
        }
    }
    for op in Operator::ALL {
        assert!(seen.contains(op.as_str()), "no case for {op}");
    }
}

#[test]
fn branches_groups_and_authorities() {
    let c = claims();
    let host = |v: &str| json!({"claim": "x-ms-sevsnpvm-hostdata", "equals": v});
    let ok = json!({"claim": "x-ms-sevsnpvm-vmpl", "equals": "0"});
    let cases: Vec<(Value, Result<usize, &str>)> = vec![
        // Several branches: the second one holds.
        (
            json!({"version": "1.0.0", "anyOf": [
                {"authority": MAA, "allOf": [host("00")]},
                {"authority": MAA, "allOf": [host(HOST_DATA), ok]},
            ]}),
            Ok(1),
        ),
        // Trailing slash and upper case in the authority still match.
        (
            json!({"version": "0.2", "anyOf": [
                {"authority": "https://SharedEUS.eus.attest.azure.net/", "allOf": [ok]},
            ]}),
            Ok(0),
        ),
        // Scheme-less authority, as importkeyconfig's endpoint.
        (
            json!({"version": "1.0.0", "anyOf": [
                {"authority": "sharedeus.eus.attest.azure.net", "anyOf": [host("00"), ok]},
            ]}),
            Ok(0),
        ),
        // Nested: allOf[ok, anyOf[fail, allOf[ok, ok]]].
        (
            json!({"version": "1.0.0", "anyOf": [
                {"authority": MAA, "allOf": [ok, {"anyOf": [host("00"), {"allOf": [ok, host(HOST_DATA)]}]}]},
            ]}),
            Ok(0),
        ),
        // Nested, failing: allOf[anyOf[fail, fail]] lists both.
        (
            json!({"version": "1.0.0", "anyOf": [
                {"authority": MAA, "allOf": [ok, {"anyOf": [host("00"), host("11")]}]},
            ]}),
            Err("$.anyOf[0].allOf[1].anyOf[0] $.anyOf[0].allOf[1].anyOf[1]"),
        ),
        // Wrong authority, and http for https.
        (
            json!({"version": "1.0.0", "anyOf": [
                {"authority": "https://other.attest.azure.net", "allOf": [ok]},
                {"authority": "http://sharedeus.eus.attest.azure.net", "allOf": [ok]},
            ]}),
            Err("authority authority"),
        ),
    ];
    for (policy, want) in cases {
        let decision = ReleasePolicy::from_json(&policy).unwrap().evaluate(MAA, &c);
        match (want, &decision) {
            (Ok(branch), Decision::Allowed { branch: b }) => assert_eq!(branch, *b, "{policy}"),
            (Err(paths), Decision::Denied(denial)) => {
                let got: Vec<String> = denial
                    .branches
                    .iter()
                    .flat_map(|b| match &b.reason {
                        BranchFailure::WrongAuthority { issuer } => {
                            assert_eq!(issuer, MAA);
                            vec!["authority".to_owned()]
                        }
                        BranchFailure::Claims(f) => f.iter().map(|f| f.path.clone()).collect(),
                    })
                    .collect();
                assert_eq!(got.join(" "), paths, "{policy}");
            }
            _ => panic!("{policy}: {decision:?}"),
        }
    }
}

#[test]
fn denial_names_claim_expected_and_actual() {
    let policy = ReleasePolicy::from_json(&json!({"version": "1.0.0", "anyOf": [
        {"authority": MAA, "allOf": [
            {"claim": "x-ms-sevsnpvm-hostdata", "equals": "00ff"},
            {"claim": "x-ms-sevsnpvm-vmpl", "equals": "0"},
            {"claim": "x-ms-missing", "exists": true},
        ]},
        {"authority": "https://other.example", "allOf": [{"claim": "a", "equals": 1}]},
    ]}))
    .unwrap();
    let Decision::Denied(denial) = policy.evaluate(MAA, &claims()) else {
        panic!("allowed");
    };
    assert_eq!(
        denial.to_string(),
        format!(
            "branch 0 (authority {MAA}): claim x-ms-sevsnpvm-hostdata equals \"00ff\": actual \"{HOST_DATA}\", \
             claim x-ms-missing exists true: claim is absent; \
             branch 1 (authority https://other.example): token issuer {MAA} is not this authority"
        )
    );
    let BranchFailure::Claims(f) = &denial.branches[0].reason else {
        panic!()
    };
    assert_eq!(f[0].expected, ClaimValue::String("00ff".into()));
    assert_eq!(f[0].actual, Some(json!(HOST_DATA)));
    assert_eq!(f[0].path, "$.anyOf[0].allOf[0]");
}

#[test]
fn parse_errors_say_where() {
    let deep = (0..20).fold(
        json!({"claim": "a", "equals": 1}),
        |c, _| json!({"allOf": [c]}),
    );
    let branch = |conditions: Value| json!({"version": "1.0.0", "anyOf": [{"authority": MAA, "allOf": conditions}]});
    let cases: Vec<(Value, &str, PolicyProblem)> = vec![
        (json!([]), "$", PolicyProblem::NotObject),
        (json!({"anyOf": []}), "$", PolicyProblem::Missing("version")),
        (
            json!({"version": "2.0", "anyOf": []}),
            "$",
            PolicyProblem::Version("2.0".into()),
        ),
        (
            json!({"version": "1.0.0"}),
            "$",
            PolicyProblem::Missing("anyOf"),
        ),
        (
            json!({"version": "1.0.0", "anyOf": []}),
            "$.anyOf",
            PolicyProblem::Empty,
        ),
        (
            json!({"version": "1.0.0", "anyOf": {}}),
            "$.anyOf",
            PolicyProblem::NotArray,
        ),
        (
            json!({"version": "1.0.0", "anyOf": [{"allOf": [{"claim": "a", "equals": 1}]}]}),
            "$.anyOf[0]",
            PolicyProblem::Missing("authority"),
        ),
        (
            json!({"version": "1.0.0", "anyOf": [{"authority": MAA}]}),
            "$.anyOf[0]",
            PolicyProblem::Missing("allOf"),
        ),
        (
            json!({"version": "1.0.0", "anyOf": [{"authority": MAA, "allOf": [], "anyOf": []}]}),
            "$.anyOf[0]",
            PolicyProblem::Conflict("anyOf".into(), "allOf".into()),
        ),
        (
            json!({"version": "1.0.0", "anyOf": [{"authority": "", "allOf": []}]}),
            "$.anyOf[0].authority",
            PolicyProblem::NotString,
        ),
        (
            json!({"version": "1.0.0", "extra": 1, "anyOf": []}),
            "$",
            PolicyProblem::UnknownMember("extra".into()),
        ),
        (branch(json!([])), "$.anyOf[0].allOf", PolicyProblem::Empty),
        (
            branch(json!([{"claim": "a", "equal": "x"}])),
            "$.anyOf[0].allOf[0]",
            PolicyProblem::UnknownMember("equal".into()),
        ),
        (
            branch(json!([{"claim": "a"}])),
            "$.anyOf[0].allOf[0]",
            PolicyProblem::Missing("equals"),
        ),
        (
            branch(json!([{"claim": "a", "equals": 1, "notEquals": 2}])),
            "$.anyOf[0].allOf[0]",
            PolicyProblem::Conflict("equals".into(), "notEquals".into()),
        ),
        (
            branch(json!([{"claim": "a", "equals": 1, "Equals": 2}])),
            "$.anyOf[0].allOf[0]",
            PolicyProblem::Conflict("Equals".into(), "equals".into()),
        ),
        (
            branch(json!([{"claim": "a", "equals": {"x": 1}}])),
            "$.anyOf[0].allOf[0].equals",
            PolicyProblem::BadValue,
        ),
        (
            branch(json!([{"claim": "a", "equals": null}])),
            "$.anyOf[0].allOf[0].equals",
            PolicyProblem::BadValue,
        ),
        (
            branch(json!([{"claim": "a", "exists": 5}])),
            "$.anyOf[0].allOf[0].exists",
            PolicyProblem::BadExists,
        ),
        (
            branch(json!([{"claim": 5, "equals": 1}])),
            "$.anyOf[0].allOf[0].claim",
            PolicyProblem::NotString,
        ),
        (
            branch(json!([{"claim": "a", "equals": 1, "anyOf": [{"claim": "b", "equals": 1}]}])),
            "$.anyOf[0].allOf[0]",
            PolicyProblem::UnknownMember("claim".into()),
        ),
        (branch(json!([deep])), "", PolicyProblem::TooDeep(16)),
    ];
    for (json, want_path, want) in cases {
        match ReleasePolicy::from_json(&json) {
            Err(Error::Policy { path, problem }) => {
                assert_eq!(problem, want, "{json}");
                if !want_path.is_empty() {
                    assert_eq!(path, want_path, "{json}");
                }
            }
            other => panic!("{json}: {other:?}"),
        }
    }
    assert!(matches!(
        ReleasePolicy::decode(b"{not json"),
        Err(Error::Json { .. })
    ));
    assert!(matches!(
        ReleasePolicy::decode_base64url("***"),
        Err(Error::Encoding { .. })
    ));
}

#[test]
fn member_names_are_case_insensitive_on_read() {
    let policy = ReleasePolicy::from_json(&json!({"Version": "1.0.0", "anyof": [
        {"Authority": MAA, "ALLOF": [{"Claim": "x-ms-sevsnpvm-vmpl", "EQUALS": 0}]},
    ]}))
    .unwrap();
    assert_eq!(policy.any_of[0].combinator, Combinator::AllOf);
    assert_eq!(
        String::from_utf8(policy.encode()).unwrap(),
        format!(
            r#"{{"version":"1.0.0","anyOf":[{{"authority":"{MAA}","allOf":[{{"claim":"x-ms-sevsnpvm-vmpl","equals":0}}]}}]}}"#
        )
    );
}

fn value_strategy() -> impl Strategy<Value = ClaimValue> {
    prop_oneof![
        ".{0,12}".prop_map(ClaimValue::String),
        any::<i64>().prop_map(|n| ClaimValue::Number(n.into())),
        any::<u64>().prop_map(|n| ClaimValue::Number(n.into())),
        (-1e300f64..1e300)
            .prop_map(|f| ClaimValue::Number(serde_json::Number::from_f64(f).unwrap())),
        any::<bool>().prop_map(ClaimValue::Bool),
    ]
}

fn claim_strategy() -> impl Strategy<Value = Condition> {
    let op = prop::sample::select(Operator::ALL.to_vec());
    ("[a-z.-]{1,10}", op, value_strategy(), any::<bool>()).prop_map(
        |(claim, operator, value, b)| {
            let value = if operator == Operator::Exists {
                ClaimValue::Bool(b)
            } else {
                value
            };
            Condition::Claim(confsum_skr::ClaimCondition {
                claim,
                operator,
                value,
            })
        },
    )
}

fn combinator() -> impl Strategy<Value = Combinator> {
    prop_oneof![Just(Combinator::AnyOf), Just(Combinator::AllOf)]
}

fn condition_strategy() -> impl Strategy<Value = Condition> {
    claim_strategy().prop_recursive(3, 24, 4, |inner| {
        (combinator(), prop::collection::vec(inner, 1..4))
            .prop_map(|(c, children)| Condition::Group(c, children))
    })
}

fn policy_strategy() -> impl Strategy<Value = ReleasePolicy> {
    let branch = (
        "https://[a-z]{1,8}\\.attest\\.azure\\.net/?",
        combinator(),
        prop::collection::vec(condition_strategy(), 1..4),
    )
        .prop_map(|(authority, combinator, conditions)| confsum_skr::Branch {
            authority,
            combinator,
            conditions,
        });
    (
        prop_oneof![Just(PolicyVersion::V1_0_0), Just(PolicyVersion::V0_2)],
        prop::collection::vec(branch, 1..4),
    )
        .prop_map(|(version, any_of)| ReleasePolicy { version, any_of })
}

proptest! {
    #[test]
    fn policies_round_trip_through_json(policy in policy_strategy()) {
        prop_assert_eq!(&ReleasePolicy::decode(&policy.encode()).unwrap(), &policy);
        prop_assert_eq!(&ReleasePolicy::from_json(&policy.to_json()).unwrap(), &policy);
        prop_assert_eq!(&ReleasePolicy::decode_base64url(&policy.encode_base64url()).unwrap(), &policy);
        // encode is what serde_json reads back as to_json.
        let reread: Value = serde_json::from_slice(&policy.encode()).unwrap();
        prop_assert_eq!(reread, policy.to_json());
    }

    #[test]
    fn evaluation_is_total(policy in policy_strategy(), extra in ".{0,8}") {
        let mut c = claims();
        c.insert(extra, json!({"nested": [1, {"x": null}]}));
        let _ = policy.evaluate(MAA, &c);
        let _ = policy.evaluate("not a url", &c);
    }
}
