//! [`AsgCapacity`]: the AWS side of the capacity seam, over one Auto Scaling
//! group.
//!
//! - `add` raises the desired capacity by one (never past the group's max)
//!   and returns the instance the group launched for it.
//! - `remove` is drain-then-terminate: it picks an in-service instance (the
//!   named one, or the newest), asks its node to hand off every key
//!   ([`PeerPool::drain`]), and only when the hand-off is complete
//!   (no unconfirmed key) calls `TerminateInstanceInAutoScalingGroup` with a
//!   decrement, so the group does not replace it. An incomplete hand-off is
//!   an error and the instance is left running: destroying it could lose
//!   the last copy of a key.
//!
//! All AWS calls go through `chord-aws`; the SDK reads its endpoint,
//! region and credentials from the environment (`AWS_ENDPOINT_URL` points
//! it at an emulator in the tests).

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use aws_sdk_ec2::types::Filter;
use chord_aws::{AwsClients, GroupState, Instance, LifecycleState};
use chord_node::peer::{PeerOptions, PeerPool};

use crate::capacity::{Capacity, CapacityState, Member, MemberState, Removal};

/// The node's gRPC port on an instance without a `chord:addr` tag (the
/// node's default port, which the stack opens).
pub const DEFAULT_NODE_PORT: u16 = chord_node::config::DEFAULT_PORT;

/// How long a drain may run before the console gives up on it: a node
/// holding gigabytes needs minutes to hand them off; past this the operator
/// should look at the node rather than wait.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(600);

/// How long the group may take to list the instance a desired+1 launched.
pub const LAUNCH_TIMEOUT: Duration = Duration::from_secs(120);

/// Pause between looks at the group while waiting for a launch.
const LAUNCH_POLL: Duration = Duration::from_millis(500);

/// Settings of [`AsgCapacity`].
#[derive(Clone, Debug)]
pub struct AsgOptions {
    /// gRPC port of nodes on untagged instances.
    pub node_port: u16,
    pub drain_deadline: Duration,
    pub launch_timeout: Duration,
}

impl Default for AsgOptions {
    fn default() -> AsgOptions {
        AsgOptions {
            node_port: DEFAULT_NODE_PORT,
            drain_deadline: DRAIN_DEADLINE,
            launch_timeout: LAUNCH_TIMEOUT,
        }
    }
}

/// One Auto Scaling group as a [`Capacity`].
#[derive(Debug)]
pub struct AsgCapacity {
    aws: AwsClients,
    group: String,
    peers: PeerPool,
    opts: AsgOptions,
    /// The instance being drained right now, reported as `Draining`.
    draining: Option<String>,
}

impl AsgCapacity {
    pub fn new(aws: AwsClients, group: &str, opts: AsgOptions) -> AsgCapacity {
        AsgCapacity {
            aws,
            group: group.to_string(),
            peers: PeerPool::new(PeerOptions::default()),
            opts,
            draining: None,
        }
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    pub fn aws(&self) -> &AwsClients {
        &self.aws
    }

    pub fn peers(&self) -> &PeerPool {
        &self.peers
    }

    pub fn options(&self) -> &AsgOptions {
        &self.opts
    }

    /// The group as AWS reports it.
    pub async fn group_state(&self) -> Result<GroupState> {
        Ok(self.aws.describe_group(&self.group).await?)
    }

    /// The node address of `instance` (its `chord:addr` tag, else
    /// `<private ip>:<node port>`).
    pub fn node_addr(&self, instance: &Instance) -> Option<String> {
        instance.node_addr(self.opts.node_port)
    }

    fn member(&self, instance: &Instance) -> Member {
        let state = if self.draining.as_deref() == Some(instance.id.as_str()) {
            MemberState::Draining
        } else {
            member_state(&instance.lifecycle_state)
        };
        Member {
            id: instance.id.clone(),
            addr: self.node_addr(instance),
            state,
        }
    }

    /// Launch times of running instances, for choosing the newest.
    async fn launch_times(&self, ids: &[String]) -> Result<Vec<(String, SystemTime)>> {
        let out = self
            .aws
            .ec2
            .describe_instances()
            .filters(
                Filter::builder()
                    .name("instance-id")
                    .set_values(Some(ids.to_vec()))
                    .build(),
            )
            .send()
            .await
            .context("DescribeInstances")?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| {
                let id = i.instance_id()?.to_string();
                let t = SystemTime::try_from(*i.launch_time()?).ok()?;
                Some((id, t))
            })
            .collect())
    }

    /// The instance `remove` would take: `which` if it is in service, else
    /// the newest in-service one (ties broken by the higher id, so the
    /// choice is deterministic).
    pub async fn choose_victim(&self, group: &GroupState, which: Option<&str>) -> Result<Instance> {
        let in_service: Vec<&Instance> = group
            .instances
            .iter()
            .filter(|i| i.running && i.lifecycle_state == LifecycleState::InService)
            .collect();
        if let Some(id) = which {
            return match group.instances.iter().find(|i| i.id == id) {
                None => bail!("no instance {id} in group {}", self.group),
                Some(i) if !in_service.iter().any(|s| s.id == i.id) => bail!(
                    "instance {id} is {}, not InService; only a serving node can be drained",
                    i.lifecycle_state
                ),
                Some(i) => Ok(i.clone()),
            };
        }
        let ids: Vec<String> = in_service.iter().map(|i| i.id.clone()).collect();
        if ids.is_empty() {
            bail!("group {} has no InService instance to remove", self.group);
        }
        let times = self.launch_times(&ids).await?;
        let newest = in_service
            .iter()
            .max_by_key(|i| {
                let t = times
                    .iter()
                    .find(|(id, _)| *id == i.id)
                    .map(|(_, t)| *t)
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                (t, i.id.clone())
            })
            .context("no in-service instance")?;
        Ok((*newest).clone())
    }
}

