//! What a node in AWS mode publishes to CloudWatch: a pure conversion from two
//! [`Sample`]s of the node's counters to metric data ([`metric_data`]), and
//! the publisher task ([`publish`]) that takes a sample every interval and
//! sends the data with `PutMetricData`.
//!
//! Names and dimensions (the CloudFormation target-tracking policy and the
//! console read these, so they are part of the interface):
//! - dimension `AutoScalingGroupName` only, one value per node and period:
//!   [`NODE_REQUEST_RATE`] (requests/s; the policy tracks its Average across
//!   the group) and [`NODE_STORED_BYTES`];
//! - dimensions `AutoScalingGroupName` + `InstanceId`: [`INSTANCE_REQUEST_RATE`],
//!   [`INSTANCE_STORED_BYTES`], [`INSTANCE_KEY_COUNT`] and
//!   [`INSTANCE_TRANSFER_BYTES`] (chunk bytes in plus out during the period).
//!
//! Rates are deltas between two samples over the time between them, so the
//! first publish happens one interval after start. A publishing failure is
//! logged once and retried next interval; it never stops the node.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chord_aws::{AwsClients, Datum, Dimension, Unit};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::node::Node;

/// Default CloudWatch namespace of the project's metrics.
pub const DEFAULT_NAMESPACE: &str = "ChordDFS";
/// Default publishing period: CloudWatch's standard resolution is one
/// minute, so publishing faster buys nothing but API calls.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// Dimension naming the group (the one CloudWatch and Auto Scaling use).
pub const GROUP_DIMENSION: &str = "AutoScalingGroupName";
/// Dimension naming the instance.
pub const INSTANCE_DIMENSION: &str = "InstanceId";

pub const NODE_REQUEST_RATE: &str = "NodeRequestRate";
pub const NODE_STORED_BYTES: &str = "NodeStoredBytes";
pub const INSTANCE_REQUEST_RATE: &str = "InstanceRequestRate";
pub const INSTANCE_STORED_BYTES: &str = "InstanceStoredBytes";
pub const INSTANCE_KEY_COUNT: &str = "InstanceKeyCount";
pub const INSTANCE_TRANSFER_BYTES: &str = "InstanceTransferBytes";

/// The node's counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// gRPC requests served since start.
    pub requests: u64,
    /// Chunk bytes received and sent since start.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Bytes stored now (chunks and manifests).
    pub stored_bytes: u64,
    /// Keys stored now (chunks plus live manifests).
    pub keys: u64,
}

impl Sample {
    /// Reads `node`'s counters and store totals.
    pub fn take(node: &Node) -> Sample {
        let s = node.store().stats();
        let c = &node.counters;
        Sample {
            at_ms: crate::now_ms(),
            requests: c.requests.load(Ordering::Relaxed),
            bytes_in: c.bytes_in.load(Ordering::Relaxed),
            bytes_out: c.bytes_out.load(Ordering::Relaxed),
            stored_bytes: s.bytes,
            keys: s.chunks + s.manifests,
        }
    }
}

/// Who publishes: the group and instance the dimensions name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publisher {
    pub group: String,
    pub instance_id: String,
}

/// The data points for the period from `prev` to `now`, stamped `at`.
pub fn metric_data(who: &Publisher, prev: &Sample, now: &Sample, at: SystemTime) -> Vec<Datum> {
    let secs = now.at_ms.saturating_sub(prev.at_ms) as f64 / 1000.0;
    let rate = if secs > 0.0 {
        now.requests.saturating_sub(prev.requests) as f64 / secs
    } else {
        0.0
    };
    let transfer = (now.bytes_in.saturating_sub(prev.bytes_in))
        .saturating_add(now.bytes_out.saturating_sub(prev.bytes_out));
    let group = vec![Dimension::new(GROUP_DIMENSION, &who.group)];
    let instance = vec![
        Dimension::new(GROUP_DIMENSION, &who.group),
        Dimension::new(INSTANCE_DIMENSION, &who.instance_id),
    ];
    let datum = |name: &str, dims: &Vec<Dimension>, value: f64, unit: Unit| Datum {
        name: name.to_owned(),
        dimensions: dims.clone(),
        value,
        unit,
        timestamp: Some(at),
    };
    let stored = now.stored_bytes as f64;
    vec![
        datum(NODE_REQUEST_RATE, &group, rate, Unit::CountPerSecond),
        datum(NODE_STORED_BYTES, &group, stored, Unit::Bytes),
        datum(INSTANCE_REQUEST_RATE, &instance, rate, Unit::CountPerSecond),
        datum(INSTANCE_STORED_BYTES, &instance, stored, Unit::Bytes),
        datum(INSTANCE_KEY_COUNT, &instance, now.keys as f64, Unit::Count),
        datum(
            INSTANCE_TRANSFER_BYTES,
            &instance,
            transfer as f64,
            Unit::Bytes,
        ),
    ]
}

