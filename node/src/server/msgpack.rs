//! The course-compatible MessagePack-RPC face, served on the gRPC port.
//!
//! The seed's tools (the course's `upload.py`, `download.py` and test
//! scripts) speak MessagePack-RPC: a request is `[0, msgid, method, params]`,
//! a response `[1, msgid, error, result]`, a notification `[2, method,
//! params]`, back to back on one TCP connection. `super::listen` hands a
//! connection here when its first byte is `0x94` (a fixarray of 4).
//!
//! This module only translates: it decodes a message (`decode_one`),
//! reads it into a `Call` with checked params (`parse_message`, pure,
//! so whatever a client sends is judged before the node is involved; both
//! are fuzzed in `crate::fuzz`), calls the same [`Node`] methods the gRPC
//! handlers call, and encodes the answer. A node is
//! `[ip, port, id]` with `id` the node's 32-bit course id and a key is a
//! 32-bit course key, both through [`crate::chord::course`]. Bad input (a
//! request that is not MessagePack, too large, too deep, an unknown method,
//! the wrong number of params) gets an error response when it names a
//! message id, and a closed connection otherwise; it never stops the node.
//!
//! A node serving TLS ([`crate::tls`]) refuses every method with an error
//! saying so: this protocol has no TLS, and such a node speaks no
//! plaintext.
//!
//! `kill` is the one method that ends the process: after answering, the
//! node exits at once with no graceful leave, as a crash would, because the
//! course's tests use it to check fault tolerance.

use std::io::{self, Cursor};
use std::sync::Arc;
use std::time::Duration;

use rmpv::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::chord::course::{id_to_u32, key_from_u32};
use crate::chord::NodeRef;
use crate::node::{Counters, Node};

/// The first byte of every MessagePack-RPC request: a fixarray of 4.
pub const REQUEST_MARKER: u8 = 0x94;

/// Largest request accepted. Every course request is a few dozen bytes (the
/// biggest, `join`, carries one node); anything near this is not a course
/// client, and the connection is closed rather than buffered further.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Deepest nesting decoded. `join` is the deepest request at 3 levels; the
/// bound keeps a hostile `[[[[...]]]]` from recursing the decoder deep.
const MAX_DEPTH: usize = 16;

/// A connection with no request for this long is closed. Course clients
/// open a connection per script run; one left open by a crashed script
/// should not hold a task forever.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// How much is read from the socket at a time.
const READ_BYTES: usize = 4096;

/// The exit status of a node stopped by `kill`: what a shell reports for a
/// process killed by SIGKILL, which is what `kill` stands for.
pub const KILLED_EXIT_CODE: i32 = 137;

/// The methods of the course's nodes.
#[derive(Clone, Copy, Debug)]
enum Method {
    GetInfo,
    Create,
    Join,
    FindSuccessor,
    GetPredecessor,
    GetSuccessor,
    Notify,
    Kill,
}

impl Method {
    const ALL: [Method; 8] = [
        Method::GetInfo,
        Method::Create,
        Method::Join,
        Method::FindSuccessor,
        Method::GetPredecessor,
        Method::GetSuccessor,
        Method::Notify,
        Method::Kill,
    ];

    fn parse(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The method's name on the wire.
    fn name(self) -> &'static str {
        match self {
            Method::GetInfo => "get_info",
            Method::Create => "create",
            Method::Join => "join",
            Method::FindSuccessor => "find_successor",
            Method::GetPredecessor => "get_predecessor",
            Method::GetSuccessor => "get_successor",
            Method::Notify => "notify",
            Method::Kill => "kill",
        }
    }

    /// Whether the method changes the ring (or stops the node) rather than
    /// answering a question.
    fn changes_the_ring(self) -> bool {
        matches!(
            self,
            Method::Create | Method::Join | Method::Notify | Method::Kill
        )
    }

    /// How many params the method takes.
    fn arity(self) -> usize {
        match self {
            Method::GetInfo | Method::Create | Method::GetPredecessor | Method::Kill => 0,
            Method::Join | Method::FindSuccessor | Method::GetSuccessor | Method::Notify => 1,
        }
    }
}

