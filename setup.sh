#!/usr/bin/env bash
# Installs what Astara needs on Debian 12, as root: system packages through apt,
# Python packages into ./.venv from this checkout. Idempotent; safe to re-run.
#   ./setup.sh         runtime only
#   ./setup.sh --dev   also the test, lint and type-check tools
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: run as root (it installs packages and the appliance needs CAP_NET_ADMIN)" >&2
    exit 1
fi

packages=(python3 python3-venv python3-pip iproute2 nftables dnsmasq-base bird2 haproxy
          conntrack iputils-ping udhcpc iperf3 procps curl)
# the tests boot a Debian kernel under qemu for what this host's kernel may lack (802.1Q)
if [ "${1:-}" = "--dev" ]; then packages+=(qemu-system-x86); fi
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    # never let a package start its system-wide daemon (dnsmasq, bird, haproxy) on this host
    policy_added=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        policy_added=1
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if [ "$policy_added" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
extra=""
if [ "${1:-}" = "--dev" ]; then extra="[dev]"; fi
.venv/bin/pip install -q --disable-pip-version-check -e ".${extra}"
if [ -n "$extra" ]; then
    scripts/vm-kernel install   # the guest's kernel and busybox, unpacked into /var/tmp/astara-vm
fi
echo "setup.sh: ready (.venv/bin/astara)"
