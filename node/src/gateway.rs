//! The HTTP gateway: plain HTTP access to the ring for curl, browsers and
//! scripts, served by every node that runs with `--http`.
//!
//! | Request              | Answer                                                        |
//! |----------------------|---------------------------------------------------------------|
//! | `POST /upload`       | multipart field `files` (one or more parts); one line per file: `name\tsize\tchunks` (JSON with `?json` or `Accept: application/json`) |
//! | `PUT /<name>`        | the body is the file (`curl -T FILE URL/`); the same answer, for one file |
//! | `GET /<name>`        | the file's bytes (`HEAD` gives the headers only)             |
//! | `GET /`              | one line per file, `name\tsize`; JSON with `?json` or `Accept: application/json` |
//! | `DELETE /<name>`     | 204 once the file is deleted                                  |
//!
//! The gateway holds no file data and no ring state of its own: it is a
//! [`Client`] whose entry is this node's own advertised address, so every
//! request goes through the ring and any node serves any file.
//!
//! Invariants:
//! - No request holds a whole file in memory. An upload streams each part
//!   (or a `PUT`'s body) straight into [`Client::upload`], a download
//!   streams chunks as they are fetched; either holds at most `parallel`
//!   chunks at once.
//! - A download never hands out wrong bytes silently. Each chunk is checked
//!   against its key as it is fetched, and the last chunk is held back until
//!   the whole file's checksum matches the manifest. On any failure the body
//!   ends early, so the client sees a connection cut short of
//!   `Content-Length` and never a complete-looking file.
//! - Every error is an HTTP status with a one-line plain-text reason, so
//!   `curl -f` fails and no script saves an error page as the file.
//!
//! - No request holds the gateway forever: headers must be complete within
//!   `--http-idle-timeout-secs` (else the connection is closed), an upload
//!   body that sends nothing for that long gets 408, a download the client
//!   stops reading is cut after it, and every request must have its answer
//!   started within `--http-request-timeout-secs` (else 408). The accept
//!   loop is ours (hyper-util's connection builder with a timer), so that
//!   first bound can be set at all.
//!
//! This module must not touch the store or the ring state directly: going
//! through [`Client`] keeps one tested transfer path for the console, the
//! tests and HTTP.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::io::StreamReader;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::client::{
    file_json, pieces, verify_whole, Client, FileDigest, ReadCheck, TransferOptions, UploadReport,
    DIGEST_DEPTH,
};
use crate::error::{Error, Result};
use crate::node::Node;
use crate::store::{validate_name, Manifest};

/// The multipart field that carries files, as the original file server and
/// its scripts (`requests.post(url, files={'files': ...})`) name it.
pub const UPLOAD_FIELD: &str = "files";

/// How long in-flight HTTP transfers may go on once shutdown has begun. The
/// node has already handed its keys over by then; without a bound, one slow
/// multi-GiB download would hold the node's exit indefinitely.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What every handler shares.
struct Gateway {
    /// Enters the ring through this node's own gRPC address; shared with
    /// the download bodies, which outlive their handlers.
    client: Arc<Client>,
    /// Chunk size (the node's `chunk_size`), read-ahead and retries.
    opts: TransferOptions,
    /// Copies the ring keeps: how many holders a chunk fetch may try.
    replicas: usize,
    /// The cluster token requests must carry as `Authorization: Bearer`.
    token: Option<crate::auth::ClusterToken>,
    /// GET and HEAD go without the token.
    public_reads: bool,
    /// One permit per upload running; none left means 429.
    uploads: Arc<tokio::sync::Semaphore>,
    /// Most files in one upload request.
    max_parts: usize,
    /// Largest request body (`--http-max-body-mib`), for a `PUT`'s raw
    /// body; axum's limit covers only what its extractors read.
    max_body: Option<usize>,
    /// Longest a request body may send nothing.
    idle_timeout: Duration,
    /// Longest a request may take until its answer starts.
    request_timeout: Duration,
}

