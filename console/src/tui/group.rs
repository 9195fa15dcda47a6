//! The TUI on an Auto Scaling group (`chord-console --asg NAME`): the
//! group behind the capacity keys, and CloudWatch behind the graphs.
//!
//! - [`GroupSide`] puts [`AsgCapacity`] behind the actor's [`Side`]: `+`
//!   raises the desired capacity, `-` and `l` are drain-then-terminate, and
//!   the poller's seeds are the group's node addresses. `x` stays a local
//!   fleet's key: an instance is never killed from here.
//! - [`CloudMetrics`] draws the nodes' CloudWatch metrics (the same numbers
//!   the group's scaling policy tracks). A background task reads them every
//!   [`CLOUD_REFRESH`]; the poller only reads the latest answer, so a slow
//!   or failing CloudWatch never delays a poll. Until the first answer, and
//!   for the node count, the graphs use the console's own snapshots.

use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result};
use chord_aws::{AwsClients, Dimension, SeriesQuery};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::metrics::{LocalMetrics, MetricsSource};
use super::model::{RingSnapshot, Series, Unit};
use super::worker::Side;
use crate::aws::capacity::AsgCapacity;
use crate::aws::status::{metric_window, METRIC_PERIOD_SECS};
use crate::capacity::{Capacity, CapacityState, Member, MemberState, Removal};

/// How often the graphs re-read CloudWatch: the metrics have one-minute
/// resolution, so more often only costs API calls.
pub const CLOUD_REFRESH: Duration = Duration::from_secs(30);

/// An Auto Scaling group as the TUI's capacity side.
#[derive(Debug)]
pub struct GroupSide {
    cap: AsgCapacity,
    /// The members at the last `describe`, for seeds and `l`'s address.
    members: Vec<Member>,
}

impl GroupSide {
    pub fn new(cap: AsgCapacity) -> GroupSide {
        GroupSide {
            cap,
            members: Vec::new(),
        }
    }
}

impl Capacity for GroupSide {
    async fn describe(&mut self) -> Result<CapacityState> {
        let state = self.cap.describe().await?;
        self.members = state.members.clone();
        Ok(state)
    }

    async fn add(&mut self) -> Result<Member> {
        self.cap.add().await
    }

    async fn remove(&mut self, which: Option<&str>) -> Result<Removal> {
        self.cap.remove(which).await
    }
}

impl Side for GroupSide {
    /// In-service members only: a pending instance may not have its node's
    /// address yet, and the ring names a new node once it has joined.
    fn seeds(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.state == MemberState::InService)
            .filter_map(|m| m.addr.clone())
            .collect()
    }

    fn member_at(&self, addr: &str) -> Option<String> {
        self.members
            .iter()
            .find(|m| m.addr.as_deref() == Some(addr))
            .map(|m| m.id.clone())
    }

    async fn kill(&mut self, addr: &str) -> Result<()> {
        anyhow::bail!("{addr} runs on an instance of the group: x kills only local fleet nodes")
    }

    async fn shutdown(self) {}
}

/// The group-level metrics the graphs show, with their titles (short, to
/// fit a graph's title at 80 columns) and units.
const CLOUD_SERIES: [(&str, &str, Unit); 2] = [
    ("NodeRequestRate", "CW requests/node", Unit::PerSecond),
    ("NodeStoredBytes", "CW stored/node", Unit::Bytes),
];

/// The graphs' source on a group: CloudWatch for load, snapshots for the
/// node count.
#[derive(Debug)]
pub struct CloudMetrics {
    local: LocalMetrics,
    latest: Arc<Mutex<Option<Vec<Series>>>>,
    stop: CancellationToken,
}

