//! `aws status` and `aws watch`: one snapshot of the group (sizes, members
//! with lifecycle state and node address, whether each node answers and
//! what it stores), its recent scaling activities, and the nodes' CloudWatch
//! metrics as small text sparklines.
//!
//! Gathering ([`gather`]) and rendering ([`render_text`], [`status_json`])
//! are separate so the JSON keys (a contract for scripts) and the text can
//! be tested without AWS.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use chord_aws::{Activity, Dimension, GroupState, Series, SeriesQuery};
use serde_json::{json, Value};

use super::capacity::AsgCapacity;

/// Metric names the nodes publish (see chord-node's AWS mode).
pub const GROUP_METRICS: &[&str] = &["NodeRequestRate", "NodeStoredBytes"];
pub const INSTANCE_METRICS: &[&str] = &[
    "InstanceRequestRate",
    "InstanceStoredBytes",
    "InstanceKeyCount",
    "InstanceTransferBytes",
];

/// How far back the graphs reach: long enough to see a scaling episode.
pub const METRIC_WINDOW: Duration = Duration::from_secs(30 * 60);
/// CloudWatch's standard resolution.
pub const METRIC_PERIOD_SECS: u32 = 60;
/// The span the graphs read: [`METRIC_WINDOW`] back from now, and one period
/// ahead. The end bound is exclusive and taken to the whole second, so a
/// window ending at "now" misses the points stamped in the current second,
/// which right after a burst of load can be every point there is.
pub fn metric_window() -> (SystemTime, SystemTime) {
    let now = SystemTime::now();
    (
        now - METRIC_WINDOW,
        now + Duration::from_secs(METRIC_PERIOD_SECS.into()),
    )
}
/// How many scaling activities to show.
pub const ACTIVITIES_SHOWN: usize = 8;

/// What one node says about itself, when it answers.
#[derive(Clone, Debug, Default)]
pub struct NodeView {
    pub answers: bool,
    /// `joining`, `serving` or `leaving`, as the node reports itself.
    pub state: Option<&'static str>,
    pub chunks: u64,
    pub manifests: u64,
    pub bytes: u64,
}

/// Everything `aws status` shows.
#[derive(Clone, Debug)]
pub struct AwsStatus {
    pub group: GroupState,
    /// One per `group.instances`, same order.
    pub nodes: Vec<(Option<String>, NodeView)>,
    pub activities: Vec<Activity>,
    pub namespace: String,
    pub series: Vec<(String, Series)>,
    /// Why metrics or activities are missing, when a call failed (the rest
    /// of the status is still worth showing).
    pub warnings: Vec<String>,
}

/// Reads the group, asks every node, and reads the metrics.
pub async fn gather(cap: &AsgCapacity, namespace: &str) -> Result<AwsStatus> {
    let group = cap.group_state().await?;
    let mut warnings = Vec::new();
    let asks = group.instances.iter().map(|i| {
        let addr = cap.node_addr(i).filter(|_| i.running);
        async move {
            let mut view = NodeView::default();
            if let Some(a) = &addr {
                let (info, stats) =
                    futures::join!(cap.peers().get_info(a), cap.peers().get_stats(a));
                if let Ok(stats) = stats {
                    view = NodeView {
                        answers: true,
                        state: info.ok().map(|i| i.state.as_str()),
                        chunks: stats.chunks,
                        manifests: stats.manifests,
                        bytes: stats.bytes,
                    };
                }
            }
            (addr, view)
        }
    });
    let nodes = futures::future::join_all(asks).await;
    let activities = match cap
        .aws()
        .recent_activities(&group.name, ACTIVITIES_SHOWN)
        .await
    {
        Ok(a) => a,
        Err(e) => {
            warnings.push(format!("scaling activities: {e}"));
            Vec::new()
        }
    };
    let queries = metric_queries(&group);
    let (start, end) = metric_window();
    let series = match cap.aws().get_series(namespace, &queries, start, end).await {
        Ok(series) => series
            .into_iter()
            .zip(queries.iter().map(|q| q.stat.clone()))
            .map(|(s, stat)| (stat, s))
            .collect(),
        Err(e) => {
            warnings.push(format!("metrics: {e}"));
            Vec::new()
        }
    };
    Ok(AwsStatus {
        group,
        nodes,
        activities,
        namespace: namespace.to_string(),
        series,
        warnings,
    })
}

