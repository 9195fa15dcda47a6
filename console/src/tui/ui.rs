//! Drawing: [`render`] turns an [`App`] into one frame.
//!
//! Render reads the app and nothing else: no clock (ages and rates are
//! measured against [`App::now_ms`]), no I/O, no mutation, so a fixture
//! renders the same screen every time. Two layouts: a large one (120×40
//! and up) with every pane, and a compact one for 80×24 that keeps the
//! ring, the nodes table, the fingers and the events, and drops the
//! distribution and the graphs.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::canvas::{Canvas, Circle, Context, Line as ChordLine, Points};
use ratatui::widgets::{
    Axis, Block, Borders, Cell, Chart, Clear, Dataset, Gauge, GraphType, Paragraph, Row, Table,
    TableState, Wrap,
};
use ratatui::Frame;

use super::app::{App, Direction, Focus, Mode, Origin, PromptKind, TransferState, KEYS};
use super::model::{
    clock, human_bytes, id_shares, imbalance, EventSource, NodeState, NodeView, Series, Severity,
    Unit,
};

/// Below this size the compact layout is used.
const LARGE_MIN_WIDTH: u16 = 120;
const LARGE_MIN_HEIGHT: u16 = 40;
/// More nodes than this and the ring prints no per-node labels (they
/// would overlap); the selected node is always labelled.
const RING_LABEL_MAX_NODES: usize = 24;
/// Most key ticks drawn on the rim; more are sampled down to this.
pub const MAX_RIM_TICKS: usize = 180;

const SELECTED: Color = Color::Yellow;
const SUCCESSOR: Color = Color::Green;
const PREDECESSOR: Color = Color::Magenta;
const CHORD: Color = Color::Cyan;
const DIM: Color = Color::DarkGray;

/// Draws the whole screen.
pub fn render(app: &App, frame: &mut Frame) {
    let area = frame.area();
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    render_header(app, frame, header);
    if area.width >= LARGE_MIN_WIDTH && area.height >= LARGE_MIN_HEIGHT {
        render_large(app, frame, body);
    } else {
        render_compact(app, frame, body);
    }
    render_footer(app, frame, footer);
    match &app.mode {
        Mode::Normal => {}
        Mode::Help => render_help(frame, area),
        Mode::Prompt(p) => {
            let title = match &p.kind {
                PromptKind::UploadPath => " Upload: path of a local file ".to_string(),
                PromptKind::DownloadDest { name } => format!(" Download {name} to: "),
            };
            render_popup(
                frame,
                area,
                &title,
                vec![
                    Line::from(vec![
                        Span::raw(p.input.clone()),
                        Span::styled("█", Style::new().fg(SELECTED)),
                    ]),
                    Line::styled(
                        "Enter starts it, Ctrl-U clears, Esc cancels",
                        Style::new().fg(DIM),
                    ),
                ],
            );
        }
        Mode::Confirm(pending) => render_popup(
            frame,
            area,
            " Confirm ",
            vec![
                Line::from(pending.question()),
                Line::styled("y confirms, any other key cancels", Style::new().fg(DIM)),
            ],
        ),
    }
}

fn render_large(app: &App, frame: &mut Frame, area: Rect) {
    let [top, middle, bottom] = Layout::vertical([
        Constraint::Percentage(44),
        Constraint::Percentage(28),
        Constraint::Min(8),
    ])
    .areas(area);
    // Terminal cells are about twice as tall as wide: a ring twice as wide
    // as it is high looks round.
    let ring_width = (top.height * 2).min(top.width / 3);
    let [ring, nodes, fingers] = Layout::horizontal([
        Constraint::Length(ring_width),
        Constraint::Min(60),
        Constraint::Length(38),
    ])
    .areas(top);
    render_ring(app, frame, ring);
    render_nodes(app, frame, nodes, true);
    render_fingers(app, frame, fingers);
    let [dist, graphs] =
        Layout::horizontal([Constraint::Percentage(36), Constraint::Percentage(64)]).areas(middle);
    render_distribution(app, frame, dist);
    render_graphs(app, frame, graphs);
    let side = !app.visible_transfers().is_empty() || app.show_files;
    if side {
        let [events, right] =
            Layout::horizontal([Constraint::Percentage(62), Constraint::Percentage(38)])
                .areas(bottom);
        render_events(app, frame, events);
        render_side(app, frame, right);
    } else {
        render_events(app, frame, bottom);
    }
}

