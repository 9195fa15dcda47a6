//! AWS mode's I/O: who this instance is (IMDS), which group it is in, what the
//! group's members answer, and the loops built on that: finding the ring at
//! boot ([`find_bootstrap`]) and going back to the others when the node finds
//! itself alone ([`watch_alone`]). The decisions are the pure rules of
//! [`super`]; this module only gathers their inputs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chord_aws::{AwsClients, Identity, Imds, Instance, LifecycleState};
use futures::future::join_all;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Bootstrap, Member, MemberState};
use crate::node::Node;
use crate::peer::{NodeState, PeerPool};

/// Pause between two looks at the group while another instance is expected
/// to create the ring: a node boots in seconds, so this keeps the wait short
/// without hammering the Auto Scaling API.
pub const BOOTSTRAP_RETRY_INTERVAL: Duration = Duration::from_secs(2);
/// Default period of the alone check: being alone is rare (a partition or a
/// lost race at boot), so once in half a minute is prompt enough.
pub const DEFAULT_REJOIN_CHECK_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Aws(#[from] chord_aws::Error),
    #[error("instance {0} is not in an Auto Scaling group")]
    NotInGroup(String),
    #[error(
        "no ring to join in group {group} within {waited:?}: waiting for {creator} to create it"
    )]
    NoRing {
        group: String,
        creator: String,
        waited: Duration,
    },
}

/// This instance and its AWS clients.
#[derive(Clone, Debug)]
pub struct AwsContext {
    pub clients: AwsClients,
    pub imds: Imds,
    pub identity: Identity,
    pub group: String,
}

impl AwsContext {
    /// Reads the identity from IMDS (at `imds_endpoint` when given), builds the
    /// clients for its region and finds the instance's group.
    pub async fn connect(imds_endpoint: Option<&str>) -> Result<AwsContext, Error> {
        let imds = Imds::new(imds_endpoint)?;
        let identity = imds.identity().await?;
        let clients = AwsClients::from_env(Some(identity.region.clone())).await;
        let group = clients
            .group_of(&identity.instance_id)
            .await?
            .ok_or_else(|| Error::NotInGroup(identity.instance_id.clone()))?;
        info!(
            instance = %identity.instance_id,
            ip = %identity.private_ip,
            region = %identity.region,
            group = %group,
            "AWS identity"
        );
        Ok(AwsContext {
            clients,
            imds,
            identity,
            group,
        })
    }

    /// The address to advertise: `flag` when given, else this instance's
    /// `chord:addr` tag, else `<private ip>:<port>`.
    pub async fn advertise_addr(&self, flag: Option<&str>, port: u16) -> Result<String, Error> {
        if let Some(a) = flag {
            return Ok(a.to_owned());
        }
        let members = self.clients.list_group(&self.group).await?;
        let tag = members
            .iter()
            .find(|i| i.id == self.identity.instance_id)
            .and_then(|i| i.tag_addr.clone());
        Ok(tag.unwrap_or_else(|| format!("{}:{port}", self.identity.private_ip)))
    }

    /// The group's members with what their nodes answer. `port` completes
    /// addresses of instances without a `chord:addr` tag.
    pub async fn survey(&self, peers: &PeerPool, port: u16) -> Result<Vec<Member>, Error> {
        let instances = self.clients.list_group(&self.group).await?;
        let me = &self.identity.instance_id;
        let probes = instances.iter().map(|i| probe(peers, me, i, port));
        Ok(join_all(probes).await)
    }
}

fn member_state(s: &LifecycleState) -> MemberState {
    match s {
        s if s.is_pending() => MemberState::Pending,
        LifecycleState::InService => MemberState::InService,
        _ => MemberState::Leaving,
    }
}

/// One member, asked `GetInfo` unless it is this instance or leaving.
async fn probe(peers: &PeerPool, me: &str, inst: &Instance, port: u16) -> Member {
    let state = member_state(&inst.lifecycle_state);
    let addr = inst.node_addr(port);
    let mut member = Member {
        instance_id: inst.id.clone(),
        state,
        addr: addr.clone(),
        live: false,
        alone: false,
    };
    let Some(addr) = addr else { return member };
    if inst.id == me || state == MemberState::Leaving {
        return member;
    }
    match peers.get_info(&addr).await {
        // A draining node still answers, but is no ring to join.
        Ok(info) if info.state == NodeState::Leaving => {}
        Ok(info) => {
            member.live = true;
            member.alone = info
                .successors
                .first()
                .is_none_or(|s| s.addr == info.node.addr);
        }
        Err(e) => debug!(instance = %inst.id, peer = %addr, error = %e, "member did not answer"),
    }
    member
}

/// Decides how this node enters the ring: `Some(addr)` to join through,
/// `None` to create it. Waits while another instance is due to create it, up
/// to `timeout`.
pub async fn find_bootstrap(
    ctx: &AwsContext,
    peers: &PeerPool,
    port: u16,
    timeout: Duration,
) -> Result<Option<String>, Error> {
    let deadline = Instant::now() + timeout;
    let me = &ctx.identity.instance_id;
    loop {
        let members = ctx.survey(peers, port).await?;
        match super::bootstrap(me, &members) {
            Bootstrap::Join(addr) => {
                info!(peer = %addr, group = %ctx.group, "joining the group's ring");
                return Ok(Some(addr));
            }
            Bootstrap::Create => {
                info!(group = %ctx.group, members = members.len(), "no live node in the group and ours is the lowest id: creating the ring");
                return Ok(None);
            }
            Bootstrap::Wait { creator } => {
                if Instant::now() + BOOTSTRAP_RETRY_INTERVAL > deadline {
                    return Err(Error::NoRing {
                        group: ctx.group.clone(),
                        creator,
                        waited: timeout,
                    });
                }
                info!(creator = %creator, "no live node yet; waiting for the lowest instance id to create the ring");
                tokio::time::sleep(BOOTSTRAP_RETRY_INTERVAL).await;
            }
        }
    }
}

/// Every `interval` until `cancel`: when the node is alone in its ring while
/// other live nodes exist in the group, re-joins them (see [`super::rejoin_via`]).
pub async fn watch_alone(
    node: Arc<Node>,
    ctx: Arc<AwsContext>,
    port: u16,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if node.is_leaving() || !node.ring().is_alone() {
            continue;
        }
        let members = tokio::select! {
            _ = cancel.cancelled() => return,
            m = ctx.survey(node.peers(), port) => m,
        };
        let members = match members {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "alone check: cannot list the group");
                continue;
            }
        };
        let Some(via) = super::rejoin_via(&ctx.identity.instance_id, &members) else {
            continue;
        };
        info!(peer = %via, "alone in the ring while the group has other live nodes: re-joining");
        if let Err(e) = node.rejoin(&via).await {
            warn!(peer = %via, error = %e, "re-join failed; will retry");
        }
    }
}