/// A method with its params decoded and checked: what a request asks of
/// the node, before anything reaches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Call {
    GetInfo,
    Create,
    /// Join the ring through this `host:port`.
    Join(String),
    /// The owner of this 32-bit course key.
    FindSuccessor(u32),
    GetPredecessor,
    /// The successor list's entry at this index.
    GetSuccessor(usize),
    Notify,
    Kill,
}

impl Call {
    fn method(&self) -> Method {
        match self {
            Call::GetInfo => Method::GetInfo,
            Call::Create => Method::Create,
            Call::Join(_) => Method::Join,
            Call::FindSuccessor(_) => Method::FindSuccessor,
            Call::GetPredecessor => Method::GetPredecessor,
            Call::GetSuccessor(_) => Method::GetSuccessor,
            Call::Notify => Method::Notify,
            Call::Kill => Method::Kill,
        }
    }
}

/// One decoded MessagePack-RPC message. The call is `Err` with the message
/// to answer when the method or its params make no sense.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Message {
    /// `[0, msgid, method, params]`: answered with `[1, msgid, error, result]`.
    Request {
        msgid: u32,
        call: Result<Call, String>,
    },
    /// `[2, method, params]`: run, never answered.
    Notification(Result<Call, String>),
}

/// What a request asks the connection to do after its response is sent.
enum After {
    Continue,
    /// `kill`: exit the process at once.
    Crash,
}

/// Serves MessagePack-RPC requests on `stream` until the client closes it,
/// stays silent for `IDLE_TIMEOUT`, or sends something undecodable.
pub async fn serve_connection(node: Arc<Node>, mut stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "unknown".into());
    let mut buf: Vec<u8> = Vec::with_capacity(READ_BYTES);
    loop {
        // Answer every whole message already buffered.
        loop {
            let (value, used) = match decode_one(&buf) {
                Ok(Some(decoded)) => decoded,
                Ok(None) => break,
                Err(e) => {
                    debug!(%peer, error = %e, "malformed MessagePack; closing the connection");
                    return;
                }
            };
            buf.drain(..used);
            let Some(message) = parse_message(value) else {
                debug!(%peer, "not a MessagePack-RPC message; closing the connection");
                return;
            };
            let (response, after) = handle(&node, message).await;
            if let Some(response) = response {
                if let Err(e) = write(&mut stream, &response).await {
                    debug!(%peer, error = %e, "cannot answer; closing the connection");
                    return;
                }
            }
            if matches!(after, After::Crash) {
                crash();
            }
        }
        if buf.len() >= MAX_REQUEST_BYTES {
            warn!(%peer, limit = MAX_REQUEST_BYTES, "MessagePack-RPC request too large; closing the connection");
            return;
        }
        let mut chunk = [0u8; READ_BYTES];
        let want = READ_BYTES.min(MAX_REQUEST_BYTES - buf.len());
        let read = tokio::time::timeout(IDLE_TIMEOUT, stream.read(&mut chunk[..want])).await;
        match read {
            Ok(Ok(0)) => return,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "MessagePack-RPC connection failed");
                return;
            }
            Err(_) => {
                debug!(%peer, "MessagePack-RPC connection idle; closing it");
                return;
            }
        }
    }
}

/// Decodes one whole message from the front of `buf`: the value and how
/// many bytes it took, or `None` when `buf` holds only part of one.
pub(crate) fn decode_one(buf: &[u8]) -> Result<Option<(Value, usize)>, rmpv::decode::Error> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut cursor = Cursor::new(buf);
    match rmpv::decode::read_value_with_max_depth(&mut cursor, MAX_DEPTH) {
        Ok(value) => Ok(Some((value, cursor.position() as usize))),
        Err(
            rmpv::decode::Error::InvalidMarkerRead(e) | rmpv::decode::Error::InvalidDataRead(e),
        ) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

async fn write(stream: &mut TcpStream, value: &Value) -> io::Result<()> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, value).map_err(io::Error::other)?;
    stream.write_all(&out).await?;
    stream.flush().await
}