fn render_compact(app: &App, frame: &mut Frame, area: Rect) {
    let [top, bottom] =
        Layout::vertical([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(area);
    let ring_width = (top.height * 2 + 2).min(top.width * 2 / 5);
    let [ring, nodes] =
        Layout::horizontal([Constraint::Length(ring_width), Constraint::Min(30)]).areas(top);
    render_ring(app, frame, ring);
    render_nodes(app, frame, nodes, false);
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(42), Constraint::Percentage(58)]).areas(bottom);
    if app.visible_transfers().is_empty() {
        render_fingers(app, frame, left);
    } else {
        render_transfers(app, frame, left);
    }
    if app.show_files {
        render_files(app, frame, right);
    } else {
        render_events(app, frame, right);
    }
}

/// Transfers above files, whichever of them there is.
fn render_side(app: &App, frame: &mut Frame, area: Rect) {
    let transfers = app.visible_transfers().len();
    match (transfers == 0, app.show_files) {
        (false, true) => {
            let height = (transfers as u16 + 2).min(area.height / 2);
            let [t, f] =
                Layout::vertical([Constraint::Length(height), Constraint::Min(3)]).areas(area);
            render_transfers(app, frame, t);
            render_files(app, frame, f);
        }
        (false, false) => render_transfers(app, frame, area),
        (true, _) => render_files(app, frame, area),
    }
}

fn pane<'a>(title: impl Into<Line<'a>>, focused: bool) -> Block<'a> {
    let border = if focused {
        Style::new().fg(SELECTED)
    } else {
        Style::new().fg(DIM)
    };
    Block::new()
        .borders(Borders::ALL)
        .border_style(border)
        .title(title)
}

