#!/usr/bin/env bash
# Installs the real components the tests and the example gateway use, when
# they are missing: Mosquitto (broker) and its clients, the Node.js and
# Python interpreters that run functions, and QEMU with a kernel image for
# the tests that boot a virtual machine (package internal/vmtest), podman
# with runc for the container backend's tests, and PostgreSQL for the
# fleet's shared store (package internal/pgtest), Chromium for the browser
# tests of the fleet's web console (edge/e2e), and AWS's Node.js runtime
# interface client (npm aws-lambda-ric, whose native client builds with
# cmake, autoconf, automake, libtool and g++) for the function host's
# test of it. Needs root for apt-get; without root it only says what is
# missing.
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
command -v chromium >/dev/null 2>&1 || need+=(chromium)
for tool in cmake:cmake autoconf:autoconf automake:automake libtoolize:libtool g++:g++ make:make; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool#*:}")
done

# npm packages the tests use, each in the directory whose package-lock.json
# pins it, installed when missing.
npm_packages() {
  local dir=function/testdata/ric
  [ -e "$dir/node_modules/aws-lambda-ric/dist/rapid-client.node" ] && return 0
  if ! command -v npm >/dev/null 2>&1 || ! command -v cmake >/dev/null 2>&1; then
    echo "npm or cmake is missing: cannot install $dir's packages" >&2
    return 0
  fi
  echo "installing the npm packages of $dir" >&2
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  if [ ! -e "$dir/node_modules/aws-lambda-ric/dist/rapid-client.node" ]; then
    echo "aws-lambda-ric installed without its native client (dist/rapid-client.node): its build failed" >&2
    exit 1
  fi
}
trap npm_packages EXIT

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
