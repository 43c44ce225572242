//! Running a program and checking how it ended.

use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};

/// A program to run, with its arguments, environment and standard input.
#[derive(Debug)]
pub struct Cmd {
    command: Command,
    stdin: Vec<u8>,
    stdout: Option<Stdio>,
}

impl Cmd {
    /// `program`, with no arguments and empty standard input.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Self {
            command: Command::new(program),
            stdin: Vec::new(),
            stdout: None,
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.command.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    /// Removes an environment variable.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.command.env_remove(key);
        self
    }

    /// Runs in `dir`.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.command.current_dir(dir);
        self
    }

    /// What the program reads on standard input.
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = data.into();
        self
    }

    /// Sends standard output to `target` (a file such as `/dev/full`, or
    /// a pipe whose reader is gone) instead of collecting it.
    pub fn stdout_to(mut self, target: impl Into<Stdio>) -> Self {
        self.stdout = Some(target.into());
        self
    }

    /// Standard output into a pipe that nobody reads: the reading end is
    /// closed before the program starts, so its first write fails with
    /// `EPIPE`.
    pub fn stdout_closed(self) -> Self {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        self.stdout_to(writer)
    }

    /// Starts the program with piped standard streams, for tests that
    /// signal or race it; the standard input given is not written.
    pub fn spawn(mut self) -> Child {
        self.command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", self.command))
    }

    /// Runs the program to its end and returns how it ended.
    pub fn run(mut self) -> Run {
        let shown = format!("{:?}", self.command);
        let stdout = self.stdout.take().unwrap_or_else(Stdio::piped);
        let mut child = self
            .command
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
        let mut input = child.stdin.take().expect("stdin is piped");
        let data = std::mem::take(&mut self.stdin);
        // A writer thread, so a program that answers before reading all
        // of its input cannot deadlock the test.
        let writer = std::thread::spawn(move || {
            // The program may exit without reading: a broken pipe is its
            // business, and the test looks at its status.
            let _ = input.write_all(&data);
        });
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("cannot wait for {shown}: {e}"));
        writer.join().expect("stdin writer panicked");
        Run {
            command: shown,
            status: out.status,
            stdout: out.stdout,
            stderr: out.stderr,
        }
    }
}

/// How a program ended.
#[derive(Debug)]
pub struct Run {
    command: String,
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it wrote to standard output.
    pub stdout: Vec<u8>,
    /// Everything it wrote to standard error.
    pub stderr: Vec<u8>,
}

impl Run {
    /// Fails the test unless the program exited with status 0.
    #[track_caller]
    pub fn success(self) -> Self {
        assert!(
            self.status.success(),
            "{} failed: {}",
            self.command,
            self.describe()
        );
        self
    }

    /// Fails the test unless the program exited with status `code`.
    #[track_caller]
    pub fn code(self, code: i32) -> Self {
        assert_eq!(
            self.status.code(),
            Some(code),
            "{} should exit with {code}: {}",
            self.command,
            self.describe()
        );
        self
    }

    /// Standard output as text.
    pub fn stdout_str(&self) -> String {
        String::from_utf8(self.stdout.clone()).expect("stdout is not UTF-8")
    }

    /// Standard error as text (lossy).
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    fn describe(&self) -> String {
        format!(
            "{}\n--- stdout\n{}\n--- stderr\n{}",
            self.status,
            String::from_utf8_lossy(&self.stdout),
            String::from_utf8_lossy(&self.stderr)
        )
    }
}
