//! The baseline a chord-dfs transfer is compared with: the same files
//! through a plain HTTP server on the same disk, no ring, no chunks, no
//! replicas.
//!
//! The server (axum) and the client (hyper) both stream: `PUT /f/NAME`
//! writes the request body to the file NAME in the server's directory and
//! fsyncs it before answering, `GET /f/NAME` sends it back, and the client
//! reads its upload from disk and writes its download to disk, so neither
//! side holds a file in memory. Each transfer has its own connection, as
//! each chord-dfs upload starts its own calls. Server and client run in
//! this process, on this runtime.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::Router;
use bytes::Bytes;
use chord_node::store::WRITE_PIECE_BYTES;
use futures::{StreamExt, TryStreamExt};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::io::ReaderStream;

/// Buffer for reading a file to send it, on both sides: large enough that
/// syscalls do not dominate, small beside the file. (Writes go in pieces of
/// `WRITE_PIECE_BYTES`.)
pub const IO_BUFFER: usize = 1 << 20;

/// How long the server and a finished connection may take to wind down.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// A running baseline server that stores files in one directory.
#[derive(Debug)]
pub struct BaselineServer {
    addr: SocketAddr,
    stop_tx: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl BaselineServer {
    /// Serves on a free port of 127.0.0.1, keeping the files in `dir`.
    pub async fn start(dir: PathBuf) -> Result<BaselineServer> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind the baseline HTTP server")?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/f/{name}", put(store_file).get(send_file))
            .with_state(Arc::new(dir));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop_rx.await;
                })
                .await
        });
        Ok(BaselineServer {
            addr,
            stop_tx,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets open connections finish, bounded.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop_tx.send(());
        match tokio::time::timeout(SHUTDOWN_TIMEOUT, self.task).await {
            Ok(joined) => joined
                .map_err(|e| anyhow!("the baseline server task failed: {e}"))?
                .context("the baseline server failed"),
            Err(_) => bail!("the baseline server did not stop within {SHUTDOWN_TIMEOUT:?}"),
        }
    }
}

type HandlerError = (StatusCode, String);

fn internal(context: &str, e: impl std::fmt::Display) -> HandlerError {
    (StatusCode::INTERNAL_SERVER_ERROR, format!("{context}: {e}"))
}

/// The file `name` stands for in `dir`: a plain name, never a way out.
fn file_in(dir: &Path, name: &str) -> Result<PathBuf, HandlerError> {
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\']) {
        return Err((StatusCode::BAD_REQUEST, format!("bad file name {name:?}")));
    }
    Ok(dir.join(name))
}

