//! The shared confcom 1.4.3 vectors (`../shared/vectors/policy/`, see its
//! SOURCES.md): every case must give `expected.rego` byte for byte, from
//! every image format, and the same bytes across thread counts and cache
//! states.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use confsum_policy::{
    GenerateOptions, ImageSources, LayerCache, Policy, Template, diff, generate, host_data,
    read_policy_input,
};
use sha2::{Digest, Sha256};

fn run(case: &std::path::Path, archive: &std::path::Path, cache: &LayerCache) -> String {
    let template =
        Template::parse(&std::fs::read_to_string(case.join("template.json")).unwrap()).unwrap();
    let flags = std::fs::read_to_string(case.join("flags")).unwrap_or_default();
    let options = common::options_from_flags(&flags);
    let (reference, _, _) = common::oracle_image();
    let mut sources = ImageSources::new();
    sources.insert(reference, archive);
    let out = generate(&template, &sources, &options, cache, None)
        .unwrap_or_else(|e| panic!("{}: {e}", case.display()));
    assert_eq!(out.groups.len(), 1);
    let g = &out.groups[0];
    assert_eq!(g.host_data, host_data(g.text.as_bytes()));
    g.text.clone()
}

#[test]
fn every_case_from_every_format() {
    let formats = common::formats();
    let cases = common::cases();
    assert_eq!(cases.len(), 8, "the 8 shared cases");
    for case in &cases {
        let expected = std::fs::read_to_string(case.join("expected.rego")).unwrap();
        for (format, archive) in &formats.formats {
            let got = run(case, archive, &LayerCache::disabled());
            if got != expected {
                let a = Policy::parse(&expected).unwrap();
                let b = Policy::parse(&got).unwrap();
                let changes: Vec<String> = diff(&a, &b).iter().map(ToString::to_string).collect();
                panic!(
                    "{} from {format}: bytes differ\n{}",
                    case.display(),
                    changes.join("\n")
                );
            }
            assert_eq!(
                host_data(got.as_bytes()),
                hex::encode(Sha256::digest(expected.as_bytes()))
            );
        }
    }
}

#[test]
fn same_bytes_across_threads_and_cache_states() {
    let formats = common::formats();
    let case = common::vectors().join("extras");
    let expected = std::fs::read_to_string(case.join("expected.rego")).unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = LayerCache::new(cache_dir.path());
    for threads in [1, 2, 8] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        for (_, archive) in &formats.formats {
            // Cold, then warm (root hashes and verified files cached), then off.
            for c in [&cache, &cache, &LayerCache::disabled()] {
                let got = pool.install(|| run(&case, archive, c));
                assert_eq!(got, expected, "{threads} threads, {}", archive.display());
            }
        }
    }
    assert!(cache_dir.path().join("sha256").read_dir().unwrap().count() >= 3);
}

#[test]
fn policy_written_back_changes_only_cce_policy() {
    let formats = common::formats();
    let case = common::vectors().join("basic");
    let text = std::fs::read_to_string(case.join("template.json")).unwrap();
    let template = Template::parse(&text).unwrap();
    let (reference, _, _) = common::oracle_image();
    let mut sources = ImageSources::new();
    sources.insert(reference, &formats.formats[0].1);
    let out = generate(
        &template,
        &sources,
        &GenerateOptions::default(),
        &LayerCache::disabled(),
        None,
    )
    .unwrap();
    let written = template.with_policies(&out.texts()).unwrap();
    // Every line but the ccePolicy line is unchanged.
    let old: Vec<&str> = text.lines().collect();
    let new: Vec<&str> = written.lines().collect();
    assert_eq!(old.len(), new.len());
    let changed: Vec<usize> = (0..old.len()).filter(|&i| old[i] != new[i]).collect();
    assert_eq!(changed.len(), 1);
    assert!(old[changed[0]].contains("\"ccePolicy\": \"\""));
    // And it reads back as the expected policy.
    let back = read_policy_input(written.as_bytes()).unwrap();
    let expected = std::fs::read_to_string(case.join("expected.rego")).unwrap();
    assert_eq!(
        back,
        vec![("container group 0".to_owned(), expected.clone())]
    );
    // Parsing the expected policy and rendering it gives the same bytes.
    assert_eq!(Policy::parse(&expected).unwrap().render(), expected);
}

#[test]
fn every_expected_policy_round_trips_through_the_model() {
    for case in common::cases() {
        let expected = std::fs::read_to_string(case.join("expected.rego")).unwrap();
        let policy = Policy::parse(&expected).unwrap();
        assert_eq!(policy.render(), expected, "{}", case.display());
    }
}
