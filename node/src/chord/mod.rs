//! The Chord protocol core: plain data and functions, no I/O.
//!
//! Nothing in here touches tokio, tonic, the file system or the clock. Drivers
//! (the gRPC server's maintenance tasks, or the in-memory simulator in
//! [`sim`]) call into [`RingState`] at each protocol step, ship the requests
//! it names to peers, and feed the answers back.
//!
//! Bottom-up: [`id`] is the identifier circle and its intervals; [`finger`]
//! and [`successors`] are the two routing tables; [`state`] is one node's
//! ring state machine (routing, stabilize, notify, fix_fingers,
//! check_predecessor, graceful leave); [`lookup`] walks a lookup across
//! nodes one hop at a time; [`placement`] says which nodes hold a key; [`course`] maps the course's
//! 32-bit ids onto the ring; [`sim`] runs many nodes over a deterministic
//! message queue for scenario tests.

pub mod course;
pub mod finger;
pub mod id;
pub mod lookup;
pub mod placement;
pub mod sim;
pub mod state;
pub mod successors;

#[cfg(test)]
mod scenarios;

pub use finger::FingerTable;
pub use id::{Id, NodeRef, ID_BITS, ID_BYTES};
pub use lookup::{Lookup, LookupStep, MAX_HOPS};
pub use placement::{may_drop, nodes_past, replica_set, true_holders, SEARCH_PAST_HOLDERS};
pub use sim::Sim;
pub use state::{LeaveNotice, Options, RingState, Route, DEFAULT_SUCCESSORS, MAX_CANDIDATES};
pub use successors::SuccessorList;
