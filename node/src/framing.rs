//! gRPC framing the node does itself where tonic's would copy each chunk
//! piece: received bodies cut after large messages' headers, `PutChunk`
//! bodies and `GetChunk` answers framed by hand, and both read without a
//! copy.
//!
//! A gRPC message is a 5-byte header (a compression flag, then the length,
//! big-endian) and that many bytes. tonic's decoder copies each HTTP/2 frame
//! it receives into its buffer and, on reading a header, reserves room for
//! the message's length *beyond* what the buffer already holds. With frames
//! of up to [`crate::peer::FRAME_BYTES`], a 256 KiB piece arrives in one
//! frame with its header, so the reservation finds the whole piece there,
//! grows the buffer and copies it again: in a profile of an r=3 upload,
//! 3.9% of the nodes' CPU (docs/PERFORMANCE.md, change 64). Handing tonic
//! the header as a frame of its own makes it reserve on an empty buffer;
//! the piece then lands in that room in one copy.
//!
//! Sending, tonic's encoder copies every message into its encode buffer,
//! 256 KiB pieces included: a tenth of a client's CPU on an upload, and 5%
//! of the nodes' on an r=3 upload, where the owner passes each chunk on
//! (change 65). [`put_chunk_body`] frames a `PutChunk` by hand instead,
//! each piece a slice of the chunk it came from after a few bytes of
//! header; [`crate::peer::PeerPool`] sends it on the same channel and
//! reads the answer with tonic's own decoder.
//!
//! Receiving, tonic's decoder copies every frame into its buffer before it
//! decodes. [`MessageReader`] reads a body's messages as the slices of the
//! frames they came in instead, and [`put_chunk_data`] takes a piece's data
//! out of its message by hand, so the node's server reads a `PutChunk`
//! with no copy before the one into its disk writer's aligned blocks
//! (`server::StoreRoutes`, change 66).
//!
//! A `GetChunk` goes the same way in the other direction (change 68): the
//! node frames its answer by hand ([`get_chunk_answer`]), each piece a
//! slice of the chunk it read, and the reader takes each piece's data out
//! of the frames it arrived in ([`chunk_piece_data`]), so the one copy
//! left on either side is the reader's into its chunk buffer.
//!
//! [`HeaderCut`] wraps a body and passes every byte through unchanged, in
//! the same order: it only ends a data frame early, right after the header
//! of a message of at least [`CUT_FROM_BYTES`]. Smaller messages, where the
//! second copy is cheap, pass as they came. It is applied to every request a
//! node's gRPC server receives ([`cut_request`]) and every answer a
//! [`crate::peer::PeerPool`] channel receives ([`cut_response`]).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use chord_proto::pb;
use futures::{Stream, StreamExt};
use http_body::{Body, Frame, SizeHint};
use http_body_util::StreamBody;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use prost::Message;

/// Messages this long or longer get their header in a frame of its own.
pub const CUT_FROM_BYTES: usize = 32 * 1024;

/// Bytes of a gRPC message header: the compression flag and a u32 length.
const HEADER_BYTES: usize = 5;

/// Where a stream of gRPC messages stands, byte by byte.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Position {
    /// Bytes of the current message still to come; 0 in a header.
    body_left: usize,
    /// Header bytes seen so far (0..5).
    header_seen: usize,
    /// The header being read.
    header: [u8; HEADER_BYTES],
}

impl Position {
    /// Moves through `data` from its start. Returns where to end a frame:
    /// just after a header that announces a message of at least
    /// [`CUT_FROM_BYTES`], if bytes of `data` follow it. The position is
    /// then at that point; otherwise it is at the end of `data`.
    fn advance(&mut self, data: &[u8]) -> Option<usize> {
        let mut at = 0;
        while at < data.len() {
            if self.body_left > 0 {
                let n = self.body_left.min(data.len() - at);
                self.body_left -= n;
                at += n;
                continue;
            }
            self.header[self.header_seen] = data[at];
            self.header_seen += 1;
            at += 1;
            if self.header_seen == HEADER_BYTES {
                self.header_seen = 0;
                let [_, len @ ..] = self.header;
                self.body_left = u32::from_be_bytes(len) as usize;
                if self.body_left >= CUT_FROM_BYTES && at < data.len() {
                    return Some(at);
                }
            }
        }
        None
    }
}

/// A body that yields the same bytes as `B`, with a frame ending after each
/// large message's header (see the module's comment).
#[derive(Debug)]
pub struct HeaderCut<B> {
    inner: B,
    /// What is left of the last data frame after a cut.
    rest: Option<Bytes>,
    at: Position,
}

impl<B> HeaderCut<B> {
    pub fn new(inner: B) -> Self {
        HeaderCut {
            inner,
            rest: None,
            at: Position::default(),
        }
    }

