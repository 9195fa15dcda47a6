//! Snapshot tests of every view (rendered from fixtures into a
//! `TestBackend`) and tests of the key-driven transitions.

#![allow(clippy::unwrap_used)]

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::app::{
    key_to_action, Action, App, Command, Focus, Mode, Pending, PromptKind, SortColumn, Update,
    STATUS_LINGER_MS,
};
use super::fixture::{self, NOW_MS};
use super::model::{NodeState, RingSnapshot};
use super::ui;

fn draw(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| ui::render(app, f)).unwrap();
    terminal.backend().to_string()
}

fn key(app: &mut App, code: KeyCode) -> Vec<Command> {
    let event = KeyEvent::new(code, KeyModifiers::NONE);
    match key_to_action(app, event) {
        Some(action) => app.update(action),
        None => Vec::new(),
    }
}

fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        key(app, KeyCode::Char(c));
    }
}

// ---------------------------------------------------------------- views

#[test]
fn large_screen_shows_every_pane() {
    insta::assert_snapshot!(draw(&fixture::app(5), 160, 48));
}

#[test]
fn large_screen_with_files_and_transfers() {
    let mut app = fixture::app(5);
    app.update(Action::ToggleFiles);
    insta::assert_snapshot!(draw(&app, 160, 48));
}

#[test]
fn compact_screen_fits_80_by_24() {
    let mut app = fixture::app(5);
    app.transfers.clear();
    insta::assert_snapshot!(draw(&app, 80, 24));
}

#[test]
fn compact_screen_with_transfers_and_files() {
    let mut app = fixture::app(5);
    app.update(Action::ToggleFiles);
    insta::assert_snapshot!(draw(&app, 80, 24));
}

#[test]
fn large_ring_of_64_nodes() {
    let mut app = fixture::app(64);
    app.transfers.clear();
    insta::assert_snapshot!(draw(&app, 160, 48));
}

#[test]
fn help_overlay_lists_every_key() {
    let mut app = fixture::app(5);
    key(&mut app, KeyCode::Char('?'));
    let screen = draw(&app, 160, 48);
    for (k, _) in super::app::KEYS {
        assert!(screen.contains(k), "help lacks {k}");
    }
    insta::assert_snapshot!(screen);
}

#[test]
fn upload_prompt() {
    let mut app = fixture::app(5);
    key(&mut app, KeyCode::Char('u'));
    type_text(&mut app, "/tmp/big.bin");
    insta::assert_snapshot!(draw(&app, 80, 24));
}

#[test]
fn kill_confirmation() {
    let mut app = fixture::app(5);
    key(&mut app, KeyCode::Char('x'));
    insta::assert_snapshot!(draw(&app, 80, 24));
}

#[test]
fn empty_app_waits_for_the_first_poll() {
    let app = App::new(
        super::app::Origin::Attached {
            peer: "127.0.0.1:5057".to_string(),
        },
        false,
        NOW_MS,
    );
    insta::assert_snapshot!(draw(&app, 80, 24));
    insta::assert_snapshot!("empty_large", draw(&app, 160, 48));
}

#[test]
fn paused_and_sorted_by_bytes() {
    let mut app = fixture::app(8);
    app.transfers.clear();
    key(&mut app, KeyCode::Char('p'));
    for _ in 0..4 {
        key(&mut app, KeyCode::Char('s'));
    }
    assert_eq!(app.sort, SortColumn::Bytes);
    insta::assert_snapshot!(draw(&app, 160, 48));
}

#[test]
fn renders_at_tiny_sizes_without_panicking() {
    for (w, h) in [
        (1, 1),
        (10, 5),
        (40, 12),
        (80, 24),
        (119, 39),
        (120, 40),
        (300, 100),
    ] {
        draw(&fixture::app(5), w, h);
        draw(&fixture::app(0), w, h);
    }
}

// ---------------------------------------------------------------- keys

#[test]
fn j_and_k_move_the_selection_in_table_order_and_stop_at_the_ends() {
    let mut app = fixture::app(5);
    let order: Vec<String> = app.sorted_nodes().iter().map(|n| n.addr.clone()).collect();
    assert_eq!(app.selected.as_deref(), Some(order[0].as_str()));
    assert!(key(&mut app, KeyCode::Char('j')).is_empty());
    assert_eq!(app.selected.as_deref(), Some(order[1].as_str()));
    key(&mut app, KeyCode::Down);
    assert_eq!(app.selected.as_deref(), Some(order[2].as_str()));
    key(&mut app, KeyCode::Char('k'));
    key(&mut app, KeyCode::Up);
    key(&mut app, KeyCode::Up);
    assert_eq!(app.selected.as_deref(), Some(order[0].as_str()));
    for _ in 0..10 {
        key(&mut app, KeyCode::Char('j'));
    }
    assert_eq!(app.selected.as_deref(), Some(order[4].as_str()));
}

