//! Where one timed transfer's time went: the CPU time of the bench's own
//! process (the client) and of every node, and the time each process spent
//! in each stage of moving chunks ([`chord_node::stages`]), as the change
//! between a [`Snapshot`] taken before the transfer and one taken after.
//!
//! Everything is given in microseconds per MiB moved (per file, when the
//! bench moves many small files), beside the wall time per MiB, so stages
//! compare across sizes. Stage times add the time
//! of every thread: several run at once, so their sum can exceed the wall
//! time; a stage run one step at a time whose time nears the wall time is
//! what bounds the speed. On a machine with N cores, CPU time near N times
//! the wall time means the cores are the limit. CPU times come from
//! `/proc/<pid>/stat` (Linux only; elsewhere they are left out); a node's
//! stages from its `GetStats` answer.

use std::time::Duration;

use anyhow::{Context, Result};
use chord_node::client::Client;
use chord_node::stages::{self, Stage};
use serde_json::{json, Map, Value};

/// Clock ticks per second of `/proc/<pid>/stat`'s CPU times: Linux's
/// `USER_HZ`, 100 on every architecture it supports for user space.
const USER_HZ: u64 = 100;

/// The counters of the client and the nodes at one moment.
#[derive(Debug)]
pub struct Snapshot {
    client: Vec<(Stage, Duration)>,
    nodes: Vec<(Stage, Duration)>,
    client_cpu: Option<Duration>,
    nodes_cpu: Option<Duration>,
}

impl Snapshot {
    /// Reads this process's stages and CPU time, and those of the nodes at
    /// `addrs` (stages, through `client`) and with `pids` (CPU time).
    pub async fn take(client: &Client, addrs: &[String], pids: &[u32]) -> Result<Snapshot> {
        let mut nodes: Vec<(Stage, Duration)> =
            Stage::ALL.iter().map(|&s| (s, Duration::ZERO)).collect();
        for addr in addrs {
            let stats = client
                .peers()
                .get_stats(addr)
                .await
                .with_context(|| format!("cannot read the stage times of {addr}"))?;
            for time in stats.stages {
                if let Some(stage) = stages::by_name(&time.stage) {
                    nodes[stage as usize].1 += Duration::from_nanos(time.nanos);
                }
            }
        }
        let nodes_cpu = pids
            .iter()
            .map(|&pid| cpu_time(pid))
            .sum::<Option<Duration>>();
        Ok(Snapshot {
            client: stages::totals(),
            nodes,
            client_cpu: cpu_time(std::process::id()),
            nodes_cpu,
        })
    }

    /// What happened between `self` and the later `after`: a transfer of
    /// `moved` that took `wall`.
    pub fn until(&self, after: &Snapshot, moved: Per, wall: Duration) -> Breakdown {
        let delta = |before: &[(Stage, Duration)], after: &[(Stage, Duration)]| {
            before
                .iter()
                .zip(after)
                .map(|((stage, b), (_, a))| (*stage, a.saturating_sub(*b)))
                .collect()
        };
        let cpu = |b: Option<Duration>, a: Option<Duration>| Some(a?.saturating_sub(b?));
        Breakdown {
            per: moved,
            wall,
            client: delta(&self.client, &after.client),
            nodes: delta(&self.nodes, &after.nodes),
            client_cpu: cpu(self.client_cpu, after.client_cpu),
            nodes_cpu: cpu(self.nodes_cpu, after.nodes_cpu),
        }
    }
}

/// What times are divided by.
#[derive(Clone, Copy, Debug)]
pub enum Per {
    /// MiB, of this many bytes moved.
    MiB(u64),
    /// Files, this many moved.
    File(usize),
}

impl Per {
    fn count(self) -> f64 {
        match self {
            Per::MiB(bytes) => bytes as f64 / f64::from(1u32 << 20),
            Per::File(files) => files as f64,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Per::MiB(_) => "MiB",
            Per::File(_) => "file",
        }
    }
}