/// Publishes `node`'s metrics under `namespace` every `interval` until
/// `cancel` fires.
pub async fn publish(
    node: Arc<Node>,
    aws: AwsClients,
    namespace: String,
    who: Publisher,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick completes at once: it takes the baseline sample.
    ticker.tick().await;
    let mut prev = Sample::take(&node);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = Sample::take(&node);
        let data = metric_data(&who, &prev, &now, SystemTime::now());
        prev = now;
        let sent = tokio::select! {
            _ = cancel.cancelled() => return,
            r = aws.put_metrics(&namespace, &data) => r,
        };
        match sent {
            Ok(()) => {
                if failing {
                    info!(namespace = %namespace, "publishing metrics again");
                }
                failing = false;
                debug!(namespace = %namespace, points = data.len(), "published metrics");
            }
            Err(e) if !failing => {
                warn!(namespace = %namespace, error = %e, "cannot publish metrics; will retry every interval");
                failing = true;
            }
            Err(e) => debug!(error = %e, "metrics still not published"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn data_names_dims_and_values() {
        let who = Publisher {
            group: "ring-asg".into(),
            instance_id: "i-0abc".into(),
        };
        let prev = Sample {
            at_ms: 10_000,
            requests: 100,
            bytes_in: 1_000,
            bytes_out: 500,
            stored_bytes: 0,
            keys: 0,
        };
        let now = Sample {
            at_ms: 20_000,
            requests: 350,
            bytes_in: 4_000,
            bytes_out: 1_500,
            stored_bytes: 7_000,
            keys: 12,
        };
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(20);
        let data = metric_data(&who, &prev, &now, at);
        let find = |name: &str| data.iter().find(|d| d.name == name).unwrap();

        let group_dims = vec![Dimension::new("AutoScalingGroupName", "ring-asg")];
        let inst_dims = vec![
            Dimension::new("AutoScalingGroupName", "ring-asg"),
            Dimension::new("InstanceId", "i-0abc"),
        ];
        let want = [
            ("NodeRequestRate", &group_dims, 25.0, Unit::CountPerSecond),
            ("NodeStoredBytes", &group_dims, 7_000.0, Unit::Bytes),
            (
                "InstanceRequestRate",
                &inst_dims,
                25.0,
                Unit::CountPerSecond,
            ),
            ("InstanceStoredBytes", &inst_dims, 7_000.0, Unit::Bytes),
            ("InstanceKeyCount", &inst_dims, 12.0, Unit::Count),
            ("InstanceTransferBytes", &inst_dims, 4_000.0, Unit::Bytes),
        ];
        assert_eq!(data.len(), want.len());
        for (name, dims, value, unit) in want {
            let d = find(name);
            assert_eq!(&d.dimensions, dims, "{name} dims");
            assert_eq!(d.value, value, "{name} value");
            assert_eq!(d.unit, unit, "{name} unit");
            assert_eq!(d.timestamp, Some(at), "{name} timestamp");
        }
    }

    #[test]
    fn counters_that_go_backwards_or_no_time_give_zero_rates() {
        let who = Publisher {
            group: "g".into(),
            instance_id: "i".into(),
        };
        let prev = Sample {
            at_ms: 5_000,
            requests: 10,
            bytes_in: 10,
            bytes_out: 10,
            ..Sample::default()
        };
        let same_time = Sample {
            requests: 20,
            ..prev
        };
        let data = metric_data(&who, &prev, &same_time, SystemTime::UNIX_EPOCH);
        assert_eq!(data[0].value, 0.0);
        let backwards = Sample {
            at_ms: 6_000,
            requests: 0,
            bytes_in: 0,
            bytes_out: 0,
            ..prev
        };
        let data = metric_data(&who, &prev, &backwards, SystemTime::UNIX_EPOCH);
        assert!(data.iter().all(|d| d.value == 0.0));
    }
}