fn render_header(app: &App, frame: &mut Frame, area: Rect) {
    let origin = match &app.origin {
        Origin::Attached { peer } => format!("attached via {peer}"),
        Origin::Local { data_root, .. } if area.width >= LARGE_MIN_WIDTH => {
            format!("local fleet (data {data_root})")
        }
        Origin::Local { .. } => "local fleet".to_string(),
        Origin::Group { group } => format!("Auto Scaling group {group}"),
    };
    let unreachable = app
        .nodes
        .iter()
        .filter(|n| n.state == NodeState::Unreachable)
        .count();
    let mut spans = vec![
        Span::styled(
            " chord-console ",
            Style::new().fg(Color::Black).bg(Color::Cyan),
        ),
        Span::raw(format!(" {origin} │ {} nodes", app.nodes.len())),
    ];
    if unreachable > 0 {
        spans.push(Span::styled(
            format!(" ({unreachable} unreachable)"),
            Style::new().fg(Color::Red),
        ));
    }
    spans.push(Span::raw(format!(" │ {} files", app.files.len())));
    match app.last_snapshot_ms {
        Some(at) => spans.push(Span::raw(format!(
            " │ refreshed {:.1} s ago",
            app.now_ms.saturating_sub(at) as f64 / 1000.0
        ))),
        None => spans.push(Span::styled(
            " │ waiting for the first poll",
            Style::new().fg(DIM),
        )),
    }
    if app.paused {
        spans.push(Span::styled(
            " │ PAUSED",
            Style::new().fg(Color::Black).bg(SELECTED),
        ));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn render_footer(app: &App, frame: &mut Frame, area: Rect) {
    // A ring that does not answer matters more than the key hints.
    let line = match (app.footer_status(), &app.poll_error) {
        (Some(s), _) => Line::from(vec![
            Span::styled(format!(" {s} "), Style::new().fg(SELECTED)),
            hints(),
        ]),
        (None, Some(err)) => Line::from(vec![
            Span::styled(format!(" {err} "), Style::new().fg(Color::Red)),
            hints(),
        ]),
        (None, None) => Line::from(vec![hints()]),
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn hints() -> Span<'static> {
    Span::styled(
        " j/k select · Tab focus · s sort · f files · u upload · d download · + / - nodes · l leave · x kill · p pause · ? help · q quit",
        Style::new().fg(DIM),
    )
}

/// Position of a ring fraction on the unit circle, clockwise from the top.
fn on_circle(fraction: f64, radius: f64) -> (f64, f64) {
    let angle = fraction * std::f64::consts::TAU;
    (radius * angle.sin(), radius * angle.cos())
}

fn render_ring(app: &App, frame: &mut Frame, area: Rect) {
    let selected = app.selected_node();
    let title = match selected {
        Some(n) => format!(" Ring · {} ", n.id.short()),
        None => " Ring ".to_string(),
    };
    let index_of = |addr: &str| app.nodes.iter().position(|n| n.addr == addr);
    let pos_of = |addr: &str| index_of(addr).map(|i| on_circle(app.nodes[i].id.fraction(), 1.0));
    let ticks: Vec<f64> = sample(&app.key_ticks, MAX_RIM_TICKS)
        .iter()
        .map(|k| k.fraction())
        .collect();
    let canvas = Canvas::default()
        .block(pane(title, false))
        .marker(Marker::Braille)
        .x_bounds([-1.35, 1.35])
        .y_bounds([-1.35, 1.35])
        .paint(move |ctx: &mut Context<'_>| {
            ctx.draw(&Circle {
                x: 0.0,
                y: 0.0,
                radius: 1.0,
                color: DIM,
            });
            let dots: Vec<(f64, f64)> = ticks.iter().map(|f| on_circle(*f, 1.08)).collect();
            ctx.draw(&Points {
                coords: &dots,
                color: Color::Blue,
            });
            if let Some(sel) = selected {
                let from = on_circle(sel.id.fraction(), 1.0);
                for finger in &sel.fingers {
                    let Some(to) = finger.target.as_deref().and_then(pos_of) else {
                        continue;
                    };
                    if finger.target.as_deref() == Some(sel.addr.as_str()) {
                        continue;
                    }
                    ctx.draw(&ChordLine {
                        x1: from.0,
                        y1: from.1,
                        x2: to.0,
                        y2: to.1,
                        color: CHORD,
                    });
                }
            }
            ctx.layer();
            let label_all = app.nodes.len() <= RING_LABEL_MAX_NODES;
            for (i, node) in app.nodes.iter().enumerate() {
                let (x, y) = on_circle(node.id.fraction(), 1.0);
                let is_sel = selected.is_some_and(|s| s.addr == node.addr);
                let succ = selected.and_then(|s| s.successors.iter().position(|a| *a == node.addr));
                let pred =
                    selected.is_some_and(|s| s.predecessor.as_deref() == Some(node.addr.as_str()));
                let color = if is_sel {
                    SELECTED
                } else if node.state == NodeState::Unreachable {
                    Color::Red
                } else if succ.is_some() {
                    SUCCESSOR
                } else if pred {
                    PREDECESSOR
                } else {
                    Color::White
                };
                ctx.print(x, y, Line::styled("●", Style::new().fg(color)));
                let mark = if is_sel {
                    Some(format!("#{i}"))
                } else if pred {
                    Some("P".to_string())
                } else if let Some(s) = succ {
                    Some(format!("S{}", s + 1))
                } else if label_all {
                    Some(format!("{i}"))
                } else {
                    None
                };
                if let Some(mark) = mark {
                    let (lx, ly) = on_circle(node.id.fraction(), 1.2);
                    let lx = lx - 0.04 * mark.len() as f64;
                    ctx.print(lx, ly, Line::styled(mark, Style::new().fg(color)));
                }
            }
        });
    frame.render_widget(canvas, area);
}

/// Every `len / max`-th item, so at most `max` remain and they spread evenly.
pub fn sample<T: Copy>(items: &[T], max: usize) -> Vec<T> {
    if items.len() <= max || max == 0 {
        return items.to_vec();
    }
    (0..max).map(|i| items[i * items.len() / max]).collect()
}

fn state_style(state: NodeState) -> Style {
    match state {
        NodeState::Serving => Style::new().fg(Color::Green),
        NodeState::Joining => Style::new().fg(Color::Cyan),
        NodeState::Leaving => Style::new().fg(SELECTED),
        NodeState::Unreachable => Style::new().fg(Color::Red),
    }
}

fn render_nodes(app: &App, frame: &mut Frame, area: Rect, wide: bool) {
    let sorted = app.sorted_nodes();
    let ring_index = |n: &NodeView| app.nodes.iter().position(|m| m.addr == n.addr).unwrap_or(0);
    let header: &[&str] = if wide {
        &[
            "#", "addr", "id", "state", "chunks", "manif", "bytes", "req/s", "repair/s",
        ]
    } else {
        &["#", "addr", "state", "keys", "bytes", "req/s"]
    };
    let sort_label = app.sort.label();
    let header_row = Row::new(header.iter().map(|h| {
        let sorted_here = *h == sort_label
            || (sort_label == "id" && *h == "#")
            || (sort_label == "keys" && (*h == "chunks"))
            || (sort_label == "repair" && *h == "repair/s");
        let text = if sorted_here {
            format!("{h}▼")
        } else {
            (*h).to_string()
        };
        Cell::from(text)
    }))
    .style(Style::new().add_modifier(Modifier::BOLD));
    let rows: Vec<Row> = sorted
        .iter()
        .map(|n| {
            let c = &n.counters;
            let mut cells = vec![
                Cell::from(ring_index(n).to_string()),
                Cell::from(n.addr.clone()),
            ];
            if wide {
                cells.push(Cell::from(n.id.short()));
                cells.push(Cell::from(Span::styled(
                    n.state.label(),
                    state_style(n.state),
                )));
                cells.push(Cell::from(c.chunks.to_string()));
                cells.push(Cell::from(c.manifests.to_string()));
            } else {
                let state = if n.state == NodeState::Unreachable {
                    "down"
                } else {
                    n.state.label()
                };
                cells.push(Cell::from(Span::styled(state, state_style(n.state))));
                cells.push(Cell::from(c.keys().to_string()));
            }
            cells.push(Cell::from(human_bytes(c.bytes as f64)));
            cells.push(Cell::from(format!("{:.1}", n.rates.requests)));
            if wide {
                cells.push(Cell::from(human_bytes(n.rates.repair_bytes)));
            }
            Row::new(cells)
        })
        .collect();
    let widths: Vec<Constraint> = if wide {
        [2, 16, 8, 11, 6, 5, 9, 6, 9]
            .map(Constraint::Length)
            .to_vec()
    } else {
        [2, 15, 7, 5, 9, 5].map(Constraint::Length).to_vec()
    };
    // What the capacity side says, beside what the ring shows.
    let capacity = app.capacity.as_ref().map_or(String::new(), |c| {
        if wide {
            format!(
                " · capacity {} in service, desired {} [{}..{}]",
                c.in_service(),
                c.desired,
                c.min,
                c.max
            )
        } else {
            format!(" · {}/{} up", c.in_service(), c.desired)
        }
    });
    let title = format!(
        " Nodes ({}){capacity} · sort: {} ",
        app.nodes.len(),
        sort_label
    );
    let table = Table::new(rows, widths)
        .header(header_row)
        .column_spacing(1)
        .block(pane(title, app.focus == Focus::Nodes))
        .row_highlight_style(Style::new().fg(Color::Black).bg(SELECTED));
    let mut state = TableState::default();
    state.select(
        app.selected
            .as_ref()
            .and_then(|s| sorted.iter().position(|n| &n.addr == s)),
    );
    frame.render_stateful_widget(table, area, &mut state);
}

fn render_fingers(app: &App, frame: &mut Frame, area: Rect) {
    let Some(node) = app.selected_node() else {
        frame.render_widget(
            Paragraph::new("no node selected").block(pane(" Fingers ", false)),
            area,
        );
        return;
    };
    let mut lines = vec![
        Line::from(vec![
            Span::styled("pred ", Style::new().fg(PREDECESSOR)),
            Span::raw(node.predecessor.clone().unwrap_or_else(|| "-".to_string())),
            Span::styled(
                format!("  up {}", uptime(node.uptime_secs)),
                Style::new().fg(DIM),
            ),
        ]),
        Line::from(vec![
            Span::styled("succ ", Style::new().fg(SUCCESSOR)),
            Span::raw(if node.successors.is_empty() {
                "-".to_string()
            } else {
                node.successors.join(" ")
            }),
        ]),
        Line::styled(
            "index  start    target",
            Style::new().add_modifier(Modifier::BOLD),
        ),
    ];
    if node.fingers.is_empty() {
        lines.push(Line::styled("(no finger table)", Style::new().fg(DIM)));
    }
    for f in &node.fingers {
        let index = if f.first == f.last {
            f.first.to_string()
        } else {
            format!("{}-{}", f.first, f.last)
        };
        let mut spans = vec![
            Span::raw(format!("{index:<6} {} ", f.start.short())),
            Span::styled(
                f.target.clone().unwrap_or_else(|| "-".to_string()),
                Style::new().fg(CHORD),
            ),
        ];
        if f.stale {
            spans.push(Span::styled(" stale", Style::new().fg(Color::Red)));
        }
        lines.push(Line::from(spans));
    }
    let stale = node.fingers.iter().filter(|f| f.stale).count();
    let runs = node.fingers.len();
    let title = format!(
        " Fingers #{} · {runs} run{}, {stale} stale ",
        ring_pos(app, &node.addr),
        if runs == 1 { "" } else { "s" },
    );
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(pane(title, false)),
        area,
    );
}

/// `42s`, `7m05s`, `3h12m`, `2d04h`.
fn uptime(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, (s / 60) % 60),
        s => format!("{}d{:02}h", s / 86_400, (s / 3600) % 24),
    }
}

