#!/usr/bin/env bash
# Installs the Debian packages svcctl's lab, tests and demo need on a fresh Debian 12 machine.
# Idempotent and quick when everything is there. Never starts a server on the machine itself:
# only clients and tools are installed, and a policy-rc.d guard refuses service starts meanwhile.
set -euo pipefail

packages=(
  debootstrap systemd-container iproute2 openssh-client zstd procps
  python3 python3-venv make git
  postgresql-client mariadb-client redis-tools   # the clients `svcctl tunnel` launches in tests and the demo
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-system-deps: need root to install: ${missing[*]}" >&2
  exit 1
fi

guard=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  guard=/usr/sbin/policy-rc.d
  printf '#!/bin/sh\nexit 101\n' > "$guard"
  chmod 0755 "$guard"
  trap 'rm -f "$guard"' EXIT
fi
echo "install-system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
