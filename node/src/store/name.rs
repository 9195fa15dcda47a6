//! The rules a file name must follow before the store accepts it.
//!
//! Names are what users type and what appears in `GET /<name>`, so the rules
//! keep them printable, unambiguous in a URL path and free of anything a shell
//! or a file system would reinterpret. The store itself never uses a name as a
//! path (files are stored under hex keys), so these rules are about clarity,
//! not about safety of the layout. Pure: no I/O.

use crate::error::{Error, Result};

/// Longest accepted name, in bytes of UTF-8. Long enough for any real path-like
/// name, short enough that a manifest's name never dominates its size and a
/// name fits comfortably in a URL.
pub const MAX_NAME_BYTES: usize = 1024;

/// Checks `name` against the naming rules, saying which one failed:
///
/// 1. 1 to [`MAX_NAME_BYTES`] bytes of UTF-8;
/// 2. no NUL or other control character (Unicode category Cc);
/// 3. no `/` or `\` (names are flat; a separator would read as a directory);
/// 4. not `.` or `..`;
/// 5. no leading or trailing whitespace (invisible, and easily lost by shells).
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid("file name is empty"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::invalid(format!(
            "file name is {} bytes long, the limit is {MAX_NAME_BYTES}",
            name.len()
        )));
    }
    if let Some((at, c)) = name.char_indices().find(|(_, c)| c.is_control()) {
        return Err(Error::invalid(format!(
            "file name contains control character U+{:04X} at byte {at}",
            u32::from(c)
        )));
    }
    if let Some((at, c)) = name.char_indices().find(|(_, c)| matches!(c, '/' | '\\')) {
        return Err(Error::invalid(format!(
            "file name contains a path separator {c:?} at byte {at}"
        )));
    }
    if name == "." || name == ".." {
        return Err(Error::invalid(format!("file name must not be {name:?}")));
    }
    let starts = name.chars().next().is_some_and(char::is_whitespace);
    let ends = name.chars().next_back().is_some_and(char::is_whitespace);
    if starts || ends {
        return Err(Error::invalid(
            "file name must not start or end with whitespace",
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn name_rules_table() {
        let long_ok = "a".repeat(MAX_NAME_BYTES);
        let long_bad = "a".repeat(MAX_NAME_BYTES + 1);
        // A multi-byte name whose byte length, not char count, crosses the limit.
        let long_unicode = "é".repeat(MAX_NAME_BYTES / 2 + 1);
        // (name, accepted, a word the error must contain)
        let cases: &[(&str, bool, &str)] = &[
            ("report.pdf", true, ""),
            ("a", true, ""),
            ("my file (1).txt", true, ""),
            ("naïve-日本語-🦀.txt", true, ""),
            ("...", true, ""),
            (".hidden", true, ""),
            (&long_ok, true, ""),
            ("", false, "empty"),
            (&long_bad, false, "1025 bytes"),
            (&long_unicode, false, "limit"),
            ("a/b", false, "separator"),
            ("/abs", false, "separator"),
            ("a\\b", false, "separator"),
            (".", false, "must not be"),
            ("..", false, "must not be"),
            ("a\0b", false, "U+0000"),
            ("tab\there", false, "U+0009"),
            ("line\n", false, "U+000A"),
            ("del\u{7f}", false, "U+007F"),
            ("c1\u{85}", false, "U+0085"),
            (" lead", false, "whitespace"),
            ("trail ", false, "whitespace"),
            ("nbsp\u{a0}", false, "whitespace"),
        ];
        for (name, ok, word) in cases {
            let got = validate_name(name);
            assert_eq!(got.is_ok(), *ok, "{name:?}: {got:?}");
            if let Err(e) = got {
                assert!(matches!(e, Error::InvalidArgument(_)), "{name:?}: {e:?}");
                assert!(e.to_string().contains(word), "{name:?}: {e} lacks {word:?}");
            }
        }
    }
}
