# shellcheck shell=bash disable=SC2034
# SPDX-License-Identifier: GPL-2.0
# Shared settings for the hmm-rs scripts; sourced, not run.

# rustup, cargo and the cache live under HOME; derive it if the caller's
# environment lacks it.
export HOME=${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}
CACHE=${HMM_RS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hmm-rs}
KSRC=$CACHE/linux-source-7.3
KBUILD=$CACHE/build
# The test kernel is built with LLVM (clang, lld): KASAN needs it with Rust.
KMAKE_ARGS=(LLVM=-19)
export LIBCLANG_PATH=${LIBCLANG_PATH:-/usr/lib/llvm-19/lib}
export PATH=$HOME/.cargo/bin:$PATH

# The kernel build tree in use (KDIR, or the cached one) and its sources:
# O= build trees link to their sources as 'source'.
kdir() { echo "${KDIR:-$KBUILD}"; }
ksrc() {
	local kd
	kd=$(kdir)
	if [ -e "$kd/source" ]; then readlink -f "$kd/source"; else echo "$kd"; fi
}

log() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }
OUT=$CACHE/out
