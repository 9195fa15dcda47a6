//! gRPC framing the node does itself where tonic's would copy each chunk
//! piece a second time: received bodies cut after large messages' headers,
//! and `PutChunk` bodies framed by hand.
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
//! [`HeaderCut`] wraps a body and passes every byte through unchanged, in
//! the same order: it only ends a data frame early, right after the header
//! of a message of at least [`CUT_FROM_BYTES`]. Smaller messages, where the
//! second copy is cheap, pass as they came. It is applied to every request a
//! node's gRPC server receives ([`cut_request`]) and every answer a
//! [`crate::peer::PeerPool`] channel receives ([`cut_response`]).

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

/// Field number of `PutChunkRequest.data` (`proto/chord/v1/chord.proto`).
const PUT_CHUNK_DATA_FIELD: u32 = 2;

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
/// gRPC message `PutChunkRequest { data: piece }`.
fn piece_prefix(len: usize) -> Bytes {
    let message_len = key_len(PUT_CHUNK_DATA_FIELD) + encoded_len_varint(len as u64) + len;
    let mut buf = BytesMut::with_capacity(16);
    buf.put_u8(0);
    buf.put_u32(message_len as u32);
    encode_key(PUT_CHUNK_DATA_FIELD, WireType::LengthDelimited, &mut buf);
    encode_varint(len as u64, &mut buf);
    buf.freeze()
}

/// The request body of a `PutChunk`: `header`, then a message per piece.
/// The same bytes tonic's encoder would send, without a copy of a piece.
pub fn put_chunk_body(
    header: pb::PutChunkHeader,
    pieces: impl Stream<Item = Bytes> + Send + 'static,
) -> tonic::body::Body {
    let first = grpc_message(&pb::PutChunkRequest {
        body: Some(pb::put_chunk_request::Body::Header(header)),
    });
    let rest = pieces.flat_map(|piece| futures::stream::iter([piece_prefix(piece.len()), piece]));
    let frames = futures::stream::once(async { first })
        .chain(rest)
        .map(|bytes| Ok::<_, tonic::Status>(Frame::data(bytes)));
    tonic::body::Body::new(StreamBody::new(frames))
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

    #[tokio::test]
    async fn a_put_chunk_body_is_what_tonic_would_send() {
        let header = pb::PutChunkHeader {
            key: vec![7; 20],
            size: 300_000,
            copies: 3,
            age_ms: 5,
        };
        let chunk = Bytes::from((0..300_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let pieces = vec![chunk.slice(..262_144), chunk.slice(262_144..), Bytes::new()];
        let mut body = put_chunk_body(header.clone(), futures::stream::iter(pieces.clone()));
        let mut sent = Vec::new();
        while let Some(frame) = body.frame().await {
            sent.extend_from_slice(&frame.unwrap().into_data().unwrap());
        }
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
}
