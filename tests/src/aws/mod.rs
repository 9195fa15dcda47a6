//! The AWS emulator harness: the real AWS SDK against moto on 127.0.0.1,
//! with small stand-ins for what moto does not do.
//!
//! - [`Moto`]: the moto server, and the SDK settings that point at it.
//! - [`group`]: the Auto Scaling group as the stack creates it.
//! - [`FakeImds`]: one instance's metadata service (no emulator has one).
//! - [`Ec2StandIn`]: EC2 itself: one real `chord-node` per running instance,
//!   and the lifecycle Wait state moto lacks.
//!
//! Nothing here may reach AWS: every endpoint is a loopback address, and the
//! group's VPC is `127.0.0.0/16`, so even instance private IPs are loopback.

pub mod group;
pub mod imds;
pub mod moto;
pub mod standin;

pub use group::{create_group, GroupSpec, LIFECYCLE_HOOK};
pub use imds::FakeImds;
pub use moto::Moto;
pub use standin::{Ec2StandIn, ExitedNode, StandInOptions, ADDR_TAG};
