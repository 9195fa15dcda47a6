//! The tonic services and the `serve` entry point that wires a node together.
//!
//! The service impls are thin: validate the request through [`crate::wire`],
//! call the core or the store, convert back. [`error_to_status`] is the one
//! mapping from [`Error`] to `tonic::Status`. `serve` owns every task it spawns
//! and returns only after they have all stopped.
//!
//! gRPC shares its port with the course's MessagePack-RPC ([`msgpack`]):
//! `listen` sorts each connection by its first byte. Under TLS
//! ([`crate::tls`]) tonic does the handshake of every gRPC connection (a TLS
//! client's first byte is `0x16`, never MessagePack-RPC's `0x94`), and the
//! gateway serves HTTPS. While the node is
//! idle (`--idle`, waiting for a MessagePack-RPC `create` or `join`) every
//! gRPC call is refused with `UNAVAILABLE`, so no peer routes through a
//! node that is in no ring.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chord_proto::pb::ring_server::RingServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::Status;
use tracing::{info, warn};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::node::Node;
use crate::peer::{CONNECTION_WINDOW_BYTES, FRAME_BYTES, STREAM_WINDOW_BYTES};
use crate::store::Store;
use crate::MAX_MESSAGE_BYTES;

mod listen;
pub mod msgpack;
mod ring;
mod store;

pub(crate) use listen::accept_until;
pub use listen::{MAX_MSGPACK_CONNECTIONS, SNIFF_TIMEOUT};

pub use ring::{node_info, RingService};
pub use store::{store_stats, StoreRoutes, StoreService, MAX_KEYS_PER_CALL};

/// The one mapping from a node error to the status a caller sees.
///
/// Every UNAVAILABLE this node answers (other than for its own shutdown)
/// carries [`ANSWERED_HEADER`]: the node is alive and said "not now", which
/// the caller must not confuse with a transport failure (no answer at all),
/// the only UNAVAILABLE that means the peer may be gone.
pub fn error_to_status(err: Error) -> Status {
    // Where the code names the kind, the message is what follows it, so a
    // caller's own error of that kind does not say it twice ("not found:
    // not found: chunk ...").
    let msg = match &err {
        Error::InvalidArgument(m)
        | Error::NotFound(m)
        | Error::Corrupt(m)
        | Error::DiskFull(m)
        | Error::Unauthenticated(m) => m.clone(),
        _ => err.to_string(),
    };
    let answered = |mut status: Status, header: &'static str| {
        status
            .metadata_mut()
            .insert(header, tonic::metadata::MetadataValue::from_static("1"));
        status
    };
    match err {
        Error::InvalidArgument(_) => Status::invalid_argument(msg),
        Error::Unauthenticated(_) => Status::unauthenticated(msg),
        Error::NotFound(_) => Status::not_found(msg),
        Error::Corrupt(_) => Status::data_loss(msg),
        Error::DiskFull(_) => answered(Status::resource_exhausted(msg), DISK_FULL_HEADER),
        Error::Io { .. } => Status::internal(msg),
        Error::Unreachable { .. }
        | Error::Unavailable(_)
        | Error::BadReply { .. }
        | Error::Remote {
            retryable: true, ..
        } => answered(Status::unavailable(msg), ANSWERED_HEADER),
        Error::Remote {
            retryable: false, ..
        } => Status::failed_precondition(msg),
        Error::Shutdown => Status::unavailable(msg),
        Error::Leaving { .. } => answered(Status::unavailable(msg), LEAVING_HEADER),
    }
}

/// Trailer set on an UNAVAILABLE this node answered on purpose (a write it
/// could not replicate, a lookup that failed further on): try again later,
/// but the node itself is fine.
pub const ANSWERED_HEADER: &str = "chord-answered";

/// Trailer set on a status answered by a leaving node, so a caller can tell
/// "leaving, do not count me" from "unreachable, try later" without parsing
/// the message.
pub const LEAVING_HEADER: &str = "chord-leaving";

/// Trailer set on the RESOURCE_EXHAUSTED of a full disk, which callers do
/// not retry; without it, a RESOURCE_EXHAUSTED is tonic's refusal of a call
/// over [`Config::grpc_calls_per_connection`], which they do.
pub const DISK_FULL_HEADER: &str = "chord-disk-full";

/// How long a `Drain` asked to run for `requested` may run on a server
/// whose calls end at `server_timeout`: it stops a tenth of the timeout
/// early, so its report (maybe incomplete, which the caller retries) goes
/// out before the call is cut and the hand-off dropped mid-round.
pub fn drain_deadline(requested: Duration, server_timeout: Duration) -> Duration {
    requested.min(server_timeout.saturating_sub(server_timeout / 10))
}

/// Admits a gRPC call only with the cluster token (when one is set), and
/// refuses every call while `node` is idle: it is in no ring yet, so neither
/// its routing answers nor its store mean anything.
fn admit(
    node: Arc<Node>,
) -> impl FnMut(tonic::Request<()>) -> std::result::Result<tonic::Request<()>, Status> + Clone {
    move |request| {
        crate::auth::check(node.config().token.as_ref(), request.metadata())?;
        if node.is_idle() {
            Err(Status::unavailable(
                "this node is idle: it waits for a MessagePack-RPC create or join",
            ))
        } else {
            Ok(request)
        }
    }
}

