#!/usr/bin/env bash
# Runs chord-node's fuzz targets (node/src/fuzz/) for SECONDS each, one after
# another, in an optimized build that keeps overflow checks and debug
# assertions (cargo profile `fuzz`). Not part of CI, which runs each target
# for a second as a smoke test.
#
#   bash node/fuzz.sh [SECONDS] [TARGET]     # default 60 s, every target
#   ARBTEST_SEED=0x... bash node/fuzz.sh 1 TARGET   # replay a failure's seed
#
# Targets: names, wire, manifest_json, manifest_log, multipart, msgpack. Each prints the
# inputs it tried; a failure prints the seed that replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
target="${2:-}"
CHORD_FUZZ_SECS="$secs" exec cargo test --profile fuzz -p chord-node --lib -- \
    --ignored --nocapture --test-threads 1 "fuzz::${target}"
