//! chord-console: the operator's console for a chord-dfs ring.
//!
//! [`cli`] holds the headless commands; [`bench`](mod@bench) the transfer benchmark; [`fleet`] runs local `chord-node`
//! processes (used by `local up` and by the integration tests); [`output`]
//! writes command output to stdout without panicking when it is closed.

// First, so that its macros (`out!`, `outln!`) reach every module below.
#[macro_use]
pub mod output;

pub mod aws;
pub mod bench;
pub mod capacity;
pub mod cli;
pub mod fleet;
pub mod progress;
pub mod scaling;
pub mod tui;
