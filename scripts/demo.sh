#!/usr/bin/env bash
# The demo: a tapsplice appliance (forward role) on TAP ports between two network
# namespaces, a real bulk TCP transfer and an echo run through it, and the latency
# histograms. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --release --workspace --quiet
mkdir -p results
target/release/testbed demo --tapsplice target/release/tapsplice --plot results/demo.svg "$@"
echo "plot: results/demo.svg (the appliance's per-burst times and the requests' latency histograms)"
