//! One process per file: the exclusive advisory lock (`flock(2)`, through std's
//! [`File::try_lock`]) that the CDR writer ([`crate::billing`]) and the binding journal
//! ([`crate::journal`]) take when they open their file and hold for as long as their
//! writer thread runs. Two switches appending to one CDR file would interleave and cut
//! each other's lines (each tracks the file's length and truncates back to it after a
//! failed write); two on one journal would compact each other's records away. The lock
//! is advisory: it keeps out another softswitch, not a process that ignores it; the
//! kernel drops it when the holder dies, `kill -9` included, so no stale lock is left.

use std::fs::{File, TryLockError};
use std::io;

/// Takes an exclusive lock on `file` without waiting, held until the file is closed.
/// Another holder is an [`io::ErrorKind::ResourceBusy`] error.
pub fn exclusive(file: &File) -> io::Result<()> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => Err(io::Error::new(
            io::ErrorKind::ResourceBusy,
            "locked by another process (is another softswitch running on the same files?)",
        )),
        Err(TryLockError::Error(e)) => Err(e),
    }
}
