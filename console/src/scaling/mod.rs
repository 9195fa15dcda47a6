//! Auto scaling: the pure target-tracking [`policy`] and the [`Controller`]
//! that feeds it.
//!
//! Every tick the controller asks the [`Capacity`] side who is there, reads
//! each member's counters through a [`MetricsReader`], turns counters into
//! per-node values (a request rate from the delta between two samples, or
//! stored bytes as a fraction of a capacity), tells the policy whether keys
//! are moving, and carries out the decision: at most one `add` or one
//! drain-then-`remove`. Each tick yields [`ScalingEvent`]s (the decision
//! with what came of it, and once a join or leave has settled, how many
//! bytes it moved) for the caller to print or show, and logs them.
//!
//! The controller is generic over the side: the local fleet
//! ([`crate::fleet::LocalCapacity`] with [`NodeStatsReader`]) and an Auto
//! Scaling group use the same loop. It owns no clock of its own beyond
//! `Instant` for rates; the policy gets the time passed in.

pub mod policy;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Result;
use chord_node::now_ms;
use chord_node::peer::{PeerOptions, PeerPool};
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::capacity::{Capacity, Member, MemberState};
use policy::{Action, Decision, MetricKind, NodePoint, Observation, Policy, PolicyConfig};

/// One member's counters at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The member id ([`Member::id`]).
    pub id: String,
    /// gRPC calls served since the node started.
    pub requests: u64,
    /// Bytes stored (chunks and manifests).
    pub bytes: u64,
    /// Chunks stored.
    pub chunks: u64,
    /// Bytes the node's repair loop pushed since it started.
    pub repair_bytes: u64,
}

/// Reads the counters of the members it is given. A member that does not
/// answer is left out of the result, not an error.
pub trait MetricsReader: Send {
    fn sample(&mut self, members: &[Member]) -> impl Future<Output = Result<Vec<Sample>>> + Send;
}

/// Reads counters straight from each node (`GetStats`), as the local fleet
/// and a console that reaches the nodes do.
#[derive(Debug)]
pub struct NodeStatsReader {
    peers: PeerPool,
}

impl NodeStatsReader {
    pub fn new() -> NodeStatsReader {
        NodeStatsReader {
            peers: PeerPool::new(PeerOptions {
                rpc_timeout: Duration::from_secs(2),
                connect_timeout: Duration::from_millis(500),
                ..PeerOptions::default()
            }),
        }
    }
}

impl Default for NodeStatsReader {
    fn default() -> Self {
        NodeStatsReader::new()
    }
}

impl MetricsReader for NodeStatsReader {
    async fn sample(&mut self, members: &[Member]) -> Result<Vec<Sample>> {
        let reads = members.iter().filter_map(|m| {
            let addr = m.addr.clone()?;
            let peers = &self.peers;
            Some(async move {
                match peers.get_stats(&addr).await {
                    Ok(s) => Some(Sample {
                        id: m.id.clone(),
                        requests: s.requests,
                        bytes: s.bytes,
                        chunks: s.chunks,
                        repair_bytes: s.repair_bytes,
                    }),
                    Err(e) => {
                        warn!(node = %addr, error = %e, "no stats from node");
                        None
                    }
                }
            })
        });
        Ok(futures::future::join_all(reads)
            .await
            .into_iter()
            .flatten()
            .collect())
    }
}

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct ControllerOptions {
    pub policy: PolicyConfig,
    /// Time between two ticks. Rates are averaged over one interval.
    pub interval: Duration,
    /// After a join or leave, how long the ring counts as busy even before
    /// any repair bytes show: the neighbours need a few stabilize and
    /// repair rounds to notice the change and start moving keys.
    pub settle: Duration,
}

/// What came of a decision.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Applied {
    /// Nothing to do.
    None,
    /// A node was started and answers.
    Added { node: String, ms: u64 },
    /// A node handed off its keys and was stopped.
    Removed {
        node: String,
        keys: u64,
        bytes: u64,
        unconfirmed: u64,
        ms: u64,
    },
    /// The capacity side refused or failed; nothing changed (or, for an
    /// incomplete drain, the node keeps running).
    Failed { error: String },
}

