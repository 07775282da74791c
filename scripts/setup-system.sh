#!/usr/bin/env bash
# Installs the Debian packages bpfwall builds and runs with (only those missing)
# and mounts bpffs. Idempotent; needs root.
set -euo pipefail

packages=(python3 python3-venv netbase clang clang-format llvm libbpf-dev libbpf1 bpftool iproute2 ethtool nftables iptables ipset xdp-tools iperf3 man-db systemd make etcd-server)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages ${missing[*]}; run as root to install them" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  # etcd-server is here for the fleet tests, which start their own etcd on loopback; Debian
  # enables a system etcd when it installs the package, which this host did not ask for.
  if [[ " ${missing[*]} " == *" etcd-server "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now etcd.service >/dev/null 2>&1 || true
  fi
fi

# (Only where sysfs has the mount point: a build root without /sys needs no bpffs.)
if [ "$(id -u)" -eq 0 ] && [ -d /sys/fs/bpf ] && ! grep -qs ' /sys/fs/bpf bpf ' /proc/mounts; then
  mount -t bpf bpf /sys/fs/bpf
fi