/// Serves the gateway on `listener` (over TLS when the node has it) until
/// `shutdown` completes, then lets running requests finish for at most
/// [`SHUTDOWN_GRACE`]. Every connection is a task of this function's own,
/// ended by the time it returns.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let config = node.config();
    let client = Arc::new(
        Client::new(config.advertise.clone(), config.peer_options())?.inside(node.clone()),
    );
    let idle = config.http_idle_timeout;
    let gateway = Arc::new(Gateway {
        client,
        opts: TransferOptions {
            chunk_size: config.chunk_size,
            ..TransferOptions::default()
        },
        replicas: config.replicas.max(1),
        token: config.token.clone(),
        public_reads: config.public_reads,
        uploads: Arc::new(tokio::sync::Semaphore::new(config.http_max_uploads)),
        max_parts: config.http_max_parts,
        max_body: usize::try_from(config.http_max_body_bytes)
            .ok()
            .filter(|&max| max > 0),
        idle_timeout: idle,
        request_timeout: config.http_request_timeout,
    });
    let body_limit = match gateway.max_body {
        Some(max) => DefaultBodyLimit::max(max),
        None => DefaultBodyLimit::disable(),
    };
    let app = router(gateway, body_limit);
    // HTTP/1, and HTTP/2 too: a gRPC client pointed here by mistake must
    // reach `refuse_grpc`. The HTTP/1 header timer counts from the first
    // poll for a request's head, so it also ends a kept-alive connection
    // that sends no next request.
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(idle);
    http.http2().timer(TokioTimer::new());
    let finish = CancellationToken::new();
    let mut connections = JoinSet::new();
    let tls = config.tls.as_ref().map(|tls| tls.identity.acceptor());
    crate::server::accept_until(&listener, shutdown, &mut connections, |stream| {
        let (http, app, finish, tls) = (http.clone(), app.clone(), finish.clone(), tls.clone());
        async move {
            let Some(acceptor) = tls else {
                return serve_connection(http, stream, app, idle, finish).await;
            };
            // The handshake runs in the connection's own task, bounded, so
            // a client that connects and says nothing holds up no one.
            match tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
            {
                Ok(Ok(stream)) => serve_connection(http, stream, app, idle, finish).await,
                Ok(Err(e)) => debug!(error = %e, "gateway TLS handshake failed"),
                Err(_) => debug!("gateway TLS handshake timed out"),
            }
        }
    })
    .await;
    // Each connection finishes the request it is serving, then closes.
    finish.cancel();
    if !crate::join_within(&mut connections, SHUTDOWN_GRACE).await {
        warn!(grace = ?SHUTDOWN_GRACE, "HTTP transfers still running at shutdown; abandoned them");
    }
    Ok(())
}

/// Serves one connection until it closes, or until `finish`, when
/// the request in progress completes and the connection closes.
async fn serve_connection<IO>(
    http: auto::Builder<TokioExecutor>,
    stream: IO,
    app: Router,
    idle: Duration,
    finish: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(WriteIdle::new(stream, idle));
    let conn = http.serve_connection(io, TowerToHyperService::new(app));
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = finish.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // Timeouts, resets and malformed requests: the client's business.
        debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// A connection whose writes fail with `TimedOut` once they have made no
/// progress for `idle`: a download whose client stopped reading is cut,
/// instead of holding its task and its read-ahead chunks forever. Reads are
/// bounded elsewhere (the header timer, [`bound_request`]).
struct WriteIdle<IO> {
    io: IO,
    idle: Duration,
    /// Started when a write first found no room; cleared by any progress.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> WriteIdle<IO> {
    fn new(io: IO, idle: Duration) -> WriteIdle<IO> {
        WriteIdle {
            io,
            idle,
            stalled: None,
        }
    }

    /// What a write that returned `poll` makes of the idle timer.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let idle = self.idle;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client read nothing for {idle:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for WriteIdle<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for WriteIdle<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}

fn router(gateway: Arc<Gateway>, body_limit: DefaultBodyLimit) -> Router {
    Router::new()
        .route("/", get(list))
        // `/upload` is also a valid file name: the other methods reach it.
        .route(
            "/upload",
            post(upload)
                .get(upload_named_file)
                .put(put_upload_named_file)
                .delete(remove_upload_named_file),
        )
        .route("/{name}", get(download).put(put).delete(remove))
        .method_not_allowed_fallback(wrong_method)
        .fallback(no_route)
        // Files may be many GiB and the upload streams, so the limit is
        // the operator's (`--http-max-body-mib`); past it the body read
        // fails with 413.
        .layer(body_limit)
        .layer(axum::middleware::from_fn_with_state(
            gateway.clone(),
            require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            gateway.clone(),
            refuse_grpc,
        ))
        .layer(axum::middleware::from_fn_with_state(
            gateway.clone(),
            bound_request,
        ))
        .with_state(gateway)
}

/// Bounds every request in time: its body must keep arriving (a gap of the
/// idle timeout ends it, and an upload answers 408, see [`body_status`]),
/// and its answer must start within the request timeout (else 408; the
/// handler is dropped, so an upload cut this way stores no manifest).
async fn bound_request(
    State(gw): State<Arc<Gateway>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let idle = gw.idle_timeout;
    let request = request.map(|body| Body::from_stream(idle_bounded(body, idle)));
    match tokio::time::timeout(gw.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            warn!(timeout = ?gw.request_timeout, "HTTP request timed out");
            plain(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "the request was not done within {} s (--http-request-timeout-secs)",
                    gw.request_timeout.as_secs()
                ),
            )
        }
    }
}

