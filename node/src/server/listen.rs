//! One TCP port, two protocols: gRPC and the course's MessagePack-RPC.
//!
//! Every accepted connection is sorted by its first byte, read with
//! `peek` so nothing is consumed: a MessagePack-RPC request starts with a
//! fixarray of 4 (`0x94`), and an HTTP/2 client starts with its preface
//! (`PRI * HTTP/2.0`). MessagePack-RPC connections are served by
//! [`super::msgpack`]; every other connection is handed, untouched, to the
//! tonic server through a bounded channel. Sorting happens in a task per
//! connection, so a client that connects and says nothing holds up no one,
//! and is dropped after [`SNIFF_TIMEOUT`].

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::msgpack;
use crate::node::Node;

/// How long a new connection may stay silent before it is dropped: both
/// kinds of client speak first, at once.
pub const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);

/// gRPC connections sorted but not yet taken by tonic. Tonic takes each at
/// once; the bound only matters if it stalls, and then accepting waits.
const GRPC_BACKLOG: usize = 64;

/// MessagePack-RPC connections served at once; more are closed at once.
/// Course scripts open one or two each, so this is room for many scripts.
pub const MAX_MSGPACK_CONNECTIONS: usize = 256;

/// Pause after a failed `accept` (out of file descriptors, say), so the
/// loop does not spin while the cause persists.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The gRPC side of the port: a stream of connections for tonic's
/// `serve_with_incoming_shutdown`.
pub type GrpcIncoming = tokio_stream::wrappers::ReceiverStream<io::Result<TcpStream>>;

/// Accepts on `listener` until `stop`, sorting connections between the
/// MessagePack-RPC handler and the returned gRPC stream. The returned future
/// owns every connection task it starts and ends them when it ends.
pub fn split(
    node: Arc<Node>,
    listener: TcpListener,
    stop: CancellationToken,
) -> (impl std::future::Future<Output = ()>, GrpcIncoming) {
    let (grpc_tx, grpc_rx) = mpsc::channel(GRPC_BACKLOG);
    let accept = accept_loop(node, listener, grpc_tx, stop);
    (accept, tokio_stream::wrappers::ReceiverStream::new(grpc_rx))
}

async fn accept_loop(
    node: Arc<Node>,
    listener: TcpListener,
    grpc_tx: mpsc::Sender<io::Result<TcpStream>>,
    stop: CancellationToken,
) {
    let msgpack_slots = Arc::new(Semaphore::new(MAX_MSGPACK_CONNECTIONS));
    let mut connections = JoinSet::new();
    accept_until(&listener, stop.cancelled(), &mut connections, |stream| {
        sort(node.clone(), stream, grpc_tx.clone(), msgpack_slots.clone())
    })
    .await;
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

/// Accepts on `listener` until `stop` completes, serving each connection
/// as a task in `connections` (finished ones are reaped as it goes); the
/// caller decides how the tasks still running end. A failed `accept` (out
/// of file descriptors, say) is logged and retried after a pause.
pub(crate) async fn accept_until<F, Fut>(
    listener: &TcpListener,
    stop: impl std::future::Future<Output = ()>,
    connections: &mut JoinSet<()>,
    mut serve: F,
) where
    F: FnMut(TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // Answers are written in several pieces (HTTP/2 headers,
                    // data, trailers): with Nagle on, a piece could wait
                    // for the ACK of the one before it, which the peer
                    // delays by up to 40 ms.
                    if let Err(e) = stream.set_nodelay(true) {
                        debug!(error = %e, "cannot turn off Nagle on a connection");
                    }
                    connections.spawn(serve(stream));
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            },
        }
    }
}

/// Sends one connection where its first byte says it belongs.
async fn sort(
    node: Arc<Node>,
    stream: TcpStream,
    grpc_tx: mpsc::Sender<io::Result<TcpStream>>,
    msgpack_slots: Arc<Semaphore>,
) {
    let mut first = [0u8; 1];
    match tokio::time::timeout(SNIFF_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        Ok(Ok(_)) => return, // closed before a byte
        Ok(Err(e)) => {
            debug!(error = %e, "connection failed before its first byte");
            return;
        }
        Err(_) => {
            debug!("connection said nothing; dropping it");
            return;
        }
    }
    if first[0] == msgpack::REQUEST_MARKER {
        let Ok(_slot) = msgpack_slots.try_acquire_owned() else {
            warn!(
                limit = MAX_MSGPACK_CONNECTIONS,
                "too many MessagePack-RPC connections; closing a new one"
            );
            return;
        };
        msgpack::serve_connection(node, stream).await;
    } else {
        // The receiver is gone only when the gRPC server has stopped.
        let _ = grpc_tx.send(Ok(stream)).await;
    }
}
