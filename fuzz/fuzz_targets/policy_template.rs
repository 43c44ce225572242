//! Arbitrary bytes as an ARM template: parse, read every container group
//! under both ARM evaluation modes and every flag, and write a policy back.
//! Any panic is a bug; errors are expected. When writing back succeeds, the
//! result must still be a template whose ccePolicy reads back as written.
#![no_main]

use confsum_policy::{ArmEval, GenerateOptions, Template};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(template) = Template::parse(text) else {
        return;
    };
    for (i, mode) in [ArmEval::Confcom, ArmEval::Full].into_iter().enumerate() {
        let mut o = GenerateOptions::default();
        o.arm_eval = mode;
        o.approve_wildcards = i == 0;
        o.debug_mode = i == 1;
        o.omit_id = i == 1;
        o.secure_env_as_pattern = i == 1;
        if let Ok(groups) = template.groups(&o, &mut Vec::new()) {
            for g in &groups {
                let _ = g.images();
            }
        }
    }
    let _ = template.existing_policies();
    let policies: Vec<String> = (0..template.group_count())
        .map(|i| format!("package policy\n// {i}"))
        .collect();
    if let Ok(written) = template.with_policies(&policies) {
        let again = Template::parse(&written).expect("written template parses");
        let back = again.existing_policies().expect("written policies decode");
        for (p, b) in policies.iter().zip(back) {
            assert_eq!(Some(p.clone()), b, "policy written back differs");
        }
    }
});
