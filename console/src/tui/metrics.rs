//! The graphs' data source: a seam between "where the numbers come from"
//! and the graphs pane, which draws whatever [`Series`] it is given.
//!
//! [`LocalMetrics`] derives the series from the console's own ring
//! snapshots (request rate, stored bytes, node count), keeping a bounded
//! history. A cloud source (CloudWatch metrics of an Auto Scaling group)
//! implements the same trait; its `refresh` may call out, which is why the
//! trait is async and why the poller task, not the app, owns the source.

use std::collections::VecDeque;
use std::future::Future;

use anyhow::Result;

use super::model::{MetricSample, NodeState, RingSnapshot, Series, Unit};

/// Samples kept: ten minutes at one poll a second, then the oldest go.
pub const HISTORY_SAMPLES: usize = 600;

/// Produces the graphs' series.
pub trait MetricsSource: Send {
    /// Called after each poll with the fresh snapshot; returns the series
    /// to draw, oldest point first.
    fn refresh(
        &mut self,
        snapshot: &RingSnapshot,
    ) -> impl Future<Output = Result<Vec<Series>>> + Send;
}

/// Series computed from the console's own snapshots.
#[derive(Debug, Default)]
pub struct LocalMetrics {
    history: VecDeque<MetricSample>,
}

impl LocalMetrics {
    pub fn record(&mut self, snapshot: &RingSnapshot) {
        let serving: Vec<_> = snapshot
            .nodes
            .iter()
            .filter(|n| n.state != NodeState::Unreachable)
            .collect();
        let sample = MetricSample {
            at_ms: snapshot.taken_ms,
            nodes: serving.len(),
            requests_per_sec: serving.iter().map(|n| n.rates.requests).sum(),
            stored_bytes: serving.iter().map(|n| n.counters.bytes).sum(),
        };
        if self.history.len() == HISTORY_SAMPLES {
            self.history.pop_front();
        }
        self.history.push_back(sample);
    }

    pub fn series(&self) -> Vec<Series> {
        let pick = |f: fn(&MetricSample) -> f64| -> Vec<(u64, f64)> {
            self.history.iter().map(|s| (s.at_ms, f(s))).collect()
        };
        vec![
            Series {
                title: "requests".to_string(),
                unit: Unit::PerSecond,
                points: pick(|s| s.requests_per_sec),
            },
            Series {
                title: "stored".to_string(),
                unit: Unit::Bytes,
                points: pick(|s| s.stored_bytes as f64),
            },
            Series {
                title: "nodes".to_string(),
                unit: Unit::Count,
                points: pick(|s| s.nodes as f64),
            },
        ]
    }
}

impl MetricsSource for LocalMetrics {
    async fn refresh(&mut self, snapshot: &RingSnapshot) -> Result<Vec<Series>> {
        self.record(snapshot);
        Ok(self.series())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::tui::model::NodeView;
    use chord_node::chord::Id;

    #[tokio::test]
    async fn local_series_sum_the_reachable_nodes_and_stay_bounded() {
        let mut m = LocalMetrics::default();
        let mut a = NodeView::bare("a", Id::hash(b"a"), NodeState::Serving);
        a.counters.bytes = 100;
        a.rates.requests = 2.0;
        let mut b = NodeView::bare("b", Id::hash(b"b"), NodeState::Unreachable);
        b.counters.bytes = 50;
        let snap = RingSnapshot {
            taken_ms: 1000,
            nodes: vec![a, b],
            ..RingSnapshot::default()
        };
        let series = m.refresh(&snap).await.unwrap();
        assert_eq!(series[0].points, vec![(1000, 2.0)]);
        assert_eq!(series[1].points, vec![(1000, 100.0)]);
        assert_eq!(series[2].points, vec![(1000, 1.0)]);
        for _ in 0..HISTORY_SAMPLES + 5 {
            m.record(&snap);
        }
        assert_eq!(m.series()[0].points.len(), HISTORY_SAMPLES);
    }
}
