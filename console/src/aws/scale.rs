//! `aws scale --desired N`: moves the group to N one node at a time.
//!
//! Growing: desired+1, then wait (bounded) until the new instance's node is
//! part of the ring, before the next step: rings break when several nodes
//! bootstrap at once. Shrinking: drain-then-terminate through
//! [`AsgCapacity`], one node at a time, so a scale-in never takes two
//! holders of one key; each step's hand-off report is printed as it lands.
//! A failed step stops the command (non-zero exit); the steps already done
//! stay done and are reported.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chord_node::client::Client;
use chord_node::peer::PeerOptions;
use serde_json::{json, Value};

use super::capacity::AsgCapacity;
use crate::capacity::{Capacity, Member};

/// Pause between looks at the ring while a new node joins.
const JOIN_POLL: Duration = Duration::from_millis(500);

/// One completed step.
#[derive(Clone, Debug)]
pub enum Step {
    Added {
        member: Member,
        ring_size: usize,
        seconds: f64,
    },
    Removed {
        removal: crate::capacity::Removal,
        seconds: f64,
    },
}

impl Step {
    pub fn to_json(&self) -> Value {
        match self {
            Step::Added {
                member,
                ring_size,
                seconds,
            } => json!({
                "action": "add", "instance": member.id, "addr": member.addr,
                "ring_size": ring_size, "seconds": seconds,
            }),
            Step::Removed { removal, seconds } => {
                let h = &removal.handoff;
                json!({
                    "action": "remove", "instance": removal.member.id, "addr": removal.member.addr,
                    "keys": h.keys, "bytes": h.bytes, "unconfirmed": h.unconfirmed,
                    "rounds": h.rounds, "elapsed_ms": h.elapsed_ms, "complete": h.is_complete(),
                    "seconds": seconds,
                })
            }
        }
    }

    pub fn to_text(&self) -> String {
        match self {
            Step::Added {
                member,
                ring_size,
                seconds,
            } => format!(
                "added {} at {}: in the ring after {seconds:.1} s ({ring_size} nodes)",
                member.id,
                member.addr.as_deref().unwrap_or("?")
            ),
            Step::Removed { removal, seconds } => {
                let h = &removal.handoff;
                format!(
                    "removed {} ({}): handed off {} keys, {} bytes, {} unconfirmed, in {} rounds; terminated after {seconds:.1} s",
                    removal.member.id,
                    removal.member.addr.as_deref().unwrap_or("?"),
                    h.keys,
                    h.bytes,
                    h.unconfirmed,
                    h.rounds
                )
            }
        }
    }
}

/// Moves the group to `desired`, calling `report` after each step.
/// Returns the steps done.
pub async fn scale_to(
    cap: &mut AsgCapacity,
    desired: usize,
    join_timeout: Duration,
    report: &mut dyn FnMut(&Step),
) -> Result<Vec<Step>> {
    let state = cap.describe().await?;
    if desired < state.min || desired > state.max {
        bail!(
            "--desired {desired} is outside the group's sizes (min {}, max {})",
            state.min,
            state.max
        );
    }
    let mut steps = Vec::new();
    loop {
        let state = cap.describe().await?;
        let step = if state.desired < desired {
            let started = Instant::now();
            let member = cap.add().await?;
            let ring_size = wait_joined(cap, &member, join_timeout).await?;
            Step::Added {
                member,
                ring_size,
                seconds: started.elapsed().as_secs_f64(),
            }
        } else if state.desired > desired {
            let started = Instant::now();
            let removal = cap.remove(None).await?;
            Step::Removed {
                removal,
                seconds: started.elapsed().as_secs_f64(),
            }
        } else {
            return Ok(steps);
        };
        report(&step);
        steps.push(step);
    }
}

/// Waits until the node of `member` is in the ring as walked from another
/// serving node; returns the ring's size then.
async fn wait_joined(cap: &AsgCapacity, member: &Member, timeout: Duration) -> Result<usize> {
    let start = Instant::now();
    let mut last = String::from("nothing yet");
    loop {
        // The address can appear late (the instance's tag is written as it
        // boots), so it is read afresh each round.
        let group = cap.group_state().await?;
        let addr = group
            .instances
            .iter()
            .find(|i| i.id == member.id)
            .and_then(|i| cap.node_addr(i));
        let others: Vec<String> = group
            .instances
            .iter()
            .filter(|i| i.id != member.id && i.running)
            .filter(|i| i.lifecycle_state == chord_aws::LifecycleState::InService)
            .filter_map(|i| cap.node_addr(i))
            .collect();
        if let Some(addr) = &addr {
            // A first node has no one to join: being alive is enough.
            let entries: Vec<String> = if others.is_empty() {
                vec![addr.clone()]
            } else {
                others
            };
            for entry in entries {
                let client = Client::new(entry.clone(), PeerOptions::default())?;
                match client.walk().await {
                    Ok(ring) if ring.iter().any(|n| n.addr == *addr) => return Ok(ring.len()),
                    Ok(ring) => {
                        last = format!("ring from {entry} has {} nodes, not {addr}", ring.len());
                        break;
                    }
                    Err(e) => last = format!("{entry}: {e}"),
                }
            }
        }
        if start.elapsed() >= timeout {
            bail!(
                "instance {} did not join the ring within {timeout:?} (last: {last})",
                member.id
            );
        }
        tokio::time::sleep(JOIN_POLL).await;
    }
}

/// Runs `aws scale` and prints its steps.
pub async fn run(
    cap: &mut AsgCapacity,
    desired: usize,
    join_timeout: Duration,
    json: bool,
) -> Result<()> {
    let from = cap.describe().await?.desired;
    let mut print = |s: &Step| {
        if !json {
            // A stdout that cannot be written must not stop a scaling
            // half-way; the summary below reports it.
            let _ = outln!("{}", s.to_text());
        }
    };
    let steps = scale_to(cap, desired, join_timeout, &mut print)
        .await
        .with_context(|| format!("scaling group {} to {desired}", cap.group()))?;
    if json {
        let steps: Vec<Value> = steps.iter().map(Step::to_json).collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "group": cap.group(), "from": from, "to": desired, "steps": steps,
            }))?
        )?;
    } else {
        outln!("group {} now at desired {desired}", cap.group())?;
    }
    Ok(())
}
