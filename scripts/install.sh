#!/usr/bin/env bash
# Install what the suite needs on a Debian 12 machine, as root. Safe to run again: it only
# installs what is missing.
#
#   scripts/install.sh run    # what the quickstart hub needs
#   scripts/install.sh test   # plus the services, browser and tools the test suite drives
#
# The suite lives in one virtual environment made from Debian's /usr/bin/python3 under
# $SUITE_VENV (default /opt/jupyterhub-multiplespawner/venv), world-readable so notebook
# servers running as other Unix users can execute it.
set -euo pipefail

profile="${1:-run}"
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${SUITE_VENV:-/opt/jupyterhub-multiplespawner/venv}"

if [ "$(id -u)" != 0 ]; then
    echo "scripts/install.sh: run me as root (it installs Debian packages and creates Unix users)" >&2
    exit 1
fi

run_packages=(python3 python3-venv python3-dev gcc ca-certificates sudo passwd procps)
# node/npm may come from outside Debian's packages (as on the build machines): use those if present.
command -v npm >/dev/null || run_packages+=(nodejs npm)
test_packages=(slapd ldap-utils openssh-server openssh-client nginx-light docker.io chromium
    debootstrap qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-dev pkg-config genisoimage
    iproute2 curl git munge slurm-wlm slurm-client prometheus sshfs fuse3)

packages=("${run_packages[@]}")
[ "$profile" = test ] && packages+=("${test_packages[@]}")

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "== apt: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # --no-install-recommends keeps slapd/docker/chromium lean; nothing is started by this
    # (except the prometheus service where systemd runs, stopped below).
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Tests start their own Prometheus on loopback. On a host with systemd the package starts its
# service (all interfaces, port 9090) when it is installed: stop and disable that one we installed.
if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

if ! command -v configurable-http-proxy >/dev/null; then
    echo "== npm: installing configurable-http-proxy"
    npm install -g --no-fund --no-audit configurable-http-proxy >/dev/null
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "== venv: creating $venv"
    mkdir -p "$(dirname "$venv")"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q -U pip setuptools wheel
fi
chmod 755 "$(dirname "$venv")"

extra=lab
[ "$profile" = test ] && extra=test,libvirt,cloud
echo "== pip: installing the suite into $venv ($extra)"
"$venv/bin/pip" install -q -e "$here[$extra]"
echo "== installed ($profile)"