/// A request body that has sent nothing for `idle`.
#[derive(Debug)]
struct BodyStalled(Duration);

impl std::fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body sent nothing for {} s (--http-idle-timeout-secs)",
            self.0.as_secs()
        )
    }
}

impl std::error::Error for BodyStalled {}

/// `body`'s bytes, failing with [`BodyStalled`] at the first gap of `idle`.
fn idle_bounded(
    body: Body,
    idle: Duration,
) -> impl Stream<Item = std::result::Result<Bytes, axum::BoxError>> + Send + 'static {
    futures::stream::unfold(Some(body.into_data_stream()), move |body| async move {
        let mut body = body?;
        match tokio::time::timeout(idle, body.next()).await {
            Ok(Some(Ok(bytes))) => Some((Ok(bytes), Some(body))),
            Ok(Some(Err(e))) => Some((Err(e.into()), None)),
            Ok(None) => None,
            Err(_) => Some((Err(BodyStalled(idle).into()), None)),
        }
    })
}

/// Why a body past the limit is refused.
const TOO_LARGE: &str = "the request body is larger than the gateway takes (--http-max-body-mib)";

/// Why a multipart upload's body could not be read: what
/// [`BodyFailure::within`] finds, else what axum says (400 malformed, 413
/// too large).
fn multipart_failure(e: &axum::extract::multipart::MultipartError) -> BodyFailure {
    BodyFailure::within(e).unwrap_or_else(|| BodyFailure {
        status: e.status(),
        reason: e.body_text(),
    })
}