fn ring_pos(app: &App, addr: &str) -> usize {
    app.nodes.iter().position(|n| n.addr == addr).unwrap_or(0)
}

/// A bar of `width` cells filled to `ratio`, in eighths.
fn bar(ratio: f64, width: usize) -> String {
    const EIGHTHS: [&str; 8] = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];
    let eighths = (ratio.clamp(0.0, 1.0) * (width * 8) as f64).round() as usize;
    let full = eighths / 8;
    let mut s = "█".repeat(full);
    if full < width {
        s.push_str(EIGHTHS[eighths % 8]);
    }
    let shown = s.chars().count();
    s.push_str(&" ".repeat(width.saturating_sub(shown)));
    s
}

fn render_distribution(app: &App, frame: &mut Frame, area: Rect) {
    let ids: Vec<_> = app.nodes.iter().map(|n| n.id).collect();
    let shares = id_shares(&ids);
    let keys: Vec<f64> = app.nodes.iter().map(|n| n.counters.keys() as f64).collect();
    let bytes: Vec<f64> = app.nodes.iter().map(|n| n.counters.bytes as f64).collect();
    let max_keys = keys.iter().copied().fold(0.0, f64::max);
    let max_bytes = bytes.iter().copied().fold(0.0, f64::max);
    let inner_width = area.width.saturating_sub(2) as usize;
    // "#nn " + keys bar + " nnnnn " + bytes bar + " nnn.n MiB" + " nn.n%"
    let bar_width = inner_width.saturating_sub(4 + 7 + 11 + 7 + 1) / 2;
    let mut lines = vec![Line::from(vec![
        Span::styled("max/mean ", Style::new().fg(DIM)),
        Span::raw(format!(
            "keys {:.2} · bytes {:.2} · id share {:.2}",
            imbalance(&keys),
            imbalance(&bytes),
            imbalance(&shares)
        )),
    ])];
    lines.push(Line::styled(
        format!(
            "{:<4}{:<w$} {:>5} {:<w$} {:>10} {:>6}",
            "#",
            "keys",
            "",
            "bytes",
            "",
            "share",
            w = bar_width
        ),
        Style::new().add_modifier(Modifier::BOLD),
    ));
    let rows = area.height.saturating_sub(4) as usize;
    // Keep the selected node in view when the ring is taller than the pane.
    let sel = app.selected.as_ref().map(|s| ring_pos(app, s)).unwrap_or(0);
    let first = if app.nodes.len() <= rows {
        0
    } else {
        sel.saturating_sub(rows / 2).min(app.nodes.len() - rows)
    };
    for (i, node) in app.nodes.iter().enumerate().skip(first).take(rows) {
        let is_sel = app.selected.as_deref() == Some(node.addr.as_str());
        let style = if is_sel {
            Style::new().fg(SELECTED)
        } else {
            Style::new()
        };
        let ratio = |v: f64, max: f64| if max > 0.0 { v / max } else { 0.0 };
        lines.push(Line::from(vec![
            Span::styled(format!("{i:<4}"), style),
            Span::styled(
                bar(ratio(keys[i], max_keys), bar_width),
                Style::new().fg(Color::Cyan),
            ),
            Span::raw(format!(" {:>5} ", node.counters.keys())),
            Span::styled(
                bar(ratio(bytes[i], max_bytes), bar_width),
                Style::new().fg(Color::Magenta),
            ),
            Span::raw(format!(" {:>10}", human_bytes(bytes[i]))),
            Span::raw(format!(
                " {:>5.1}%",
                shares.get(i).copied().unwrap_or(0.0) * 100.0
            )),
        ]));
    }
    frame.render_widget(
        Paragraph::new(lines).block(pane(" Distribution ", false)),
        area,
    );
}

