//! chord-console: the operator's console for a chord-dfs ring.
//!
//! [`cli`] holds the headless commands; [`bench`](mod@bench) the transfer benchmark; [`fleet`] runs local `chord-node`
//! processes (used by `local up` and by the integration tests).

pub mod aws;
pub mod bench;
pub mod capacity;
pub mod cli;
pub mod fleet;
pub mod progress;
pub mod scaling;
pub mod tui;
