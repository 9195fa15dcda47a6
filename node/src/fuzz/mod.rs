//! Fuzz targets for every decoder that takes bytes from outside the node,
//! run for a time budget by `node/fuzz.sh SECONDS`, not as part of the
//! test suite.
//!
//! | target | what it feeds | what must hold |
//! |---|---|---|
//! | [`names`] | file names | [`validate_name`](crate::store::validate_name) accepts exactly the names the README's rules allow; an accepted name makes a valid `Content-Disposition` that carries it exactly |
//! | [`wire`] | protobuf bytes of `NodeRef`, `FindStepResponse`, `Manifest`, `KeyVersion`, `EventsResponse`, key lists | what [`crate::wire`] accepts is valid and converts back and forth to itself |
//! | [`manifest_json`] | a manifest record's bytes (JSON, with a small file's bytes raw after it or in hex inside it), and `alive.json`'s | [`Manifest::from_stored`](crate::store::Manifest::from_stored) refuses with `Corrupt` or returns a valid manifest of that key that re-encodes to itself |
//! | [`manifest_log`] | a manifest log file, torn or damaged | the replay at open keeps a good prefix whose keys point at whole put records of their own, and the records it shows its caller add up to exactly those keys' payloads |
//! | [`multipart`] | `POST /upload` bodies, split into random pieces | [`receive_parts`](crate::gateway::receive_parts) answers a 4xx or stores only validly named parts, byte for byte |
//! | [`msgpack`] | MessagePack-RPC connection bytes | decoding frames messages consistently, and every accepted call re-encodes to itself |
//!
//! Every target also holds that nothing panics and no input takes longer
//! than [`INPUT_TIME_LIMIT`] (a hang).
//!
//! **Why `arbtest`** (over `arbitrary`): it runs on the stable toolchain
//! (`cargo-fuzz` needs nightly and libFuzzer), adds two small crates and no
//! build step, runs each property for a time budget, and prints a seed that
//! replays a failure (`ARBTEST_SEED=0x… bash node/fuzz.sh 1 TARGET`). It is
//! random, not coverage-guided, so the targets do not wait for the fuzzer
//! to discover structure: each builds well-formed input from its parts,
//! then damages it with byte-level edits ([`mutate`]) that splice in the
//! format's own tokens. `bolero` would give coverage guidance only through
//! libFuzzer or AFL; in its stable random mode it does what `arbtest` does
//! with many more dependencies.
//!
//! The targets are `#[ignore]`d tests, so a plain test run skips them; CI's
//! `--run-ignored all` runs each for the default budget of
//! [`DEFAULT_BUDGET`], a smoke test. [`BUDGET_ENV`] sets a real budget.

mod manifest_json;
mod manifest_log;
mod msgpack;
mod multipart;
mod names;
mod wire;

use std::time::{Duration, Instant};

use arbtest::arbitrary::{self, Unstructured};

/// Seconds each target runs (a decimal number); [`DEFAULT_BUDGET`] when unset.
pub const BUDGET_ENV: &str = "CHORD_FUZZ_SECS";

/// Budget of a target when [`BUDGET_ENV`] is unset: CI runs ignored tests
/// too, and there a target is a smoke test, not a search.
const DEFAULT_BUDGET: Duration = Duration::from_secs(1);

/// Longest one input may take before it counts as a hang. Every input is
/// at most a few hundred KiB, decoded in microseconds to milliseconds even
/// in a debug build; a decoder that loops or goes quadratic blows past it.
pub const INPUT_TIME_LIMIT: Duration = Duration::from_secs(2);

/// What a decoder did with one input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted, and the target's invariants held for what came out.
    Accepted,
    /// Refused with a clean error.
    Refused,
}

/// Runs `property` on fresh random inputs of up to `size_max` random bytes
/// for the budget, failing (with the seed that replays it) on a panic or an
/// input slower than [`INPUT_TIME_LIMIT`]. Prints what it tried.
fn run(
    target: &str,
    size_max: u32,
    mut property: impl FnMut(&mut Unstructured<'_>) -> arbitrary::Result<Outcome>,
) {
    let budget = std::env::var(BUDGET_ENV)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(DEFAULT_BUDGET, Duration::from_secs_f64);
    let (mut accepted, mut refused, mut short) = (0u64, 0u64, 0u64);
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    arbtest::arbtest(|u| {
        let at = Instant::now();
        let outcome = property(u);
        let took = at.elapsed();
        assert!(
            took <= INPUT_TIME_LIMIT,
            "{target}: one input took {took:?}, over the {INPUT_TIME_LIMIT:?} limit"
        );
        slowest = slowest.max(took);
        match outcome {
            Ok(Outcome::Accepted) => accepted += 1,
            Ok(Outcome::Refused) => refused += 1,
            // The random bytes ran out before an input was made: not a
            // failure, and not an input either.
            Err(_) => short += 1,
        }
        Ok(())
    })
    .size_max(size_max)
    .budget(budget)
    .run();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "fuzz {target}: {} inputs in {secs:.1} s ({:.0}/s): {accepted} accepted, {refused} refused cleanly, {short} cut short; slowest {:.2} ms",
        accepted + refused,
        (accepted + refused) as f64 / secs.max(1e-9),
        slowest.as_secs_f64() * 1e3
    );
}