/// What the controller reports, one JSON line each.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ScalingEvent {
    /// Every tick: the policy's decision and what came of it.
    Decision {
        #[serde(flatten)]
        decision: Decision,
        applied: Applied,
    },
    /// A join or leave whose keys stopped moving: what it cost.
    Settled {
        action: Action,
        node: String,
        /// Bytes pushed by every node's repair loop from the change until
        /// it settled (for a scale-in, on top of the hand-off's own bytes).
        repair_bytes: u64,
        /// Bytes the leaving node handed off (scale-in only).
        handoff_bytes: u64,
        /// From the change to the tick that saw the ring quiet.
        secs: f64,
    },
    /// An added node holds chunks for the first time.
    OwnsKeys {
        node: String,
        chunks: u64,
        /// From the decision to add it to the first tick that saw chunks.
        secs: f64,
    },
}

impl ScalingEvent {
    /// One human line.
    pub fn line(&self) -> String {
        match self {
            ScalingEvent::Decision { decision, applied } => {
                let what = match applied {
                    Applied::None => String::new(),
                    Applied::Added { node, ms } => format!(" -> added {node} in {ms} ms"),
                    Applied::Removed {
                        node,
                        keys,
                        bytes,
                        ms,
                        ..
                    } => format!(
                        " -> drained {node} ({keys} keys, {bytes} bytes handed off) and stopped it in {ms} ms"
                    ),
                    Applied::Failed { error } => format!(" -> failed: {error}"),
                };
                format!(
                    "{:<9} {}{what}",
                    decision.action.to_string(),
                    decision.reason
                )
            }
            ScalingEvent::Settled {
                action,
                node,
                repair_bytes,
                handoff_bytes,
                secs,
            } => format!(
                "settled   {action} of {node}: {repair_bytes} repair bytes{} moved in {secs:.1} s",
                if *handoff_bytes > 0 {
                    format!(" + {handoff_bytes} hand-off bytes")
                } else {
                    String::new()
                }
            ),
            ScalingEvent::OwnsKeys { node, chunks, secs } => {
                format!(
                    "owns keys {node} holds {chunks} chunks, {secs:.1} s after it was asked for"
                )
            }
        }
    }
}

/// A join or leave whose keys may still be moving.
#[derive(Debug)]
struct Change {
    action: Action,
    node: String,
    at: Instant,
    repair_bytes: u64,
    handoff_bytes: u64,
}

/// Drives a [`Capacity`] side with the [`Policy`].
#[derive(Debug)]
pub struct Controller<C, M> {
    capacity: C,
    metrics: M,
    policy: Policy,
    opts: ControllerOptions,
    /// The last sample of each member, with when it was taken.
    last: HashMap<String, (Instant, Sample)>,
    /// When each member was first seen in service (policy clock, ms).
    since: HashMap<String, u64>,
    /// The members at the first look.
    original: Option<HashSet<String>>,
    change: Option<Change>,
    /// Nodes added by this controller that have not shown chunks yet.
    awaiting_keys: HashMap<String, Instant>,
}

impl<C: Capacity, M: MetricsReader> Controller<C, M> {
    pub fn new(capacity: C, metrics: M, opts: ControllerOptions) -> Result<Controller<C, M>> {
        opts.policy.validate().map_err(anyhow::Error::msg)?;
        Ok(Controller {
            capacity,
            metrics,
            policy: Policy::new(opts.policy.clone()),
            opts,
            last: HashMap::new(),
            since: HashMap::new(),
            original: None,
            change: None,
            awaiting_keys: HashMap::new(),
        })
    }

    pub fn capacity(&mut self) -> &mut C {
        &mut self.capacity
    }

    pub fn into_capacity(self) -> C {
        self.capacity
    }