/// Reads a decoded value as a MessagePack-RPC request or notification;
/// `None` when it is neither (the connection is then closed). Pure: the
/// node is not involved, so anything a client sends is judged here first.
pub(crate) fn parse_message(value: Value) -> Option<Message> {
    let Value::Array(items) = value else {
        return None;
    };
    match items.as_slice() {
        [kind, msgid, method, params] if kind.as_u64() == Some(0) => {
            let msgid = u32::try_from(msgid.as_u64()?).ok()?;
            Some(Message::Request {
                msgid,
                call: parse_call(method, params),
            })
        }
        [kind, method, params] if kind.as_u64() == Some(2) => {
            Some(Message::Notification(parse_call(method, params)))
        }
        _ => None,
    }
}

/// The call a method name and its params ask for, or the error message to
/// answer.
pub(crate) fn parse_call(method: &Value, params: &Value) -> Result<Call, String> {
    let name = method_name(method).ok_or("method must be a string")?;
    let params: &[Value] = match params {
        Value::Array(params) => params,
        Value::Nil => &[],
        _ => return Err("params must be an array".into()),
    };
    let method = Method::parse(name).ok_or_else(|| format!("unknown method {name:?}"))?;
    if params.len() != method.arity() {
        return Err(format!(
            "{name} takes {} params, got {}",
            method.arity(),
            params.len()
        ));
    }
    Ok(match method {
        Method::GetInfo => Call::GetInfo,
        Method::Create => Call::Create,
        Method::Join => {
            Call::Join(course_addr(&params[0]).ok_or("join takes a node [ip, port, id]")?)
        }
        Method::FindSuccessor => Call::FindSuccessor(unsigned(
            &params[0],
            "find_successor takes an unsigned 32-bit id",
        )?),
        Method::GetPredecessor => Call::GetPredecessor,
        Method::GetSuccessor => Call::GetSuccessor(unsigned(
            &params[0],
            "get_successor takes a non-negative index",
        )?),
        Method::Notify => Call::Notify,
        Method::Kill => Call::Kill,
    })
}

/// `value` as an unsigned integer that fits `T`, or `error`.
fn unsigned<T: TryFrom<u64>>(value: &Value, error: &str) -> Result<T, String> {
    value
        .as_u64()
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| error.to_string())
}

/// Answers one message: the response to send (none for a notification),
/// and what to do next.
async fn handle(node: &Node, message: Message) -> (Option<Value>, After) {
    match message {
        Message::Request { msgid, call } => {
            let (result, after) = call_node(node, call).await;
            let (error, result) = match result {
                Ok(value) => (Value::Nil, value),
                Err(message) => (Value::from(message), Value::Nil),
            };
            let response = Value::Array(vec![Value::from(1), Value::from(msgid), error, result]);
            (Some(response), after)
        }
        Message::Notification(call) => {
            let (result, after) = call_node(node, call).await;
            if let Err(e) = result {
                debug!(error = %e, "MessagePack-RPC notification failed");
            }
            (None, after)
        }
    }
}

