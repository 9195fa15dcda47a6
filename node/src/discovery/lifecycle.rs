//! The terminating lifecycle hook, handled inside the node: poll IMDS for the
//! target lifecycle state; on `Terminated`, drain (hand every key to its next
//! holders) while sending lifecycle heartbeats, complete the action with
//! CONTINUE once the hand-off is confirmed, then ask the process to stop.
//!
//! Invariants: the node never completes with CONTINUE while a key is
//! unconfirmed elsewhere, and never gives up draining (while it is the last
//! holder of a key, it keeps trying and heartbeating; if AWS's cap on the wait
//! expires, the hook's ABANDON default and the group's retain policy keep the
//! disk). Failures of the lifecycle calls themselves (moto answers 500) do not
//! stop the drain; they end in one clear log line.

use std::sync::Arc;
use std::time::Duration;

use chord_aws::{LifecycleAction, LifecycleResult, LifecycleState};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::aws::AwsContext;
use crate::node::Node;
use crate::repair::HandoffReport;

/// Default name of the terminating hook (the stack creates it so).
pub const DEFAULT_HOOK: &str = "chord-drain";
/// Default IMDS poll period: AWS sets the target state when the hook starts
/// waiting, and the wait is at least 30 s, so 5 s reacts well within it.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Heartbeat period when the hook's timeout cannot be read: half of AWS's
/// default heartbeat timeout (3600 s).
const FALLBACK_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1800);
/// Floor of the heartbeat period, so a tiny timeout cannot make it spin.
const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// Pause between two drain rounds that left keys unconfirmed.
const DRAIN_RETRY_PAUSE: Duration = Duration::from_secs(5);
/// Attempts at CompleteLifecycleAction on retryable failures.
const COMPLETE_ATTEMPTS: u32 = 5;
/// Pause between those attempts.
const COMPLETE_RETRY_PAUSE: Duration = Duration::from_secs(3);

#[derive(Clone, Debug)]
pub struct LifecycleOptions {
    /// Name of the terminating hook.
    pub hook: String,
    /// IMDS poll period.
    pub poll: Duration,
    /// Deadline of one drain round; rounds repeat until the hand-off is complete.
    pub drain_round: Duration,
}

/// Watches for termination until `cancel`. When the group terminates this
/// instance, drains, completes the action and cancels `shutdown`.
pub async fn watch(
    node: Arc<Node>,
    ctx: Arc<AwsContext>,
    opts: LifecycleOptions,
    cancel: CancellationToken,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(opts.poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match ctx.imds.target_state().await {
            Ok(Some(LifecycleState::Terminated)) => break,
            Ok(state) => {
                failing = false;
                debug!(target_state = ?state, "lifecycle poll");
            }
            Err(e) if !failing => {
                warn!(error = %e, "cannot read the target lifecycle state; will keep polling");
                failing = true;
            }
            Err(e) => debug!(error = %e, "target lifecycle state still unreadable"),
        }
    }
    info!(instance = %ctx.identity.instance_id, hook = %opts.hook, "the group is terminating this instance: draining");
    let action = LifecycleAction {
        group: ctx.group.clone(),
        hook: opts.hook.clone(),
        instance_id: ctx.identity.instance_id.clone(),
    };
    let Some((report, heartbeats)) =
        drain_with_heartbeats(&node, &ctx, &action, &opts, &cancel).await
    else {
        return;
    };
    info!(
        keys = report.keys,
        bytes = report.bytes,
        rounds = report.rounds,
        elapsed_ms = report.elapsed_ms,
        "drain complete: every key is confirmed on its next holders"
    );
    complete(&ctx, &action, heartbeats).await;
    shutdown.cancel();
}

/// What became of the heartbeats sent while draining.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Heartbeats {
    sent: u32,
    failed: u32,
}