    /// One round: observe, decide, act. Returns what happened.
    pub async fn tick(&mut self) -> Result<Vec<ScalingEvent>> {
        let mut events = Vec::new();
        let state = self.capacity.describe().await?;
        let now = now_ms();
        self.since
            .retain(|id, _| state.members.iter().any(|m| m.id == *id));
        // Members there before the controller started are not new nodes:
        // as with a group's existing instances, they need no warm-up.
        let original = self
            .original
            .get_or_insert_with(|| state.members.iter().map(|m| m.id.clone()).collect());
        for m in &state.members {
            if m.state == MemberState::InService {
                let since = if original.contains(&m.id) { 0 } else { now };
                self.since.entry(m.id.clone()).or_insert(since);
            }
        }
        let samples = self.metrics.sample(&state.members).await?;
        let taken = Instant::now();

        let mut values: HashMap<String, f64> = HashMap::new();
        let mut repair_delta = 0u64;
        for s in &samples {
            let prev = self.last.get(&s.id);
            if let Some((at, p)) = prev {
                repair_delta += s.repair_bytes.saturating_sub(p.repair_bytes);
                let secs = taken.duration_since(*at).as_secs_f64();
                if let (MetricKind::Requests, true) = (
                    self.opts.policy.metric,
                    secs > 0.0 && s.requests >= p.requests,
                ) {
                    values.insert(s.id.clone(), (s.requests - p.requests) as f64 / secs);
                }
            }
            if let MetricKind::Bytes { capacity_bytes } = self.opts.policy.metric {
                values.insert(s.id.clone(), s.bytes as f64 / capacity_bytes as f64);
            }
            if s.chunks > 0 {
                if let Some(asked) = self.awaiting_keys.remove(&s.id) {
                    events.push(ScalingEvent::OwnsKeys {
                        node: s.id.clone(),
                        chunks: s.chunks,
                        secs: asked.elapsed().as_secs_f64(),
                    });
                }
            }
        }
        self.last = samples
            .into_iter()
            .map(|s| (s.id.clone(), (taken, s)))
            .collect();

        // Keys are moving while repair pushes bytes, and for a short settle
        // time after each change before the first bytes show.
        let mut busy = None;
        if let Some(change) = &mut self.change {
            change.repair_bytes += repair_delta;
            if repair_delta > 0 {
                busy = Some(format!(
                    "repair pushed {repair_delta} bytes since the last tick"
                ));
            } else if change.at.elapsed() < self.opts.settle {
                busy = Some(format!(
                    "{} of {} {:.0} s ago is settling",
                    change.action,
                    change.node,
                    change.at.elapsed().as_secs_f64()
                ));
            } else {
                events.push(ScalingEvent::Settled {
                    action: change.action,
                    node: change.node.clone(),
                    repair_bytes: change.repair_bytes,
                    handoff_bytes: change.handoff_bytes,
                    secs: change.at.elapsed().as_secs_f64(),
                });
                self.change = None;
            }
        } else if repair_delta > 0 {
            busy = Some(format!(
                "repair pushed {repair_delta} bytes since the last tick"
            ));
        }

        let nodes: Vec<NodePoint> = state
            .members
            .iter()
            .map(|m| NodePoint {
                id: m.id.clone(),
                state: m.state,
                since_ms: self.since.get(&m.id).copied().unwrap_or(now),
                value: values.get(&m.id).copied(),
            })
            .collect();
        let decision = self.policy.step(&Observation {
            now_ms: now,
            nodes,
            busy,
        });
        let applied = self.apply(decision.action).await;
        if !matches!(applied, Applied::None | Applied::Failed { .. }) {
            self.policy.acted(now_ms());
        }
        // In the order things were seen: what settled, then the decision.
        events.push(ScalingEvent::Decision { decision, applied });
        for e in &events {
            log_event(e);
        }
        Ok(events)
    }

    /// Carries out one decision through the capacity side.
    async fn apply(&mut self, action: Action) -> Applied {
        let started = Instant::now();
        match action {
            Action::Hold => Applied::None,
            Action::ScaleOut => match self.capacity.add().await {
                Ok(member) => {
                    self.awaiting_keys.insert(member.id.clone(), started);
                    self.change = Some(Change {
                        action,
                        node: member.id.clone(),
                        at: Instant::now(),
                        repair_bytes: 0,
                        handoff_bytes: 0,
                    });
                    Applied::Added {
                        node: member.id,
                        ms: started.elapsed().as_millis() as u64,
                    }
                }
                Err(e) => Applied::Failed {
                    error: format!("{e:#}"),
                },
            },
            Action::ScaleIn => match self.capacity.remove(None).await {
                Ok(removal) => {
                    let r = &removal.handoff;
                    self.awaiting_keys.remove(&removal.member.id);
                    self.change = Some(Change {
                        action,
                        node: removal.member.id.clone(),
                        at: Instant::now(),
                        repair_bytes: 0,
                        handoff_bytes: r.bytes,
                    });
                    Applied::Removed {
                        node: removal.member.id.clone(),
                        keys: r.keys,
                        bytes: r.bytes,
                        unconfirmed: r.unconfirmed,
                        ms: started.elapsed().as_millis() as u64,
                    }
                }
                Err(e) => Applied::Failed {
                    error: format!("{e:#}"),
                },
            },
        }
    }

