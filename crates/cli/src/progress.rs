//! Progress on standard error, only for a person at a terminal.

use std::io::{self, IsTerminal};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

fn styled(bar: ProgressBar, template: &str) -> ProgressBar {
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

fn shown(disabled: bool) -> bool {
    !disabled && io::stderr().is_terminal()
}

/// A bar for `len` bytes with rate and time left; with no length (standard
/// input), bytes and rate only: an ETA without a total would be a guess.
pub(crate) fn bytes(len: Option<u64>, message: &str, disabled: bool) -> ProgressBar {
    if !shown(disabled) {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => styled(
            ProgressBar::new(n),
            "{spinner} {msg} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        ),
        None => styled(
            ProgressBar::no_length(),
            "{spinner} {msg} {bytes} {binary_bytes_per_sec}",
        ),
    };
    bar.set_message(message.to_owned());
    bar
}

/// A spinner with a message, for a step whose length is unknown (a key
/// derivation, a model load), ticking on its own.
pub(crate) fn spinner(message: &str, disabled: bool) -> ProgressBar {
    if !shown(disabled) {
        return ProgressBar::hidden();
    }
    let bar = styled(ProgressBar::new_spinner(), "{spinner} {msg} {elapsed}");
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A bar for `len` steps of one kind (chunks, documents), with a message
/// that may change between rounds.
pub(crate) fn steps(len: u64, message: &str, disabled: bool) -> ProgressBar {
    if !shown(disabled) {
        return ProgressBar::hidden();
    }
    let bar = styled(
        ProgressBar::new(len),
        "{spinner} {msg} {pos}/{len} {elapsed} eta {eta}",
    );
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}
