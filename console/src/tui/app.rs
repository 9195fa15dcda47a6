//! The console's state and its transitions: [`App`] is plain data, keys map
//! to [`Action`]s ([`key_to_action`]), and [`App::update`] applies one action
//! and returns the [`Command`]s (background work) it asks for. Results of
//! that work come back as [`Update`]s through [`App::apply`].
//!
//! Invariants: nothing here does I/O or reads the clock (time arrives in
//! updates and in [`Action::Tick`]), so every transition is a plain function
//! of its inputs and is tested without a terminal or a ring. The selection
//! is kept by address, so it follows its node when the table re-sorts or
//! the ring changes.

use std::collections::VecDeque;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::model::{
    membership_changes, EventView, FileView, NodeView, RingSnapshot, Series, Severity,
};
use crate::capacity::CapacityState;
use chord_node::chord::Id;

/// Events kept in memory for the events pane: minutes of a busy ring.
pub const EVENT_CAPACITY: usize = 500;
/// Finished transfers kept in memory after the running ones.
const FINISHED_TRANSFERS_KEPT: usize = 4;
/// How long a finished transfer stays on screen: long enough to read its
/// result, after which its pane gives the space back.
pub const TRANSFER_LINGER_MS: u64 = 15_000;
/// How long the footer shows what a key did: long enough to read, short
/// enough that "killing …" does not outlive the kill by minutes.
pub const STATUS_LINGER_MS: u64 = 8_000;

/// Which pane `j`/`k` move in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    Nodes,
    Files,
    Events,
}

/// The column the nodes table is sorted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortColumn {
    /// Ring order: ascending id.
    Id,
    Addr,
    State,
    Keys,
    Bytes,
    Requests,
    Repair,
}

impl SortColumn {
    fn next(self) -> SortColumn {
        match self {
            SortColumn::Id => SortColumn::Addr,
            SortColumn::Addr => SortColumn::State,
            SortColumn::State => SortColumn::Keys,
            SortColumn::Keys => SortColumn::Bytes,
            SortColumn::Bytes => SortColumn::Requests,
            SortColumn::Requests => SortColumn::Repair,
            SortColumn::Repair => SortColumn::Id,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            SortColumn::Id => "id",
            SortColumn::Addr => "addr",
            SortColumn::State => "state",
            SortColumn::Keys => "keys",
            SortColumn::Bytes => "bytes",
            SortColumn::Requests => "req/s",
            SortColumn::Repair => "repair",
        }
    }
}

/// What the prompt line is asking for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PromptKind {
    /// A local path to upload.
    UploadPath,
    /// Where to write the download of file `name`.
    DownloadDest { name: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompt {
    pub kind: PromptKind,
    pub input: String,
}

/// A destructive action waiting for `y`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pending {
    Kill { addr: String },
    Leave { addr: String },
    RemoveNode,
}

impl Pending {
    pub fn question(&self) -> String {
        match self {
            Pending::Kill { addr } => format!("Kill {addr} (kill -9, no hand-off)?"),
            Pending::Leave { addr } => {
                format!("Make {addr} leave the ring (hand off its keys, then stop)?")
            }
            Pending::RemoveNode => "Remove one node (drain, then stop)?".to_string(),
        }
    }
}

/// What the keyboard currently talks to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal,
    Help,
    Prompt(Prompt),
    Confirm(Pending),
}

/// Where the ring comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Attached to a running ring through this node.
    Attached { peer: String },
    /// A fleet this console started and will stop on quit.
    Local { data_root: String },
    /// The nodes of an Auto Scaling group, which `+`/`-` resize.
    Group { group: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Upload,
    Download,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferState {
    Running,
    Done,
    Failed(String),
}

/// One upload or download and its progress.
#[derive(Clone, Debug, PartialEq)]
pub struct TransferView {
    pub id: u64,
    pub direction: Direction,
    pub name: String,
    pub total: u64,
    pub done: u64,
    pub started_ms: u64,
    /// Last progress or completion time; rate and ETA are measured to it.
    pub updated_ms: u64,
    pub state: TransferState,
}

impl TransferView {
    /// Bytes per second so far.
    pub fn rate(&self) -> f64 {
        let secs = self.updated_ms.saturating_sub(self.started_ms) as f64 / 1000.0;
        if secs > 0.0 {
            self.done as f64 / secs
        } else {
            0.0
        }
    }

    /// Seconds left at the rate so far, if there is one.
    pub fn eta_secs(&self) -> Option<f64> {
        let rate = self.rate();
        (rate > 0.0 && self.state == TransferState::Running)
            .then(|| self.total.saturating_sub(self.done) as f64 / rate)
    }

    pub fn ratio(&self) -> f64 {
        if self.total == 0 {
            return if self.state == TransferState::Done {
                1.0
            } else {
                0.0
            };
        }
        (self.done as f64 / self.total as f64).clamp(0.0, 1.0)
    }
}

/// Something a key asks the console to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Quit,
    Up,
    Down,
    NextFocus,
    CycleSort,
    ToggleFiles,
    TogglePause,
    ToggleHelp,
    StartUpload,
    StartDownload,
    AddNode,
    RemoveNode,
    Leave,
    Kill,
    Confirm,
    Cancel,
    Input(char),
    Backspace,
    /// Empties the prompt (Ctrl-U, as in a shell).
    ClearInput,
    Submit,
    /// The frame clock: the time render measures ages and rates against.
    Tick {
        now_ms: u64,
    },
}