#[test]
fn selection_follows_the_node_when_the_sort_changes() {
    let mut app = fixture::app(5);
    key(&mut app, KeyCode::Char('j'));
    let chosen = app.selected.clone();
    key(&mut app, KeyCode::Char('s'));
    assert_eq!(app.selected, chosen);
    let pos = app
        .sorted_nodes()
        .iter()
        .position(|n| Some(&n.addr) == chosen.as_ref())
        .unwrap();
    key(&mut app, KeyCode::Char('j'));
    let order: Vec<String> = app.sorted_nodes().iter().map(|n| n.addr.clone()).collect();
    assert_eq!(app.selected.as_ref(), Some(&order[(pos + 1).min(4)]));
}

#[test]
fn kill_asks_for_y_and_anything_else_cancels() {
    let mut app = fixture::app(5);
    let target = app.selected.clone().unwrap();
    assert!(key(&mut app, KeyCode::Char('x')).is_empty());
    assert_eq!(
        app.mode,
        Mode::Confirm(Pending::Kill {
            addr: target.clone()
        })
    );
    assert!(key(&mut app, KeyCode::Char('n')).is_empty());
    assert_eq!(app.mode, Mode::Normal);
    key(&mut app, KeyCode::Char('x'));
    assert_eq!(
        key(&mut app, KeyCode::Char('y')),
        vec![Command::Kill { addr: target }]
    );
    assert_eq!(app.mode, Mode::Normal);
}

#[test]
fn kill_is_refused_when_attached() {
    let mut app = fixture::app(5);
    app.can_kill = false;
    assert!(key(&mut app, KeyCode::Char('x')).is_empty());
    assert_eq!(app.mode, Mode::Normal);
    assert!(app.status.as_deref().unwrap().contains("only"));
}

#[test]
fn leave_and_remove_confirm_too_but_add_does_not() {
    let mut app = fixture::app(5);
    let target = app.selected.clone().unwrap();
    key(&mut app, KeyCode::Char('l'));
    assert_eq!(
        key(&mut app, KeyCode::Char('y')),
        vec![Command::Leave { addr: target }]
    );
    key(&mut app, KeyCode::Char('-'));
    assert_eq!(app.mode, Mode::Confirm(Pending::RemoveNode));
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.mode, Mode::Normal);
    key(&mut app, KeyCode::Char('-'));
    assert_eq!(key(&mut app, KeyCode::Char('y')), vec![Command::RemoveNode]);
    assert_eq!(key(&mut app, KeyCode::Char('+')), vec![Command::AddNode]);
}

#[test]
fn upload_prompt_takes_a_path_and_starts_a_transfer() {
    let mut app = fixture::app(5);
    app.transfers.clear();
    key(&mut app, KeyCode::Char('u'));
    assert!(matches!(&app.mode, Mode::Prompt(p) if p.kind == PromptKind::UploadPath));
    // Keys that are commands elsewhere are text in a prompt.
    type_text(&mut app, "/tmp/qx?");
    key(&mut app, KeyCode::Backspace);
    let cmds = key(&mut app, KeyCode::Enter);
    assert_eq!(app.mode, Mode::Normal);
    let entry = app.selected.clone().unwrap();
    assert_eq!(
        cmds,
        vec![Command::Upload {
            id: 1,
            path: "/tmp/qx".to_string(),
            name: "qx".to_string(),
            entry
        }]
    );
    assert_eq!(app.transfers.len(), 1);
    // Progress, then completion, land on that transfer.
    app.apply(Update::TransferSize {
        id: 1,
        total: 1000,
        at_ms: NOW_MS,
    });
    app.apply(Update::TransferProgress {
        id: 1,
        done: 500,
        at_ms: NOW_MS + 1000,
    });
    assert_eq!(app.transfers[0].rate(), 500.0);
    assert_eq!(app.transfers[0].eta_secs(), Some(1.0));
    // A transfer that starts over counts, and times, from zero, and says why.
    app.apply(Update::TransferRestarted {
        id: 1,
        at_ms: NOW_MS + 1000,
    });
    assert_eq!(app.transfers[0].done, 0);
    assert!(app
        .events
        .back()
        .unwrap()
        .text
        .contains("fetching it again"));
    app.apply(Update::TransferProgress {
        id: 1,
        done: 250,
        at_ms: NOW_MS + 1500,
    });
    assert_eq!(app.transfers[0].rate(), 500.0);
    assert_eq!(app.transfers[0].eta_secs(), Some(1.5));
    app.apply(Update::TransferFailed {
        id: 1,
        reason: "ring gone".to_string(),
        at_ms: NOW_MS + 2000,
    });
    assert!(app.events.back().unwrap().text.contains("ring gone"));
}

