//! File names, as users type them and as upload requests carry them.

use arbtest::arbitrary;

use super::Outcome;
use crate::error::Error;
use crate::gateway::content_disposition;
use crate::store::{validate_name, MAX_NAME_BYTES};

pub(super) fn run() {
    super::run("names", 4096, |u| check(&super::name(u)?));
}

/// `validate_name` agrees with the rules as the README states them, and an
/// accepted name survives the one place it is written into a header.
fn check(name: &str) -> arbitrary::Result<Outcome> {
    let got = validate_name(name);
    assert_eq!(got.is_ok(), follows_the_rules(name), "{name:?}: {got:?}");
    let Err(e) = got else {
        let value = content_disposition(name).expect("an accepted name makes a header");
        let text = value.to_str().expect("the header is ASCII");
        let exact = text
            .split_once("filename*=UTF-8''")
            .map(|(_, encoded)| percent_decode(encoded))
            .expect("the header carries the exact name");
        assert_eq!(exact, name.as_bytes(), "{text}");
        return Ok(Outcome::Accepted);
    };
    assert!(matches!(e, Error::InvalidArgument(_)), "{name:?}: {e:?}");
    Ok(Outcome::Refused)
}

/// The README's rules, stated again independently of `validate_name`.
fn follows_the_rules(name: &str) -> bool {
    (1..=MAX_NAME_BYTES).contains(&name.len())
        && !name
            .chars()
            .any(|c| c.is_control() || c == '/' || c == '\\')
        && name != "."
        && name != ".."
        && !name.starts_with(char::is_whitespace)
        && !name.ends_with(char::is_whitespace)
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("two hex digits");
            out.push(u8::from_str_radix(hex, 16).expect("two hex digits"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}
