//! A minimal driver for timing with hyperfine, without the CLI's other
//! subcommands (and their build time):
//!
//! ```text
//! timing generate TEMPLATE ARCHIVE [CACHE_DIR]   # prints host_data
//! timing layer-hash LAYER.tar...                  # what `confsum layer-hash` runs, one file after another
//! ```
use std::fs::File;

use confsum_ext4::Options;
use confsum_policy::{GenerateOptions, ImageSources, LayerCache, Template, generate};
use confsum_verity::layer_root_hash;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("generate") if args.len() >= 3 => {
            let template = Template::parse(&std::fs::read_to_string(&args[1])?)?;
            let mut sources = ImageSources::new();
            sources.set_default_archive(&args[2]);
            let cache = match args.get(3) {
                Some(d) => LayerCache::new(d),
                None => LayerCache::disabled(),
            };
            let out = generate(
                &template,
                &sources,
                &GenerateOptions::default(),
                &cache,
                None,
            )?;
            for g in out.groups {
                println!("{}", g.host_data);
            }
        }
        Some("layer-hash") => {
            for f in &args[1..] {
                let root = layer_root_hash(File::open(f)?, &Options::default())?;
                println!("{root}  {f}");
            }
        }
        _ => {
            return Err(
                "usage: timing generate TEMPLATE ARCHIVE [CACHE_DIR] | timing layer-hash FILE..."
                    .into(),
            );
        }
    }
    Ok(())
}