/// Builds the node (creating, joining, or idle), serves it on `listener`
/// until `shutdown` completes, then leaves the ring gracefully.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    config.validate()?;
    let dir = config.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&dir))
        .await
        .map_err(|e| Error::Unavailable(format!("opening the store: {e}")))??;
    let node = match &config.join {
        None if config.idle => {
            info!(addr = %config.advertise, "idle: waiting for create or join over MessagePack-RPC");
            Node::idle(config, store)
        }
        None => {
            info!(addr = %config.advertise, "creating a new ring");
            Node::create(config, store)
        }
        Some(peer) => {
            info!(addr = %config.advertise, peer = %peer, "joining ring");
            Node::join(config, store).await?
        }
    };
    info!(id = %node.me().id, addr = %node.me().addr, "node is up");
    run(node, listener, shutdown).await
}

/// Serves an already-built node until `shutdown`, then leaves gracefully.
pub async fn run(
    node: Arc<Node>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    // Before anyone can read our manifests: after a long absence they are
    // set aside until the ring confirms them.
    node.open_alive_clock().await?;
    let stop_server = CancellationToken::new();
    let stop_maintenance = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();

    let ring = RingServer::new(RingService::new(node.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let store = StoreRoutes::new(StoreService::new(node.clone()));
    let (accept, grpc_incoming) = listen::split(node.clone(), listener, stop_server.clone());
    // Both bounds wrap every call: the timeout until its answer starts, the
    // limit per HTTP/2 connection, refusing (load_shed) rather than queueing.
    let mut grpc = tonic::transport::Server::builder()
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(FRAME_BYTES)
        .timeout(node.config().grpc_request_timeout)
        .concurrency_limit_per_connection(node.config().grpc_calls_per_connection)
        .load_shed(true)
        .layer(tower::util::MapRequestLayer::new(
            crate::framing::cut_request,
        ));
    if let Some(tls) = &node.config().tls {
        grpc = grpc
            .tls_config(tls.identity.grpc())
            .map_err(|e| Error::invalid(format!("TLS: {e}")))?;
    }
    let grpc = grpc
        .add_service(InterceptedService::new(ring, admit(node.clone())))
        .add_service(InterceptedService::new(store, admit(node.clone())))
        .serve_with_incoming_shutdown(grpc_incoming, stop_server.clone().cancelled_owned());
    tasks.spawn(async move {
        accept.await;
        Ok(())
    });
    tasks.spawn(async move {
        grpc.await
            .map_err(|e| Error::Unavailable(format!("grpc server: {e}")))
    });
    let maintain = node.clone().maintain(stop_maintenance.clone());
    tasks.spawn(async move {
        maintain.await;
        Ok(())
    });
    let repairer = node.clone();
    let stop_repair = stop_maintenance.clone();
    tasks.spawn(async move {
        repairer.repair_loop(stop_repair).await;
        Ok(())
    });
    let collector = node.clone();
    let stop_collector = stop_maintenance.clone();
    tasks.spawn(async move {
        collector.collect_loop(stop_collector).await;
        Ok(())
    });
    if let Some(addr) = node.config().http {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io(format!("cannot listen for HTTP on {addr}"), e))?;
        let gateway = crate::gateway::serve(
            node.clone(),
            listener,
            stop_server.clone().cancelled_owned(),
        );
        tasks.spawn(gateway);
        info!(%addr, "HTTP gateway is up");
    }

    tokio::select! {
        _ = shutdown => info!("shutting down: leaving the ring"),
        Some(res) = tasks.join_next() => {
            // A task ended on its own: that is a fault, not a shutdown.
            let err = match res {
                Ok(Ok(())) => Error::Unavailable("a node task stopped unexpectedly".into()),
                Ok(Err(e)) => e,
                Err(e) => Error::Unavailable(format!("a node task panicked: {e}")),
            };
            stop_maintenance.cancel();
            stop_server.cancel();
            while tasks.join_next().await.is_some() {}
            return Err(err);
        }
    }
    stop_maintenance.cancel();
    // Leave first, so lookups stop landing here, then hand every key on
    // while still serving reads; only then stop the server.
    node.leave_ring().await;
    let report = node
        .hand_off(
            node.config().handoff_timeout,
            crate::repair::HandoffMode::UntilStalled,
        )
        .await;
    info!(?report, "hand-off done");
    stop_server.cancel();
    while let Some(res) = tasks.join_next().await {
        if let Ok(Err(e)) = res {
            warn!(error = %e, "task failed during shutdown");
        }
    }
    info!("left the ring");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_answers_before_the_server_timeout() {
        let secs = Duration::from_secs;
        let table = [
            // (requested, server timeout, allowed)
            (secs(120), secs(300), secs(120)),
            (secs(600), secs(300), secs(270)),
            (secs(48 * 3600), secs(300), secs(270)),
            (secs(5), secs(2), Duration::from_millis(1800)),
        ];
        for (requested, timeout, want) in table {
            assert_eq!(drain_deadline(requested, timeout), want, "{requested:?}");
        }
    }
}