/// Background work [`App::update`] asks for; the event loop hands it to the
/// task that owns the clients or the fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Upload {
        id: u64,
        path: String,
        name: String,
        entry: String,
    },
    Download {
        id: u64,
        name: String,
        dest: String,
        entry: String,
    },
    AddNode,
    RemoveNode,
    Leave {
        addr: String,
    },
    Kill {
        addr: String,
    },
    SetPaused(bool),
}

/// Results from background tasks.
#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    Snapshot(RingSnapshot),
    /// New events from the nodes' logs (or the console's own tasks).
    Events(Vec<EventView>),
    /// What an operator's action (`+`, `-`, `l`, `x`) came to: an event,
    /// and the footer's line, which a burst of events cannot scroll away.
    Outcome(EventView),
    Series(Vec<Series>),
    Capacity(CapacityState),
    /// Size of a transfer, once known (a download learns it from the manifest).
    TransferSize {
        id: u64,
        total: u64,
        at_ms: u64,
    },
    TransferProgress {
        id: u64,
        done: u64,
        at_ms: u64,
    },
    /// A download's whole file did not match its checksum, and it is
    /// fetched again, every chunk checked: its count starts from zero.
    TransferRestarted {
        id: u64,
        at_ms: u64,
    },
    TransferDone {
        id: u64,
        at_ms: u64,
    },
    TransferFailed {
        id: u64,
        reason: String,
        at_ms: u64,
    },
}

/// The whole state of the console.
#[derive(Clone, Debug)]
pub struct App {
    pub origin: Origin,
    /// Whether `x` may kill nodes (only the fleet this console runs).
    pub can_kill: bool,
    /// In ring order (ascending id).
    pub nodes: Vec<NodeView>,
    pub files: Vec<FileView>,
    pub events: VecDeque<EventView>,
    /// Rows scrolled back from the newest event.
    pub events_scroll: usize,
    pub series: Vec<Series>,
    pub transfers: Vec<TransferView>,
    pub key_ticks: Vec<Id>,
    pub capacity: Option<CapacityState>,
    pub selected: Option<String>,
    pub selected_file: usize,
    pub sort: SortColumn,
    pub focus: Focus,
    pub mode: Mode,
    pub show_files: bool,
    pub paused: bool,
    pub quit: bool,
    /// The frame clock (see [`Action::Tick`]).
    pub now_ms: u64,
    pub last_snapshot_ms: Option<u64>,
    pub poll_error: Option<String>,
    /// One line for the footer: the last thing a key did or refused
    /// (shown for [`STATUS_LINGER_MS`] after `status_ms`).
    pub status: Option<String>,
    pub status_ms: u64,
    next_transfer: u64,
}

impl App {
    pub fn new(origin: Origin, can_kill: bool, now_ms: u64) -> App {
        App {
            origin,
            can_kill,
            nodes: Vec::new(),
            files: Vec::new(),
            events: VecDeque::new(),
            events_scroll: 0,
            series: Vec::new(),
            transfers: Vec::new(),
            key_ticks: Vec::new(),
            capacity: None,
            selected: None,
            selected_file: 0,
            sort: SortColumn::Id,
            focus: Focus::Nodes,
            mode: Mode::Normal,
            show_files: false,
            paused: false,
            quit: false,
            now_ms,
            last_snapshot_ms: None,
            poll_error: None,
            status: None,
            status_ms: now_ms,
            next_transfer: 1,
        }
    }

