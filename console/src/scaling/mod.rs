//! Auto scaling: a pure target-tracking [`policy`] and the controller that
//! feeds it.

pub mod policy;