    /// The next piece of `data` to hand on; what follows it is kept.
    fn cut(&mut self, mut data: Bytes) -> Bytes {
        match self.at.advance(&data) {
            Some(end) => {
                let head = data.split_to(end);
                self.rest = Some(data);
                head
            }
            None => data,
        }
    }
}

impl<B> Body for HeaderCut<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some(rest) = this.rest.take() {
            return Poll::Ready(Some(Ok(Frame::data(this.cut(rest)))));
        }
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            other => return Poll::Ready(other),
        };
        Poll::Ready(Some(Ok(match frame.into_data() {
            Ok(data) => Frame::data(this.cut(data)),
            Err(trailers) => trailers,
        })))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let held = self.rest.as_ref().map_or(0, |r| r.remaining() as u64);
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + held);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + held);
        }
        hint
    }
}

/// The gRPC path of `Store.PutChunk`, which [`crate::peer::PeerPool`] calls
/// with a body of [`put_chunk_body`]'s framing and the node's server reads
/// with a [`MessageReader`]. tonic's generated code holds it only as a
/// literal; a wrong path would fail every upload.
pub const PUT_CHUNK_PATH: &str = "/chord.v1.Store/PutChunk";

/// The gRPC path of `Store.GetChunk`, answered by `server::StoreRoutes`
/// with [`get_chunk_answer`] and read by [`crate::peer::PeerPool`] with a
/// [`MessageReader`].
pub const GET_CHUNK_PATH: &str = "/chord.v1.Store/GetChunk";

/// Field number of `PutChunkRequest.data` (`proto/chord/v1/chord.proto`).
const PUT_CHUNK_DATA_FIELD: u32 = 2;

/// Field numbers of `ChunkPiece.data` and `ChunkPiece.size`.
const CHUNK_PIECE_DATA_FIELD: u32 = 1;
const CHUNK_PIECE_SIZE_FIELD: u32 = 2;

/// The most bytes a field's key and a length or varint value take: a key
/// of one byte (field numbers under 16) and a varint of at most ten.
const FIELD_HEAD_BYTES: usize = 11;

