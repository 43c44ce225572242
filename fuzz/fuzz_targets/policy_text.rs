//! Arbitrary bytes as policy input (template, Rego or base64): read, parse,
//! render, and parse the rendering again. Any panic is a bug; when the
//! first parse succeeds, the rendering must parse to the same model and
//! render to the same bytes.
#![no_main]

use confsum_policy::{Policy, diff, read_policy_input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(policies) = read_policy_input(data) else {
        return;
    };
    for (_, text) in policies {
        let Ok(policy) = Policy::parse(&text) else {
            continue;
        };
        let rendered = policy.render();
        let again = Policy::parse(&rendered).expect("a rendered policy parses");
        assert!(diff(&policy, &again).is_empty(), "render changed the model");
        assert_eq!(again.render(), rendered, "render is not stable");
        let _ = policy.host_data();
    }
});
