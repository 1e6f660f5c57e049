//! The fencing check of `examples/floating_ip.rs` (`--fence-file`), in a file of its own
//! so that `tests/fence.rs` can test it: an example built as a test harness would not
//! be the binary the namespace tests run.

use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

/// A resource protected by les's fencing token: a file holding one `TERM NODE` line per
/// leader admitted, in order. See the module docs.
pub struct Fence {
    /// The file that records the admitted terms.
    pub path: PathBuf,
}

impl Fence {
    /// Admit `node` as the writer with `term`, or refuse it if a higher term has been
    /// admitted already. Holds an exclusive lock on the file while it reads and appends,
    /// so two writers cannot both pass the check.
    pub fn admit(&self, term: u64, node: &str) -> Result<(), String> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&self.path)
            .map_err(|e| format!("cannot open {}: {e}", self.path.display()))?;
        // SAFETY: flock on a file descriptor this function owns; released on close.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!("cannot lock {}", self.path.display()));
        }
        let highest = std::io::BufReader::new(&file)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        if term < highest {
            return Err(format!(
                "fencing: term {term} refused, term {highest} has taken over"
            ));
        }
        writeln!(&file, "{term} {node}")
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }
}
