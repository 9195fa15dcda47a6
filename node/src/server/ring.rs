//! `chord.v1.Ring`: thin handlers over the node's ring state.

use std::sync::Arc;
use std::time::Duration;

use chord_proto::pb;
use chord_proto::pb::ring_server::Ring;
use tonic::{Request, Response, Status};
use tracing::info;

use super::error_to_status;
use crate::events::{EventKind, MAX_EVENTS_PER_READ};
use crate::node::{Counters, Node};
use crate::wire;

/// `chord.v1.Ring`, answered from the node's ring state.
#[derive(Clone, Debug)]
pub struct RingService {
    node: Arc<Node>,
}

impl RingService {
    pub fn new(node: Arc<Node>) -> RingService {
        RingService { node }
    }

    fn count(&self) {
        Counters::bump(&self.node.counters.requests, 1);
    }
}

pub fn node_info(node: &Node) -> pb::NodeInfo {
    let info = node.info();
    pb::NodeInfo {
        node: Some(wire::node_to_pb(&info.node)),
        predecessor: info.predecessor.as_ref().map(wire::node_to_pb),
        successors: wire::nodes_to_pb(&info.successors),
        uptime_secs: info.uptime_secs,
        alive_since_ms: info.alive_since_ms,
        replicas: info.replicas,
        state: info.state.to_pb() as i32,
    }
}

#[tonic::async_trait]
impl Ring for RingService {
    async fn get_info(&self, _: Request<pb::Empty>) -> Result<Response<pb::NodeInfo>, Status> {
        self.count();
        Ok(Response::new(node_info(&self.node)))
    }

    async fn find_successor(
        &self,
        req: Request<pb::FindSuccessorRequest>,
    ) -> Result<Response<pb::FindSuccessorResponse>, Status> {
        self.count();
        let target = wire::id_from_pb(&req.into_inner().id, "id").map_err(error_to_status)?;
        let (owner, hops) = self
            .node
            .find_successor(target)
            .await
            .map_err(error_to_status)?;
        Ok(Response::new(pb::FindSuccessorResponse {
            owner: Some(wire::node_to_pb(&owner)),
            hops,
        }))
    }

    async fn find_step(
        &self,
        req: Request<pb::FindStepRequest>,
    ) -> Result<Response<pb::FindStepResponse>, Status> {
        self.count();
        let target = wire::id_from_pb(&req.into_inner().id, "id").map_err(error_to_status)?;
        let route = self.node.route(&target);
        Ok(Response::new(wire::route_to_pb(route)))
    }

    async fn get_predecessor(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<pb::PredecessorResponse>, Status> {
        self.count();
        let predecessor = self.node.ring().predecessor().map(wire::node_to_pb);
        Ok(Response::new(pb::PredecessorResponse { predecessor }))
    }

    async fn get_successor_list(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<pb::SuccessorListResponse>, Status> {
        self.count();
        let successors = wire::nodes_to_pb(self.node.ring().successors());
        Ok(Response::new(pb::SuccessorListResponse { successors }))
    }

    async fn notify(&self, req: Request<pb::NotifyRequest>) -> Result<Response<pb::Empty>, Status> {
        self.count();
        let candidate =
            wire::node_from_pb(req.into_inner().candidate, "candidate").map_err(error_to_status)?;
        self.node.peer_rejoined(&candidate.addr);
        let before = self.node.ring().predecessor().map(|p| p.addr.clone());
        let changed = self.node.ring().notify(candidate.clone());
        let after = self.node.ring().predecessor().map(|p| p.addr.clone());
        if changed && after != before && after.as_deref() == Some(candidate.addr.as_str()) {
            info!(predecessor = %candidate, "new predecessor");
            self.node.events().record(
                EventKind::NeighbourJoined,
                Some(&candidate.addr),
                0,
                0,
                "new predecessor",
            );
        }
        Ok(Response::new(pb::Empty {}))
    }

    async fn ping(&self, _: Request<pb::Empty>) -> Result<Response<pb::Empty>, Status> {
        self.count();
        Ok(Response::new(pb::Empty {}))
    }

    async fn get_finger_table(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<pb::FingerTableResponse>, Status> {
        self.count();
        let ring = self.node.ring();
        let fingers = ring
            .fingers()
            .entries()
            .map(|(index, start, node)| pb::Finger {
                index: index as u32,
                start: start.as_bytes().to_vec(),
                node: node.map(wire::node_to_pb),
            })
            .collect();
        Ok(Response::new(pb::FingerTableResponse { fingers }))
    }

    async fn leave(&self, req: Request<pb::LeaveRequest>) -> Result<Response<pb::Empty>, Status> {
        self.count();
        let req = req.into_inner();
        let leaving = wire::node_from_pb(req.leaving, "leaving").map_err(error_to_status)?;
        let predecessor = req
            .predecessor
            .map(|p| wire::node_from_pb(Some(p), "predecessor"))
            .transpose()
            .map_err(error_to_status)?;
        let successors =
            wire::nodes_from_pb(req.successors, "successor").map_err(error_to_status)?;
        info!(peer = %leaving, "neighbour is leaving");
        self.node.peer_leaving(&leaving.addr);
        self.node.taking_over_from(&leaving);
        self.node.ring().on_leave(&leaving, predecessor, successors);
        self.node.peers().forget(&leaving.addr);
        self.node.events().record(
            EventKind::NeighbourLeft,
            Some(&leaving.addr),
            0,
            0,
            "left gracefully and handed over its links",
        );
        Ok(Response::new(pb::Empty {}))
    }

    async fn get_events(
        &self,
        req: Request<pb::GetEventsRequest>,
    ) -> Result<Response<pb::EventsResponse>, Status> {
        self.count();
        let req = req.into_inner();
        let max = usize::try_from(req.max).unwrap_or(MAX_EVENTS_PER_READ);
        let max = if max == 0 { MAX_EVENTS_PER_READ } else { max };
        let batch = self.node.events().since(req.since, max);
        Ok(Response::new(wire::events_to_pb(batch)))
    }

    async fn drain(
        &self,
        req: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::HandoffReport>, Status> {
        self.count();
        let deadline_ms = req.into_inner().deadline_ms;
        if deadline_ms == 0 || deadline_ms > MAX_DRAIN_DEADLINE.as_millis() as u64 {
            return Err(error_to_status(crate::Error::invalid(format!(
                "drain deadline must be 1..={} ms",
                MAX_DRAIN_DEADLINE.as_millis()
            ))));
        }
        let deadline = super::drain_deadline(
            Duration::from_millis(deadline_ms),
            self.node.config().grpc_request_timeout,
        );
        info!(deadline_ms = deadline.as_millis() as u64, "drain requested");
        let report = self.node.drain(deadline).await;
        info!(?report, "drain done");
        Ok(Response::new(wire::handoff_to_pb(&report)))
    }
}

/// Longest drain a caller may ask for: AWS holds a terminating instance at
/// most 48 hours, and a drain is never worth more than that.
pub const MAX_DRAIN_DEADLINE: Duration = Duration::from_secs(48 * 3600);
