//! The Auto Scaling group a test runs on, created in moto the way the
//! CloudFormation stack creates it on AWS: a launch template, the group, and
//! the terminating lifecycle hook (which moto records but never fires).
//!
//! Invariant: the group's subnet is `127.0.0.0/24` inside a `127.0.0.0/16`
//! VPC, so every private IP moto hands out is a loopback address. A node
//! that dials an instance by its private IP (one the stand-in has not
//! tagged yet) therefore still only ever talks to 127.0.0.0/8.

use anyhow::{bail, Context, Result};
use aws_config::SdkConfig;
use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
use aws_sdk_ec2::types::{InstanceType, RequestLaunchTemplateData};

use super::moto::REGION;

/// The terminating lifecycle hook's name (the node's `--lifecycle-hook`
/// default).
pub const LIFECYCLE_HOOK: &str = "chord-drain";

/// The hook's heartbeat timeout, as the stack sets it (seconds).
const HOOK_HEARTBEAT_SECS: i32 = 300;

/// The loopback VPC and subnet (see the module doc).
const VPC_CIDR: &str = "127.0.0.0/16";
const SUBNET_CIDR: &str = "127.0.0.0/24";

/// Sizes of a test group.
#[derive(Clone, Debug)]
pub struct GroupSpec {
    pub name: String,
    pub min: i32,
    pub max: i32,
    pub desired: i32,
}

impl GroupSpec {
    pub fn new(name: &str, min: i32, max: i32, desired: i32) -> GroupSpec {
        GroupSpec {
            name: name.to_string(),
            min,
            max,
            desired,
        }
    }
}

/// Creates the group (and its VPC, subnet, launch template and hook).
/// moto launches `desired` instances at once, as AWS would.
pub async fn create_group(config: &SdkConfig, spec: &GroupSpec) -> Result<()> {
    let ec2 = aws_sdk_ec2::Client::new(config);
    let asg = aws_sdk_autoscaling::Client::new(config);

    // Any image moto ships will do; nothing boots it.
    let images = ec2
        .describe_images()
        .owners("amazon")
        .send()
        .await
        .context("DescribeImages")?;
    let Some(image) = images.images().iter().find_map(|i| i.image_id()) else {
        bail!("moto lists no images");
    };

    let vpc = ec2
        .create_vpc()
        .cidr_block(VPC_CIDR)
        .send()
        .await
        .context("CreateVpc")?;
    let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).context("no VPC id")?;
    let subnet = ec2
        .create_subnet()
        .vpc_id(vpc_id)
        .cidr_block(SUBNET_CIDR)
        .availability_zone(format!("{REGION}a"))
        .send()
        .await
        .context("CreateSubnet")?;
    let subnet_id = subnet
        .subnet()
        .and_then(|s| s.subnet_id())
        .context("no subnet id")?;

    let template = format!("{}-template", spec.name);
    ec2.create_launch_template()
        .launch_template_name(&template)
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id(image)
                .instance_type(InstanceType::T3Micro)
                .build(),
        )
        .send()
        .await
        .context("CreateLaunchTemplate")?;

    asg.create_auto_scaling_group()
        .auto_scaling_group_name(&spec.name)
        .launch_template(
            LaunchTemplateSpecification::builder()
                .launch_template_name(&template)
                .version("$Latest")
                .build(),
        )
        .min_size(spec.min)
        .max_size(spec.max)
        .desired_capacity(spec.desired)
        .vpc_zone_identifier(subnet_id)
        .send()
        .await
        .context("CreateAutoScalingGroup")?;

    asg.put_lifecycle_hook()
        .auto_scaling_group_name(&spec.name)
        .lifecycle_hook_name(LIFECYCLE_HOOK)
        .lifecycle_transition("autoscaling:EC2_INSTANCE_TERMINATING")
        .heartbeat_timeout(HOOK_HEARTBEAT_SECS)
        .default_result("ABANDON")
        .send()
        .await
        .context("PutLifecycleHook")?;
    Ok(())
}

/// The group's desired capacity and its members with their lifecycle states.
pub async fn describe(config: &SdkConfig, group: &str) -> Result<(i32, Vec<(String, String)>)> {
    let asg = aws_sdk_autoscaling::Client::new(config);
    let out = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(group)
        .send()
        .await
        .context("DescribeAutoScalingGroups")?;
    let Some(g) = out.auto_scaling_groups().first() else {
        bail!("no group {group}");
    };
    let members = g
        .instances()
        .iter()
        .filter_map(|i| {
            Some((
                i.instance_id()?.to_string(),
                i.lifecycle_state()?.as_str().to_string(),
            ))
        })
        .collect();
    Ok((g.desired_capacity().unwrap_or(0), members))
}