/// `PUT /f/NAME`: the body goes to the file, which is fsynced before the
/// answer, so the client's timing includes durability, as a chord-dfs
/// write does.
async fn store_file(
    State(dir): State<Arc<PathBuf>>,
    UrlPath(name): UrlPath<String>,
    body: Body,
) -> Result<StatusCode, HandlerError> {
    let file = tokio::fs::File::create(file_in(&dir, &name)?)
        .await
        .map_err(|e| internal("create", e))?;
    // Written in pieces no larger than a node's (see WRITE_PIECE_BYTES), so
    // the baseline gets the same help from the page cache.
    let mut out = BufWriter::with_capacity(WRITE_PIECE_BYTES, file);
    let mut pieces = body.into_data_stream();
    while let Some(piece) = pieces.next().await {
        let piece = piece.map_err(|e| (StatusCode::BAD_REQUEST, format!("body: {e}")))?;
        out.write_all(&piece)
            .await
            .map_err(|e| internal("write", e))?;
    }
    out.flush().await.map_err(|e| internal("flush", e))?;
    out.get_ref()
        .sync_all()
        .await
        .map_err(|e| internal("fsync", e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /f/NAME`: the file, streamed from disk.
async fn send_file(
    State(dir): State<Arc<PathBuf>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, HandlerError> {
    let file = match tokio::fs::File::open(file_in(&dir, &name)?).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err((StatusCode::NOT_FOUND, format!("no file {name:?}")))
        }
        Err(e) => return Err(internal("open", e)),
    };
    let len = file
        .metadata()
        .await
        .map_err(|e| internal("stat", e))?
        .len();
    let body = Body::from_stream(ReaderStream::with_capacity(file, IO_BUFFER));
    Ok(([(header::CONTENT_LENGTH, len)], body).into_response())
}

/// One HTTP/1.1 connection to the baseline server, driven by its own task.
struct Connection<B> {
    sender: hyper::client::conn::http1::SendRequest<B>,
    driver: JoinHandle<hyper::Result<()>>,
}

impl<B> Connection<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    async fn open(addr: SocketAddr) -> Result<Connection<B>> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        Ok(Connection {
            sender,
            driver: tokio::spawn(conn),
        })
    }

    async fn send(&mut self, req: hyper::Request<B>) -> Result<hyper::Response<Incoming>> {
        self.sender.send_request(req).await.context("HTTP request")
    }

    /// Hangs up and waits, bounded, for the connection task to end.
    async fn close(self) -> Result<()> {
        drop(self.sender);
        match tokio::time::timeout(SHUTDOWN_TIMEOUT, self.driver).await {
            Ok(joined) => joined
                .map_err(|e| anyhow!("the HTTP connection task failed: {e}"))?
                .context("HTTP connection"),
            Err(_) => bail!("the HTTP connection did not close within {SHUTDOWN_TIMEOUT:?}"),
        }
    }
}

/// `PUT`s the file at `source` to the server as `name`, streaming it from
/// disk.
pub async fn upload(addr: SocketAddr, source: &Path, name: &str) -> Result<()> {
    let file = tokio::fs::File::open(source)
        .await
        .with_context(|| format!("cannot open {}", source.display()))?;
    let len = file.metadata().await?.len();
    let frames = ReaderStream::with_capacity(file, IO_BUFFER).map_ok(Frame::data);
    let mut conn = Connection::open(addr).await?;
    let req = hyper::Request::put(format!("http://{addr}/f/{name}"))
        .header(header::HOST, addr.to_string())
        .header(header::CONTENT_LENGTH, len)
        .body(StreamBody::new(frames))
        .context("building the PUT request")?;
    let resp = conn.send(req).await?;
    let status = resp.status();
    // Read the (empty) answer so the connection ends cleanly.
    let _ = resp.into_body().collect().await;
    conn.close().await?;
    if !status.is_success() {
        bail!("the baseline server answered PUT with {status}");
    }
    Ok(())
}

/// `GET`s the file `name` into `out`, streaming it to disk, and fsyncs it.
/// Returns the number of bytes received.
pub async fn download(addr: SocketAddr, name: &str, out: &Path) -> Result<u64> {
    let mut conn = Connection::<http_body_util::Empty<Bytes>>::open(addr).await?;
    let req = hyper::Request::get(format!("http://{addr}/f/{name}"))
        .header(header::HOST, addr.to_string())
        .body(http_body_util::Empty::new())
        .context("building the GET request")?;
    let resp = conn.send(req).await?;
    if !resp.status().is_success() {
        bail!("the baseline server answered GET with {}", resp.status());
    }
    let file = tokio::fs::File::create(out)
        .await
        .with_context(|| format!("cannot create {}", out.display()))?;
    let mut sink = BufWriter::with_capacity(WRITE_PIECE_BYTES, file);
    let mut body = resp.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.context("reading the GET body")?;
        if let Ok(data) = frame.into_data() {
            received += data.len() as u64;
            sink.write_all(&data)
                .await
                .with_context(|| format!("cannot write {}", out.display()))?;
        }
    }
    sink.flush().await?;
    sink.get_ref()
        .sync_all()
        .await
        .with_context(|| format!("cannot sync {}", out.display()))?;
    conn.close().await?;
    Ok(received)
}
