#!/usr/bin/env bash
# What separates a DPDK bump in the wire from HAProxy on this kind of host: one bulk TCP
# stream (5 s, Python sender and receiver) between two namespaces through
#   1. dpdk-testpmd io-forward on two net_tap ports,
#   2. dpdk-testpmd io-forward on two net_af_packet ports over veths (a wire that carries
#      MTU-sized frames: TSO, GSO and checksum offload off on every sender),
#   2b. the same with net_af_xdp ports on the same veths,
#   3. HAProxy (tcp, splice-auto, one thread) between two veths, with the kernel's
#      offloads (64 KB GSO/GRO super-segments end to end),
#   4. the same HAProxy on the MTU-sized wire of 2.
# Prints Mbit/s per case. Needs root, dpdk-testpmd, haproxy, ethtool, python3.
# Results and reading: docs/testbed.md, "Splice benchmark" (the wire experiment).
set -euo pipefail
SECONDS_PER_CASE=${SECONDS_PER_CASE:-5}
P=tswx
work=$(mktemp -d)
cleanup() {
    stop_testpmd
    pkill -f "$work/hx.cfg" 2>/dev/null || true
    pkill -f "$work/bulk.py" 2>/dev/null || true
    for n in a b x; do ip netns del ${P}$n 2>/dev/null || true; done
    ip link del ${P}va 2>/dev/null || true
    ip link del ${P}vb 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
for t in dpdk-testpmd haproxy ethtool python3; do
    command -v $t >/dev/null || { echo "wire.sh: $t not found (scripts/setup.sh installs them)"; exit 1; }
done
cat > "$work/bulk.py" <<'PY'
import socket, sys, time
if sys.argv[1] == 'server':
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', 5001)); s.listen(1); s.settimeout(15)
    c, _ = s.accept(); c.settimeout(15); buf = bytearray(1 << 20); n = 0; t0 = time.time()
    while True:
        k = c.recv_into(buf)
        if not k: break
        n += k
    print("%.0f" % (n * 8 / (time.time() - t0) / 1e6))
else:
    s = socket.create_connection((sys.argv[2], 5001), timeout=15); b = b'x' * (1 << 20); t0 = time.time()
    while time.time() - t0 < float(sys.argv[3]): s.sendall(b)
    s.close()
PY
fresh() { for n in a b x; do ip netns del ${P}$n 2>/dev/null || true; ip netns add ${P}$n; ip -n ${P}$n link set lo up; done; }
no_offloads() { ip netns exec "$1" ethtool -K "$2" tso off gso off tx off >/dev/null; }
bulk() { # server ns, client ns, address: the receiver's Mbit/s
    ip netns exec "$1" python3 "$work/bulk.py" server > "$work/out" & local srv=$!
    sleep 0.5
    if ! timeout $((SECONDS_PER_CASE + 20)) ip netns exec "$2" python3 "$work/bulk.py" client "$3" "$SECONDS_PER_CASE"; then
        kill $srv 2>/dev/null || true
        echo "wire.sh: the bulk transfer to $3 failed" >&2
        exit 1
    fi
    wait $srv && cat "$work/out"
}
report() { # label, then bulk's arguments; stops the script when the transfer fails
    local r
    r=$(bulk "$2" "$3" "$4")
    printf '%-42s %s Mbit/s\n' "$1" "$r"
}
# testpmd io-forward on the given vdevs, until stop_testpmd (its stdin stays open).
testpmd_prefix=""
testpmd() {
    testpmd_prefix="${P}$RANDOM"
    rm -f "$work/testpmd.log"
    (sleep 600 | stdbuf -oL dpdk-testpmd -l 0,1 -m 256 --no-huge --no-pci --file-prefix "$testpmd_prefix" "$@" \
        -- --forward-mode=io --total-num-mbufs=16383 --disable-link-check -a > "$work/testpmd.log" 2>&1 &)
}
stop_testpmd() {
    if [ -n "$testpmd_prefix" ]; then
        pkill -f "file-prefix $testpmd_prefix" 2>/dev/null || true
        testpmd_prefix=""
        sleep 2
    fi
}
# Until testpmd forwards (its ports configured: a TAP moved away before that fails).
forwarding() { for _ in $(seq 300); do grep -q "Press enter to exit" "$work/testpmd.log" 2>/dev/null && return; sleep 0.1; done; echo "wire.sh: testpmd did not start"; cat "$work/testpmd.log"; exit 1; }

# 1. net_tap
fresh
testpmd --vdev net_tap0,iface=${P}ta --vdev net_tap1,iface=${P}tb
forwarding
ip link set ${P}ta netns ${P}a; ip link set ${P}tb netns ${P}b
ip -n ${P}a addr add 10.9.0.1/24 dev ${P}ta; ip -n ${P}b addr add 10.9.0.2/24 dev ${P}tb
# net_tap gives both kernel sides the MAC of its DPDK port: give them their own.
ip -n ${P}a link set ${P}ta address 02:00:00:00:aa:01; ip -n ${P}b link set ${P}tb address 02:00:00:00:bb:01
ip -n ${P}a link set ${P}ta up; ip -n ${P}b link set ${P}tb up
report "io-forward, net_tap:" ${P}b ${P}a 10.9.0.2
stop_testpmd

# 2. net_af_packet over veths, MTU-sized frames
fresh
ip link add ${P}va type veth peer name eth0 netns ${P}a
ip link add ${P}vb type veth peer name eth0 netns ${P}b
ip -n ${P}a addr add 10.9.0.1/24 dev eth0; ip -n ${P}b addr add 10.9.0.2/24 dev eth0
for n in a b; do ip -n ${P}$n link set eth0 up; no_offloads ${P}$n eth0; done
for v in ${P}va ${P}vb; do ip link set $v up; ethtool -K $v tso off gso off tx off gro off >/dev/null; done
testpmd --vdev net_af_packet0,iface=${P}va,qpairs=1,qdisc_bypass=1 --vdev net_af_packet1,iface=${P}vb,qpairs=1,qdisc_bypass=1
forwarding
report "io-forward, net_af_packet, MTU frames:" ${P}b ${P}a 10.9.0.2
stop_testpmd

# 2b. net_af_xdp on the same veths (its XDP program takes the frames before the kernel)
testpmd --vdev net_af_xdp0,iface=${P}va,queue_count=1 --vdev net_af_xdp1,iface=${P}vb,queue_count=1
forwarding
report "io-forward, net_af_xdp, MTU frames:" ${P}b ${P}a 10.9.0.2
stop_testpmd
ip link del ${P}va; ip link del ${P}vb

# 3. and 4. HAProxy between two veths
fresh
ip link add eth0 netns ${P}a type veth peer name p0 netns ${P}x
ip link add eth0 netns ${P}b type veth peer name p1 netns ${P}x
ip -n ${P}a addr add 10.9.0.1/24 dev eth0; ip -n ${P}x addr add 10.9.0.3/24 dev p0
ip -n ${P}x addr add 10.9.1.3/24 dev p1; ip -n ${P}b addr add 10.9.1.2/24 dev eth0
ip -n ${P}a link set eth0 up; ip -n ${P}b link set eth0 up; ip -n ${P}x link set p0 up; ip -n ${P}x link set p1 up
cat > "$work/hx.cfg" <<CFG
global
    nbthread 1
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option splice-auto
frontend f
    bind 10.9.0.3:5001
    default_backend b
backend b
    server s 10.9.1.2:5001
CFG
haproxy_case() {
    ip netns exec ${P}x haproxy -db -f "$work/hx.cfg" >/dev/null 2>&1 & local hp=$!
    sleep 1
    report "$1" ${P}b ${P}a 10.9.0.3
    kill $hp 2>/dev/null || true; wait $hp 2>/dev/null || true
}
haproxy_case "HAProxy, kernel offloads (GSO/GRO):"
no_offloads ${P}a eth0; no_offloads ${P}b eth0; no_offloads ${P}x p0; no_offloads ${P}x p1
haproxy_case "HAProxy, MTU frames:"
