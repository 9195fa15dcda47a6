//! [`FakeImds`]: a stand-in for one instance's metadata service (IMDSv2),
//! because no emulator offers one.
//!
//! It answers only what `chord-node --discovery aws` asks: the session token
//! (`PUT /latest/api/token`), and with that token the instance id, private
//! IPv4, region and the Auto Scaling target lifecycle state. A request
//! without the right token gets 401, as on EC2. The lifecycle state is
//! settable, which is how the harness plays the group starting a scale-in
//! (`InService` → `Terminated`). Listens on 127.0.0.1 only; the server task
//! is aborted when the handle drops.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;

/// Header carrying the session token on metadata reads.
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
/// Header asking for (and, in the answer, stating) the token's lifetime.
const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";

/// The lifecycle state of an instance serving in its group.
pub const IN_SERVICE: &str = "InService";
/// The lifecycle state the group sets when it starts terminating the instance.
pub const TERMINATED: &str = "Terminated";

/// What one fake metadata service knows.
#[derive(Debug)]
struct Metadata {
    instance_id: String,
    local_ipv4: String,
    region: String,
    token: String,
    lifecycle: Mutex<String>,
    lifecycle_reads: AtomicU64,
}

/// One instance's metadata service on a loopback port.
#[derive(Debug)]
pub struct FakeImds {
    addr: SocketAddr,
    meta: Arc<Metadata>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeImds {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeImds {
    /// Serves the metadata of `instance_id` (state `InService`).
    pub async fn start(instance_id: &str, local_ipv4: &str, region: &str) -> Result<FakeImds> {
        let meta = Arc::new(Metadata {
            instance_id: instance_id.to_string(),
            local_ipv4: local_ipv4.to_string(),
            region: region.to_string(),
            token: format!("token-{instance_id}-{:016x}", rand::random::<u64>()),
            lifecycle: Mutex::new(IN_SERVICE.to_string()),
            lifecycle_reads: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/latest/api/token", put(token))
            .route("/latest/meta-data/instance-id", get(instance_id_of))
            .route("/latest/meta-data/local-ipv4", get(local_ipv4_of))
            .route("/latest/meta-data/placement/region", get(region_of))
            .route(
                "/latest/meta-data/autoscaling/target-lifecycle-state",
                get(lifecycle_of),
            )
            .with_state(meta.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the fake metadata service")?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("fake metadata service on {addr} stopped: {e}");
            }
        });
        Ok(FakeImds { addr, meta, server })
    }

    /// `http://127.0.0.1:<port>`, for `--imds-endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn instance_id(&self) -> &str {
        &self.meta.instance_id
    }

    /// Sets what `autoscaling/target-lifecycle-state` answers.
    pub fn set_lifecycle_state(&self, state: &str) {
        if let Ok(mut s) = self.meta.lifecycle.lock() {
            *s = state.to_string();
        }
    }

    /// How many times the node has read its lifecycle state (so a test can
    /// tell the node polls it).
    pub fn lifecycle_reads(&self) -> u64 {
        self.meta.lifecycle_reads.load(Ordering::Relaxed)
    }
}

async fn token(headers: HeaderMap, State(meta): State<Arc<Metadata>>) -> Response {
    let ttl = headers
        .get(TTL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match ttl {
        // EC2 accepts 1 s to 6 h.
        Some(ttl @ 1..=21600) => (
            StatusCode::OK,
            [(TTL_HEADER, ttl.to_string())],
            meta.token.clone(),
        )
            .into_response(),
        _ => (StatusCode::BAD_REQUEST, "missing or bad token TTL").into_response(),
    }
}

/// Answers `value` when the request carries this service's token.
fn authorized(headers: &HeaderMap, meta: &Metadata, value: String) -> Response {
    let ok = headers
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t == meta.token);
    if ok {
        (StatusCode::OK, value).into_response()
    } else {
        StatusCode::UNAUTHORIZED.into_response()
    }
}

async fn instance_id_of(headers: HeaderMap, State(meta): State<Arc<Metadata>>) -> Response {
    authorized(&headers, &meta, meta.instance_id.clone())
}

async fn local_ipv4_of(headers: HeaderMap, State(meta): State<Arc<Metadata>>) -> Response {
    authorized(&headers, &meta, meta.local_ipv4.clone())
}

async fn region_of(headers: HeaderMap, State(meta): State<Arc<Metadata>>) -> Response {
    authorized(&headers, &meta, meta.region.clone())
}

async fn lifecycle_of(headers: HeaderMap, State(meta): State<Arc<Metadata>>) -> Response {
    let state = meta
        .lifecycle
        .lock()
        .map(|s| s.clone())
        .unwrap_or_else(|_| IN_SERVICE.to_string());
    let answer = authorized(&headers, &meta, state);
    if answer.status() == StatusCode::OK {
        meta.lifecycle_reads.fetch_add(1, Ordering::Relaxed);
    }
    answer
}
