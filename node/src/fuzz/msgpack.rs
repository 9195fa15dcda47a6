//! MessagePack-RPC connection bytes, through the course face's decoder
//! ([`decode_one`]) and request parser ([`parse_message`]), framed as
//! `serve_connection` frames them: bytes arrive in pieces, every whole
//! message at the front of the buffer is taken, a buffer that reaches
//! [`MAX_REQUEST_BYTES`] or a message that is not MessagePack-RPC ends the
//! connection.
//!
//! Nothing here reaches a node: the parser is pure, so `kill` and `join`
//! are judged without being run.

use arbtest::arbitrary::{self, Unstructured};
use rmpv::Value;

use super::Outcome;
use crate::server::msgpack::{
    decode_one, parse_call, parse_message, Call, Message, MAX_REQUEST_BYTES,
};

pub(super) fn run() {
    super::run("msgpack", 65536, |u| {
        let mut bytes = Vec::new();
        for _ in 0..u.int_in_range(1..=4)? {
            let message = message(u)?;
            bytes.extend_from_slice(&encode(&message));
        }
        super::mutate(u, &mut bytes, TOKENS)?;
        let mut pieces = Vec::new();
        let mut rest = bytes.as_slice();
        while !rest.is_empty() {
            let n = u.int_in_range(1..=rest.len().min(4096))?;
            pieces.push(&rest[..n]);
            rest = &rest[n..];
        }
        serve(u, &pieces)
    });
}

/// What `serve_connection` does with a connection's bytes, minus the node:
/// takes each whole message as it completes and checks it. Accepted when
/// every byte made a message and every message was MessagePack-RPC.
fn serve(u: &mut Unstructured<'_>, pieces: &[&[u8]]) -> arbitrary::Result<Outcome> {
    let mut buf: Vec<u8> = Vec::new();
    for piece in pieces {
        // As the connection reads: never past the size limit.
        let room = MAX_REQUEST_BYTES - buf.len();
        buf.extend_from_slice(&piece[..piece.len().min(room)]);
        loop {
            let (value, used) = match decode_one(&buf) {
                Ok(Some(decoded)) => decoded,
                Ok(None) => break,
                Err(_) => return Ok(Outcome::Refused),
            };
            check_framing(u, &buf, &value, used)?;
            buf.drain(..used);
            match parse_message(value.clone()) {
                Some(message) => check_message(&value, &message),
                None => return Ok(Outcome::Refused),
            }
        }
        if buf.len() >= MAX_REQUEST_BYTES {
            return Ok(Outcome::Refused);
        }
    }
    Ok(if buf.is_empty() {
        Outcome::Accepted
    } else {
        Outcome::Refused
    })
}

/// A message taken from the front of `buf` used `used` bytes of it, none
/// of its shorter prefixes was taken for a whole message, and it re-encodes
/// to bytes that decode to it.
fn check_framing(
    u: &mut Unstructured<'_>,
    buf: &[u8],
    value: &Value,
    used: usize,
) -> arbitrary::Result<()> {
    assert!((1..=buf.len()).contains(&used), "{used} of {}", buf.len());
    for _ in 0..3 {
        let cut = u.choose_index(used)?;
        assert!(
            matches!(decode_one(&buf[..cut]), Ok(None)),
            "{cut} of {used} bytes: {:?}",
            decode_one(&buf[..cut])
        );
    }
    let bytes = encode(value);
    let (again, len) = decode_one(&bytes)
        .ok()
        .flatten()
        .expect("a decoded value re-encodes to a whole message");
    assert_eq!((encode(&again), len), (bytes.clone(), bytes.len()));
    Ok(())
}

/// A parsed message matches the value it came from, and an accepted call
/// encodes back to itself.
fn check_message(value: &Value, message: &Message) {
    let Value::Array(items) = value else {
        panic!("{message:?} from {value}");
    };
    let call = match message {
        Message::Request { msgid, call } => {
            assert_eq!(items.len(), 4);
            assert_eq!(items[0].as_u64(), Some(0));
            assert_eq!(items[1].as_u64(), Some(u64::from(*msgid)));
            call
        }
        Message::Notification(call) => {
            assert_eq!(items.len(), 3);
            assert_eq!(items[0].as_u64(), Some(2));
            call
        }
    };
    match call {
        Ok(call) => {
            let (method, params) = encode_call(call);
            assert_eq!(parse_call(&method, &params).as_ref(), Ok(call), "{value}");
        }
        Err(reason) => assert!(!reason.is_empty()),
    }
}

/// The call as a client would send it.
fn encode_call(call: &Call) -> (Value, Value) {
    let (method, params) = match call {
        Call::GetInfo => ("get_info", vec![]),
        Call::Create => ("create", vec![]),
        Call::Join(addr) => {
            let (ip, port) = addr.rsplit_once(':').expect("host:port");
            let port: u16 = port.parse().expect("a port");
            let node = Value::Array(vec![Value::from(ip), Value::from(port), Value::from(0)]);
            ("join", vec![node])
        }
        Call::FindSuccessor(key) => ("find_successor", vec![Value::from(*key)]),
        Call::GetPredecessor => ("get_predecessor", vec![]),
        Call::GetSuccessor(index) => ("get_successor", vec![Value::from(*index as u64)]),
        Call::Notify => ("notify", vec![Value::from(0)]),
        Call::Kill => ("kill", vec![]),
    };
    (Value::from(method), Value::Array(params))
}

fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, value).expect("writing to a Vec");
    out
}

/// MessagePack markers worth splicing in: the request marker, containers
/// and strings whose 16- and 32-bit lengths claim far more than follows,
/// the widest integers, ext types, and the one byte never used.
const TOKENS: &[&[u8]] = &[
    &[0x94],
    &[0x93],
    &[0x91],
    &[0x90],
    &[0xc0],
    &[0xc1],
    &[0xdc, 0xff, 0xff],
    &[0xdd, 0xff, 0xff, 0xff, 0xff],
    &[0xde, 0xff, 0xff],
    &[0xdf, 0xff, 0xff, 0xff, 0xff],
    &[0xdb, 0xff, 0xff, 0xff, 0xff],
    &[0xc6, 0xff, 0xff, 0xff, 0xff],
    &[0xc9, 0xff, 0xff, 0xff, 0xff, 0x01],
    &[0xd4, 0x01, 0x00],
    &[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    &[0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0],
    &[0xce, 0xff, 0xff, 0xff, 0xff],
    &[0xa8],
    b"get_info",
    b"find_successor",
    b"join",
    b"kill",
];

const METHODS: &[&str] = &[
    "get_info",
    "create",
    "join",
    "find_successor",
    "get_predecessor",
    "get_successor",
    "notify",
    "kill",
];

/// A request or notification of a course method with fitting or unfitting
/// params, or another value altogether.
fn message(u: &mut Unstructured<'_>) -> arbitrary::Result<Value> {
    let method = if u.ratio(7, 8)? {
        let name = *u.choose(METHODS)?;
        if u.ratio(1, 8)? {
            Value::Binary(name.as_bytes().to_vec())
        } else {
            Value::from(name)
        }
    } else {
        value(u, 2)?
    };
    let mut params = Vec::new();
    for _ in 0..u.int_in_range(0..=2)? {
        params.push(match u.int_in_range(0..=3)? {
            0 => course_node(u)?,
            1 => Value::from(u.arbitrary::<u32>()?),
            2 => integer(u)?,
            _ => value(u, 3)?,
        });
    }
    let params = if u.ratio(1, 16)? {
        value(u, 2)?
    } else {
        Value::Array(params)
    };
    Ok(match u.int_in_range(0..=7)? {
        0 => Value::Array(vec![Value::from(2), method, params]),
        1 => value(u, 4)?,
        // Nested around the decoder's depth limit.
        2 if u.ratio(1, 2)? => {
            let mut deep = Value::Array(vec![Value::from(0)]);
            for _ in 0..u.int_in_range(8..=24)? {
                deep = Value::Array(vec![deep]);
            }
            Value::Array(vec![Value::from(0), Value::from(1), method, deep])
        }
        2 => Value::Array(vec![integer(u)?, integer(u)?, method, params]),
        _ => Value::Array(vec![Value::from(0), integer(u)?, method, params]),
    })
}

/// A course node `[ip, port, id]`, with an ip as text or bytes.
fn course_node(u: &mut Unstructured<'_>) -> arbitrary::Result<Value> {
    let ip = super::text(u, &["127.0.0.", "1", "10.0.0.5", ":", "", "é", "\0"], 3)?;
    let ip = if u.ratio(1, 4)? {
        Value::Binary(ip.into_bytes())
    } else {
        Value::from(ip)
    };
    let port = if u.ratio(3, 4)? {
        Value::from(*u.choose(&[5057u32, 1, 0, 65535, 65536])?)
    } else {
        value(u, 1)?
    };
    Ok(Value::Array(vec![ip, port, integer(u)?]))
}

/// An integer at an edge: zero, the u32 and i64 limits, u64::MAX, or any.
fn integer(u: &mut Unstructured<'_>) -> arbitrary::Result<Value> {
    Ok(match u.int_in_range(0..=5)? {
        0 => Value::from(0),
        1 => Value::from(u64::from(u32::MAX)),
        2 => Value::from(u64::from(u32::MAX) + 1),
        3 => Value::from(u64::MAX),
        4 => Value::from(i64::MIN),
        _ => Value::from(u.arbitrary::<i64>()?),
    })
}

/// Any value, nested at most `depth` deep.
fn value(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<Value> {
    let kinds = if depth == 0 { 8 } else { 10 };
    Ok(match u.int_in_range(0..=kinds)? {
        0 => Value::Nil,
        1 => Value::Boolean(u.arbitrary()?),
        2 => integer(u)?,
        3 => Value::F32(u.arbitrary()?),
        4 => Value::F64(u.arbitrary()?),
        5 => Value::from(super::text(u, METHODS, 2)?),
        6 => Value::Binary(u.arbitrary()?),
        7 | 8 => Value::Ext(u.arbitrary()?, u.arbitrary()?),
        9 => Value::Array(
            (0..u.int_in_range(0..=3)?)
                .map(|_| value(u, depth - 1))
                .collect::<arbitrary::Result<_>>()?,
        ),
        _ => Value::Map(
            (0..u.int_in_range(0..=2)?)
                .map(|_| Ok((value(u, depth - 1)?, value(u, depth - 1)?)))
                .collect::<arbitrary::Result<_>>()?,
        ),
    })
}
