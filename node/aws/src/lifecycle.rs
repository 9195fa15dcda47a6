//! The terminating lifecycle hook, from the instance's side: read the target
//! lifecycle state from IMDS, keep the action alive with heartbeats while the
//! node drains, complete it when the hand-off is confirmed.
//!
//! Invariant for callers: complete with [`LifecycleResult::Continue`] only
//! after the node's keys are confirmed elsewhere. The hook's default result
//! (ABANDON) plus the group's retain-on-abandon policy keep the disk otherwise.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::group::LifecycleState;
use crate::imds::Imds;
use crate::AwsClients;

/// Where IMDS tells an instance the state its group is moving it to.
pub const TARGET_STATE_PATH: &str = "/latest/meta-data/autoscaling/target-lifecycle-state";

/// AWS's heartbeat timeout for a hook created without one.
pub const DEFAULT_HEARTBEAT_TIMEOUT_SECS: u64 = 3600;

/// Names the lifecycle action of one instance under one hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecycleAction {
    pub group: String,
    pub hook: String,
    pub instance_id: String,
}

/// How a lifecycle action ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LifecycleResult {
    /// Go on with the termination: the node's data is safe elsewhere.
    Continue,
    /// Stop waiting (on a terminating hook the instance still goes unless the
    /// group retains abandoned instances).
    Abandon,
}

impl LifecycleResult {
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleResult::Continue => "CONTINUE",
            LifecycleResult::Abandon => "ABANDON",
        }
    }
}

impl Imds {
    /// The state the group is moving this instance to (`InService`,
    /// `Terminated`, ...), or `None` before the group has set one.
    pub async fn target_state(&self) -> Result<Option<LifecycleState>> {
        Ok(self
            .get_optional(TARGET_STATE_PATH)
            .await?
            .map(|s| LifecycleState::parse(&s)))
    }
}

impl AwsClients {
    /// Extends the action's wait by one heartbeat timeout.
    pub async fn lifecycle_heartbeat(&self, action: &LifecycleAction) -> Result<()> {
        const CALL: &str = "RecordLifecycleActionHeartbeat";
        self.autoscaling
            .record_lifecycle_action_heartbeat()
            .auto_scaling_group_name(&action.group)
            .lifecycle_hook_name(&action.hook)
            .instance_id(&action.instance_id)
            .send()
            .await
            .map_err(|e| Error::api(CALL, e))?;
        Ok(())
    }

    /// The heartbeat timeout of hook `hook` on group `group` (how long one
    /// heartbeat extends the wait), or `None` when the group has no such hook.
    pub async fn hook_heartbeat_timeout(
        &self,
        group: &str,
        hook: &str,
    ) -> Result<Option<Duration>> {
        const CALL: &str = "DescribeLifecycleHooks";
        let out = self
            .autoscaling
            .describe_lifecycle_hooks()
            .auto_scaling_group_name(group)
            .lifecycle_hook_names(hook)
            .send()
            .await
            .map_err(|e| Error::api(CALL, e))?;
        Ok(out
            .lifecycle_hooks()
            .iter()
            .find(|h| h.lifecycle_hook_name() == Some(hook))
            .map(|h| {
                let secs = h
                    .heartbeat_timeout()
                    .map_or(DEFAULT_HEARTBEAT_TIMEOUT_SECS, |s| s.max(0) as u64);
                Duration::from_secs(secs)
            }))
    }

    /// Ends the action with `result`.
    pub async fn complete_lifecycle(
        &self,
        action: &LifecycleAction,
        result: LifecycleResult,
    ) -> Result<()> {
        const CALL: &str = "CompleteLifecycleAction";
        self.autoscaling
            .complete_lifecycle_action()
            .auto_scaling_group_name(&action.group)
            .lifecycle_hook_name(&action.hook)
            .instance_id(&action.instance_id)
            .lifecycle_action_result(result.as_str())
            .send()
            .await
            .map_err(|e| Error::api(CALL, e))?;
        Ok(())
    }
}
