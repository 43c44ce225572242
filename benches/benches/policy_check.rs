//! Checking start-up sequences against CCE policies: confsum's framework
//! against hcsshim's (from the regorus package) in the same enforcer loop,
//! on the sequences of `crates/policy/testdata/check`.
//!
//! - `load`: parsing and preparing the basic policy with its framework;
//! - `startup`: the basic pod (pause container and summarizer: 8 requests)
//!   from a fresh state;
//! - `all_cases`: every sequence of the table, one after the other.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../crates/policy/tests/support/cases.rs"]
mod cases;

use std::hint::black_box;

use confsum_policy::check::{Enforcer, Framework};
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let repo = cases::repo_root(env!("CARGO_MANIFEST_DIR"));
    let all = cases::load_all(&repo);
    let frameworks = [
        ("confsum", Framework::confsum()),
        ("hcsshim", cases::hcsshim_framework(&repo)),
    ];
    let startup = all
        .iter()
        .find(|c| c.name == "basic/exact container and pause container allowed")
        .expect("the basic start-up case");
    let startup_requests: Vec<_> = startup.steps.iter().map(|s| s.request.clone()).collect();

    let mut group = c.benchmark_group("policy_check/load");
    for (name, framework) in &frameworks {
        group.bench_function(*name, |b| {
            b.iter(|| {
                Enforcer::with_framework(black_box(&startup.policy), framework).expect("loads")
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("policy_check/startup");
    for (name, framework) in &frameworks {
        let fresh = Enforcer::with_framework(&startup.policy, framework).expect("loads");
        group.bench_function(*name, |b| {
            b.iter(|| {
                let mut enforcer = fresh.clone();
                let decisions = enforcer.run(black_box(&startup_requests));
                assert!(decisions.iter().all(|d| d.allowed));
                decisions
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("policy_check/all_cases");
    group.sample_size(10);
    for (name, framework) in &frameworks {
        let prepared: Vec<(Enforcer, Vec<_>)> = all
            .iter()
            .map(|case| {
                let enforcer = Enforcer::with_framework(&case.policy, framework).expect("loads");
                (
                    enforcer,
                    case.steps.iter().map(|s| s.request.clone()).collect(),
                )
            })
            .collect();
        group.bench_function(*name, |b| {
            b.iter(|| {
                for (fresh, requests) in &prepared {
                    black_box(fresh.clone().run(requests));
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
