//! `POST /upload` bodies, through the gateway's own multipart loop
//! ([`receive_parts`]) with a sink in place of the ring.
//!
//! A body is built from parts (the `files` field and others, file names
//! from [`super::name`], contents that sometimes hold pieces of the
//! boundary), damaged by [`super::mutate`], and delivered in random pieces,
//! as a slow or odd client would send it. For a body left intact whose
//! headers say exactly what the generator meant, the stored files are
//! predicted and compared byte for byte.

use std::sync::atomic::{AtomicU64, Ordering};

use arbtest::arbitrary::{self, Unstructured};
use axum::body::Body;
use axum::extract::{FromRequest, Multipart};
use axum::http::{header, HeaderValue, Request, StatusCode};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::Outcome;
use crate::client::UploadReport;
use crate::error::{Error, Result};
use crate::gateway::{receive_parts, PartSink, UPLOAD_FIELD};
use crate::store::{validate_name, Checksum, NEW_FILES};

/// Inputs whose outcome was predicted part by part.
static PREDICTED: AtomicU64 = AtomicU64::new(0);

pub(super) fn run() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    super::run("multipart", 65536, |u| {
        let upload = Upload::new(u)?;
        let limit = super::INPUT_TIME_LIMIT;
        let outcome = runtime
            .block_on(async { tokio::time::timeout(limit, upload.check()).await })
            .unwrap_or_else(|_| panic!("an upload of {} bytes hung", upload.body.len()));
        Ok(outcome)
    });
    println!(
        "fuzz multipart: {} inputs compared with the parts meant",
        PREDICTED.load(Ordering::Relaxed)
    );
}

/// Stores nothing: reads each part to its end and reports its length and
/// SHA-256, as the ring's upload would.
struct Digests;

impl PartSink for Digests {
    async fn store<R: AsyncRead + Unpin + Send>(
        &self,
        mut reader: R,
        name: &str,
    ) -> Result<UploadReport> {
        let mut data = Vec::new();
        reader
            .read_to_end(&mut data)
            .await
            .map_err(|e| Error::io("reading the upload", e))?;
        Ok(UploadReport {
            name: name.to_string(),
            size: data.len() as u64,
            chunks: 0,
            chunks_skipped: 0,
            version: 0,
            checksum: Checksum::of(NEW_FILES, &data),
        })
    }
}

/// One part as the generator meant it.
#[derive(Debug)]
struct Part {
    field: &'static str,
    file_name: Option<String>,
    data: Vec<u8>,
}

/// One upload request.
#[derive(Debug)]
struct Upload {
    content_type: String,
    body: Vec<u8>,
    /// Where the body is cut into the pieces it arrives in.
    cuts: Vec<usize>,
    max_parts: usize,
    /// The parts, when the request says exactly what they are: untouched
    /// by edits, headers that carry each name as it is.
    meant: Option<Vec<Part>>,
}

/// What damages a multipart body most: line ends, dashes, header syntax.
const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b"--",
    b"--X",
    b"--X--",
    b"\r\n--X\r\n",
    b"Content-Disposition: form-data; name=\"files\"; filename=\"f\"\r\n",
    b"Content-Type: text/plain\r\n",
    b"; name=",
    b"; filename=",
    b"filename*=UTF-8''",
    b"\"",
    b":",
    b" ",
];

/// Pieces of names that pass the rules.
const PLAIN: &[&str] = &["a", "report", "my file", "é", "日本語", "🦀", "-", "1"];

/// Boundaries: short, long, and with every character RFC 2046 allows.
const BOUNDARIES: &[&str] = &[
    "X",
    "----WebKitFormBoundary7MA4YWxkTrZu0gW",
    "a'()+_,-./:=?b",
    "0123456789012345678901234567890123456789012345678901234567890123456789",
];

