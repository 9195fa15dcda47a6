//! The scaling policy: target tracking as AWS documents it, with no I/O and
//! no clock (the caller passes the time in), so it is tested by tables of
//! observations and runs the same for the local fleet and for AWS.
//!
//! Rules, in the order [`Policy::step`] applies them:
//! - A node counts (in service, and in the metric's average) only once it
//!   has served for the warm-up; until then it is "warming".
//! - desired = ceil(in_service × average / target), clamped to [min, max];
//!   `current` is every member that is or will be capacity (in service,
//!   warming, joining), and the decision moves `current` toward `desired`.
//! - At most one node joins or leaves at a time, and none while keys are
//!   moving (a join or leave in progress, or repair still pushing bytes):
//!   the caller says so in [`Observation::busy`]. Every step is ±1; a wish
//!   for +3 becomes three steps, each after the ring has settled, and the
//!   reason says how far the wish is.
//! - Scale out as soon as the average is above target.
//! - Scale in only when the average has stayed below target × (1 − margin)
//!   for the whole scale-in cool-down, with no node warming; each scale-in
//!   (and each scale-out) restarts that clock, so the ring shrinks one node
//!   per cool-down.
//!
//! Every [`Decision`], holds included, carries a reason that names the
//! metric, its value and target, and the current and desired sizes.

use std::fmt;

use serde::Serialize;

use crate::capacity::MemberState;

/// The margin below target that counts as "clearly below" for scale-in.
/// AWS's target tracking scales in only once the metric is about 10% under
/// target, so that a ring at target does not flap.
pub const SCALE_IN_MARGIN: f64 = 0.10;

/// What the policy tracks.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// gRPC requests per second per node (the node's `requests` counter:
    /// every call it serves, client or peer).
    Requests,
    /// Stored bytes per node as a fraction of a per-node capacity.
    Bytes { capacity_bytes: u64 },
}

impl MetricKind {
    /// Short name for lines and JSON.
    pub fn name(&self) -> &'static str {
        match self {
            MetricKind::Requests => "requests/s per node",
            MetricKind::Bytes { .. } => "stored fraction per node",
        }
    }
}

/// How the policy behaves.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyConfig {
    pub metric: MetricKind,
    /// The value of the metric per node to hold the ring at: requests/s, or
    /// a fraction in (0, 1] for stored bytes.
    pub target: f64,
    pub min: usize,
    pub max: usize,
    /// How long a new node serves before it counts.
    pub warmup_ms: u64,
    /// How long the metric must stay clearly below target before a node is
    /// removed, and the pause between two removals.
    pub scale_in_cooldown_ms: u64,
}

impl PolicyConfig {
    /// Checks the settings; the error names the flag at fault.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.target.is_finite() && self.target > 0.0) {
            return Err(format!("--target must be above 0, not {}", self.target));
        }
        if let MetricKind::Bytes { capacity_bytes } = self.metric {
            if capacity_bytes == 0 {
                return Err("--capacity-bytes must be above 0".into());
            }
            if self.target > 1.0 {
                return Err(format!(
                    "--target is a fraction of --capacity-bytes for --metric bytes; {} is above 1",
                    self.target
                ));
            }
        }
        if self.min == 0 {
            return Err("--min must be at least 1".into());
        }
        if self.min > self.max {
            return Err(format!("--min {} is above --max {}", self.min, self.max));
        }
        Ok(())
    }
}

/// One member as the policy sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodePoint {
    pub id: String,
    pub state: MemberState,
    /// When the member was first seen in service (ms, the caller's clock).
    pub since_ms: u64,
    /// Its metric value, once there is one (a rate needs two samples).
    pub value: Option<f64>,
}

/// Everything the policy looks at in one step.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub now_ms: u64,
    pub nodes: Vec<NodePoint>,
    /// Why keys are moving right now (a repair pushing bytes, say), or
    /// `None` when the ring is quiet. Joining and draining members make the
    /// ring busy without being named here.
    pub busy: Option<String>,
}

