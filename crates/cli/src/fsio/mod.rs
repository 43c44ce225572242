//! How every subcommand reads its inputs and writes its outputs.
//!
//! One policy for outputs (issue 10): an existing output is refused
//! without `--force`; an output is written under a temporary name in its
//! own directory and renamed into place only when complete; whatever a run
//! created is removed again if it fails, is interrupted (SIGINT, SIGTERM)
//! or panics; a temporary file that a killed run left behind is named and
//! removed by the next run that writes the same output.

mod cleanup;
mod input;
mod output;
mod stdout;

pub(crate) use self::{
    cleanup::{Created, commit_guard},
    input::shown,
    input::{open_input, open_tar, read_input},
    output::{ExtractDir, Output, cannot_write_in, refuse_inside, same_file},
    stdout::{StdoutError, stdout},
};
