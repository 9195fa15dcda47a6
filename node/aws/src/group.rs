//! The Auto Scaling group's members as chord-dfs sees them: the group's
//! lifecycle view (from Auto Scaling) joined with the addresses (from EC2).
//!
//! Invariant: [`AwsClients::list_group`] returns only instances that EC2
//! reports `running` (emulators keep terminated instances listed), sorted by
//! instance id, so every caller sees the same order.

use std::collections::HashMap;

use aws_sdk_ec2::types::Filter;

use crate::error::{Error, Result};
use crate::{AwsClients, ADDR_TAG};

/// EC2 accepts at most 200 values per filter; 100 leaves room and keeps a
/// page small.
const INSTANCE_IDS_PER_DESCRIBE: usize = 100;

/// An instance's state in its Auto Scaling group (the group's own words).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LifecycleState {
    Pending,
    PendingWait,
    PendingProceed,
    InService,
    Terminating,
    TerminatingWait,
    TerminatingProceed,
    Terminated,
    Detaching,
    Detached,
    EnteringStandby,
    Standby,
    /// Any other state (warm pools, root volume replacement, ...), verbatim.
    Other(String),
}

impl LifecycleState {
    /// Parses the group's spelling (`Pending:Wait`, `InService`, ...).
    pub fn parse(s: &str) -> LifecycleState {
        match s {
            "Pending" => LifecycleState::Pending,
            "Pending:Wait" => LifecycleState::PendingWait,
            "Pending:Proceed" => LifecycleState::PendingProceed,
            "InService" => LifecycleState::InService,
            "Terminating" => LifecycleState::Terminating,
            "Terminating:Wait" => LifecycleState::TerminatingWait,
            "Terminating:Proceed" => LifecycleState::TerminatingProceed,
            "Terminated" => LifecycleState::Terminated,
            "Detaching" => LifecycleState::Detaching,
            "Detached" => LifecycleState::Detached,
            "EnteringStandby" => LifecycleState::EnteringStandby,
            "Standby" => LifecycleState::Standby,
            other => LifecycleState::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            LifecycleState::Pending => "Pending",
            LifecycleState::PendingWait => "Pending:Wait",
            LifecycleState::PendingProceed => "Pending:Proceed",
            LifecycleState::InService => "InService",
            LifecycleState::Terminating => "Terminating",
            LifecycleState::TerminatingWait => "Terminating:Wait",
            LifecycleState::TerminatingProceed => "Terminating:Proceed",
            LifecycleState::Terminated => "Terminated",
            LifecycleState::Detaching => "Detaching",
            LifecycleState::Detached => "Detached",
            LifecycleState::EnteringStandby => "EnteringStandby",
            LifecycleState::Standby => "Standby",
            LifecycleState::Other(s) => s,
        }
    }

    /// Booting into the group (any `Pending` phase).
    pub fn is_pending(&self) -> bool {
        matches!(
            self,
            LifecycleState::Pending | LifecycleState::PendingWait | LifecycleState::PendingProceed
        )
    }

    /// On its way out of the group, or gone (any `Terminat*` phase).
    pub fn is_terminating(&self) -> bool {
        matches!(
            self,
            LifecycleState::Terminating
                | LifecycleState::TerminatingWait
                | LifecycleState::TerminatingProceed
                | LifecycleState::Terminated
        )
    }
}

impl std::fmt::Display for LifecycleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One member of the group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub lifecycle_state: LifecycleState,
    /// `Healthy` or `Unhealthy`, as the group reports it.
    pub health: String,
    /// Primary private IPv4 address, when EC2 reports the instance running.
    pub private_ip: Option<String>,
    /// The `chord:addr` tag: the node's gRPC address when it is not
    /// `<private ip>:<port>`.
    pub tag_addr: Option<String>,
    /// EC2 reports the instance `running`.
    pub running: bool,
}