#[test]
fn escape_cancels_a_prompt_and_an_empty_path_does_nothing() {
    let mut app = fixture::app(5);
    key(&mut app, KeyCode::Char('u'));
    type_text(&mut app, "abc");
    assert!(key(&mut app, KeyCode::Esc).is_empty());
    assert_eq!(app.mode, Mode::Normal);
    key(&mut app, KeyCode::Char('u'));
    assert!(key(&mut app, KeyCode::Enter).is_empty());
    assert_eq!(app.mode, Mode::Normal);
}

#[test]
fn download_asks_where_for_the_selected_file() {
    let mut app = fixture::app(5);
    key(&mut app, KeyCode::Char('f'));
    assert_eq!(app.focus, Focus::Files);
    key(&mut app, KeyCode::Char('j'));
    key(&mut app, KeyCode::Char('d'));
    let Mode::Prompt(p) = &app.mode else {
        panic!("no prompt")
    };
    assert_eq!(
        p.kind,
        PromptKind::DownloadDest {
            name: "notes.md".to_string()
        }
    );
    assert_eq!(p.input, "./notes.md");
    let cmds = key(&mut app, KeyCode::Enter);
    assert!(
        matches!(&cmds[..], [Command::Download { name, dest, .. }] if name == "notes.md" && dest == "./notes.md")
    );
    // Ctrl-U empties the suggested destination.
    key(&mut app, KeyCode::Char('d'));
    let ctrl_u = KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL);
    app.update(key_to_action(&app, ctrl_u).unwrap());
    type_text(&mut app, "/tmp/n");
    let cmds = key(&mut app, KeyCode::Enter);
    assert!(matches!(&cmds[..], [Command::Download { dest, .. }] if dest == "/tmp/n"));
}

#[test]
fn download_without_files_says_so() {
    let mut app = fixture::app(3);
    app.files.clear();
    assert!(key(&mut app, KeyCode::Char('d')).is_empty());
    assert_eq!(app.mode, Mode::Normal);
    assert!(app.status.is_some());
}

#[test]
fn the_footer_line_fades_after_a_while() {
    let mut app = fixture::app(3);
    app.files.clear();
    key(&mut app, KeyCode::Char('d'));
    let said = app.footer_status().map(str::to_owned);
    assert!(said.is_some());
    let now = app.now_ms;
    app.update(Action::Tick {
        now_ms: now + STATUS_LINGER_MS - 1,
    });
    assert_eq!(app.footer_status().map(str::to_owned), said);
    app.update(Action::Tick {
        now_ms: now + STATUS_LINGER_MS,
    });
    assert_eq!(app.footer_status(), None);
    assert!(!draw(&app, 160, 48).contains("no file selected"));
}

#[test]
fn an_actions_outcome_stays_in_the_footer_when_events_scroll_it_away() {
    use super::model::{EventView, Severity};
    let mut app = fixture::app(3);
    let done = "- i-0abc drained (23 keys, 923.8 KiB handed off in 0.4 s) and removed";
    app.apply(Update::Outcome(EventView::console(
        app.now_ms,
        "capacity",
        done,
        Severity::Good,
    )));
    // A burst of the nodes' events, more than the pane shows.
    let burst = (0..40)
        .map(|i| EventView::console(app.now_ms, "repair", format!("round {i}"), Severity::Info))
        .collect();
    app.apply(Update::Events(burst));
    assert_eq!(app.events.iter().filter(|e| e.text == done).count(), 1);
    let screen = draw(&app, 160, 48);
    assert!(screen.contains("round 39"), "{screen}");
    assert!(screen.contains("drained (23 keys"), "{screen}");
}

#[test]
fn pause_stops_snapshots_from_landing() {
    let mut app = fixture::app(5);
    assert_eq!(
        key(&mut app, KeyCode::Char('p')),
        vec![Command::SetPaused(true)]
    );
    let before = app.nodes.clone();
    app.apply(Update::Snapshot(RingSnapshot {
        taken_ms: NOW_MS,
        ..RingSnapshot::default()
    }));
    assert_eq!(app.nodes, before);
    assert_eq!(
        key(&mut app, KeyCode::Char('p')),
        vec![Command::SetPaused(false)]
    );
}

