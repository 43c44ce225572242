//! `confsum layer-hash` on inputs the reference hashes without comment
//! (issue 10): an empty file, and a tar cut inside its last padding. The
//! hash stays the reference's; a warning says what was odd.

use std::fs;

use confsum_testkit::{Cmd, TarBuilder, shared_vectors};

fn reference_hash(file: &str) -> String {
    let list = fs::read_to_string(shared_vectors().join("layers/roothashes.txt")).unwrap();
    list.lines()
        .find_map(|l| l.strip_suffix(&format!(" {file}")))
        .unwrap()
        .to_owned()
}

#[test]
fn an_empty_input_gets_the_empty_layer_hash_and_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("zero.tar"), b"").unwrap();
    let out = Cmd::new(crate::common::BIN)
        .current_dir(tmp.path())
        .args(["layer-hash", "zero.tar"])
        .run()
        .success();
    assert_eq!(
        out.stdout_str(),
        format!("{}  zero.tar\n", reference_hash("empty.tar"))
    );
    let err = out.stderr_str();
    assert!(
        err.contains("zero.tar") && err.contains("input is empty"),
        "{err}"
    );
}

#[test]
fn a_tar_cut_inside_its_padding_hashes_as_hcsshim_does_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = TarBuilder::new().file("a", b"hello").finish();
    fs::write(tmp.path().join("whole.tar"), &whole).unwrap();
    fs::write(tmp.path().join("cut.tar"), &whole[..600]).unwrap();
    let run = |file: &str| {
        Cmd::new(crate::common::BIN)
            .current_dir(tmp.path())
            .args(["layer-hash", file])
            .run()
            .success()
    };
    let (whole, cut) = (run("whole.tar"), run("cut.tar"));
    let hash = |out: &str| out.split_whitespace().next().unwrap().to_owned();
    assert_eq!(hash(&cut.stdout_str()), hash(&whole.stdout_str()));
    assert_eq!(whole.stderr_str(), "", "a complete tar gets no warning");
    let err = cut.stderr_str();
    assert!(
        err.contains("cut.tar") && err.contains("truncated?"),
        "{err}"
    );
}