/// With a cluster token set, a request must carry it as `Authorization:
/// Bearer <token>`, except reads when `--public-reads` says so; otherwise
/// 401 with one line.
async fn require_token(
    State(gw): State<Arc<Gateway>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(token) = &gw.token else {
        return next.run(request).await;
    };
    let read = matches!(*request.method(), Method::GET | Method::HEAD);
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if (read && gw.public_reads) || token.admits(presented) {
        return next.run(request).await;
    }
    let mut response = error_response(&Error::Unauthenticated(
        "send the cluster token as \"Authorization: Bearer <token>\"".into(),
    ));
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// A gRPC client pointed at the gateway port by mistake (`--peer` with the
/// HTTP port) gets a gRPC status that names the node's gRPC address, so
/// it prints one clear line instead of a protocol error.
async fn refuse_grpc(
    State(gw): State<Arc<Gateway>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let is_grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if !is_grpc {
        return next.run(request).await;
    }
    let message = format!(
        "this port is an HTTP gateway, not gRPC; the node's gRPC address is {}",
        gw.client.entry()
    );
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    // 9 = FAILED_PRECONDITION: the call cannot work at this address.
    headers.insert("grpc-status", HeaderValue::from_static("9"));
    if let Ok(value) = HeaderValue::from_str(&message) {
        headers.insert("grpc-message", value);
    }
    response
}

/// `POST /upload`: stores every part of field [`UPLOAD_FIELD`] under its file
/// name. Parts of other fields are skipped. Files stored before a failing
/// one stay stored; the error line names them.
async fn upload(
    State(gw): State<Arc<Gateway>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let multipart = match multipart {
        Ok(multipart) => multipart,
        Err(rejection) => {
            return plain(
                StatusCode::BAD_REQUEST,
                &format!(
                    "{}: POST /upload takes a multipart/form-data body, each file a part of \
                     field {UPLOAD_FIELD:?} (curl -F {UPLOAD_FIELD}=@FILE); PUT /<name> takes \
                     the file itself as the body (curl -T FILE)",
                    rejection.body_text()
                ),
            )
        }
    };
    let Ok(_running) = gw.uploads.clone().try_acquire_owned() else {
        return busy();
    };
    let received = receive_parts(multipart, gw.max_parts, gw.as_ref()).await;
    if let Some((status, reason)) = received.failure {
        return upload_failed(status, &reason, &received.stored);
    }
    stored_response(&received.stored, &query, &headers)
}

/// `PUT /<name>`: stores the request body as the file `name`, streamed as
/// a part of `POST /upload` is, without the multipart framing around it
/// (`curl -T FILE http://node/` names the file after FILE). A body that
/// ends short of its `Content-Length`, stalls or passes the body limit
/// stores nothing.
async fn put(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(_running) = gw.uploads.clone().try_acquire_owned() else {
        return busy();
    };
    if let Err(e) = validate_name(&name) {
        return plain(StatusCode::BAD_REQUEST, &format!("{name:?}: {e}"));
    }
    let body = match gw.max_body {
        Some(max) => {
            // Refused before a byte is read: curl's `Expect: 100-continue`
            // then sends none.
            let declared = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            if declared.is_some_and(|len| len > max as u64) {
                return plain(StatusCode::PAYLOAD_TOO_LARGE, TOO_LARGE);
            }
            Body::new(http_body_util::Limited::new(body, max))
        }
        None => body,
    };
    let reader = StreamReader::new(body.into_data_stream().map_err(|e| {
        let failure = BodyFailure::within(&e).unwrap_or_else(|| BodyFailure {
            status: StatusCode::BAD_REQUEST,
            reason: format!("the request body could not be read: {e}"),
        });
        std::io::Error::other(failure)
    }));
    match store_part(gw.as_ref(), reader, &name).await {
        Ok(report) => stored_response(&[report], &query, &headers),
        Err((status, reason)) => plain(status, &reason),
    }
}

async fn put_upload_named_file(
    state: State<Arc<Gateway>>,
    query: Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    put(state, Path("upload".to_string()), query, headers, body).await
}

/// The answer to an upload that finds every permit taken: 429, to come back.
fn busy() -> Response {
    let mut response = plain(
        StatusCode::TOO_MANY_REQUESTS,
        "too many uploads running on this gateway; try again shortly",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The answer to an upload that stored `stored`: one line per file,
/// `name\tsize\tchunks`, or a JSON array when asked for.
fn stored_response(
    stored: &[UploadReport],
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    if wants_json(query, headers) {
        let files: Vec<serde_json::Value> = stored
            .iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.name,
                    "size": r.size,
                    "chunks": r.chunks,
                    "version": r.version,
                    r.checksum.name(): r.checksum.to_hex(),
                })
            })
            .collect();
        json(&serde_json::Value::Array(files))
    } else {
        let mut text = String::new();
        for r in stored {
            let _ = writeln!(text, "{}\t{}\t{}", r.name, r.size, r.chunks);
        }
        text.into_response()
    }
}

/// Where the files of an upload go: the ring, for the gateway; a test may
/// put anything there, so the multipart parsing runs without a ring.
pub(crate) trait PartSink {
    /// Stores the bytes `reader` yields as the file `name` (already a valid
    /// name). A read error carries a [`BodyFailure`] when the request body
    /// was at fault.
    fn store<R: AsyncRead + Unpin + Send>(
        &self,
        reader: R,
        name: &str,
    ) -> impl Future<Output = Result<UploadReport>> + Send;
}

impl PartSink for Gateway {
    async fn store<R: AsyncRead + Unpin + Send>(
        &self,
        reader: R,
        name: &str,
    ) -> Result<UploadReport> {
        self.client.upload(reader, name, &self.opts, &|_| {}).await
    }
}

/// What came of an upload's parts.
#[derive(Debug)]
pub(crate) struct Received {
    /// The files stored, in the order of their parts.
    pub stored: Vec<UploadReport>,
    /// What stopped the upload (the status to answer and a one-line
    /// reason), if anything did; no file at all is a failure too.
    pub failure: Option<(StatusCode, String)>,
}

