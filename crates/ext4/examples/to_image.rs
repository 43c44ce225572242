//! Converts a directory or a tar file into an ext4 image: `to_image SRC IMG [MIN_SIZE]`.
//! With MIN_SIZE (bytes) the image is writable, with the rest as free space.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use confsum_ext4::{ImageSink, Options, Writable, convert_dir, convert_tar, decompress};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (src, out) = (Path::new(&args[1]), &args[2]);
    let mut options = Options::default();
    if let Some(min) = args.get(3) {
        options.writable = Some(Writable::with_min_size(min.parse().unwrap()));
    }
    let sink = ImageSink::new(File::create(out).unwrap());
    if src.is_dir() {
        convert_dir(src, sink, &options).unwrap();
    } else {
        let input = decompress(BufReader::new(File::open(src).unwrap())).unwrap();
        convert_tar(input, sink, &options).unwrap();
    }
}
