#!/usr/bin/env bash
# Builds a chord-node binary that runs on the stack's AMI (Amazon Linux 2023,
# x86_64), then checks that it needs no glibc symbol newer than the AMI has.
#
# Usage:
#   cloudformation/build-node.sh             build, check, print the binary's path
#   cloudformation/build-node.sh --check BIN check an existing binary only
#
# Why zigbuild: the host toolchain links against the host's glibc, which is
# newer than AL2023's 2.34, and a binary linked that way refuses to start on
# the AMI ("GLIBC_2.3x not found"). `cargo zigbuild` links through Zig against
# the glibc version named in the target suffix, so the binary only asks for
# symbols that 2.34 provides.
#
# Tools it installs when missing (from package registries only):
#   - ziglang (PyPI) into the project's virtualenv, target/venv, or $CHORD_BUILD_VENV;
#   - cargo-zigbuild (crates.io) with `cargo install --locked` into target/tools,
#     or uses one already on PATH.
#
# Environment:
#   CARGO_TARGET_DIR   where cargo builds (default: the workspace's target/)
#   CHORD_BUILD_VENV   virtualenv that holds ziglang (default: target/venv)
#   MAX_GLIBC          highest glibc version allowed (default: 2.34, AL2023's)
set -euo pipefail

# AL2023 ships glibc 2.34; a binary needing a later symbol version does not start there.
MAX_GLIBC="${MAX_GLIBC:-2.34}"

die() {
    echo "build-node: $*" >&2
    exit 1
}

# Prints the highest GLIBC_x.y[.z] version that the dynamic symbols of $1
# require, or nothing when the binary needs none (e.g. statically linked).
highest_glibc() {
    local bin="$1"
    command -v objdump >/dev/null || die "objdump not found (install binutils)"
    # Version needs appear as "GLIBC_2.34" in the version-reference column of
    # `objdump -T`; GLIBC_PRIVATE is not a version and is not counted.
    objdump -T "$bin" 2>/dev/null \
        | grep -o 'GLIBC_[0-9][0-9.]*' \
        | sed 's/^GLIBC_//' \
        | sort -u -V \
        | tail -n 1
}

# Exit 0 when $1's needs are <= MAX_GLIBC, 1 otherwise; prints one line either way.
check_binary() {
    local bin="$1"
    [[ -f "$bin" ]] || die "no such file: $bin"
    file_head="$(head -c 4 "$bin" | od -An -c | tr -d ' ')"
    [[ "$file_head" == '177ELF' ]] || die "not an ELF binary: $bin"
    local highest
    highest="$(highest_glibc "$bin")"
    if [[ -z "$highest" ]]; then
        echo "glibc: $bin needs no versioned glibc symbol (limit $MAX_GLIBC): OK"
        return 0
    fi
    # sort -V puts the larger version last; if that is not the limit itself,
    # the binary needs more than the limit.
    local top
    top="$(printf '%s\n%s\n' "$highest" "$MAX_GLIBC" | sort -V | tail -n 1)"
    if [[ "$top" == "$MAX_GLIBC" ]]; then
        echo "glibc: $bin needs at most GLIBC_$highest (limit $MAX_GLIBC): OK"
        return 0
    fi
    echo "glibc: $bin needs GLIBC_$highest, newer than the limit $MAX_GLIBC (Amazon Linux 2023 has 2.34): it would not start there" >&2
    return 1
}

if [[ "${1:-}" == "--check" ]]; then
    [[ $# -eq 2 ]] || die "usage: $0 --check BINARY"
    check_binary "$2"
    exit $?
fi
[[ $# -eq 0 ]] || die "usage: $0 [--check BINARY]"

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
VENV="${CHORD_BUILD_VENV:-$ROOT/target/venv}"
TOOLS="$ROOT/target/tools"
TARGET="x86_64-unknown-linux-gnu"

# Zig from PyPI: the ziglang wheel ships the zig binary, and `python -m ziglang`
# runs it. cargo-zigbuild finds it that way when `zig` is not on PATH.
if [[ ! -x "$VENV/bin/python3" ]]; then
    echo "build-node: creating virtualenv $VENV"
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python3" -c 'import ziglang' 2>/dev/null; then
    echo "build-node: installing ziglang into $VENV"
    "$VENV/bin/pip" install -q ziglang
fi
export PATH="$VENV/bin:$TOOLS/bin:$PATH"

if ! command -v cargo-zigbuild >/dev/null; then
    echo "build-node: installing cargo-zigbuild into $TOOLS"
    cargo install --locked --root "$TOOLS" cargo-zigbuild
fi

echo "build-node: building chord-node for $TARGET with glibc $MAX_GLIBC"
cargo zigbuild --release --target "$TARGET.$MAX_GLIBC" -p chord-node --bin chord-node

BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$TARGET/release/chord-node"
[[ -f "$BIN" ]] || die "build finished but $BIN is missing"
check_binary "$BIN"
echo "build-node: $BIN ($(du -h "$BIN" | cut -f1)) is ready to upload"