fn format_value(v: f64, unit: Unit) -> String {
    match unit {
        Unit::Count => format!("{v:.0}"),
        Unit::PerSecond => format!("{v:.1}/s"),
        Unit::Bytes => human_bytes(v),
    }
}

fn render_graphs(app: &App, frame: &mut Frame, area: Rect) {
    if app.series.is_empty() {
        frame.render_widget(
            Paragraph::new("no samples yet").block(pane(" Graphs ", false)),
            area,
        );
        return;
    }
    let constraints = vec![Constraint::Ratio(1, app.series.len() as u32); app.series.len()];
    let areas = Layout::horizontal(constraints).split(area);
    for (series, area) in app.series.iter().zip(areas.iter()) {
        render_series(app, series, frame, *area);
    }
}

fn render_series(app: &App, series: &Series, frame: &mut Frame, area: Rect) {
    let now = app.now_ms;
    let points: Vec<(f64, f64)> = series
        .points
        .iter()
        .map(|(at, v)| (-(now.saturating_sub(*at) as f64) / 1000.0, *v))
        .collect();
    let oldest = points.first().map_or(-60.0, |p| p.0).min(-10.0);
    let max = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let top = if max > 0.0 { max * 1.1 } else { 1.0 };
    let last = series.points.last().map_or(0.0, |p| p.1);
    let title = format!(" {} · {} ", series.title, format_value(last, series.unit));
    let dataset = Dataset::default()
        .marker(Marker::Braille)
        .graph_type(GraphType::Line)
        .style(Style::new().fg(Color::Cyan))
        .data(&points);
    let chart = Chart::new(vec![dataset])
        .block(pane(title, false))
        .x_axis(
            Axis::default()
                .title("s")
                .style(Style::new().fg(DIM))
                .bounds([oldest, 0.0])
                .labels([format!("{oldest:.0}"), "now".to_string()]),
        )
        .y_axis(
            Axis::default()
                .style(Style::new().fg(DIM))
                .bounds([0.0, top])
                .labels(["0".to_string(), format_value(top, series.unit)]),
        );
    frame.render_widget(chart, area);
}

