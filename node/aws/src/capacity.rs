//! The group's capacity: sizes and members, desired-capacity changes,
//! terminate-with-decrement, and the recent scaling activities.
//!
//! This module only calls AWS. The rule that a scale-in is drain-then-remove
//! lives with the callers (the console's capacity seam): nothing here drains.

use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::group::{Instance, LifecycleState};
use crate::AwsClients;

/// DescribeScalingActivities returns at most 100 records per page.
const MAX_ACTIVITY_RECORDS: usize = 100;

/// The group's sizes and members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupState {
    pub name: String,
    pub desired: u32,
    pub min: u32,
    pub max: u32,
    /// Every member the group lists (any lifecycle state), sorted by id;
    /// `running` and the addresses come from EC2.
    pub instances: Vec<Instance>,
}

/// One scaling activity, newest first in [`AwsClients::recent_activities`].
#[derive(Clone, Debug, PartialEq)]
pub struct Activity {
    pub id: String,
    pub description: String,
    pub cause: String,
    /// `Successful`, `InProgress`, `Failed`, ...
    pub status: String,
    pub start: Option<SystemTime>,
    pub end: Option<SystemTime>,
    pub progress: Option<i32>,
}

fn size(v: Option<i32>) -> u32 {
    v.map_or(0, |n| n.max(0) as u32)
}

fn time(t: Option<&aws_smithy_types::DateTime>) -> Option<SystemTime> {
    t.and_then(|t| SystemTime::try_from(*t).ok())
}

impl AwsClients {
    /// Sizes and members of group `name`.
    pub async fn describe_group(&self, name: &str) -> Result<GroupState> {
        const CALL: &str = "DescribeAutoScalingGroups";
        let out = self
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .map_err(|e| Error::api(CALL, e))?;
        let group = out
            .auto_scaling_groups()
            .iter()
            .find(|g| g.auto_scaling_group_name() == Some(name))
            .ok_or_else(|| Error::missing(CALL, format!("no Auto Scaling group named {name:?}")))?;
        let mut members: Vec<(String, LifecycleState, String)> = group
            .instances()
            .iter()
            .filter_map(|i| {
                let id = i.instance_id()?.to_owned();
                let state = i
                    .lifecycle_state()
                    .map_or(LifecycleState::Other("unknown".into()), |s| {
                        LifecycleState::parse(s.as_str())
                    });
                let health = i.health_status().unwrap_or("unknown").to_owned();
                Some((id, state, health))
            })
            .collect();
        members.sort_by(|a, b| a.0.cmp(&b.0));
        let ids: Vec<String> = members.iter().map(|m| m.0.clone()).collect();
        let mut details = self.running_details(&ids).await?;
        let instances = members
            .into_iter()
            .map(|(id, lifecycle_state, health)| {
                let d = details.remove(&id);
                Instance {
                    running: d.is_some(),
                    private_ip: d.as_ref().and_then(|d| d.private_ip.clone()),
                    tag_addr: d.and_then(|d| d.tag_addr),
                    id,
                    lifecycle_state,
                    health,
                }
            })
            .collect();
        Ok(GroupState {
            name: name.to_owned(),
            desired: size(group.desired_capacity()),
            min: size(group.min_size()),
            max: size(group.max_size()),
            instances,
        })
    }

    /// Sets the group's desired capacity now (no cool-down: the callers'
    /// policy has its own).
    pub async fn set_desired(&self, name: &str, desired: u32) -> Result<()> {
        const CALL: &str = "SetDesiredCapacity";
        let desired = i32::try_from(desired)
            .map_err(|_| Error::invalid("desired capacity", desired.to_string()))?;
        self.autoscaling
            .set_desired_capacity()
            .auto_scaling_group_name(name)
            .desired_capacity(desired)
            .honor_cooldown(false)
            .send()
            .await
            .map_err(|e| Error::api(CALL, e))?;
        Ok(())
    }

    /// Terminates `instance_id` through its group; with `decrement` the
    /// desired capacity drops by one, so the group does not replace it.
    /// Callers drain the node first.
    pub async fn terminate_in_group(&self, instance_id: &str, decrement: bool) -> Result<Activity> {
        const CALL: &str = "TerminateInstanceInAutoScalingGroup";
        let out = self
            .autoscaling
            .terminate_instance_in_auto_scaling_group()
            .instance_id(instance_id)
            .should_decrement_desired_capacity(decrement)
            .send()
            .await
            .map_err(|e| Error::api(CALL, e))?;
        out.activity()
            .map(activity)
            .ok_or_else(|| Error::missing(CALL, "the answer holds no activity"))
    }

    /// The group's `n` most recent scaling activities (at most 100), newest first.
    pub async fn recent_activities(&self, name: &str, n: usize) -> Result<Vec<Activity>> {
        const CALL: &str = "DescribeScalingActivities";
        let n = n.min(MAX_ACTIVITY_RECORDS);
        if n == 0 {
            return Ok(Vec::new());
        }
        let out = self
            .autoscaling
            .describe_scaling_activities()
            .auto_scaling_group_name(name)
            .max_records(n as i32)
            .send()
            .await
            .map_err(|e| Error::api(CALL, e))?;
        let mut list: Vec<Activity> = out.activities().iter().map(activity).collect();
        // AWS already answers newest first; emulators may not.
        list.sort_by_key(|a| std::cmp::Reverse(a.start));
        list.truncate(n);
        Ok(list)
    }
}

fn activity(a: &aws_sdk_autoscaling::types::Activity) -> Activity {
    Activity {
        id: a.activity_id().unwrap_or_default().to_owned(),
        description: a.description().unwrap_or_default().to_owned(),
        cause: a.cause().unwrap_or_default().to_owned(),
        status: a
            .status_code()
            .map_or_else(|| "unknown".to_owned(), |s| s.as_str().to_owned()),
        start: time(a.start_time()),
        end: time(a.end_time()),
        progress: a.progress(),
    }
}
