//! CloudWatch: publishing data points (`PutMetricData`) and reading series
//! back (`GetMetricData`), in the project's own types.
//!
//! Protocol: `aws-sdk-cloudwatch` is pinned to `=1.99.0`, the last release
//! that speaks the AWS Query protocol. 1.100.0 switched to Smithy RPC v2 CBOR,
//! which the moto emulator the tests run against does not speak. CloudWatch
//! itself serves both, so the pin changes nothing in production; moving past
//! it needs moto to learn CBOR (or an adapter in the tests).
//!
//! Limits: one `PutMetricData` carries at most [`MAX_DATUMS_PER_PUT`] data
//! points; one `GetMetricData` at most [`MAX_QUERIES_PER_GET`] queries. Both
//! calls split larger inputs.

use std::collections::HashMap;
use std::time::SystemTime;

use aws_sdk_cloudwatch::types::{
    Dimension as CwDimension, Metric, MetricDataQuery, MetricDatum, MetricStat, ScanBy,
    StandardUnit,
};
use aws_smithy_types::DateTime;

use crate::error::{Error, Result};
use crate::AwsClients;

/// CloudWatch's cap on data points per `PutMetricData` request.
pub const MAX_DATUMS_PER_PUT: usize = 1000;
/// CloudWatch's cap on queries per `GetMetricData` request.
pub const MAX_QUERIES_PER_GET: usize = 500;

/// One dimension (name = value) of a metric.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Dimension {
    pub name: String,
    pub value: String,
}

impl Dimension {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Dimension {
        Dimension {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// The units chord-dfs publishes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Count,
    CountPerSecond,
    Bytes,
    BytesPerSecond,
    None,
}

impl Unit {
    fn standard(self) -> StandardUnit {
        match self {
            Unit::Count => StandardUnit::Count,
            Unit::CountPerSecond => StandardUnit::CountSecond,
            Unit::Bytes => StandardUnit::Bytes,
            Unit::BytesPerSecond => StandardUnit::BytesSecond,
            Unit::None => StandardUnit::None,
        }
    }
}

/// One data point to publish.
#[derive(Clone, Debug, PartialEq)]
pub struct Datum {
    pub name: String,
    pub dimensions: Vec<Dimension>,
    pub value: f64,
    pub unit: Unit,
    /// When it was measured; `None` lets CloudWatch stamp it on receipt.
    pub timestamp: Option<SystemTime>,
}

/// One series to read: a metric (name + exact dimensions) and a statistic
/// (`Average`, `Sum`, `Maximum`, ...) over periods of `period_secs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesQuery {
    pub name: String,
    pub dimensions: Vec<Dimension>,
    pub stat: String,
    /// A multiple of 60 (CloudWatch's standard resolution).
    pub period_secs: u32,
}

/// The points of one [`SeriesQuery`], oldest first.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub dimensions: Vec<Dimension>,
    pub points: Vec<(SystemTime, f64)>,
}

fn cw_dimensions(dims: &[Dimension]) -> Vec<CwDimension> {
    dims.iter()
        .map(|d| CwDimension::builder().name(&d.name).value(&d.value).build())
        .collect()
}

fn cw_datum(d: &Datum) -> MetricDatum {
    MetricDatum::builder()
        .metric_name(&d.name)
        .set_dimensions(Some(cw_dimensions(&d.dimensions)))
        .value(d.value)
        .unit(d.unit.standard())
        .set_timestamp(d.timestamp.map(DateTime::from))
        .build()
}

impl AwsClients {
    /// Publishes `data` under `namespace`, [`MAX_DATUMS_PER_PUT`] per request.
    /// Stops at the first failed request (earlier chunks stay published).
    pub async fn put_metrics(&self, namespace: &str, data: &[Datum]) -> Result<()> {
        const CALL: &str = "PutMetricData";
        if namespace.is_empty() {
            return Err(Error::invalid("metrics namespace", "empty"));
        }
        for chunk in data.chunks(MAX_DATUMS_PER_PUT) {
            self.cloudwatch
                .put_metric_data()
                .namespace(namespace)
                .set_metric_data(Some(chunk.iter().map(cw_datum).collect()))
                .send()
                .await
                .map_err(|e| Error::api(CALL, e))?;
        }
        Ok(())
    }

    /// Reads each of `queries` under `namespace` between `start` and `end`;
    /// the answer holds one [`Series`] per query, in the same order.
    pub async fn get_series(
        &self,
        namespace: &str,
        queries: &[SeriesQuery],
        start: SystemTime,
        end: SystemTime,
    ) -> Result<Vec<Series>> {
        const CALL: &str = "GetMetricData";
        let mut all = Vec::with_capacity(queries.len());
        for (batch_no, batch) in queries.chunks(MAX_QUERIES_PER_GET).enumerate() {
            let base = batch_no * MAX_QUERIES_PER_GET;
            let cw_queries: Vec<MetricDataQuery> = batch
                .iter()
                .enumerate()
                .map(|(i, q)| {
                    let metric = Metric::builder()
                        .namespace(namespace)
                        .metric_name(&q.name)
                        .set_dimensions(Some(cw_dimensions(&q.dimensions)))
                        .build();
                    MetricDataQuery::builder()
                        // Ids must start with a lower-case letter.
                        .id(format!("q{}", base + i))
                        .metric_stat(
                            MetricStat::builder()
                                .metric(metric)
                                .period(q.period_secs.max(1) as i32)
                                .stat(&q.stat)
                                .build(),
                        )
                        .return_data(true)
                        .build()
                })
                .collect();
            let mut points: HashMap<String, Vec<(SystemTime, f64)>> = HashMap::new();
            let mut token: Option<String> = None;
            loop {
                let out = self
                    .cloudwatch
                    .get_metric_data()
                    .set_metric_data_queries(Some(cw_queries.clone()))
                    .start_time(DateTime::from(start))
                    .end_time(DateTime::from(end))
                    .scan_by(ScanBy::TimestampAscending)
                    .set_next_token(token.take())
                    .send()
                    .await
                    .map_err(|e| Error::api(CALL, e))?;
                for r in out.metric_data_results() {
                    let Some(id) = r.id() else { continue };
                    let entry = points.entry(id.to_owned()).or_default();
                    for (t, v) in r.timestamps().iter().zip(r.values()) {
                        if let Ok(t) = SystemTime::try_from(*t) {
                            entry.push((t, *v));
                        }
                    }
                }
                match out.next_token() {
                    Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                    _ => break,
                }
            }
            for (i, q) in batch.iter().enumerate() {
                let mut pts = points.remove(&format!("q{}", base + i)).unwrap_or_default();
                pts.sort_by_key(|p| p.0);
                all.push(Series {
                    name: q.name.clone(),
                    dimensions: q.dimensions.clone(),
                    points: pts,
                });
            }
        }
        Ok(all)
    }
}