/// Where the time of one transfer went.
#[derive(Debug)]
pub struct Breakdown {
    per: Per,
    wall: Duration,
    client: Vec<(Stage, Duration)>,
    nodes: Vec<(Stage, Duration)>,
    client_cpu: Option<Duration>,
    nodes_cpu: Option<Duration>,
}

impl Breakdown {
    /// Microseconds of `spent` per MiB or file moved.
    fn per_unit(&self, spent: Duration) -> f64 {
        spent.as_secs_f64() * 1e6 / self.per.count().max(f64::EPSILON)
    }

    /// One line: wall and CPU time per MiB, then each side's stages that
    /// took any time.
    pub fn line(&self) -> String {
        let cpu =
            |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.0}", self.per_unit(d)));
        let side = |stages: &[(Stage, Duration)]| {
            let parts: Vec<String> = stages
                .iter()
                .filter(|(_, d)| !d.is_zero())
                .map(|(s, d)| format!("{} {:.0}", s.name(), self.per_unit(*d)))
                .collect();
            if parts.is_empty() {
                "-".to_string()
            } else {
                parts.join(", ")
            }
        };
        format!(
            "wall {:.0}, cpu client {} nodes {} | client: {} | nodes: {}",
            self.per_unit(self.wall),
            cpu(self.client_cpu),
            cpu(self.nodes_cpu),
            side(&self.client),
            side(&self.nodes)
        )
    }

    /// The same as JSON: the unit, then microseconds per unit under
    /// `wall_us`, `cpu_us` and `client_us`/`nodes_us` by stage name.
    pub fn json(&self) -> Value {
        let side = |stages: &[(Stage, Duration)]| {
            Value::Object(
                stages
                    .iter()
                    .map(|(s, d)| (s.name().to_string(), json!(self.per_unit(*d))))
                    .collect::<Map<String, Value>>(),
            )
        };
        json!({
            "per": self.per.name(),
            "wall_us": self.per_unit(self.wall),
            "cpu_us": {
                "client": self.client_cpu.map(|d| self.per_unit(d)),
                "nodes": self.nodes_cpu.map(|d| self.per_unit(d)),
            },
            "client_us": side(&self.client),
            "nodes_us": side(&self.nodes),
        })
    }
}

/// User plus system CPU time of process `pid` (all its threads), or `None`
/// where `/proc` cannot tell.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|ticks| Duration::from_millis(ticks * 1000 / USER_HZ))
}

/// `utime + stime` of a `/proc/<pid>/stat` line, in clock ticks. The
/// command name (field 2) may hold spaces and parentheses, so fields are
/// counted from its last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // Fields 3.. follow the name; utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_fields_fourteen_and_fifteen() {
        let stat = "4242 (chord (node) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("4242 (cut short) S 1"), None);
        assert!(cpu_time(std::process::id()).is_some());
    }

    #[test]
    fn figures_are_per_mib_or_per_file() {
        let breakdown = Breakdown {
            per: Per::MiB(4 << 20),
            wall: Duration::from_millis(8),
            client: vec![(Stage::FileDigest, Duration::from_millis(2))],
            nodes: vec![(Stage::DiskSync, Duration::ZERO)],
            client_cpu: Some(Duration::from_millis(4)),
            nodes_cpu: None,
        };
        assert_eq!(
            breakdown.line(),
            "wall 2000, cpu client 1000 nodes - | client: file_digest 500 | nodes: -"
        );
        let json = breakdown.json();
        assert_eq!(json["per"], "MiB");
        assert_eq!(json["client_us"]["file_digest"], json!(500.0));
        assert_eq!(json["nodes_us"]["disk_sync"], json!(0.0));
        let per_file = Breakdown {
            per: Per::File(4),
            ..breakdown
        };
        assert_eq!(per_file.json()["wall_us"], json!(2000.0));
    }
}