/// What to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Hold,
    /// Add one node.
    ScaleOut,
    /// Drain and remove one node.
    ScaleIn,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Hold => "hold",
            Action::ScaleOut => "scale-out",
            Action::ScaleIn => "scale-in",
        })
    }
}

/// One decision, with everything that led to it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    pub at_ms: u64,
    pub action: Action,
    pub metric: &'static str,
    /// Average over the in-service nodes, if any has a value.
    pub value: Option<f64>,
    pub target: f64,
    /// Warmed-up serving nodes: the ones the average is over.
    pub in_service: usize,
    /// Members that are or will be capacity: in service, warming and joining.
    pub current: usize,
    /// What target tracking asks for, clamped to [min, max].
    pub desired: usize,
    pub reason: String,
}

/// The policy's memory between steps: when the metric went clearly below
/// target, for the scale-in cool-down.
#[derive(Clone, Debug)]
pub struct Policy {
    config: PolicyConfig,
    low_since_ms: Option<u64>,
}

impl Policy {
    pub fn new(config: PolicyConfig) -> Policy {
        Policy {
            config,
            low_since_ms: None,
        }
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// Tells the policy that its last decision was carried out (at
    /// `now_ms`, once the node joined or left), so the scale-in cool-down
    /// starts again from there.
    pub fn acted(&mut self, now_ms: u64) {
        if self.low_since_ms.is_some() {
            self.low_since_ms = Some(now_ms);
        }
    }

    /// Decides what to do now.
    pub fn step(&mut self, obs: &Observation) -> Decision {
        let cfg = &self.config;
        let now = obs.now_ms;
        let serving: Vec<&NodePoint> = obs
            .nodes
            .iter()
            .filter(|n| n.state == MemberState::InService)
            .collect();
        let warm: Vec<&NodePoint> = serving
            .iter()
            .copied()
            .filter(|n| now.saturating_sub(n.since_ms) >= cfg.warmup_ms)
            .collect();
        let warming = serving.len() - warm.len();
        let values: Vec<f64> = warm.iter().filter_map(|n| n.value).collect();
        let value = (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64);
        let in_service = warm.len();
        let joining = obs
            .nodes
            .iter()
            .filter(|n| n.state == MemberState::Pending)
            .count();
        let current = serving.len() + joining;
        let wanted = match value {
            Some(v) => ((in_service as f64) * v / cfg.target).ceil() as usize,
            None => current,
        };
        let desired = wanted.clamp(cfg.min, cfg.max);
        let threshold = cfg.target * (1.0 - SCALE_IN_MARGIN);

        // The scale-in clock runs only while the metric is clearly low.
        match value {
            Some(v) if v < threshold => {
                self.low_since_ms.get_or_insert(now);
            }
            _ => self.low_since_ms = None,
        }

        let shown = value.map_or_else(|| "no reading".to_string(), |v| format!("{v:.2}"));
        let joining_words = if joining > 0 {
            format!(", {joining} joining")
        } else {
            String::new()
        };
        let head = format!(
            "{} {shown}, target {}: current {current} ({in_service} in service, {warming} warming{joining_words}), desired {desired}",
            cfg.metric.name(),
            cfg.target
        );
        let decide = |action: Action, why: String| Decision {
            at_ms: now,
            action,
            metric: cfg.metric.name(),
            value,
            target: cfg.target,
            in_service,
            current,
            desired,
            reason: format!("{head}; {why}"),
        };

        // One join or leave at a time, and none while keys move.
        let moving: Vec<String> = obs
            .nodes
            .iter()
            .filter(|n| n.state != MemberState::InService)
            .map(|n| format!("{} is {}", n.id, state_word(n.state)))
            .chain(obs.busy.clone())
            .collect();
        let gap = desired as i64 - current as i64;
        let steps = |gap: i64| {
            if gap.abs() > 1 {
                format!(" (wants {gap:+}; one step at a time)")
            } else {
                String::new()
            }
        };
        if !moving.is_empty() {
            let wish = match gap.signum() {
                1 => format!("would scale out{}", steps(gap)),
                -1 => format!("would scale in{}", steps(gap)),
                _ => "at desired".to_string(),
            };
            return decide(
                Action::Hold,
                format!("{wish}, but keys are moving: {}", moving.join(", ")),
            );
        }
        if current < cfg.min {
            return decide(
                Action::ScaleOut,
                format!(
                    "below the minimum {}; adding one node{}",
                    cfg.min,
                    steps(gap)
                ),
            );
        }
        if current > cfg.max {
            if warming > 0 {
                return decide(
                    Action::Hold,
                    format!(
                        "above the maximum {}, but {warming} node(s) still warming",
                        cfg.max
                    ),
                );
            }
            return decide(
                Action::ScaleIn,
                format!(
                    "above the maximum {}; removing one node{}",
                    cfg.max,
                    steps(gap)
                ),
            );
        }
        let Some(v) = value else {
            return decide(
                Action::Hold,
                "no warmed-up node has a reading yet".to_string(),
            );
        };
        if gap > 0 && v > cfg.target {
            return decide(
                Action::ScaleOut,
                format!("above target; adding one node{}", steps(gap)),
            );
        }
        if v > cfg.target {
            let why = if current >= cfg.max {
                format!("above target, but at the maximum {}", cfg.max)
            } else {
                "above target; the warming nodes cover it".to_string()
            };
            return decide(Action::Hold, why);
        }
        if gap < 0 {
            let Some(since) = self.low_since_ms else {
                return decide(
                    Action::Hold,
                    format!(
                        "below target but not by {:.0}% (under {threshold:.2})",
                        SCALE_IN_MARGIN * 100.0
                    ),
                );
            };
            if warming > 0 {
                return decide(
                    Action::Hold,
                    format!("low, but {warming} node(s) still warming"),
                );
            }
            let low_for = now.saturating_sub(since);
            if low_for < cfg.scale_in_cooldown_ms {
                return decide(
                    Action::Hold,
                    format!(
                        "under {threshold:.2} for {:.0} s of the {:.0} s scale-in cool-down",
                        low_for as f64 / 1e3,
                        cfg.scale_in_cooldown_ms as f64 / 1e3
                    ),
                );
            }
            return decide(
                Action::ScaleIn,
                format!(
                    "under {threshold:.2} for the whole {:.0} s cool-down; removing one node{}",
                    cfg.scale_in_cooldown_ms as f64 / 1e3,
                    steps(gap)
                ),
            );
        }
        decide(Action::Hold, "at desired".to_string())
    }
}

fn state_word(state: MemberState) -> &'static str {
    match state {
        MemberState::Pending => "joining",
        MemberState::InService => "serving",
        MemberState::Draining => "draining",
        MemberState::Terminating => "stopping",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const S: u64 = 1000;

    fn config() -> PolicyConfig {
        PolicyConfig {
            metric: MetricKind::Requests,
            target: 100.0,
            min: 2,
            max: 6,
            warmup_ms: 30 * S,
            scale_in_cooldown_ms: 60 * S,
        }
    }

    /// `n` nodes serving since time 0, each at `value`.
    fn nodes(n: usize, value: f64) -> Vec<NodePoint> {
        (0..n)
            .map(|i| NodePoint {
                id: format!("n{i}"),
                state: MemberState::InService,
                since_ms: 0,
                value: Some(value),
            })
            .collect()
    }

    fn obs(now_ms: u64, nodes: Vec<NodePoint>) -> Observation {
        Observation {
            now_ms,
            nodes,
            busy: None,
        }
    }

    #[test]
    fn single_steps() {
        let warming = |mut ns: Vec<NodePoint>, since: u64| {
            ns.push(NodePoint {
                id: "new".into(),
                state: MemberState::InService,
                since_ms: since,
                value: Some(0.0),
            });
            ns
        };
        let joining = |mut ns: Vec<NodePoint>| {
            ns.push(NodePoint {
                id: "new".into(),
                state: MemberState::Pending,
                since_ms: 0,
                value: None,
            });
            ns
        };
        // (what, observation, action, desired, words in the reason)
        let cases: Vec<(&str, Observation, Action, usize, &str)> = vec![
            ("at target holds", obs(100 * S, nodes(3, 100.0)), Action::Hold, 3, "at desired"),
            ("just above target scales out", obs(100 * S, nodes(3, 101.0)), Action::ScaleOut, 4, "above target"),
            ("far above target: one step, says how far", obs(100 * S, nodes(2, 250.0)), Action::ScaleOut, 5, "wants +3; one step at a time"),
            ("slightly below target is not clearly below", obs(100 * S, nodes(3, 95.0)), Action::Hold, 3, "at desired"),
            ("clearly below, first sight: cool-down starts", obs(100 * S, nodes(4, 10.0)), Action::Hold, 2, "cool-down"),
            ("at max stays at max", obs(100 * S, nodes(6, 500.0)), Action::Hold, 6, "at the maximum 6"),
            ("at min stays at min", obs(100 * S, nodes(2, 0.0)), Action::Hold, 2, "at desired"),
            ("below min scales out even when idle", obs(100 * S, nodes(1, 0.0)), Action::ScaleOut, 2, "below the minimum"),
            ("above max scales in even under high load", obs(100 * S, nodes(7, 500.0)), Action::ScaleIn, 6, "above the maximum"),
            (
                "a warming node is not in service and not averaged",
                obs(100 * S, warming(nodes(2, 150.0), 90 * S)),
                Action::Hold,
                3,
                "2 in service, 1 warming",
            ),
            (
                "after its warm-up it counts",
                obs(100 * S, warming(nodes(2, 150.0), 50 * S)),
                Action::Hold,
                3,
                "3 in service, 0 warming",
            ),
            (
                "a joining node makes the ring busy",
                obs(100 * S, joining(nodes(2, 300.0))),
                Action::Hold,
                6,
                "current 3 (2 in service, 0 warming, 1 joining), desired 6; would scale out (wants +3; one step at a time), but keys are moving: new is joining",
            ),
            (
                "moving keys block scale-out",
                Observation { busy: Some("repair moved 5 MB".into()), ..obs(100 * S, nodes(2, 300.0)) },
                Action::Hold,
                6,
                "would scale out (wants +4; one step at a time), but keys are moving: repair moved 5 MB",
            ),
            ("no readings yet", obs(100 * S, {
                let mut ns = nodes(3, 0.0);
                ns.iter_mut().for_each(|n| n.value = None);
                ns
            }), Action::Hold, 3, "no warmed-up node has a reading"),
        ];
        for (what, o, action, desired, words) in cases {
            let d = Policy::new(config()).step(&o);
            assert_eq!(d.action, action, "{what}: {}", d.reason);
            assert_eq!(d.desired, desired, "{what}: {}", d.reason);
            assert!(d.reason.contains(words), "{what}: {}", d.reason);
            // Every reason names the metric, the target, current and desired.
            assert!(
                d.reason.contains("requests/s per node")
                    && d.reason.contains("target 100")
                    && d.reason.contains(&format!("current {}", d.current))
                    && d.reason.contains(&format!("desired {}", d.desired)),
                "{what}: {}",
                d.reason
            );
        }
    }

    #[test]
    fn stored_bytes_track_a_fraction_of_capacity() {
        let cfg = PolicyConfig {
            metric: MetricKind::Bytes {
                capacity_bytes: 1 << 30,
            },
            target: 0.5,
            ..config()
        };
        assert!(cfg.validate().is_ok());
        let d = Policy::new(cfg.clone()).step(&obs(100 * S, nodes(3, 0.8)));
        assert_eq!((d.action, d.desired), (Action::ScaleOut, 5), "{}", d.reason);
        assert!(
            d.reason
                .contains("stored fraction per node 0.80, target 0.5"),
            "{}",
            d.reason
        );
        let too_big = PolicyConfig { target: 2.0, ..cfg };
        assert!(too_big.validate().unwrap_err().contains("fraction"));
    }

    #[test]
    fn bad_settings_are_refused() {
        let cases = [
            (
                PolicyConfig {
                    target: 0.0,
                    ..config()
                },
                "--target",
            ),
            (
                PolicyConfig {
                    target: f64::NAN,
                    ..config()
                },
                "--target",
            ),
            (PolicyConfig { min: 0, ..config() }, "--min"),
            (PolicyConfig { min: 7, ..config() }, "above --max"),
            (
                PolicyConfig {
                    metric: MetricKind::Bytes { capacity_bytes: 0 },
                    target: 0.5,
                    ..config()
                },
                "--capacity-bytes",
            ),
        ];
        for (cfg, words) in cases {
            assert!(cfg.validate().unwrap_err().contains(words), "{cfg:?}");
        }
    }

    /// A fleet driven by the policy: `load` requests/s in total, spread
    /// evenly; decisions take effect at once; keys move for `busy_ticks`
    /// ticks after each join or leave.
    struct Sim {
        policy: Policy,
        nodes: Vec<NodePoint>,
        now: u64,
        busy_left: u32,
        busy_ticks: u32,
        next_id: usize,
        sizes: Vec<(u64, usize)>,
        decisions: Vec<Decision>,
    }

    const TICK: u64 = 5 * S;

    impl Sim {
        fn new(cfg: PolicyConfig, n: usize, busy_ticks: u32) -> Sim {
            Sim {
                policy: Policy::new(cfg),
                nodes: nodes(n, 0.0),
                now: 1000 * S,
                busy_left: 0,
                busy_ticks,
                next_id: n,
                sizes: Vec::new(),
                decisions: Vec::new(),
            }
        }

        fn run(&mut self, load: f64, ticks: usize) {
            for _ in 0..ticks {
                self.now += TICK;
                let per_node = load / self.nodes.len() as f64;
                self.nodes.iter_mut().for_each(|n| n.value = Some(per_node));
                let busy = (self.busy_left > 0).then(|| "repair moving keys".to_string());
                self.busy_left = self.busy_left.saturating_sub(1);
                let d = self.policy.step(&Observation {
                    now_ms: self.now,
                    nodes: self.nodes.clone(),
                    busy,
                });
                match d.action {
                    Action::ScaleOut => {
                        self.nodes.push(NodePoint {
                            id: format!("n{}", self.next_id),
                            state: MemberState::InService,
                            since_ms: self.now,
                            value: None,
                        });
                        self.next_id += 1;
                        self.busy_left = self.busy_ticks;
                        self.policy.acted(self.now);
                    }
                    Action::ScaleIn => {
                        self.nodes.pop();
                        self.busy_left = self.busy_ticks;
                        self.policy.acted(self.now);
                    }
                    Action::Hold => {}
                }
                self.sizes.push((self.now, self.nodes.len()));
                self.decisions.push(d);
            }
        }

        fn size(&self) -> usize {
            self.nodes.len()
        }
    }

    #[test]
    fn a_load_step_scales_out_then_sustained_quiet_scales_in_one_at_a_time() {
        let cfg = config();
        let mut sim = Sim::new(cfg.clone(), 2, 1);
        sim.run(50.0, 20);
        assert_eq!(sim.size(), 2, "idle ring stays at min");
        // A step to 450 requests/s: 5 nodes hold it at 90 each.
        let step_at = sim.now;
        sim.run(450.0, 40);
        assert_eq!(sim.size(), 5);
        let first_out = sim
            .sizes
            .iter()
            .find(|(t, n)| *t > step_at && *n > 2)
            .unwrap();
        assert_eq!(
            first_out.0,
            step_at + TICK,
            "scale-out on the first tick above target"
        );
        // Load stops.
        let quiet_at = sim.now;
        sim.run(20.0, 200);
        assert_eq!(sim.size(), 2);
        let ins: Vec<u64> = sim
            .sizes
            .windows(2)
            .filter(|w| w[1].1 < w[0].1)
            .map(|w| w[1].0)
            .collect();
        assert_eq!(ins.len(), 3, "5 -> 2 in three single steps");
        assert!(
            ins[0] >= quiet_at + cfg.scale_in_cooldown_ms,
            "first scale-in only after the cool-down"
        );
        for pair in ins.windows(2) {
            assert!(
                pair[1] - pair[0] >= cfg.scale_in_cooldown_ms,
                "scale-ins a cool-down apart: {ins:?}"
            );
        }
        // Every change is one node, and the size never leaves [min, max].
        let mut last = 2;
        for &(t, n) in &sim.sizes {
            assert!((cfg.min..=cfg.max).contains(&n), "size {n} at {t}");
            assert!(n.abs_diff(last) <= 1, "jump {last} -> {n} at {t}");
            last = n;
        }
    }

    #[test]
    fn size_never_leaves_min_max_under_any_load() {
        let cfg = config();
        for load in [0.0, 1.0, 99.0, 1e3, 1e6] {
            let mut sim = Sim::new(cfg.clone(), 2, 0);
            sim.run(load, 100);
            for &(t, n) in &sim.sizes {
                assert!(
                    (cfg.min..=cfg.max).contains(&n),
                    "load {load}: size {n} at {t}"
                );
            }
        }
        let mut sim = Sim::new(cfg, 2, 0);
        sim.run(1e6, 50);
        assert_eq!(sim.size(), 6);
        assert!(sim
            .decisions
            .last()
            .unwrap()
            .reason
            .contains("at the maximum 6"));
    }

    #[test]
    fn warm_up_is_respected() {
        // With a warm-up much longer than the tick, a node added under load
        // is not averaged until it has served for the warm-up, and no
        // scale-in happens while one is warming.
        let cfg = PolicyConfig {
            warmup_ms: 60 * S,
            scale_in_cooldown_ms: 10 * S,
            ..config()
        };
        let mut sim = Sim::new(cfg, 2, 0);
        sim.run(250.0, 1);
        assert_eq!(sim.size(), 3, "2 nodes at 125 each: one more");
        let added_at = sim.now;
        // The load collapses right after: scale-in waits for the warm-up.
        sim.run(0.0, 30);
        let first_in = sim
            .sizes
            .iter()
            .find(|(_, n)| *n < 3)
            .map(|(t, _)| *t)
            .unwrap();
        assert!(
            first_in >= added_at + 60 * S,
            "scaled in at {first_in}, warm-up ends {}",
            added_at + 60 * S
        );
        let warm_holds = sim
            .decisions
            .iter()
            .filter(|d| d.reason.contains("still warming"))
            .count();
        assert!(warm_holds > 0);
        // While it warmed, it was not in service.
        let during = &sim.decisions[1];
        assert_eq!(
            (during.in_service, during.current),
            (2, 3),
            "{}",
            during.reason
        );
    }

    #[test]
    fn busy_blocks_every_change_until_keys_settle() {
        let cfg = config();
        let mut sim = Sim::new(cfg, 2, 3);
        sim.run(1000.0, 40);
        // Each scale-out is followed by 3 busy ticks with no change.
        let changes: Vec<u64> = sim
            .sizes
            .windows(2)
            .filter(|w| w[1].1 != w[0].1)
            .map(|w| w[1].0)
            .collect();
        for pair in changes.windows(2) {
            assert!(
                pair[1] - pair[0] >= 4 * TICK,
                "changes too close: {changes:?}"
            );
        }
        assert!(sim
            .decisions
            .iter()
            .any(|d| d.action == Action::Hold && d.reason.contains("keys are moving")));
    }
}