/// The seam's view of a group lifecycle state. Standby and the like count
/// as not (yet) serving, like `Pending`.
pub fn member_state(state: &LifecycleState) -> MemberState {
    match state {
        LifecycleState::InService => MemberState::InService,
        s if s.is_terminating() => MemberState::Terminating,
        LifecycleState::Detaching | LifecycleState::Detached => MemberState::Terminating,
        _ => MemberState::Pending,
    }
}

impl Capacity for AsgCapacity {
    async fn describe(&mut self) -> Result<CapacityState> {
        let group = self.group_state().await?;
        Ok(CapacityState {
            desired: group.desired as usize,
            min: group.min as usize,
            max: group.max as usize,
            members: group.instances.iter().map(|i| self.member(i)).collect(),
        })
    }

    async fn add(&mut self) -> Result<Member> {
        let before = self.group_state().await?;
        if before.desired >= before.max {
            bail!(
                "group {} is at its maximum size ({}); raise MaxSize to grow it",
                self.group,
                before.max
            );
        }
        let known: BTreeSet<String> = before.instances.iter().map(|i| i.id.clone()).collect();
        self.aws
            .set_desired(&self.group, before.desired + 1)
            .await?;
        tracing::info!(group = %self.group, desired = before.desired + 1, "raised desired capacity");
        let start = Instant::now();
        loop {
            let now = self.group_state().await?;
            if let Some(new) = now
                .instances
                .iter()
                .find(|i| !known.contains(&i.id) && !i.lifecycle_state.is_terminating())
            {
                return Ok(self.member(new));
            }
            if start.elapsed() >= self.opts.launch_timeout {
                bail!(
                    "group {} accepted desired {} but listed no new instance within {:?}",
                    self.group,
                    before.desired + 1,
                    self.opts.launch_timeout
                );
            }
            tokio::time::sleep(LAUNCH_POLL).await;
        }
    }

    async fn remove(&mut self, which: Option<&str>) -> Result<Removal> {
        let group = self.group_state().await?;
        if group.desired <= group.min {
            bail!(
                "group {} is at its minimum size ({}); lower MinSize to shrink it",
                self.group,
                group.min
            );
        }
        let victim = self.choose_victim(&group, which).await?;
        let addr = self.node_addr(&victim).with_context(|| {
            format!("instance {} has no address yet; cannot drain it", victim.id)
        })?;
        tracing::info!(instance = %victim.id, %addr, "draining before terminate");
        self.draining = Some(victim.id.clone());
        let drained = self.peers.drain(&addr, self.opts.drain_deadline).await;
        self.draining = None;
        let handoff = drained.with_context(|| format!("draining {} ({addr})", victim.id))?;
        if !handoff.is_complete() {
            bail!(
                "hand-off of {} ({addr}) incomplete: {} keys unconfirmed after {} rounds ({} keys, {} bytes moved); the instance is kept",
                victim.id,
                handoff.unconfirmed,
                handoff.rounds,
                handoff.keys,
                handoff.bytes
            );
        }
        self.aws.terminate_in_group(&victim.id, true).await?;
        tracing::info!(instance = %victim.id, keys = handoff.keys, bytes = handoff.bytes,
            "drained and terminated");
        let mut member = self.member(&victim);
        member.state = MemberState::Terminating;
        Ok(Removal { member, handoff })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_states_map_onto_the_seam() {
        let cases = [
            ("Pending", MemberState::Pending),
            ("Pending:Wait", MemberState::Pending),
            ("InService", MemberState::InService),
            ("Terminating:Wait", MemberState::Terminating),
            ("Terminated", MemberState::Terminating),
            ("Detaching", MemberState::Terminating),
            ("Standby", MemberState::Pending),
            ("Warmed:Running", MemberState::Pending),
        ];
        for (s, want) in cases {
            assert_eq!(member_state(&LifecycleState::parse(s)), want, "{s}");
        }
    }
}
