//! Command output on standard output, written so that a closed or full
//! stdout is an error the command returns, not a panic: `println!` panics
//! when `chord-console ls | head -1` closes the pipe, or when stdout is a
//! full disk.
//!
//! `outln!` and `out!` (defined below) are `println!` and `print!` that return
//! `Result<(), StdoutError>`. `main` ends quietly, with success, on a
//! closed pipe (the reader had what it wanted, as `head` did), and names
//! any other failure in its one-line reason.

use std::io::{self, Write};

/// Standard output could not be written.
#[derive(Debug, thiserror::Error)]
// The cause is the error's source, which a chain (`{e:#}`) prints after.
#[error("writing to standard output")]
pub struct StdoutError(#[from] pub io::Error);

impl StdoutError {
    /// Whether the reader went away (`| head`), which is not a failure of
    /// the command.
    pub fn is_closed_pipe(&self) -> bool {
        self.0.kind() == io::ErrorKind::BrokenPipe
    }
}

/// Writes what the macros format; flushed, so an error shows here and not
/// at exit.
pub fn write(args: std::fmt::Arguments<'_>) -> Result<(), StdoutError> {
    let mut out = io::stdout().lock();
    out.write_fmt(args)?;
    out.flush()?;
    Ok(())
}

/// `print!` that returns a [`StdoutError`] rather than panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write(format_args!($($arg)*))
    };
}

/// `println!` that returns a [`StdoutError`] rather than panicking.
macro_rules! outln {
    () => {
        $crate::output::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}
