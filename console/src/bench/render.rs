//! `bench render`: how long the TUI takes to draw one frame of a fixture
//! ring of N nodes into an off-screen buffer, beside the same frame of a
//! small ring and an empty one measured in the same run. This is the
//! cost of `ui::render` alone (layout, canvas, tables, charts), not of
//! writing to a real terminal.

use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use serde_json::json;

use crate::tui::{app::App, fixture, ui};

/// The baseline ring: the size of a small local fleet.
const BASELINE_NODES: usize = 8;
/// Frames drawn before timing, so caches and allocations settle.
const WARMUP_FRAMES: usize = 20;

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Nodes in the measured ring.
    #[arg(long, default_value_t = 64)]
    pub nodes: usize,
    /// Frames drawn per case.
    #[arg(long, default_value_t = 500)]
    pub frames: usize,
    /// Terminal width in cells.
    #[arg(long, default_value_t = 160)]
    pub width: u16,
    /// Terminal height in cells.
    #[arg(long, default_value_t = 48)]
    pub height: u16,
}

/// Milliseconds per frame of drawing `app`, `frames` times.
fn measure(app: &App, args: &RenderArgs) -> Result<Vec<f64>> {
    let mut terminal = Terminal::new(TestBackend::new(args.width, args.height))?;
    for _ in 0..WARMUP_FRAMES {
        terminal.draw(|f| ui::render(app, f))?;
    }
    let mut out = Vec::with_capacity(args.frames);
    for _ in 0..args.frames {
        // A full redraw each time, as after a resize, not a diff of nothing.
        terminal.clear()?;
        let t = Instant::now();
        terminal.draw(|f| ui::render(app, f))?;
        out.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(out)
}

/// Mean, median and 99th percentile.
fn summary(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    let mean = xs.iter().sum::<f64>() / xs.len().max(1) as f64;
    let at = |q: f64| {
        xs.get(((xs.len().saturating_sub(1)) as f64 * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    (mean, at(0.5), at(0.99))
}

pub fn run(args: &RenderArgs, as_json: bool) -> Result<()> {
    if args.frames == 0 {
        bail!("--frames must be at least 1");
    }
    let cases = [
        (format!("{} nodes", args.nodes), fixture::app(args.nodes)),
        (
            format!("{BASELINE_NODES} nodes"),
            fixture::app(BASELINE_NODES),
        ),
        ("empty".to_string(), fixture::app(0)),
    ];
    let mut rows = Vec::new();
    for (label, app) in &cases {
        let (mean, p50, p99) = summary(measure(app, args)?);
        rows.push((label.clone(), mean, p50, p99));
    }
    if as_json {
        let cases: Vec<_> = rows
            .iter()
            .map(|(l, mean, p50, p99)| json!({ "case": l, "mean_ms": mean, "p50_ms": p50, "p99_ms": p99 }))
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "width": args.width, "height": args.height, "frames": args.frames, "cases": cases,
            }))?
        )?;
        return Ok(());
    }
    outln!(
        "one frame at {}x{}, {} frames per case (ms per frame)",
        args.width,
        args.height,
        args.frames
    )?;
    outln!("{:<12} {:>8} {:>8} {:>8}", "", "mean", "p50", "p99")?;
    for (label, mean, p50, p99) in rows {
        outln!("{label:<12} {mean:>8.3} {p50:>8.3} {p99:>8.3}")?;
    }
    Ok(())
}
