#!/usr/bin/env bash
# Every test: unit, property and integration tests (the real appliance on TAP ports with
# Linux TCP peers in network namespaces). Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
export TAPSPLICE_BIN="$PWD/target/release/tapsplice"
cargo build --release --workspace
# Leftovers of an interrupted earlier run would collide with nothing (names are unique per
# run) but are swept anyway so that a machine does not collect them.
target/release/testbed cleanup || true
cargo test --release --workspace -- --test-threads=1
# The pure packet logic must also build and pass without DPDK.
cargo test --release -p dataplane --no-default-features
# The role-cost benchmark (a few seconds): prints ns per frame, balance against forward,
# and fails if a role stops transmitting the frames it is timed on.
cargo bench -p dataplane --no-default-features --bench role_cost
echo "all tests passed"
