#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain, then builds the
# binaries the integration tests start. Run from anywhere; idempotent.
#   - target/venv: Python with requests, msgpack, moto[server] (the AWS API emulator)
#     and cfn-lint, from tests/requirements.txt;
#   - tmux, for the end-to-end test that drives the TUI in a terminal
#     (from the distribution's packages when it is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x target/venv/bin/python3 ]; then
    python3 -m venv target/venv
fi
target/venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt

if ! command -v tmux >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq tmux >/dev/null
    else
        echo "tests/setup.sh: tmux is missing; install it to run the TUI end-to-end test" >&2
    fi
fi

cargo build --workspace --bins