    /// Ticks every interval until `shutdown` completes, sending each event
    /// to `events_tx` (a closed receiver is fine: the loop keeps scaling).
    /// A tick that fails (the side cannot be described, say) is logged and
    /// the loop goes on.
    pub async fn run(
        &mut self,
        events_tx: mpsc::Sender<ScalingEvent>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut ticker = tokio::time::interval(self.opts.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = ticker.tick() => {}
            }
            let events = tokio::select! {
                _ = &mut shutdown => return,
                r = self.tick() => r,
            };
            match events {
                Ok(events) => {
                    for e in events {
                        let _ = events_tx.send(e).await;
                    }
                }
                Err(e) => warn!(error = %format!("{e:#}"), "scaling tick failed"),
            }
        }
    }
}

fn log_event(e: &ScalingEvent) {
    match e {
        ScalingEvent::Decision { decision, applied } => info!(
            action = %decision.action,
            metric = decision.metric,
            value = ?decision.value,
            target = decision.target,
            current = decision.current,
            desired = decision.desired,
            applied = ?applied,
            reason = %decision.reason,
            "scaling decision"
        ),
        ScalingEvent::Settled {
            action,
            node,
            repair_bytes,
            handoff_bytes,
            secs,
        } => info!(%action, %node, repair_bytes, handoff_bytes, secs, "scaling change settled"),
        ScalingEvent::OwnsKeys { node, chunks, secs } => {
            info!(%node, chunks, secs, "added node owns keys")
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::capacity::{CapacityState, Removal};
    use chord_node::repair::HandoffReport;

    /// Time between two ticks. The wait is part of the test: a rate is a
    /// delta over the time between two samples, so some time must pass;
    /// how much does not matter (the fake loads are huge or zero).
    const SAMPLE_GAP: Duration = Duration::from_millis(20);

    /// A side that starts and stops members instantly.
    struct FakeSide {
        members: Vec<Member>,
        next: usize,
    }

    impl Capacity for FakeSide {
        async fn describe(&mut self) -> Result<CapacityState> {
            Ok(CapacityState {
                desired: self.members.len(),
                min: 2,
                max: 4,
                members: self.members.clone(),
            })
        }
        async fn add(&mut self) -> Result<Member> {
            let m = Member {
                id: format!("n{}", self.next),
                addr: None,
                state: MemberState::InService,
            };
            self.next += 1;
            self.members.push(m.clone());
            Ok(m)
        }
        async fn remove(&mut self, _: Option<&str>) -> Result<Removal> {
            let member = self.members.pop().unwrap();
            Ok(Removal {
                member,
                handoff: HandoffReport {
                    keys: 7,
                    bytes: 700,
                    ..HandoffReport::default()
                },
            })
        }
    }

    /// Counters that grow by `per_call` requests on every read, and whose
    /// repair counter grows while `moving` is set.
    struct FakeMetrics {
        requests: u64,
        per_call: u64,
        repair: u64,
        moving: bool,
    }

    impl MetricsReader for FakeMetrics {
        async fn sample(&mut self, members: &[Member]) -> Result<Vec<Sample>> {
            self.requests += self.per_call;
            if self.moving {
                self.repair += 1000;
            }
            Ok(members
                .iter()
                .map(|m| Sample {
                    id: m.id.clone(),
                    requests: self.requests,
                    bytes: 0,
                    chunks: 1,
                    repair_bytes: self.repair,
                })
                .collect())
        }
    }

    fn controller(per_call: u64) -> Controller<FakeSide, FakeMetrics> {
        controller_warming(per_call, 0)
    }

    fn controller_warming(per_call: u64, warmup_ms: u64) -> Controller<FakeSide, FakeMetrics> {
        let side = FakeSide {
            members: (0..2)
                .map(|i| Member {
                    id: format!("n{i}"),
                    addr: None,
                    state: MemberState::InService,
                })
                .collect(),
            next: 2,
        };
        let metrics = FakeMetrics {
            requests: 0,
            per_call,
            repair: 0,
            moving: false,
        };
        Controller::new(
            side,
            metrics,
            ControllerOptions {
                policy: PolicyConfig {
                    metric: MetricKind::Requests,
                    target: 10.0,
                    min: 2,
                    max: 4,
                    warmup_ms,
                    scale_in_cooldown_ms: 0,
                },
                interval: Duration::from_millis(10),
                settle: Duration::ZERO,
            },
        )
        .unwrap()
    }

    fn decision(events: &[ScalingEvent]) -> (&Decision, &Applied) {
        match events.last() {
            Some(ScalingEvent::Decision { decision, applied }) => (decision, applied),
            other => panic!("last event is not a decision: {other:?}"),
        }
    }

    #[tokio::test]
    async fn rates_come_from_deltas_and_decisions_are_carried_out() {
        let mut c = controller(1_000_000);
        // First tick: one sample, no rate yet.
        let first = c.tick().await.unwrap();
        let (d, applied) = decision(&first);
        assert_eq!(
            (d.action, applied),
            (Action::Hold, &Applied::None),
            "{}",
            d.reason
        );
        assert!(d.reason.contains("no reading"), "{}", d.reason);
        tokio::time::sleep(SAMPLE_GAP).await;
        // Second: a huge rate; one node is added, not two.
        let second = c.tick().await.unwrap();
        let (d, applied) = decision(&second);
        assert_eq!(d.action, Action::ScaleOut, "{}", d.reason);
        assert!(matches!(applied, Applied::Added { node, .. } if node == "n2"));
        assert_eq!(c.capacity().members.len(), 3);
        // The new node holds a chunk at the next look.
        c.metrics.moving = true;
        tokio::time::sleep(SAMPLE_GAP).await;
        let third = c.tick().await.unwrap();
        let (d, _) = decision(&third);
        assert_eq!(
            d.action,
            Action::Hold,
            "repair is moving bytes: {}",
            d.reason
        );
        assert!(d.reason.contains("repair pushed"), "{}", d.reason);
        assert!(third
            .iter()
            .any(|e| matches!(e, ScalingEvent::OwnsKeys { node, .. } if node == "n2")));
        // Keys stop moving: the change settles with its repair bytes.
        c.metrics.moving = false;
        c.metrics.per_call = 0;
        tokio::time::sleep(SAMPLE_GAP).await;
        let fourth = c.tick().await.unwrap();
        let settled = fourth
            .iter()
            .find_map(|e| match e {
                ScalingEvent::Settled {
                    repair_bytes,
                    action,
                    ..
                } => Some((*action, *repair_bytes)),
                _ => None,
            })
            .unwrap();
        // n0 and n1 each pushed 1000; n2 had no earlier sample to compare.
        assert_eq!(settled, (Action::ScaleOut, 2000));
        // Zero load now: scale in (no cool-down here), with the hand-off.
        let (d, applied) = decision(&fourth);
        assert_eq!(d.action, Action::ScaleIn, "{}", d.reason);
        assert!(matches!(
            applied,
            Applied::Removed {
                keys: 7,
                bytes: 700,
                ..
            }
        ));
        let json = serde_json::to_value(&fourth[0]).unwrap();
        assert_eq!(json["event"], "settled");
        let line = serde_json::to_value(&fourth[fourth.len() - 1]).unwrap();
        assert_eq!(line["event"], "decision");
        assert_eq!(line["action"], "scale_in");
        assert_eq!(line["applied"]["kind"], "removed");
        assert!(line["reason"].as_str().unwrap().contains("desired 2"));
    }

    #[tokio::test]
    async fn nodes_there_at_the_start_need_no_warm_up_but_added_ones_do() {
        let mut c = controller_warming(1_000_000, 3_600_000);
        let events = c.tick().await.unwrap();
        let (d, _) = decision(&events);
        assert_eq!(d.in_service, 2, "{}", d.reason);
        tokio::time::sleep(SAMPLE_GAP).await;
        let events = c.tick().await.unwrap();
        let (d, _) = decision(&events);
        assert_eq!(d.action, Action::ScaleOut, "{}", d.reason);
        tokio::time::sleep(SAMPLE_GAP).await;
        let events = c.tick().await.unwrap();
        let (d, _) = decision(&events);
        assert_eq!((d.in_service, d.current), (2, 3), "{}", d.reason);
        assert!(d.reason.contains("1 warming"), "{}", d.reason);
    }
}