/// Reads an upload's multipart body and hands every part of field
/// [`UPLOAD_FIELD`] to `sink` as it streams in, stopping at the first
/// part that fails: a malformed body, a part without a file name or with
/// a name [`validate_name`] refuses, more than `max_parts` files, or the
/// sink's own error. Parts of other fields are skipped.
pub(crate) async fn receive_parts(
    mut multipart: Multipart,
    max_parts: usize,
    sink: &impl PartSink,
) -> Received {
    let mut stored: Vec<UploadReport> = Vec::new();
    let mut parts = 0;
    let failure = loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) if stored.is_empty() => {
                let reason = format!("no file in multipart field {UPLOAD_FIELD:?}");
                break Some((StatusCode::BAD_REQUEST, reason));
            }
            Ok(None) => break None,
            Err(e) => {
                let failure = multipart_failure(&e);
                break Some((failure.status, failure.reason));
            }
        };
        if field.name() != Some(UPLOAD_FIELD) {
            debug!(field = ?field.name(), "skipping a multipart field that is not {UPLOAD_FIELD:?}");
            continue;
        }
        let Some(name) = field.file_name().map(str::to_owned) else {
            let reason = format!("a part of field {UPLOAD_FIELD:?} has no file name");
            break Some((StatusCode::BAD_REQUEST, reason));
        };
        if let Err(e) = validate_name(&name) {
            break Some((StatusCode::BAD_REQUEST, format!("{name:?}: {e}")));
        }
        parts += 1;
        if parts > max_parts {
            let reason = format!("more than {max_parts} files in one request");
            break Some((StatusCode::PAYLOAD_TOO_LARGE, reason));
        }
        let reader =
            StreamReader::new(field.map_err(|e| std::io::Error::other(multipart_failure(&e))));
        match store_part(sink, reader, &name).await {
            Ok(report) => stored.push(report),
            Err(failure) => break Some(failure),
        }
    };
    Received { stored, failure }
}

/// Stores what `reader` yields as the file `name` through `sink`; on
/// failure, the status to answer (the body's fault, from its
/// [`BodyFailure`], or the ring's) and a one-line reason naming the file.
async fn store_part<R: AsyncRead + Unpin + Send>(
    sink: &impl PartSink,
    reader: R,
    name: &str,
) -> std::result::Result<UploadReport, (StatusCode, String)> {
    match sink.store(reader, name).await {
        Ok(report) => {
            info!(name = %report.name, size = report.size, chunks = report.chunks, "stored via HTTP");
            Ok(report)
        }
        Err(e) => {
            warn!(name = %name, error = %e, "HTTP upload failed");
            let (status, reason) = match body_failure(&e) {
                Some(failure) => (failure.status, failure.reason.clone()),
                None => (status_of(&e), e.to_string()),
            };
            Err((status, format!("{name:?}: {reason}")))
        }
    }
}

/// Why an upload's request body could not be read, carried through the
/// `io::Error` that [`Client::upload`] sees, so the client's fault (a cut or
/// malformed body) is told apart from the ring's.
#[derive(Debug)]
struct BodyFailure {
    status: StatusCode,
    reason: String,
}

impl std::fmt::Display for BodyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for BodyFailure {}

impl BodyFailure {
    /// The failure a body read error `err` carries in its chain, where the
    /// gateway itself ended the body: 408 when it stalled, 413 past the
    /// body limit.
    fn within(err: &(dyn std::error::Error + 'static)) -> Option<BodyFailure> {
        let mut cause = Some(err);
        while let Some(err) = cause {
            if let Some(stalled) = err.downcast_ref::<BodyStalled>() {
                return Some(BodyFailure {
                    status: StatusCode::REQUEST_TIMEOUT,
                    reason: stalled.to_string(),
                });
            }
            if err.is::<http_body_util::LengthLimitError>() {
                return Some(BodyFailure {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    reason: TOO_LARGE.into(),
                });
            }
            cause = err.source();
        }
        None
    }
}

fn body_failure(err: &Error) -> Option<&BodyFailure> {
    match err {
        Error::Io { cause, .. } => cause.get_ref()?.downcast_ref::<BodyFailure>(),
        _ => None,
    }
}

fn upload_failed(status: StatusCode, reason: &str, stored: &[UploadReport]) -> Response {
    if stored.is_empty() {
        return plain(status, reason);
    }
    let names: Vec<&str> = stored.iter().map(|r| r.name.as_str()).collect();
    plain(
        status,
        &format!("{reason} (stored before it: {})", names.join(", ")),
    )
}

/// `GET /<name>`: the file, streamed chunk by chunk.
async fn download(State(gw): State<Arc<Gateway>>, Path(name): Path<String>) -> Response {
    let manifest = match gw.client.manifest(&name).await {
        Ok(manifest) => manifest,
        Err(e) => return error_response(&e),
    };
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(manifest.size));
    if let Some(value) = content_disposition(&name) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", manifest.checksum.to_hex())) {
        headers.insert(header::ETAG, etag);
    }
    // Lazy: a HEAD request (answered by this handler, body dropped) fetches no chunk.
    *response.body_mut() = Body::from_stream(verified_chunks(gw, manifest));
    response
}

