//! How a tar stream may end (issue 10: truncated tars, empty input).
//!
//! The layer hash is hcsshim's: `tar2ext4.ConvertTarToExt4` loops on Go's
//! `tar.Reader.Next` until `errors.Is(err, io.EOF)`, and copies each file's
//! data with `io.Copy`. Go's `archive/tar` (`reader.go`) returns `io.EOF`
//! for 0 bytes where a header would start, for one zero block followed by
//! nothing, for two zero blocks, and for input that stops inside the
//! padding after the last member's data (`tryReadFull`); it returns
//! `io.ErrUnexpectedEOF` for a header, member data or a second zero block
//! cut short. So the first group converts, to the image of the complete
//! archive, and the second is an error. Each case here is one of those,
//! and the report says which end was seen.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Cursor;

use confsum_ext4::{Error, ImageSink, Options, TarEnd, TarReport, convert_tar_with_report};
use confsum_testkit::{TarBuilder, det_bytes};

fn convert(input: &[u8]) -> Result<(Vec<u8>, TarReport), Error> {
    let sink = ImageSink::new(Cursor::new(Vec::new()));
    let (sink, report) = convert_tar_with_report(input, sink, &Options::default())?;
    Ok((sink.into_inner().into_inner(), report))
}

/// `d/` (header 0..512), `d/f` with 700 bytes (header 512..1024, data
/// 1024..1724, padding to 2048), `e` with 5 bytes (header 2048..2560, data
/// 2560..2565, padding to 3072), then two zero blocks (3072..4096).
fn complete() -> Vec<u8> {
    let tar = TarBuilder::new()
        .dir("d/")
        .file("d/f", &det_bytes(700, 1))
        .file("e", b"hello")
        .finish();
    assert_eq!(tar.len(), 4096);
    tar
}

enum Want {
    /// Converts to the complete archive's image, with this ending.
    Same(TarEnd),
    /// A tar error, as Go's `io.ErrUnexpectedEOF`.
    Truncated,
}

#[test]
fn each_way_a_tar_can_end_is_taken_or_refused_as_hcsshim_does() {
    use Want::{Same, Truncated};
    let full = complete();
    let (want_image, report) = convert(&full).unwrap();
    assert_eq!(report.entries, 3);
    let cut = |n: usize| full[..n].to_vec();
    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        ("two zero blocks", cut(4096), Same(TarEnd::Marker)),
        (
            "two zero blocks and more zeros",
            [&full[..], &[0; 5120]].concat(),
            Same(TarEnd::Marker),
        ),
        (
            "no end-of-archive blocks",
            cut(3072),
            Same(TarEnd::MissingMarker),
        ),
        ("one zero block", cut(3584), Same(TarEnd::LoneZeroBlock)),
        (
            "cut inside the last member's padding",
            cut(2600),
            Same(TarEnd::CutInPadding),
        ),
        (
            "cut right after the last member's data",
            cut(2565),
            Same(TarEnd::CutInPadding),
        ),
        ("cut inside the first zero block", cut(3172), Truncated),
        (
            "cut inside the second zero block",
            cut(3584 + 256),
            Truncated,
        ),
        ("cut inside a member's data", cut(1500), Truncated),
        (
            "cut right after a header, before its data",
            cut(2560),
            Truncated,
        ),
        ("cut inside a header", cut(2100), Truncated),
        ("cut inside the first header", cut(300), Truncated),
    ];
    for (name, input, want) in cases {
        match (convert(&input), want) {
            (Ok((image, report)), Same(end)) => {
                assert_eq!(report.end, end, "{name}");
                assert_eq!(report.entries, 3, "{name}");
                assert!(
                    image == want_image,
                    "{name}: not the complete archive's image"
                );
                assert_eq!(report.is_complete(), end == TarEnd::Marker, "{name}");
                assert!(!report.is_empty_input(), "{name}");
            }
            (Err(Error::Tar { source, .. }), Truncated) => {
                assert_eq!(source.kind(), std::io::ErrorKind::UnexpectedEof, "{name}");
            }
            (Ok((_, report)), Truncated) => panic!("{name}: converted ({report:?}), Go refuses it"),
            (Err(e), Same(_)) => panic!("{name}: {e:?}, Go converts it"),
            (Err(e), Truncated) => panic!("{name}: {e:?}, not a truncation error"),
        }
    }
}

#[test]
fn a_tar_cut_at_600_bytes_converts_as_the_reference_does_when_only_padding_is_lost() {
    // The repro: a tar cut to 600 bytes hashed like the whole tar.
    // With one small file, byte 600 is inside its padding, and Go (so
    // hcsshim) reads that as the end: same image, and the report says so.
    // With a larger file, byte 600 is inside its data: an error.
    let small = TarBuilder::new().file("a", b"hello").finish();
    let (whole, _) = convert(&small).unwrap();
    let (cut, report) = convert(&small[..600]).unwrap();
    assert!(cut == whole);
    assert_eq!(report.end, TarEnd::CutInPadding);
    assert!(!report.is_complete());

    let large = TarBuilder::new().file("a", &det_bytes(1000, 2)).finish();
    assert!(matches!(convert(&large[..600]), Err(Error::Tar { .. })));
}

#[test]
fn an_empty_input_is_the_empty_layer_and_says_it_is_empty() {
    let (empty_tar, report) = convert(&TarBuilder::new().finish()).unwrap();
    assert_eq!((report.entries, report.end), (0, TarEnd::Marker));
    assert!(!report.is_empty_input());

    let (image, report) = convert(b"").unwrap();
    assert!(image == empty_tar, "0 bytes is not the empty layer");
    assert_eq!((report.entries, report.end), (0, TarEnd::EmptyInput));
    assert!(report.is_empty_input() && !report.is_complete());

    // One zero block is an empty archive without a full marker, not an
    // empty input.
    let (image, report) = convert(&[0; 512]).unwrap();
    assert!(image == empty_tar);
    assert_eq!(report.end, TarEnd::LoneZeroBlock);
    assert!(!report.is_empty_input());
}