impl Instance {
    /// The address a node on this instance serves on: the tag if set, else
    /// `<private ip>:<port>`; `None` while EC2 has no address for it.
    pub fn node_addr(&self, port: u16) -> Option<String> {
        self.tag_addr
            .clone()
            .or_else(|| self.private_ip.as_ref().map(|ip| format!("{ip}:{port}")))
    }
}

/// What EC2 says about one running instance.
#[derive(Clone, Debug, Default)]
pub(crate) struct Ec2Details {
    pub private_ip: Option<String>,
    pub tag_addr: Option<String>,
}

impl AwsClients {
    /// The name of the Auto Scaling group `instance_id` belongs to, or `None`
    /// when it belongs to none.
    pub async fn group_of(&self, instance_id: &str) -> Result<Option<String>> {
        const CALL: &str = "DescribeAutoScalingInstances";
        let out = self
            .autoscaling
            .describe_auto_scaling_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| Error::api(CALL, e))?;
        Ok(out
            .auto_scaling_instances()
            .iter()
            .find(|i| i.instance_id() == Some(instance_id))
            .and_then(|i| i.auto_scaling_group_name())
            .map(str::to_owned))
    }

    /// The group's running instances, with addresses, sorted by id.
    pub async fn list_group(&self, name: &str) -> Result<Vec<Instance>> {
        let group = self.describe_group(name).await?;
        Ok(group.instances.into_iter().filter(|i| i.running).collect())
    }

    /// EC2 details of those `ids` that are running, keyed by id. Uses an
    /// `instance-id` filter rather than `InstanceIds`, which fails the whole
    /// call when one id is already gone.
    pub(crate) async fn running_details(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, Ec2Details>> {
        const CALL: &str = "DescribeInstances";
        let mut found = HashMap::new();
        for batch in ids.chunks(INSTANCE_IDS_PER_DESCRIBE) {
            let mut pages = self
                .ec2
                .describe_instances()
                .filters(
                    Filter::builder()
                        .name("instance-id")
                        .set_values(Some(batch.to_vec()))
                        .build(),
                )
                .filters(
                    Filter::builder()
                        .name("instance-state-name")
                        .values("running")
                        .build(),
                )
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| Error::api(CALL, e))?;
                for inst in page.reservations().iter().flat_map(|r| r.instances()) {
                    let Some(id) = inst.instance_id() else {
                        continue;
                    };
                    let tag_addr = inst
                        .tags()
                        .iter()
                        .find(|t| t.key() == Some(ADDR_TAG))
                        .and_then(|t| t.value())
                        .map(str::trim)
                        .filter(|v| !v.is_empty())
                        .map(str::to_owned);
                    found.insert(
                        id.to_owned(),
                        Ec2Details {
                            private_ip: inst.private_ip_address().map(str::to_owned),
                            tag_addr,
                        },
                    );
                }
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_states_round_trip() {
        for s in [
            "Pending",
            "Pending:Wait",
            "Pending:Proceed",
            "InService",
            "Terminating",
            "Terminating:Wait",
            "Terminating:Proceed",
            "Terminated",
            "Detaching",
            "Detached",
            "EnteringStandby",
            "Standby",
            "Warmed:Running",
        ] {
            assert_eq!(LifecycleState::parse(s).as_str(), s);
        }
        assert!(LifecycleState::parse("Pending:Wait").is_pending());
        assert!(LifecycleState::parse("Terminating:Wait").is_terminating());
        assert!(!LifecycleState::InService.is_terminating());
    }

    #[test]
    fn node_addr_prefers_the_tag() {
        let mut i = Instance {
            id: "i-1".into(),
            lifecycle_state: LifecycleState::InService,
            health: "Healthy".into(),
            private_ip: Some("10.0.0.5".into()),
            tag_addr: None,
            running: true,
        };
        assert_eq!(i.node_addr(5057).as_deref(), Some("10.0.0.5:5057"));
        i.tag_addr = Some("127.0.0.1:7001".into());
        assert_eq!(i.node_addr(5057).as_deref(), Some("127.0.0.1:7001"));
        i.tag_addr = None;
        i.private_ip = None;
        assert_eq!(i.node_addr(5057), None);
    }
}
