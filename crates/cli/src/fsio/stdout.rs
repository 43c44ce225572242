//! Standard output that never panics.
//!
//! `println!` panics when standard output is closed or full. Commands
//! write through [`stdout`] instead; its errors carry a [`StdoutError`],
//! which `main` turns into a quiet exit for a closed pipe and a one-line
//! message for anything else.

use std::io::{self, Write};

/// A failed write to standard output.
#[derive(Debug)]
pub(crate) struct StdoutError(io::Error);

impl StdoutError {
    /// What went wrong.
    pub(crate) fn kind(&self) -> io::ErrorKind {
        self.0.kind()
    }
}

impl std::fmt::Display for StdoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot write to standard output: {}", self.0)
    }
}

impl std::error::Error for StdoutError {}

/// Standard output, locked, with errors marked as [`StdoutError`].
pub(crate) fn stdout() -> Stdout {
    Stdout(io::stdout().lock())
}

/// See [`stdout`].
#[derive(Debug)]
pub(crate) struct Stdout(io::StdoutLock<'static>);

fn mark(e: io::Error) -> io::Error {
    io::Error::new(e.kind(), StdoutError(e))
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).map_err(mark)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush().map_err(mark)
    }
}