/// `message` as one gRPC message: uncompressed, its length, its bytes.
fn grpc_message(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(HEADER_BYTES + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    // Cannot fail: the buffer has the room.
    let _ = message.encode(&mut buf);
    buf.freeze()
}

/// What goes on the wire before a piece of `len` bytes to make it a whole
/// gRPC message whose first field, `field`, holds the piece and whose
/// other fields take `after` bytes after it.
fn piece_prefix(field: u32, len: usize, after: usize) -> Bytes {
    let message_len = key_len(field) + encoded_len_varint(len as u64) + len + after;
    let mut buf = BytesMut::with_capacity(16);
    buf.put_u8(0);
    buf.put_u32(message_len as u32);
    encode_key(field, WireType::LengthDelimited, &mut buf);
    encode_varint(len as u64, &mut buf);
    buf.freeze()
}

/// The varint after the key of field `field` of type `wire` that `head`,
/// a message's first bytes (up to [`FIELD_HEAD_BYTES`]), starts with, and
/// how many bytes the key and the varint take. For a bytes field the
/// varint is their length and they follow it; for a varint field it is
/// the value.
fn leading_field(head: &[u8], field: u32, wire: WireType) -> Option<(usize, u64)> {
    let key = (field << 3) | wire as u32;
    if head.first().map(|&b| u32::from(b)) != Some(key) {
        return None;
    }
    let mut rest = &head[1..];
    let value = prost::encoding::decode_varint(&mut rest).ok()?;
    Some((head.len() - rest.len(), value))
}

/// The data of a `PutChunkRequest` whose only field is its data, as
/// [`put_chunk_body`] frames each piece: the message's bytes after the
/// field's key and length, still the slices they arrived in. `Err` gives
/// back any other message, for prost to decode.
pub fn put_chunk_data(mut message: Piece) -> Result<Piece, Piece> {
    let (head, seen) = message.head::<FIELD_HEAD_BYTES>();
    match leading_field(
        &head[..seen],
        PUT_CHUNK_DATA_FIELD,
        WireType::LengthDelimited,
    ) {
        Some((prefix, len)) if prefix as u64 + len == message.len() as u64 => {
            message.advance(prefix);
            Ok(message)
        }
        _ => Err(message),
    }
}

/// The messages of a `GetChunk` answer for chunk `data`, as the node's
/// server sends them: one `ChunkPiece` per piece of at most
/// [`crate::PIECE_BYTES`], the first carrying the chunk's size. The same
/// bytes tonic's encoder would send for those messages, each piece a
/// slice of `data` rather than a copy.
pub fn get_chunk_frames(data: &Bytes) -> Vec<Bytes> {
    let size = data.len() as u64;
    let mut frames = Vec::new();
    for (i, piece) in crate::wire::pieces(data).enumerate() {
        // prost leaves out a size of 0, so only the first piece has one.
        let mut after = BytesMut::new();
        if i == 0 {
            encode_key(CHUNK_PIECE_SIZE_FIELD, WireType::Varint, &mut after);
            encode_varint(size, &mut after);
        }
        frames.push(piece_prefix(
            CHUNK_PIECE_DATA_FIELD,
            piece.len(),
            after.len(),
        ));
        frames.push(piece);
        if !after.is_empty() {
            frames.push(after.freeze());
        }
    }
    frames
}

/// The data and the size field of a `ChunkPiece` laid out as
/// [`get_chunk_frames`] frames it (data first, then the size if it is
/// not 0), the data still the slices it arrived in. `Err` gives back any
/// other message, for prost to decode.
pub fn chunk_piece_data(mut message: Piece) -> Result<(Piece, u64), Piece> {
    if message.is_empty() {
        return Ok((message, 0));
    }
    let (head, seen) = message.head::<FIELD_HEAD_BYTES>();
    let data_field = leading_field(
        &head[..seen],
        CHUNK_PIECE_DATA_FIELD,
        WireType::LengthDelimited,
    );
    let Some((prefix, len)) = data_field else {
        return Err(message);
    };
    let Some(after) = (message.len() as u64).checked_sub(prefix as u64 + len) else {
        return Err(message);
    };
    let size = if after == 0 {
        0
    } else if after as usize <= FIELD_HEAD_BYTES {
        let tail = message.split_off(message.len() - after as usize);
        let (bytes, n) = tail.head::<FIELD_HEAD_BYTES>();
        // The size field and nothing after it.
        match leading_field(&bytes[..n], CHUNK_PIECE_SIZE_FIELD, WireType::Varint) {
            Some((used, size)) if used == n => size,
            _ => {
                message.append(tail);
                return Err(message);
            }
        }
    } else {
        return Err(message);
    };
    message.advance(prefix);
    Ok((message, size))
}

/// The request body of a `PutChunk`: `header`, then a message per piece.
/// The same bytes tonic's encoder would send, without a copy of a piece.
pub fn put_chunk_body(
    header: pb::PutChunkHeader,
    pieces: impl Stream<Item = Piece> + Send + 'static,
) -> tonic::body::Body {
    let first = grpc_message(&pb::PutChunkRequest {
        body: Some(pb::put_chunk_request::Body::Header(header)),
    });
    let rest = pieces.flat_map(|piece| {
        let prefix = piece_prefix(PUT_CHUNK_DATA_FIELD, piece.len(), 0);
        futures::stream::iter(std::iter::once(prefix).chain(piece.parts))
    });
    let frames = futures::stream::once(async { first })
        .chain(rest)
        .map(|bytes| Ok::<_, tonic::Status>(Frame::data(bytes)));
    tonic::body::Body::new(StreamBody::new(frames))
}

/// Bytes as they arrived: the slices of the frames that held them, in order
/// (one slice for bytes cut from a buffer in memory). A piece of chunk data
/// travels so from the frames a node receives it in to the successors it
/// passes it on to, and to its disk writer, which copies it once into
/// aligned blocks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Piece {
    parts: Vec<Bytes>,
    len: usize,
}

impl Piece {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The slices, in order; none is empty.
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// The first `N` bytes (fewer if the piece is shorter), copied out,
    /// and how many there were.
    fn head<const N: usize>(&self) -> ([u8; N], usize) {
        head_of(&self.parts)
    }

    /// Drops the first `n` bytes (at most [`Piece::len`]).
    fn advance(&mut self, mut n: usize) {
        self.len -= n;
        let mut whole = 0;
        for part in &mut self.parts {
            if part.len() > n {
                part.advance(n);
                break;
            }
            n -= part.len();
            whole += 1;
        }
        self.parts.drain(..whole);
    }

    /// Cuts the piece in two at byte `at` (at most [`Piece::len`]) and
    /// returns what follows it.
    fn split_off(&mut self, at: usize) -> Piece {
        let mut rest = Piece::default();
        let mut kept = 0;
        let mut i = 0;
        while i < self.parts.len() {
            let len = self.parts[i].len();
            if kept + len <= at {
                kept += len;
                i += 1;
                continue;
            }
            if kept < at {
                let tail = self.parts[i].split_off(at - kept);
                rest.parts.push(tail);
                i += 1;
            }
            break;
        }
        rest.parts.extend(self.parts.drain(i..));
        rest.len = self.len - at;
        self.len = at;
        rest
    }

