#!/usr/bin/env bash
# Cross toolchains and emulators for the embedded targets in policykd/targets/ (Debian packages, ~500 MB).
# Skips packages that are already installed; needs root (as on these Debian machines).
set -euo pipefail
packages=(gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "toolchains: all installed"
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "toolchains: missing ${missing[*]}; run this script as root (apt-get install)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "toolchains: installed ${missing[*]}"
