//! Times `generate` on a checkpoint, for comparing with other runtimes.
//!
//! ```text
//! cargo run --release -p confsum-summarize --example bench_generate -- DIR [--threads N] [--runs N] [--int8]
//!     [--batch N [--one-by-one]]
//! ```
//!
//! Reads `DIR/input.txt`, tokenizes it with the checkpoint's prefix (no
//! chunking), generates once to warm up, then times `--runs` (default 5)
//! full `generate` calls with the checkpoint's generation settings and
//! prints one JSON line: `{"ms_median", "ms_min", "new_tokens",
//! "input_tokens", "ids"}` (`ids`: what the warm-up generated for the
//! first document, for comparing with other runtimes).
//!
//! `--batch N` makes N documents of the input, document `i` its first
//! `max(len − 24·i, 16) − 1` ids and its last (the end token), as
//! `tools/bench-summarize.py --batch` gives transformers, and times one
//! `generate` call over all of them (padded, as a batch); with
//! `--one-by-one`, N calls of one document each.
//!
//! candle takes its thread counts from the environment when it starts,
//! so `--threads N` starts this program again with
//! `confsum_summarize::thread_env` set, as `confsum summarize` does.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

use std::os::unix::process::CommandExt;

use confsum_summarize::{LoadOptions, Precision, Summarizer, thread_env, threads_configured};

struct Args {
    dir: PathBuf,
    threads: Option<usize>,
    runs: usize,
    int8: bool,
    batch: usize,
    one_by_one: bool,
}

impl Args {
    fn precision(&self) -> Precision {
        if self.int8 {
            Precision::Int8
        } else {
            Precision::F32
        }
    }
}

fn parse() -> Result<Args, String> {
    let mut dir = None;
    let mut threads = None;
    let mut runs = 5;
    let mut int8 = false;
    let mut batch = 1;
    let mut one_by_one = false;
    let mut args = std::env::args().skip(1);
    let number = |v: Option<String>, flag: &str| {
        v.and_then(|s| s.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{flag} takes a positive number"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--threads" => threads = Some(number(args.next(), "--threads")?),
            "--runs" => runs = number(args.next(), "--runs")?,
            "--int8" => int8 = true,
            "--batch" => batch = number(args.next(), "--batch")?,
            "--one-by-one" => one_by_one = true,
            _ if arg.starts_with("--") => return Err(format!("unknown option {arg}")),
            _ if dir.is_none() => dir = Some(PathBuf::from(arg)),
            _ => return Err(format!("unexpected argument {arg}")),
        }
    }
    let dir = dir.ok_or(
        "usage: bench_generate DIR [--threads N] [--runs N] [--int8] [--batch N [--one-by-one]]",
    )?;
    Ok(Args {
        dir,
        threads,
        runs,
        int8,
        batch,
        one_by_one,
    })
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(args.dir.join("input.txt"))?;
    let precision = args.precision();
    let mut summarizer = Summarizer::load(&args.dir, &LoadOptions::default().precision(precision))?;
    let load_peak = peak_rss_mib();
    let input = documents(&summarizer.encode_text(&text)?, args.batch);
    let generate =
        |summarizer: &mut Summarizer| -> Result<Vec<Vec<u32>>, Box<dyn std::error::Error>> {
            if args.one_by_one {
                let mut out = Vec::with_capacity(input.len());
                for doc in &input {
                    out.extend(summarizer.generate_ids(std::slice::from_ref(doc))?);
                }
                Ok(out)
            } else {
                Ok(summarizer.generate_ids(&input)?)
            }
        };
    let warm = generate(&mut summarizer)?;
    let mut times = Vec::with_capacity(args.runs);
    let mut new_tokens = warm.first().map_or(0, Vec::len);
    for _ in 0..args.runs {
        let start = Instant::now();
        let out = generate(&mut summarizer)?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        new_tokens = out.first().map_or(0, Vec::len);
    }
    times.sort_by(f64::total_cmp);
    let median = match times.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => times[n / 2],
        n => (times[n / 2 - 1] + times[n / 2]) / 2.0,
    };
    let min = times.first().copied().unwrap_or(f64::NAN);
    println!(
        "{}",
        serde_json::json!({
            "ms_median": (median * 10.0).round() / 10.0,
            "ms_min": (min * 10.0).round() / 10.0,
            "new_tokens": new_tokens,
            "input_tokens": input.first().map_or(0, Vec::len),
            "documents": input.len(),
            "peak_rss_mib_after_load": load_peak,
            "peak_rss_mib": peak_rss_mib(),
            "ids": warm.first(),
        })
    );
    Ok(())
}

/// `n` documents from the ids of one: document `i` keeps its first
/// `max(len − 24·i, 16) − 1` ids and its last.
fn documents(ids: &[u32], n: usize) -> Vec<Vec<u32>> {
    (0..n)
        .map(|i| {
            let len = ids.len().saturating_sub(24 * i).max(16).min(ids.len());
            let mut doc = ids[..len.saturating_sub(1)].to_vec();
            doc.extend(ids.last());
            doc
        })
        .collect()
}

/// The process's peak resident memory so far (Linux), in MiB.
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some(n) = args.threads.filter(|&n| !threads_configured(n)) {
        // candle reads the count once from the environment: become this
        // program again with it set (the new image's check passes).
        let err = std::env::current_exe().map(|exe| {
            Command::new(exe)
                .args(std::env::args_os().skip(1))
                .envs(thread_env(n))
                .exec()
        });
        eprintln!("cannot start again with {n} threads: {err:?}");
        return ExitCode::FAILURE;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