    /// The nodes in table order (the current sort column).
    pub fn sorted_nodes(&self) -> Vec<&NodeView> {
        let mut nodes: Vec<&NodeView> = self.nodes.iter().collect();
        let desc = |a: f64, b: f64| b.total_cmp(&a);
        match self.sort {
            SortColumn::Id => {}
            SortColumn::Addr => nodes.sort_by(|a, b| a.addr.cmp(&b.addr)),
            SortColumn::State => nodes.sort_by_key(|n| n.state),
            SortColumn::Keys => nodes.sort_by_key(|n| std::cmp::Reverse(n.counters.keys())),
            SortColumn::Bytes => nodes.sort_by_key(|n| std::cmp::Reverse(n.counters.bytes)),
            SortColumn::Requests => nodes.sort_by(|a, b| desc(a.rates.requests, b.rates.requests)),
            SortColumn::Repair => {
                nodes.sort_by(|a, b| desc(a.rates.repair_bytes, b.rates.repair_bytes))
            }
        }
        nodes
    }

    pub fn selected_node(&self) -> Option<&NodeView> {
        let addr = self.selected.as_deref()?;
        self.nodes.iter().find(|n| n.addr == addr)
    }

    /// Transfers worth showing now: running ones, and finished ones for
    /// [`TRANSFER_LINGER_MS`].
    pub fn visible_transfers(&self) -> Vec<&TransferView> {
        self.transfers
            .iter()
            .filter(|t| {
                t.state == TransferState::Running
                    || self.now_ms.saturating_sub(t.updated_ms) < TRANSFER_LINGER_MS
            })
            .collect()
    }

    /// Puts `text` in the footer for [`STATUS_LINGER_MS`].
    pub fn say(&mut self, text: impl Into<String>) {
        self.status = Some(text.into());
        self.status_ms = self.now_ms;
    }

    /// The footer's line, while it is fresh.
    pub fn footer_status(&self) -> Option<&str> {
        self.status
            .as_deref()
            .filter(|_| self.now_ms.saturating_sub(self.status_ms) < STATUS_LINGER_MS)
    }

    pub fn selected_file(&self) -> Option<&FileView> {
        self.files.get(self.selected_file)
    }

    /// An address to enter the ring through: the selected node if it
    /// answers, else any node that does.
    pub fn entry(&self) -> Option<String> {
        use super::model::NodeState;
        let reachable = |n: &&NodeView| n.state != NodeState::Unreachable;
        self.selected_node()
            .filter(reachable)
            .or_else(|| self.nodes.iter().find(reachable))
            .map(|n| n.addr.clone())
            .or_else(|| match &self.origin {
                Origin::Attached { peer } => Some(peer.clone()),
                Origin::Local { .. } | Origin::Group { .. } => None,
            })
    }

