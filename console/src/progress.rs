//! Transfer progress for headless commands: an `indicatif` bar (bytes, rate,
//! ETA) when stderr is a terminal, plain lines at every tenth otherwise, and
//! nothing with `--json` (stdout then carries one JSON document only). A
//! download that starts over, every chunk checked, starts its bar over.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};

use chord_node::client::ProgressSink;
use indicatif::{ProgressBar, ProgressStyle};

/// What a transfer that starts over says, after its name.
pub const STARTED_OVER: &str =
    "the whole file did not match its checksum; fetching it again with every chunk checked";

#[derive(Debug)]
pub enum Progress {
    Bar(ProgressBar),
    Lines(Lines),
    Quiet,
}

/// Plain progress lines, one at every tenth.
#[derive(Debug)]
pub struct Lines {
    label: String,
    total: u64,
    done: AtomicU64,
    /// Last tenth printed, so each tenth prints once.
    shown: AtomicU64,
}

impl Progress {
    pub fn new(label: &str, total: u64, json: bool) -> Progress {
        if json {
            return Progress::Quiet;
        }
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(label.to_string());
            return Progress::Bar(bar);
        }
        eprintln!("{label}: 0 of {total} bytes");
        Progress::Lines(Lines {
            label: label.to_string(),
            total,
            done: AtomicU64::new(0),
            shown: AtomicU64::new(0),
        })
    }

    pub fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish();
        }
    }
}

impl ProgressSink for Progress {
    fn advance(&self, bytes: u64) {
        match self {
            Progress::Bar(bar) => bar.inc(bytes),
            Progress::Lines(lines) => lines.advance(bytes),
            Progress::Quiet => {}
        }
    }

    /// Back to zero, saying why: the bar's rate and ETA start again too.
    fn restart(&self) {
        match self {
            Progress::Bar(bar) => {
                bar.reset();
                bar.set_message(format!("{} (again, every chunk checked)", bar.message()));
            }
            Progress::Lines(lines) => lines.restart(),
            Progress::Quiet => {}
        }
    }
}

impl ProgressSink for Lines {
    fn advance(&self, bytes: u64) {
        let (label, total) = (&self.label, self.total);
        let now = self.done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let tenth = now.saturating_mul(10).checked_div(total).unwrap_or(10);
        if self.shown.fetch_max(tenth, Ordering::Relaxed) < tenth {
            eprintln!("{label}: {now} of {total} bytes ({}%)", tenth.min(10) * 10);
        }
    }

    fn restart(&self) {
        self.done.store(0, Ordering::Relaxed);
        self.shown.store(0, Ordering::Relaxed);
        let (label, total) = (&self.label, self.total);
        eprintln!("{label}: {STARTED_OVER}: 0 of {total} bytes");
    }
}
