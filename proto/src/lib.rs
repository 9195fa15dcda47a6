//! The `chord.v1` wire protocol: generated prost messages and tonic services.
//!
//! Conversions between these messages and the node's domain types live in
//! `chord-node` (which owns the domain types); this crate is generated code only.

#![allow(clippy::all)]

pub mod pb {
    tonic::include_proto!("chord.v1");
}

pub use pb::*;
