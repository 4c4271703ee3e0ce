#!/usr/bin/env bash
# Installs what tapsplice needs to build and run its tests on Debian 12, if missing.
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run again.
set -euo pipefail

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "tapsplice setup: run as root (it installs packages and creates network namespaces)" >&2
    exit 1
  fi
}

install_apt_packages() {
  local pkgs=(libdpdk-dev dpdk-dev clang libclang-dev pkg-config gcc make iproute2 nftables procps curl ca-certificates kmod python3 util-linux fence-agents openipmi ipmitool haproxy ethtool)
  local missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "tapsplice setup: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

install_rust() {
  if [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; fi
  if command -v cargo >/dev/null 2>&1; then
    local minor
    minor=$(rustc --version | sed -E 's/rustc 1\.([0-9]+).*/\1/')
    if [ "$minor" -ge 80 ]; then return; fi
    echo "tapsplice setup: rustc $(rustc --version) is older than 1.80" >&2
    if command -v rustup >/dev/null 2>&1; then rustup update stable; return; fi
  fi
  echo "tapsplice setup: installing the Rust toolchain with rustup" >&2
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  export PATH="$HOME/.cargo/bin:$PATH"
}

ensure_tun() {
  [ -e /dev/net/tun ] || modprobe tun 2>/dev/null || true
  if [ ! -e /dev/net/tun ]; then
    echo "tapsplice setup: /dev/net/tun is missing and the tun module could not be loaded" >&2
    exit 1
  fi
}

need_root
install_apt_packages
install_rust
ensure_tun
