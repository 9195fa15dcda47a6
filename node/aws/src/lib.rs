//! chord-aws: every call chord-dfs makes to AWS, behind small project types.
//!
//! The node (AWS mode) and the console both use this crate; it does not
//! depend on `chord-node`, so everyday node edits never recompile the heavy
//! AWS SDK. Modules:
//! - [`imds`]: the instance metadata service (IMDSv2): who am I, where.
//! - [`group`]: the Auto Scaling group's instances, with EC2 addresses and the
//!   `chord:addr` tag that discovery prefers.
//! - [`capacity`]: the group's sizes, desired-capacity changes, terminate with
//!   decrement, recent scaling activities.
//! - [`metrics`]: CloudWatch `PutMetricData` (chunked) and `GetMetricData`.
//! - [`lifecycle`]: the terminating hook: target state, heartbeat, complete.
//!
//! Endpoints: the SDK honours `AWS_ENDPOINT_URL` (all services) and IMDS takes
//! an explicit endpoint, so tests point everything at a local emulator (moto)
//! and an IMDS fake on 127.0.0.1.
//!
//! CloudWatch protocol: `aws-sdk-cloudwatch` is pinned to `=1.99.0`, the last
//! release that speaks the AWS Query protocol. From 1.100.0 on it speaks Smithy
//! RPC v2 CBOR, which moto 5.x does not understand; real CloudWatch accepts
//! both, so the pin costs nothing in production and lets the real SDK be
//! tested end to end without a protocol adapter in the tests.
//!
//! Every SDK call is bounded by [`OPERATION_TIMEOUT`]; errors name the call
//! that failed ([`Error`]).

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};

pub mod capacity;
mod error;
pub mod group;
pub mod imds;
pub mod lifecycle;
pub mod metrics;

pub use capacity::{Activity, GroupState};
pub use error::{Error, Result};
pub use group::{Instance, LifecycleState};
pub use imds::{Identity, Imds};
pub use lifecycle::{LifecycleAction, LifecycleResult};
pub use metrics::{Datum, Dimension, Series, SeriesQuery, Unit};

/// EC2 tag naming the node's gRPC `host:port` when it is not
/// `<private ip>:<port>` (tests point it at a loopback address).
pub const ADDR_TAG: &str = "chord:addr";

/// Upper bound of one SDK operation, retries included: long enough for the
/// SDK's three attempts with backoff, short enough that a stuck endpoint
/// never stalls a node's loop or the console for long.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound of one attempt: AWS control-plane calls answer in well under
/// a second; ten covers a slow region without hiding a dead endpoint.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP connect bound: an endpoint that does not accept within this is down.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The three service clients, built from one shared SDK configuration.
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub autoscaling: aws_sdk_autoscaling::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    region: Option<String>,
}

impl AwsClients {
    /// Loads the SDK configuration the usual way (environment, profile, instance
    /// role), with `region` overriding the environment's when given.
    /// `AWS_ENDPOINT_URL` redirects every service (the tests' moto server).
    pub async fn from_env(region: Option<String>) -> AwsClients {
        let timeouts = TimeoutConfig::builder()
            .operation_timeout(OPERATION_TIMEOUT)
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts);
        if let Some(r) = &region {
            loader = loader.region(Region::new(r.clone()));
        }
        let config = loader.load().await;
        let region = config.region().map(|r| r.to_string());
        AwsClients {
            autoscaling: aws_sdk_autoscaling::Client::new(&config),
            ec2: aws_sdk_ec2::Client::new(&config),
            cloudwatch: aws_sdk_cloudwatch::Client::new(&config),
            region,
        }
    }

    /// The region the clients talk to, if one was configured anywhere.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }
}