/// Applies zero to four byte-level edits to `bytes` (zero is common, so
/// well-formed input gets through too): flip bits, set a byte to a
/// boundary value, insert random bytes or a token from `dict`, delete,
/// duplicate or truncate a range.
fn mutate(u: &mut Unstructured<'_>, bytes: &mut Vec<u8>, dict: &[&[u8]]) -> arbitrary::Result<()> {
    let edits = if u.ratio(1, 3)? {
        0
    } else {
        u.int_in_range(1..=4)?
    };
    for _ in 0..edits {
        let at = u.choose_index(bytes.len() + 1)?;
        match u.int_in_range(0..=6)? {
            0 if at < bytes.len() => bytes[at] ^= 1 << u.int_in_range(0..=7)?,
            1 if at < bytes.len() => bytes[at] = *u.choose(&[0x00, 0x7f, 0x80, 0xff, b'"'])?,
            2 => {
                let len = u.int_in_range(1..=8)?.min(u.len());
                let random = u.bytes(len)?.to_vec();
                bytes.splice(at..at, random);
            }
            3 if !dict.is_empty() => {
                let token = u.choose(dict)?.to_vec();
                bytes.splice(at..at, token);
            }
            4 => {
                let end = at + u.int_in_range(0..=16)?.min(bytes.len() - at);
                bytes.drain(at..end);
            }
            5 => {
                let end = at + u.int_in_range(0..=32)?.min(bytes.len() - at);
                let copy = bytes[at..end].to_vec();
                bytes.splice(at..at, copy);
            }
            6 => bytes.truncate(at),
            _ => {}
        }
    }
    Ok(())
}

/// A string of up to `max_pieces` pieces, each a token from `dict` or an
/// arbitrary character: mostly text a decoder expects, with the edge cases
/// (separators, controls, odd Unicode) that break it.
fn text(u: &mut Unstructured<'_>, dict: &[&str], max_pieces: usize) -> arbitrary::Result<String> {
    let pieces = u.int_in_range(0..=max_pieces)?;
    let mut out = String::new();
    for _ in 0..pieces {
        if u.ratio(2, 3)? {
            out.push_str(u.choose(dict)?);
        } else {
            out.push(u.arbitrary::<char>()?);
        }
    }
    Ok(out)
}

/// Tokens that file names are made of: ordinary text, every rule's edge
/// (separators, dot names, control and whitespace characters, length) and
/// what multipart headers and URLs treat specially.
const NAME_TOKENS: &[&str] = &[
    "a",
    "report",
    ".pdf",
    "my file",
    ".",
    "..",
    "/",
    "\\",
    " ",
    "\t",
    "\n",
    "\r",
    "\0",
    "\u{7f}",
    "\u{85}",
    "\u{a0}",
    "\u{2028}",
    "\u{200b}",
    "\u{feff}",
    "é",
    "日本語",
    "🦀",
    "\"",
    "'",
    "%",
    "%2F",
    ";",
    "=",
    "name=",
    "?",
    "#",
    "*",
];

/// A file name: built from [`NAME_TOKENS`], from raw bytes (lossily
/// UTF-8), or a run of one token up to past [`crate::store::MAX_NAME_BYTES`].
fn name(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    Ok(match u.int_in_range(0..=9)? {
        0 => {
            let len = u.int_in_range(0..=64)?.min(u.len());
            String::from_utf8_lossy(u.bytes(len)?).into_owned()
        }
        1 => {
            let unit = u.choose(&["a", "é", "日", "🦀"])?;
            let max = crate::store::MAX_NAME_BYTES + 8;
            let bytes = u.int_in_range(max - 16..=max)?;
            unit.repeat(bytes / unit.len())
        }
        _ => text(u, NAME_TOKENS, 6)?,
    })
}

#[test]
#[ignore = "fuzz target: run by node/fuzz.sh"]
fn names() {
    names::run();
}

#[test]
#[ignore = "fuzz target: run by node/fuzz.sh"]
fn wire() {
    wire::run();
}

#[test]
#[ignore = "fuzz target: run by node/fuzz.sh"]
fn manifest_json() {
    manifest_json::run();
}

#[test]
#[ignore = "fuzz target: run by node/fuzz.sh"]
fn manifest_log() {
    manifest_log::run();
}

#[test]
#[ignore = "fuzz target: run by node/fuzz.sh"]
fn multipart() {
    multipart::run();
}

#[test]
#[ignore = "fuzz target: run by node/fuzz.sh"]
fn msgpack() {
    msgpack::run();
}