    pub fn push_event(&mut self, event: EventView) {
        if self.events.len() == EVENT_CAPACITY {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    fn note(&mut self, kind: &str, text: String, severity: Severity) {
        self.push_event(EventView::console(self.now_ms, kind, text, severity));
    }

    /// Applies one action; returns the background work it asks for.
    pub fn update(&mut self, action: Action) -> Vec<Command> {
        match action {
            Action::Tick { now_ms } => {
                self.now_ms = now_ms;
                Vec::new()
            }
            Action::Quit => {
                self.quit = true;
                Vec::new()
            }
            Action::ToggleHelp => {
                self.mode = if self.mode == Mode::Help {
                    Mode::Normal
                } else {
                    Mode::Help
                };
                Vec::new()
            }
            Action::Cancel => {
                if self.mode != Mode::Normal {
                    self.say("cancelled");
                }
                self.mode = Mode::Normal;
                Vec::new()
            }
            Action::Up => self.move_selection(-1),
            Action::Down => self.move_selection(1),
            Action::NextFocus => {
                self.focus = match self.focus {
                    Focus::Nodes if self.show_files => Focus::Files,
                    Focus::Nodes | Focus::Files => Focus::Events,
                    Focus::Events => Focus::Nodes,
                };
                Vec::new()
            }
            Action::CycleSort => {
                self.sort = self.sort.next();
                self.say(format!("nodes sorted by {}", self.sort.label()));
                Vec::new()
            }
            Action::ToggleFiles => {
                self.show_files = !self.show_files;
                self.focus = if self.show_files {
                    Focus::Files
                } else {
                    Focus::Nodes
                };
                Vec::new()
            }
            Action::TogglePause => {
                self.paused = !self.paused;
                self.say(
                    if self.paused {
                        "refresh paused"
                    } else {
                        "refresh resumed"
                    }
                    .to_string(),
                );
                vec![Command::SetPaused(self.paused)]
            }
            Action::StartUpload => {
                self.mode = Mode::Prompt(Prompt {
                    kind: PromptKind::UploadPath,
                    input: String::new(),
                });
                Vec::new()
            }
            Action::StartDownload => {
                match self.selected_file().map(|f| f.name.clone()) {
                    Some(name) => {
                        self.mode = Mode::Prompt(Prompt {
                            input: format!("./{name}"),
                            kind: PromptKind::DownloadDest { name },
                        });
                    }
                    None => self.say("no file selected: f shows the files"),
                }
                Vec::new()
            }
            Action::AddNode => vec![Command::AddNode],
            Action::RemoveNode => {
                self.mode = Mode::Confirm(Pending::RemoveNode);
                Vec::new()
            }
            Action::Leave => {
                match self.selected.clone() {
                    Some(addr) => self.mode = Mode::Confirm(Pending::Leave { addr }),
                    None => self.say("no node selected"),
                }
                Vec::new()
            }
            Action::Kill => {
                match (&self.selected, self.can_kill) {
                    (_, false) => self.say("x kills only nodes of the fleet this console started"),
                    (None, true) => self.say("no node selected"),
                    (Some(addr), true) => {
                        self.mode = Mode::Confirm(Pending::Kill { addr: addr.clone() })
                    }
                }
                Vec::new()
            }
            Action::Confirm => {
                let Mode::Confirm(pending) = std::mem::replace(&mut self.mode, Mode::Normal) else {
                    return Vec::new();
                };
                match pending {
                    Pending::Kill { addr } => {
                        self.say(format!("killing {addr}"));
                        vec![Command::Kill { addr }]
                    }
                    Pending::Leave { addr } => {
                        self.say(format!("{addr} is leaving"));
                        vec![Command::Leave { addr }]
                    }
                    Pending::RemoveNode => {
                        self.say("removing a node");
                        vec![Command::RemoveNode]
                    }
                }
            }
            Action::Input(c) => {
                if let Mode::Prompt(p) = &mut self.mode {
                    p.input.push(c);
                }
                Vec::new()
            }
            Action::Backspace => {
                if let Mode::Prompt(p) = &mut self.mode {
                    p.input.pop();
                }
                Vec::new()
            }
            Action::ClearInput => {
                if let Mode::Prompt(p) = &mut self.mode {
                    p.input.clear();
                }
                Vec::new()
            }
            Action::Submit => self.submit(),
        }
    }

    fn submit(&mut self) -> Vec<Command> {
        let Mode::Prompt(prompt) = std::mem::replace(&mut self.mode, Mode::Normal) else {
            return Vec::new();
        };
        let input = prompt.input.trim().to_string();
        if input.is_empty() {
            self.say("empty path: nothing to do");
            return Vec::new();
        }
        let Some(entry) = self.entry() else {
            self.say("no node answers yet");
            return Vec::new();
        };
        let id = self.next_transfer;
        self.next_transfer += 1;
        let (direction, name, command) = match prompt.kind {
            PromptKind::UploadPath => {
                let name = std::path::Path::new(&input)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(str::to_string);
                let Some(name) = name else {
                    self.say(format!("{input} has no file name to store it under"));
                    return Vec::new();
                };
                let command = Command::Upload {
                    id,
                    path: input,
                    name: name.clone(),
                    entry,
                };
                (Direction::Upload, name, command)
            }
            PromptKind::DownloadDest { name } => {
                let command = Command::Download {
                    id,
                    name: name.clone(),
                    dest: input,
                    entry,
                };
                (Direction::Download, name, command)
            }
        };
        self.transfers.push(TransferView {
            id,
            direction,
            name,
            total: 0,
            done: 0,
            started_ms: self.now_ms,
            updated_ms: self.now_ms,
            state: TransferState::Running,
        });
        self.trim_transfers();
        vec![command]
    }

    fn move_selection(&mut self, delta: isize) -> Vec<Command> {
        match self.focus {
            Focus::Nodes => {
                let order: Vec<String> =
                    self.sorted_nodes().iter().map(|n| n.addr.clone()).collect();
                if order.is_empty() {
                    return Vec::new();
                }
                let at = self
                    .selected
                    .as_ref()
                    .and_then(|s| order.iter().position(|a| a == s))
                    .unwrap_or(0);
                let next = (at as isize + delta).clamp(0, order.len() as isize - 1) as usize;
                self.selected = Some(order[next].clone());
                Vec::new()
            }
            Focus::Files => {
                let last = self.files.len().saturating_sub(1) as isize;
                self.selected_file = (self.selected_file as isize + delta).clamp(0, last) as usize;
                Vec::new()
            }
            Focus::Events => {
                // Down moves toward the newest line, which sits at the bottom.
                let max = self.events.len().saturating_sub(1) as isize;
                self.events_scroll = (self.events_scroll as isize - delta).clamp(0, max) as usize;
                Vec::new()
            }
        }
    }

    fn trim_transfers(&mut self) {
        let finished: Vec<u64> = self
            .transfers
            .iter()
            .filter(|t| t.state != TransferState::Running)
            .map(|t| t.id)
            .collect();
        if finished.len() > FINISHED_TRANSFERS_KEPT {
            let drop = &finished[..finished.len() - FINISHED_TRANSFERS_KEPT];
            self.transfers.retain(|t| !drop.contains(&t.id));
        }
    }

    fn transfer(&mut self, id: u64) -> Option<&mut TransferView> {
        self.transfers.iter_mut().find(|t| t.id == id)
    }

    /// Applies a result of background work; returns follow-up work.
    pub fn apply(&mut self, update: Update) -> Vec<Command> {
        match update {
            Update::Snapshot(snapshot) => return self.apply_snapshot(snapshot),
            Update::Events(events) => {
                for e in events {
                    self.push_event(e);
                }
            }
            Update::Outcome(e) => {
                self.say(e.text.clone());
                self.push_event(e);
            }
            Update::Series(series) => {
                if !self.paused {
                    self.series = series;
                }
            }
            Update::Capacity(state) => self.capacity = Some(state),
            Update::TransferSize { id, total, at_ms } => {
                if let Some(t) = self.transfer(id) {
                    t.total = total;
                    t.started_ms = at_ms;
                    t.updated_ms = at_ms;
                }
            }
            Update::TransferProgress { id, done, at_ms } => {
                if let Some(t) = self.transfer(id) {
                    t.done = done;
                    t.updated_ms = at_ms;
                }
            }
            Update::TransferRestarted { id, at_ms } => {
                if let Some(t) = self.transfer(id) {
                    t.done = 0;
                    t.started_ms = at_ms;
                    t.updated_ms = at_ms;
                    let text = format!("{}: {}", t.name, crate::progress::STARTED_OVER);
                    self.note("transfer", text, Severity::Warn);
                }
            }
            Update::TransferDone { id, at_ms } => {
                if let Some(t) = self.transfer(id) {
                    t.state = TransferState::Done;
                    t.done = t.total;
                    t.updated_ms = at_ms;
                    let verb = match t.direction {
                        Direction::Upload => "uploaded",
                        Direction::Download => "downloaded",
                    };
                    let text = format!(
                        "{verb} {} ({}) at {}/s",
                        t.name,
                        super::model::human_bytes(t.total as f64),
                        super::model::human_bytes(t.rate())
                    );
                    self.note("transfer", text, Severity::Good);
                }
                self.trim_transfers();
            }
            Update::TransferFailed { id, reason, at_ms } => {
                if let Some(t) = self.transfer(id) {
                    t.state = TransferState::Failed(reason.clone());
                    t.updated_ms = at_ms;
                    let text = format!("{} failed: {reason}", t.name);
                    self.note("transfer", text, Severity::Error);
                }
                self.trim_transfers();
            }
        }
        Vec::new()
    }

    fn apply_snapshot(&mut self, snapshot: RingSnapshot) -> Vec<Command> {
        if self.paused {
            return Vec::new();
        }
        self.poll_error = snapshot.error.clone();
        if snapshot.nodes.is_empty() && snapshot.error.is_some() {
            return Vec::new();
        }
        let (joined, gone) = membership_changes(&self.nodes, &snapshot.nodes);
        // The first snapshot is a picture of the ring, not a change to it.
        if self.last_snapshot_ms.is_some() {
            for addr in joined {
                self.push_event(EventView::console(
                    snapshot.taken_ms,
                    "node-seen",
                    format!("{addr} appeared in the ring"),
                    Severity::Good,
                ));
            }
            for addr in gone {
                self.push_event(EventView::console(
                    snapshot.taken_ms,
                    "node-gone",
                    format!("{addr} is no longer in the ring"),
                    Severity::Warn,
                ));
            }
        }
        let mut became_unreachable = Vec::new();
        for node in &snapshot.nodes {
            let was = self
                .nodes
                .iter()
                .find(|n| n.addr == node.addr)
                .map(|n| n.state);
            if node.state == super::model::NodeState::Unreachable
                && was.is_some_and(|s| s != super::model::NodeState::Unreachable)
            {
                became_unreachable.push(node.addr.clone());
            }
        }
        for addr in became_unreachable {
            self.push_event(EventView::console(
                snapshot.taken_ms,
                "unreachable",
                format!("{addr} missed the poll deadline"),
                Severity::Warn,
            ));
        }
        self.nodes = snapshot.nodes;
        if let Some(files) = snapshot.files {
            self.files = files;
            self.selected_file = self.selected_file.min(self.files.len().saturating_sub(1));
        }
        if let Some(ticks) = snapshot.key_ticks {
            self.key_ticks = ticks;
        }
        self.last_snapshot_ms = Some(snapshot.taken_ms);
        let still_there = self
            .selected
            .as_ref()
            .is_some_and(|s| self.nodes.iter().any(|n| &n.addr == s));
        if !still_there {
            self.selected = self.sorted_nodes().first().map(|n| n.addr.clone());
        }
        Vec::new()
    }
}

/// The action a key asks for in the current mode, if any.
pub fn key_to_action(app: &App, key: KeyEvent) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return Some(Action::Quit);
    }
    match &app.mode {
        Mode::Help => match key.code {
            KeyCode::Char('?') | KeyCode::Esc | KeyCode::Char('q') | KeyCode::Enter => {
                Some(Action::ToggleHelp)
            }
            _ => None,
        },
        Mode::Prompt(_) if key.modifiers.contains(KeyModifiers::CONTROL) => match key.code {
            KeyCode::Char('u') => Some(Action::ClearInput),
            _ => None,
        },
        Mode::Prompt(_) => match key.code {
            KeyCode::Esc => Some(Action::Cancel),
            KeyCode::Enter => Some(Action::Submit),
            KeyCode::Backspace => Some(Action::Backspace),
            KeyCode::Char(c) => Some(Action::Input(c)),
            _ => None,
        },
        Mode::Confirm(_) => match key.code {
            KeyCode::Char('y') | KeyCode::Char('Y') => Some(Action::Confirm),
            _ => Some(Action::Cancel),
        },
        Mode::Normal => match key.code {
            KeyCode::Char('q') => Some(Action::Quit),
            KeyCode::Char('j') | KeyCode::Down => Some(Action::Down),
            KeyCode::Char('k') | KeyCode::Up => Some(Action::Up),
            KeyCode::Tab => Some(Action::NextFocus),
            KeyCode::Char('s') => Some(Action::CycleSort),
            KeyCode::Char('f') => Some(Action::ToggleFiles),
            KeyCode::Char('p') => Some(Action::TogglePause),
            KeyCode::Char('?') => Some(Action::ToggleHelp),
            KeyCode::Char('u') => Some(Action::StartUpload),
            KeyCode::Char('d') => Some(Action::StartDownload),
            KeyCode::Char('+') => Some(Action::AddNode),
            KeyCode::Char('-') => Some(Action::RemoveNode),
            KeyCode::Char('l') => Some(Action::Leave),
            KeyCode::Char('x') => Some(Action::Kill),
            KeyCode::Esc => Some(Action::Cancel),
            _ => None,
        },
    }
}

/// Every key, for the help overlay and the README.
pub const KEYS: &[(&str, &str)] = &[
    (
        "j / k / ↓ / ↑",
        "move the selection (nodes, files or events)",
    ),
    ("Tab", "cycle focus: nodes, files, events"),
    ("s", "cycle the nodes table's sort column"),
    ("f", "show or hide the files pane"),
    ("u", "upload a local file (asks for its path)"),
    ("d", "download the selected file (asks where)"),
    ("+", "add a node"),
    ("-", "remove a node (drain, then stop or terminate; asks y)"),
    ("l", "selected node leaves gracefully (asks y)"),
    ("x", "kill the selected node, local fleet only (asks y)"),
    ("p", "pause or resume refresh"),
    ("?", "show or hide this help"),
    ("Esc", "cancel a prompt or question"),
    ("Ctrl-U", "clear the prompt's text"),
    ("q / Ctrl-C", "quit (a local fleet is stopped)"),
];
