//! The operator console: a full-screen TUI of a ring (ratatui + crossterm).
//!
//! Split as state, update and render: [`app`] is plain data and its
//! transitions, [`ui`] draws it, [`model`] holds the console's own types.
//! Background tasks own every connection and process: the [`poller`] walks
//! the ring, the [`worker`] runs transfers and the fleet actor changes
//! capacity; they report through one channel of [`app::Update`]s that the
//! event loop in [`run`] feeds to the app, so a slow node never freezes the
//! screen. Logs go to a file, never to the terminal being drawn on.

pub mod app;
pub mod fixture;
pub mod metrics;
pub mod model;
pub mod ui;

#[cfg(test)]
mod tests;
