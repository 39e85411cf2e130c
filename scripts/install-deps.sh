#!/usr/bin/env bash
# Installs the real components the tests and the example gateway use, when
# they are missing: Mosquitto (broker) and its clients, the Node.js and
# Python interpreters that run functions, and QEMU with a kernel image for
# the tests that boot a virtual machine (package internal/vmtest), podman
# with runc for the container backend's tests, and PostgreSQL for the
# fleet's shared store (package internal/pgtest). Needs
# root for apt-get; without root it only says what is missing.
set -euo pipefail

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || need+=(runc)
compgen -G '/boot/vmlinuz-*' >/dev/null || need+=(linux-image-amd64)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${need[*]} (run as root to install them, or: sudo apt-get install ${need[*]})" >&2
  exit 0
fi
echo "installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
