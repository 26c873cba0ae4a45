#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Install what building and testing hmm-rs needs, and only what is missing:
# Debian packages, Debian's linux-source-7.3 (from trixie-backports, whose
# apt entry is derived from this machine's own Debian entry), rust-src and a
# pinned bindgen-cli. Idempotent; a second run only checks.
set -euo pipefail

BINDGEN_VERSION=0.72.1
KSRC_PKG=linux-source-7.3

# debian_uri (and the cache's location) come from common.sh.
. "$(cd "$(dirname "$0")" && pwd)/common.sh"
log() { printf 'provision: %s\n' "$*" >&2; }
export HOME=${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}
export PATH=$HOME/.cargo/bin:$PATH

SUDO=
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null || { log "not root and no sudo"; exit 1; }
	SUDO=sudo
fi

PKGS=(build-essential gcc-12 make flex bison bc libelf-dev libssl-dev
      python3 cpio xz-utils busybox-static rsync kmod shellcheck
      libclang-19-dev clang-19 lld-19 llvm-19
      dwarves dkms)  # pahole keeps BTF in Debian kernels' configs (debian-kernel.sh)

# trixie-backports carries linux-source-7.3; this release's own backports
# carry the qemu that matches a backported qemu-utils, if one is installed.
BACKPORTS_LIST=/etc/apt/sources.list.d/hmm-rs-backports.sources
add_backports() {
	[ -f "$BACKPORTS_LIST" ] && return 0
	local uri keyring codename suites=trixie-backports
	codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
	[ -n "$codename" ] && [ "$codename" != trixie ] && suites="$codename-backports $suites"
	uri=$(debian_uri | sed -n 1p)
	[ -n "$uri" ] || { log "no Debian apt source entry to derive trixie-backports from"; exit 1; }
	keyring=/usr/share/keyrings/debian-archive-keyring.gpg
	log "adding $suites (derived from this machine's Debian entry)"
	printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n' \
		"$uri" "$suites" "$keyring" | $SUDO tee "$BACKPORTS_LIST" >/dev/null
	APT_UPDATED=
}

APT_UPDATED=
apt_update() {
	[ -n "$APT_UPDATED" ] && return 0
	$SUDO apt-get update -qq
	APT_UPDATED=1
}

apt_install() {
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }

add_backports
missing=()
for p in "${PKGS[@]}"; do
	installed "$p" || missing+=("$p")
done
installed "$KSRC_PKG" || missing+=("$KSRC_PKG/trixie-backports")
if [ ${#missing[@]} -gt 0 ]; then
	log "installing: ${missing[*]}"
	apt_update
	apt_install "${missing[@]}"
fi
# qemu-system must come from the suite of an installed (backported) qemu-utils.
if ! installed qemu-system-x86; then
	target=()
	if installed qemu-utils && dpkg-query -W -f='${Version}' qemu-utils | grep -q '~bpo'; then
		target=(-t "$(. /etc/os-release && echo "$VERSION_CODENAME")-backports")
	fi
	log "installing qemu-system-x86 ${target[*]}"
	apt_update
	apt_install "${target[@]}" qemu-system-x86
fi

if ! rustup component list --installed 2>/dev/null | grep -q '^rust-src'; then
	log "adding rust-src"
	rustup component add rust-src
fi

if ! command -v bindgen >/dev/null || [ "$(bindgen --version | awk '{print $2}')" != "$BINDGEN_VERSION" ]; then
	log "installing bindgen-cli $BINDGEN_VERSION"
	cargo install --locked --quiet --version "$BINDGEN_VERSION" bindgen-cli
fi
log "ok"