fn severity_style(s: Severity) -> Style {
    match s {
        Severity::Info => Style::new(),
        Severity::Good => Style::new().fg(Color::Green),
        Severity::Warn => Style::new().fg(SELECTED),
        Severity::Error => Style::new().fg(Color::Red),
    }
}

/// Narrower than this, the events pane shortens its source and kind columns.
const EVENTS_WIDE_MIN: u16 = 90;

fn render_events(app: &App, frame: &mut Frame, area: Rect) {
    let rows = area.height.saturating_sub(2) as usize;
    let end = app.events.len().saturating_sub(app.events_scroll);
    let start = end.saturating_sub(rows);
    let wide = area.width >= EVENTS_WIDE_MIN;
    let lines: Vec<Line> = app
        .events
        .range(start..end)
        .map(|e| {
            let source = match (&e.source, wide) {
                (EventSource::Node(addr), true) => format!("{addr:<15} "),
                // The port tells local nodes apart; the host is the same.
                (EventSource::Node(addr), false) => {
                    format!(
                        "{:<6} ",
                        addr.rsplit_once(':').map_or(addr.as_str(), |(_, p)| p)
                    )
                }
                (EventSource::Console, true) => format!("{:<15} ", "console"),
                (EventSource::Console, false) => format!("{:<6} ", "con"),
            };
            let kind = if wide {
                format!("{:<16} ", e.kind)
            } else {
                format!("{} ", e.kind)
            };
            Line::from(vec![
                Span::styled(format!("{} ", clock(e.at_ms)), Style::new().fg(DIM)),
                Span::raw(source),
                Span::styled(kind, severity_style(e.severity)),
                Span::raw(e.text.clone()),
            ])
        })
        .collect();
    let title = if app.events_scroll > 0 {
        format!(
            " Events ({}) · {} back ",
            app.events.len(),
            app.events_scroll
        )
    } else {
        format!(" Events ({}) ", app.events.len())
    };
    frame.render_widget(
        Paragraph::new(lines).block(pane(title, app.focus == Focus::Events)),
        area,
    );
}

