//! Structured logs through `tracing`, configured once per process.
//!
//! Logging must never take a process down or keep it alive in a broken
//! state: a member whose log file sits on a full disk still has to report a
//! storage failure and exit. So log lines go through [`Lossy`], which
//! drops a line it cannot write instead of returning the error (the fmt
//! layer would then `eprintln!` about it, which panics when stderr fails).

use std::io::{IsTerminal, Write};

use tracing_subscriber::EnvFilter;

/// Installs the log subscriber: `RUST_LOG` filters (default `info`), and
/// `BOOKSTORE_LOG_FORMAT=json` switches to one JSON object per line (for
/// log collectors in Kubernetes). Calling it twice is harmless.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("BOOKSTORE_LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only for a person at a terminal: `up` sends each child's
        // stderr to a log file, where escape codes are noise to grep through.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(|| Lossy(std::io::stderr()));
    let _already_installed = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// A writer that drops what it cannot write (a full disk, a closed pipe)
/// rather than failing the caller.
pub struct Lossy<W>(pub W);

impl<W: Write> Write for Lossy<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}

/// Reports a fatal error and ends the process at once with `code`, without
/// anything that could panic or wait on a failing disk: one raw write of
/// `message` to standard error (its result ignored), then `_exit`, which
/// runs no destructors, flushes no buffers and cannot be caught by a task
/// runtime. For a member that must not go on (its storage failed).
pub fn exit_now(message: &str, code: i32) -> ! {
    let line = format!("{message}\n");
    // SAFETY: write(2) on fd 2 with a valid buffer and its length; _exit(2)
    // takes any status.
    unsafe {
        let _ = libc::write(2, line.as_ptr().cast(), line.len());
        libc::_exit(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_write_to_a_full_disk_is_dropped_not_returned() {
        // /dev/full answers every write with ENOSPC, as a full disk does.
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let mut raw = &full;
        assert!(raw.write_all(b"line\n").is_err(), "the fault is real");
        let mut lossy = Lossy(&full);
        assert_eq!(lossy.write(b"line\n").expect("dropped, not failed"), 5);
        lossy.flush().expect("dropped, not failed");
    }
}