async fn upload_named_file(state: State<Arc<Gateway>>) -> Response {
    download(state, Path("upload".to_string())).await
}

/// The file's chunks in order, fetched `parallel` ahead by the same
/// stream as [`Client::write_to`]'s ([`pieces`]), each checked against its
/// key ([`Client::fetch_verified`], which hands a new file's chunk hashes
/// on to the whole file's checksum, so each byte is hashed once); the
/// running size is checked against the manifest, and the last chunk is only
/// released once the whole file's checksum matches. The first error ends the
/// stream, which makes the server cut the connection.
fn verified_chunks(
    gw: Arc<Gateway>,
    manifest: Manifest,
) -> impl Stream<Item = Result<Bytes>> + Send + 'static {
    let left = manifest.piece_count();
    let fetches = pieces(
        gw.client.clone(),
        &manifest,
        gw.replicas,
        &gw.opts,
        ReadCheck::EachChunk,
    )
    .boxed();
    let state = Verify {
        fetches,
        digest: None,
        size: 0,
        left,
        manifest,
        finished: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.finished {
            return None;
        }
        let item = st.step().await;
        if let Some(Err(e)) = &item {
            warn!(name = %st.manifest.name, error = %e, "HTTP download aborted");
        }
        item.map(|item| (item, st))
    })
}

/// State of one download's verification.
struct Verify {
    /// Each chunk, checked against its key, with its BLAKE3 hash if the
    /// file's checksum is made of those (`Client::fetch_verified`).
    fetches: futures::stream::BoxStream<'static, Result<(Bytes, Option<[u8; 32]>)>>,
    /// Hashes the whole file on a thread of its own, while the connection
    /// writes the chunks it has been handed. Started by the first step, so
    /// a `HEAD` request (whose body is never polled) starts no thread;
    /// taken by the final check.
    digest: Option<FileDigest>,
    size: u64,
    /// Chunks not yet received.
    left: usize,
    manifest: Manifest,
    /// Set after the whole-file check or the first error: nothing follows.
    finished: bool,
}

impl Verify {
    async fn step(&mut self) -> Option<Result<Bytes>> {
        let algorithm = self.manifest.checksum.algorithm();
        let digest = self
            .digest
            .get_or_insert_with(|| FileDigest::start(algorithm, DIGEST_DEPTH, None));
        let (chunk, hash) = match self.fetches.next().await {
            Some(Ok(fetched)) => fetched,
            Some(Err(e)) => {
                self.finished = true;
                return Some(Err(e));
            }
            None => {
                // Only an empty file gets here unchecked.
                self.finished = true;
                return self.check_whole().await.err().map(Err);
            }
        };
        self.size += chunk.len() as u64;
        self.left = self.left.saturating_sub(1);
        if self.size > self.manifest.size {
            self.finished = true;
            return Some(Err(Error::Corrupt(format!(
                "{:?}: chunks hold more than the manifest's {} bytes",
                self.manifest.name, self.manifest.size
            ))));
        }
        if let Err(e) = digest.push(chunk.clone(), hash).await {
            self.finished = true;
            return Some(Err(e));
        }
        if self.left == 0 {
            self.finished = true;
            if let Err(e) = self.check_whole().await {
                return Some(Err(e));
            }
        }
        Some(Ok(chunk))
    }

    /// Waits for the digest of every chunk handed over and checks the file
    /// against its manifest.
    async fn check_whole(&mut self) -> Result<()> {
        let digest = self
            .digest
            .take()
            .ok_or_else(|| Error::Unavailable("the file digest was checked twice".into()))?;
        let (checksum, size) = digest.finish().await?;
        verify_whole(&self.manifest, size, checksum)
    }
}