    /// Puts `rest`'s bytes after this piece's.
    fn append(&mut self, rest: Piece) {
        self.len += rest.len;
        self.parts.extend(rest.parts);
    }

    /// The bytes in one buffer: the slice itself if there is one, else a
    /// copy.
    pub fn into_contiguous(mut self) -> Bytes {
        if self.parts.len() == 1 {
            return self.parts.remove(0);
        }
        let mut whole = BytesMut::with_capacity(self.len);
        for part in &self.parts {
            whole.extend_from_slice(part);
        }
        whole.freeze()
    }
}

/// The first `N` bytes of `parts` laid end to end (fewer if they are
/// shorter), copied out, and how many there were.
fn head_of<'a, const N: usize>(parts: impl IntoIterator<Item = &'a Bytes>) -> ([u8; N], usize) {
    let mut head = [0; N];
    let mut seen = 0;
    for part in parts {
        let n = part.len().min(N - seen);
        head[seen..seen + n].copy_from_slice(&part[..n]);
        seen += n;
        if seen == N {
            break;
        }
    }
    (head, seen)
}

impl From<Bytes> for Piece {
    fn from(bytes: Bytes) -> Piece {
        let len = bytes.len();
        let parts = if bytes.is_empty() {
            Vec::new()
        } else {
            vec![bytes]
        };
        Piece { parts, len }
    }
}

/// Reads gRPC messages from a body without copying their bytes: each
/// message comes out as the slices of the HTTP/2 frames it arrived in (a
/// [`Piece`]), however the sender's flow control cut them. tonic's decoder
/// instead copies every frame into a buffer of its own: 5.7% of the nodes'
/// CPU in a profile of an r=3 upload (docs/PERFORMANCE.md, change 66).
#[derive(Debug)]
pub struct MessageReader<B> {
    body: B,
    /// Data received and not read yet, in the frames it came in.
    frames: VecDeque<Bytes>,
    /// Bytes in `frames`.
    buffered: usize,
    /// Longest message taken; a longer one is refused before it is read.
    max_message_bytes: usize,
    /// The trailers that ended the body, once they came.
    trailers: Option<http::HeaderMap>,
}

impl<B> MessageReader<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new(body: B, max_message_bytes: usize) -> Self {
        MessageReader {
            body,
            frames: VecDeque::new(),
            buffered: 0,
            max_message_bytes,
            trailers: None,
        }
    }

    /// The status an answer's trailers carry, for after
    /// [`MessageReader::next_message`] has found the end of the body: OK,
    /// the error the sender ended with, or an error if the body ended with
    /// no status at all (an answer cut off), as tonic's clients take them.
    pub fn status(&self) -> Result<(), tonic::Status> {
        match self
            .trailers
            .as_ref()
            .and_then(tonic::Status::from_header_map)
        {
            Some(status) if status.code() == tonic::Code::Ok => Ok(()),
            Some(status) => Err(status),
            None => Err(tonic::Status::internal("the answer ended with no status")),
        }
    }

    /// The bytes of the next message, `None` at the end of the body. The
    /// errors are tonic's for the same faults: a message over the limit, a
    /// compressed one (no compression is agreed), one cut off by the end of
    /// the body, and the body's own errors.
    pub async fn next_message(&mut self) -> Result<Option<Piece>, tonic::Status> {
        loop {
            if let Some(message) = self.take_message()? {
                return Ok(Some(message));
            }
            match std::future::poll_fn(|cx| Pin::new(&mut self.body).poll_frame(cx)).await {
                None if self.buffered == 0 => return Ok(None),
                None => return Err(tonic::Status::internal("the stream ended inside a message")),
                Some(Err(e)) => return Err(tonic::Status::from_error(e.into())),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        if !data.is_empty() {
                            self.buffered += data.len();
                            self.frames.push_back(data);
                        }
                    }
                    // A request's trailers carry nothing the node reads;
                    // an answer's carry its status (`status`).
                    Err(frame) => self.trailers = frame.into_trailers().ok(),
                },
            }
        }
    }

    /// The next message if all of it is here.
    fn take_message(&mut self) -> Result<Option<Piece>, tonic::Status> {
        if self.buffered < HEADER_BYTES {
            return Ok(None);
        }
        let ([compressed, len @ ..], _) = head_of::<HEADER_BYTES>(&self.frames);
        if compressed != 0 {
            return Err(tonic::Status::internal(
                "a compressed message, but no compression was agreed",
            ));
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > self.max_message_bytes {
            return Err(tonic::Status::out_of_range(format!(
                "a message of {len} bytes, over the limit of {}",
                self.max_message_bytes
            )));
        }
        if self.buffered < HEADER_BYTES + len {
            return Ok(None);
        }
        self.take(HEADER_BYTES);
        Ok(Some(self.take(len)))
    }

    /// The next `len` buffered bytes (there are that many), as slices of
    /// the frames that hold them.
    fn take(&mut self, len: usize) -> Piece {
        self.buffered -= len;
        let mut parts = Vec::new();
        let mut left = len;
        while left > 0 {
            let Some(front) = self.frames.front_mut() else {
                break;
            };
            if front.len() > left {
                parts.push(front.split_to(left));
                left = 0;
            } else {
                left -= front.len();
                parts.extend(self.frames.pop_front());
            }
        }
        Piece { parts, len }
    }
}