/// The series `aws status` graphs: the group-level metrics, then each
/// running instance's.
pub fn metric_queries(group: &GroupState) -> Vec<SeriesQuery> {
    let by_group = Dimension::new("AutoScalingGroupName", &group.name);
    let mut queries: Vec<SeriesQuery> = GROUP_METRICS
        .iter()
        .map(|m| SeriesQuery {
            name: m.to_string(),
            dimensions: vec![by_group.clone()],
            stat: "Average".to_string(),
            period_secs: METRIC_PERIOD_SECS,
        })
        .collect();
    for i in group.instances.iter().filter(|i| i.running) {
        for m in INSTANCE_METRICS {
            queries.push(SeriesQuery {
                name: m.to_string(),
                dimensions: vec![by_group.clone(), Dimension::new("InstanceId", &i.id)],
                stat: "Average".to_string(),
                period_secs: METRIC_PERIOD_SECS,
            });
        }
    }
    queries
}

/// Eight levels of block characters, lowest first.
const SPARKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// A text sparkline of `values`, scaled between their min and max (a flat
/// series draws at the lowest level; an empty one as `-`).
pub fn sparkline(values: &[f64]) -> String {
    if values.is_empty() {
        return "-".to_string();
    }
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let span = hi - lo;
    values
        .iter()
        .map(|v| {
            if span <= 0.0 || !span.is_finite() {
                return SPARKS[0];
            }
            let level = ((v - lo) / span * (SPARKS.len() - 1) as f64).round() as usize;
            SPARKS[level.min(SPARKS.len() - 1)]
        })
        .collect()
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn ago(t: Option<SystemTime>) -> String {
    match t.and_then(|t| SystemTime::now().duration_since(t).ok()) {
        Some(d) if d.as_secs() < 120 => format!("{:>4} s ago", d.as_secs()),
        Some(d) => format!("{:>3} min ago", d.as_secs() / 60),
        None => "      -".to_string(),
    }
}

fn dims_json(dims: &[Dimension]) -> Value {
    dims.iter()
        .map(|d| (d.name.clone(), Value::String(d.value.clone())))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The `aws status --json` document; its keys are a contract.
pub fn status_json(s: &AwsStatus) -> Value {
    let instances: Vec<Value> = s
        .group
        .instances
        .iter()
        .zip(&s.nodes)
        .map(|(i, (addr, node))| {
            json!({
                "id": i.id, "lifecycle_state": i.lifecycle_state.as_str(), "health": i.health,
                "running": i.running, "private_ip": i.private_ip, "addr": addr,
                "node": { "answers": node.answers, "state": node.state, "chunks": node.chunks,
                          "manifests": node.manifests, "bytes": node.bytes },
            })
        })
        .collect();
    let activities: Vec<Value> = s
        .activities
        .iter()
        .map(|a| {
            json!({
                "id": a.id, "status": a.status, "description": a.description, "cause": a.cause,
                "start": a.start.map(unix_secs), "end": a.end.map(unix_secs),
            })
        })
        .collect();
    let metrics: Vec<Value> = s
        .series
        .iter()
        .map(|(stat, series)| {
            json!({
                "metric": series.name, "dimensions": dims_json(&series.dimensions), "stat": stat,
                "timestamps": series.points.iter().map(|(t, _)| unix_secs(*t)).collect::<Vec<_>>(),
                "values": series.points.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "group": s.group.name, "desired": s.group.desired, "min": s.group.min, "max": s.group.max,
        "instances": instances, "activities": activities,
        "namespace": s.namespace, "metrics": metrics, "warnings": s.warnings,
    })
}

/// The human form of [`AwsStatus`].
pub fn render_text(s: &AwsStatus) -> String {
    let mut out = String::new();
    let g = &s.group;
    let serving = g
        .instances
        .iter()
        .filter(|i| i.lifecycle_state == chord_aws::LifecycleState::InService)
        .count();
    out.push_str(&format!(
        "group {}: desired {} (min {}, max {}), {serving} in service\n",
        g.name, g.desired, g.min, g.max
    ));
    out.push_str(&format!(
        "{:<21} {:<20} {:<9} {:<22} {:<8} {:>7} {:>14}\n",
        "instance", "lifecycle", "health", "node", "state", "chunks", "bytes"
    ));
    for (i, (addr, node)) in g.instances.iter().zip(&s.nodes) {
        out.push_str(&format!(
            "{:<21} {:<20} {:<9} {:<22} {:<8} {:>7} {:>14}\n",
            i.id,
            i.lifecycle_state.as_str(),
            i.health,
            addr.as_deref().unwrap_or("-"),
            match (node.answers, node.state) {
                (false, _) => "silent",
                (true, Some(state)) => state,
                (true, None) => "?",
            },
            node.chunks,
            node.bytes
        ));
    }
    out.push_str("recent scaling activities:\n");
    if s.activities.is_empty() {
        out.push_str("  (none)\n");
    }
    for a in &s.activities {
        out.push_str(&format!(
            "  {}  {:<12} {}\n",
            ago(a.start),
            a.status,
            a.description
        ));
    }
    out.push_str(&format!(
        "metrics ({}, last {} min, {} s periods):\n",
        s.namespace,
        METRIC_WINDOW.as_secs() / 60,
        METRIC_PERIOD_SECS
    ));
    for (stat, series) in &s.series {
        let who = series
            .dimensions
            .iter()
            .find(|d| d.name == "InstanceId")
            .map_or_else(|| "group".to_string(), |d| d.value.clone());
        let values: Vec<f64> = series.points.iter().map(|(_, v)| *v).collect();
        let last = values
            .last()
            .map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
        out.push_str(&format!(
            "  {:<21} {:<22} {:<7} {:<30} last {last}\n",
            who,
            series.name,
            stat,
            sparkline(&values)
        ));
    }
    for w in &s.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chord_aws::{Instance, LifecycleState};

    #[test]
    fn sparkline_scales_between_min_and_max() {
        assert_eq!(sparkline(&[]), "-");
        assert_eq!(sparkline(&[5.0, 5.0]), "▁▁");
        assert_eq!(sparkline(&[0.0, 7.0]), "▁█");
        assert_eq!(
            sparkline(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]),
            "▁▂▃▄▅▆▇█"
        );
    }

    fn fixture() -> AwsStatus {
        let instance = |id: &str, state: &str| Instance {
            id: id.into(),
            lifecycle_state: LifecycleState::parse(state),
            health: "Healthy".into(),
            private_ip: Some("10.0.0.5".into()),
            tag_addr: None,
            running: true,
        };
        let group = GroupState {
            name: "ring".into(),
            desired: 2,
            min: 1,
            max: 4,
            instances: vec![instance("i-1", "InService"), instance("i-2", "Pending")],
        };
        let series = Series {
            name: "NodeRequestRate".into(),
            dimensions: vec![Dimension::new("AutoScalingGroupName", "ring")],
            points: vec![(UNIX_EPOCH + Duration::from_secs(60), 1.5)],
        };
        AwsStatus {
            nodes: vec![
                (
                    Some("10.0.0.5:5057".into()),
                    NodeView {
                        answers: true,
                        state: Some("serving"),
                        chunks: 3,
                        manifests: 1,
                        bytes: 100,
                    },
                ),
                (None, NodeView::default()),
            ],
            group,
            activities: Vec::new(),
            namespace: "ChordDFS".into(),
            series: vec![("Average".into(), series)],
            warnings: Vec::new(),
        }
    }

    #[test]
    fn status_json_keeps_its_keys() {
        let doc = status_json(&fixture());
        assert_eq!(doc["group"], "ring");
        assert_eq!(doc["desired"], 2);
        assert_eq!(doc["instances"][0]["lifecycle_state"], "InService");
        assert_eq!(doc["instances"][0]["addr"], "10.0.0.5:5057");
        assert_eq!(doc["instances"][0]["node"]["chunks"], 3);
        assert_eq!(doc["instances"][1]["node"]["answers"], false);
        assert_eq!(doc["instances"][0]["node"]["state"], "serving");
        assert_eq!(doc["metrics"][0]["metric"], "NodeRequestRate");
        assert_eq!(
            doc["metrics"][0]["dimensions"]["AutoScalingGroupName"],
            "ring"
        );
        assert_eq!(doc["metrics"][0]["values"][0], 1.5);
        assert_eq!(doc["metrics"][0]["timestamps"][0], 60.0);
    }

    #[test]
    fn text_shows_sizes_members_and_graphs() {
        let text = render_text(&fixture());
        assert!(
            text.contains("desired 2 (min 1, max 4), 1 in service"),
            "{text}"
        );
        assert!(text.contains("i-2"), "{text}");
        assert!(text.contains("10.0.0.5:5057"), "{text}");
        assert!(text.contains("serving"), "{text}");
        assert!(text.contains("silent"), "{text}");
        assert!(text.contains("NodeRequestRate"), "{text}");
        assert!(text.contains("last 1.5"), "{text}");
    }

    #[test]
    fn queries_cover_the_group_and_each_running_instance() {
        let f = fixture();
        let q = metric_queries(&f.group);
        assert_eq!(q.len(), GROUP_METRICS.len() + 2 * INSTANCE_METRICS.len());
        assert_eq!(q[0].dimensions.len(), 1);
        assert!(q
            .last()
            .unwrap()
            .dimensions
            .iter()
            .any(|d| d.value == "i-2"));
    }
}
