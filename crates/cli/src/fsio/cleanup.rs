//! Removing what a run created when it ends early.
//!
//! Temporary files are removed by their owners' `Drop` on errors and
//! panics. Signals end the process without unwinding, so everything that
//! must go is also listed here, and the signal handler removes it before
//! exiting with 128 + the signal number.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Paths to remove if the process is interrupted, with whether each is a
/// directory tree.
static PENDING: Mutex<Vec<(PathBuf, bool)>> = Mutex::new(Vec::new());

/// Held while a run moves its results into place, so that a signal sees
/// either none of them committed or all of them (an image without its new
/// key file would be a lockout).
static COMMIT: Mutex<()> = Mutex::new(());

/// Holds off the signal handler's clean-up until dropped.
pub(crate) fn commit_guard() -> std::sync::MutexGuard<'static, ()> {
    COMMIT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn pending() -> std::sync::MutexGuard<'static, Vec<(PathBuf, bool)>> {
    // A panic while holding the lock leaves the list intact; use it.
    PENDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn remove(path: &Path, tree: bool) {
    // Best effort: the path may already be gone or renamed into place.
    if !tree {
        let _ = std::fs::remove_file(path);
        return;
    }
    // Threads still running (`confsum demo`'s servers) may create a file
    // in the tree while it is being removed; try again a few times.
    for _ in 0..5 {
        match std::fs::remove_dir_all(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            _ => return,
        }
    }
}

/// Something this run created that must not outlive a failure: a new key
/// file, a partial extraction, a temporary file. Removed on drop unless
/// [`Created::keep`] was called; removed by the signal handler on SIGINT
/// or SIGTERM.
#[derive(Debug)]
pub(crate) struct Created {
    path: PathBuf,
    tree: bool,
    armed: bool,
}

impl Created {
    /// A file this run just created.
    pub(crate) fn file(path: &Path) -> Self {
        Self::register(path, false)
    }

    /// A directory (and everything below it) this run just created.
    pub(crate) fn tree(path: &Path) -> Self {
        Self::register(path, true)
    }

    fn register(path: &Path, tree: bool) -> Self {
        install_signal_handlers();
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        pending().push((path.clone(), tree));
        Self {
            path,
            tree,
            armed: true,
        }
    }

    /// The run succeeded: keep the path.
    pub(crate) fn keep(mut self) {
        self.disarm();
    }

    /// Stops tracking the path without removing it (it was renamed away).
    pub(crate) fn disarm(&mut self) {
        if self.armed {
            self.armed = false;
            pending().retain(|(p, _)| p != &self.path);
        }
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        if self.armed {
            remove(&self.path, self.tree);
            self.disarm();
        }
    }
}

/// Makes SIGINT and SIGTERM remove every pending path, then exit with
/// status 130 (as shells report an interrupted command). Installed with the
/// first path to clean up, so that commands which create nothing, such as
/// the servers with their own graceful shutdown, keep the default
/// behaviour.
fn install_signal_handlers() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let installed = ctrlc::set_handler(|| {
            let _commit = commit_guard();
            for (path, tree) in pending().drain(..) {
                remove(&path, tree);
            }
            eprintln!("confsum: interrupted");
            std::process::exit(130);
        });
        if let Err(e) = installed {
            // Clean-up on errors and panics still works; only signals
            // would leave files behind.
            eprintln!("confsum: warning: cannot install the interrupt handler: {e}");
        }
    });
}