/// `message` decoded, as tonic's decoder reports a failure.
pub fn decode<M: Message + Default>(message: Piece) -> Result<M, tonic::Status> {
    M::decode(message.into_contiguous()).map_err(|e| tonic::Status::internal(e.to_string()))
}

/// The HTTP answer to a unary gRPC call: `answer` as its one message and a
/// status of OK in the trailers, as tonic's server sends it, or an error
/// status alone.
pub fn unary_answer(
    answer: Result<impl Message, tonic::Status>,
) -> http::Response<tonic::body::Body> {
    grpc_answer(answer.map(|message| vec![grpc_message(&message)]))
}

/// The HTTP answer to a `GetChunk`: the chunk's pieces
/// ([`get_chunk_frames`]) and a status of OK, or an error status alone.
pub fn get_chunk_answer(answer: Result<Bytes, tonic::Status>) -> http::Response<tonic::body::Body> {
    grpc_answer(answer.map(|data| get_chunk_frames(&data)))
}

/// The request body of a unary call: `message`, framed.
pub fn unary_body(message: &impl Message) -> tonic::body::Body {
    let frame = Ok::<_, tonic::Status>(Frame::data(grpc_message(message)));
    tonic::body::Body::new(StreamBody::new(futures::stream::iter([frame])))
}

/// An answer of the data frames `frames` then a status of OK in the
/// trailers, or an error status alone (a trailers-only answer).
fn grpc_answer(frames: Result<Vec<Bytes>, tonic::Status>) -> http::Response<tonic::body::Body> {
    let frames = match frames {
        Ok(frames) => frames,
        Err(status) => return status.into_http(),
    };
    let mut trailers = http::HeaderMap::new();
    // Cannot fail: the message is empty.
    let _ = tonic::Status::new(tonic::Code::Ok, "").add_header(&mut trailers);
    let frames = frames
        .into_iter()
        .map(|bytes| Ok::<_, tonic::Status>(Frame::data(bytes)))
        .chain([Ok(Frame::trailers(trailers))]);
    let body = StreamBody::new(futures::stream::iter(frames));
    let mut res = http::Response::new(tonic::body::Body::new(body));
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    res
}

/// A request to the node's gRPC server, its body cut after large messages'
/// headers.
pub fn cut_request(req: http::Request<tonic::body::Body>) -> http::Request<tonic::body::Body> {
    req.map(|body| tonic::body::Body::new(HeaderCut::new(body)))
}

