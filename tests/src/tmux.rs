//! A terminal for end-to-end tests of the TUI: a tmux server of its own
//! (its own socket), driven by key presses and read by `capture-pane`.
//! Every wait is bounded and fails with the screen it last saw; the server,
//! and the console inside it, are killed on drop.

// Helpers fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

/// Longest wait for one thing to appear on screen: nodes start, join and
/// answer a poll within seconds on a loaded 2-core machine.
pub const SCREEN_WAIT: Duration = Duration::from_secs(45);

/// A tmux server of our own (its own socket), killed on drop even when the
/// test fails, which also ends the console inside it.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    pub fn start(width: u16, height: u16, command: &str) -> Tmux {
        Tmux::start_with_env(width, height, command, &[], &[])
    }

    /// Starts `command` in a `width`×`height` pane with `env` set and
    /// `unset` removed (the server, and so the pane, inherit them).
    pub fn start_with_env(
        width: u16,
        height: u16,
        command: &str,
        env: &[(String, String)],
        unset: &[&str],
    ) -> Tmux {
        let socket = format!("chord-tui-test-{}", std::process::id());
        let tmux = Tmux { socket };
        let mut cmd = tmux.cmd();
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        for key in unset {
            cmd.env_remove(key);
        }
        let ok = cmd
            .args([
                "new-session",
                "-d",
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
            ])
            .arg(command)
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux new-session failed");
        tmux
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    /// Whether the command still runs: its session closes when it exits.
    pub fn console_running(&self) -> bool {
        self.cmd()
            .args(["has-session"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    pub fn screen(&self) -> String {
        let out = self.cmd().args(["capture-pane", "-p"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Presses keys by tmux name (`j`, `Enter`, `Escape`...).
    pub fn press(&self, key: &str) {
        assert!(self
            .cmd()
            .args(["send-keys", key])
            .status()
            .unwrap()
            .success());
    }

    pub fn type_text(&self, text: &str) {
        assert!(self
            .cmd()
            .args(["send-keys", "-l", text])
            .status()
            .unwrap()
            .success());
    }

    /// Waits until `pred` holds for the screen; panics with the screen if not.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_for_or_show(what, pred, String::new)
    }

    /// [`Tmux::wait_for`], whose panic also shows what `more` returns then
    /// (the console's log, say: what it was doing while the screen stood).
    pub fn wait_for_or_show(
        &self,
        what: &str,
        pred: impl Fn(&str) -> bool,
        more: impl Fn() -> String,
    ) -> String {
        let deadline = Instant::now() + SCREEN_WAIT;
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return screen;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out waiting for {what}; the screen:\n{screen}\n{}",
                    more()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Tmux {
    /// Waits until each check has held on some screen since the call: for
    /// things that scroll by (event lines) and things that stay.
    pub fn wait_for_each(&self, what: &str, checks: &[&dyn Fn(&str) -> bool]) {
        let deadline = Instant::now() + SCREEN_WAIT;
        let mut seen = vec![false; checks.len()];
        loop {
            let screen = self.screen();
            for (i, check) in checks.iter().enumerate() {
                seen[i] |= check(&screen);
            }
            if seen.iter().all(|s| *s) {
                return;
            }
            if Instant::now() >= deadline {
                panic!("timed out waiting for {what} (seen: {seen:?}); the screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

/// Fails the test, saying how to get tmux, when tmux is not installed. The
/// tests that drive a terminal are `#[ignore]`d, so they run only when asked
/// for, and then they must not pass without it.
pub fn require_tmux() {
    let here = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        here,
        "tmux is not installed (bash tests/setup.sh installs it, as root)"
    );
}