fn render_files(app: &App, frame: &mut Frame, area: Rect) {
    let rows: Vec<Row> = app
        .files
        .iter()
        .map(|f| {
            Row::new(vec![
                Cell::from(f.name.clone()),
                Cell::from(human_bytes(f.size as f64)),
                Cell::from(f.chunks.to_string()),
                Cell::from(clock(f.modified_ms)),
            ])
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Min(12),
            Constraint::Length(10),
            Constraint::Length(6),
            Constraint::Length(8),
        ],
    )
    .header(
        Row::new(["name", "size", "chunks", "modified"])
            .style(Style::new().add_modifier(Modifier::BOLD)),
    )
    .block(pane(
        format!(" Files ({}) · d download ", app.files.len()),
        app.focus == Focus::Files,
    ))
    .row_highlight_style(Style::new().fg(Color::Black).bg(SELECTED));
    let mut state = TableState::default();
    if !app.files.is_empty() {
        state.select(Some(app.selected_file));
    }
    frame.render_stateful_widget(table, area, &mut state);
}

fn render_transfers(app: &App, frame: &mut Frame, area: Rect) {
    let transfers = app.visible_transfers();
    let block = pane(format!(" Transfers ({}) ", transfers.len()), false);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    for (i, t) in transfers.iter().enumerate() {
        if i as u16 >= inner.height {
            break;
        }
        let row = Rect {
            y: inner.y + i as u16,
            height: 1,
            ..inner
        };
        let arrow = match t.direction {
            Direction::Upload => "↑",
            Direction::Download => "↓",
        };
        let (label, color) = match &t.state {
            TransferState::Running => {
                let eta = t
                    .eta_secs()
                    .map_or("ETA -".to_string(), |s| format!("ETA {s:.0}s"));
                (
                    format!(
                        "{arrow} {} {:.0}% {}/s {eta}",
                        t.name,
                        t.ratio() * 100.0,
                        human_bytes(t.rate())
                    ),
                    Color::Cyan,
                )
            }
            TransferState::Done => (
                format!(
                    "{arrow} {} done, {} at {}/s",
                    t.name,
                    human_bytes(t.total as f64),
                    human_bytes(t.rate())
                ),
                Color::Green,
            ),
            TransferState::Failed(reason) => {
                (format!("{arrow} {} failed: {reason}", t.name), Color::Red)
            }
        };
        let gauge = Gauge::default()
            .ratio(t.ratio())
            .label(Span::styled(label, Style::new().fg(Color::White)))
            .gauge_style(Style::new().fg(color).bg(Color::Black))
            .use_unicode(true);
        frame.render_widget(gauge, row);
    }
}

/// A centered box of `lines`, over whatever is beneath.
fn render_popup(frame: &mut Frame, area: Rect, title: &str, lines: Vec<Line<'_>>) {
    let width = lines
        .iter()
        .map(|l| l.width() as u16)
        .max()
        .unwrap_or(0)
        .max(title.chars().count() as u16)
        .saturating_add(4)
        .clamp(30, area.width.saturating_sub(2).max(1));
    let height = (lines.len() as u16 + 2).min(area.height);
    let popup = Rect {
        x: area.x + area.width.saturating_sub(width) / 2,
        y: area.y + area.height.saturating_sub(height) / 2,
        width,
        height,
    };
    frame.render_widget(Clear, popup);
    let block = Block::new()
        .borders(Borders::ALL)
        .border_style(Style::new().fg(SELECTED))
        .title(title.to_string());
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        popup,
    );
}

fn render_help(frame: &mut Frame, area: Rect) {
    let lines: Vec<Line> = KEYS
        .iter()
        .map(|(key, what)| {
            Line::from(vec![
                Span::styled(format!("{key:<14}"), Style::new().fg(SELECTED)),
                Span::raw(*what),
            ])
        })
        .collect();
    render_popup(frame, area, " Keys (? or Esc closes) ", lines);
}