/// An answer on a peer channel, its body cut after large messages' headers.
pub fn cut_response(res: http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body> {
    res.map(|body| tonic::body::Body::new(HeaderCut::new(body)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// gRPC framing of messages of these lengths, each filled with its index.
    fn messages(lens: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, &len) in lens.iter().enumerate() {
            out.push(0);
            out.extend_from_slice(&(len as u32).to_be_bytes());
            out.extend(std::iter::repeat_n(i as u8, len));
        }
        out
    }

    /// Sends `wire` in frames of `frame` bytes through a [`HeaderCut`] and
    /// returns the frames it yields.
    async fn through(wire: &[u8], frame: usize) -> Vec<Bytes> {
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = wire
            .chunks(frame)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let mut body = HeaderCut::new(StreamBody::new(futures::stream::iter(frames)));
        let mut out = Vec::new();
        while let Some(f) = body.frame().await {
            out.push(f.unwrap().into_data().unwrap());
        }
        out
    }

    #[tokio::test]
    async fn a_large_message_header_ends_its_frame_and_no_byte_changes() {
        let big = CUT_FROM_BYTES + 10;
        let wire = messages(&[big, 3, big]);
        let frames = through(&wire, wire.len()).await;
        assert_eq!(frames.concat(), wire, "bytes changed or reordered");
        let lens: Vec<usize> = frames.iter().map(Bytes::len).collect();
        // The first header alone; the first message, the small one whole
        // and the next header; the last message.
        assert_eq!(lens, vec![5, big + 5 + 3 + 5, big]);
    }

    #[tokio::test]
    async fn small_messages_pass_in_the_frames_they_came_in() {
        let wire = messages(&[10, CUT_FROM_BYTES - 1, 0, 7]);
        let frames = through(&wire, 1000).await;
        assert_eq!(frames.concat(), wire);
        assert_eq!(frames.len(), wire.len().div_ceil(1000));
    }

    #[tokio::test]
    async fn headers_split_across_frames_are_still_found() {
        let big = CUT_FROM_BYTES * 2;
        let wire = messages(&[big, big, 1, big]);
        // Every frame size from one byte up puts a header's bytes in two
        // frames somewhere.
        for frame in [1, 2, 3, 4, 6, 7, 4093, 65_537] {
            let frames = through(&wire, frame).await;
            assert_eq!(frames.concat(), wire, "frame size {frame}");
            // Every header of a large message ends a frame (none at the
            // very end of the body is followed by anything).
            let mut ends = Vec::new();
            let mut at = 0;
            for f in &frames {
                at += f.len();
                ends.push(at);
            }
            let mut header_end = 5;
            for len in [big, big, 1, big] {
                if len >= CUT_FROM_BYTES {
                    assert!(
                        ends.contains(&header_end),
                        "frame size {frame}: {header_end}"
                    );
                }
                header_end += len + 5;
            }
        }
    }

    /// A body that yields `wire` in frames of `frame` bytes.
    fn framed(wire: &[u8], frame: usize) -> tonic::body::Body {
        let frames: Vec<Result<Frame<Bytes>, tonic::Status>> = wire
            .chunks(frame)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        tonic::body::Body::new(StreamBody::new(futures::stream::iter(frames)))
    }

    #[tokio::test]
    async fn messages_come_out_whole_however_the_frames_cut_them() {
        let lens = [0, 1, 4, 5, 6, 1000, 70_000, 3];
        let wire = messages(&lens);
        for frame in [1, 2, 5, 7, 999, 4096, 70_005, wire.len()] {
            let mut reader = MessageReader::new(framed(&wire, frame), 1 << 20);
            for (i, &len) in lens.iter().enumerate() {
                let piece = reader.next_message().await.unwrap().unwrap();
                assert_eq!(piece.len(), len, "frame size {frame}, message {i}");
                assert!(piece.parts().iter().all(|p| !p.is_empty()));
                let bytes = piece.into_contiguous();
                assert!(bytes.iter().all(|&b| b == i as u8), "frame size {frame}");
            }
            assert_eq!(reader.next_message().await.unwrap(), None);
        }
    }

    #[tokio::test]
    async fn a_message_in_one_frame_is_a_slice_of_it() {
        let wire = messages(&[300_000]);
        let frames = vec![
            Ok::<_, tonic::Status>(Frame::data(Bytes::copy_from_slice(&wire[..5]))),
            Ok(Frame::data(Bytes::copy_from_slice(&wire[5..]))),
        ];
        let frame_start = match &frames[1] {
            Ok(f) => f.data_ref().unwrap().as_ptr(),
            Err(_) => unreachable!(),
        };
        let body = tonic::body::Body::new(StreamBody::new(futures::stream::iter(frames)));
        let mut reader = MessageReader::new(body, 1 << 20);
        let piece = reader.next_message().await.unwrap().unwrap();
        assert_eq!(piece.parts().len(), 1);
        assert_eq!(
            piece.parts()[0].as_ptr(),
            frame_start,
            "the bytes were copied"
        );
    }

    #[tokio::test]
    async fn bad_framing_is_refused_as_tonic_refuses_it() {
        let too_long = messages(&[2000]);
        let mut reader = MessageReader::new(framed(&too_long, 100), 1999);
        let err = reader.next_message().await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::OutOfRange, "{err}");

        let mut compressed = messages(&[10]);
        compressed[0] = 1;
        let mut reader = MessageReader::new(framed(&compressed, 100), 1 << 20);
        let err = reader.next_message().await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal, "{err}");

        let wire = messages(&[10, 10]);
        for cut in [wire.len() - 1, 15 + 3] {
            let mut reader = MessageReader::new(framed(&wire[..cut], 4), 1 << 20);
            assert_eq!(reader.next_message().await.unwrap().unwrap().len(), 10);
            let err = reader.next_message().await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::Internal, "cut at {cut}: {err}");
        }
    }

    /// A chunk header and 300,000 bytes of chunk (more than one piece).
    fn header_and_chunk() -> (pb::PutChunkHeader, Bytes) {
        let header = pb::PutChunkHeader {
            key: vec![7; 20],
            size: 300_000,
            copies: 3,
            age_ms: 5,
        };
        let chunk = Bytes::from((0..300_000u32).map(|i| i as u8).collect::<Vec<_>>());
        (header, chunk)
    }

    /// Every byte of `body`'s data frames.
    async fn body_bytes(mut body: tonic::body::Body) -> Vec<u8> {
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            bytes.extend_from_slice(&frame.unwrap().into_data().unwrap());
        }
        bytes
    }

    #[tokio::test]
    async fn put_chunk_pieces_read_back_as_they_were_sent() {
        let (header, chunk) = header_and_chunk();
        // A piece that came in two slices goes out as one.
        let two = Piece {
            parts: vec![chunk.slice(..100_000), chunk.slice(100_000..262_144)],
            len: 262_144,
        };
        let pieces = vec![two, chunk.slice(262_144..).into(), Piece::default()];
        let body = put_chunk_body(header.clone(), futures::stream::iter(pieces.clone()));
        let wire = body_bytes(body).await;
        for frame in [3, 1000, 65_536, 1 << 20] {
            let mut reader = MessageReader::new(framed(&wire, frame), 1 << 20);
            let first = reader.next_message().await.unwrap().unwrap();
            let first = put_chunk_data(first).expect_err("the header is not data");
            let first: pb::PutChunkRequest = decode(first).unwrap();
            assert_eq!(
                first.body,
                Some(pb::put_chunk_request::Body::Header(header.clone()))
            );
            for sent in &pieces {
                let message = reader.next_message().await.unwrap().unwrap();
                let got = put_chunk_data(message).expect("a data message");
                assert_eq!(got.len(), sent.len(), "frame size {frame}");
                assert_eq!(got.into_contiguous(), sent.clone().into_contiguous());
            }
            assert_eq!(reader.next_message().await.unwrap(), None);
        }
    }

    #[test]
    fn only_a_lone_data_field_is_taken_as_a_piece() {
        let encoded = |m: pb::PutChunkRequest| Piece::from(Bytes::from(m.encode_to_vec()));
        let data = pb::PutChunkRequest {
            body: Some(pb::put_chunk_request::Body::Data(Bytes::from_static(
                b"abc",
            ))),
        };
        let piece = put_chunk_data(encoded(data.clone())).unwrap();
        assert_eq!(piece.into_contiguous(), Bytes::from_static(b"abc"));
        // Data followed by anything else, a length that does not match,
        // and an empty message all go to prost instead.
        let mut longer = data.encode_to_vec();
        longer.extend_from_slice(&[0x12, 0x01, b'd']);
        assert!(put_chunk_data(Bytes::from(longer.clone()).into()).is_err());
        let decoded: pb::PutChunkRequest = decode(Bytes::from(longer).into()).unwrap();
        assert_eq!(
            decoded.body,
            Some(pb::put_chunk_request::Body::Data(Bytes::from_static(b"d")))
        );
        let mut short = data.encode_to_vec();
        short.pop();
        assert!(put_chunk_data(Bytes::from(short).into()).is_err());
        assert!(put_chunk_data(Piece::default()).is_err());
    }

    #[tokio::test]
    async fn a_put_chunk_body_is_what_tonic_would_send() {
        let (header, chunk) = header_and_chunk();
        let pieces = vec![chunk.slice(..262_144), chunk.slice(262_144..), Bytes::new()];
        let sent: Vec<Piece> = pieces.iter().cloned().map(Piece::from).collect();
        let sent = body_bytes(put_chunk_body(header.clone(), futures::stream::iter(sent))).await;
        // tonic's framing of prost's encoding, message by message.
        let mut expected = grpc_message(&pb::PutChunkRequest {
            body: Some(pb::put_chunk_request::Body::Header(header)),
        })
        .to_vec();
        for piece in pieces {
            expected.extend_from_slice(&grpc_message(&pb::PutChunkRequest {
                body: Some(pb::put_chunk_request::Body::Data(piece)),
            }));
        }
        assert_eq!(sent, expected);
    }

    /// A chunk of `len` bytes, each its offset's low byte.
    fn chunk_of(len: usize) -> Bytes {
        Bytes::from((0..len).map(|i| i as u8).collect::<Vec<_>>())
    }

    #[test]
    fn get_chunk_frames_are_what_tonic_would_send() {
        for len in [0, 1, 1000, crate::PIECE_BYTES, crate::PIECE_BYTES * 2 + 7] {
            let data = chunk_of(len);
            // tonic's framing of prost's encoding of the messages the
            // generated server sent before.
            let mut expected = Vec::new();
            for (i, piece) in crate::wire::pieces(&data).enumerate() {
                let size = if i == 0 { len as u64 } else { 0 };
                expected.extend_from_slice(&grpc_message(&pb::ChunkPiece { data: piece, size }));
            }
            assert_eq!(get_chunk_frames(&data).concat(), expected, "{len} bytes");
        }
    }

    #[tokio::test]
    async fn chunk_pieces_read_back_as_they_were_sent() {
        let len = crate::PIECE_BYTES * 2 + 7;
        let data = chunk_of(len);
        let wire = get_chunk_frames(&data).concat();
        for frame in [1, 3, 1000, 65_536, 1 << 20] {
            let mut reader = MessageReader::new(framed(&wire, frame), 1 << 20);
            let mut got = Vec::new();
            let mut sizes = Vec::new();
            while let Some(message) = reader.next_message().await.unwrap() {
                let (piece, size) = chunk_piece_data(message).expect("our own layout");
                sizes.push(size);
                for part in piece.parts() {
                    got.extend_from_slice(part);
                }
            }
            assert_eq!(got, data, "frame size {frame}");
            assert_eq!(sizes, vec![len as u64, 0, 0], "frame size {frame}");
        }
    }

    #[test]
    fn a_chunk_piece_in_another_layout_goes_to_prost() {
        let ours = |m: &pb::ChunkPiece| chunk_piece_data(Bytes::from(m.encode_to_vec()).into());
        let first = pb::ChunkPiece {
            data: Bytes::from_static(b"abc"),
            size: 300_000,
        };
        let (piece, size) = ours(&first).unwrap();
        assert_eq!(
            (piece.into_contiguous(), size),
            (first.data.clone(), 300_000)
        );
        assert_eq!(ours(&pb::ChunkPiece::default()).unwrap().1, 0);

        // The size first, something after the size, or a data length past
        // the message's end: given back whole, for prost.
        let mut size_first = Vec::new();
        encode_key(CHUNK_PIECE_SIZE_FIELD, WireType::Varint, &mut size_first);
        encode_varint(9, &mut size_first);
        let data_only = pb::ChunkPiece {
            data: first.data.clone(),
            size: 0,
        };
        size_first.extend_from_slice(&data_only.encode_to_vec());
        let mut extra = first.encode_to_vec();
        extra.extend_from_slice(&[0x10, 0x01]);
        let mut short = first.encode_to_vec();
        short.truncate(3);
        for wire in [&size_first, &extra, &short] {
            let back = chunk_piece_data(Bytes::from(wire.clone()).into()).unwrap_err();
            assert_eq!(back.into_contiguous(), Bytes::from(wire.clone()));
        }
        // prost reads the size first as its sender meant it.
        let decoded: pb::ChunkPiece = decode(Bytes::from(size_first).into()).unwrap();
        assert_eq!((decoded.data, decoded.size), (first.data, 9));
    }

    #[test]
    fn a_piece_splits_at_any_byte_and_joins_again() {
        let data = chunk_of(10);
        let whole = Piece {
            parts: vec![data.slice(..3), data.slice(3..4), data.slice(4..)],
            len: 10,
        };
        for at in 0..=10 {
            let mut head = whole.clone();
            let tail = head.split_off(at);
            assert_eq!((head.len(), tail.len()), (at, 10 - at));
            assert!(head
                .parts()
                .iter()
                .chain(tail.parts())
                .all(|p| !p.is_empty()));
            assert_eq!(head.clone().into_contiguous(), data.slice(..at));
            assert_eq!(tail.clone().into_contiguous(), data.slice(at..));
            head.append(tail);
            assert_eq!(head.into_contiguous(), data);
        }
    }

    #[tokio::test]
    async fn an_answer_ends_with_its_status_or_is_refused() {
        let wire = get_chunk_frames(&chunk_of(100)).concat();
        let answer = |trailers: Option<tonic::Status>| {
            let mut frames = vec![Ok::<_, tonic::Status>(Frame::data(Bytes::from(
                wire.clone(),
            )))];
            if let Some(status) = trailers {
                let mut map = http::HeaderMap::new();
                status.add_header(&mut map).unwrap();
                frames.push(Ok(Frame::trailers(map)));
            }
            MessageReader::new(
                tonic::body::Body::new(StreamBody::new(futures::stream::iter(frames))),
                1 << 20,
            )
        };
        let cases = [
            (Some(tonic::Status::new(tonic::Code::Ok, "")), None),
            (
                Some(tonic::Status::not_found("gone")),
                Some(tonic::Code::NotFound),
            ),
            (None, Some(tonic::Code::Internal)),
        ];
        for (trailers, expected) in cases {
            let mut reader = answer(trailers);
            assert!(reader.next_message().await.unwrap().is_some());
            assert_eq!(reader.next_message().await.unwrap(), None);
            assert_eq!(reader.status().err().map(|s| s.code()), expected);
        }
    }
}
