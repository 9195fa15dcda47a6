//! The HTTP gateway (being written).

use std::future::Future;
use std::sync::Arc;

use crate::error::Result;
use crate::node::Node;

pub async fn serve(
    _node: Arc<Node>,
    _listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    shutdown.await;
    Ok(())
}
