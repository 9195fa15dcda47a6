//! The one error type of the `chord-node` library.
//!
//! Every fallible function of the library returns [`Result`]. The single
//! mapping to `tonic::Status` lives in `server::status`, the single mapping
//! from a `tonic::Status` answered by a peer lives in `peer`; this module knows
//! nothing of the wire so the pure core and the store can use it as is.

use std::io;

/// The library's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong, classified by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller sent something malformed (bad id, bad name, bad address).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The thing asked for does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Bytes do not match the key or checksum they claim.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The disk has no room left; nothing partial was kept.
    #[error("disk full: {0}")]
    DiskFull(String),
    /// A local I/O failure other than a full disk.
    // The cause is part of the message (status messages carry only the
    // message), so it is not also exposed as `source()` to be printed twice.
    #[error("i/o error: {context}: {cause}")]
    Io { context: String, cause: io::Error },
    /// A peer could not be reached or did not answer within its deadline.
    #[error("peer {peer} unreachable: {reason}")]
    Unreachable { peer: String, reason: String },
    /// A peer answered, but with an error of its own.
    #[error("peer {peer} answered with an error: {message}")]
    Remote {
        peer: String,
        message: String,
        /// Whether the peer said the call may succeed if tried again.
        retryable: bool,
    },
    /// The call lacked the cluster token, or carried a wrong one.
    #[error("not admitted: {0}")]
    Unauthenticated(String),
    /// A peer answered something that does not parse or makes no sense.
    #[error("peer {peer} answered nonsense: {reason}")]
    BadReply { peer: String, reason: String },
    /// The operation cannot complete now (ring too small, no live holder...).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The node is shutting down.
    #[error("node is shutting down")]
    Shutdown,
    /// The node (`peer`) is leaving the ring: it takes no new data and
    /// confirms no keys, so it must not be counted as a holder.
    #[error("{peer} is leaving the ring")]
    Leaving { peer: String },
}

impl Error {
    /// Whether trying again (perhaps via another peer) may succeed.
    /// Whether the error says the peer itself may be gone (no answer, an
    /// answer that makes no sense, or it said it is leaving), so it should
    /// leave our tables. A peer that answered "not now" is not gone.
    pub fn peer_may_be_gone(&self) -> bool {
        matches!(
            self,
            Error::Unreachable { .. }
                | Error::BadReply { .. }
                | Error::Leaving { .. }
                | Error::Unauthenticated(_)
        )
    }

    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unreachable { .. }
            | Error::Unavailable(_)
            | Error::BadReply { .. }
            | Error::Leaving { .. } => true,
            Error::Remote { retryable, .. } => *retryable,
            Error::Corrupt(_) => true, // another replica may hold good bytes
            Error::InvalidArgument(_)
            | Error::Unauthenticated(_)
            | Error::NotFound(_)
            | Error::DiskFull(_)
            | Error::Io { .. }
            | Error::Shutdown => false,
        }
    }

    /// Wraps an I/O error with what was being done, turning ENOSPC into
    /// [`Error::DiskFull`] so callers can tell the two apart.
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        let context = context.into();
        if source.raw_os_error() == Some(libc::ENOSPC)
            || source.kind() == io::ErrorKind::StorageFull
        {
            Error::DiskFull(context)
        } else {
            Error::Io {
                context,
                cause: source,
            }
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Error {
        Error::InvalidArgument(msg.into())
    }

    /// The same error, its message led by `what` (the flag or field it is
    /// about): "invalid argument: --peer: address ..." where wrapping it in
    /// a new one would say "invalid argument" twice. Errors that name their
    /// peer already are returned as they are.
    pub fn about(self, what: impl std::fmt::Display) -> Error {
        match self {
            Error::InvalidArgument(m) => Error::InvalidArgument(format!("{what}: {m}")),
            Error::NotFound(m) => Error::NotFound(format!("{what}: {m}")),
            Error::Corrupt(m) => Error::Corrupt(format!("{what}: {m}")),
            Error::DiskFull(m) => Error::DiskFull(format!("{what}: {m}")),
            Error::Unauthenticated(m) => Error::Unauthenticated(format!("{what}: {m}")),
            Error::Unavailable(m) => Error::Unavailable(format!("{what}: {m}")),
            Error::Io { context, cause } => Error::Io {
                context: format!("{what}: {context}"),
                cause,
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message led by what it is about keeps its kind, said once.
    #[test]
    fn about_leads_the_message_and_keeps_the_kind() {
        let bad = Error::invalid("address \"nonsense\" is not host:port").about("--peer");
        assert_eq!(
            bad.to_string(),
            "invalid argument: --peer: address \"nonsense\" is not host:port"
        );
        let missing = Error::NotFound("chunk 97fd".into()).about("a.bin");
        assert!(matches!(&missing, Error::NotFound(m) if m == "a.bin: chunk 97fd"));
        let full = Error::io("writing x", io::Error::from_raw_os_error(libc::ENOSPC)).about("out");
        assert_eq!(full.to_string(), "disk full: out: writing x");
        // An error that names its peer, or none, is left as it is.
        assert_eq!(
            Error::Shutdown.about("x").to_string(),
            "node is shutting down"
        );
    }
}