/// Drains until the hand-off is complete, heartbeating meanwhile. `None` when
/// cancelled first.
async fn drain_with_heartbeats(
    node: &Arc<Node>,
    ctx: &Arc<AwsContext>,
    action: &LifecycleAction,
    opts: &LifecycleOptions,
    cancel: &CancellationToken,
) -> Option<(HandoffReport, Heartbeats)> {
    let interval = heartbeat_interval(ctx, action).await;
    info!(
        every_secs = interval.as_secs(),
        "draining with lifecycle heartbeats"
    );
    let stop_heartbeats = cancel.child_token();
    let heartbeats = tokio::spawn(heartbeat_loop(
        ctx.clone(),
        action.clone(),
        interval,
        stop_heartbeats.clone(),
    ));
    let drain = async {
        loop {
            let report = node.drain(opts.drain_round).await;
            if report.is_complete() {
                return report;
            }
            warn!(
                unconfirmed = report.unconfirmed,
                keys = report.keys,
                "drain round left keys unconfirmed; this node may be their last holder, so it keeps draining"
            );
            tokio::time::sleep(DRAIN_RETRY_PAUSE).await;
        }
    };
    let report = tokio::select! {
        _ = cancel.cancelled() => None,
        r = drain => Some(r),
    };
    stop_heartbeats.cancel();
    let tally = match heartbeats.await {
        Ok(t) => t,
        Err(e) => {
            warn!(error = %e, "heartbeat task failed");
            Heartbeats::default()
        }
    };
    report.map(|r| (r, tally))
}

/// Half the hook's heartbeat timeout, so one lost heartbeat never lets the
/// wait expire.
async fn heartbeat_interval(ctx: &AwsContext, action: &LifecycleAction) -> Duration {
    match ctx
        .clients
        .hook_heartbeat_timeout(&action.group, &action.hook)
        .await
    {
        Ok(Some(t)) => (t / 2).max(MIN_HEARTBEAT_INTERVAL),
        Ok(None) => {
            warn!(hook = %action.hook, group = %action.group, "no such lifecycle hook; heartbeating at the default period");
            FALLBACK_HEARTBEAT_INTERVAL
        }
        Err(e) => {
            debug!(error = %e, "cannot read the hook's heartbeat timeout");
            FALLBACK_HEARTBEAT_INTERVAL
        }
    }
}

/// Heartbeats at once and then every `interval` until `stop`. Logs the
/// first unexpected failure only (an emulator that lacks the call is reported
/// once, by [`complete`]); a failed heartbeat never stops the drain.
async fn heartbeat_loop(
    ctx: Arc<AwsContext>,
    action: LifecycleAction,
    interval: Duration,
    stop: CancellationToken,
) -> Heartbeats {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tally = Heartbeats::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return tally,
            _ = ticker.tick() => {}
        }
        // A heartbeat under way is let finish (the SDK bounds it), so the
        // tally says what AWS answered rather than what was abandoned.
        match ctx.clients.lifecycle_heartbeat(&action).await {
            Ok(()) => {
                tally.sent += 1;
                debug!("lifecycle heartbeat sent");
            }
            Err(e) => {
                if tally.failed == 0 && !e.is_not_implemented() {
                    warn!(error = %e, "lifecycle heartbeat failed; draining on regardless");
                } else {
                    debug!(error = %e, "lifecycle heartbeat not taken");
                }
                tally.failed += 1;
            }
        }
    }
}

/// Completes the action with CONTINUE, retrying retryable failures a few
/// times; logs one line if it cannot.
async fn complete(ctx: &AwsContext, action: &LifecycleAction, heartbeats: Heartbeats) {
    let mut attempt = 1;
    loop {
        match ctx
            .clients
            .complete_lifecycle(action, LifecycleResult::Continue)
            .await
        {
            Ok(()) => {
                info!(
                    hook = %action.hook,
                    heartbeats_sent = heartbeats.sent,
                    heartbeats_failed = heartbeats.failed,
                    "lifecycle action completed (CONTINUE)"
                );
                return;
            }
            Err(e) if e.is_retryable() && attempt < COMPLETE_ATTEMPTS => {
                debug!(attempt, error = %e, "completing the lifecycle action failed; retrying");
                attempt += 1;
                tokio::time::sleep(COMPLETE_RETRY_PAUSE).await;
            }
            Err(e) => {
                warn!(
                    hook = %action.hook,
                    heartbeats_sent = heartbeats.sent,
                    heartbeats_failed = heartbeats.failed,
                    "lifecycle action not completed: {e}; the drain itself is complete"
                );
                return;
            }
        }
    }
}
