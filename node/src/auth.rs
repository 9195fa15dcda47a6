//! The cluster token: one shared secret that every gRPC call carries and
//! every node checks, so only the ring's own nodes and operators can change
//! it.
//!
//! Sources, first found wins: `--token-file PATH` (where a binary has the
//! flag), `$CHORD_TOKEN_FILE`, `$CHORD_TOKEN`. Leading and trailing
//! whitespace is dropped (a file usually ends in a newline). With no token
//! configured nothing is checked, as before.
//!
//! On the wire it is `authorization: Bearer <token>`. The server compares it
//! in constant time and answers UNAUTHENTICATED without saying more. The
//! token is never logged: its `Debug` prints `<redacted>`.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use subtle::ConstantTimeEq;
use tonic::metadata::{Ascii, MetadataMap, MetadataValue};
use tonic::Status;

use crate::error::{Error, Result};

/// The variable holding the token itself.
pub const TOKEN_ENV: &str = "CHORD_TOKEN";
/// The variable naming a file that holds the token.
pub const TOKEN_FILE_ENV: &str = "CHORD_TOKEN_FILE";
/// Shortest token accepted: below this a token is guessable.
pub const MIN_TOKEN_BYTES: usize = 16;
/// Longest token accepted: it travels in every request's headers.
pub const MAX_TOKEN_BYTES: usize = 1024;

const HEADER: &str = "authorization";
const SCHEME: &str = "Bearer ";

/// The shared secret of one cluster.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterToken(Arc<str>);

impl std::fmt::Debug for ClusterToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterToken(<redacted>)")
    }
}

impl ClusterToken {
    /// A token from its text, checked: visible ASCII, no spaces,
    /// [`MIN_TOKEN_BYTES`]..=[`MAX_TOKEN_BYTES`] long.
    pub fn new(text: &str) -> Result<ClusterToken> {
        let text = text.trim();
        if !(MIN_TOKEN_BYTES..=MAX_TOKEN_BYTES).contains(&text.len()) {
            return Err(Error::invalid(format!(
                "the cluster token must be {MIN_TOKEN_BYTES} to {MAX_TOKEN_BYTES} bytes long, not {}",
                text.len()
            )));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::invalid(
                "the cluster token must be visible ASCII with no spaces",
            ));
        }
        Ok(ClusterToken(Arc::from(text)))
    }

    /// The token in the file at `path`.
    pub fn from_file(path: &Path) -> Result<ClusterToken> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading the token file {}", path.display()), e))?;
        ClusterToken::new(&text).map_err(|e| e.about(path.display()))
    }

    /// The token named by `file`, else by the environment; `None` if no
    /// source is set.
    pub fn load(file: Option<&Path>) -> Result<Option<ClusterToken>> {
        if let Some(path) = file {
            return ClusterToken::from_file(path).map(Some);
        }
        if let Some(path) = std::env::var_os(TOKEN_FILE_ENV) {
            return ClusterToken::from_file(Path::new(&path)).map(Some);
        }
        match std::env::var(TOKEN_ENV) {
            Ok(text) => ClusterToken::new(&text)
                .map(Some)
                .map_err(|e| e.about(format_args!("${TOKEN_ENV}"))),
            Err(_) => Ok(None),
        }
    }

    /// The token's text, to hand to a child process (its environment,
    /// never its arguments). Nothing else should need it.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, in time that does not depend on
    /// where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }

    /// The `authorization` header value.
    fn bearer(&self) -> MetadataValue<Ascii> {
        // Visible ASCII by construction, so this cannot fail.
        MetadataValue::try_from(format!("{SCHEME}{}", self.0))
            .unwrap_or_else(|_| MetadataValue::from_static(""))
    }

    /// Adds the token to a request's metadata.
    pub fn attach(&self, metadata: &mut MetadataMap) {
        metadata.insert(HEADER, self.bearer());
    }

    /// Checks an `Authorization` value (HTTP or gRPC) against this token.
    pub fn admits(&self, header: Option<&str>) -> bool {
        header
            .and_then(|h| h.strip_prefix(SCHEME))
            .is_some_and(|t| self.matches(t.trim()))
    }
}

/// The token this process uses for the calls it makes when nobody passes
/// one explicitly: set once by a binary's `--token-file`, else read from the
/// environment on first use.
pub fn process_token() -> Option<ClusterToken> {
    PROCESS_TOKEN
        .get_or_init(|| match ClusterToken::load(None) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cluster token not usable; calls go without one");
                None
            }
        })
        .clone()
}

/// Sets the token [`process_token`] returns. Only the first setting (or
/// read) counts; returns whether this one did.
pub fn set_process_token(token: Option<ClusterToken>) -> bool {
    PROCESS_TOKEN.set(token).is_ok()
}

static PROCESS_TOKEN: OnceLock<Option<ClusterToken>> = OnceLock::new();

/// The server's check of one call's metadata.
pub fn check(
    token: Option<&ClusterToken>,
    metadata: &MetadataMap,
) -> std::result::Result<(), Status> {
    let Some(token) = token else {
        return Ok(());
    };
    let presented = metadata.get(HEADER).and_then(|v| v.to_str().ok());
    if token.admits(presented) {
        Ok(())
    } else {
        Err(Status::unauthenticated(
            "this ring requires its cluster token (CHORD_TOKEN or --token-file)",
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_and_never_printed() {
        assert!(ClusterToken::new("short").is_err());
        assert!(ClusterToken::new("has a space inside it").is_err());
        assert!(ClusterToken::new(&"x".repeat(MAX_TOKEN_BYTES + 1)).is_err());
        let t = ClusterToken::new("  0123456789abcdef-secret\n").unwrap();
        assert!(t.matches("0123456789abcdef-secret"));
        assert!(!t.matches("0123456789abcdef-secreT"));
        assert!(!t.matches(""));
        assert!(!format!("{t:?}").contains("secret"));
        assert!(t.admits(Some("Bearer 0123456789abcdef-secret")));
        assert!(!t.admits(Some("0123456789abcdef-secret")));
        assert!(!t.admits(None));
    }

    #[test]
    fn the_server_check_follows_the_metadata() {
        let t = ClusterToken::new("0123456789abcdef-secret").unwrap();
        let mut md = MetadataMap::new();
        assert!(check(None, &md).is_ok(), "no token configured: open");
        assert_eq!(
            check(Some(&t), &md).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        t.attach(&mut md);
        assert!(check(Some(&t), &md).is_ok());
        let other = ClusterToken::new("0123456789abcdef-other!").unwrap();
        assert!(check(Some(&other), &md).is_err());
    }

    #[test]
    fn a_token_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "0123456789abcdef-secret\n").unwrap();
        let t = ClusterToken::load(Some(&path)).unwrap().unwrap();
        assert!(t.matches("0123456789abcdef-secret"));
        assert!(ClusterToken::load(Some(&dir.path().join("missing"))).is_err());
    }
}
