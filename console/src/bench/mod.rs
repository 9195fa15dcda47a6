//! Benchmarks: commands that measure speed and memory of a real ring and
//! print figures beside a baseline measured in the same run. They assert
//! nothing beyond the correctness of what they move; tests do that.

mod breakdown;
pub mod chaos;
mod disk;
mod http_baseline;
pub mod load;
pub mod render;
mod rss;
mod size;

pub use size::{format_size, parse_size};
pub mod transfer;
mod workdir;