impl CloudMetrics {
    /// Starts the background reader of `group`'s metrics under `namespace`;
    /// it stops when this is dropped.
    pub fn start(aws: AwsClients, group: String, namespace: String) -> CloudMetrics {
        let latest = Arc::new(Mutex::new(None));
        let stop = CancellationToken::new();
        tokio::spawn(read_cloud(
            aws,
            group,
            namespace,
            latest.clone(),
            stop.clone(),
        ));
        CloudMetrics {
            local: LocalMetrics::default(),
            latest,
            stop,
        }
    }
}

impl Drop for CloudMetrics {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl MetricsSource for CloudMetrics {
    async fn refresh(&mut self, snapshot: &RingSnapshot) -> Result<Vec<Series>> {
        self.local.record(snapshot);
        let local = self.local.series();
        let cloud = self.latest.lock().ok().and_then(|l| l.clone());
        Ok(match cloud {
            // CloudWatch's load graphs, then the node count as seen here.
            Some(mut series) => {
                series.extend(local.into_iter().filter(|s| s.unit == Unit::Count));
                series
            }
            None => local,
        })
    }
}

async fn read_cloud(
    aws: AwsClients,
    group: String,
    namespace: String,
    latest: Arc<Mutex<Option<Vec<Series>>>>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(CLOUD_REFRESH);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match read_once(&aws, &group, &namespace).await {
            Ok(series) => {
                if let Ok(mut l) = latest.lock() {
                    *l = Some(series);
                }
            }
            Err(e) => debug!(error = %format!("{e:#}"), "cannot read CloudWatch"),
        }
    }
}

async fn read_once(aws: &AwsClients, group: &str, namespace: &str) -> Result<Vec<Series>> {
    let queries = group_queries(group);
    let (start, end) = metric_window();
    let answers = aws
        .get_series(namespace, &queries, start, end)
        .await
        .context("GetMetricData")?;
    Ok(cloud_series(answers))
}

/// The group-level queries behind [`CLOUD_SERIES`].
fn group_queries(group: &str) -> Vec<SeriesQuery> {
    CLOUD_SERIES
        .iter()
        .map(|(metric, _, _)| SeriesQuery {
            name: metric.to_string(),
            dimensions: vec![Dimension::new("AutoScalingGroupName", group)],
            stat: "Average".to_string(),
            period_secs: METRIC_PERIOD_SECS,
        })
        .collect()
}

/// CloudWatch's answers (one per [`CLOUD_SERIES`] entry, in order) as the
/// graphs' series.
fn cloud_series(answers: Vec<chord_aws::Series>) -> Vec<Series> {
    answers
        .into_iter()
        .zip(CLOUD_SERIES)
        .map(|(answer, (_, title, unit))| Series {
            title: title.to_string(),
            unit,
            points: answer
                .points
                .into_iter()
                .filter_map(|(t, v)| {
                    let ms = t.duration_since(UNIX_EPOCH).ok()?.as_millis();
                    Some((u64::try_from(ms).ok()?, v))
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn cloudwatch_answers_become_titled_series_in_milliseconds() {
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        let answer = |name: &str, pts: Vec<(SystemTime, f64)>| chord_aws::Series {
            name: name.to_string(),
            dimensions: vec![Dimension::new("AutoScalingGroupName", "g")],
            points: pts,
        };
        let series = cloud_series(vec![
            answer("NodeRequestRate", vec![(at(60), 12.5), (at(120), 40.0)]),
            answer("NodeStoredBytes", vec![(at(60), 1024.0)]),
        ]);
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].title, "CW requests/node");
        assert_eq!(series[0].unit, Unit::PerSecond);
        assert_eq!(series[0].points, vec![(60_000, 12.5), (120_000, 40.0)]);
        assert_eq!(series[1].unit, Unit::Bytes);
        assert_eq!(series[1].points, vec![(60_000, 1024.0)]);
        let queries = group_queries("g");
        assert_eq!(queries[0].name, "NodeRequestRate");
        assert_eq!(queries[1].name, "NodeStoredBytes");
        assert!(queries
            .iter()
            .all(|q| q.dimensions == vec![Dimension::new("AutoScalingGroupName", "g")]));
    }
}