/// `Content-Disposition: attachment` with an ASCII fallback name and the
/// exact name in RFC 5987 form, so header values stay ASCII whatever the name.
pub(crate) fn content_disposition(name: &str) -> Option<HeaderValue> {
    let fallback: String = name
        .chars()
        .map(|c| {
            if (c.is_ascii_graphic() || c == ' ') && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut exact = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            exact.push(char::from(b));
        } else {
            let _ = write!(exact, "%{b:02X}");
        }
    }
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{exact}"
    ))
    .ok()
}

/// `GET /`: every live file on the ring.
async fn list(
    State(gw): State<Arc<Gateway>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    // The ring-wide listing comes sorted by name.
    let files = match gw.client.list().await {
        Ok(files) => files,
        Err(e) => return error_response(&e),
    };
    if wants_json(&query, &headers) {
        let files: Vec<serde_json::Value> = files.iter().map(file_json).collect();
        json(&serde_json::Value::Array(files))
    } else {
        // Names hold no control characters, so a tab cannot be part of one.
        let mut text = String::new();
        for f in &files {
            let _ = writeln!(text, "{}\t{}", f.name, f.size);
        }
        text.into_response()
    }
}

/// `DELETE /<name>`.
async fn remove(State(gw): State<Arc<Gateway>>, Path(name): Path<String>) -> Response {
    match gw.client.remove(&name).await {
        Ok(version) => {
            info!(name = %name, version, "deleted via HTTP");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => error_response(&e),
    }
}

async fn remove_upload_named_file(state: State<Arc<Gateway>>) -> Response {
    remove(state, Path("upload".to_string())).await
}

/// What the gateway serves, for the answers to requests it does not.
const ROUTES: &str = "GET /, GET /<name>, POST /upload, PUT /<name> or DELETE /<name>";

async fn no_route() -> Response {
    plain(
        StatusCode::NOT_FOUND,
        &format!("no such route: use {ROUTES}"),
    )
}

/// A path that is served, asked with a method it does not take: 405 with
/// one line (axum adds the `Allow` header).
async fn wrong_method(method: Method) -> Response {
    plain(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("{method} is not served at this path: use {ROUTES}"),
    )
}

/// JSON when the query has `json` or the client accepts JSON.
fn wants_json(query: &HashMap<String, String>, headers: &HeaderMap) -> bool {
    query.contains_key("json")
        || headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("application/json"))
}

fn json(value: &serde_json::Value) -> Response {
    let mut response = format!("{value}\n").into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The one mapping from the library's errors to HTTP statuses.
fn status_of(err: &Error) -> StatusCode {
    match err {
        Error::InvalidArgument(_) => StatusCode::BAD_REQUEST,
        Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        // A peer's full disk arrives as DiskFull too (`peer::status_to_error`).
        Error::DiskFull(_) => StatusCode::INSUFFICIENT_STORAGE,
        Error::Remote {
            retryable: false, ..
        } => StatusCode::BAD_GATEWAY,
        Error::Remote {
            retryable: true, ..
        }
        | Error::Unreachable { .. }
        | Error::Unavailable(_)
        | Error::Leaving { .. }
        | Error::Shutdown => StatusCode::SERVICE_UNAVAILABLE,
        Error::BadReply { .. } => StatusCode::BAD_GATEWAY,
        Error::Corrupt(_) | Error::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error_response(err: &Error) -> Response {
    plain(status_of(err), &err.to_string())
}

/// A plain-text answer of exactly one line.
fn plain(status: StatusCode, reason: &str) -> Response {
    let line: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    (status, format!("{}\n", line.trim())).into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn disposition_is_ascii_and_keeps_the_exact_name() {
        let v = content_disposition("résumé \"final\".txt").unwrap();
        let s = v.to_str().unwrap();
        assert_eq!(
            s,
            "attachment; filename=\"r_sum_ _final_.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22.txt"
        );
    }

    #[test]
    fn statuses() {
        let table = [
            (Error::invalid("x"), 400),
            (Error::NotFound("x".into()), 404),
            (Error::DiskFull("x".into()), 507),
            (
                Error::Remote {
                    peer: "p".into(),
                    message: "x".into(),
                    retryable: false,
                },
                502,
            ),
            (Error::Unavailable("x".into()), 503),
            (Error::Shutdown, 503),
            (Error::Corrupt("x".into()), 500),
        ];
        for (err, want) in table {
            assert_eq!(status_of(&err).as_u16(), want, "{err}");
        }
    }

    #[test]
    fn plain_is_one_line() {
        let r = plain(StatusCode::BAD_REQUEST, "a\nb\r\n");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
}