#[test]
fn help_opens_and_closes_and_swallows_other_keys() {
    let mut app = fixture::app(5);
    key(&mut app, KeyCode::Char('?'));
    assert_eq!(app.mode, Mode::Help);
    assert!(key(&mut app, KeyCode::Char('x')).is_empty());
    assert_eq!(app.mode, Mode::Help);
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.mode, Mode::Normal);
}

#[test]
fn q_and_ctrl_c_quit() {
    let mut app = fixture::app(5);
    key(&mut app, KeyCode::Char('q'));
    assert!(app.quit);
    let mut app = fixture::app(5);
    key(&mut app, KeyCode::Char('u'));
    // In a prompt, q is text; Ctrl-C still quits.
    key(&mut app, KeyCode::Char('q'));
    assert!(!app.quit);
    let action = key_to_action(
        &app,
        KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL),
    );
    assert_eq!(action, Some(Action::Quit));
}

#[test]
fn finished_transfers_leave_the_screen_after_a_while() {
    let mut app = fixture::app(5);
    assert_eq!(app.visible_transfers().len(), 3);
    app.update(Action::Tick {
        now_ms: NOW_MS + super::app::TRANSFER_LINGER_MS,
    });
    let left: Vec<&str> = app
        .visible_transfers()
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(left, vec!["video.mkv"], "only the running one stays");
    assert!(!draw(&app, 80, 24).contains("notes.md done"));
}

#[test]
fn the_nodes_title_shows_the_capacity_side() {
    use crate::capacity::{CapacityState, Member, MemberState};
    let mut app = fixture::app(3);
    let member = |id: &str, state| Member {
        id: id.to_string(),
        addr: Some(id.to_string()),
        state,
    };
    app.apply(Update::Capacity(CapacityState {
        desired: 3,
        min: 1,
        max: 64,
        members: vec![
            member("a", MemberState::InService),
            member("b", MemberState::InService),
            member("c", MemberState::Pending),
        ],
    }));
    let screen = draw(&app, 160, 48);
    assert!(
        screen.contains("capacity 2 in service, desired 3 [1..64]"),
        "{screen}"
    );
}

#[test]
fn events_scroll_back_and_forward_when_focused() {
    let mut app = fixture::app(3);
    key(&mut app, KeyCode::Tab);
    assert_eq!(app.focus, Focus::Events);
    key(&mut app, KeyCode::Char('k'));
    key(&mut app, KeyCode::Char('k'));
    assert_eq!(app.events_scroll, 2);
    assert!(draw(&app, 160, 48).contains("2 back"));
    for _ in 0..10 {
        key(&mut app, KeyCode::Char('j'));
    }
    assert_eq!(app.events_scroll, 0);
}

#[test]
fn tab_cycles_focus_through_the_visible_panes() {
    let mut app = fixture::app(5);
    key(&mut app, KeyCode::Tab);
    assert_eq!(app.focus, Focus::Events);
    key(&mut app, KeyCode::Tab);
    assert_eq!(app.focus, Focus::Nodes);
    app.show_files = true;
    key(&mut app, KeyCode::Tab);
    assert_eq!(app.focus, Focus::Files);
}

#[test]
fn snapshots_report_nodes_that_come_go_and_stop_answering() {
    let mut app = fixture::app(4);
    app.events.clear();
    let mut nodes = app.nodes.clone();
    let gone = nodes.remove(0);
    nodes[0].state = NodeState::Unreachable;
    app.apply(Update::Snapshot(RingSnapshot {
        taken_ms: NOW_MS,
        nodes,
        ..RingSnapshot::default()
    }));
    let texts: Vec<&str> = app.events.iter().map(|e| e.text.as_str()).collect();
    assert!(
        texts
            .iter()
            .any(|t| t.contains(&gone.addr) && t.contains("no longer")),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|t| t.contains("missed the poll deadline")),
        "{texts:?}"
    );
    // The selected node vanished: the selection moves on.
    assert_ne!(app.selected.as_ref(), Some(&gone.addr));
    assert!(app.selected.is_some());
}

#[test]
fn the_event_log_is_bounded() {
    let mut app = fixture::app(2);
    for i in 0..super::app::EVENT_CAPACITY + 50 {
        app.push_event(super::model::EventView::console(
            i as u64,
            "x",
            "y",
            super::model::Severity::Info,
        ));
    }
    assert_eq!(app.events.len(), super::app::EVENT_CAPACITY);
}