impl Upload {
    fn new(u: &mut Unstructured<'_>) -> arbitrary::Result<Upload> {
        let boundary = *u.choose(BOUNDARIES)?;
        let mut parts = Vec::new();
        for _ in 0..u.int_in_range(0..=5)? {
            let field = *u.choose(&[UPLOAD_FIELD, UPLOAD_FIELD, "file", "other", ""])?;
            // Mostly names that pass, so uploads get past their first part.
            let file_name = match u.int_in_range(0..=7)? {
                0 => None,
                1 | 2 => Some(super::name(u)?),
                _ => Some(format!("{}.bin", super::text(u, PLAIN, 3)?)),
            };
            parts.push(Part {
                field,
                file_name,
                data: contents(u, boundary)?,
            });
        }
        let mut body = Vec::new();
        if u.ratio(1, 8)? {
            body.extend_from_slice(b"a preamble, ignored\r\n");
        }
        let mut exact = true;
        for part in &parts {
            body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            body.extend_from_slice(b"Content-Disposition: form-data; name=\"");
            body.extend_from_slice(part.field.as_bytes());
            body.push(b'"');
            if let Some(name) = &part.file_name {
                body.extend_from_slice(b"; filename=\"");
                body.extend_from_slice(name.as_bytes());
                body.push(b'"');
                // Quotes, backslashes and control characters change how
                // the header reads (or whether it does).
                exact &= !name.contains(['"', '\\']) && !name.contains(char::is_control);
            }
            body.extend_from_slice(b"\r\n");
            if u.ratio(1, 2)? {
                body.extend_from_slice(b"Content-Type: application/octet-stream\r\n");
            }
            body.extend_from_slice(b"\r\n");
            body.extend_from_slice(&part.data);
            body.extend_from_slice(b"\r\n");
            // The contents, after the blank line that ends the headers, must
            // not hold the delimiter.
            let after_headers = [b"\r\n".as_slice(), &part.data].concat();
            exact &= !contains(&after_headers, format!("\r\n--{boundary}").as_bytes());
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let before = body.clone();
        super::mutate(u, &mut body, TOKENS)?;
        exact &= body == before;
        // A boundary with a character that is special in a header's
        // parameters must be quoted (RFC 2045).
        let token = !boundary.contains(|c: char| "()<>@,;:\\\"/[]?=".contains(c));
        let mut content_type = if token && u.ratio(1, 2)? {
            format!("multipart/form-data; boundary={boundary}")
        } else {
            format!("multipart/form-data; boundary=\"{boundary}\"")
        };
        if u.ratio(1, 16)? {
            let mut bytes = content_type.into_bytes();
            super::mutate(u, &mut bytes, &[b";", b"=", b"\"", b"boundary="])?;
            content_type = String::from_utf8_lossy(&bytes).into_owned();
            exact = false;
        }
        let mut cuts: Vec<usize> = (0..u.int_in_range(0..=8)?)
            .map(|_| u.choose_index(body.len() + 1))
            .collect::<arbitrary::Result<_>>()?;
        cuts.sort_unstable();
        Ok(Upload {
            content_type,
            body,
            cuts,
            max_parts: u.int_in_range(1..=4)?,
            meant: exact.then_some(parts),
        })
    }

    /// Feeds the body to the gateway's loop and checks what it made of it.
    async fn check(&self) -> Outcome {
        let mut pieces = Vec::new();
        let mut at = 0;
        for &cut in self.cuts.iter().chain([&self.body.len()]) {
            pieces.push(Ok::<_, std::io::Error>(Bytes::copy_from_slice(
                &self.body[at..cut],
            )));
            at = cut;
        }
        // A header value HTTP cannot carry never reaches the gateway.
        let Ok(content_type) = HeaderValue::from_str(&self.content_type) else {
            assert!(self.meant.is_none(), "{self:?}");
            return Outcome::Refused;
        };
        let request = Request::builder()
            .method("POST")
            .uri("/upload")
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from_stream(futures::stream::iter(pieces)))
            .expect("a request");
        let multipart = match Multipart::from_request(request, &()).await {
            Ok(multipart) => multipart,
            Err(rejection) => {
                use axum::response::IntoResponse;
                let status = rejection.into_response().status();
                assert!(status.is_client_error(), "{status}: {self:?}");
                assert!(self.meant.is_none(), "{status}: {self:?}");
                return Outcome::Refused;
            }
        };
        let received = receive_parts(multipart, self.max_parts, &Digests).await;
        assert!(received.stored.len() <= self.max_parts, "{received:?}");
        for report in &received.stored {
            assert!(validate_name(&report.name).is_ok(), "{report:?}");
        }
        if let Some(parts) = &self.meant {
            PREDICTED.fetch_add(1, Ordering::Relaxed);
            let (stored, failure) = expect(parts, self.max_parts);
            let got: Vec<Stored<'_>> = received
                .stored
                .iter()
                .map(|r| (r.name.as_str(), r.size, r.checksum))
                .collect();
            assert_eq!(got, stored, "{self:?}");
            assert_eq!(received.failure.as_ref().map(|f| f.0), failure, "{self:?}");
        }
        match &received.failure {
            None => {
                assert!(!received.stored.is_empty());
                Outcome::Accepted
            }
            Some((status, reason)) => {
                // The sink never fails: every failure is the request's fault.
                assert!(status.is_client_error(), "{status} {reason}: {self:?}");
                assert!(!reason.is_empty());
                Outcome::Refused
            }
        }
    }
}

/// A stored file as the gateway reports it: name, size and checksum.
type Stored<'a> = (&'a str, u64, Checksum);

/// What the gateway must make of `parts`: the files stored (name, size,
/// checksum), and the status of what stops it, if anything does.
fn expect(parts: &[Part], max_parts: usize) -> (Vec<Stored<'_>>, Option<StatusCode>) {
    let mut stored = Vec::new();
    for part in parts.iter().filter(|p| p.field == UPLOAD_FIELD) {
        let Some(name) = part.file_name.as_deref() else {
            return (stored, Some(StatusCode::BAD_REQUEST));
        };
        if validate_name(name).is_err() {
            return (stored, Some(StatusCode::BAD_REQUEST));
        }
        if stored.len() == max_parts {
            return (stored, Some(StatusCode::PAYLOAD_TOO_LARGE));
        }
        let checksum = Checksum::of(NEW_FILES, &part.data);
        stored.push((name, part.data.len() as u64, checksum));
    }
    let failure = stored.is_empty().then_some(StatusCode::BAD_REQUEST);
    (stored, failure)
}

/// A part's contents: empty, short, around multer's buffer sizes, or
/// holding the bytes of a boundary line that is not one.
fn contents(u: &mut Unstructured<'_>, boundary: &str) -> arbitrary::Result<Vec<u8>> {
    let len = *u.choose(&[0, 1, 7, 100, 4095, 4096, 8193, 20_000])?;
    let mut data = u.bytes(len.min(u.len()))?.to_vec();
    if u.ratio(1, 4)? && !data.is_empty() {
        let at = u.choose_index(data.len())?;
        let near_miss = match u.int_in_range(0..=2)? {
            0 => format!("\r\n--{boundary}x"),
            1 => format!("--{boundary}"),
            _ => format!("\r\n-{boundary}"),
        };
        data.splice(at..at, near_miss.into_bytes());
    }
    Ok(data)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