/// Runs one call. The error side is the message sent back to the client.
async fn call_node(node: &Node, call: Result<Call, String>) -> (Result<Value, String>, After) {
    Counters::bump(&node.counters.requests, 1);
    let call = match call {
        Ok(call) => call,
        Err(message) => return (Err(message), After::Continue),
    };
    let method = call.method();
    // MessagePack-RPC has no TLS: a node that serves TLS speaks no
    // plaintext protocol, and says so rather than closing the connection.
    if node.config().tls.is_some() {
        return (
            Err(format!(
                "{} is refused: this node serves TLS only, and MessagePack-RPC has none",
                method.name()
            )),
            After::Continue,
        );
    }
    // MessagePack-RPC carries no token: on a ring that has one, this face
    // only answers questions. (An idle node there cannot be started through
    // it; start it with --join instead.)
    if node.config().token.is_some() && method.changes_the_ring() {
        return (
            Err(format!(
                "{} is refused: this ring requires its cluster token, which MessagePack-RPC cannot carry",
                method.name()
            )),
            After::Continue,
        );
    }
    let result = match call {
        Call::GetInfo => Ok(course_node(node.me())),
        Call::Create => {
            node.create_ring().await;
            Ok(course_node(node.me()))
        }
        Call::Join(addr) => join(node, &addr).await,
        Call::FindSuccessor(key) => find_successor(node, key).await,
        Call::GetPredecessor => Ok(node
            .ring()
            .predecessor()
            .map(course_node)
            .unwrap_or_else(no_node)),
        Call::GetSuccessor(index) => get_successor(node, index),
        // The course's nodes notify each other; ours keep their own
        // predecessors through gRPC, so a course notify changes nothing.
        Call::Notify => Ok(Value::Nil),
        Call::Kill => {
            warn!("killed over MessagePack-RPC: exiting without leaving the ring");
            return (Ok(Value::Nil), After::Crash);
        }
    };
    (result, After::Continue)
}

async fn join(node: &Node, addr: &str) -> Result<Value, String> {
    info!(peer = %addr, "joining over MessagePack-RPC");
    node.join_ring(addr).await.map_err(|e| e.to_string())?;
    Ok(course_node(node.me()))
}

async fn find_successor(node: &Node, key: u32) -> Result<Value, String> {
    if node.is_idle() {
        return Err("this node is idle: call create or join first".into());
    }
    let (owner, hops) = node
        .find_successor(key_from_u32(key))
        .await
        .map_err(|e| e.to_string())?;
    debug!(key, owner = %owner, hops, "course lookup");
    Ok(course_node(&owner))
}

fn get_successor(node: &Node, index: usize) -> Result<Value, String> {
    let ring = node.ring();
    // A node alone has an empty list and is its own successor.
    if index == 0 && ring.successors().is_empty() {
        return Ok(course_node(ring.successor()));
    }
    ring.successors()
        .get(index)
        .map(course_node)
        .ok_or_else(|| format!("the successor list has {} entries", ring.successors().len()))
}

/// `[ip, port, id]`, with the node's 32-bit course id.
fn course_node(node: &NodeRef) -> Value {
    let (host, port) = match node.addr.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().unwrap_or(0)),
        None => (node.addr.as_str(), 0),
    };
    Value::Array(vec![
        Value::from(host),
        Value::from(port),
        Value::from(id_to_u32(&node.id)),
    ])
}

/// The course's "no node": an empty ip, port 0 and id 0.
fn no_node() -> Value {
    Value::Array(vec![Value::from(""), Value::from(0), Value::from(0)])
}

/// `host:port` of a course node `[ip, port, id]`; the ip may come as a
/// string or, from old clients, as raw bytes. The id is not needed: ours is
/// SHA-1 of the address.
fn course_addr(node: &Value) -> Option<String> {
    let Value::Array(fields) = node else {
        return None;
    };
    let [ip, port, ..] = fields.as_slice() else {
        return None;
    };
    let ip = match ip {
        Value::String(s) => s.as_str()?.to_string(),
        Value::Binary(b) => String::from_utf8(b.clone()).ok()?,
        _ => return None,
    };
    let port = u16::try_from(port.as_u64()?).ok()?;
    (!ip.is_empty() && port != 0).then(|| format!("{ip}:{port}"))
}

fn method_name(method: &Value) -> Option<&str> {
    match method {
        Value::String(s) => s.as_str(),
        Value::Binary(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

/// Ends the process at once, as a crash would: no leave notices, no
/// hand-off. Neighbours find out through their failure detection.
fn crash() -> ! {
    std::process::exit(KILLED_EXIT_CODE)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn encode(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, value).unwrap();
        out
    }

    fn request(msgid: u32, method: &str, params: Vec<Value>) -> Value {
        Value::Array(vec![
            Value::from(0),
            Value::from(msgid),
            Value::from(method),
            Value::Array(params),
        ])
    }

    #[test]
    fn requests_start_with_the_marker() {
        let bytes = encode(&request(7, "get_info", vec![]));
        assert_eq!(bytes[0], REQUEST_MARKER);
    }

    #[test]
    fn decode_waits_for_a_whole_message() {
        let bytes = encode(&request(1, "find_successor", vec![Value::from(42u32)]));
        for cut in 0..bytes.len() {
            assert!(decode_one(&bytes[..cut]).unwrap().is_none(), "cut {cut}");
        }
        let mut two = bytes.clone();
        two.extend_from_slice(&bytes);
        let (value, used) = decode_one(&two).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(
            value,
            request(1, "find_successor", vec![Value::from(42u32)])
        );
    }

    #[test]
    fn decode_refuses_deep_nesting() {
        let mut deep = vec![0x91u8; MAX_DEPTH + 4];
        deep.push(0x00);
        assert!(decode_one(&deep).is_err());
    }

    #[test]
    fn messages_are_judged_before_the_node_sees_them() {
        let node = |ip: &str, port: u32| {
            Value::Array(vec![Value::from(ip), Value::from(port), Value::from(0)])
        };
        let cases: Vec<(Value, Option<Message>)> = vec![
            (
                request(7, "get_info", vec![]),
                Some(Message::Request {
                    msgid: 7,
                    call: Ok(Call::GetInfo),
                }),
            ),
            (
                request(1, "join", vec![node("10.0.0.2", 5057)]),
                Some(Message::Request {
                    msgid: 1,
                    call: Ok(Call::Join("10.0.0.2:5057".into())),
                }),
            ),
            (
                request(
                    2,
                    "find_successor",
                    vec![Value::from(u64::from(u32::MAX) + 1)],
                ),
                Some(Message::Request {
                    msgid: 2,
                    call: Err("find_successor takes an unsigned 32-bit id".into()),
                }),
            ),
            (
                request(3, "join", vec![node("", 5057)]),
                Some(Message::Request {
                    msgid: 3,
                    call: Err("join takes a node [ip, port, id]".into()),
                }),
            ),
            (
                request(4, "kill", vec![Value::Nil]),
                Some(Message::Request {
                    msgid: 4,
                    call: Err("kill takes 0 params, got 1".into()),
                }),
            ),
            (
                request(5, "shutdown", vec![]),
                Some(Message::Request {
                    msgid: 5,
                    call: Err("unknown method \"shutdown\"".into()),
                }),
            ),
            (
                Value::Array(vec![Value::from(2), Value::from("notify"), Value::Nil]),
                Some(Message::Notification(Err(
                    "notify takes 1 params, got 0".into()
                ))),
            ),
            // A msgid past 32 bits, a response, a bare value: not requests.
            (
                Value::Array(vec![
                    Value::from(0),
                    Value::from(u64::from(u32::MAX) + 1),
                    Value::from("get_info"),
                    Value::Array(vec![]),
                ]),
                None,
            ),
            (
                Value::Array(vec![Value::from(1), Value::from(1), Value::Nil, Value::Nil]),
                None,
            ),
            (Value::from(3), None),
        ];
        for (value, want) in cases {
            assert_eq!(parse_message(value.clone()), want, "{value}");
        }
    }

    #[test]
    fn course_nodes_round_trip() {
        let node = NodeRef::from_addr("127.0.0.3:5057");
        let value = course_node(&node);
        assert_eq!(course_addr(&value).as_deref(), Some("127.0.0.3:5057"));
        let Value::Array(fields) = &value else {
            panic!("not an array")
        };
        assert_eq!(fields[2].as_u64(), Some(u64::from(id_to_u32(&node.id))));
        // Old clients send the ip as raw bytes.
        let raw = Value::Array(vec![
            Value::Binary(b"10.0.0.5".to_vec()),
            Value::from(5057),
            Value::from(1),
        ]);
        assert_eq!(course_addr(&raw).as_deref(), Some("10.0.0.5:5057"));
        for bad in [
            no_node(),
            Value::from(3),
            Value::Array(vec![Value::from("x")]),
        ] {
            assert_eq!(course_addr(&bad), None, "{bad}");
        }
    }
}
